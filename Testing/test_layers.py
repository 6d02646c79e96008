"""The layer rule of DESIGN.md: core < MRML bridge < operations < top; each imports only the layers below it.

The imports are read from the source (``ast``), so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "AlignSeries" / "AlignSeriesLib"

#: Layer of each AlignSeriesLib module that is not core (everything else is core).
LAYERS = {"mrml": 1, "mrml_files": 1, "operations": 2, "exports": 2, "export_job": 2,
          "cli": 3, "__main__": 3, "demo": 3, "phantom": 3, "batch": 3}
LAYER_NAMES = ("core", "MRML bridge", "operations", "top")
#: Packages only the bridge and above may import (the Slicer application and its MRML).
APPLICATION_PACKAGES = {"slicer", "qt", "ctk", "mrml"}


def layer_of(module: str) -> int:
    return LAYERS.get(module, 0)


def imported_names(source: str, module: str) -> list[tuple[str, int]]:
    """(top-level package or AlignSeriesLib module, line) of every import in ``source``.

    Relative imports and ``AlignSeriesLib.x`` name the AlignSeriesLib module ``x`` as ``.x``.
    """
    names = []
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            names += [(_library_name(alias.name), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module in (None, "AlignSeriesLib"):
                base = (node.module or "").split(".")[-1] if node.module != "AlignSeriesLib" else ""
                targets = [base] if base else [alias.name for alias in node.names]
                names += [("." + target, node.lineno) for target in targets]
            else:
                names.append((_library_name(node.module), node.lineno))
    return names


def _library_name(dotted: str) -> str:
    parts = dotted.split(".")
    return "." + parts[1] if parts[0] == "AlignSeriesLib" and len(parts) > 1 else parts[0]


def layer_violations(source: str, module: str) -> list[str]:
    """Every import of ``module`` (given its source) that reaches a layer above its own."""
    own = layer_of(module)
    found = []
    for name, line in imported_names(source, module):
        if name.startswith("."):
            target = name[1:]
            if target and layer_of(target) > own:
                found.append(f"{module}.py:{line} ({LAYER_NAMES[own]}) imports {target} "
                             f"({LAYER_NAMES[layer_of(target)]})")
        elif own == 0 and name in APPLICATION_PACKAGES:
            found.append(f"{module}.py:{line} (core) imports {name}")
    return found


@pytest.mark.parametrize("path", sorted(LIBRARY.rglob("*.py")), ids=lambda p: p.relative_to(LIBRARY).as_posix())
def test_module_imports_only_layers_below_it(path):
    assert layer_violations(path.read_text(), path.stem) == []


@pytest.mark.parametrize("planted, module", [
    ("import slicer", "geometry"),
    ("from slicer import vtkMRMLScene", "resample"),
    ("import qt", "dicom/series"),
    ("from .. import mrml", "dicom/export"),
    ("from ..mrml import new_scene", "dicom/seg"),
    ("from AlignSeriesLib import operations", "mrml"),
    ("from .cli import main", "operations"),
    ("def f():\n    from . import demo\n", "describe"),
])
def test_a_planted_upward_import_is_caught(planted, module):
    source = (LIBRARY / f"{module}.py").read_text() + "\n" + planted + "\n"
    assert layer_violations(source, Path(module).name), f"planting {planted!r} in {module}.py went unnoticed"


@pytest.mark.parametrize("allowed, module", [
    ("import slicer", "mrml"), ("from . import mrml", "operations"), ("from . import operations", "cli"),
    ("import numpy", "geometry"), ("from .geometry import VolumeGeometry", "resample"),
])
def test_imports_downwards_are_allowed(allowed, module):
    assert layer_violations(allowed, module) == []


def test_every_module_has_a_known_layer_and_the_core_is_the_rest():
    modules = {path.stem for path in LIBRARY.rglob("*.py")}
    assert set(LAYERS) - {"batch"} <= modules, "a module named in LAYERS no longer exists: update the layer map"
    assert {"geometry", "series", "headers", "resample", "describe"} <= {m for m in modules if layer_of(m) == 0}
