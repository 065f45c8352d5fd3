"""Export of the final ensemble for serving: `export/ensemble.keras` and, on TensorFlow, `export/saved_model/`.

The exported model takes raw uint8 images `[B, H, W, C]` of the training shape and nothing else (`improve_nas.serving`
states the contract; the preprocessing layer scales them; it augments only in training, which serving never is) and
returns `logits`, `probabilities` and `classes`. `export/manifest.json` records every file's size and checksum, so a
rerun of the run re-exports a damaged export (`check_export`).
"""

from __future__ import annotations

import os
import shutil

import keras

from improve_nas.adanet.ensemble_model import EnsembleModel
from improve_nas.adanet.runtime.engine import load_final_ensemble
from improve_nas.adanet.runtime.run_directory import RunDirectory
from improve_nas.serving import IMAGE_DTYPE, ServingModel, expected_images
from improve_nas.storage import integrity

EXPORT_DIR = "export"
KERAS_FILE = "ensemble.keras"
SAVED_MODEL_DIR = "saved_model"


def serving_model(run_dir: RunDirectory, *, preprocessing: keras.layers.Layer,
                  image_shape: tuple[int, int, int]) -> ServingModel:
    ensemble = load_final_ensemble(run_dir)
    final = run_dir.summaries()[-1]  # with temperature scaling on, the T fitted for the final ensemble
    return guard_for_serving(EnsembleModel(members=ensemble.members, ensembler=ensemble.ensembler,
                                           member_names=[m.name for m in ensemble.record.members],
                                           preprocessing=preprocessing, name="ensemble"), image_shape,
                             temperature=final.get("temperature_scaling", {}).get("temperature", 1.0))


def guard_for_serving(ensemble: keras.Model, image_shape: tuple[int, int, int], *,
                      temperature: float = 1.0) -> ServingModel:
    """`ensemble` (uint8 images -> logits, probabilities, classes) behind the serving input contract, built."""
    logits = ensemble(keras.ops.zeros((1, *image_shape), dtype=IMAGE_DTYPE), training=False)["logits"]
    model = ServingModel(ensemble=ensemble, image_shape=image_shape, num_classes=logits.shape[-1],
                         temperature=temperature, name="serving")
    model(keras.ops.zeros((1, *image_shape), dtype=IMAGE_DTYPE))  # build
    return model


def export_final_ensemble(run_dir: RunDirectory, *, preprocessing: keras.layers.Layer,
                          image_shape: tuple[int, int, int]) -> dict[str, str]:
    """Writes the serving formats of the run's final ensemble; returns their paths by format."""
    model = serving_model(run_dir, preprocessing=preprocessing, image_shape=image_shape)
    export_dir = run_dir.file(EXPORT_DIR)
    staging = run_dir.file(f".staging-{EXPORT_DIR}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    model.save(os.path.join(staging, KERAS_FILE))
    paths = {"keras": os.path.join(export_dir, KERAS_FILE)}
    if keras.backend.backend() == "tensorflow":
        _export_saved_model(model, os.path.join(staging, SAVED_MODEL_DIR), image_shape)
        paths["saved_model"] = os.path.join(export_dir, SAVED_MODEL_DIR)
    integrity.write_manifest(staging)  # what `check_export` compares with on a rerun
    shutil.rmtree(export_dir, ignore_errors=True)
    os.replace(staging, export_dir)
    return paths


def check_export(run_dir: RunDirectory) -> str | None:
    """Why the run's export must be (re)written: None if it is there and matches its manifest (or, written before
    manifests, has none), else one line saying what is missing or damaged."""
    export_dir = run_dir.file(EXPORT_DIR)
    if not os.path.isdir(export_dir):
        return f"{export_dir} is missing"
    try:
        integrity.check_manifest(export_dir, way_out="exporting again")
    except integrity.DamagedRunError as error:
        return str(error)
    return None


def _export_saved_model(model: ServingModel, path: str, image_shape: tuple[int, int, int]) -> None:
    """One traced `serve` function (also the `serving_default` signature) on a module holding the variables.

    Written with `tf.saved_model.save` rather than `keras.Model.export`: Keras' export archive walks and traces the
    whole layer tree several times, which for a NASNet ensemble costs about 5x more (37 s against 7 s for two
    3-cell members on 2 CPU cores).

    The signature admits uint8 of any shape, so TensorFlow itself refuses other dtypes (`serve`: a TypeError "Can
    not cast TensorSpec(..., dtype=tf.float32, ...) to TensorSpec(..., dtype=tf.uint8, ...)"; the signature: an
    InvalidArgumentError "expected to be a uint8 tensor but is a float tensor"), and the shape is checked when the
    function runs: a signature called directly checks only dtypes, and a mismatched shape there reached the
    convolutions (a 16x16 batch ran; a rank-3 one aborted the process).
    """
    import tensorflow as tf

    module = tf.Module()
    # The backing tf.Variables, so the SavedModel checkpoint holds every weight `serve` reads.
    module.weights = [getattr(v, "value", v) for v in model.variables]
    expected = tf.constant(image_shape)

    @tf.function(input_signature=[tf.TensorSpec(shape=None, dtype=tf.uint8, name="images")], autograph=False)
    def serve(images):
        shape = tf.shape(images)
        fits = tf.cond(tf.equal(tf.size(shape), 4), lambda: tf.reduce_all(tf.equal(shape[1:], expected)),
                       lambda: tf.constant(False))
        check = tf.debugging.Assert(fits, [f"expected {expected_images(image_shape)}, got uint8 of shape", shape],
                                    summarize=8, name="image_contract")
        with tf.control_dependencies([check]):
            images = tf.ensure_shape(tf.identity(images), (None, *image_shape))
        return model(images)

    module.serve = serve
    tf.saved_model.save(module, path, signatures={"serving_default": serve})
