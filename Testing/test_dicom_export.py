"""Tests of AlignSeriesLib.dicom.export: DICOM series and PNG slices aligned with a DICOM reference."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import require_shared_dicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from AlignSeriesLib.dicom import export as dicom_export
from AlignSeriesLib.dicom.export import export_png_slices, pixel_encoding, write_dicom_series
from AlignSeriesLib.dicom.headers import read_headers
from AlignSeriesLib.errors import AlignSeriesError, DicomError, OutputExistsError
from AlignSeriesLib.geometry import VolumeGeometry
from AlignSeriesLib.resample import geometry_covering, resample_to_geometry

ROWS, COLUMNS, SLICES = 6, 8, 5
ORIENTATION = [0.98, 0.17364818, 0.0964, -0.1736, 0.98480775, 0.0]  # oblique row and column cosines


def _unit_orientation() -> list[float]:
    row = np.array(ORIENTATION[:3]) / np.linalg.norm(ORIENTATION[:3])
    column = np.array(ORIENTATION[3:])
    column = column - row * (row @ column)
    return [*row.tolist(), *(column / np.linalg.norm(column)).tolist()]


def write_reference_series(folder: Path, modality: str = "CT", shuffle_instance_numbers: bool = True) -> list[str]:
    """A small oblique single-frame series; returns its files in k order (along the normal)."""
    folder.mkdir(parents=True, exist_ok=True)
    orientation = _unit_orientation()
    normal = np.cross(orientation[:3], orientation[3:])
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    numbers = [3, 1, 5, 2, 4] if shuffle_instance_numbers else list(range(1, SLICES + 1))
    files = []
    for k in range(SLICES):
        dataset = Dataset()
        dataset.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
        dataset.SOPInstanceUID = generate_uid()
        dataset.PatientName, dataset.PatientID, dataset.Modality = "Test^Patient", "P123", modality
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study, series
        dataset.FrameOfReferenceUID, dataset.SeriesNumber = frame_of_reference, 7
        dataset.InstanceNumber = numbers[k]
        dataset.ImagePositionPatient = (np.array([-20.0, 15.0, 30.0]) + 2.5 * k * normal).tolist()
        dataset.ImageOrientationPatient = orientation
        dataset.PixelSpacing = [0.7, 0.9]
        dataset.SliceThickness = 2.5
        dataset.Rows, dataset.Columns = ROWS, COLUMNS
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 1
        dataset.PixelData = np.zeros((ROWS, COLUMNS), np.int16).tobytes()
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"file_{numbers[k]:02d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        files.append(str(path))
    return files


def read_series(folder: Path) -> list[pydicom.Dataset]:
    """The exported instances in k order: sorted by ImagePositionPatient along the slice normal."""
    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]

    def along_normal(dataset: pydicom.Dataset) -> float:
        orientation = np.array(dataset.ImageOrientationPatient, dtype=float)
        return float(np.dot(np.cross(orientation[:3], orientation[3:]), np.array(dataset.ImagePositionPatient, float)))

    return sorted(datasets, key=along_normal)


def stored_values(dataset: pydicom.Dataset) -> np.ndarray:
    return dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)


def slices_of(files) -> list:
    """The reference slices the exporters take: each file's header, in the order given."""
    return [read_headers(path)[0] for path in files]


@pytest.fixture
def reference_files(tmp_path) -> list[str]:
    return write_reference_series(tmp_path / "reference")


def plane_of(reference: pydicom.Dataset, frame: int | None) -> dict:
    """ImagePositionPatient, ImageOrientationPatient and PixelSpacing of a file (or of one of its frames), read
    here with pydicom: an oracle independent of the writer, which takes them from the scanned slice headers."""
    groups = [reference]
    if frame is not None:
        shared = reference.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()]
        groups = [reference.PerFrameFunctionalGroupsSequence[frame - 1], shared[0], reference]
    plane = {}
    for sequence, keyword in (("PlanePositionSequence", "ImagePositionPatient"),
                              ("PlaneOrientationSequence", "ImageOrientationPatient"),
                              ("PixelMeasuresSequence", "PixelSpacing")):
        for group in groups:
            source = group[sequence][0] if sequence in group else group
            if keyword in source:
                plane[keyword] = [float(value) for value in source[keyword].value]
                break
    return plane


def assert_aligned_slice_for_slice(exported: list[pydicom.Dataset], reference_files, frames=None) -> None:
    frames = frames or [None] * len(reference_files)
    assert len(exported) == len(reference_files)
    for dataset, path, frame in zip(exported, reference_files, frames, strict=True):
        reference = pydicom.dcmread(path, stop_before_pixels=True)
        plane = plane_of(reference, frame)
        np.testing.assert_allclose(dataset.ImagePositionPatient, plane["ImagePositionPatient"], atol=1e-4)
        np.testing.assert_allclose(dataset.ImageOrientationPatient, plane["ImageOrientationPatient"], atol=1e-6)
        np.testing.assert_allclose(dataset.PixelSpacing, plane["PixelSpacing"], atol=1e-6)
        assert dataset.FrameOfReferenceUID == reference.FrameOfReferenceUID
        assert dataset.StudyInstanceUID == reference.StudyInstanceUID and dataset.PatientID == reference.PatientID
        assert dataset.SourceImageSequence[0].ReferencedSOPInstanceUID == reference.SOPInstanceUID
        assert dataset.ReferencedImageSequence[0].ReferencedSOPInstanceUID == reference.SOPInstanceUID
        assert dataset.SeriesInstanceUID != reference.SeriesInstanceUID
        assert dataset.SOPInstanceUID != reference.SOPInstanceUID


# -- DICOM series ---------------------------------------------------------------------------------


def test_series_is_aligned_slice_for_slice_with_the_reference(tmp_path, reference_files):
    array = np.random.default_rng(0).integers(-1000, 3000, (SLICES, ROWS, COLUMNS)).astype(np.int16)
    paths = write_dicom_series(array, slices_of(reference_files), tmp_path / "out",
                               series_description="resampled")
    exported = read_series(tmp_path / "out")
    assert sorted(Path(p).name for p in paths) == sorted(p.name for p in (tmp_path / "out").iterdir())
    assert_aligned_slice_for_slice(exported, reference_files)
    for path, dataset, reference_path in zip(paths, exported, reference_files, strict=True):
        reference = pydicom.dcmread(reference_path, stop_before_pixels=True)
        assert Path(path).name == f"{reference.SOPInstanceUID}.dcm"  # unique per reference slice
        assert dataset.InstanceNumber == reference.InstanceNumber  # the reference slice's, not k + 1
        assert float(dataset.RescaleSlope) == 1 and float(dataset.RescaleIntercept) == 0
    assert len({d.SeriesInstanceUID for d in exported}) == 1 and len({d.SOPInstanceUID for d in exported}) == SLICES
    assert all(d.SOPClassUID == CTImageStorage and list(d.ImageType)[:2] == ["DERIVED", "SECONDARY"]
               for d in exported)
    assert exported[0].SeriesDescription == "resampled" and exported[0].SeriesNumber == 1007
    np.testing.assert_array_equal(np.stack([stored_values(d) for d in exported]), array)


def test_float_values_are_rescaled_within_half_a_step(tmp_path, reference_files):
    array = np.random.default_rng(1).uniform(-3.5, 70000.0, (SLICES, ROWS, COLUMNS))
    write_dicom_series(array, slices_of(reference_files), tmp_path / "out", series_description="f")
    exported = read_series(tmp_path / "out")
    slope = float(exported[0].RescaleSlope)
    assert exported[0].PixelRepresentation == 0
    np.testing.assert_allclose(np.stack([stored_values(d) for d in exported]), array, atol=slope / 2 + 1e-6)


@pytest.mark.parametrize("values, dtype, slope", [
    ([-5, 200], np.int16, 1.0), ([0, 60000], np.uint16, 1.0), ([0.5, 2.0], np.uint16, 1.5 / 65535),
    ([-40000, 10], np.uint16, 1.0), ([-40000.0, 30000.0], np.uint16, 70000 / 65535),
])
def test_pixel_encoding_choice(values, dtype, slope):
    encoding = pixel_encoding(np.array(values))
    assert encoding.dtype == dtype and encoding.slope == pytest.approx(slope)


def test_integers_keep_slope_one_with_one_intercept_given_the_whole_range():
    slab = np.array([5, 7], np.int32)  # one slab's values; the whole export spans [-1024, 50000]
    encoding = pixel_encoding(slab, value_range=(-1024, 50000))
    assert (encoding.dtype, encoding.slope, encoding.intercept) == (np.uint16, 1.0, -1024.0)
    stored = encoding.encode(slab)
    np.testing.assert_array_equal(stored * encoding.slope + encoding.intercept, slab)
    floats = pixel_encoding(np.array([0.25, 0.5]), value_range=(-10.0, 10.0), integer=False)
    assert floats.intercept == -10.0 and floats.slope == pytest.approx(20 / 65535)


def test_labels_are_stored_exactly_or_refused(tmp_path, reference_files):
    labels = np.zeros((SLICES, ROWS, COLUMNS), np.uint8)
    labels[1:4, 2:5, 3:6] = 7
    labels[2, 3, 4] = 255
    write_dicom_series(labels, slices_of(reference_files), tmp_path / "out", series_description="mask",
                       labelmap=True)
    exported = read_series(tmp_path / "out")
    assert float(exported[0].RescaleSlope) == 1 and float(exported[0].RescaleIntercept) == 0
    np.testing.assert_array_equal(np.stack([d.pixel_array for d in exported]), labels)
    with pytest.raises(DicomError, match="labels must be whole numbers"):
        write_dicom_series(labels + 0.5, slices_of(reference_files), tmp_path / "bad",
                           series_description="mask", labelmap=True)
    assert not (tmp_path / "bad").exists()


def test_mr_reference_gives_mr_images(tmp_path):
    files = write_reference_series(tmp_path / "mr", modality="MR")
    write_dicom_series(np.ones((SLICES, ROWS, COLUMNS)), slices_of(files), tmp_path / "out",
                       series_description="mr")
    exported = read_series(tmp_path / "out")
    assert all(d.SOPClassUID == MRImageStorage and d.ScanningSequence == "RM" for d in exported)


def _real_reference(name: str) -> tuple[list[str], VolumeGeometry]:
    """Files of a real single-frame series in k order (along the normal) and its geometry, from pydicom headers."""
    folder = require_shared_dicom() / name / "dicom"
    if not folder.is_dir():
        pytest.skip(f"real DICOM series {name} not available: {folder} is absent")
    headers = [(pydicom.dcmread(p, stop_before_pixels=True), str(p)) for p in sorted(folder.iterdir())]
    orientation = np.array(headers[0][0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    headers.sort(key=lambda item: float(np.dot(item[0].ImagePositionPatient, normal)))
    positions = np.array([h.ImagePositionPatient for h, _ in headers], dtype=float)
    row_spacing, column_spacing = (float(v) for v in headers[0][0].PixelSpacing)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, 0] = orientation[:3] * column_spacing
    ijk_to_lps[:3, 1] = orientation[3:] * row_spacing
    ijk_to_lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    ijk_to_lps[:3, 3] = positions[0]
    dimensions = (int(headers[0][0].Columns), int(headers[0][0].Rows), len(headers))
    return [path for _, path in headers], VolumeGeometry.from_ijk_to_lps(dimensions, ijk_to_lps)


def test_mask_resampled_onto_real_dicom_series_reads_back_aligned(tmp_path):
    files, reference = _real_reference("mr_siemens_obl_fmap")
    mask_geometry = geometry_covering(reference, 1.5)
    k, j, i = np.indices(mask_geometry.shape)
    points = mask_geometry.ijk_to_world(np.stack([i, j, k], axis=-1).astype(float))
    distance = np.linalg.norm(points - reference.center_ras, axis=-1)
    mask = np.where(distance < 30, 1, 0).astype(np.uint8) + (distance < 12).astype(np.uint8)
    result = resample_to_geometry(mask, mask_geometry, reference, labelmap=True)
    assert set(np.unique(result.array)) == {0, 1, 2}
    write_dicom_series(result.array, slices_of(files), tmp_path / "mask", series_description="mask",
                       labelmap=True)
    exported = read_series(tmp_path / "mask")
    assert_aligned_slice_for_slice(exported, files)
    read_back = np.stack([d.pixel_array for d in exported])
    np.testing.assert_array_equal(read_back, result.array)
    centre = np.round(reference.world_to_ijk(reference.center_ras)).astype(int)
    assert read_back[centre[2], centre[1], centre[0]] == 2


# -- PNG slices -----------------------------------------------------------------------------------


def test_png_slices_are_named_by_instance_number_and_sop_uid(tmp_path, reference_files):
    image = pytest.importorskip("PIL.Image")
    array = np.zeros((SLICES, ROWS, COLUMNS), np.int16)
    array[:, 0, :] = 100  # first row (j = 0) bright: must be the top line of each picture
    array[:, :, 0] = 50
    paths = export_png_slices(array, slices_of(reference_files), tmp_path / "png", window=(0, 100))
    for path, reference_path in zip(paths[:-1], reference_files, strict=True):
        reference = pydicom.dcmread(reference_path, stop_before_pixels=True)
        assert path.name == f"{int(reference.InstanceNumber):04d}_{reference.SOPInstanceUID}.png"
        picture = np.asarray(image.open(path))
        assert picture.shape == (ROWS, COLUMNS)
        assert np.all(picture[0, 1:] == 255) and np.all(picture[1:, 0] == 128) and picture[-1, -1] == 0


@pytest.mark.parametrize("label_count, mode, dtype", [(118, "L", np.uint8), (300, "I;16", np.uint16)])
def test_png_label_slices_hold_the_label_values(tmp_path, reference_files, label_count, mode, dtype):
    image = pytest.importorskip("PIL.Image")
    voxels = SLICES * ROWS * COLUMNS  # 0 and label_count present, and labels 16, 32, ... among those between
    labels = np.random.default_rng(label_count).permutation(np.arange(voxels) * label_count // (voxels - 1))
    labels = labels.reshape(SLICES, ROWS, COLUMNS)
    assert labels.max() == label_count and 16 in labels
    paths = export_png_slices(labels, slices_of(reference_files), tmp_path / "png", labelmap=True)
    pictures = [image.open(path) for path in paths[:-1]]
    assert {picture.mode for picture in pictures} == {mode}  # single channel, 8- or 16-bit
    read_back = np.stack([np.asarray(picture) for picture in pictures])
    assert read_back.dtype == dtype
    np.testing.assert_array_equal(read_back, labels)  # row 0 = the slice's first row, values exact


def test_png_labels_a_png_cannot_hold_are_refused(tmp_path, reference_files):
    for bad in (-1, 70000, 0.5):
        labels = np.zeros((SLICES, ROWS, COLUMNS))
        labels[0, 0, 0] = bad
        with pytest.raises(DicomError, match="label PNGs hold whole labels"):
            export_png_slices(labels, slices_of(reference_files), tmp_path / "png", labelmap=True)
    assert not (tmp_path / "png").exists()


def test_png_index_lists_every_slice_in_k_order(tmp_path, reference_files):
    paths = export_png_slices(np.zeros((SLICES, ROWS, COLUMNS)), slices_of(reference_files), tmp_path / "png",
                              window=(-100, 300), first_k=10)
    assert paths[-1].name == "index.csv"
    rows = list(csv.DictReader(paths[-1].open()))
    assert [row["png"] for row in rows] == [path.name for path in paths[:-1]]
    for k, (row, reference_path) in enumerate(zip(rows, reference_files, strict=True)):
        reference = pydicom.dcmread(reference_path, stop_before_pixels=True)
        assert row["sop_instance_uid"] == reference.SOPInstanceUID
        assert int(row["instance_number"]) == reference.InstanceNumber and int(row["k"]) == 10 + k
        np.testing.assert_allclose([float(v) for v in row["image_position_patient"].split("\\")],
                                   reference.ImagePositionPatient, atol=1e-4)
        assert (float(row["window_center"]), float(row["window_width"])) == (100, 400)


# -- bad input and data safety --------------------------------------------------------------------


def test_existing_folder_is_refused_without_force_and_replaced_with_force(tmp_path, reference_files):
    output = tmp_path / "out"
    output.mkdir()
    (output / "old.dcm").write_bytes(b"old")
    array = np.ones((SLICES, ROWS, COLUMNS), np.int16)
    with pytest.raises(OutputExistsError, match="not empty"):
        write_dicom_series(array, slices_of(reference_files), output, series_description="x")
    assert [p.name for p in output.iterdir()] == ["old.dcm"]
    write_dicom_series(array, slices_of(reference_files), output, series_description="x", force=True)
    assert sorted(p.name for p in output.iterdir()) == sorted(f"{s.sop_instance_uid}.dcm"
                                                              for s in slices_of(reference_files))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_force_never_replaces_a_folder_with_other_content(tmp_path, reference_files):
    output = tmp_path / "home"
    output.mkdir()
    (output / "notes.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="not replaced even with --force"):
        export_png_slices(np.ones((SLICES, ROWS, COLUMNS)), slices_of(reference_files), output, force=True)
    assert (output / "notes.txt").read_text() == "precious"


def test_empty_existing_folder_is_used(tmp_path, reference_files):
    (tmp_path / "empty").mkdir()
    paths = write_dicom_series(np.ones((SLICES, ROWS, COLUMNS)), slices_of(reference_files),
                               tmp_path / "empty", series_description="x")
    assert all(p.is_file() for p in paths)


def test_unwritable_destinations_are_refused(tmp_path, reference_files):
    array = np.ones((SLICES, ROWS, COLUMNS))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(AlignSeriesError, match="does not exist or is not a folder"):
        write_dicom_series(array, slices_of(reference_files), tmp_path / "a_file" / "out", series_description="x")
    with pytest.raises(OutputExistsError, match="not a folder"):
        write_dicom_series(array, slices_of(reference_files), tmp_path / "a_file", series_description="x")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_parent_is_refused(tmp_path, reference_files):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(AlignSeriesError, match="not writable"):
            write_dicom_series(np.ones((SLICES, ROWS, COLUMNS)), slices_of(reference_files), parent / "out",
                               series_description="x")
    finally:
        parent.chmod(0o700)


def test_failure_midway_leaves_no_partial_files(tmp_path, reference_files, monkeypatch):
    real = dicom_export._slice_dataset

    def failing(series_file, header, pixels, encoding, identity, number, window):
        if number == 3:
            raise OSError("disk full")
        return real(series_file, header, pixels, encoding, identity, number, window)

    monkeypatch.setattr(dicom_export, "_slice_dataset", failing)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(np.ones((SLICES, ROWS, COLUMNS)), slices_of(reference_files), tmp_path / "out",
                           series_description="x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference"]


def test_the_scanned_slice_header_is_the_only_source_of_a_slices_plane(tmp_path, reference_files):
    scanned = slices_of(reference_files)  # the file loses its geometry after the scan
    broken = pydicom.dcmread(reference_files[2])
    del broken.ImagePositionPatient
    broken.save_as(reference_files[2])
    paths = write_dicom_series(np.ones((SLICES, ROWS, COLUMNS)), scanned, tmp_path / "out", series_description="x")
    exported = pydicom.dcmread(paths[2], stop_before_pixels=True)
    assert exported.SourceImageSequence[0].ReferencedSOPInstanceUID == scanned[2].sop_instance_uid
    np.testing.assert_allclose(np.array(exported.ImagePositionPatient, float), scanned[2].position_lps, atol=1e-9)


@pytest.mark.parametrize("shape, match", [((SLICES - 1, ROWS, COLUMNS), "4 slices but 5 reference slices"),
                                          ((SLICES, COLUMNS, ROWS), "Rows x Columns 6 x 8"),
                                          ((SLICES, ROWS), "must be 3-D")])
def test_array_not_on_reference_grid_is_refused(tmp_path, reference_files, shape, match):
    with pytest.raises(DicomError, match=match):
        write_dicom_series(np.ones(shape), slices_of(reference_files), tmp_path / "out", series_description="x")


def test_unreadable_reference_is_refused(tmp_path, reference_files):
    scanned = slices_of(reference_files)  # the file is damaged after the scan
    Path(reference_files[0]).write_bytes(b"not dicom")
    with pytest.raises(DicomError, match="cannot read reference DICOM file"):
        write_dicom_series(np.ones((SLICES, ROWS, COLUMNS)), scanned, tmp_path / "out", series_description="x")


def test_non_finite_values_are_refused(tmp_path, reference_files):
    array = np.ones((SLICES, ROWS, COLUMNS))
    array[0, 0, 0] = np.nan
    with pytest.raises(DicomError, match="non-finite"):
        write_dicom_series(array, slices_of(reference_files), tmp_path / "out", series_description="x")
