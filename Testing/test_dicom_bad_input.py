"""Bad DICOM input: every failure names the file and the tag; one bad file never sinks a series."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pydicom
import pytest
from dicom_fixtures import ORIENTATIONS, stack_positions, write_phantom_series

from AlignSeriesLib.dicom import series as dicom_series
from AlignSeriesLib.errors import DicomError

FIRST_LPS = (0.0, 0.0, 0.0)


def one_good_series(folder, count=4) -> list:
    files, _ = write_phantom_series(folder, stack_positions(FIRST_LPS, ORIENTATIONS["axial"], np.arange(count) * 2.0))
    return files


def edited(path, **changes):
    """Rewrite a DICOM file with elements changed (value None deletes the element)."""
    dataset = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(DicomError, match=f"no files found in {tmp_path}"):
        dicom_series.scan_dicom(tmp_path)


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        dicom_series.scan_dicom(tmp_path / "nowhere")


def test_folder_without_dicom_files_names_them(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")

    with pytest.raises(DicomError, match=r"notes\.txt: not a DICOM file"):
        dicom_series.scan_dicom(tmp_path)


@pytest.mark.parametrize("keyword, tag", [("ImagePositionPatient", "(0020,0032)"),
                                          ("ImageOrientationPatient", "(0020,0037)"),
                                          ("PixelSpacing", "(0028,0030)")])
def test_missing_geometry_tag_is_named(tmp_path, keyword, tag):
    path = edited(one_good_series(tmp_path, 1)[0], **{keyword: None})

    with pytest.raises(DicomError, match=f"{path.name}: missing {keyword} {re.escape(tag)}"):
        dicom_series.scan_dicom(path)


@pytest.mark.parametrize("orientation, problem", [([1, 0, 0, 0, 0, 0], "zero-length vector"),
                                                  ([1, 0, 0, 0.3, 0.95, 0], "not a pair of orthogonal unit vectors")])
def test_unusable_orientation_is_named(tmp_path, orientation, problem):
    path = edited(one_good_series(tmp_path, 1)[0], ImageOrientationPatient=orientation)

    with pytest.raises(DicomError, match=rf"{path.name}: ImageOrientationPatient \(0020,0037\).*{problem}"):
        dicom_series.scan_dicom(path)


def test_pixel_data_shorter_than_rows_times_columns_is_named(tmp_path):
    path = one_good_series(tmp_path, 1)[0]
    dataset = pydicom.dcmread(path)
    dataset.PixelData = dataset.PixelData[:100]
    dataset.save_as(path, enforce_file_format=True)

    with pytest.raises(DicomError, match=rf"{path.name}: PixelData \(7FE0,0010\) holds 100 bytes.*Rows \(0028,0010\)"):
        dicom_series.scan_dicom(path)


def test_truncated_file_is_named(tmp_path):
    path = one_good_series(tmp_path, 1)[0]
    path.write_bytes(path.read_bytes()[:-300])

    with pytest.raises(DicomError, match=rf"{path.name}: truncated file: PixelData \(7FE0,0010\)"):
        dicom_series.scan_dicom(path)


def test_corrupt_header_is_named(tmp_path):
    path = one_good_series(tmp_path, 1)[0]
    data = bytearray(path.read_bytes())
    length_at = data.find(b"\x20\x00\x37\x00DS") + 6  # ImageOrientationPatient's 2-byte length
    data[length_at:length_at + 2] = b"\xf0\xff"  # now it swallows the rest of the file
    path.write_bytes(bytes(data))

    with pytest.raises(DicomError, match=rf"{path.name}: corrupt or truncated DICOM file: element \(0020,0037\) "
                                         r"declares 65520 bytes from offset \d+, but the file ends after \d+"):
        dicom_series.scan_dicom(path)


def test_non_image_objects_are_skipped_with_a_note(tmp_path):
    files = one_good_series(tmp_path)
    report = pydicom.dcmread(files[0])
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    report.SOPInstanceUID = pydicom.uid.generate_uid()
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(report, keyword)
    report.save_as(tmp_path / "report.dcm", enforce_file_format=True)

    result = dicom_series.scan_dicom(tmp_path)

    assert len(result.volumes) == 1 and result.volumes[0].geometry.dimensions[2] == 4
    assert [(p.endswith("report.dcm"), "not an image (SOP class Basic Text SR" in r) for p, r in result.skipped] == [
        (True, True)]


def test_one_bad_file_in_a_good_series_is_skipped_and_reported(tmp_path):
    files = one_good_series(tmp_path, 5)
    edited(files[4], ImagePositionPatient=None)

    result = dicom_series.scan_dicom(tmp_path)

    (volume,) = result.volumes
    assert volume.geometry.dimensions[2] == 4 and volume.files == [str(f) for f in files[:4]]
    assert result.skipped == [(str(files[4]), f"{files[4]}: missing ImagePositionPatient (0020,0032)")]
    assert [w.code for w in volume.warnings] == ["skipped_file"]
    assert files[4].name in volume.warnings[0].message


def test_spatial_registration_objects_are_collected_not_loaded(tmp_path):
    files = one_good_series(tmp_path, 2)
    registration = pydicom.dcmread(files[0])
    registration.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.1"
    del registration.PixelData
    registration.save_as(tmp_path / "reg.dcm", enforce_file_format=True)

    result = dicom_series.scan_dicom(tmp_path)

    assert result.registrations == [str(tmp_path / "reg.dcm")] and result.skipped == []


def test_scanning_and_reading_leave_every_input_byte_identical(tmp_path):
    one_good_series(tmp_path / "good", 5)
    (tmp_path / "junk.bin").write_bytes(b"junk")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}

    for volume in dicom_series.scan_dicom(tmp_path).volumes:
        volume.read_voxels()

    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_empty_non_dicom_and_truncated_files_in_a_series_folder_are_reported_grouped(tmp_path):
    files = one_good_series(tmp_path, 3)
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("scanned on Tuesday\n")
    (tmp_path / "cut.dcm").write_bytes(files[0].read_bytes()[:300])

    scan = dicom_series.scan_dicom(tmp_path)

    (volume,) = scan.volumes
    (skipped,) = [w.message for w in volume.warnings if w.code == "skipped_file"]  # the files that may be its slices
    assert volume.geometry.dimensions[2] == 3
    assert skipped.startswith("2 files found with this series but left out: 1 no pixel data, 1 empty")
    assert "empty.dcm: empty file (0 bytes)" in skipped and "cut.dcm: " in skipped and "cut short" in skipped
    assert scan.skipped_warning().message == "3 files skipped: 1 no pixel data, 1 empty, 1 not DICOM (cut.dcm; " \
                                             "empty.dcm; notes.txt)"
    assert {entry["kind"] for entry in scan.skipped_info()} == {"no pixel data", "empty", "not DICOM"}


def test_a_folder_of_only_unusable_files_is_an_error_naming_them(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image\n")

    with pytest.raises(DicomError, match=r"2 file\(s\) skipped: .*empty.dcm: empty file.*notes.txt: not a DICOM"):
        dicom_series.scan_dicom(tmp_path)


def test_a_series_whose_every_file_is_refused_is_reported_on_the_other_volumes(tmp_path):
    one_good_series(tmp_path / "good", 3)
    refused = one_good_series(tmp_path / "bad", 2)
    for path in refused:
        edited(path, SeriesInstanceUID=pydicom.uid.generate_uid(), ImagePositionPatient=None)

    (volume,) = dicom_series.scan_dicom(tmp_path).volumes

    (skipped,) = [w.message for w in volume.warnings if w.code == "skipped_file"]
    assert skipped.startswith("2 files found with this series but left out: 2 unusable header")
    assert skipped.count("missing ImagePositionPatient (0020,0032)") == 2


def test_classic_multi_frame_file_without_per_frame_positions_is_refused(tmp_path):
    files = one_good_series(tmp_path, 1)
    dataset = pydicom.dcmread(files[0])
    dataset.NumberOfFrames = 2
    dataset.PixelData = dataset.PixelData * 2
    dataset.save_as(files[0], enforce_file_format=True)

    with pytest.raises(DicomError, match=r"NumberOfFrames \(0028,0008\) is 2 but there is no "
                                         r"PerFrameFunctionalGroupsSequence .*unknown multi-frame packing"):
        dicom_series.scan_dicom(tmp_path)


@pytest.mark.parametrize("error", [TypeError("dcmread() got an unexpected keyword argument 'defer_size'"),
                                   AttributeError("module 'pydicom' has no attribute 'x'")])
def test_an_incompatible_pydicom_is_named_never_reported_as_a_corrupt_file(tmp_path, monkeypatch, error):
    """What an older pydicom (Slicer 5.10's 2.4) raises is about the library, not about the file."""
    write_phantom_series(tmp_path, stack_positions((0, 0, 0), ORIENTATIONS["axial"], [0.0, 2.0]))
    from AlignSeriesLib.dicom import headers as dicom_headers

    def incompatible(*args, **kwargs):
        raise error

    monkeypatch.setattr(dicom_headers.pydicom, "dcmread", incompatible)
    monkeypatch.setattr(dicom_headers, "_plain_headers", lambda path: None)  # plain files never call dcmread
    with pytest.raises(DicomError) as raised:
        dicom_series.scan_dicom(tmp_path)
    message = str(raised.value)
    assert "corrupt" not in message and f"pydicom {pydicom.__version__} could not read" in message
    assert "needs pydicom >= 3" in message and type(error).__name__ in message
