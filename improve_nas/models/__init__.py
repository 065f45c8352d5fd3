"""NASNet networks for CIFAR-sized images as backend-agnostic Keras 3 layers: NASNet-A, or any other pair of cells.

`NASNet` is the model; `genotype` holds the cells as data (NASNet-A's, and the names of the 15
operations a cell may use), `architecture` the macro structure, `ops` / `search_ops` / `layers` /
`cells` the building blocks (`ops.make_operation` builds any operation by name), and `summary` the
parameter and multiply-add counts. The search space over these cells is `improve_nas.search.space`.
The package knows nothing of AdaNet. Importing it imports no Keras: its exports load on first access.
"""

from improve_nas.lazy_exports import lazy_exports

_EXPORTS = {"genotype": ("NASNET_A_NORMAL", "NASNET_A_REDUCTION", "CellGenotype"), "nasnet": ("NASNet",),
            "summary": ("format_summary", "summarize")}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
