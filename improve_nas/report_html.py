"""`improve-nas report MODEL_DIR --format=html`: one self-contained HTML page of a run, and its figures as PNG files.

The page (default `MODEL_DIR/report.html` for a local run; a gs:// run needs --out, a local file) embeds every figure
as a base64 data URI, so it can be mailed or opened anywhere; the same figures are written as PNG files to
`report_plots/` beside it. Everything comes from the run's report (`report.load_report`, checked against the
iterations' manifests) except the reliability diagram, which needs the final ensemble's test predictions: the run's
export is loaded and the test partition rebuilt from config.json as training built it. When that cannot be done
(no export, no config.json, the data set unreadable here) the figure is left out and the page says why.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from typing import Any

from improve_nas import report_plots
from improve_nas.ensemble_cells import check_writable_file
from improve_nas.errors import UsageError, io_error_line
from improve_nas.storage import fileio, gcs

PAGE = "report.html"
PLOTS_DIR = "report_plots"


def default_out(model_dir: str, out: str | None) -> str:
    """--out, else the page in the (local) run directory; checked writable before anything is read."""
    if out is None:
        if gcs.is_gs_url(model_dir) or "://" in model_dir:
            raise UsageError(f"--format=html of {model_dir!r}: give --out=PATH, a local file, e.g. --out={PAGE}")
        out = os.path.join(model_dir, PAGE)
    if "://" in out:
        raise UsageError(f"--out={out!r}: write the page to a local file (copy it to a bucket afterwards)")
    check_writable_file(out)
    return out


def write_html_report(model_dir: str, *, out: str | None = None) -> str:
    """Writes the page of `model_dir` and its PNG files; returns the page's path."""
    from improve_nas.report import load_report

    out = default_out(model_dir, out)
    report = load_report(model_dir)
    figures, notes = figures_of(model_dir, report)
    plots_dir = os.path.join(os.path.dirname(os.path.abspath(out)), PLOTS_DIR)
    try:
        os.makedirs(plots_dir, exist_ok=True)
        for figure in figures:
            _write(os.path.join(plots_dir, f"{figure.name}.png"), figure.png)
        _write(out, render_page(model_dir, report, figures, notes).encode("utf-8"))
    except OSError as error:
        raise UsageError(io_error_line(error) or f"cannot write --out={out!r}: {error}") from None
    print(f"wrote {out} and {len(figures)} figures in {plots_dir}")
    return out


def figures_of(model_dir: str, report: dict[str, Any]) -> tuple[list[report_plots.Figure], list[str]]:
    """The page's figures, and a note for each one left out."""
    figures = report_plots.growth_figures(report) + [report_plots.mixture_weight_figure(report)]
    notes = []
    candidates = report_plots.candidate_figure(report)
    if candidates is None:
        notes.append("No candidate figure: no candidate of this run has a selection loss (a single candidate per "
                     "iteration is chosen without one).")
    else:
        figures.append(candidates)
    recorded = (report.get("final") or {}).get("ece_bins")  # the ECE's bin count, where the report holds one
    bins_count = recorded if isinstance(recorded, int) and recorded > 0 else report_plots.RELIABILITY_BINS
    bins, why_not = final_reliability(model_dir, bins=bins_count)
    if bins is None:
        notes.append(f"No reliability diagram: {why_not}.")
    else:
        figures.append(report_plots.reliability_figure(bins))
    return figures, notes


def final_reliability(model_dir: str, *, bins: int) -> tuple[dict[str, Any] | None, str]:
    """The reliability bins of the exported (final) ensemble on the run's test partition, else (None, why not)."""
    import json

    import numpy as np

    from improve_nas.config import Config
    from improve_nas.data import load_dataset
    from improve_nas.storage import run_location

    location = run_location.open_location(model_dir)
    text = location.read_text("config.json")
    if text is None:
        return None, "the run directory has no config.json to rebuild its test partition from"
    try:
        config = Config.from_dict(json.loads(text))
        dataset = load_dataset(config.dataset, data_dir=config.data_dir, seed=0)  # as run.py loads it
    except (UsageError, ValueError, KeyError, TypeError) as error:
        return None, f"its test data cannot be loaded here ({str(error).splitlines()[0] if str(error) else error})"
    with tempfile.TemporaryDirectory() as scratch:
        try:
            model = _load_export(location, scratch)
        except UsageError as error:
            return None, str(error)
        probabilities = np.asarray(model.predict(dataset.x_test, verbose=0)["probabilities"], dtype=np.float64)
    return report_plots.reliability_bins(probabilities, np.asarray(dataset.y_test), bins=bins), ""


def _load_export(location, scratch: str):
    from improve_nas.api import EXPORT_KERAS, load_model

    if location.local_dir == location.url:
        return load_model(location.url)
    try:  # gs://: a local copy of the one file
        data = gcs.read_bytes(f"{location.url}/{EXPORT_KERAS.replace(os.sep, '/')}")
    except FileNotFoundError:
        raise UsageError(f"no exported ensemble at {location.url}/{EXPORT_KERAS}") from None
    path = os.path.join(scratch, "ensemble.keras")
    with open(path, "wb") as stream:
        stream.write(data)
    return load_model(path)


def render_page(model_dir: str, report: dict[str, Any], figures: list[report_plots.Figure], notes: list[str]) -> str:
    escape = html.escape
    final = report.get("final") or {}
    facts = [("run directory", model_dir), ("dataset", f"{report['dataset']} ({report['num_classes']} classes)"),
             ("iterations", str(len(report["iterations"])))]
    if final:
        facts += [("members", str(final["members"])), ("final test accuracy", f"{final['accuracy']:.4f}"),
                  ("final test error", f"{report_plots.error(final):.2f} %")]
        facts += [(f"final test {key.upper()}", f"{final[key]:.4f}") for key in ("nll", "ece", "brier")
                  if final.get(key) is not None]
    stopped = report.get("stopped")
    if isinstance(stopped, dict) and stopped.get("reason"):
        detail = f": {stopped['detail']}" if stopped.get("detail") else ""
        facts.append(("stopped", f"{stopped['reason']}{detail}"))
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>improve_nas run: {escape(str(report['dataset']))}</title><style>{_STYLE}</style></head><body>",
             f"<h1>improve_nas run: {escape(str(report['dataset']))}</h1>", "<table class=\"facts\">"]
    parts += [f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>" for name, value in facts]
    parts.append("</table>")
    for figure in figures:
        data = base64.b64encode(figure.png).decode("ascii")
        parts.append(f"<figure><img alt=\"{escape(figure.name)}\" src=\"data:image/png;base64,{data}\">"
                     f"<figcaption>{escape(figure.caption)}</figcaption></figure>")
    parts += [f"<p class=\"note\">{escape(note)}</p>" for note in notes]
    parts += ["<h2>Iterations</h2>", iteration_table(report)]
    for entry in report["iterations"]:
        parts.append(f"<h3>Iteration {entry['iteration']}: {escape(entry['chosen'])}</h3>")
        parts.append(_table(("candidate", "chosen", "selection loss (selection partition)"),
                            [(name, "yes" if chosen else "", _number(loss))
                             for name, loss, chosen in report_plots.candidates(entry)]))
        parts.append(_table(("member", "test accuracy", "test error (%)", "test NLL" if "nll" in entry["ensemble"]
                             else "test loss", "mixture weight"),
                            [(name, f"{metrics['accuracy']:.4f}", f"{report_plots.error(metrics):.2f}",
                              _number(report_plots.nll(metrics)), _weight(entry, name))
                             for name, metrics in entry["member_metrics"].items()]))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def iteration_table(report: dict[str, Any]) -> str:
    """The table of `improve-nas report` (report.format_table's columns) as HTML."""
    header = ("iteration", "chosen", "members", "test accuracy", "test error (%)",
              "test NLL" if all("nll" in e["ensemble"] for e in report["iterations"]) else "test loss",
              "best member accuracy", "params", "train s")
    rows = []
    for entry in report["iterations"]:
        best = max((m["accuracy"] for m in entry["member_metrics"].values()), default=float("nan"))
        ensemble = entry["ensemble"]
        rows.append((str(entry["iteration"]), entry["chosen"], str(len(entry["members"])),
                     f"{ensemble['accuracy']:.4f}", f"{report_plots.error(ensemble):.2f}",
                     _number(report_plots.nll(ensemble)), f"{best:.4f}", f"{entry['trainable_params']:,}",
                     f"{entry['train_seconds']:.1f}"))
    return _table(header, rows)


def _weight(entry: dict[str, Any], name: str) -> str:
    weights = entry.get("mixture_weights") or []
    index = entry["members"].index(name) if name in entry["members"] else len(weights)
    return _number(report_plots.weight_summary(weights[index])) if index < len(weights) else "—"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    cells = ["<table><tr>" + "".join(f"<th>{html.escape(name)}</th>" for name in header) + "</tr>"]
    cells += ["<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows]
    return "\n".join(cells) + "</table>"


def _write(path: str, data: bytes) -> None:
    with fileio.atomic_path(path) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(data)


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}"
          "figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:90%;color:#444}.note{color:#a40}")
