"""The paper presets build their real 6@768 NASNet ensembles and start training, on TFDS mock CIFAR data.

Tracing a 20-cell NASNet training step takes minutes on a 2-core CPU, so these run only when asked for:
`IMPROVE_NAS_PAPER_TESTS=1 python -m pytest -q tests/test_paper_presets.py`.
"""

import os

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("IMPROVE_NAS_PAPER_TESTS") != "1", reason="set IMPROVE_NAS_PAPER_TESTS=1 (minutes of tracing)")]


@pytest.mark.parametrize("preset,dataset,num_classes,params", [
    ("paper_cifar10", "cifar10", 10, 3_346_538), ("paper_cifar100", "cifar100", 100, 3_415_748)])
def test_paper_preset_builds_and_trains_a_few_steps(preset, dataset, num_classes, params, tmp_path):
    import dataclasses

    import tensorflow_datasets as tfds

    from improve_nas.adanet.runtime.engine import grow_ensemble
    from improve_nas.adanet.runtime.run_directory import RunDirectory
    from improve_nas.data import load_dataset
    from improve_nas.experiment import experiment
    from improve_nas.presets import resolve_config

    # 10 iterations of 2 steps each; the test runs the first iteration only.
    config = resolve_config(preset=preset, flags=dict(model_dir=str(tmp_path), train_steps=20, batch_size=4,
                                                      eval_steps=1, save_checkpoints_steps=2,
                                                      save_checkpoints_secs=0, tf_random_seed=1))
    assert (config.dataset, config.hparams.num_cells, config.hparams.num_conv_filters) == (dataset, 18, 32)
    with tfds.testing.mock_data(num_examples=8, data_dir=str(tmp_path / "tfds")):
        data = load_dataset(config.dataset, data_dir=str(tmp_path / "tfds"))
    assert data.num_classes == num_classes and data.image_shape == (32, 32, 3)
    inputs = experiment(config, data, seed=1)
    summaries = grow_ensemble(
        run_dir=RunDirectory(str(tmp_path / "run")), settings=dataclasses.replace(
            inputs.settings, num_iterations=1, verbose=False), data=inputs.data, generator=inputs.generator,
        make_preprocessing=inputs.make_preprocessing)
    (entry,) = summaries
    assert entry["members"] == ["t0_NasNet_A_6.0_768_" + (
        "adaptive_cifar" if preset == "paper_cifar10" else "cifar")]
    assert entry["trainable_params"] == params
    assert np.isfinite(entry["ensemble"]["loss"])
