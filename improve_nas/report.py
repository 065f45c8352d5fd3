"""report.json, report.md and the `improve-nas report` table.

Each finished iteration's entry is written into its own `iterations/<t>/` directory (so it is saved with the
iteration, atomically); `report.json` at the top of the run directory is rebuilt from those entries after every
iteration and at the end, so it is always complete for what has finished.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

from improve_nas import fileio
from improve_nas.errors import UsageError

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def build_report(*, dataset: str, num_classes: int, iterations: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The DESIGN §4 report: run facts, one entry per finished iteration, and the final ensemble's metrics."""
    entries = sorted(iterations, key=lambda entry: entry["iteration"])
    final = None
    if entries:
        last = entries[-1]
        final = {"accuracy": last["ensemble"]["accuracy"], "loss": last["ensemble"]["loss"],
                 "members": len(last["members"])}
    return {"dataset": dataset, "num_classes": num_classes, "iterations": entries, "final": final}


def write_report(model_dir: str, report: dict[str, Any]) -> None:
    fileio.write_json(os.path.join(model_dir, REPORT_JSON), report)
    fileio.write_text(os.path.join(model_dir, REPORT_MD), format_markdown(report))


def load_report(model_dir: str) -> dict[str, Any]:
    """The report of run directory `model_dir`, local or gs://BUCKET/PATH (read as the run reads its files)."""
    from improve_nas import run_location

    text = run_location.open_location(model_dir).read_text(REPORT_JSON)
    if text is None:
        raise UsageError(f"no {REPORT_JSON} in {model_dir!r}: not a run directory, or no iteration has finished yet")
    return json.loads(text)


def format_table(report: dict[str, Any]) -> str:
    """The per-iteration table `improve-nas report` prints."""
    header = ("iter", "chosen", "members", "test acc", "test loss", "best member acc", "params", "train s")
    rows = [header]
    for entry in report["iterations"]:
        member_accuracy = max((m["accuracy"] for m in entry["member_metrics"].values()), default=float("nan"))
        rows.append((str(entry["iteration"]), entry["chosen"], str(len(entry["members"])),
                     f"{entry['ensemble']['accuracy']:.4f}", f"{entry['ensemble']['loss']:.4f}",
                     f"{member_accuracy:.4f}", f"{entry['trainable_params']:,}", f"{entry['train_seconds']:.1f}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    final = report.get("final")
    summary = (f"final: {final['members']} members, test accuracy {final['accuracy']:.4f}, "
               f"error {100 * (1 - final['accuracy']):.2f} %" if final else "final: no iteration finished yet")
    return f"dataset {report['dataset']} ({report['num_classes']} classes)\n" + "\n".join(lines) + "\n" + summary


def format_markdown(report: dict[str, Any]) -> str:
    lines = [f"# improve_nas run: {report['dataset']}", "", "```", format_table(report), "```", ""]
    for entry in report["iterations"]:
        lines.append(f"## Iteration {entry['iteration']}: {entry['chosen']}")
        lines.append("")
        lines.append("| candidate | selection loss |")
        lines.append("|---|---|")
        for candidate in entry["candidates"]:
            loss = candidate["selection_loss"]
            lines.append(f"| {candidate['name']} | {'—' if loss is None else f'{loss:.4f}'} |")
        lines.append("")
        lines.append("| member | test accuracy | test loss |")
        lines.append("|---|---|---|")
        for name, metrics in entry["member_metrics"].items():
            lines.append(f"| {name} | {metrics['accuracy']:.4f} | {metrics['loss']:.4f} |")
        lines.append("")
    return "\n".join(lines)
