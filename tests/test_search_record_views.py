"""Where the record of searched candidates shows: report.md's table and TensorBoard's text, from a summary entry."""

from __future__ import annotations

import os

import numpy as np

from improve_nas import report, summaries
from improve_nas.search import space


def _entry(genotype: space.Genotype, name: str, *, chosen: bool, loss: float | None) -> dict:
    return {"name": name, "iteration": 0, "builder_name": name[3:], "selection_loss": loss, "loss": loss,
            "accuracy": None if loss is None else 0.5, "params": 1234, "train_seconds": 1.0, "chosen": chosen,
            "shared": {"genotype": genotype.to_dict(), "genotype_text": genotype.text(),
                       "genotype_hash": genotype.digest()}}


def _summary() -> dict:
    other = space.sample(np.random.default_rng(0), "nasnet")
    return {"iteration": 0, "members": ["t0_a"], "candidates": [{"name": "t0_a_grow", "selection_loss": 0.5},
                                                                {"name": "t0_b_grow", "selection_loss": 0.7}],
            "chosen": "t0_a_grow", "mixture_weights": [[1.0]], "ensemble": {"accuracy": 0.5, "loss": 0.5},
            "member_metrics": {"t0_a": {"accuracy": 0.5, "loss": 0.5}}, "member_params": {"t0_a": 1234},
            "trainable_params": 1234, "train_seconds": 1.0, "global_step": 4,
            "subnetworks": [_entry(space.DARTS_V2, "t0_a", chosen=True, loss=0.5),
                            _entry(other, "t0_b", chosen=False, loss=None)]}


def test_report_md_lists_every_candidate_with_its_genotype_text():
    summary = _summary()
    markdown = report.format_markdown(report.build_report(dataset="digits", num_classes=10, iterations=[summary]))
    for sub in summary["subnetworks"]:
        assert f"`{sub['shared']['genotype_text']}`" in markdown
    assert "| t0_a | yes | 0.5000 |" in markdown and "| t0_b |  | — |" in markdown


def test_tensorboard_gets_the_chosen_genotypes_as_text(tmp_path):
    import tensorflow as tf

    summary = _summary()
    summaries.write_iteration_summary(str(tmp_path), summary)
    texts = []
    for name in os.listdir(tmp_path):
        if not os.path.isfile(tmp_path / name):
            continue
        for event in tf.compat.v1.train.summary_iterator(str(tmp_path / name)):
            texts += [tf.make_ndarray(v.tensor).item().decode() for v in event.summary.value
                      if v.tag == "chosen_genotypes"]
    assert texts == [f"- `t0_a` ({space.DARTS_V2.digest()}): `{space.DARTS_V2.text()}`"]
