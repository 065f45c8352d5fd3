"""The one error type users see for bad input."""


class UsageError(ValueError):
    """Bad user input: a wrong flag, hparam, dataset or file.

    The command line prints the message as one line on stderr and exits with code 2,
    before anything is written to `model_dir`. Messages name the bad value and the
    valid choices.
    """
