"""Every closed choice list of the settings table (`improve_nas.config`), importable without Keras.

Each list belongs to the module that builds what its names select (the `owner` of the setting in the table);
the owners import their list from here, or from `improve_nas.adanet.choices` for the engine's own parts, and
`tests/test_settings_table.py` checks every list against its owner.
"""

from improve_nas.adanet.choices import (
    DISTILLATIONS,
    DISTRIBUTIONS,
    LEARNING_RATE_SCHEDULES,
    MIXTURE_WEIGHT_TYPES,
    OPTIMIZERS,
)

SEARCHING_GENERATORS = ("random", "evolution", "controller")  # improve_nas.search.generators.SEARCH_GENERATORS
GENERATORS = ("simple", "dynamic", *SEARCHING_GENERATORS)  # improve_nas.search.generators.GENERATORS
SEARCH_SPACES = ("nasnet", "amoeba", "darts")  # improve_nas.search.space.OP_SETS
PARENTS = ("tournament", "ensemble")  # improve_nas.search.proposals.PARENTS
AUGMENTATIONS = ("basic", "none")  # improve_nas.data.augment.ImageAugmentation
DATA_FORMATS = ("NHWC", "NCHW")  # improve_nas.models.nasnet.DATA_FORMATS
SELECTIONS = ("train", "holdout")  # improve_nas.experiment.partitions
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")  # Keras dtype policy names of the NASNet members

__all__ = ["AUGMENTATIONS", "DATA_FORMATS", "DISTILLATIONS", "DISTRIBUTIONS", "GENERATORS", "LEARNING_RATE_SCHEDULES",
           "MIXTURE_WEIGHT_TYPES", "OPTIMIZERS", "PARENTS", "PRECISIONS", "SEARCHING_GENERATORS", "SEARCH_SPACES",
           "SELECTIONS"]
