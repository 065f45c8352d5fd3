"""NASNet under fit, through `.keras` files, channels-first, and across the TensorFlow and JAX backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from tiny_nasnet import images, numpy, tiny

from improve_nas.models import NASNet
from improve_nas.models.aux_head import AuxHead
from improve_nas.models.layers import BlockSettings

pytestmark = pytest.mark.multibackend

BACKEND_CHECK = os.path.join(os.path.dirname(__file__), "backend_check_nasnet.py")


X = images()


def test_step_counter_advances_under_fit_and_the_loss_includes_weight_decay():
    model = NASNet(num_classes=3, num_cells=1, num_reduction_layers=0, num_conv_filters=2, weight_decay=0.1,
                   drop_path_keep_prob=0.5, total_training_steps=10)
    model.build((None, 8, 8, 1))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0),
                  loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    x, y = images(batch=6), np.array([0, 1, 2, 0, 1, 2])
    history = model.fit(x, {"logits": y}, batch_size=6, epochs=1, verbose=0)  # one step, at step 0: keep 1
    assert int(numpy(model.training_step.value)) == 1
    # The learning rate is 0, so redoing step 0 eagerly must give the fit loss: mean CE + sum(model.losses).
    model.training_step.assign(0)
    logits = model(x, training=True)["logits"]
    cross_entropy = float(np.mean(numpy(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))))
    l2 = float(sum(numpy(loss) for loss in model.losses))
    assert l2 > 0.01 * cross_entropy  # large enough to be seen
    assert history.history["loss"][0] == pytest.approx(cross_entropy + l2, rel=1e-4)
    # Same batch shape again (no retracing): 3 batches x 2 epochs.
    model.fit(np.concatenate([x] * 3), {"logits": np.concatenate([y] * 3)}, batch_size=6, epochs=2, verbose=0)
    assert int(numpy(model.training_step.value)) == 1 + 6


def randomized(model):
    """Random weights everywhere, batch-norm statistics included, so a wrong channel axis shows."""
    rng = np.random.default_rng(1)
    values = []
    for weight in model.weights:
        shape = tuple(weight.shape)
        if "moving_variance" in weight.path:
            values.append(rng.uniform(0.5, 1.5, shape))
        elif weight.dtype.startswith("int"):
            values.append(np.zeros(shape))
        else:
            values.append(rng.normal(0.0, 0.5, shape))
    model.set_weights(values)
    return model


def assert_close(actual, expected, name):
    # Float32 summation order differs between layouts: compare relative to the output's scale.
    tolerance = 1e-4 * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=tolerance, err_msg=name)


def test_nchw_equals_nhwc():
    # On TensorFlow without a GPU, plain convs run through a transpose (layers.Conv2D); the rest is native.
    nhwc, nchw = tiny(data_format="NHWC"), tiny(data_format="NCHW")
    nhwc.build(X.shape)
    nchw.build(X.shape)
    nchw.set_weights(randomized(nhwc).get_weights())
    # `predict` compiles each model once (eager JAX would compile op by op); inference mode with random
    # batch-norm statistics checks every layer's layout.
    expected, actual = nhwc.predict(X, verbose=0), nchw.predict(X, verbose=0)
    assert set(expected) == set(actual) == {"logits", "features"}
    for key in expected:
        assert_close(actual[key], expected[key], key)
    # The aux head only runs in training: check it as a layer, on a channels-first map.
    heads = [AuxHead(num_classes=3, settings=BlockSettings(data_format=f)) for f in ("channels_last", "channels_first")]
    feature_map = np.random.default_rng(2).normal(size=(2, 7, 7, 6)).astype("float32")
    heads[0].build(feature_map.shape)
    heads[1].build(feature_map.transpose(0, 3, 1, 2).shape)
    heads[1].set_weights(heads[0].get_weights())
    assert_close(numpy(heads[1](feature_map.transpose(0, 3, 1, 2), training=True)),
                 numpy(heads[0](feature_map, training=True)), "aux_logits")


def test_get_config_round_trip_and_keras_file(tmp_path):
    model = tiny(use_aux_head=True, drop_path_keep_prob=0.7, total_training_steps=5, dense_dropout_keep_prob=0.9)
    model.build(X.shape)
    model.training_step.assign(2)  # as after two training steps
    clone = NASNet.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    path = str(tmp_path / "nasnet.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, NASNet) and loaded.get_config() == model.get_config()
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]  # aux head included
    for saved, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(numpy(restored), numpy(saved), err_msg=saved.path)
    assert int(numpy(loaded.training_step.value)) == 2  # the drop-path ramp resumes where it was
    np.testing.assert_allclose(numpy(loaded(X)["logits"]), numpy(model(X)["logits"]), atol=1e-6)


def test_same_weights_give_the_same_logits_on_tensorflow_and_jax(tmp_path):
    model = tiny()
    expected = numpy(model(X)["logits"])
    model.save_weights(str(tmp_path / "nasnet.weights.h5"))
    np.save(tmp_path / "images.npy", X)
    (tmp_path / "config.json").write_text(json.dumps(model.get_config()))
    other = "jax" if keras.config.backend() == "tensorflow" else "tensorflow"
    env = {**os.environ, "KERAS_BACKEND": other, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, BACKEND_CHECK, str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == other
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-4, atol=1e-4)
