"""report.json, report.md and the `improve-nas report` table.

Each finished iteration's entry is written into its own `iterations/<t>/` directory (so it is saved with the
iteration, atomically); `report.json` at the top of the run directory is rebuilt from those entries after every
iteration and at the end, so it is always complete for what has finished; `load_report` rebuilds it from them when
it is missing, damaged or stale.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable

from improve_nas.adanet import stopping
from improve_nas.errors import UsageError
from improve_nas.storage import fileio, integrity

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
# The calibration figures of a metrics dict (`adanet/calibration.py`); run directories written before them lack them.
CALIBRATION_KEYS = ("error", "nll", "ece", "ece_bins", "brier")
MISSING = "-"


def build_report(*, dataset: str, num_classes: int, iterations: Iterable[dict[str, Any]],
                 hparams: Any = None) -> dict[str, Any]:
    """The docs/design.md §4 report: run facts, one entry per finished iteration, and the final ensemble's metrics.

    With the run's `hparams` (a `config.HParams`), also why the run stopped where it did (`stopped`).
    """
    entries = sorted(iterations, key=lambda entry: entry["iteration"])
    final = None
    if entries:
        last = entries[-1]
        final = {"accuracy": last["ensemble"]["accuracy"], "loss": last["ensemble"]["loss"],
                 **{key: last["ensemble"][key] for key in CALIBRATION_KEYS if key in last["ensemble"]},
                 "members": len(last["members"])}
        if "temperature_scaling" in last:  # the final ensemble's T, as the export applies it
            final["temperature_scaling"] = last["temperature_scaling"]
    report = {"dataset": dataset, "num_classes": num_classes, "iterations": entries, "final": final}
    if hparams is not None:
        report["stopped"] = stopped_outcome(entries, hparams)
    return report


def stopped_outcome(entries: list[dict[str, Any]], hparams: Any) -> dict[str, Any]:
    """Why a run of `hparams` with these finished iterations stopped: early_stopping, completed or unfinished."""
    return stopping.outcome(entries, num_iterations=hparams.boosting_iterations,
                            patience=hparams.early_stopping_patience, min_delta=hparams.early_stopping_min_delta)


def write_report(model_dir: str, report: dict[str, Any]) -> None:
    fileio.write_json(os.path.join(model_dir, REPORT_JSON), report)
    fileio.write_text(os.path.join(model_dir, REPORT_MD), format_markdown(report))


def load_report(model_dir: str) -> dict[str, Any]:
    """The report of run directory `model_dir`, local or gs://BUCKET/PATH (read as the run reads its files).

    Made from the iterations' summary.json files, each checked against its iteration's manifest (a local run
    directory has its finished iterations checked whole); `report.json` is used as it is when it agrees with them, and
    rebuilt (and, locally, rewritten) when it is missing, damaged or stale, with one line on stderr saying so.
    """
    from improve_nas.storage import run_location

    location = run_location.open_location(model_dir)
    local = location.local_dir == location.url
    if local:
        integrity.check_iterations(model_dir)  # members, architectures and summaries; gaps
    entries = _summaries(location)
    path = f"{location.url.rstrip('/')}/{REPORT_JSON}"
    report, damage = _stored_report(location, path)
    if entries and (report is None or not _same(report["iterations"], entries)):
        if damage or report is not None:
            print(f"{path} is {damage or 'stale'}: rebuilt from the iterations' {integrity.SUMMARY} files",
                  file=sys.stderr)
        report = _rebuild(location, entries, report)
        if local:
            write_report(model_dir, report)
    if report is None and damage:
        raise integrity.DamagedRunError(f"{path} is {damage} and there is no iteration summary to rebuild it from: "
                                        "delete it and rerun the training command")
    if report is None:
        raise UsageError(f"no {REPORT_JSON} in {model_dir!r}: not a run directory, or no iteration has finished yet")
    return report


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (NaN, which a report may hold, equals NaN)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _summaries(location) -> list[dict[str, Any]]:
    """The summary.json of iterations 0, 1, ... (up to the first missing one), checked against their manifests."""
    entries = []
    while True:
        directory = f"{integrity.ITERATIONS}/{len(entries)}"
        text = _read(location, f"{directory}/{integrity.SUMMARY}")
        if text is None:
            return entries
        path = f"{location.url.rstrip('/')}/{directory}/{integrity.SUMMARY}"
        way_out = (f"delete {location.url.rstrip('/')}/{directory} and the iterations after it, then rerun the "
                   "training command to retrain them")
        integrity.check_text(text, _read(location, f"{directory}/{integrity.MANIFEST}"), path=path, way_out=way_out)
        entry = integrity.parse_json(text, path=path, way_out=way_out)
        if not isinstance(entry, dict) or not isinstance(entry.get("members"), list):
            raise integrity.DamagedRunError(f"{path} is damaged (not an iteration summary): {way_out}")
        entries.append(entry)


def _read(location, name: str) -> str | None:
    try:
        return location.read_text(name)
    except UnicodeDecodeError:
        return "\ufffd"  # not text: compared with the manifest or parsed, it is reported as damaged


def _stored_report(location, path: str) -> tuple[dict[str, Any] | None, str]:
    """report.json if it parses as a report, else (None, what is wrong with it, '' if it is missing)."""
    text = _read(location, REPORT_JSON)
    if text is None:
        return None, ""
    try:
        report = json.loads(text)
    except ValueError:
        return None, "damaged (not JSON)"
    if not isinstance(report, dict) or not {"dataset", "num_classes", "iterations", "final"} <= set(report):
        return None, "damaged (not a report)"
    return report, ""


def _rebuild(location, entries: list[dict[str, Any]], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The report of `entries`; the data set named in config.json, its class count recorded in architecture.json."""
    if previous is not None:
        dataset, num_classes = previous["dataset"], previous["num_classes"]
    else:
        dataset, num_classes = _recorded(location, "config.json", "dataset"), _recorded(
            location, f"{integrity.ITERATIONS}/{len(entries) - 1}/{integrity.ARCHITECTURE}", "num_classes")
    return build_report(dataset=dataset or "?", num_classes=num_classes or "?", iterations=entries,
                        hparams=_recorded_hparams(location))


def _recorded_hparams(location) -> Any:
    """The run's hparams as config.json (`train`) or grow.json (`grow`) records them; None if neither parses."""
    from improve_nas.config import HParams

    recorded = _recorded(location, "config.json", "hparams")
    if not isinstance(recorded, dict):  # a `grow` run: the options it was given, and its iteration count
        options, iterations = _recorded(location, "grow.json", "hparams"), _recorded(location, "grow.json",
                                                                                      "iterations")
        recorded = dict(options, boosting_iterations=iterations) if isinstance(options, dict) and iterations else None
    try:
        return None if recorded is None else HParams(**recorded)
    except (TypeError, ValueError, UsageError):
        return None


def _recorded(location, name: str, key: str) -> Any:
    try:
        value = json.loads(location.read_text(name) or "{}")
    except ValueError:
        return None
    return value.get(key) if isinstance(value, dict) else None


def format_table(report: dict[str, Any]) -> str:
    """The per-iteration table `improve-nas report` prints."""
    header = ("iter", "chosen", "members", "test acc", "test nll", f"test ece{_bins_label(report)}", "test brier",
              "best member acc", "params", "train s")
    rows = [header]
    for entry in report["iterations"]:
        member_accuracy = max((m["accuracy"] for m in entry["member_metrics"].values()), default=float("nan"))
        ensemble = entry["ensemble"]
        rows.append((str(entry["iteration"]), entry["chosen"], str(len(entry["members"])),
                     f"{ensemble['accuracy']:.4f}", f"{ensemble['loss']:.4f}", _number(ensemble.get("ece")),
                     _number(ensemble.get("brier")), f"{member_accuracy:.4f}", f"{entry['trainable_params']:,}",
                     f"{entry['train_seconds']:.1f}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    final = report.get("final")
    summary = (f"final: {final['members']} members, test accuracy {final['accuracy']:.4f}, "
               f"error {100 * (1 - final['accuracy']):.2f} %" if final else "final: no iteration finished yet")
    if final and "ece" in final:
        summary += (f", nll {final['nll']:.4f}, ece {final['ece']:.4f} ({final['ece_bins']} bins), "
                    f"brier {final['brier']:.4f}")
    if final and "temperature_scaling" in final:
        scaled = final["temperature_scaling"]
        before, after = scaled["test_before"], scaled["test_after"]
        summary += (f"\ntemperature scaling: T {scaled['temperature']:.4f}; test nll {before['nll']:.4f} -> "
                    f"{after['nll']:.4f}, ece {before['ece']:.4f} -> {after['ece']:.4f}, brier {before['brier']:.4f} "
                    f"-> {after['brier']:.4f}")
    stopped = report.get("stopped")
    if stopped and stopped["reason"] == stopping.EARLY_STOPPING:
        summary += f"\nstopped early: {stopped['detail']}"
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
        if entry.get("subnetworks"):
            lines.extend(_subnetwork_table(entry["subnetworks"]))
        lines.append(f"| member | test accuracy | test NLL | test ECE{_bins_label(report)} | test Brier |")
        lines.append("|---|---|---|---|---|")
        for name, metrics in [("ensemble", entry["ensemble"]), *entry["member_metrics"].items()]:
            lines.append(f"| {name} | {metrics['accuracy']:.4f} | {metrics['loss']:.4f} | "
                         f"{_number(metrics.get('ece'))} | {_number(metrics.get('brier'))} |")
        lines.append("")
    return "\n".join(lines)


def _subnetwork_table(subnetworks: list[dict[str, Any]]) -> list[str]:
    """Every candidate subnetwork of an iteration: its selection results, size and genotype (text form)."""
    from improve_nas.search.space import Genotype

    def number(value):
        return "—" if value is None else _number(value)

    lines = ["Own metrics are on the selection data.", "",
             "| subnetwork | chosen | selection loss | own NLL | own accuracy | own ECE | own Brier | params | genotype |",
             "|---|---|---|---|---|---|---|---|---|"]
    for sub in subnetworks:
        shared = sub.get("shared", {})
        genotype = f"`{Genotype.from_dict(shared['genotype']).text()}`" if "genotype" in shared else "—"
        lines.append(f"| {sub['name']} | {'yes' if sub.get('chosen') else ''} | {number(sub.get('selection_loss'))}"
                     f" | {number(sub.get('loss'))} | {number(sub.get('accuracy'))} | {number(sub.get('ece'))} | "
                     f"{number(sub.get('brier'))} | {sub.get('params', 0):,} | {genotype} |")
    return lines + [""]


def _number(value: float | None) -> str:
    """A metric to 4 places; "-" where the run predates it."""
    return MISSING if value is None else f"{value:.4f}"


def _bins_label(report: dict[str, Any]) -> str:
    """" (15 bins)": the ECE bin count the run recorded, written next to the figure ("" before it recorded one)."""
    bins = {entry["ensemble"].get("ece_bins") for entry in report["iterations"]} - {None}
    return f" ({', '.join(str(b) for b in sorted(bins))} bins)" if bins else ""
