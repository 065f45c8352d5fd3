"""The names the engine accepts for its string-selected parts, importable without Keras.

The engine's modules that build these parts (optimizers, ensemblers, losses, distribution) import Keras; the
configuration and the command line must check names without it, so the lists are declared here and the owners
check them against what they build (`tests/test_settings_table.py`).
"""

OPTIMIZERS = ("adagrad", "adam", "lazy_adam", "momentum", "rmsprop", "sgd")  # optimizers.OPTIMIZER_NAMES
LEARNING_RATE_SCHEDULES = ("constant", "cosine")  # optimizers.make_learning_rate
MIXTURE_WEIGHT_TYPES = ("scalar", "vector", "matrix")  # ensemblers.ComplexityRegularizedEnsembler
DISTILLATIONS = ("adaptive", "born_again", "none")  # losses.Distillation
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")  # distribution.make_distribution
