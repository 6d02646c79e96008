"""DICOM SEG out and in (AlignSeriesLib.dicom.seg), checked by dciodvfy and two independent readers.

Every SEG written here is validated by ``dciodvfy`` (Debian package dicom3tools, installed by the
``dciodvfy`` fixture where apt is available) and read back by highdicom (per reference instance or
frame, independent of any grid) and by dcmqi's ``segimage2itkimage`` (an ITK image, sampled at each
reference pixel centre computed from the DICOM headers). The label maps are analytic functions of
the patient (LPS) coordinates of each reference pixel, so that copies of a series in another file
order carry the same labels.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DICOM

from AlignSeriesLib.dicom import seg as dicom_seg
from AlignSeriesLib.dicom import seg_read as dicom_seg_read
from AlignSeriesLib.dicom import series as dicom_series
from AlignSeriesLib.dicom.stack import SliceFrame
from AlignSeriesLib.errors import DicomError
from AlignSeriesLib.label_table import Code, Label, LabelTable

highdicom = pytest.importorskip("highdicom")

REAL_REFERENCES = ("ct_ge_tilt_varspacing", "mr_siemens_obl_fmap", "ct_philips_axial", "mr_philips_enh_fmap")
DCIODVFY_2022_LABELMAP_ERRORS = (
    "Error - Information Object Not found",
    "Error - SegmentNumber not monotonically increasing from one by one - have SegmentSequence item number 1 "
    "(from one) with SegmentNumber of 0",
)
CT2_FOLDER = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "77654033" / "CT2"


# -- the validators -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """Path of dciodvfy; installs dicom3tools with apt when missing and running as root, else skips saying why."""
    found = shutil.which("dciodvfy")
    if found:
        return found
    import os

    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed and apt-get cannot install it here")
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
    policy = subprocess.run(["apt-cache", "policy", "dicom3tools"], capture_output=True, text=True).stdout
    if "Candidate: (none)" in policy or not policy.strip():
        pytest.skip("dicom3tools is not available from this machine's apt sources")
    subprocess.run(["apt-get", "install", "-y", "-qq", "dicom3tools"], capture_output=True, check=False,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("dciodvfy")
    if not found:
        pytest.skip("apt-get install dicom3tools did not provide dciodvfy")
    return found


def dciodvfy_errors(tool: str, path: Path) -> list[str]:
    result = subprocess.run([tool, str(path)], capture_output=True, text=True)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def segimage2itkimage() -> str:
    found = shutil.which("segimage2itkimage") or str(Path(sys.executable).parent / "segimage2itkimage")
    if not Path(found).exists():
        pytest.skip("dcmqi's segimage2itkimage is not installed (pip install dcmqi)")
    return found


def pixel_centres_lps(header) -> np.ndarray:
    """(Rows, Columns, 3) LPS centre of each pixel of a slice, from its own header."""
    frame = SliceFrame.from_header(header.orientation, header.pixel_spacing)
    j, i = np.mgrid[0:header.rows, 0:header.columns]
    return (header.position_lps + i[..., None] * frame.row_lps * frame.spacing_ij[0]
            + j[..., None] * frame.column_lps * frame.spacing_ij[1])


def dcmqi_label_map(seg_path: Path, folder: Path):
    """dcmqi's merged label map of a SEG, as a SimpleITK image (LPS)."""
    sitk = pytest.importorskip("SimpleITK")
    folder.mkdir()
    result = subprocess.run([segimage2itkimage(), "--inputDICOM", str(seg_path), "--outputDirectory", str(folder),
                             "-t", "nrrd", "--mergeSegments"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = sorted(folder.glob("*.nrrd"))
    output = result.stdout + result.stderr
    assert len(outputs) == 1 and "ERROR" not in output, output[-800:]
    return sitk.ReadImage(str(outputs[0]))


def sample_itk(image, points_lps: np.ndarray) -> np.ndarray:
    """Nearest-voxel values of a SimpleITK image at LPS points (0 outside)."""
    array = pytest.importorskip("SimpleITK").GetArrayFromImage(image)
    direction = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    index = np.linalg.solve(direction, (points_lps.reshape(-1, 3) - np.array(image.GetOrigin())).T).T
    index = np.rint(index).astype(int)
    inside = np.all((index >= 0) & (index < np.array(image.GetSize())), axis=1)
    values = np.zeros(len(index), dtype=array.dtype)
    values[inside] = array[index[inside, 2], index[inside, 1], index[inside, 0]]
    return values.reshape(points_lps.shape[:-1])


def sampled_at_reference_pixels(back, series) -> np.ndarray:
    """Our reader's label map (nearest voxel) at every reference pixel centre, ``[k, j, i]`` of the reference."""
    centres = np.array([pixel_centres_lps(header) for header in series.slices])
    index = np.rint(back.geometry.world_to_ijk(centres.reshape(-1, 3) * [-1, -1, 1])).astype(int)
    inside = np.all((index >= 0) & (index < back.geometry.dimensions), axis=1)
    sampled = np.zeros(len(index), dtype=np.uint16)
    sampled[inside] = back.array[index[inside, 2], index[inside, 1], index[inside, 0]]
    return sampled.reshape(centres.shape[:-1])


def highdicom_slices(seg_path: Path, slices) -> np.ndarray:
    """highdicom's label map per reference slice (by SOPInstanceUID and frame), segment numbers combined."""
    seg = highdicom.seg.segread(seg_path)
    planes = []
    for header in slices:
        if header.frame is None:
            plane = seg.get_pixels_by_source_instance([header.sop_instance_uid], combine_segments=True,
                                                      assert_missing_frames_are_empty=True)[0]
        else:
            plane = seg.get_pixels_by_source_frame(header.sop_instance_uid, [header.frame], combine_segments=True,
                                                   assert_missing_frames_are_empty=True)[0]
        planes.append(plane)
    return np.stack(planes)


# -- reference series and label maps --------------------------------------------------------------


def analytic_labels(slices, count: int = 3) -> np.ndarray:
    """Labels 1..count in nested spheres around the series' centre (LPS), one slab-shaped label across them."""
    centres = np.array([pixel_centres_lps(header) for header in slices])
    middle = centres.reshape(-1, 3).mean(axis=0)
    extent = np.ptp(centres.reshape(-1, 3), axis=0).max() / 2
    distance = np.linalg.norm(centres - middle, axis=-1)
    labels = np.zeros(distance.shape, dtype=np.uint16)
    for label in range(1, count + 1):
        labels[distance < extent * (0.5 - 0.1 * (label - 1))] = label
    return labels


def reference_series(folder) -> dicom_series.DicomVolume:
    return dicom_series.scan_dicom([folder]).volumes[0]


def real_folder(name: str) -> Path:
    folder = SHARED_DICOM / name / "dicom"
    if not folder.is_dir():
        pytest.skip(f"real DICOM data not available: {folder} is absent")
    return folder


def unsorted_copy(folder: Path, target: Path) -> Path:
    """The series under shuffled file names with shuffled InstanceNumbers."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    numbers = list(range(1, len(files) + 1))
    random.Random(3).shuffle(numbers)
    target.mkdir()
    for path, number in zip(files, numbers, strict=True):
        dataset = pydicom.dcmread(path)
        dataset.InstanceNumber = number
        dataset.save_as(target / f"{random.Random(number).getrandbits(40):x}.dcm")
    return target


def anonymized_copy(folder: Path, target: Path) -> Path:
    """The series without patient and study identity or SliceThickness, flagged as de-identified."""
    target.mkdir()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        dataset = pydicom.dcmread(path)
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "AccessionNumber", "StudyID", "ReferringPhysicianName", "SliceThickness",
                        "DeidentificationMethod"):
            if keyword in dataset:
                delattr(dataset, keyword)
        dataset.PatientIdentityRemoved = "YES"
        dataset.save_as(target / path.name)
    return target


def check_round_trip(series, seg_path: Path, expected: np.ndarray, tmp_path: Path, tool: str) -> dict:
    """dciodvfy, highdicom and dcmqi against ``expected`` (segment numbers on the reference slices)."""
    errors = dciodvfy_errors(tool, seg_path)
    by_highdicom = highdicom_slices(seg_path, series.slices)
    report = {"dciodvfy_errors": errors, "highdicom_differing": int(np.count_nonzero(by_highdicom != expected))}
    assert report == {"dciodvfy_errors": [], "highdicom_differing": 0}, report
    if series.report.is_tilted:  # dcmqi builds an orthogonal volume: it refuses the sheared frames of a tilt
        with pytest.raises(AssertionError, match="outside image geometry"):
            dcmqi_label_map(seg_path, tmp_path / f"dcmqi_{seg_path.stem}")
        return report
    image = dcmqi_label_map(seg_path, tmp_path / f"dcmqi_{seg_path.stem}")
    by_dcmqi = np.stack([sample_itk(image, pixel_centres_lps(header)) for header in series.slices])
    assert int(np.count_nonzero(by_dcmqi != expected)) == 0
    return report


# -- writing on real references ------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_REFERENCES)
def test_seg_on_real_reference_reads_back_exactly(name, tmp_path, dciodvfy):
    series = reference_series(real_folder(name))
    labels = analytic_labels(series.slices)
    written = dicom_seg.write_seg(labels, series.slices, tmp_path / "mask.seg.dcm", algorithm=("TestNet", "1.0"))
    check_round_trip(series, written.path, labels, tmp_path, dciodvfy)
    present = {(k, label) for k in range(len(labels)) for label in np.unique(labels[k]) if label}
    assert written.frames == len(present)  # one frame per slice and segment present, no empty frame
    assert [segment.number for segment in written.segments] == [1, 2, 3]
    dataset = pydicom.dcmread(written.path)
    reference = pydicom.dcmread(series.slices[0].path, stop_before_pixels=True)
    assert dataset.StudyInstanceUID == reference.StudyInstanceUID
    assert dataset.FrameOfReferenceUID == reference.FrameOfReferenceUID
    assert dataset.PatientID == reference.get("PatientID", "")
    assert dataset.SeriesInstanceUID != reference.SeriesInstanceUID
    assert dataset.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert dataset.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "TestNet"


@pytest.mark.parametrize("copy", [unsorted_copy, anonymized_copy], ids=["unsorted", "anonymized"])
def test_seg_on_unsorted_and_anonymized_copies(copy, tmp_path, dciodvfy):
    series = reference_series(copy(real_folder("ct_ge_tilt_varspacing"), tmp_path / "reference"))
    labels = analytic_labels(series.slices)
    written = dicom_seg.write_seg(labels, series.slices, tmp_path / "mask.seg.dcm")
    check_round_trip(series, written.path, labels, tmp_path, dciodvfy)
    dataset = pydicom.dcmread(written.path)
    per_frame = [(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID,
                  [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
                 for item in dataset.PerFrameFunctionalGroupsSequence]
    by_uid = {header.sop_instance_uid: header.position_lps for header in series.slices}
    for uid, position in per_frame:  # each frame sits on the plane of the slice it references
        np.testing.assert_allclose(position, by_uid[uid], atol=1e-4)
    assert dataset.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"


def test_seg_on_pydicom_ct2_series_with_a_gap(tmp_path, dciodvfy):
    series = reference_series(CT2_FOLDER)
    labels = analytic_labels(series.slices, count=1)
    written = dicom_seg.write_seg(labels, series.slices, tmp_path / "ct2.seg.dcm")
    errors = dciodvfy_errors(dciodvfy, written.path)
    assert errors == []
    np.testing.assert_array_equal(highdicom_slices(written.path, series.slices), labels)


def test_labelmap_type_keeps_sparse_label_values(tmp_path, dciodvfy):
    series = reference_series(real_folder("mr_siemens_obl_fmap"))
    labels = analytic_labels(series.slices) * 1000  # 1000, 2000, 3000: not 1..N
    written = dicom_seg.write_seg(labels, series.slices, tmp_path / "map.seg.dcm", seg_type="labelmap")
    assert written.seg_type == "LABELMAP" and not [w for w in written.warnings if w.code == "seg_segments_renumbered"]
    assert pydicom.dcmread(written.path).SOPClassUID == dicom_seg.LABEL_MAP_SEGMENTATION_SOP_CLASS
    # Debian's dicom3tools (2022) predates Label Map Segmentation Storage (2024): it does not know the IOD, and
    # checks the segment numbers by the BINARY rule (1, 2, …), where a label map's background segment is 0
    assert set(dciodvfy_errors(dciodvfy, written.path)) <= set(DCIODVFY_2022_LABELMAP_ERRORS)
    np.testing.assert_array_equal(highdicom_slices(written.path, series.slices), labels)
    back = dicom_seg_read.read_seg(written.path)
    assert sorted(segment.label for segment in back.segments) == [1000, 2000, 3000]


def test_binary_type_renumbers_sparse_labels_and_says_so(tmp_path, dciodvfy):
    series = reference_series(real_folder("mr_siemens_obl_fmap"))
    labels = analytic_labels(series.slices)
    sparse = np.choose(labels, [0, 5, 17, 65535]).astype(np.uint16)
    written = dicom_seg.write_seg(sparse, series.slices, tmp_path / "sparse.seg.dcm")
    assert [(s.number, s.label) for s in written.segments] == [(1, 5), (2, 17), (3, 65535)]
    assert "seg_segments_renumbered" in {w.code for w in written.warnings}
    assert dciodvfy_errors(dciodvfy, written.path) == []
    np.testing.assert_array_equal(highdicom_slices(written.path, series.slices), labels)


def test_label_table_names_and_codes_the_segments(tmp_path):
    series = reference_series(real_folder("mr_siemens_obl_fmap"))
    labels = analytic_labels(series.slices, count=2)
    table = LabelTable([Label(1, "liver", Code("123037004", "SCT", "Anatomical Structure"),
                              Code("10200004", "SCT", "Liver"), (221, 130, 101)),
                        Label(2, "spleen", None, None, None)])
    written = dicom_seg.write_seg(labels, series.slices, tmp_path / "named.seg.dcm", labels=table)
    items = pydicom.dcmread(written.path).SegmentSequence
    assert [item.SegmentLabel for item in items] == ["liver", "spleen"]
    assert items[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert items[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == dicom_seg.GENERIC_CODE.value
    assert not [w for w in written.warnings if w.code == "seg_generic_labels"]
    back = dicom_seg_read.read_seg(written.path)
    assert [(s.name, s.color) for s in back.segments][0][0] == "liver"
    assert np.abs(np.subtract(back.segments[0].color, (221, 130, 101))).max() <= 1
    unnamed = dicom_seg.write_seg(labels, series.slices, tmp_path / "unnamed.seg.dcm")
    assert [item.SegmentLabel for item in pydicom.dcmread(unnamed.path).SegmentSequence] == ["Segment 1", "Segment 2"]
    assert "seg_generic_labels" in {w.code for w in unnamed.warnings}


def test_all_frames_kept_when_asked(tmp_path):
    series = reference_series(real_folder("mr_siemens_obl_fmap"))
    labels = analytic_labels(series.slices, count=2)
    written = dicom_seg.write_seg(labels, series.slices, tmp_path / "all.seg.dcm", omit_empty_frames=False)
    assert written.frames == 2 * len(series.slices)


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "message"), [
    (np.full((2, 2), -1.0), "negative values are not labels"),
    (np.full((2, 2), 1.5), "fractional"),
    (np.full((2, 2), 70000.0), "0..65535"),
    (np.zeros((2, 2)), "holds no label"),
])
def test_bad_label_maps_are_refused(values, message, tmp_path):
    series = reference_series(real_folder("mr_siemens_obl_fmap"))
    labels = np.zeros((len(series.slices), series.slices[0].rows, series.slices[0].columns))
    labels[3, :2, :2] = values
    with pytest.raises(DicomError, match=message):
        dicom_seg.write_seg(labels, series.slices, tmp_path / "bad.seg.dcm")
    assert not (tmp_path / "bad.seg.dcm").exists()


def test_label_map_off_the_reference_grid_is_refused(tmp_path):
    series = reference_series(real_folder("mr_siemens_obl_fmap"))
    with pytest.raises(DicomError, match="resample onto the reference's grid first"):
        dicom_seg.write_seg(np.ones((3, 64, 64)), series.slices, tmp_path / "bad.seg.dcm")
    with pytest.raises(DicomError, match="--seg-type"):
        dicom_seg.write_seg(np.ones((33, 64, 64)), series.slices, tmp_path / "bad.seg.dcm", seg_type="fractional")


# -- reading --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ct_philips_axial", "mr_siemens_obl_fmap", "mr_philips_enh_fmap"])
def test_read_seg_places_labels_on_the_reference_pixels(name, tmp_path):
    """Our reader's grid, sampled at every reference pixel centre, gives back the label map (gaps filled)."""
    series = reference_series(real_folder(name))
    labels = analytic_labels(series.slices)
    written = dicom_seg.write_seg(labels, series.slices, tmp_path / "mask.seg.dcm")
    back = dicom_seg_read.read_seg(written.path)
    assert not back.regularized and back.referenced_series_uids == [series.series_instance_uid]
    assert back.frames == written.frames and back.frame_of_reference_uid == series.frame_of_reference_uid
    assert int(np.count_nonzero(sampled_at_reference_pixels(back, series) != labels)) == 0


def test_read_seg_regularizes_uneven_frames_and_warns(tmp_path):
    series = reference_series(real_folder("ct_ge_tilt_varspacing"))
    written = dicom_seg.write_seg(analytic_labels(series.slices), series.slices, tmp_path / "mask.seg.dcm")
    back = dicom_seg_read.read_seg(written.path)
    assert back.regularized and "regularized" in {w.code for w in back.warnings}
    assert set(np.unique(back.array)) == {0, 1, 2, 3}


def test_read_pydicom_liver_seg():
    path = pydicom.data.get_testdata_file("liver_1frame.dcm")
    dataset = pydicom.dcmread(path)
    back = dicom_seg_read.read_seg(path)
    assert back.seg_type == dataset.SegmentationType
    assert back.array.shape == (1, dataset.Rows, dataset.Columns)
    number = int(dataset.SegmentSequence[0].SegmentNumber)
    np.testing.assert_array_equal(back.array[0] == number, dataset.pixel_array.reshape(back.array.shape[1:]) > 0)
    assert back.segments[0].name == dataset.SegmentSequence[0].SegmentLabel
    assert dicom_seg_read.is_seg_file(path)
    assert not dicom_seg_read.is_seg_file(pydicom.data.get_testdata_file("CT_small.dcm"))


def test_overlapping_segments_are_refused_unless_chosen(tmp_path):
    series = reference_series(real_folder("mr_siemens_obl_fmap"))
    labels = analytic_labels(series.slices, count=2)
    stacked = np.stack([labels >= 1, labels == 2], axis=-1).astype(np.uint8)  # segment 2 lies inside segment 1
    hd = highdicom
    sources = dicom_seg._source_images(series.slices)
    seg = hd.seg.Segmentation(
        sources, stacked, "BINARY",
        [hd.seg.SegmentDescription(n, f"s{n}", _code(), _code(), "MANUAL") for n in (1, 2)],
        hd.UID(), 1, hd.UID(), 1, "test", "test", "1", "1")
    seg.save_as(tmp_path / "overlap.seg.dcm")
    with pytest.raises(DicomError, match=r"segments 1 and 2 \(\d+ pixels\).*--segments"):
        dicom_seg_read.read_seg(tmp_path / "overlap.seg.dcm")
    only_two = dicom_seg_read.read_seg(tmp_path / "overlap.seg.dcm", segments=[2])
    assert [s.number for s in only_two.segments] == [2] and set(np.unique(only_two.array)) == {0, 2}
    with pytest.raises(DicomError, match="asks for"):
        dicom_seg_read.read_seg(tmp_path / "overlap.seg.dcm", segments=[7])


def _code():
    from pydicom.sr.codedict import codes

    return codes.SCT.Tissue


# -- the whole job through the command line -------------------------------------------------------


def ai_mask_nifti(series, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An AI-style NIfTI mask of ``series`` in its own axis order (RAS, axes permuted and flipped).

    Returns the NIfTI's data and its voxel-to-RAS affine.
    """
    nibabel = pytest.importorskip("nibabel")
    labels_kji = analytic_labels(series.slices)
    data = np.transpose(labels_kji, (1, 0, 2))[::-1, :, ::-1]  # NIfTI axes: (j reversed, k, i reversed)
    count_i, count_j, _ = series.geometry.dimensions
    data_to_ijk = np.array([[0, 0, -1, count_i - 1], [-1, 0, 0, count_j - 1], [0, 1, 0, 0], [0, 0, 0, 1]], float)
    affine = series.geometry.ijk_to_ras @ data_to_ijk
    nibabel.save(nibabel.Nifti1Image(np.ascontiguousarray(data).astype(np.uint8), affine), path)
    return data, affine


def mask_at_reference_pixels(data: np.ndarray, affine: np.ndarray, slices) -> np.ndarray:
    """The mask's value at each reference pixel centre (from the DICOM headers), nearest voxel."""
    centres_lps = np.array([pixel_centres_lps(header) for header in slices])
    centres_ras = centres_lps * [-1, -1, 1]
    index = np.rint(np.linalg.solve(affine[:3, :3], (centres_ras.reshape(-1, 3) - affine[:3, 3]).T).T).astype(int)
    inside = np.all((index >= 0) & (index < data.shape), axis=1)
    values = np.zeros(len(index), dtype=np.uint16)
    values[inside] = data[index[inside, 0], index[inside, 1], index[inside, 2]]
    return values.reshape(centres_lps.shape[:-1])


@pytest.mark.parametrize("name", ["mr_siemens_obl_fmap", "ct_philips_axial"])
def test_ai_nifti_mask_to_seg_on_the_original_dicom_read_back_by_dcmqi(name, tmp_path, capsys, dciodvfy):
    from conftest import run

    folder = real_folder(name)
    series = reference_series(folder)
    data, affine = ai_mask_nifti(series, tmp_path / "mask.nii.gz")
    table = tmp_path / "labels.csv"
    table.write_text("value,name,category,type\n1,outer,123037004,10200004\n2,middle,123037004,78961009\n"
                     "3,inner,49755003,4147007:Mass\n", encoding="utf-8")
    status, out, err = run(capsys, "resample", "--input", tmp_path / "mask.nii.gz", "--reference", folder,
                           "--labelmap", "--seg", tmp_path / "mask.seg.dcm", "--labels", table,
                           "--algorithm", "TotalSegmentator,2.4", "--json", "--output", tmp_path / "on_ct.nii.gz",
                           "--png", tmp_path / "png")
    assert status == 0, err
    sidecar = json.loads((tmp_path / "on_ct.labels.json").read_text())  # the names travel beside the voxels
    assert [(entry["value"], entry["name"]) for entry in sidecar["labels"]] == [(1, "outer"), (2, "middle"),
                                                                               (3, "inner")]
    assert str(tmp_path / "on_ct.labels.json") in json.loads(out)["output"]
    with open(tmp_path / "png" / "index.csv", newline="") as index:
        rows = list(csv.DictReader(index))
    expected_names = {1: "outer", 2: "middle", 3: "inner"}
    for row in rows:  # each slice's labels, named
        k = int(row["k"])
        present = [int(v) for v in np.unique(mask_at_reference_pixels(data, affine, series.slices[k:k + 1])) if v]
        assert row["labels"] == ";".join(f"{v}={expected_names[v]}" for v in present)
    seg_path = tmp_path / "mask.seg.dcm"
    assert dciodvfy_errors(dciodvfy, seg_path) == []
    expected = mask_at_reference_pixels(data, affine, series.slices)
    image = dcmqi_label_map(seg_path, tmp_path / "dcmqi")
    by_dcmqi = np.stack([sample_itk(image, pixel_centres_lps(header)) for header in series.slices])
    assert int(np.count_nonzero(by_dcmqi != expected)) == 0
    assert int(np.count_nonzero(highdicom_slices(seg_path, series.slices) != expected)) == 0
    items = pydicom.dcmread(seg_path).SegmentSequence
    assert [item.SegmentLabel for item in items] == ["outer", "middle", "inner"]
    assert items[2].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Mass"
    assert items[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion == "2.4"
    status, out, err = run(capsys, "info", seg_path, "--json")
    assert status == 0, err
    described = json.loads(out)["volumes"][0]
    assert [s["name"] for s in described["segments"]] == ["outer", "middle", "inner"]
    assert described["referenced_series_uids"] == [series.series_instance_uid]


def test_seg_input_resampled_onto_its_reference_and_written_again(tmp_path, capsys, dciodvfy):
    """A SEG read back (--input seg.dcm) onto its own reference gives the same labels, names kept."""
    from conftest import run

    folder = real_folder("mr_siemens_obl_fmap")
    series = reference_series(folder)
    labels = analytic_labels(series.slices)
    table = LabelTable([Label(1, "one"), Label(2, "two"), Label(3, "three")])
    (tmp_path / "in").mkdir()  # a DICOM file's folder is an input folder: outputs go elsewhere
    first = dicom_seg.write_seg(labels, series.slices, tmp_path / "in" / "first.seg.dcm", labels=table)
    status, out, err = run(capsys, "resample", "--input", first.path, "--reference", folder,
                           "--seg", tmp_path / "second.seg.dcm", "--output", tmp_path / "second.nrrd")
    assert status == 0, err
    assert dciodvfy_errors(dciodvfy, tmp_path / "second.seg.dcm") == []
    np.testing.assert_array_equal(highdicom_slices(tmp_path / "second.seg.dcm", series.slices), labels)
    assert [item.SegmentLabel for item in pydicom.dcmread(tmp_path / "second.seg.dcm").SegmentSequence] == [
        "one", "two", "three"]
    assert (tmp_path / "second.nrrd").is_file()


def test_cli_refusals(tmp_path, capsys):
    from conftest import run

    folder = real_folder("mr_siemens_obl_fmap")
    status, _, err = run(capsys, "resample", "--input", folder, "--reference", folder, "--seg", tmp_path / "x.dcm")
    assert status == 2 and "a DICOM SEG holds a label map" in err and not (tmp_path / "x.dcm").exists()
    nrrd = tmp_path / "ref.nrrd"
    status, _, err = run(capsys, "resample", "--input", folder, "--reference", folder, "--output", nrrd)
    assert status == 0, err
    status, _, err = run(capsys, "resample", "--input", nrrd, "--reference", nrrd, "--labelmap",
                         "--seg", tmp_path / "y.dcm")
    assert status == 2 and "aligned with a DICOM reference series" in err
    status, _, err = run(capsys, "resample", "--input", folder, "--reference", folder)
    assert status == 2 and "--seg" in err


def test_api_load_seg_resample_and_write_seg(tmp_path, dciodvfy):
    import alignseries

    folder = real_folder("mr_siemens_obl_fmap")
    series = reference_series(folder)
    labels = analytic_labels(series.slices)
    table = LabelTable([Label(1, "one"), Label(2, "two"), Label(3, "three")])
    first = dicom_seg.write_seg(labels, series.slices, tmp_path / "first.seg.dcm", labels=table)
    mask = alignseries.load(first.path)
    assert mask.labelmap
    reference = alignseries.load(folder)
    written = alignseries.write_seg(alignseries.resample(mask, reference), reference, tmp_path / "api.seg.dcm",
                                    seg_type="labelmap", algorithm=("net", "1"))
    assert set(dciodvfy_errors(dciodvfy, written)) <= set(DCIODVFY_2022_LABELMAP_ERRORS)
    np.testing.assert_array_equal(highdicom_slices(written, series.slices), labels)
    assert [item.SegmentLabel for item in pydicom.dcmread(written).SegmentSequence][1:] == ["one", "two", "three"]
    with pytest.raises(alignseries.AlignSeriesError, match="not on the grid of the reference"):
        alignseries.write_seg(mask, alignseries.load(real_folder("ct_philips_axial")), tmp_path / "off.seg.dcm")


def test_batch_case_with_a_seg_column(tmp_path, dciodvfy):
    from AlignSeriesLib import batch

    folder = real_folder("mr_siemens_obl_fmap")
    series = reference_series(folder)
    data, affine = ai_mask_nifti(series, tmp_path / "mask.nii.gz")
    (tmp_path / "names.tsv").write_text("1\touter\n2\tmiddle\n3\tinner\n", encoding="utf-8")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"input,reference,output,labelmap,seg,labels\nmask.nii.gz,{folder},mask.nrrd,yes,"
                        "segs/mask.seg.dcm,names.tsv\n", encoding="utf-8")
    (case,) = batch.read_manifest(manifest)
    result = batch.run_case(case, tmp_path / "out")
    assert result["status"] == "done", result["error"]
    seg_path = tmp_path / "out" / "segs" / "mask.seg.dcm"
    assert str(seg_path) in result["outputs"] and dciodvfy_errors(dciodvfy, seg_path) == []
    expected = mask_at_reference_pixels(data, affine, series.slices)
    np.testing.assert_array_equal(highdicom_slices(seg_path, series.slices), expected)
    assert [item.SegmentLabel for item in pydicom.dcmread(seg_path).SegmentSequence] == ["outer", "middle", "inner"]
    assert batch.run_case(case, tmp_path / "out")["status"] == "done"  # the batch owns its outputs on a rerun


def test_cli_reports_the_seg_writers_warnings(tmp_path, capsys):
    from conftest import run

    folder = real_folder("mr_siemens_obl_fmap")
    series = reference_series(folder)
    ai_mask_nifti(series, tmp_path / "mask.nii.gz")
    status, out, err = run(capsys, "resample", "--input", tmp_path / "mask.nii.gz", "--reference", folder,
                           "--labelmap", "--seg", tmp_path / "mask.seg.dcm", "--json")
    assert status == 0, err
    codes = [warning["code"] for warning in json.loads(out)["warnings"]]
    assert codes.count("seg_generic_labels") == 1
    assert json.loads(out)["output"] == [str(tmp_path / "mask.seg.dcm")]


def test_fractional_seg_is_thresholded_at_half_with_a_warning(tmp_path):
    series = reference_series(real_folder("mr_siemens_obl_fmap"))
    probability = np.zeros((len(series.slices), 64, 64), dtype=np.float32)
    probability[10:20, 20:40, 20:40] = 0.7
    probability[10:20, 40:50, 20:40] = 0.3  # below one half: background
    seg = highdicom.seg.Segmentation(
        dicom_seg._source_images(series.slices), probability, "FRACTIONAL",
        [highdicom.seg.SegmentDescription(1, "p", _code(), _code(), "AUTOMATIC",
                                          highdicom.AlgorithmIdentificationSequence("net", _code(), "1"))],
        highdicom.UID(), 1, highdicom.UID(), 1, "test", "test", "1", "1")
    seg.save_as(tmp_path / "fractional.seg.dcm")
    back = dicom_seg_read.read_seg(tmp_path / "fractional.seg.dcm")
    assert back.seg_type == "FRACTIONAL" and "seg_fractional_thresholded" in {w.code for w in back.warnings}
    np.testing.assert_array_equal(sampled_at_reference_pixels(back, series), (probability >= 0.5).astype(np.uint16))
