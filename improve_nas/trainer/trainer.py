"""The original entry point, kept thin: flags -> Config -> run.

    python -m improve_nas.trainer.trainer --preset=quickstart --model_dir=/tmp/quickstart
    cd improve_nas && python -m trainer.trainer ...      # as in the 2019 README, once the package is installed
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from absl import logging as absl_logging

from improve_nas.errors import IO_ERROR_EXIT_CODE, UsageError, io_error_line
from improve_nas.quiet import quiet_tensorflow_start_up
from improve_nas.trainer import flags as trainer_flags
from improve_nas.trainer.flags import FLAGS, explicit_config_flags

flags.adopt_module_key_flags(trainer_flags)  # so --helpshort lists them
INTERRUPT_EXIT_CODE = 130  # 128 + SIGINT, as improve_nas.preemption exits after a clean stop on Ctrl-C


HELP_ARGS = ("-h", "--help", "-?", "--helpshort")  # --helpfull stays absl's: every flag of every module
USAGE = """usage: {program} --model_dir=DIR [--preset=NAME] [--dataset=SPEC] [flags]

Grows an AdaNet ensemble of NASNet-A subnetworks in --model_dir (local or gs://); the same command resumes it.
Bad input is refused (one line, exit code 2) before TensorFlow starts.
Presets: {presets}.
"""


def parse_flags_or_exit(argv: list[str]) -> list[str]:
    """absl's parser, but a bad flag is one line on stderr and exit code 2 (not a usage dump).

    absl turns Python logging up to INFO once flags are parsed; the command line stays at WARNING (TensorFlow's
    "Assets written to ..." during the export, ...) unless --verbosity is given.
    """
    try:
        remaining = FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if FLAGS["verbosity"].using_default_value:
        FLAGS.verbosity = absl_logging.WARNING
    return remaining


def print_help(program: str) -> None:
    """The train flags (absl's --help lists only the flags of the `__main__` module: none for `improve-nas`)."""
    from improve_nas.presets import PRESETS

    lines = FLAGS.module_help(trainer_flags).strip("\n").splitlines()
    flag_help = "\n".join(lines[1:] if lines and lines[0].endswith(":") else lines)  # less the module's name
    try:
        print(USAGE.format(program=program, presets=", ".join(PRESETS)))
        print(f"flags:\n{flag_help}\n\nabsl's --verbosity=0 shows INFO logs; --helpfull lists absl's flags too.")
        sys.stdout.flush()
    except BrokenPipeError:  # `improve-nas train --help | head`: no traceback, nothing more to write
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _wants_help(args: list[str]) -> bool:
    before_separator = args[:args.index("--")] if "--" in args else args
    return any(arg in HELP_ARGS for arg in before_separator)


def resolve_model_dir() -> str:
    """--model_dir, else --job-dir (what Vertex AI passes), else Vertex's AIP_MODEL_DIR; two different ones are an error."""
    job_dir = FLAGS["job-dir"].value
    if FLAGS.model_dir and job_dir and FLAGS.model_dir.rstrip("/") != job_dir.rstrip("/"):
        raise UsageError(f"--model_dir={FLAGS.model_dir} and --job-dir={job_dir} name different run directories; "
                         "give one of them")
    model_dir = FLAGS.model_dir or job_dir or os.environ.get("AIP_MODEL_DIR", "")
    if not model_dir:
        raise UsageError("flag --model_dir is required (or --job-dir, or the AIP_MODEL_DIR environment variable)")
    return model_dir


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"error: unexpected positional arguments: {' '.join(argv[1:])}", file=sys.stderr)
        return 2
    from improve_nas import run  # deferred: keeps `--help` fast and free of TensorFlow start-up
    from improve_nas.presets import resolve_config

    try:
        config = resolve_config(
            preset=FLAGS.preset,
            flags=dict(explicit_config_flags(), model_dir=resolve_model_dir()),
            hparams=FLAGS.hparams, data_params=FLAGS.data_params)
        run.train(config, force_unlock=FLAGS.force_unlock)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the run's signal guard was up
        print("interrupted (Ctrl-C); re-run the same command to resume from the last checkpoint", file=sys.stderr)
        return INTERRUPT_EXIT_CODE
    except Exception as error:  # an I/O failure deep in Keras or TensorFlow is one line too
        line = io_error_line(error)
        if line is None:
            raise
        print(f"error: {line}; free space or fix permissions, then re-run the same command to resume",
              file=sys.stderr)
        return IO_ERROR_EXIT_CODE
    return 0


def run_main(argv: list[str] | None = None) -> None:
    """Console-script and `python -m` entry point."""
    quiet_tensorflow_start_up()  # before anything imports TensorFlow
    argv = list(sys.argv if argv is None else argv)
    if _wants_help(argv[1:]):
        print_help("improve-nas train" if argv[0] == "improve-nas train" else "python -m improve_nas.trainer.trainer")
        sys.exit(0)
    app.run(lambda args: sys.exit(main(args)), argv=argv, flags_parser=parse_flags_or_exit)


if __name__ == "__main__":
    run_main()
