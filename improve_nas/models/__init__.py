"""NASNet networks for CIFAR-sized images as backend-agnostic Keras 3 layers: NASNet-A, or any other pair of cells.

`NASNet` is the model; `genotype` holds the cells as data (NASNet-A's, and the names of the 15
operations a cell may use), `architecture` the macro structure, `ops` / `search_ops` / `layers` /
`cells` the building blocks (`ops.make_operation` builds any operation by name), and `summary` the
parameter and multiply-add counts. The search space over these cells is `improve_nas.search.space`.
The package knows nothing of AdaNet. Importing it imports no Keras: its exports load on first access.
"""

import importlib

_EXPORTS = {"genotype": ("NASNET_A_NORMAL", "NASNET_A_REDUCTION", "CellGenotype"), "nasnet": ("NASNet",),
            "summary": ("format_summary", "summarize")}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"improve_nas.models.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
