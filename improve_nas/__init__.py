"""improve_nas: grow ensembles of NASNet-A image classifiers with the AdaNet algorithm.

Reproduces *Improving Neural Architecture Search Image Classifiers via Ensemble Learning*
(Macko, Weill, Mazzawi, Gonzalvo, 2019) on Keras 3. Importing the package has no side effects and imports no Keras.

The Python API (README, "Python API"), loaded on first access:
    grow        grow an AdaNet ensemble of any Keras classifier on numpy images
    train       the command line's `improve-nas train`, from Python
    load_model  load an exported ensemble (export/ensemble.keras, or the run directory)
"""

from improve_nas.lazy_exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {"api": ("GrowResult", "grow", "load_model", "train")}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
