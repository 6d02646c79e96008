"""Stored pixel values equal pydicom's decoding for every bit depth, on real files and made-up bit-depth cases."""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DICOM, require_shared_dicom

from AlignSeriesLib.dicom import headers as dicom_headers
from AlignSeriesLib.dicom import pixels as dicom_pixels
from AlignSeriesLib.dicom.headers import FileNote
from AlignSeriesLib.errors import DicomDecodeError

PYDICOM_TEST_FILES = pathlib.Path(pydicom.__file__).parent / "data" / "test_files"


def pydicom_values(header) -> np.ndarray:
    """pydicom's own decoding of one slice (the tile cut from it for a MOSAIC slice)."""
    index = None if header.frame is None else header.frame - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pixels = pydicom.pixels.pixel_array(header.path, index=index)
    return pixels if header.tile is None else header.tile.cut(pixels)


def compare_corpus(files) -> dict:
    """Compare every image (every frame) of ``files``; returns counts of equal, undecodable and non-image files."""
    counts = {"files_equal": 0, "slices_equal": 0, "no_decoder": 0, "not_read": 0, "mismatch": []}
    for path in files:
        headers = dicom_headers.read_headers(path)
        if isinstance(headers, FileNote):
            counts["not_read"] += 1
            continue
        try:
            ours = dicom_pixels.read_stored_slices(headers)
        except DicomDecodeError:
            counts["no_decoder"] += 1
            continue
        for k, header in enumerate(headers):
            if not np.array_equal(ours[k], pydicom_values(header)):
                counts["mismatch"].append(header.where)
        counts["files_equal"] += 1
        counts["slices_equal"] += len(headers)
    return counts


def test_every_real_shared_file_reads_as_pydicom_decodes_it():
    files = sorted(p for p in require_shared_dicom().glob("*/dicom/**/*") if p.is_file())

    counts = compare_corpus(files)

    assert counts["mismatch"] == []
    assert counts["files_equal"] + counts["no_decoder"] == len(files), counts
    assert counts["files_equal"] >= len(files) - 96, counts  # at most the JPEG Lossless series lacks a decoder


def test_every_pydicom_test_file_reads_as_pydicom_decodes_it():
    if not PYDICOM_TEST_FILES.is_dir():
        pytest.skip(f"pydicom's bundled test files are absent: {PYDICOM_TEST_FILES}")
    files = sorted(p for p in PYDICOM_TEST_FILES.rglob("*") if p.is_file())

    counts = compare_corpus(files)

    assert counts["mismatch"] == []
    assert counts["files_equal"] >= 20, counts


# -- bit depths on real headers ------------------------------------------------------------------------


def real_header_file(tmp_path) -> pydicom.Dataset:
    """A real CT header: the shared Philips CT when present, else pydicom's CT_small.dcm."""
    if SHARED_DICOM.is_dir():
        path = sorted((SHARED_DICOM / "ct_philips_axial" / "dicom").glob("*"))[0]
    else:
        path = pydicom.data.get_testdata_file("CT_small.dcm")
    return pydicom.dcmread(path)


@pytest.mark.parametrize("allocated, stored, signed", [
    (16, 12, 1), (16, 12, 0), (16, 16, 1), (16, 16, 0), (8, 8, 0), (8, 6, 1), (8, 7, 0), (32, 24, 1), (32, 32, 0),
    (32, 20, 0), (16, 1, 0),
])
def test_stored_bits_are_masked_and_sign_extended_as_pydicom_does(tmp_path, allocated, stored, signed):
    dataset = real_header_file(tmp_path)
    rng = np.random.default_rng(allocated * 100 + stored * 2 + signed)
    kind = "<i" if signed else "<u"
    raw = rng.integers(0, 2**allocated, (dataset.Rows, dataset.Columns), dtype=np.uint64)  # stray high bits
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = allocated, stored, stored - 1
    dataset.PixelRepresentation = signed
    dataset.PixelData = raw.astype(f"<u{allocated // 8}").view(f"{kind}{allocated // 8}").tobytes()
    dataset["PixelData"].VR = "OB" if allocated == 8 else "OW"
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset.save_as(tmp_path / "bits.dcm", enforce_file_format=True)
    header, = dicom_headers.read_headers(tmp_path / "bits.dcm")

    ours = dicom_pixels.read_stored_slices([header])[0]
    truth = pydicom.dcmread(tmp_path / "bits.dcm").pixel_array

    np.testing.assert_array_equal(ours, truth)
    low, high = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if signed else (0, 2**stored - 1)
    assert low <= ours.min() and ours.max() <= high
    slope, intercept = header.rescale
    values = dicom_pixels.read_slices([header])[0]
    np.testing.assert_array_equal(values, truth.astype(np.float64) * slope + intercept)


def test_signed_twelve_bit_value_with_stray_bits_is_negative(tmp_path):
    dataset = real_header_file(tmp_path)
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 1
    raw = np.full((dataset.Rows, dataset.Columns), 0x0F0F, dtype="<u2")  # 12-bit 0xF0F = -241, 0x0... above
    dataset.PixelData = raw.tobytes()
    dataset["PixelData"].VR = "OW"
    dataset.save_as(tmp_path / "signed.dcm", enforce_file_format=True)
    header, = dicom_headers.read_headers(tmp_path / "signed.dcm")

    assert set(np.unique(dicom_pixels.read_stored_slices([header]))) == {-241}  # was read as 3855


def test_high_bit_other_than_bits_stored_minus_one_is_refused(tmp_path):
    dataset = real_header_file(tmp_path)
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 15
    dataset.save_as(tmp_path / "high.dcm", enforce_file_format=True)

    note = dicom_headers.read_headers(tmp_path / "high.dcm")

    assert isinstance(note, FileNote) and "HighBit (0028,0102) 15 with BitsStored (0028,0101) 12" in note.reason


def test_rescaled_values_are_written_into_the_memory_the_caller_gives(tmp_path):
    """A volume converted to float32 (RescaleSlope 0.5) lands in the allocator's array, which a volume node then
    takes as it is: no second copy of the volume."""
    dataset = real_header_file(tmp_path)
    dataset.RescaleSlope, dataset.RescaleIntercept = 0.5, -3
    dataset.save_as(tmp_path / "slope.dcm", enforce_file_format=True)
    header, = dicom_headers.read_headers(tmp_path / "slope.dcm")
    given = []

    def allocate(shape, dtype):
        given.append(np.empty(shape, dtype))
        return given[-1]

    values = dicom_pixels.read_slices([header], allocate=allocate)

    assert values.dtype == np.float32 and len(given) == 1 and np.shares_memory(values, given[0])
    truth = pydicom.dcmread(tmp_path / "slope.dcm").pixel_array * 0.5 - 3
    np.testing.assert_array_equal(values[0].astype(np.float64), truth)


def test_output_dtype_holds_thirty_two_bit_values_exactly():
    header = dicom_headers.read_headers(pydicom.data.get_testdata_file("CT_small.dcm"))[0]
    layout = header.pixels
    import dataclasses

    def with_bits(bits, representation, rescale=(1.0, 0.0)):
        return dataclasses.replace(header, rescale=rescale, pixels=dataclasses.replace(
            layout, bits_allocated=32, bits_stored=bits, pixel_representation=representation))

    assert dicom_pixels.output_dtype([with_bits(24, 1)]) == np.float32
    assert dicom_pixels.output_dtype([with_bits(32, 1)]) == np.int32
    assert dicom_pixels.output_dtype([with_bits(32, 0)]) == np.float64
    assert dicom_pixels.output_dtype([with_bits(32, 1, (0.5, 0.0))]) == np.float64
