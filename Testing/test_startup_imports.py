"""A command imports only what it uses: a volume-file job no DICOM library, ``--help`` no numpy, VTK or Slicer.

Each command runs in a fresh interpreter (``cli.main``), which then lists the top-level packages it imported.
The DICOM runs are the control: the same check sees pydicom when a command does read DICOM.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (the name every SimpleITK script uses)
from conftest import MODULE_DIR
from dicom_fixtures import ORIENTATIONS, stack_positions, write_series

#: Packages a job on volume files (NRRD in, NRRD reference, ITK transform, NRRD out) has no use for.
NOT_FOR_VOLUME_FILES = ("pydicom", "highdicom", "dask", "SimpleITK", "nibabel", "PIL", "tqdm")

REPORT_IMPORTS = (
    "import json, sys\n"
    "from AlignSeriesLib import cli\n"
    "try:\n"
    "    status = cli.main(json.loads(sys.argv[1]))\n"
    "except SystemExit as exit_:\n"
    "    status = exit_.code\n"
    "print(json.dumps({'status': status, 'modules': sorted({name.split('.')[0] for name in sys.modules})}))\n"
)


def imported_by(arguments: list) -> set[str]:
    """Top-level packages imported by ``alignseries ARGUMENTS`` in a new process (which must succeed)."""
    completed = subprocess.run([sys.executable, "-c", REPORT_IMPORTS, json.dumps([str(a) for a in arguments])],
                               capture_output=True, text=True, check=False, cwd=MODULE_DIR,
                               env={"PYTHONPATH": str(MODULE_DIR), "PATH": "/usr/bin:/bin"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["status"] == 0, completed.stderr[-2000:]
    return set(report["modules"])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("startup")
    pixels = np.random.default_rng(0).integers(0, 1000, (12, 32, 32)).astype(np.int16)
    for name in ("moving", "reference"):
        image = sitk.GetImageFromArray(pixels)
        image.SetSpacing((0.8, 0.8, 1.0))
        sitk.WriteImage(image, str(folder / f"{name}.nrrd"))
    sitk.WriteTransform(sitk.Euler3DTransform((0, 0, 0), 0.02, 0.0, 0.1, (1.0, 2.0, 0.0)), str(folder / "t.tfm"))
    positions = stack_positions((-12.0, -12.0, -5.0), ORIENTATIONS["axial"], np.arange(12) * 1.0)
    write_series(folder / "dicom", pixels, positions, ORIENTATIONS["axial"], (0.8, 0.8))
    return folder


def test_a_volume_file_resample_imports_no_dicom_library(inputs, tmp_path):
    output = tmp_path / "out.nrrd"

    modules = imported_by(["resample", "--input", inputs / "moving.nrrd", "--reference", inputs / "reference.nrrd",
                           "--transform", inputs / "t.tfm", "--output", output])

    assert output.is_file()
    assert "slicer" in modules and "numpy" in modules  # the job did run
    assert not modules & set(NOT_FOR_VOLUME_FILES), sorted(modules & set(NOT_FOR_VOLUME_FILES))


def test_info_on_a_volume_file_imports_no_dicom_library(inputs):
    modules = imported_by(["info", inputs / "moving.nrrd"])

    assert not modules & set(NOT_FOR_VOLUME_FILES), sorted(modules & set(NOT_FOR_VOLUME_FILES))


def test_a_dicom_reference_does_import_pydicom(inputs, tmp_path):
    """The control: the same check sees pydicom when the job reads DICOM."""
    modules = imported_by(["resample", "--input", inputs / "moving.nrrd", "--reference", inputs / "dicom",
                           "--output", tmp_path / "out.nrrd"])

    assert "pydicom" in modules
    assert "dask" not in modules and "highdicom" not in modules


def test_info_on_dicom_starts_neither_slicer_nor_vtk(inputs):
    modules = imported_by(["info", inputs / "dicom"])

    assert "pydicom" in modules  # the headers were read
    assert not modules & {"slicer", "vtkmodules", "dask", "SimpleITK", "highdicom"}, sorted(modules)


def test_help_imports_neither_numpy_nor_vtk_nor_slicer():
    modules = imported_by(["--help"])

    assert not modules & {"numpy", "vtkmodules", "slicer", "pydicom"}, sorted(modules)
