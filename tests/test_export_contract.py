"""The export's input contract: uint8 `[B, H, W, C]` of the training shape, refused otherwise, empty in -> empty out.

Both formats are written from a tiny one-member NASNet ensemble with `improve_nas.export`'s own functions. The
SavedModel parts run on TensorFlow only (on JAX the export writes only `ensemble.keras`).
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from tiny_nasnet import tiny

from improve_nas import export
from improve_nas.adanet.ensemble_model import EnsembleModel
from improve_nas.adanet.ensemblers import MeanEnsembler
from improve_nas.data.augment import ImageAugmentation

pytestmark = pytest.mark.multibackend

SHAPE = (8, 8, 3)
K = 3
EXPECTED = re.escape("expected uint8 images of shape [B, 8, 8, 3], got ")
TF = keras.backend.backend() == "tensorflow"

_IMAGES = np.random.default_rng(0).integers(0, 256, (5, *SHAPE)).astype(np.uint8)
REFUSED = {  # name: (images, how the message names them)
    "float32 in [0, 1]": (_IMAGES.astype(np.float32) / 255, "float32 [5, 8, 8, 3]"),
    "float32 0..255": (_IMAGES.astype(np.float32), "float32 [5, 8, 8, 3]"),
    "int64": (_IMAGES.astype(np.int64), "int64 [5, 8, 8, 3]"),
    "int32": (_IMAGES.astype(np.int32), "int32 [5, 8, 8, 3]"),
    "uint16": (_IMAGES.astype(np.uint16), "uint16 [5, 8, 8, 3]"),
    "wrong height and width": (_IMAGES[:, :4, :4], "uint8 [5, 4, 4, 3]"),
    "wrong channels": (_IMAGES[..., :1], "uint8 [5, 8, 8, 1]"),
    "rank 3": (_IMAGES[0], "uint8 [8, 8, 3]"),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(the model as built, `ensemble.keras` loaded back, the SavedModel loaded back or None on JAX)."""
    directory = tmp_path_factory.mktemp("export")
    member = tiny(num_classes=K, num_cells=1, num_reduction_layers=0, name="t0_tiny")  # Convolutions, batch norm.
    ensemble = EnsembleModel(members=[member], ensembler=MeanEnsembler(num_members=1), member_names=["t0_tiny"],
                             preprocessing=ImageAugmentation(augmentation="none", cutout=False))
    model = export.guard_for_serving(ensemble, SHAPE)
    model.save(directory / export.KERAS_FILE)
    saved = None
    if TF:
        import tensorflow as tf

        export._export_saved_model(model, str(directory / export.SAVED_MODEL_DIR), SHAPE)
        saved = tf.saved_model.load(str(directory / export.SAVED_MODEL_DIR))
    return model, keras.saving.load_model(directory / export.KERAS_FILE), saved


def _saved_model_calls(saved):
    import tensorflow as tf

    return {"serve": lambda x: saved.serve(tf.constant(x)),
            "serving_default": lambda x: saved.signatures["serving_default"](images=tf.constant(x))}


@pytest.mark.parametrize("case", REFUSED)
def test_the_keras_model_refuses_anything_but_uint8_images_of_the_training_shape(exported, case):
    _, loaded, _ = exported
    images, given = REFUSED[case]
    with pytest.raises(ValueError, match=EXPECTED + re.escape(given)):
        loaded.predict(images, verbose=0)
    # Called directly, JAX has already narrowed int64 to int32 by the time the model sees it.
    with pytest.raises(ValueError, match=EXPECTED + ("int(64|32)" + re.escape(given[5:]) if case == "int64"
                                                     else re.escape(given))):
        loaded(images)


@pytest.mark.skipif(not TF, reason="the SavedModel is written on TensorFlow only")
@pytest.mark.parametrize("case", REFUSED)
def test_the_saved_model_refuses_the_same_inputs(exported, case):
    import tensorflow as tf

    _, _, saved = exported
    images, given = REFUSED[case]
    for name, call in _saved_model_calls(saved).items():
        if images.dtype != np.uint8:  # Refused by TensorFlow when binding the call, naming both dtypes.
            with pytest.raises((TypeError, tf.errors.InvalidArgumentError), match="uint8") as refusal:
                call(images)
            # `serve` names the dtype ("tf.float32"), the signature its kind ("a float tensor").
            kind = re.sub(r"\d+$", "", images.dtype.name)
            assert re.search(rf"{images.dtype.name}|\b{kind}\w* tensor", str(refusal.value)), name
        else:  # Refused by the check inside the function, naming the shape given.
            shape = " ".join(given[len("uint8 ["):-1].split(", "))
            with pytest.raises(tf.errors.InvalidArgumentError, match=EXPECTED + r"uint8 of shape\] \[" + shape):
                call(images)


def test_an_empty_batch_gives_empty_outputs(exported):
    model, loaded, saved = exported
    empty = _IMAGES[:0]
    calls = {"built": model, "loaded": loaded, "predict": lambda x: loaded.predict(x, verbose=0)}
    if saved is not None:
        calls.update(_saved_model_calls(saved))
    for name, call in calls.items():
        outputs = call(empty)
        assert {key: tuple(value.shape) for key, value in outputs.items()} == {
            "logits": (0, K), "probabilities": (0, K), "classes": (0,)}, name


def test_valid_images_give_the_same_outputs_in_every_format(exported):
    model, loaded, saved = exported
    reference = keras.tree.map_structure(keras.ops.convert_to_numpy, model(_IMAGES))
    outputs = {"loaded": loaded(_IMAGES), "predict": loaded.predict(_IMAGES, verbose=0),
               "predict after a refusal": _predict_after_a_refusal(loaded)}
    if saved is not None:
        outputs.update({name: call(_IMAGES) for name, call in _saved_model_calls(saved).items()})
    for name, output in outputs.items():
        output = keras.tree.map_structure(keras.ops.convert_to_numpy, output)
        np.testing.assert_array_equal(output["classes"], reference["classes"], err_msg=name)
        np.testing.assert_allclose(output["logits"], reference["logits"], rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(output["probabilities"], reference["probabilities"], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    assert reference["logits"].shape == (5, K) and np.ptp(reference["logits"]) > 0


def _predict_after_a_refusal(model):
    with pytest.raises(ValueError):
        model.predict(_IMAGES.astype(np.float32), verbose=0)
    return model.predict(_IMAGES, verbose=0)
