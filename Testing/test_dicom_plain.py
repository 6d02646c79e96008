"""The header scan's plain-file reader (dicom/plain.py) gives the headers pydicom gives, or leaves the file to it.

Truth: the same file read through pydicom's ``dcmread`` (the scan's other path), field by field: geometry arrays
bit for bit, UIDs, rescale, attributes, pixel offsets, and the Python types of every value.
"""

from __future__ import annotations

import dataclasses
import pathlib
import warnings

import numpy as np
import pydicom
import pytest
from conftest import require_shared_dicom
from dicom_fixtures import oblique_orientation, slice_dataset
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from AlignSeriesLib.dicom import headers as dicom_headers
from AlignSeriesLib.dicom import plain as dicom_plain
from AlignSeriesLib.dicom.headers import FileNote, SliceHeader

PYDICOM_TEST_FILES = pathlib.Path(pydicom.__file__).parent / "data" / "test_files"


def pydicom_headers(path, monkeypatch):
    """The scan's headers of ``path`` with the plain reader switched off."""
    with monkeypatch.context() as patch:
        patch.setattr(dicom_headers, "_plain_headers", lambda _: None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dicom_headers.read_headers(path)


def differences(plain: list[SliceHeader], truth) -> list[str]:
    """Fields (and attribute keys) whose values or types differ between two header lists."""
    if not isinstance(truth, list) or len(truth) != len(plain):
        return [f"pydicom gives {truth!r}"]
    found = []
    for ours, theirs in zip(plain, truth, strict=True):
        for field in dataclasses.fields(SliceHeader):
            a, b = getattr(ours, field.name), getattr(theirs, field.name)
            if isinstance(a, np.ndarray):
                same = a.dtype == b.dtype and np.array_equal(a, b)
            elif isinstance(a, dict):
                same = a == b and all(type(a[key]) is type(b[key]) for key in a)
            else:
                same = a == b and type(a) is type(b)
            if not same:
                found.append(f"{field.name}: {a!r} vs {b!r}")
    return found


def compare(path, monkeypatch) -> bool:
    """Assert that the plain reader agrees with pydicom on ``path``; True when it read the file itself."""
    plain = dicom_headers._plain_headers(str(path))
    truth = pydicom_headers(path, monkeypatch)
    if plain is None:
        return False  # read_headers is then pydicom's path itself
    assert differences(plain, truth) == [], path
    return True


def test_every_shared_file_gives_pydicoms_headers(monkeypatch):
    files = sorted(p for p in require_shared_dicom().glob("*/dicom/**/*") if p.is_file())

    plain = sum(compare(path, monkeypatch) for path in files)

    assert plain >= 150, f"only {plain} of {len(files)} files read as plain"  # all but GE's private elements


def test_every_pydicom_test_file_gives_pydicoms_headers(monkeypatch):
    if not PYDICOM_TEST_FILES.is_dir():
        pytest.skip(f"pydicom's bundled test files are absent: {PYDICOM_TEST_FILES}")
    files = sorted(p for p in PYDICOM_TEST_FILES.rglob("*") if p.is_file())

    plain = sum(compare(path, monkeypatch) for path in files)

    assert plain >= 10, f"only {plain} of {len(files)} files read as plain"


# -- made-up files: what is read as plain, and what is left to pydicom --------------------------------------


def write_slice(tmp_path, change=None, *, syntax=pydicom.uid.ExplicitVRLittleEndian, name="slice.dcm"):
    """One CT slice of a real-looking header, changed by ``change(dataset)``, written with ``syntax``."""
    pixels = np.arange(12 * 10, dtype=np.int16).reshape(12, 10) - 40
    dataset = slice_dataset(pixels, (-10.5, 20.25, 3.0), oblique_orientation(), (0.8, 0.7), series_uid="1.2.3.4",
                            instance_number=3, RescaleIntercept=-1024, RescaleSlope=1, EchoTime=4.5)
    if change is not None:
        change(dataset)
    dataset.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.save_as(path, enforce_file_format=True)
    return path


def nested_sequences(dataset: Dataset) -> None:
    """An undefined-length sequence whose undefined-length item holds another sequence (as many scanners write)."""
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator = "T-D0050", "SRT"
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = pydicom.uid.CTImageStorage, "1.2.3.4.5"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    item.is_undefined_length_sequence_item = True
    dataset.ReferencedImageSequence = Sequence([item])
    dataset["ReferencedImageSequence"].is_undefined_length = True
    dataset.AnatomicRegionSequence = Sequence([inner])  # defined length


def padded_values(dataset: Dataset) -> None:
    """Values as real headers pad them: spaces in numbers, a single ImageType, empty type 2 elements."""
    for keyword, vr, value in (("RescaleIntercept", "DS", " -1024 "), ("InstanceNumber", "IS", "+7 "),
                               ("SliceThickness", "DS", ""), ("SeriesDescription", "LO", "knee  "),
                               ("ImageType", "CS", "LOCALIZER"), ("AcquisitionNumber", "IS", ""),
                               ("PixelSpacing", "DS", "0.8\\ 0.70 "), ("TriggerTime", "DS", "1e2")):
        dataset.add_new(pydicom.datadict.tag_for_keyword(keyword), vr, value)


PLAIN_CASES = {
    "explicit VR": None,
    "implicit VR": "implicit",
    "nested undefined-length sequences": nested_sequences,
    "padded values": padded_values,
    "trailing padding after the pixels": lambda d: d.add_new(0xFFFCFFFC, "OB", b"\0" * 6),
    "diffusion values": lambda d: d.update({"DiffusionBValue": 1000.0, "DiffusionGradientOrientation": [0.6, 0, 0.8],
                                            "TemporalPositionIdentifier": 2, "AcquisitionTime": "101010.5"}),
}

PYDICOM_CASES = {
    "non-ASCII description": lambda d: d.update({"SpecificCharacterSet": "ISO_IR 100", "SeriesDescription": "Genou é"}),
    "Siemens CSA creator": lambda d: d.add_new(0x00290010, "LO", "SIEMENS CSA HEADER"),
    "GE private elements": lambda d: d.update({"Manufacturer": "GE MEDICAL SYSTEMS"}),
    "IS written as a decimal": lambda d: d.add_new(0x00200013, "IS", "3.0"),
    "big endian": "big endian",
}


def _write_case(tmp_path, case):
    syntax = {"implicit": pydicom.uid.ImplicitVRLittleEndian, "big endian": pydicom.uid.ExplicitVRBigEndian}
    if isinstance(case, str):
        return write_slice(tmp_path, syntax=syntax[case])
    return write_slice(tmp_path, case)


@pytest.mark.parametrize("case", PLAIN_CASES, ids=list(PLAIN_CASES))
def test_plain_files_are_read_without_pydicom_and_agree(tmp_path, monkeypatch, case):
    path = _write_case(tmp_path, PLAIN_CASES[case])

    assert compare(path, monkeypatch), "left to pydicom"


@pytest.mark.parametrize("case", PYDICOM_CASES, ids=list(PYDICOM_CASES))
def test_other_files_are_left_to_pydicom(tmp_path, monkeypatch, case):
    path = _write_case(tmp_path, PYDICOM_CASES[case])

    assert not compare(path, monkeypatch), "read as plain"


def test_padded_values_decode_as_pydicom_decodes_them(tmp_path):
    header, = dicom_headers.read_headers(write_slice(tmp_path, padded_values))

    assert header.rescale == (1.0, -1024.0) and header.instance_number == 7
    assert header.image_type == tuple("LOCALIZER") and header.series_description == "knee"  # pydicom's str, iterated
    assert header.pixel_spacing.tolist() == [0.8, 0.7] and header.attributes["slice_thickness"] is None
    assert header.attributes["trigger"] == 100.0 and header.attributes["acquisition_number"] is None


@pytest.mark.parametrize("cut", [1, 100, 300])
def test_a_cut_file_is_left_to_pydicom_which_names_it(tmp_path, monkeypatch, cut):
    path = write_slice(tmp_path)
    path.write_bytes(path.read_bytes()[:-cut])

    assert dicom_headers._plain_headers(str(path)) is None
    note = dicom_headers.read_headers(path)
    assert isinstance(note, FileNote) and note == pydicom_headers(path, monkeypatch)


def test_bytes_after_the_last_element_are_left_to_pydicom(tmp_path):
    path = write_slice(tmp_path)
    path.write_bytes(path.read_bytes() + b"\x01\x02\x03")

    with pytest.raises(dicom_plain.NotPlainError):
        dicom_plain.read_plain(str(path))


def test_pixel_offset_is_where_the_pixels_are(tmp_path):
    path = write_slice(tmp_path, nested_sequences)
    header, = dicom_headers._plain_headers(str(path))
    raw = path.read_bytes()

    stored = np.frombuffer(raw, "<i2", count=120, offset=header.pixels.offset).reshape(12, 10)

    np.testing.assert_array_equal(stored, pydicom.dcmread(path).pixel_array)
    assert header.pixels.length == 240 and header.pixels.offset + 240 == len(raw)
