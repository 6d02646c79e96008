"""DICOM Spatial Registration import and export: direction, round trip, bad input."""

from __future__ import annotations

import hashlib

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from scipy.spatial.transform import Rotation

from AlignSeriesLib.dicom.reg import (
    SPATIAL_REGISTRATION_SOP_CLASS_UID,
    SeriesReference,
    SpatialRegistration,
    build_registration_dataset,
    classify_matrix,
    read_registration,
    write_registration,
)
from AlignSeriesLib.errors import DicomError, OutputExistsError
from AlignSeriesLib.geometry import lps_to_ras_transform

MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"
FIXED = SeriesReference("1.2.3.1", "1.2.3.100", ("1.2.3.1.1", "1.2.3.1.2"), MR_CLASS, "1.2.3.7")
MOVING = SeriesReference("1.2.3.2", "1.2.3.200", ("1.2.3.2.1",), MR_CLASS, "1.2.3.8")


def rigid_matrix(seed: int = 7) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", [12, -30, 95], degrees=True).as_matrix()
    matrix[:3, 3] = np.random.default_rng(seed).uniform(-200, 200, 3)
    return matrix


def affine_matrix() -> np.ndarray:
    matrix = rigid_matrix()
    matrix[:3, :3] = matrix[:3, :3] @ np.array([[1.1, 0.05, 0], [0, 0.9, 0.02], [0.01, 0, 1.3]])
    return matrix


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("make_matrix, matrix_type", [(rigid_matrix, "RIGID"), (affine_matrix, "AFFINE")])
def test_export_then_import_returns_the_same_matrix_not_its_inverse(tmp_path, make_matrix, matrix_type):
    moving_to_fixed_ras = make_matrix()
    path = write_registration(tmp_path / "reg.dcm", moving_to_fixed_ras, FIXED, MOVING)
    registration = read_registration(path)
    np.testing.assert_allclose(registration.moving_to_fixed_ras("1.2.3.200", "1.2.3.100"), moving_to_fixed_ras,
                               atol=1e-9)
    np.testing.assert_allclose(registration.moving_to_fixed_ras("1.2.3.100", "1.2.3.200"),
                               np.linalg.inv(moving_to_fixed_ras), atol=1e-9)
    dataset = pydicom.dcmread(path)
    assert dataset.SOPClassUID == SPATIAL_REGISTRATION_SOP_CLASS_UID == dataset.file_meta.MediaStorageSOPClassUID
    assert dataset.Modality == "REG" and dataset.FrameOfReferenceUID == "1.2.3.100"
    items = dataset.RegistrationSequence
    assert [item.FrameOfReferenceUID for item in items] == ["1.2.3.100", "1.2.3.200"]
    moving_matrix = items[1].MatrixRegistrationSequence[0].MatrixSequence[0]
    assert moving_matrix.FrameOfReferenceTransformationMatrixType == matrix_type
    assert items[0].MatrixRegistrationSequence[0].MatrixSequence[0].FrameOfReferenceTransformationMatrixType == "RIGID"
    assert [i.ReferencedSOPInstanceUID for i in items[1].ReferencedImageSequence] == ["1.2.3.2.1"]
    # the moving series is in another study: referenced from there, the fixed series from the REG's own study
    assert dataset.StudyInstanceUID == "1.2.3.7"
    assert [s.SeriesInstanceUID for s in dataset.ReferencedSeriesSequence] == ["1.2.3.1"]
    other = dataset.StudiesContainingOtherReferencedInstancesSequence[0]
    assert other.StudyInstanceUID == "1.2.3.8" and other.ReferencedSeriesSequence[0].SeriesInstanceUID == "1.2.3.2"
    assert registration.referenced_series_uids == ["1.2.3.1"]


def test_export_copies_patient_and_study_from_a_reference_image():
    reference = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset = build_registration_dataset(np.eye(4), FIXED, MOVING, reference_dataset=reference)
    assert dataset.PatientID == reference.PatientID and dataset.PatientName == reference.PatientName
    assert dataset.StudyInstanceUID == reference.StudyInstanceUID
    assert dataset.SeriesInstanceUID not in (FIXED.series_instance_uid, MOVING.series_instance_uid)


def hand_written_registration(matrix_lps, *, own_frame="9.9.1", moving_frame="9.9.2", matrix_type="RIGID",
                              matrices=1) -> Dataset:
    """A REG built by hand, field by field, as another system would write it."""
    dataset = Dataset()
    dataset.SOPClassUID = SPATIAL_REGISTRATION_SOP_CLASS_UID
    dataset.SOPInstanceUID = "9.9.9"
    dataset.FrameOfReferenceUID = own_frame
    items = []
    for frame, values in ((own_frame, np.eye(4)), (moving_frame, np.asarray(matrix_lps, float))):
        matrix = Dataset()
        matrix.FrameOfReferenceTransformationMatrixType = matrix_type
        matrix.FrameOfReferenceTransformationMatrix = [f"{v:.6f}" for v in values.ravel()]
        registration = Dataset()
        registration.MatrixSequence = Sequence([matrix] * matrices)
        item = Dataset()
        item.FrameOfReferenceUID = frame
        item.MatrixRegistrationSequence = Sequence([registration])
        items.append(item)
    dataset.RegistrationSequence = Sequence(items)
    return dataset


def test_hand_written_matrix_imports_in_the_direction_the_standard_defines():
    # The item's matrix maps the item's (moving) frame into the REG's own (fixed) frame, in LPS:
    # moving point (0, 0, 0) LPS lands at fixed (10, 20, 30) LPS, i.e. (-10, -20, 30) RAS.
    matrix_lps = np.eye(4)
    matrix_lps[:3, 3] = [10, 20, 30]
    registration = read_registration(hand_written_registration(matrix_lps))
    moving_to_fixed_ras = registration.moving_to_fixed_ras("9.9.2", "9.9.1")
    np.testing.assert_allclose(moving_to_fixed_ras[:3, 3], [-10, -20, 30])
    np.testing.assert_allclose(moving_to_fixed_ras[:3, :3], np.eye(3))
    assert registration.moving_to_fixed_ras("9.9.2", "unrelated") is None


def test_hand_written_rotation_is_converted_from_lps_to_ras():
    rotation_lps = np.eye(4)
    rotation_lps[:3, :3] = Rotation.from_euler("z", 90, degrees=True).as_matrix()  # L -> P in LPS
    registration = read_registration(hand_written_registration(rotation_lps))
    moving_to_fixed_ras = registration.moving_to_fixed_ras("9.9.2", "9.9.1")
    # a point 1 mm Left (RAS (-1, 0, 0)) lands 1 mm Posterior (RAS (0, -1, 0))
    np.testing.assert_allclose(moving_to_fixed_ras[:3, :3] @ [-1, 0, 0], [0, -1, 0], atol=1e-6)
    np.testing.assert_allclose(moving_to_fixed_ras, lps_to_ras_transform(rotation_lps), atol=1e-6)


def test_two_frames_registered_to_a_third_frame_compose():
    a_to_reg, b_to_reg = rigid_matrix(1), rigid_matrix(2)
    registration = SpatialRegistration("9.9.0", {"9.9.a": a_to_reg, "9.9.b": b_to_reg})
    expected_lps = np.linalg.inv(b_to_reg) @ a_to_reg
    np.testing.assert_allclose(registration.moving_to_fixed_ras("9.9.a", "9.9.b"), lps_to_ras_transform(expected_lps))


def test_declared_rigid_but_scaled_matrix_is_read_with_a_warning():
    scaled = np.diag([2.0, 2.0, 2.0, 1.0])
    registration = read_registration(hand_written_registration(scaled))
    assert any(w.code == "registration_matrix_type" and "declared RIGID but is RIGID_SCALE" in w.message
               for w in registration.warnings)


@pytest.mark.parametrize("matrix, expected", [
    (np.eye(4), "RIGID"), (np.diag([2.0, 3.0, 1.0, 1.0]), "RIGID_SCALE"), (np.diag([-1.0, 1, 1, 1]), "AFFINE"),
    (affine_matrix(), "AFFINE"), (rigid_matrix(), "RIGID"),
])
def test_matrix_classification(matrix, expected):
    assert classify_matrix(matrix) == expected


@pytest.mark.parametrize("change, message", [
    (lambda d: setattr(d, "SOPClassUID", MR_CLASS), "not a DICOM Spatial Registration"),
    (lambda d: delattr(d, "FrameOfReferenceUID"), "no FrameOfReferenceUID"),
    (lambda d: setattr(d, "RegistrationSequence", Sequence([])), "missing or empty"),
    (lambda d: delattr(d.RegistrationSequence[1], "FrameOfReferenceUID"), "item 2 has no FrameOfReferenceUID"),
    (lambda d: setattr(d.RegistrationSequence[1].MatrixRegistrationSequence[0].MatrixSequence[0],
                       "FrameOfReferenceTransformationMatrixType", "PROJECTIVE"), "PROJECTIVE"),
    (lambda d: setattr(d.RegistrationSequence[1].MatrixRegistrationSequence[0].MatrixSequence[0],
                       "FrameOfReferenceTransformationMatrix", ["1"] * 12), "16 values"),
    (lambda d: setattr(d.RegistrationSequence[1].MatrixRegistrationSequence[0].MatrixSequence[0],
                       "FrameOfReferenceTransformationMatrix", ["0"] * 15 + ["1"]), "singular"),
])
def test_malformed_registrations_are_refused_clearly(change, message):
    dataset = hand_written_registration(np.eye(4))
    change(dataset)
    with pytest.raises(DicomError, match=message):
        read_registration(dataset)


def test_composed_matrix_sequences_are_refused():
    with pytest.raises(DicomError, match="only a single matrix"):
        read_registration(hand_written_registration(np.eye(4), matrices=2))


def test_non_registration_file_is_refused_and_left_unchanged(tmp_path):
    ct = get_testdata_file("CT_small.dcm")
    before = hashlib.sha256(open(ct, "rb").read()).hexdigest()
    with pytest.raises(DicomError, match="not a DICOM Spatial Registration"):
        read_registration(ct)
    assert hashlib.sha256(open(ct, "rb").read()).hexdigest() == before
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not dicom")
    with pytest.raises(DicomError, match="not a readable DICOM file"):
        read_registration(text_file)
    with pytest.raises(FileNotFoundError):
        read_registration(tmp_path / "absent.dcm")


def test_existing_output_is_not_overwritten_without_force(tmp_path):
    path = write_registration(tmp_path / "reg.dcm", np.eye(4), FIXED, MOVING)
    before = digest(path)
    with pytest.raises(OutputExistsError):
        write_registration(path, rigid_matrix(), FIXED, MOVING)
    assert digest(path) == before
    write_registration(path, rigid_matrix(), FIXED, MOVING, force=True)
    np.testing.assert_allclose(read_registration(path).moving_to_fixed_ras("1.2.3.200", "1.2.3.100"), rigid_matrix(),
                               atol=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reg.dcm"]


@pytest.mark.parametrize("fixed, message", [
    (SeriesReference("1.2", ""), "FrameOfReferenceUID"),
    (SeriesReference("1.2", "1.3", ("1.4",)), "SOP Class UID"),
])
def test_export_needs_identifying_values(fixed, message):
    with pytest.raises(DicomError, match=message):
        build_registration_dataset(np.eye(4), fixed, MOVING)
