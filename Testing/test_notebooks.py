"""Every example notebook in docs/ runs in a real Jupyter kernel and gives the results it shows.

Each notebook asserts its own results in its cells and prints them as JSON in the cell tagged
``results``; this test runs it with nbclient (a cell error fails it) and checks those values too.
"""

from __future__ import annotations

import json
import sys

import pytest
from conftest import PROJECT_ROOT

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat (make test installs it)")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient (make test installs it)")
pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel (make test installs it)")

NOTEBOOKS = sorted((PROJECT_ROOT / "docs").glob("*.ipynb"))
KERNEL_NAME = "alignseries-test"


def check_notebook(results: dict) -> None:
    """docs/notebook.ipynb: the three scenarios against the phantom's truth."""
    assert results["mask_dice"] > 0.97
    assert results["pngs"] == results["dicom_files"] == results["ct_slices"] == 90
    assert results["identity_error"] < 1e-12 and results["voxel_error_mm"] < 1e-6
    assert results["other_frame_refused"] is True
    assert results["landmark_error_mm"] < 2.0 < results["moments_error_mm"]
    assert all(crop < ct for crop, ct in zip(results["crop_dimensions"], results["ct_dimensions"], strict=True))
    assert results["mr_off_fraction"] < 0.05


CHECKS = {"notebook.ipynb": check_notebook}


@pytest.fixture
def kernel_of_this_python(tmp_path, monkeypatch):
    """A kernel spec that runs ipykernel on this interpreter (not whatever `python3` kernel a user has)."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "AlignSeries tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return KERNEL_NAME


def test_there_are_notebooks_and_each_has_checks():
    assert NOTEBOOKS, "docs/ has no notebook"
    assert sorted(n.name for n in NOTEBOOKS) == sorted(CHECKS), "every notebook needs its checks here"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_a_kernel_and_gives_its_results(tmp_path, kernel_of_this_python, path, monkeypatch):
    temporary_folder = tmp_path / "system_temp"  # the kernel's tempfile.gettempdir(): empty again at the end
    temporary_folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(temporary_folder))
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # the stored outputs must not count: only this run's

    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name=kernel_of_this_python,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    tagged = [cell for cell in notebook.cells if "results" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "a notebook prints its results in one cell tagged 'results'"
    text = "".join(output.get("text", "") for output in tagged[0].outputs if output.output_type == "stream")
    CHECKS[path.name](json.loads(text))
    assert sorted(p.name for p in temporary_folder.iterdir()) == [], "the notebook left files in the temp folder"
