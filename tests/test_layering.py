"""The separations the layout promises, read from the import statements of every module (no import is executed).

- the model (`improve_nas.models`) knows nothing of AdaNet;
- the AdaNet engine (`improve_nas.adanet`, algorithm and runtime) knows nothing of NASNet, data sets, the
  configuration, the search space or the command line (it may use storage and the error type);
- the search package reaches the engine only through its generator interface (`adanet.subnetwork`);
- storage knows nothing of models, the engine or the command line (it may use the error type and the extras check).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "improve_nas"

# package -> prefixes of improve_nas modules it may import (besides itself)
ALLOWED = {
    "improve_nas.models": ("improve_nas.errors", "improve_nas.lazy_exports"),
    "improve_nas.adanet": ("improve_nas.errors", "improve_nas.lazy_exports", "improve_nas.storage"),
    "improve_nas.search": ("improve_nas.errors", "improve_nas.adanet.subnetwork", "improve_nas.config",
                           "improve_nas.models"),
    "improve_nas.storage": ("improve_nas.errors", "improve_nas.extras"),
}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path) -> set[str]:
    """Every improve_nas module `path` imports, at top level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return {name for name in found if name.split(".")[0] == "improve_nas"}


def _allowed(package: str, imported: str) -> bool:
    if imported == "improve_nas" or imported.startswith(package + ".") or imported == package:
        return True
    return any(imported == prefix or imported.startswith(prefix + ".") for prefix in ALLOWED[package])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_may(package):
    root = PACKAGE.joinpath(*package.split(".")[1:])
    modules = sorted(root.rglob("*.py"))
    assert modules, package
    violations = [f"{_module_name(path)} imports {name}" for path in modules for name in sorted(_imports(path))
                  if not _allowed(package, name)]
    assert violations == []


def test_the_checker_sees_a_violation():
    assert not _allowed("improve_nas.adanet", "improve_nas.models.nasnet")
    assert not _allowed("improve_nas.models", "improve_nas.adanet.engine")
    assert _allowed("improve_nas.adanet", "improve_nas.storage.fileio")
    assert "improve_nas.adanet.subnetwork.Builder" in _imports(PACKAGE / "search" / "builders.py")
