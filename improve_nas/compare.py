"""`improve-nas compare RUN_DIR [RUN_DIR ...]`: one row per run, its final ensemble and its settings side by side.

Each run is read as `improve-nas report` reads it (`report.load_report`: local or gs://, checked against the
iterations' manifests); the settings come from its config.json (absent for a run grown through the Python API:
left empty). The calibration figures (NLL, ECE, Brier) and the stop reason are shown when the run's report holds
them; older runs leave those cells empty. A directory without a finished iteration is one line naming it (exit 2).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from improve_nas.errors import UsageError, nearest

FORMATS = ("text", "csv", "json")
# config.json's hparams that tell runs apart (the generator and the search), in this order.
SETTINGS = ("generator", "search_space", "candidates_per_iteration", "selection", "boosting_iterations", "num_cells",
            "num_conv_filters", "knowledge_distillation", "mixture_weight_type", "learn_mixture_weights")
COLUMNS = ("run", "dataset", "members", "accuracy", "error", "nll", "ece", "brier", "params", "train_seconds",
           "stopped", "preset", "train_steps") + SETTINGS


def compare(run_dirs: list[str], *, output_format: str = "text") -> str:
    """The comparison of `run_dirs` in `output_format`."""
    if output_format not in FORMATS:
        raise UsageError(f"--format={output_format!r} is invalid; {nearest(output_format, FORMATS)}"
                         f"choose one of: {', '.join(FORMATS)}")
    if not run_dirs:
        raise UsageError("give at least one run directory")
    rows = [run_row(run_dir) for run_dir in run_dirs]
    if output_format == "json":
        return json.dumps(rows, indent=2) + "\n"
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)
        return buffer.getvalue()
    return format_text(rows)


def run_row(run_dir: str) -> dict[str, Any]:
    """The row of one run: its final ensemble (test partition), its size, time, stop reason and settings."""
    from improve_nas.report import load_report
    from improve_nas.storage import run_location

    report = load_report(run_dir)
    if not report["iterations"] or not report.get("final"):
        raise UsageError(f"{run_dir!r} has no finished iteration: nothing to compare")
    final = report["final"]
    last = report["iterations"][-1]
    stopped = report.get("stopped")
    config = _config(run_location.open_location(run_dir).read_text("config.json"))
    hparams = config.get("hparams") or {}
    row: dict[str, Any] = {
        "run": run_dir, "dataset": report["dataset"], "members": final["members"], "accuracy": final["accuracy"],
        "error": final.get("error", 1 - final["accuracy"]), "nll": final.get("nll", final["loss"]),
        "ece": final.get("ece"), "brier": final.get("brier"), "params": last["trainable_params"],
        "train_seconds": round(sum(entry["train_seconds"] for entry in report["iterations"]), 3),
        "stopped": stopped.get("reason") if isinstance(stopped, dict) else None,
        "preset": config.get("preset"), "train_steps": config.get("train_steps")}
    row.update({name: hparams.get(name) for name in SETTINGS})
    return row


def _config(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def format_text(rows: list[dict[str, Any]]) -> str:
    """An aligned table; columns no run has a value for are left out."""
    columns = [column for column in COLUMNS if any(row.get(column) is not None for row in rows)]
    table = [columns] + [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(line[index]) for line in table) for index in range(len(columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
