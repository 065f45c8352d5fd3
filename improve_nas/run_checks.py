"""Checks of a run's data against its settings, before anything is trained or written.

Each guards against a run that would "succeed" with a meaningless result or die late: augmentation that blanks the
images (CIFAR's 16×16 cutout covers an 8×8 image whole), labels of a single class (accuracy 1.0, loss 0), a batch
larger than the training partition, a genotype file that cannot be read or holds no genotype, and data or batches
that cannot fit in memory. Every failure is a one-line `UsageError` naming the setting and a value that fits (or,
for a genotype file, its path).
"""

from __future__ import annotations

import math
import os

import numpy as np

from improve_nas.config import Config
from improve_nas.errors import UsageError

# Float32 activations, kept from the forward pass for the backward one.
_BYTES_PER_ACTIVATION = 4


def check_run(config: Config, *, image_shape: tuple[int, int, int], y_train: np.ndarray,
              x_train: np.ndarray, num_candidates: int) -> None:
    """All checks below, for the training partition `x_train`, `y_train` (after any holdout split)."""
    check_genotype(config)
    check_augmentation_fits(config, image_shape)
    check_classes(y_train)
    check_batch_size(config.batch_size, len(y_train))
    check_memory(config, image_shape=image_shape, data_bytes=x_train.nbytes, num_candidates=num_candidates,
                 available=available_memory_bytes())


def check_genotype(config: Config):
    """The genotype the hparam `genotype` names (a name, or a .json file read here); a one-line UsageError naming the
    file when it is missing, unreadable or holds no valid genotype."""
    from improve_nas.search.space import resolve_genotype

    return resolve_genotype(config.hparams.genotype)


def check_augmentation_fits(config: Config, image_shape: tuple[int, int, int]) -> None:
    """Cutout and pad-and-crop may take at most half of the image's shorter side (CIFAR's 16 and 4 of 32 do).

    Larger, a cutout square blanks most or all of an image and a crop may hold little or nothing but padding.
    """
    params = config.data_params
    side = min(image_shape[:2])
    fits = max(1, side // 2)
    shape = f"{image_shape[0]}×{image_shape[1]}"
    if params.cutout and params.cutout_size > fits:
        raise UsageError(
            f"data_param cutout_size={params.cutout_size} would blank most or all of every {shape} training image; "
            f"use --data_params=cutout_size={fits} (at most half the image side) or cutout=False")
    if params.augmentation == "basic" and params.pad > fits:
        raise UsageError(
            f"data_param pad={params.pad} would let random crops of {shape} images be mostly padding; use "
            f"--data_params=pad={max(1, side // 8)} (at most {fits}) or augmentation=none")


def check_classes(y_train: np.ndarray) -> None:
    present = np.unique(y_train)
    if len(present) < 2:
        found = f"only class {int(present[0])}" if len(present) else "no labels"
        raise UsageError(f"the training partition holds {found}: a classifier needs at least two classes present "
                         "(check the labels of the data set)")


def check_batch_size(batch_size: int, num_train: int) -> None:
    if batch_size > num_train:
        raise UsageError(f"flag batch_size={batch_size} is larger than the training partition ({num_train} images); "
                         f"use --batch_size={_largest_power_of_two(num_train)} or less")


def check_memory(config: Config, *, image_shape: tuple[int, int, int], data_bytes: int, num_candidates: int,
                 available: int | None) -> None:
    """Refuses a run whose data on the device plus one batch's activations cannot fit in `available` bytes.

    The activation estimate is a lower bound (the output of the stem and of every cell, float32, for each candidate
    trained together; the real footprint is several times larger), so a refusal is certain to be right.
    """
    if available is None:
        return
    on_device = data_bytes if config.distribution != "multi_worker" else 0  # see experiment.engine_settings
    per_image = activations_per_image(config, image_shape) * _BYTES_PER_ACTIVATION * num_candidates
    needed = on_device + config.batch_size * per_image
    if needed > available:
        fitting = (available - on_device) // per_image if available > on_device else 0
        advice = (f"use --batch_size={_largest_power_of_two(fitting)} or less" if fitting >= 1 else
                  "the training data alone does not fit: use a machine with more memory or a smaller data set")
        raise UsageError(
            f"the run needs at least {_gib(needed)} GiB of memory (training data {_gib(on_device)} GiB, "
            f"activations of a batch of {config.batch_size} at least {_gib(config.batch_size * per_image)} GiB) "
            f"but {_gib(available)} GiB is available; {advice}")


def activations_per_image(config: Config, image_shape: tuple[int, int, int]) -> int:
    """Values in the outputs of the stem and of every cell of one NASNet candidate with the cells of the hparam
    `genotype`, for one image."""
    from improve_nas.models.architecture import plan_network

    hp = config.hparams
    normal, reduction = check_genotype(config).to_cell_genotypes()
    plan = plan_network(num_cells=hp.num_cells, num_conv_filters=hp.num_conv_filters,
                        stem_multiplier=hp.stem_multiplier, filter_scaling_rate=hp.filter_scaling_rate,
                        num_reduction_layers=hp.num_reduction_layers,
                        skip_reduction_layer_input=hp.skip_reduction_layer_input,
                        drop_path_keep_prob=hp.drop_path_keep_prob, normal_genotype=normal,
                        reduction_genotype=reduction)
    height, width = image_shape[:2]
    total = height * width * plan.stem_filters
    for cell in plan.cells:
        scale = 2 ** cell.level
        total += math.ceil(height / scale) * math.ceil(width / scale) * cell.output_channels
    return total


def available_memory_bytes() -> int | None:
    """Memory the run can still use: the host's available memory (Linux MemAvailable); None where unknown.

    On an accelerator the data and activations live in device memory, which is not checked here.
    """
    if _accelerator_present():
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _accelerator_present() -> bool:
    import keras

    return not str(keras.distribution.list_devices()[0]).lower().startswith("cpu")


def _largest_power_of_two(limit: int) -> int:
    return 1 << (max(1, int(limit)).bit_length() - 1)


def _gib(count: int) -> str:
    return f"{count / 2**30:.1f}"
