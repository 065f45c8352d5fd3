"""The fused iteration model: training under fit, frozen members, clipping, EMA, inference, selection."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from improve_nas.adanet import (
    Builder,
    ComplexityRegularizedEnsembler,
    EnsembleRecord,
    EnsemblerSpec,
    FrozenEnsemble,
    IterationModel,
    LossSpec,
    MemberRecord,
    evaluate_adanet_losses,
    make_optimizer,
    select_candidate,
    serialize_ensembler,
)
from improve_nas.adanet.losses import softmax_cross_entropy
from improve_nas.adanet.runtime.inference import BatchedPredictor

pytestmark = pytest.mark.multibackend

K, D = 3, 6


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)


def _np(x):
    return keras.ops.convert_to_numpy(x.value if isinstance(x, keras.Variable) else x)


class TinyNet(keras.Model):
    """Dense → BN → logits; aux logits in training; counts calls (traces count too)."""

    def __init__(self, *, width=8, aux=False, features=True, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(width, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3))
        self.norm = keras.layers.BatchNormalization()
        self.head = keras.layers.Dense(K)
        self.aux_head = keras.layers.Dense(K) if aux else None
        self.with_features = features
        self.calls = 0

    def call(self, x, training=False):
        self.calls += 1
        h = self.norm(self.hidden(x), training=training)
        out = {"logits": self.head(h)}
        if self.with_features:
            out["features"] = h
        if training and self.aux_head is not None:
            out["aux_logits"] = self.aux_head(h)
        return out


class TinyBuilder(Builder):
    def __init__(self, name, **net_kwargs):
        self._name, self.net_kwargs = name, net_kwargs

    @property
    def name(self):
        return self._name

    def shared(self):
        return {"width": self.net_kwargs.get("width", 8)}

    def build_subnetwork(self, *, num_classes, input_shape):
        assert num_classes == K and input_shape == (D,)
        return TinyNet(**self.net_kwargs)


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(D, K)), axis=1).astype("int32")
    return x, y


def _frozen(num_members: int) -> FrozenEnsemble:
    """A previous ensemble of built TinyNets with non-trivial BN statistics, as the loop would load it."""
    x, _ = _data(8, seed=1)
    members = []
    for i in range(num_members):
        net = TinyNet()
        net(x, training=False)
        net.norm.moving_mean.assign(np.full((8,), 0.1 * (i + 1), "float32"))
        members.append(net)
    records = tuple(MemberRecord(name=f"t{i}_m", iteration=i, builder_name="m") for i in range(num_members))
    ensembler = ComplexityRegularizedEnsembler(num_members=num_members, num_classes=K)
    record = EnsembleRecord(name=f"t{num_members - 1}_m_grow", iteration=num_members - 1, members=records,
                            ensembler=serialize_ensembler(ensembler), adanet_loss_ema=0.7)
    return FrozenEnsemble.from_record(record, members)


def _model(builders, previous=None, *, learn=False, weight_type="scalar", distillation="none", ema=False,
           optimizer="momentum", lr=0.1, clip_norm=5.0, **kwargs):
    model = IterationModel(
        iteration=0 if previous is None else len(previous.members), builders=builders, num_classes=K,
        input_shape=(D,), previous=previous, track_adanet_loss_ema=ema,
        ensembler=EnsemblerSpec(weight_type=weight_type, learn_mixture_weights=learn),
        loss=LossSpec(distillation=distillation, **kwargs))
    model.compile(optimizer=make_optimizer(optimizer, learning_rate=lr, clip_norm=clip_norm,
                                           clip_groups=model.clip_groups()))
    return model


def _weights(layer):
    return [np.array(_np(v)) for v in layer.weights]


def _member_losses(model, x, y):
    """Label-smoothed CE of each new member in inference mode (eager, no compiled function)."""
    out = model(x, training=False)
    return {n: float(_np(softmax_cross_entropy(y, out["members"][n], 0.1))) for n in model.member_names}


def test_fit_trains_every_candidate_and_reports_per_candidate_losses():
    x, y = _data()
    model = _model([TinyBuilder("a"), TinyBuilder("b", width=4, aux=True)], ema=True)
    before = _member_losses(model, x, y)
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0)
    after = _member_losses(model, x, y)
    assert {"loss", "a_loss", "b_loss", "a_grow_adanet_loss", "b_grow_adanet_loss"} <= set(history.history)
    assert history.history["a_loss"][-1] < history.history["a_loss"][0]
    for name in ("t0_a", "t0_b"):
        assert after[name] < before[name] - 0.05, (name, before[name], after[name])


def test_only_candidates_and_learned_mixture_weights_are_trainable():
    previous = _frozen(2)
    fixed = _model([TinyBuilder("a")], previous)
    learned = _model([TinyBuilder("a")], previous, learn=True)
    candidate = len(fixed.subnetworks[0].trainable_variables)
    assert len(fixed.trainable_variables) == candidate
    assert len(learned.trainable_variables) == candidate + 3  # three scalar mixture weights


def test_frozen_members_do_not_change_during_fit():
    x, y = _data()
    previous = _frozen(2)
    snapshot = [_weights(m) for m in previous.members] + [_weights(previous.ensembler)]
    model = _model([TinyBuilder("a")], previous, learn=True, distillation="adaptive", ema=True)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert all(m.calls > 0 for m in previous.members)  # they were used...
    after = [_weights(m) for m in previous.members] + [_weights(previous.ensembler)]
    for old, new in zip(snapshot, after):  # ...and nothing of them moved, BN statistics included
        for a, b in zip(old, new):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("settings, expected_called", [
    ({}, [False, False]),
    ({"distillation": "born_again"}, [False, True]),
    ({"learn": True}, [True, True]),
])
def test_frozen_members_are_called_in_training_only_when_a_loss_needs_them(settings, expected_called):
    x, y = _data()
    previous = _frozen(2)
    model = _model([TinyBuilder("a")], previous, **settings)
    for member in previous.members:
        member.calls = 0
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert [m.calls > 0 for m in previous.members] == expected_called
    outputs = model.predict(x, batch_size=32, verbose=0)  # inference computes everything
    assert all(m.calls > 0 for m in previous.members)
    assert set(outputs["members"]) == {"t0_m", "t1_m", "t2_a"}
    assert set(outputs["ensembles"]) == {"t1_m_grow", "t2_a_grow"} == set(model.selection_names)


def test_tiny_clip_norm_freezes_candidates_while_mixture_weights_move():
    x, y = _data()
    previous = _frozen(1)
    model = _model([TinyBuilder("a"), TinyBuilder("b")], previous, learn=True, optimizer="sgd", lr=0.5,
                   clip_norm=1e-9)
    candidates = [_weights(s) for s in model.subnetworks]
    mixture = [_weights(e) for e in model.ensemblers]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for sub, old in zip(model.subnetworks, candidates):
        for variable, value in zip(sub.weights, old):
            if variable.trainable:
                np.testing.assert_allclose(_np(variable), value, atol=1e-7)
    moved = [max(np.abs(a - b).max() for a, b in zip(_weights(e), old))
             for e, old in zip(model.ensemblers, mixture)]
    assert min(moved) > 1e-4, moved  # every candidate ensemble's mixture weights moved


def test_regularization_and_aux_logits_in_training_outputs_only():
    x, _ = _data(8)
    model = _model([TinyBuilder("a", aux=True)])
    train_out = model(x, training=True)
    kernel = _np(model.subnetworks[0].hidden.kernel)
    assert float(_np(train_out["regularization"]["t0_a"])) == pytest.approx(1e-3 * (kernel ** 2).sum(), rel=1e-5)
    assert tuple(train_out["aux_logits"]["t0_a"].shape) == (8, K)
    assert set(model(x, training=False)) == {"members", "ensembles"}


def test_aux_head_weight_enters_the_loss():
    x, y = _data(8)
    model = _model([TinyBuilder("a", aux=True)], aux_head_weight=0.0)
    out = model(x, training=True)
    without = float(_np(model.compute_loss(y=y, y_pred=out)))
    model.loss_spec = LossSpec(aux_head_weight=0.4)
    with_aux = float(_np(model.compute_loss(y=y, y_pred=out)))
    aux_ce = float(_np(softmax_cross_entropy(y, out["aux_logits"]["t0_a"], 0.1)))
    assert with_aux - without == pytest.approx(0.4 * aux_ce, rel=1e-5)


def test_ema_counts_every_training_step_across_fits_and_survives_saving(tmp_path):
    x, y = _data()
    model = _model([TinyBuilder("a")], ema=True)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)  # 8 steps
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # 2 more: no reset at epoch or fit boundaries
    model.evaluate(x, y, verbose=0)  # inference does not update it
    assert float(_np(model.emas[0].count)) == 10.0
    value = model.adanet_loss_emas()[0]
    assert np.isfinite(value) and 0 < value < 3
    path = str(tmp_path / "iteration.weights.h5")
    model.save_weights(path)
    again = _model([TinyBuilder("a")], ema=True)
    again.load_weights(path)
    assert again.adanet_loss_emas() == pytest.approx([value])


def test_ungrown_ensemble_is_the_logit_average_and_records_round_trip():
    x, _ = _data(16)
    previous = _frozen(1)
    model = _model([TinyBuilder("a")], previous)
    out = model.predict(x, verbose=0)
    mean = (out["members"]["t0_m"] + out["members"]["t1_a"]) / 2
    np.testing.assert_allclose(out["ensembles"]["t1_a_grow"], mean, rtol=1e-5, atol=1e-6)
    record = model.ensemble_record(1)
    assert [m.name for m in record.members] == ["t0_m", "t1_a"] and record.name == "t1_a_grow"
    assert record.members[1].shared == {"width": 8} and record.adanet_loss_ema is None
    assert EnsembleRecord.from_json(record.to_json()) == record
    chosen = model.frozen_ensemble(1)
    assert chosen.members == (previous.members[0], model.subnetworks[0])
    assert model.frozen_ensemble(0) is previous and model.ensemble_record(0) is previous.record


def test_matrix_mixture_weights_need_features():
    with pytest.raises(ValueError, match="features"):
        _model([TinyBuilder("a", features=False)], weight_type="matrix")


def test_evaluator_pass_and_selection():
    x, y = _data()
    previous = _frozen(1)
    model = _model([TinyBuilder("a"), TinyBuilder("b")], previous, learn=True)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    # Evaluator batches of 16; inference in chunks of 24 (padded at the end), which must not change the result.
    losses = evaluate_adanet_losses(model, x[:64], y[:64], batch_size=16, predict=BatchedPredictor(24))
    assert len(losses) == 3
    first = model.predict_on_batch(x[:16])["ensembles"]["t1_a_grow"].astype(np.float64)
    log_probs = first - np.log(np.exp(first).sum(-1, keepdims=True))
    expected_first_batch = -log_probs[np.arange(16), y[:16]].mean()
    manual = np.mean([expected_first_batch] + [
        (lambda z, t: -(z - np.log(np.exp(z).sum(-1, keepdims=True)))[np.arange(16), t].mean())(
            model.predict_on_batch(bx)["ensembles"]["t1_a_grow"].astype(np.float64), by)
        for bx, by in batches[1:]])
    assert losses[1] == pytest.approx(manual, rel=1e-5)
    choice = select_candidate(num_candidates=3, has_previous=True, force_grow=True, losses=losses)
    assert choice.index == 1 + int(np.argmin(losses[1:])) and choice.losses == tuple(losses)


class ShiftWhenTraining(keras.layers.Layer):
    """A stand-in augmentation: +100 in training, identity in inference; counts calls."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, x, training=False):
        self.calls += 1
        return x + 100.0 if training else x


def test_preprocessing_runs_once_per_batch_and_teachers_see_the_same_batch():
    x, _ = _data(8)
    previous = _frozen(1)
    shift = ShiftWhenTraining()
    model = IterationModel(iteration=1, builders=[TinyBuilder("a"), TinyBuilder("b")], num_classes=K,
                           input_shape=(D,), previous=previous, preprocessing=shift,
                           loss=LossSpec(distillation="adaptive"))
    shift.calls = 0
    train_out = model(x, training=True)
    assert shift.calls == 1
    teacher_view = previous.members[0](x + 100.0, training=False)["logits"]
    np.testing.assert_allclose(_np(train_out["members"]["t0_m"]), _np(teacher_view), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(train_out["ensembles"]["t0_m_grow"]), _np(teacher_view), rtol=1e-5, atol=1e-5)
    inference_out = model(x, training=False)
    np.testing.assert_allclose(_np(inference_out["members"]["t0_m"]),
                               _np(previous.members[0](x, training=False)["logits"]), rtol=1e-5, atol=1e-5)
