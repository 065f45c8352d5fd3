"""The iteration loop end to end on tiny Dense subnetworks: growth, selection, resume, report bookkeeping."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from toy_engine import GrowingGenerator, Interrupt, K, SameGenerator, Scale, WidthBuilder, grow, settings, toy_data

from improve_nas.adanet import EnsemblerSpec, LossSpec, RunDirectory, grow_ensemble, load_final_ensemble
from improve_nas.adanet.runtime.inference import default_inference_batch_size

pytestmark = pytest.mark.multibackend


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One run of the default toy settings (3 iterations, data on the device), which several tests only read."""
    path = tmp_path_factory.mktemp("default") / "run"
    return path, grow(path)


def test_force_grow_adds_one_member_per_iteration(default_run):
    path, summaries = default_run
    assert [s["iteration"] for s in summaries] == [0, 1, 2]
    assert [len(s["members"]) for s in summaries] == [1, 2, 3]
    assert summaries[-1]["members"] == ["t0_dense_8", "t1_dense_8", "t2_dense_8"]
    assert [s["global_step"] for s in summaries] == [6, 12, 18]
    per_member = 16 * 8 + 8 + 8 * K + K  # Dense(8) on 4·4·1 inputs, then the logits layer
    assert [s["trainable_params"] for s in summaries] == [per_member, 2 * per_member, 3 * per_member]
    # With the simple generator and force_grow nothing is evaluated for selection (docs/original_code.md §6.7 rules 1-2).
    assert all(c["selection_loss"] is None for s in summaries for c in s["candidates"])
    final = load_final_ensemble(RunDirectory(str(path)))
    assert len(final.members) == 3
    np.testing.assert_allclose(np.ravel(summaries[-1]["mixture_weights"]), [1 / 3] * 3, rtol=1e-6)


@pytest.fixture(scope="module")
def growing_run(tmp_path_factory):
    """Two iterations of two candidates (GrowingGenerator), default settings otherwise: read by two tests."""
    return grow(tmp_path_factory.mktemp("growing") / "run", generator=GrowingGenerator(), num_iterations=2)


def test_two_candidates_keep_the_lower_selection_loss_and_grow_from_it(growing_run):
    summaries = growing_run
    for summary in summaries:
        losses = {c["name"]: c["selection_loss"] for c in summary["candidates"]}
        new = {name: loss for name, loss in losses.items() if name.startswith(f"t{summary['iteration']}_")}
        assert summary["chosen"] == min(new, key=new.get)
    first_width = int(summaries[0]["members"][0].split("_")[-1])
    assert {c["name"] for c in summaries[1]["candidates"] if c["name"].startswith("t1_")} == {
        f"t1_dense_{first_width + 1}_grow", f"t1_dense_{first_width * 4}_grow"}


def test_without_force_grow_the_previous_ensemble_competes(tmp_path):
    summaries = grow(tmp_path / "run", force_grow=False, num_iterations=2)
    second = summaries[1]
    assert second["candidates"][0]["name"] == summaries[0]["chosen"]
    assert all(c["selection_loss"] is not None for c in second["candidates"])
    losses = [c["selection_loss"] for c in second["candidates"]]
    assert second["chosen"] == second["candidates"][int(np.argmin(losses))]["name"]


def test_resume_after_a_kill_mid_iteration_loses_and_repeats_nothing(default_run, tmp_path):
    _, reference = default_run
    run_dir = RunDirectory(str(tmp_path / "run"))
    kill = {"iteration": 1, "after": 3}  # iteration 1, step 3: its last checkpoint is at step 2

    def interrupting(model, iteration, start_step):
        return [Interrupt(kill["after"])] if iteration == kill["iteration"] else []

    with pytest.raises(KeyboardInterrupt):
        grow_ensemble(run_dir=run_dir, settings=settings(), generator=SameGenerator(), data=toy_data(),
                      make_preprocessing=lambda seed: Scale(), make_callbacks=interrupting)
    assert run_dir.finished_iterations() == [0]
    resumed = grow(tmp_path / "run")
    assert [s["iteration"] for s in resumed] == [0, 1, 2]
    for got, want in zip(resumed, reference):
        assert got["members"] == want["members"] and got["global_step"] == want["global_step"]
        # The losses are the exactness check: one step lost or repeated moves them by ~1e-2. The toy ensemble is
        # near chance after 6 steps (loss ~1.04 of ln 3), so float round-off that differs between CPU thread
        # schedules can flip a near-tied argmax: accuracy may differ by up to 2 of the 32 test images.
        assert got["ensemble"]["loss"] == pytest.approx(want["ensemble"]["loss"], rel=1e-4)
        for name, metrics in want["member_metrics"].items():
            assert got["member_metrics"][name]["loss"] == pytest.approx(metrics["loss"], rel=1e-4)
        assert got["ensemble"]["accuracy"] == pytest.approx(want["ensemble"]["accuracy"], abs=2 / 32 + 1e-6)


def test_a_finished_run_rerun_adds_nothing(default_run, tmp_path):
    finished, first = default_run
    shutil.copytree(finished, tmp_path / "run")  # a copy: the other tests read the original
    files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*"))
    again = grow(tmp_path / "run")
    assert again == first
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "run").rglob("*")) == files


def test_learned_mixture_weights_move_and_the_ensemble_learns(tmp_path):
    summaries = grow(tmp_path / "run", num_iterations=2, iteration_steps=60, learning_rate=0.5,
                     ensembler=EnsemblerSpec(learn_mixture_weights=True),
                     loss=LossSpec(label_smoothing=0.1, distillation="adaptive"))
    weights = np.ravel(summaries[-1]["mixture_weights"])
    assert not np.allclose(weights, 0.5)
    assert summaries[-1]["ensemble"]["accuracy"] > 0.8  # chance is 1/3


def test_members_loaded_from_disk_are_frozen(default_run):
    from improve_nas.adanet import IterationModel

    previous = RunDirectory(str(default_run[0])).load_ensemble(0)
    model = IterationModel(iteration=1, builders=[WidthBuilder(8)], num_classes=K, input_shape=(4, 4, 1),
                           previous=previous, preprocessing=Scale(), input_dtype="uint8")
    own = {id(v) for sub in model.subnetworks for v in sub.trainable_variables}
    assert own and {id(v) for v in model.trainable_variables} == own
    assert not any(v.trainable for member in previous.members for v in member.variables)


def test_data_on_the_device_trains_on_the_same_batches_as_the_host_generator(default_run, tmp_path):
    on_device = default_run[1][:2]  # data_on_device is the default
    assert settings().data_on_device
    from_host = grow(tmp_path / "host", num_iterations=2, data_on_device=False)
    for got, want in zip(on_device, from_host):
        assert got["members"] == want["members"]
        assert got["ensemble"]["loss"] == pytest.approx(want["ensemble"]["loss"], rel=1e-5)
        for name, metrics in want["member_metrics"].items():
            assert got["member_metrics"][name]["loss"] == pytest.approx(metrics["loss"], rel=1e-5)


def test_checkpoints_leave_the_device_data_out(tmp_path):
    from improve_nas.adanet import IterationModel
    from improve_nas.adanet.optimizers import make_optimizer
    from improve_nas.adanet.runtime import checkpoints
    from improve_nas.adanet.runtime.device_data import DeviceData

    data = toy_data()
    model = IterationModel(iteration=0, builders=[WidthBuilder(8)], num_classes=K, input_shape=(4, 4, 1),
                           preprocessing=Scale(), input_dtype="uint8",
                           device_data=DeviceData(data.x_train, data.y_train))
    model.compile(optimizer=make_optimizer("sgd", learning_rate=0.1, schedule="constant", decay_steps=1))
    model.optimizer.build(model.trainable_variables)
    path = checkpoints.save(str(tmp_path), model, step=1, keep=1)
    with np.load(path) as saved:
        assert not any("training_data" in p or p.endswith(("/images", "/labels")) for p in saved["paths"])
        assert max(saved[key].size for key in saved.files if key != "paths") < data.x_train.size


def test_ema_selection_without_force_grow_compares_the_previous_ensemble_on_this_iterations_batches(tmp_path):
    # Iteration 0 has one candidate, so it tracks no EMA; iteration 1 must still give the previous ensemble one.
    summaries = grow(tmp_path / "run", force_grow=False, use_evaluator=False, num_iterations=2)
    losses = [c["selection_loss"] for c in summaries[1]["candidates"]]
    assert len(losses) == 2 and all(loss is not None and np.isfinite(loss) for loss in losses)
    assert summaries[1]["chosen"] == summaries[1]["candidates"][int(np.argmin(losses))]["name"]


def test_selection_and_evaluation_do_not_depend_on_the_inference_batch_size(growing_run, tmp_path):
    data = toy_data()
    # The default chunk holds the whole selection and test sets: one chunk, against chunks of 5 and a ragged last one.
    assert default_inference_batch_size() >= max(len(data.x_select), len(data.x_test))
    assert settings().inference_batch_size is None
    small = grow(tmp_path / "run_5", generator=GrowingGenerator(), num_iterations=2, inference_batch_size=5)
    large = growing_run
    for a, b in zip(small, large):
        assert a["chosen"] == b["chosen"]
        np.testing.assert_allclose([c["selection_loss"] for c in a["candidates"]],
                                   [c["selection_loss"] for c in b["candidates"]], rtol=1e-5)
        assert a["ensemble"]["accuracy"] == b["ensemble"]["accuracy"]
        assert a["ensemble"]["loss"] == pytest.approx(b["ensemble"]["loss"], rel=1e-5)
