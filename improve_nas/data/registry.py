"""`--dataset` specs: which provider serves which name, checked cheaply before any loading."""

from __future__ import annotations

import re

from improve_nas.data.base import ImageDataset
from improve_nas.errors import UsageError, nearest

DATASET_CHOICES = ("cifar10", "cifar100", "digits", "fake", "tfds:NAME", "npz:PATH")

# TFDS names are snake_case, optionally with a config and a version: "cifar10_corrupted/fog_1:3.*.*".
_TFDS_NAME = re.compile(r"[a-z][a-z0-9_]*(/[\w.+-]+)?(:[\d*]+(\.[\d*]+){2})?")


def validate_dataset_spec(spec: str) -> None:
    """Checks a `--dataset` spec without loading data or importing TensorFlow.

    Checks the name syntax and, for `npz:PATH`, that the file is a readable `.npz` with the
    required keys, so the command line can fail before it touches `model_dir`. Whether a TFDS
    name exists is only known when loading.

    Raises:
        UsageError: naming the bad spec and the valid choices.
    """
    kind, argument = _parse(spec)
    if kind == "npz":
        from improve_nas.data.npz import check_npz_file

        check_npz_file(argument)


def load_dataset(spec: str, *, data_dir: str | None = None, seed: int = 0) -> ImageDataset:
    """Loads the data set a `--dataset` spec names, whole into memory.

    Args:
        spec: One of `DATASET_CHOICES`: `cifar10`, `cifar100` (fine labels) and `tfds:NAME` via
            TensorFlow Datasets; `digits` (shipped, offline); `fake` (generated, tiny);
            `npz:PATH` (a user archive, see `improve_nas.data.npz`).
        data_dir: TFDS data directory (local or `gs://`); only TFDS specs read it.
        seed: Only `fake` reads it; every other data set is the same whatever the seed.

    Returns:
        The data set.

    Raises:
        UsageError: the spec or the file it names is invalid.
        DataUnavailableError: a TFDS data set cannot be read or downloaded. There is never a
            fallback to fake data.
    """
    kind, argument = _parse(spec)
    return _LOADERS[kind](argument, data_dir=data_dir, seed=seed, spec=spec)


# The providers, by kind: each imports its module when called, so naming a data set loads nothing heavy.
def _load_fake(argument: str, *, data_dir, seed: int, spec: str) -> ImageDataset:
    from improve_nas.data.fake import load_fake

    return load_fake(seed=seed)


def _load_digits(argument: str, *, data_dir, seed: int, spec: str) -> ImageDataset:
    from improve_nas.data.digits import load_digits

    return load_digits()


def _load_npz(argument: str, *, data_dir, seed: int, spec: str) -> ImageDataset:
    from improve_nas.data.npz import load_npz

    return load_npz(argument)


def _load_tfds(argument: str, *, data_dir, seed: int, spec: str) -> ImageDataset:
    from improve_nas.data.tfds_source import load_tfds

    return load_tfds(argument, data_dir=data_dir, display_name=spec)


_LOADERS = {"fake": _load_fake, "digits": _load_digits, "npz": _load_npz, "tfds": _load_tfds}
# Plain names and the kind that serves each; other specs are KIND:ARGUMENT (npz:PATH, tfds:NAME).
_NAMED = {"cifar10": "tfds", "cifar100": "tfds", "digits": "digits", "fake": "fake"}


def _parse(spec: str) -> tuple[str, str]:
    """Splits a spec into (kind, argument): ("cifar10", "cifar10"), ("npz", PATH), ..."""
    if not isinstance(spec, str):
        raise UsageError(f"--dataset must be a string, got {spec!r}; "
                         f"choices: {', '.join(DATASET_CHOICES)}")
    if spec in _NAMED:
        return _NAMED[spec], spec
    kind, colon, argument = spec.partition(":")
    if colon and kind == "npz":
        if not argument:
            raise UsageError("--dataset=npz: needs a file path, e.g. npz:/data/images.npz")
        return kind, argument
    if colon and kind == "tfds":
        if not _TFDS_NAME.fullmatch(argument):
            raise UsageError(f"--dataset={spec}: {argument!r} is not a TFDS name "
                             "(snake_case[/config][:version], e.g. tfds:mnist)")
        return kind, argument
    raise UsageError(f"unknown --dataset {spec!r}; {nearest(spec, DATASET_CHOICES[:4])}"
                     f"choices: {', '.join(DATASET_CHOICES)}")
