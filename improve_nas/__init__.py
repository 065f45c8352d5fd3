"""improve_nas: grow ensembles of NASNet-A image classifiers with the AdaNet algorithm.

Reproduces *Improving Neural Architecture Search Image Classifiers via Ensemble Learning*
(Macko, Weill, Mazzawi, Gonzalvo, 2019) on Keras 3. Importing the package has no side effects and imports no Keras.

The Python API (README, "Python API"), loaded on first access:
    grow        grow an AdaNet ensemble of any Keras classifier on numpy images
    train       the command line's `improve-nas train`, from Python
    load_model  load an exported ensemble (export/ensemble.keras, or the run directory)
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {"api": ("GrowResult", "grow", "load_model", "train")}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"improve_nas.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
