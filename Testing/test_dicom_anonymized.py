"""Anonymized copies of a real series: blank or removed UIDs never change what is loaded, nor where.

The truth is the untouched series (../shared/data/dicom, else pydicom's bundled CT): each copy blanks or
removes one identifier (then all of them at once, and the file meta's copy of the SOPInstanceUID too) and
must give the same geometry and the same voxels, with one warning per substituted identifier naming the
tag and the number of files; substituted UIDs are valid, unique and the same on every run, and exports use
them. Two unknown frames of reference are never taken for one.
"""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DICOM, run
from pydicom.uid import UID

from AlignSeriesLib.alignment import frame_of_reference_transform
from AlignSeriesLib.dicom import series as dicom_series
from AlignSeriesLib.errors import FrameOfReferenceError

UID_KEYWORDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID")
TAGS = {"SOPInstanceUID": "(0008,0018)", "SeriesInstanceUID": "(0020,000E)", "StudyInstanceUID": "(0020,000D)",
        "FrameOfReferenceUID": "(0020,0052)"}


def source_files() -> list:
    """A real, regular single-series folder: the Philips CT of ../shared (28 files), or pydicom's CT_small."""
    folder = SHARED_DICOM / "ct_philips_axial" / "dicom"
    if folder.is_dir():
        return sorted(p for p in folder.iterdir() if p.is_file())
    return [pydicom.data.get_testdata_file("CT_small.dcm")]


def anonymized_copy(folder, keywords, how: str, *, drop_meta_uid: bool = False) -> list:
    """Copies of the source files with ``keywords`` blanked (``how="blank"``) or removed (``"remove"``)."""
    folder.mkdir()
    copies = []
    for path in source_files():
        dataset = pydicom.dcmread(path)
        for keyword in keywords:
            if how == "blank":
                setattr(dataset, keyword, "")
            elif keyword in dataset:
                delattr(dataset, keyword)
        if drop_meta_uid:
            del dataset.file_meta.MediaStorageSOPInstanceUID
        copy = folder / pathlib_name(path)
        dataset.save_as(copy, enforce_file_format=False)
        copies.append(copy)
    return copies


def pathlib_name(path) -> str:
    return str(path).rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def original():
    (volume,) = dicom_series.scan_dicom([str(p) for p in source_files()]).volumes
    return volume, volume.read_voxels()


def assert_same_volume(volume, original) -> None:
    truth, truth_voxels = original
    np.testing.assert_array_equal(volume.geometry.ijk_to_lps, truth.geometry.ijk_to_lps)
    assert volume.geometry.dimensions == truth.geometry.dimensions
    assert [pathlib_name(p) for p in volume.files] == [pathlib_name(p) for p in truth.files]
    np.testing.assert_array_equal(volume.read_voxels(), truth_voxels)


@pytest.mark.parametrize("how", ["blank", "remove"])
@pytest.mark.parametrize("keyword", UID_KEYWORDS)
def test_one_missing_uid_changes_neither_geometry_nor_pixels(tmp_path, original, keyword, how):
    anonymized_copy(tmp_path / "copy", [keyword], how)

    (volume,) = dicom_series.scan_dicom(tmp_path / "copy").volumes

    assert_same_volume(volume, original)
    count = len(source_files())
    messages = [w.message for w in volume.warnings if w.code in ("substituted_uid", "unknown_frame_of_reference")]
    assert len(messages) == 1, volume.warnings
    assert messages[0].startswith(f"{keyword} {TAGS[keyword]} is empty or missing in {count} of {count} files")
    truth = original[0]
    if keyword == "SOPInstanceUID":  # the file meta keeps it
        assert volume.sop_instance_uids == truth.sop_instance_uids
        assert "MediaStorageSOPInstanceUID (0002,0003)" in messages[0]
    if keyword == "FrameOfReferenceUID":
        assert volume.frame_of_reference_uid is None
        assert "unknown" in messages[0]
    else:
        assert volume.frame_of_reference_uid == truth.frame_of_reference_uid


def test_every_uid_blank_at_once_gives_stable_unique_derived_uids(tmp_path, original):
    anonymized_copy(tmp_path / "copy", UID_KEYWORDS, "blank", drop_meta_uid=True)

    (volume,) = dicom_series.scan_dicom(tmp_path / "copy").volumes
    (again,) = dicom_series.scan_dicom(tmp_path / "copy").volumes

    assert_same_volume(volume, original)
    uids = volume.sop_instance_uids
    assert uids == again.sop_instance_uids and len(set(uids)) == len(uids)
    assert volume.series_instance_uid == again.series_instance_uid
    assert volume.study_instance_uid == again.study_instance_uid
    for uid in [*uids, volume.series_instance_uid, volume.study_instance_uid]:
        assert UID(uid).is_valid and uid.startswith("2.25."), uid
    assert volume.frame_of_reference_uid is None
    codes = sorted(w.code for w in volume.warnings if w.code in ("substituted_uid", "unknown_frame_of_reference"))
    assert codes == ["substituted_uid"] * 3 + ["unknown_frame_of_reference"]
    sop_warning = next(w.message for w in volume.warnings if w.message.startswith("SOPInstanceUID"))
    assert "derived from the file's bytes" in sop_warning


def test_derived_uids_follow_the_content_not_the_path(tmp_path):
    anonymized_copy(tmp_path / "copy", ["SOPInstanceUID"], "remove", drop_meta_uid=True)
    shutil.copytree(tmp_path / "copy", tmp_path / "moved elsewhere")

    (volume,) = dicom_series.scan_dicom(tmp_path / "copy").volumes
    (moved,) = dicom_series.scan_dicom(tmp_path / "moved elsewhere").volumes

    assert moved.sop_instance_uids == volume.sop_instance_uids
    assert len(set(volume.sop_instance_uids)) == len(volume.files)


def test_empty_series_uid_groups_files_by_the_other_series_keys(tmp_path):
    files = anonymized_copy(tmp_path / "copy", ["SeriesInstanceUID"], "blank")
    if len(files) < 2:
        pytest.skip("needs a real series of several files (../shared/data/dicom)")
    other = pydicom.dcmread(files[-1])
    other.SeriesNumber, other.SeriesDescription = 77, "another series"
    other.save_as(files[-1])

    volumes = dicom_series.scan_dicom(tmp_path / "copy").volumes

    assert sorted(len(v.files) for v in volumes) == [1, len(files) - 1]
    assert len({v.series_instance_uid for v in volumes}) == 2


def test_the_frame_of_reference_gate_refuses_two_unknown_frames(tmp_path, capsys):
    anonymized_copy(tmp_path / "a", ["FrameOfReferenceUID"], "blank")
    anonymized_copy(tmp_path / "b", ["FrameOfReferenceUID"], "remove")

    with pytest.raises(FrameOfReferenceError, match="Alternatives: corresponding landmarks"):
        frame_of_reference_transform(None, None)
    status, _, err = run(capsys, "transform", "--fixed", tmp_path / "a", "--moving", tmp_path / "b",
                         "--output", tmp_path / "t.json")

    assert status == 2 and "no FrameOfReferenceUID" in err and "--mode centers" in err, err
    assert not (tmp_path / "t.json").exists()
    status, out, _ = run(capsys, "transform", "--fixed", tmp_path / "a", "--moving", tmp_path / "b",
                         "--mode", "centers", "--output", tmp_path / "t.json")
    assert status == 0, out


def test_exports_from_an_anonymized_reference_name_the_uids_used(tmp_path, capsys):
    files = anonymized_copy(tmp_path / "ref", UID_KEYWORDS, "blank", drop_meta_uid=True)
    (volume,) = dicom_series.scan_dicom(tmp_path / "ref").volumes

    status, _, err = run(capsys, "resample", "--input", tmp_path / "ref", "--reference", tmp_path / "ref",
                         "--output", f"{tmp_path / 'out'}/", "--png", tmp_path / "png", "--interpolation", "nearest")

    assert status == 0, err
    with open(tmp_path / "png" / "index.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    assert [row["sop_instance_uid"] for row in rows] == volume.sop_instance_uids
    assert all(row["sop_instance_uid"] in row["png"] for row in rows)
    written = [pydicom.dcmread(path) for path in sorted((tmp_path / "out").glob("*.dcm"))]
    assert len(written) == len(files)
    referenced = {d.SourceImageSequence[0].ReferencedSOPInstanceUID if "SourceImageSequence" in d
                  else d.ReferencedImageSequence[0].ReferencedSOPInstanceUID for d in written}
    assert referenced == set(volume.sop_instance_uids)
    assert {d.StudyInstanceUID for d in written} == {volume.study_instance_uid}
    frames = {d.FrameOfReferenceUID for d in written}
    assert len(frames) == 1 and UID(frames.pop()).is_valid
    (reread,) = dicom_series.scan_dicom(tmp_path / "out").volumes
    np.testing.assert_allclose(reread.geometry.ijk_to_lps, volume.geometry.ijk_to_lps, atol=1e-4)


def test_a_seg_on_an_anonymized_reference_references_the_uids_used(tmp_path):
    highdicom = pytest.importorskip("highdicom")
    from AlignSeriesLib.dicom import seg as dicom_seg

    anonymized_copy(tmp_path / "ref", UID_KEYWORDS, "remove", drop_meta_uid=True)
    (volume,) = dicom_series.scan_dicom(tmp_path / "ref").volumes
    labels = np.zeros(volume.geometry.shape, np.uint8)
    labels[:, 10:20, 10:20] = 1

    dicom_seg.write_seg(labels, volume.slices, tmp_path / "mask.seg.dcm")

    seg = highdicom.seg.segread(tmp_path / "mask.seg.dcm")
    assert seg.StudyInstanceUID == volume.study_instance_uid
    referenced = {item.ReferencedSOPInstanceUID for series in seg.ReferencedSeriesSequence
                  for item in series.ReferencedInstanceSequence}
    assert referenced == set(volume.sop_instance_uids)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.series_instance_uid
    assert UID(seg.FrameOfReferenceUID).is_valid
