"""The figures of the HTML report, drawn from a run's report (improve_nas.report) as PNG bytes.

matplotlib's object API on the Agg canvas (never pyplot's global state), so nothing needs a display. Every figure
reads the calibration figures (`error`, `nll`) where a report holds them and falls back to what older reports hold
(`1 - accuracy`, `loss`: the same mean cross-entropy as `nll`), saying which in the axis label.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any, Callable

import numpy as np

DPI = 100
RELIABILITY_BINS = 15  # as the ECE: equal-width confidence bins over [0, 1]


@dataclasses.dataclass(frozen=True)
class Figure:
    """One picture of the page: its file stem (report_plots/<name>.png), caption and PNG bytes."""

    name: str
    caption: str
    png: bytes


def error(metrics: dict[str, Any]) -> float:
    """Test error in %: the recorded `error` when there is one, else 1 - accuracy."""
    value = metrics.get("error")
    return 100 * (1 - metrics["accuracy"] if value is None else value)


def nll(metrics: dict[str, Any]) -> float:
    return metrics["nll"] if metrics.get("nll") is not None else metrics["loss"]


def nll_label(report: dict[str, Any]) -> str:
    recorded = all(entry["ensemble"].get("nll") is not None for entry in report["iterations"])
    return "test NLL" if recorded else "test loss (mean cross-entropy = NLL)"


def growth_figures(report: dict[str, Any]) -> list[Figure]:
    """Test error and NLL of the ensemble and of the best single member so far against members, total parameters
    and cumulative training time."""
    entries = report["iterations"]
    members = [len(entry["members"]) for entry in entries]
    params = [entry["trainable_params"] for entry in entries]
    seconds = np.cumsum([entry["train_seconds"] for entry in entries]).tolist()
    # Each member alone, at the ensemble size where it joined.
    joined: dict[str, tuple[int, dict[str, Any]]] = {}
    for entry in entries:
        for name, metrics in entry["member_metrics"].items():
            joined.setdefault(name, (len(entry["members"]), metrics))
    label = nll_label(report)
    figures = []
    for name, x, xlabel, points in (("by_members", members, "ensemble members", True),
                                    ("by_params", params, "total trainable parameters", False),
                                    ("by_train_time", seconds, "cumulative training time (s)", False)):
        figure, axes = _figure(2, width=10.0)
        for panel, (value, ylabel) in zip(axes, ((error, "test error (%)"), (nll, label))):
            panel.plot(x, [value(entry["ensemble"]) for entry in entries], "o-", label="ensemble")
            panel.plot(x, _best_member_so_far(entries, value), "s--", label="best single member so far")
            if points:
                panel.scatter([size for size, _ in joined.values()], [value(m) for _, m in joined.values()],
                              marker="x", color="grey", label="each member alone", zorder=3)
            panel.set_xlabel(xlabel)
            panel.set_ylabel(ylabel)
            panel.grid(alpha=0.3)
            panel.legend(fontsize=8)
        if points:
            for panel in axes:
                panel.xaxis.get_major_locator().set_params(integer=True)
        caption = {"by_members": "Test error and NLL (test partition) against the number of members: the ensemble, "
                                 "the best single member so far (by the figure shown), and each member alone where it joined.",
                   "by_params": "Test error and NLL (test partition) against the ensemble's total trainable "
                                "parameters.",
                   "by_train_time": "Test error and NLL (test partition) against the cumulative training time of the "
                                    "iterations (train_seconds)."}[name]
        figures.append(Figure(name, caption, _png(figure)))
    return figures


def _best_member_so_far(entries: list[dict[str, Any]], value: Callable[[dict[str, Any]], float]) -> list[float]:
    """Per iteration, the lowest `value` of a single member among all members up to it."""
    best, out = math.inf, []
    for entry in entries:
        best = min([best] + [value(metrics) for metrics in entry["member_metrics"].values()])
        out.append(best if math.isfinite(best) else math.nan)
    return out


def mixture_weight_figure(report: dict[str, Any]) -> Figure:
    """Each member's mixture weight per iteration (the mean of a vector or matrix weight)."""
    figure, [axes] = _figure(1)
    entries = report["iterations"]
    names = list(dict.fromkeys(name for entry in entries for name in entry["members"]))
    width = 0.8 / max(1, len(names))
    for index, name in enumerate(names):
        xs, ys = [], []
        for entry in entries:
            weights = entry.get("mixture_weights") or []
            if name in entry["members"] and entry["members"].index(name) < len(weights):
                xs.append(entry["iteration"] + (index - (len(names) - 1) / 2) * width)
                ys.append(weight_summary(weights[entry["members"].index(name)]))
        axes.bar(xs, ys, width=width, label=name)
    axes.set_xticks([entry["iteration"] for entry in entries])
    axes.set_xlabel("iteration")
    axes.set_ylabel("mixture weight (mean of its entries)")
    axes.axhline(0, color="black", linewidth=0.5)
    if len(names) <= 12:
        axes.legend(fontsize=7)
    return Figure("mixture_weights", "Mixture weight of each member of the ensemble chosen at each iteration (the "
                  "ensembler's weights of iterations/<t>/architecture.json; a vector or matrix weight is shown as "
                  "the mean of its entries).", _png(figure))


def weight_summary(weight: Any) -> float:
    values = np.asarray(weight, dtype=np.float64)
    return float(values.mean()) if values.size else math.nan


def candidate_figure(report: dict[str, Any]) -> Figure | None:
    """The selection loss of every candidate of every iteration, the chosen one marked; None when none has one."""
    figure, [axes] = _figure(1)
    plotted = False
    for entry in report["iterations"]:
        for name, loss, chosen in candidates(entry):
            if loss is None or not math.isfinite(loss):
                continue
            plotted = True
            axes.scatter([entry["iteration"]], [loss], marker="*" if chosen else "o", s=160 if chosen else 30,
                         color="tab:red" if chosen else "tab:blue", zorder=3 if chosen else 2)
    if not plotted:
        return None
    axes.scatter([], [], marker="*", s=160, color="tab:red", label="chosen")
    axes.scatter([], [], marker="o", s=30, color="tab:blue", label="not chosen")
    axes.set_xticks([entry["iteration"] for entry in report["iterations"]])
    axes.set_xlabel("iteration")
    axes.set_ylabel("selection loss (selection partition)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return Figure("candidates", "The candidates of each iteration by the loss of the ensemble each would make on the "
                  "selection partition (the one it is chosen by); the chosen one is the star.", _png(figure))


def candidates(entry: dict[str, Any]) -> list[tuple[str, float | None, bool]]:
    """(name, selection loss, chosen) of an iteration's candidates: its subnetwork records when it has them."""
    if entry.get("subnetworks"):
        return [(sub["name"], sub.get("selection_loss"), bool(sub.get("chosen"))) for sub in entry["subnetworks"]]
    return [(c["name"], c.get("selection_loss"), c["name"] == entry["chosen"]) for c in entry["candidates"]]


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = RELIABILITY_BINS) -> dict[str, Any]:
    """Per equal-width confidence bin: the count, the mean confidence and the accuracy (NaN when empty), and the
    expected calibration error they make."""
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    gaps = np.where(counts > 0, np.abs(accuracy - mean_confidence), 0.0)
    return {"counts": counts.tolist(), "confidence": mean_confidence.tolist(), "accuracy": accuracy.tolist(),
            "ece": float((counts * gaps).sum() / max(1, counts.sum()))}


def reliability_figure(bins: dict[str, Any]) -> Figure:
    count = len(bins["counts"])
    edges = np.linspace(0, 1, count + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    figure, [top, bottom] = _figure(2, width=6.0, height=7.0, vertical=True, ratios=(3, 1))
    accuracy = np.nan_to_num(np.asarray(bins["accuracy"], dtype=np.float64))
    top.bar(centers, accuracy, width=1 / count, edgecolor="black", label="accuracy")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"ECE {bins['ece']:.4f} ({count} bins)", fontsize=10)
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(centers, bins["counts"], width=1 / count, edgecolor="black", color="tab:grey")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("examples")
    return Figure("reliability", f"Reliability diagram of the final ensemble on the test partition: accuracy per "
                  f"confidence bin ({count} equal-width bins, as the ECE), and how many test examples fall in each.",
                  _png(figure))


def _figure(panels: int, *, width: float = 6.0, height: float = 4.0, vertical: bool = False,
            ratios: tuple[int, ...] | None = None):
    from matplotlib.figure import Figure as MatplotlibFigure

    figure = MatplotlibFigure(figsize=(width, height), dpi=DPI, layout="constrained")
    shape = (panels, 1) if vertical else (1, panels)
    keywords: dict[str, Any] = {"squeeze": False}
    if ratios:
        keywords["gridspec_kw"] = {"height_ratios" if vertical else "width_ratios": ratios}
    axes = figure.subplots(*shape, **keywords)
    return figure, list(axes.flat)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()

