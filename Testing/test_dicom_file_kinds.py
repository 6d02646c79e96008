"""Say what a file is: non-image objects named by their SOP class, reported once, grouped; float maps read.

The objects are pydicom's own test files (DICOMDIR, RT Dose, RT Struct, RT Plan, SR, RGB secondary capture)
and copies of an SR given other SOP classes (Presentation State, KOS, raw data, encapsulated PDF, SEG, a
Philips private class); the truth is each file's SOPClassUID, named by pydicom's UID dictionary.
"""

from __future__ import annotations

import gzip
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pydicom
import pytest
from conftest import MODULE_DIR, run
from dicom_fixtures import stack_positions, write_multiframe, write_phantom_series

from AlignSeriesLib.dicom import series as dicom_series

PYDICOM_FILES = pathlib.Path(pydicom.__file__).parent / "data" / "test_files"

#: file name in the folder -> (pydicom test file, SOP class to give it or None, the kind expected)
OBJECTS = {
    "DICOMDIR": ("dicomdirtests/DICOMDIR", None, "DICOMDIR"),
    "dose.dcm": ("rtdose.dcm", None, "RT Dose"),
    "struct.dcm": ("rtstruct.dcm", None, "RT Struct"),
    "plan.dcm": ("rtplan.dcm", None, "RT object"),
    "report.dcm": ("test-SR.dcm", None, "SR"),
    "rgb.dcm": ("SC_rgb_gdcm_KY.dcm", None, "RGB secondary capture"),
    "gsps.dcm": ("test-SR.dcm", pydicom.uid.GrayscaleSoftcopyPresentationStateStorage, "Presentation State"),
    "kos.dcm": ("test-SR.dcm", pydicom.uid.KeyObjectSelectionDocumentStorage, "KOS"),
    "raw.dcm": ("test-SR.dcm", pydicom.uid.RawDataStorage, "raw data"),
    "pdf.dcm": ("test-SR.dcm", pydicom.uid.EncapsulatedPDFStorage, "encapsulated PDF"),
    "seg.dcm": ("test-SR.dcm", pydicom.uid.SegmentationStorage, "SEG"),
    "philips.dcm": ("test-SR.dcm", "1.3.46.670589.11.0.0.12.4", "private object"),
}


def make_object(folder: pathlib.Path, name: str) -> pathlib.Path:
    source, sop_class, _ = OBJECTS[name]
    path = folder / name
    if sop_class is None:
        shutil.copy(PYDICOM_FILES / source, path)
        return path
    dataset = pydicom.dcmread(PYDICOM_FILES / source)
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.save_as(path)
    return path


def float_parametric_map(path: pathlib.Path, bits: int = 32) -> tuple[pathlib.Path, np.ndarray]:
    """An enhanced multi-frame Parametric Map of 4 frames, its values in FloatPixelData (or DoubleFloatPixelData)."""
    positions = stack_positions((10.0, -20.0, 30.0), (1, 0, 0, 0, 1, 0), np.arange(4) * 2.5)
    write_multiframe(path, np.zeros((4, 6, 5), np.int16), positions, (1, 0, 0, 0, 1, 0), (0.9, 0.8),
                     shared_geometry=True)
    values = np.random.default_rng(3).normal(size=(4, 6, 5)).astype(f"<f{bits // 8}")
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation"):
        delattr(dataset, keyword)
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = pydicom.uid.ParametricMapStorage
    dataset.BitsAllocated = bits
    if bits == 32:
        dataset.FloatPixelData = values.tobytes()
    else:
        dataset.DoubleFloatPixelData = values.tobytes()
    dataset.save_as(path)
    return path, values


@pytest.mark.parametrize("bits", [32, 64])
def test_a_float_parametric_map_on_a_regular_grid_is_read(tmp_path, bits):
    path, values = float_parametric_map(tmp_path / "map.dcm", bits)

    (volume,) = dicom_series.scan_dicom(path).volumes
    voxels = volume.read_voxels()

    assert voxels.dtype == np.dtype(f"float{bits}")
    np.testing.assert_array_equal(voxels, values)
    np.testing.assert_allclose(volume.geometry.spacing, [0.8, 0.9, 2.5])
    np.testing.assert_allclose(volume.geometry.origin_lps, [10.0, -20.0, 30.0])


@pytest.fixture
def mixed_folder(tmp_path) -> pathlib.Path:
    folder = tmp_path / "export"
    write_phantom_series(folder / "ct", stack_positions((0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0), np.arange(3) * 2.0))
    write_phantom_series(folder / "other", stack_positions((0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0), np.arange(4) * 3.0),
                         series_uid=pydicom.uid.generate_uid())
    for name in OBJECTS:
        make_object(folder, name)
    float_parametric_map(folder / "map.dcm")
    return folder


def test_info_names_every_non_image_object_once_and_reads_the_map(mixed_folder, capsys):
    status, out, err = run(capsys, "info", "--json", mixed_folder)

    assert status == 0, err
    document = json.loads(out)
    kinds = {pathlib.Path(entry["path"]).name: entry["kind"] for entry in document["skipped"]}
    assert kinds == {name: kind for name, (_, _, kind) in OBJECTS.items()}
    for entry in document["skipped"]:
        assert "corrupt" not in entry["reason"] and "truncated" not in entry["reason"], entry
        dataset = pydicom.dcmread(entry["path"], stop_before_pixels=True, force=True)  # rtstruct.dcm: no preamble
        sop_class = dataset.get("SOPClassUID") or dataset.file_meta.MediaStorageSOPClassUID
        assert pydicom.uid.UID(sop_class).name in entry["reason"]
    (warning,) = document["warnings"]
    assert warning["message"].startswith(f"{len(OBJECTS)} files skipped: ")
    assert "1 DICOMDIR" in warning["message"] and "1 RT Dose" in warning["message"]
    assert sorted(v["dimensions"][2] for v in document["volumes"]) == [3, 4, 4]  # two series and the map
    assert not any(w["code"] == "skipped_file" for v in document["volumes"] for w in v["warnings"])


def test_the_grouped_skip_warning_is_printed_once_per_command(mixed_folder, tmp_path, capsys):
    status, out, err = run(capsys, "info", mixed_folder)

    assert status == 0, err
    assert out.count("files skipped:") == 1 and err.count("files skipped:") == 0

    process = subprocess.run([sys.executable, "-m", "AlignSeriesLib", "resample", "--input", str(mixed_folder),
                              "--input-volume", "1", "--reference", str(mixed_folder), "--reference-volume", "2",
                              "--output", str(tmp_path / "out.nrrd")],
                             cwd=MODULE_DIR, capture_output=True, text=True, timeout=120)

    assert process.returncode == 0, process.stderr
    warnings = [line for line in process.stderr.splitlines() if line.startswith("warning: ")]
    assert sum("files skipped:" in line for line in warnings) == 1, warnings
    assert len(warnings) == len(set(warnings)), warnings


def test_no_library_warning_reaches_the_terminal_on_a_mosaic(tmp_path):
    data = gzip.open(pathlib.Path(__import__("nibabel").__file__).parent / "nicom" / "tests" / "data"
                     / "siemens_dwi_0.dcm.gz").read()
    (tmp_path / "mosaic.dcm").write_bytes(data)

    process = subprocess.run([sys.executable, "-m", "AlignSeriesLib", "info", str(tmp_path / "mosaic.dcm")],
                             cwd=MODULE_DIR, capture_output=True, text=True, timeout=120)

    assert process.returncode == 0, process.stderr
    assert "experimental" not in process.stderr and "UserWarning" not in process.stderr, process.stderr
    assert "mosaic:" in process.stdout
