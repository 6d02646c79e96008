"""Shared pytest fixtures: the import path, a headless MRML scene, the real DICOM data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = PROJECT_ROOT / "AlignSeries"
SHARED_DICOM = PROJECT_ROOT.parent / "shared" / "data" / "dicom"

# Slicer puts the module folder on sys.path; do the same so `import AlignSeries` works.
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture
def scene():
    """A fresh MRML scene from slicer-core, set up like the application's."""
    import slicer

    from AlignSeriesLib import mrml

    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = None
    new = mrml.new_scene()
    yield new
    new.Clear(1)
    slicer.mrmlScene = previous


def real_series_names() -> list[str]:
    """Names of the real DICOM series in ../shared/data/dicom (empty when it is absent)."""
    if not SHARED_DICOM.is_dir():
        return []
    return sorted(p.name for p in SHARED_DICOM.iterdir() if (p / "expected.json").is_file())


@pytest.fixture
def real_series(request):
    """(dicom folder, expected.json dict) of one real series; skips when ../shared is absent."""
    name = request.param
    folder = SHARED_DICOM / name
    if not folder.is_dir():
        pytest.skip(f"real DICOM data not available: {folder} is absent")
    return folder / "dicom", json.loads((folder / "expected.json").read_text())


def run(capsys, *args) -> tuple[int, str, str]:
    """Run ``alignseries ARGS`` in this process; returns (exit status, stdout, stderr)."""
    from AlignSeriesLib import cli

    status = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_json(capsys, *args) -> dict:
    """Run ``alignseries ARGS --json``, check it succeeded, and return the parsed document."""
    status, out, err = run(capsys, *args, "--json")
    assert status == 0, err
    return json.loads(out)


def require_shared_dicom() -> Path:
    """Return the shared DICOM folder, skipping the calling test when it is absent."""
    if not SHARED_DICOM.is_dir():
        pytest.skip(f"real DICOM data not available: {SHARED_DICOM} is absent")
    return SHARED_DICOM
