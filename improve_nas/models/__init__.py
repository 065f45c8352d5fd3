"""NASNet-A for CIFAR-sized images as backend-agnostic Keras 3 layers.

`NASNet` is the model; `genotype` holds the cells as data, `architecture` the macro
structure, `ops` / `layers` / `cells` the building blocks, and `summary` the parameter
and multiply-add counts. `search_ops` has layers for the other operations of the NASNet search
space (`improve_nas.search.space`), not yet used by the cells. The package knows nothing of AdaNet.
"""

from improve_nas.models.genotype import NASNET_A_NORMAL, NASNET_A_REDUCTION, CellGenotype
from improve_nas.models.nasnet import NASNet
from improve_nas.models.summary import format_summary, summarize

__all__ = ["NASNet", "CellGenotype", "NASNET_A_NORMAL", "NASNET_A_REDUCTION", "summarize", "format_summary"]
