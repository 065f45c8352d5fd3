"""The `improve-nas` console script: train | summary | report | arch | predict | bench | submit | jobs |
compare | select.

Dispatch only: each subcommand parses its arguments and calls one library function.
"""

from __future__ import annotations

import argparse
import json
import sys

from improve_nas import __version__
from improve_nas.errors import UsageError
from improve_nas.quiet import quiet_tensorflow_start_up

SUBCOMMANDS = ("train", "summary", "report", "arch", "predict", "bench", "submit", "jobs", "compare", "select")


def main(argv: list[str] | None = None) -> int:
    quiet_tensorflow_start_up()  # before anything imports TensorFlow
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-V", "--version"):
        print(f"improve_nas {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: improve-nas {{{','.join(SUBCOMMANDS)}}} [flags]   (improve-nas COMMAND --help for its flags)\n"
              "  train    grow an ensemble (the flags of python -m improve_nas.trainer.trainer)\n"
              "  summary  parameters, multiply-adds and stages of the NASNet an --hparams string describes\n"
              "  report   the per-iteration table of a run directory, or its HTML page of figures\n"
              "  compare  one row per run directory: final test accuracy, error, NLL, size, time, settings\n"
              "  select   another ensemble of a run, chosen from its candidate pool's saved logits (no training)\n"
              "  arch     the normal and reduction cell of every member of a run's ensemble (svg, png, dot, text, json)\n"
              "  predict  classes and probabilities of a run's exported ensemble for .npz/.npy/PNG/JPEG images\n"
              "  bench    training throughput of the engine\n"
              "  submit   run training as a Google Cloud Vertex AI custom job\n"
              "  jobs     list, describe, follow (logs) or cancel Vertex AI custom jobs\n"
              "improve-nas --version prints the version. Bad input is refused before TensorFlow starts.")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"error: unknown subcommand {command!r}; choose one of: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    if command == "train":
        from improve_nas.trainer.trainer import run_main
        run_main(["improve-nas train"] + rest)  # exits
    try:
        return _COMMANDS[command](rest)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _summary(argv: list[str]) -> int:
    parser = _parser("summary", "Describe the NASNet an --hparams string builds.")
    parser.add_argument("--hparams", default="", help="name=value,... as for train")
    parser.add_argument("--preset", default=None, help="start from a preset's hparams")
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--image_shape", default="32,32,3", help="H,W,C")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    from improve_nas.presets import resolve_config
    from improve_nas.search.builders import describe, format_description

    hparams = resolve_config(preset=args.preset, hparams=args.hparams).hparams
    description = describe(hparams, num_classes=args.num_classes, image_shape=_parse_shape(args.image_shape))
    print(json.dumps(description) if args.format == "json" else format_description(description))
    return 0


def _bench(argv: list[str]) -> int:
    from improve_nas.settings import bench_flags

    parser = _parser("bench", "Training throughput of the AdaNet engine against a plain fit of one NASNet. The flags "
                     "shared with train mean the same there; unset ones keep the preset's value (--dataset: fake, "
                     "generated 32x32x3 images).")
    for flag in bench_flags():
        parser.add_argument(f"--{flag.name}", dest=flag.field, type=flag.type, default=None, help=flag.help)
    parser.add_argument("--steps", type=int, default=None, help="training steps per iteration, the first untimed")
    parser.add_argument("--iterations", type=int, default=None, help="AdaNet iterations (default: hparams')")
    parser.add_argument("--format", choices=("text", "json"), default="json")
    args = parser.parse_args(argv)
    from improve_nas.bench import DEFAULT_STEPS, bench_config, format_text, run_bench

    given = {flag.field: getattr(args, flag.field) for flag in bench_flags()}
    config = bench_config(steps=DEFAULT_STEPS if args.steps is None else args.steps, iterations=args.iterations,
                          **{name: value for name, value in given.items() if value is not None})
    result = run_bench(config)
    print(json.dumps(result) if args.format == "json" else format_text(result))
    return 0


def _submit(argv: list[str]) -> int:
    parser = _parser("submit", "Run training as a Google Cloud Vertex AI custom job; train flags go after --.")
    parser.add_argument("--config", required=True, help="Vertex AI CustomJobSpec YAML, e.g. config.yaml")
    parser.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1")
    parser.add_argument("--staging_bucket", required=True, help="gs://BUCKET for the package and the run directory")
    parser.add_argument("--display_name", default=None, help="job name (default: improve_nas_<preset>_<time>)")
    parser.add_argument("--project", default=None, help="Google Cloud project (default: gcloud's / the credentials')")
    parser.add_argument("--dry_run", action="store_true", help="print the resolved spec and commands; touch nothing")
    parser.add_argument("--image", default=None, help="container image URI of a containerSpec job (default: the "
                        "spec's imageUri, else REGION-docker.pkg.dev/PROJECT/improve-nas/trainer:VERSION-DIGEST)")
    parser.add_argument("--build_image", action="store_true", help="build the image from improve_nas/cloud/Dockerfile "
                        "and push it first (gcloud builds submit, else docker build + push)")
    parser.add_argument("--backend", default="tensorflow", help="Keras backend of the default image: tensorflow, "
                        "or jax (image trainer-jax)")
    parser.add_argument("--wait", action="store_true", help="follow the job's log until it ends; exit 0 if it "
                        "succeeded, 1 if it ended otherwise (Ctrl-C stops following, not the job)")
    parser.add_argument("train_flags", nargs="*", help="flags of improve-nas train, after --")
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse alone says only "unrecognized arguments"
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}; flags of improve-nas train go after --, "
                         f"e.g. improve-nas submit --config=... --region=... --staging_bucket=... -- {unknown[0]}")
    from improve_nas.cloud import SubmitRequest, submit

    submission = submit(SubmitRequest(config_path=args.config, region=args.region, staging_bucket=args.staging_bucket,
                                      train_flags=tuple(args.train_flags), display_name=args.display_name,
                                      project=args.project, dry_run=args.dry_run, wait=args.wait,
                                      image=args.image, build_image=args.build_image, backend=args.backend))
    return submission.exit_code


def _jobs(argv: list[str]) -> int:
    parser = _parser("jobs", "List, describe, follow or cancel Vertex AI custom jobs (through gcloud when it is on "
                     "PATH, else the REST API).")
    parser.add_argument("action", help="list | describe | logs | cancel")
    parser.add_argument("job", nargs="?", default=None,
                        help="describe, logs, cancel: the job's numeric ID or projects/P/locations/R/customJobs/ID")
    parser.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1")
    parser.add_argument("--project", default=None, help="Google Cloud project (default: gcloud's / the credentials')")
    parser.add_argument("--filter", default=None, help="list: gcloud's --filter, or the API's filter without gcloud")
    parser.add_argument("--limit", type=int, default=None, help="list: at most this many jobs, newest first")
    parser.add_argument("--dry_run", action="store_true", help="print the gcloud command or REST request; call nothing")
    args = parser.parse_args(argv)
    from improve_nas.cloud.jobs import JobsRequest, run_jobs_command

    return run_jobs_command(JobsRequest(action=args.action, region=args.region, job=args.job, project=args.project,
                                        filter=args.filter, limit=args.limit, dry_run=args.dry_run))


def _report(argv: list[str]) -> int:
    parser = _parser("report", "Print the per-iteration table of a run directory, or write its HTML page.")
    parser.add_argument("model_dir", help="run directory, local or gs://BUCKET/PATH")
    parser.add_argument("--format", choices=("text", "json", "html"), default="text",
                        help="html: one self-contained page with the run's figures, and the figures as PNG files in "
                        "report_plots/ beside it")
    parser.add_argument("--out", default=None, help="html: the page's path (default: MODEL_DIR/report.html; a gs:// "
                        "run needs it, a local file)")
    parser.add_argument("--hparams_summary", action="store_true", help="also write the run's settings and final "
                        "test figures as a TensorBoard HParams summary in MODEL_DIR/tensorboard/hparams (local runs)")
    args = parser.parse_args(argv)
    if args.out is not None and args.format != "html":
        raise UsageError(f"--out={args.out!r} is for --format=html; text and json are printed")
    if args.format == "html":
        from improve_nas.report_html import write_html_report

        write_html_report(args.model_dir, out=args.out)
    else:
        from improve_nas.report import format_table, load_report

        report = load_report(args.model_dir)
        print(json.dumps(report, indent=2) if args.format == "json" else format_table(report))
    if args.hparams_summary:  # after the output, so a bad --out has written nothing
        from improve_nas.hparams_summary import write_for_run

        print(f"wrote the HParams summary in {write_for_run(args.model_dir)}", file=sys.stderr)
    return 0


def _compare(argv: list[str]) -> int:
    from improve_nas.compare import FORMATS, compare

    parser = _parser("compare", "One row per run directory: its final ensemble's test figures, size, training time, "
                     "stop reason and settings.")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory, local or gs://BUCKET/PATH")
    parser.add_argument("--format", default="text", help=" | ".join(FORMATS))
    args = parser.parse_args(argv)
    sys.stdout.write(compare(args.run_dirs, output_format=args.format))
    return 0


def _select(argv: list[str]) -> int:
    parser = _parser("select", "Choose an ensemble from a run's candidate pool (saved logits; nothing is trained or "
                     "run) and write MODEL_DIR/selections/NAME/selection.json.")
    parser.add_argument("model_dir", help="local run directory trained with keep_pool on")
    parser.add_argument("--method", required=True, help="forward | caruana | prune")
    parser.add_argument("--size", type=int, required=True, help="members to choose (caruana: rounds)")
    parser.add_argument("--metric", default="nll", help="nll | error, measured on the selection rows")
    parser.add_argument("--name", default=None, help="default: METHOD-SIZE-METRIC; the same name is overwritten")
    args = parser.parse_args(argv)
    from improve_nas.ensemble_selection import run

    sys.stdout.write(run(args.model_dir, method=args.method, size=args.size, metric=args.metric, name=args.name))
    return 0


def _arch(argv: list[str]) -> int:
    from improve_nas import ensemble_cells

    parser = _parser("arch", "Draw the normal and reduction cell of every member of a run's ensemble.")
    parser.add_argument("model_dir", help="run directory, local or gs://BUCKET/PATH")
    parser.add_argument("--iteration", type=int, default=None, help="whose ensemble (default: the last finished)")
    parser.add_argument("--format", default=None, help=f"{' | '.join(ensemble_cells.FORMATS)} (default: what --out's "
                        f"extension says, else {ensemble_cells.DEFAULT_FORMAT}); svg and png need --out")
    parser.add_argument("--out", default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    ensemble_cells.run(args.model_dir, iteration=args.iteration, output_format=args.format, out=args.out)
    return 0


def _predict(argv: list[str]) -> int:
    parser = _parser("predict", "Classify images with the exported ensemble of a run directory.")
    parser.add_argument("model_dir", help="run directory (or its export/ensemble.keras)")
    parser.add_argument("images", help=".npz (array x, images or x_test, or its only one), .npy, or a folder of "
                        "PNG/JPEG files: uint8 images of the training size")
    parser.add_argument("--format", choices=("csv", "json"), default="csv")
    parser.add_argument("--out", default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    from improve_nas.predict import run

    run(args.model_dir, args.images, output_format=args.format, out=args.out)
    return 0


def _not_implemented(what: str):
    def command(argv: list[str]) -> int:
        raise UsageError(f"not implemented yet: {what}")
    return command


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    return _OneLineErrorParser(prog=f"improve-nas {command}", description=description)


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's default prints the usage block and exits 2
        raise UsageError(message)


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise UsageError(f"--image_shape={text!r} must be three positive integers H,W,C, e.g. 32,32,3")
    return shape


_COMMANDS = {
    "summary": _summary,
    "report": _report,
    "compare": _compare,
    "arch": _arch,
    "select": _select,
    "predict": _predict,
    "bench": _bench,
    "submit": _submit,
    "jobs": _jobs,
}


if __name__ == "__main__":
    sys.exit(main())
