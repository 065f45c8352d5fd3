"""improve_nas: grow ensembles of NASNet-A image classifiers with the AdaNet algorithm.

Reproduces *Improving Neural Architecture Search Image Classifiers via Ensemble Learning*
(Macko, Weill, Mazzawi, Gonzalvo, 2019) on Keras 3. Importing the package has no side effects.
"""

__version__ = "0.1.0"
