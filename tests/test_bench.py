"""`improve-nas bench`: the JSON it prints has every promised key, and bad arguments are one-line usage errors.

Timings are never checked here (they depend on the machine); the README's Performance section holds measured numbers.
"""

import json

import numpy as np
import pytest

from improve_nas.bench import bench_config
from improve_nas.cli import main
from improve_nas.errors import UsageError

pytestmark = pytest.mark.multibackend

# Smallest NASNet the hparams allow (3 normal cells, no reduction, 2 filters) on 8x8 grey images.
TINY_HPARAMS = "num_cells=3,num_conv_filters=2,num_reduction_layers=0,use_aux_head=False,knowledge_distillation=none"


def write_tiny_npz(path):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (32, 8, 8), dtype=np.uint8), y_train=np.arange(32) % 3,
             x_test=rng.integers(0, 256, (8, 8, 8), dtype=np.uint8), y_test=np.arange(8) % 3)
    return f"npz:{path}"


@pytest.mark.slow
def test_tiny_bench_prints_every_key_with_sane_types(tmp_path, capsys):
    dataset = write_tiny_npz(tmp_path / "tiny.npz")
    assert main(["bench", f"--hparams={TINY_HPARAMS}", "--data_params=cutout_size=4", "--batch_size=4",
                 f"--dataset={dataset}", "--steps=3", "--iterations=2", "--format=json"]) == 0
    result = json.loads(capsys.readouterr().out)

    for key in ("backend", "device"):
        assert isinstance(result[key], str) and result[key]
    for key in ("img_per_s", "baseline_img_per_s", "baseline_ratio", "last_over_first", "baseline_compile_seconds"):
        assert isinstance(result[key], float) and result[key] > 0, key
    for key in ("per_iteration_img_per_s", "compile_seconds", "step_seconds_median", "cpu_seconds_per_step"):
        assert len(result[key]) == 2 and all(isinstance(v, float) and v > 0 for v in result[key]), key
    before_after = result["baseline_img_per_s_before_after"]
    assert len(before_after) == 2 and all(isinstance(v, float) and v > 0 for v in before_after)
    assert min(before_after) <= result["baseline_img_per_s"] <= max(before_after)  # pooled over both
    assert len(result["traces_per_iteration"]) == 2
    assert all(isinstance(t, int) and t >= 1 for t in result["traces_per_iteration"] + [result["baseline_traces"]])
    rss = result["host_rss_bytes_per_iteration"]
    assert len(rss) == 2 and all(isinstance(b, int) and b > 0 for b in rss)
    assert result["peak_host_rss_bytes"] >= max(rss)
    assert len(result["load_average"]) == 2
    assert result["host"]["cores"] >= 1
    assert (result["batch_size"], result["steps"], result["iterations"]) == (4, 3, 2)
    config = result["config"]
    assert config["hparams"]["num_conv_filters"] == 2 and config["data_params"]["cutout_size"] == 4
    assert config["image_shape"] == [8, 8, 1] and config["dataset_train_examples"] == 32


def test_bench_config_trains_steps_per_iteration_with_one_checkpoint_each():
    config = bench_config(preset="smoke", hparams="num_cells=6", steps=7, iterations=4)
    assert config.iteration_steps == 7 and config.hparams.boosting_iterations == 4
    assert config.save_checkpoints_steps == 7 and config.save_checkpoints_secs == 0
    assert config.hparams.num_cells == 6 and config.batch_size == 16  # the flag kept, the preset's batch size too
    assert bench_config(hparams="boosting_iterations=5", steps=2).hparams.boosting_iterations == 5


BAD_ARGUMENTS = {
    "one step": (["--steps=1"], "--steps=1"),
    "no iterations": (["--iterations=0"], "--iterations=0"),
    "unknown format": (["--format=xml"], "xml"),
    "unknown hparam": (["--hparams=num_cels=3"], "num_cels"),
    "bad data_param": (["--data_params=augmentation=inception"], "inception"),
    "unknown preset": (["--preset=paper"], "paper"),
    "unknown dataset": (["--dataset=cifar11"], "cifar11"),
    "bad batch size": (["--batch_size=0"], "batch_size"),
    "unknown flag": (["--learning_rate=3"], "learning_rate"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_bad_arguments_are_one_line_usage_errors(case, capsys):
    flags, fragment = BAD_ARGUMENTS[case]
    assert main(["bench", *flags]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and fragment in error[0]


def test_bench_config_raises_usage_error():
    with pytest.raises(UsageError, match="--steps=0"):
        bench_config(steps=0)


def test_bench_takes_a_searching_generator_and_reports_its_k_distinct_genotypes_per_iteration(tmp_path, capsys):
    dataset = write_tiny_npz(tmp_path / "tiny.npz")
    assert main(["bench", f"--hparams={TINY_HPARAMS},generator=random,candidates_per_iteration=2",
                 "--data_params=cutout_size=4", "--batch_size=4", f"--dataset={dataset}", "--steps=2", "--iterations=2",
                 "--format=json"]) == 0
    result = json.loads(capsys.readouterr().out)
    candidates = result["candidates_per_iteration"]
    assert [len(c) for c in candidates] == [2, 2] and len({h for c in candidates for h in c}) == 4
    assert len(result["compile_seconds"]) == 2 and all(s > 0 for s in result["compile_seconds"])
