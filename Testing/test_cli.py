"""End-to-end tests of the ``alignseries`` command line (AlignSeriesLib.cli).

Every command runs in-process through ``cli.main([...])`` on a real slicer-core scene, and a few
through a subprocess (``python -m AlignSeriesLib``, the ``alignseries`` script) to prove the entry
points. Truth comes from outside the library: the header values the fixtures wrote with pydicom,
matrices written out by hand from those values, nibabel reading the files the CLI wrote, and a
least-squares fit computed here with numpy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import PROJECT_ROOT, require_shared_dicom, run, run_json
from dicom_fixtures import stack_positions, write_phantom_series
from hand_geometries import rigid_transform

from AlignSeriesLib import cli, mrml, mrml_files
from AlignSeriesLib.geometry import VolumeGeometry

PYTHON = sys.executable

# Two small axial series of one frame of reference (scenario 1's header values, fewer pixels).
FRAME_OF_REFERENCE = "1.2.826.0.1.3680043.8.498.777"
SERIES = {
    "A": {"first_lps": (-205.0967, -384.0967, -1496.5), "pixel_spacing": 0.80664, "rows": 12, "columns": 10,
          "slices": 5, "series_number": 1, "uid": "1.2.826.0.1.3680043.8.498.101"},
    "B": {"first_lps": (-171.6504, -356.6504, -1099.7), "pixel_spacing": 0.69922, "rows": 9, "columns": 11,
          "slices": 4, "series_number": 2, "uid": "1.2.826.0.1.3680043.8.498.102"},
}
SLICE_STEP_MM = 2.0

#: Fields of each volume of ``info --json`` (DESIGN.md, Public contracts).
INFO_FIELDS = {"name", "series_instance_uid", "frame_of_reference_uid", "files", "frames", "sop_instance_uids",
               "dimensions", "spacing", "ijk_to_ras", "ijk_to_lps", "regularized", "warnings"}


# -- fixtures and helpers ---------------------------------------------------------------------------


def write_axial(folder: Path, key: str, *, frame_of_reference: str = FRAME_OF_REFERENCE) -> list[Path]:
    """Write series ``key`` of :data:`SERIES` (shuffled file names and InstanceNumbers); files in k order."""
    spec = SERIES[key]
    positions = stack_positions(spec["first_lps"], (1, 0, 0, 0, 1, 0), np.arange(spec["slices"]) * SLICE_STEP_MM)
    files, _ = write_phantom_series(folder, positions, "axial", (spec["pixel_spacing"],) * 2, rows=spec["rows"],
                                    columns=spec["columns"], series_uid=spec["uid"],
                                    series_number=spec["series_number"], shuffle_seed=spec["series_number"],
                                    name_prefix=key, frame_of_reference_uid=frame_of_reference)
    return files


def hand_ijk_to_lps(key: str) -> np.ndarray:
    """Axial IOP (1,0,0, 0,1,0): columns ps*x, ps*y, 2 mm*z, IPP of the first slice."""
    spec = SERIES[key]
    ps = spec["pixel_spacing"]
    x, y, z = spec["first_lps"]
    return np.array([[ps, 0, 0, x], [0, ps, 0, y], [0, 0, SLICE_STEP_MM, z], [0, 0, 0, 1]])


def hand_ijk_to_ras(key: str) -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ hand_ijk_to_lps(key)


def hand_geometry(key: str) -> VolumeGeometry:
    spec = SERIES[key]
    return VolumeGeometry((spec["columns"], spec["rows"], spec["slices"]), hand_ijk_to_ras(key))


def hand_center_ras(key: str) -> np.ndarray:
    spec = SERIES[key]
    middle = np.array([(spec["columns"] - 1) / 2, (spec["rows"] - 1) / 2, (spec["slices"] - 1) / 2, 1.0])
    return (hand_ijk_to_ras(key) @ middle)[:3]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Folders: A and B alone, both in one folder, and B in another frame of reference."""
    root = tmp_path_factory.mktemp("cli")
    files = {"A": write_axial(root / "A", "A"), "B": write_axial(root / "B", "B")}
    write_axial(root / "both", "A")
    write_axial(root / "both", "B")
    write_axial(root / "B_other_frame", "B", frame_of_reference="1.2.826.0.1.3680043.8.498.999")
    return {"root": root, "files": files}


def assert_one_line_error(status: int, out: str, err: str, *fragments: str) -> None:
    """The contract for every failure: exit 2, nothing on stdout, one ``error: …`` line, no traceback."""
    assert status == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def is_matrix4(value) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(isinstance(row, list) and len(row) == 4
                                                               for row in value)


def kabsch_rigid(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Least-squares rigid moving->fixed fit (Kabsch/Umeyama without scale), written here as the truth."""
    fixed_mean, moving_mean = fixed.mean(axis=0), moving.mean(axis=0)
    covariance = (fixed - fixed_mean).T @ (moving - moving_mean)
    u, _, vt = np.linalg.svd(covariance)
    correction = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ correction @ vt
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = fixed_mean - rotation @ moving_mean
    return matrix


def apply(matrix, points) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    return points @ np.asarray(matrix)[:3, :3].T + np.asarray(matrix)[:3, 3]


# -- info -------------------------------------------------------------------------------------------


def test_info_json_has_the_contract_fields_with_header_values(capsys, data):
    document = run_json(capsys, "info", data["root"] / "A")

    assert set(document) == {"volumes"}
    volume, = document["volumes"]
    assert INFO_FIELDS <= set(volume)
    files = data["files"]["A"]
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    spec = SERIES["A"]
    assert volume["series_instance_uid"] == spec["uid"]
    assert volume["frame_of_reference_uid"] == FRAME_OF_REFERENCE
    assert [Path(path).resolve() for path in volume["files"]] == [path.resolve() for path in files]
    # The fixture shuffled InstanceNumbers: k order must follow the positions, not the numbers.
    assert [int(h.InstanceNumber) for h in headers] != sorted(int(h.InstanceNumber) for h in headers)
    assert volume["frames"] == [None] * spec["slices"]
    assert volume["sop_instance_uids"] == [h.SOPInstanceUID for h in headers]
    assert volume["dimensions"] == [spec["columns"], spec["rows"], spec["slices"]]
    np.testing.assert_allclose(volume["spacing"], [spec["pixel_spacing"]] * 2 + [SLICE_STEP_MM], atol=1e-6)
    np.testing.assert_allclose(volume["ijk_to_lps"], hand_ijk_to_lps("A"), atol=1e-5)
    np.testing.assert_allclose(volume["ijk_to_ras"], hand_ijk_to_ras("A"), atol=1e-5)
    assert volume["regularized"] is False
    assert volume["warnings"] == []


def test_info_json_lists_both_series_of_a_folder(capsys, data):
    volumes = run_json(capsys, "info", data["root"] / "both")["volumes"]

    assert sorted(v["series_instance_uid"] for v in volumes) == sorted(s["uid"] for s in SERIES.values())
    for volume in volumes:
        key = next(k for k, s in SERIES.items() if s["uid"] == volume["series_instance_uid"])
        np.testing.assert_allclose(volume["ijk_to_lps"], hand_ijk_to_lps(key), atol=1e-5)
        assert len(volume["files"]) == len(volume["sop_instance_uids"]) == SERIES[key]["slices"]


def test_info_json_warnings_name_the_measured_value(capsys, tmp_path):
    # Slices at 0, 2, 4, 8, 10 mm: one missing slice.
    positions = stack_positions((-10.0, -20.0, 30.0), (1, 0, 0, 0, 1, 0), [0, 2, 4, 8, 10])
    write_phantom_series(tmp_path / "gap", positions, "axial", (1.0, 1.0), rows=6, columns=5)

    volume, = run_json(capsys, "info", tmp_path / "gap")["volumes"]

    for warning in volume["warnings"]:
        assert set(warning) == {"code", "message"}
        assert isinstance(warning["code"], str) and isinstance(warning["message"], str)
    missing, = [w["message"] for w in volume["warnings"] if w["code"] == "missing_slices"]
    assert "max 4.0000 mm" in missing and "tolerance" in missing  # the measured gap and the threshold
    # Regularized exactly onto 2 mm slices (0..10 mm: 6 of them); the five source slices listed along the normal.
    assert volume["regularized"] is True
    assert volume["dimensions"] == [5, 6, 6]
    np.testing.assert_allclose(volume["spacing"], [1.0, 1.0, 2.0], atol=1e-6)
    assert len(volume["files"]) == len(volume["sop_instance_uids"]) == 5
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in volume["files"]]
    np.testing.assert_allclose(z, [30, 32, 34, 38, 40], atol=1e-4)


def test_info_text_names_each_volume(capsys, data):
    status, out, err = run(capsys, "info", data["root"] / "both")

    assert status == 0, err
    assert "[1]" in out and "[2]" in out
    assert SERIES["A"]["uid"] in out and SERIES["B"]["uid"] in out


def test_info_of_a_nifti_file_reports_its_affine(capsys, tmp_path):
    affine = np.array([[0, 0, -2.5, 40], [1.5, 0, 0, -30], [0, -1.2, 0, 20], [0, 0, 0, 1]])
    path = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), affine), path)

    volume, = run_json(capsys, "info", path)["volumes"]

    assert INFO_FIELDS <= set(volume)
    assert volume["dimensions"] == [4, 5, 6]
    np.testing.assert_allclose(volume["ijk_to_ras"], affine, atol=1e-5)
    np.testing.assert_allclose(volume["ijk_to_lps"], np.diag([-1, -1, 1, 1]) @ affine, atol=1e-5)
    np.testing.assert_allclose(volume["spacing"], [1.5, 1.2, 2.5], atol=1e-6)
    assert volume["files"] == [str(path)] * 6 and volume["frames"] == [1, 2, 3, 4, 5, 6]  # one entry per slice
    assert volume["sop_instance_uids"] == [None] * 6


def test_info_lists_every_input_volume_files_and_dicom_alike(capsys, data, tmp_path):
    for name, slices in (("first", 3), ("second", 4)):
        nib.save(nib.Nifti1Image(np.zeros((2, 2, slices), np.int16), np.eye(4)), tmp_path / f"{name}.nii.gz")

    volumes = run_json(capsys, "info", tmp_path / "first.nii.gz", data["root"] / "A",
                       tmp_path / "second.nii.gz")["volumes"]

    assert [v["dimensions"][2] for v in volumes] == [3, SERIES["A"]["slices"], 4]
    assert volumes[1]["series_instance_uid"] == SERIES["A"]["uid"]


def test_info_real_multistack_scout_lists_four_volumes(capsys):
    folder = require_shared_dicom() / "mr_siemens_scout_multistack" / "dicom"
    expected = json.loads((folder.parent / "expected.json").read_text())

    volumes = run_json(capsys, "info", folder)["volumes"]

    assert len(volumes) == 4
    assert {v["series_instance_uid"] for v in volumes} == {expected["series_uid"]}
    assert {v["frame_of_reference_uid"] for v in volumes} == {expected["frame_of_reference_uid"]}
    assert sum(len(v["files"]) for v in volumes) == expected["files"]


# -- transform --------------------------------------------------------------------------------------


def test_transform_frame_of_reference_json_gives_identity_and_voxel_matrix(capsys, data, tmp_path):
    document = run_json(capsys, "transform", "--fixed", data["root"] / "A", "--moving", data["root"] / "B",
                        "--output", tmp_path / "t.json")

    assert {"moving_to_fixed_ras", "moving_ijk_to_fixed_ijk"} <= set(document)
    assert "text" not in document
    assert is_matrix4(document["moving_to_fixed_ras"]) and is_matrix4(document["moving_ijk_to_fixed_ijk"])
    np.testing.assert_allclose(document["moving_to_fixed_ras"], np.eye(4), atol=1e-9)
    # moving (B) voxel -> fixed (A) voxel, from the header values: scale ps_B/ps_A, offset (IPP_B - IPP_A)/ps_A.
    a, b = SERIES["A"], SERIES["B"]
    scale = b["pixel_spacing"] / a["pixel_spacing"]
    offset = [(b["first_lps"][0] - a["first_lps"][0]) / a["pixel_spacing"],
              (b["first_lps"][1] - a["first_lps"][1]) / a["pixel_spacing"],
              (b["first_lps"][2] - a["first_lps"][2]) / SLICE_STEP_MM]
    expected = np.array([[scale, 0, 0, offset[0]], [0, scale, 0, offset[1]], [0, 0, 1, offset[2]], [0, 0, 0, 1]])
    np.testing.assert_allclose(document["moving_ijk_to_fixed_ijk"], expected, atol=1e-5)
    np.testing.assert_allclose(document["fixed_ijk_to_moving_ijk"], np.linalg.inv(expected), atol=1e-5)
    np.testing.assert_allclose(json.loads((tmp_path / "t.json").read_text())["moving_to_fixed_ras"], np.eye(4))


def test_transform_text_output_prints_the_matrix(capsys, data, tmp_path):
    status, out, err = run(capsys, "transform", "--fixed", data["root"] / "A", "--moving", data["root"] / "B",
                           "--mode", "centers", "--output", tmp_path / "t.mat4")

    assert status == 0, err
    translation = hand_center_ras("A") - hand_center_ras("B")
    assert f"{translation[0]:12.6f}" in out
    assert str(tmp_path / "t.mat4") in out


@pytest.mark.parametrize("suffix", [".h5", ".tfm", ".txt", ".json", ".mat4", ".mat"])
def test_transform_file_formats_read_back_to_the_same_matrix(capsys, data, tmp_path, scene, suffix):
    output = tmp_path / f"centers{suffix}"
    document = run_json(capsys, "transform", "--fixed", data["root"] / "A", "--moving", data["root"] / "B",
                        "--mode", "centers", "--output", output)

    # Truth: a pure translation from B's grid center to A's, computed from the header values.
    expected = np.eye(4)
    expected[:3, 3] = hand_center_ras("A") - hand_center_ras("B")
    np.testing.assert_allclose(document["moving_to_fixed_ras"], expected, atol=1e-5)
    np.testing.assert_allclose(document["moving_ijk_to_fixed_ijk"],
                               np.linalg.inv(hand_ijk_to_ras("A")) @ expected @ hand_ijk_to_ras("B"), atol=1e-5)
    geometries = {"moving_geometry": hand_geometry("B"), "fixed_geometry": hand_geometry("A")}
    node = mrml_files.read_transform_file(scene, output, **(geometries if suffix == ".mat" else {}))
    np.testing.assert_allclose(mrml.transform_to_parent_matrix(node), expected, atol=1e-5)


def test_transform_itk_file_is_from_parent_lps(capsys, data, tmp_path):
    """ITK stores the inverse (from parent) in LPS: a +x RAS shift is an LPS translation of +x back."""
    output = tmp_path / "centers.tfm"
    document = run_json(capsys, "transform", "--fixed", data["root"] / "A", "--moving", data["root"] / "B",
                        "--mode", "centers", "--output", output)
    translation_ras = np.array(document["moving_to_fixed_ras"])[:3, 3]
    fixed_parameters = next(line for line in output.read_text().splitlines() if line.startswith("Parameters:"))
    itk_translation_lps = np.array(fixed_parameters.split()[-3:], dtype=float)
    np.testing.assert_allclose(itk_translation_lps, -translation_ras * [-1, -1, 1], atol=1e-4)


def test_transform_different_frames_is_refused_with_alternatives(capsys, data, tmp_path):
    output = tmp_path / "t.h5"
    status, out, err = run(capsys, "transform", "--fixed", data["root"] / "A", "--moving",
                           data["root"] / "B_other_frame", "--output", output)

    assert_one_line_error(status, out, err, "frame", "landmarks", "--registration", "centers", "moments")
    assert not output.exists()


def test_transform_selects_volumes_of_a_two_series_folder(capsys, data, tmp_path):
    volumes = run_json(capsys, "info", data["root"] / "both")["volumes"]
    number = {next(k for k, s in SERIES.items() if s["uid"] == v["series_instance_uid"]): n
              for n, v in enumerate(volumes, start=1)}

    status, out, err = run(capsys, "transform", "--fixed", data["root"] / "both", "--moving", data["root"] / "B",
                           "--output", tmp_path / "refused.json")
    assert_one_line_error(status, out, err, "--fixed", "2 volumes", "--fixed-volume")

    document = run_json(capsys, "transform", "--fixed", data["root"] / "both", "--fixed-volume", number["A"],
                        "--moving", data["root"] / "both", "--moving-volume", number["B"], "--mode", "centers",
                        "--output", tmp_path / "chosen.json")
    np.testing.assert_allclose(np.array(document["moving_to_fixed_ras"])[:3, 3],
                               hand_center_ras("A") - hand_center_ras("B"), atol=1e-5)

    status, out, err = run(capsys, "transform", "--fixed", data["root"] / "both", "--fixed-volume", 3,
                           "--moving", data["root"] / "B", "--output", tmp_path / "three.json")
    assert_one_line_error(status, out, err, "volume 3", "2 found")


def test_transform_output_refused_without_force_and_replaced_with_it(capsys, data, tmp_path):
    output = tmp_path / "t.json"
    output.write_text("precious")

    status, out, err = run(capsys, "transform", "--fixed", data["root"] / "A", "--moving", data["root"] / "B",
                           "--output", output)
    assert_one_line_error(status, out, err, str(output), "--force")
    assert output.read_text() == "precious"

    document = run_json(capsys, "transform", "--fixed", data["root"] / "A", "--moving", data["root"] / "B",
                        "--mode", "centers", "--output", output, "--force")
    np.testing.assert_allclose(json.loads(output.read_text())["moving_to_fixed_ras"], document["moving_to_fixed_ras"])


def test_transform_real_series_sharing_a_frame_give_identity(capsys, tmp_path):
    shared = require_shared_dicom()
    document = run_json(capsys, "transform", "--fixed", shared / "mr_siemens_sag_t1_jpegll" / "dicom",
                        "--moving", shared / "mr_siemens_obl_fmap" / "dicom", "--output", tmp_path / "t.h5")

    np.testing.assert_allclose(document["moving_to_fixed_ras"], np.eye(4), atol=1e-12)
    voxel_matrix = np.array(document["moving_ijk_to_fixed_ijk"])
    assert not np.allclose(voxel_matrix, np.eye(4)), "different grids: the voxel matrix is not the identity"


def test_transform_dicom_reg_output_is_read_back_both_ways(capsys, data, tmp_path):
    """`transform --output x.dcm` writes a Spatial Registration; `--registration` gives the matrix back."""
    fixed, moving = data["root"] / "A", data["root"] / "B_other_frame"
    centers = run_json(capsys, "transform", "--fixed", fixed, "--moving", moving, "--mode", "centers",
                       "--output", tmp_path / "reg.dcm")
    expected = np.eye(4)
    expected[:3, 3] = hand_center_ras("A") - hand_center_ras("B")
    np.testing.assert_allclose(centers["moving_to_fixed_ras"], expected, atol=1e-5)

    # DICOM PS3.3 C.20.2: each item maps its frame into the registered frame (the fixed one), in LPS.
    reg = pydicom.dcmread(tmp_path / "reg.dcm")
    assert reg.Modality == "REG" and reg.FrameOfReferenceUID == FRAME_OF_REFERENCE
    matrices = {item.FrameOfReferenceUID: np.array(item.MatrixRegistrationSequence[0].MatrixSequence[0]
                                                   .FrameOfReferenceTransformationMatrix, dtype=float).reshape(4, 4)
                for item in reg.RegistrationSequence}
    np.testing.assert_allclose(matrices["1.2.826.0.1.3680043.8.498.999"],
                               np.diag([-1, -1, 1, 1]) @ expected @ np.diag([-1, -1, 1, 1]), atol=1e-5)

    forward = run_json(capsys, "transform", "--fixed", fixed, "--moving", moving, "--registration",
                       tmp_path / "reg.dcm", "--output", tmp_path / "forward.json")
    backward = run_json(capsys, "transform", "--fixed", moving, "--moving", fixed, "--registration",
                        tmp_path / "reg.dcm", "--output", tmp_path / "backward.json")
    np.testing.assert_allclose(forward["moving_to_fixed_ras"], expected, atol=1e-5)
    np.testing.assert_allclose(backward["moving_to_fixed_ras"], np.linalg.inv(expected), atol=1e-5)


# -- landmarks --------------------------------------------------------------------------------------


LANDMARK_LABELS = ["nasion", "tragus_L", "tragus_R", "vertex", "inion"]
MOVING_POINTS_RAS = np.array([[0, 80, 10], [70, 5, -5], [-72, 3, -4], [2, -10, 90], [1, -95, 5]], dtype=float)
MOVING_TO_FIXED_RAS = rigid_transform(angle_degrees=12.0, axis=(0.3, -1.0, 0.5), translation=(4.0, -9.5, 17.0))


def write_points(path: Path, points, labels) -> Path:
    path.write_text("x,y,z,label\n" + "".join(f"{p[0]:.17g},{p[1]:.17g},{p[2]:.17g},{label}\n"
                                              for p, label in zip(points, labels, strict=True)))
    return path


def test_landmarks_json_fits_exact_points(capsys, tmp_path):
    fixed = write_points(tmp_path / "fixed.csv", apply(MOVING_TO_FIXED_RAS, MOVING_POINTS_RAS), LANDMARK_LABELS)
    moving = write_points(tmp_path / "moving.csv", MOVING_POINTS_RAS, LANDMARK_LABELS)

    document = run_json(capsys, "landmarks", "--fixed", fixed, "--moving", moving, "--output", tmp_path / "t.h5")

    assert {"moving_to_fixed_ras", "rms_error_mm", "residuals_mm"} <= set(document)
    assert is_matrix4(document["moving_to_fixed_ras"])
    np.testing.assert_allclose(document["moving_to_fixed_ras"], MOVING_TO_FIXED_RAS, atol=1e-6)
    assert document["rms_error_mm"] == pytest.approx(0, abs=1e-6)
    np.testing.assert_allclose(document["residuals_mm"], np.zeros(5), atol=1e-6)
    node = mrml_files.read_transform_file(mrml.new_scene(), tmp_path / "t.h5")
    np.testing.assert_allclose(mrml.transform_to_parent_matrix(node), MOVING_TO_FIXED_RAS, atol=1e-6)


def test_landmarks_residuals_follow_the_fixed_list_order(capsys, tmp_path):
    fixed_points = apply(MOVING_TO_FIXED_RAS, MOVING_POINTS_RAS)
    fixed_points[3] += [6.0, -2.0, 3.0]  # one badly placed landmark: "vertex"
    fixed = write_points(tmp_path / "fixed.csv", fixed_points, LANDMARK_LABELS)
    shuffle = [2, 4, 0, 3, 1]
    moving = write_points(tmp_path / "moving.csv", MOVING_POINTS_RAS[shuffle], [LANDMARK_LABELS[n] for n in shuffle])

    document = run_json(capsys, "landmarks", "--fixed", fixed, "--moving", moving, "--match", "labels",
                        "--output", tmp_path / "t.json")

    truth = kabsch_rigid(fixed_points, MOVING_POINTS_RAS)
    residuals = np.linalg.norm(apply(truth, MOVING_POINTS_RAS) - fixed_points, axis=1)
    np.testing.assert_allclose(document["moving_to_fixed_ras"], truth, atol=1e-6)
    np.testing.assert_allclose(document["residuals_mm"], residuals, atol=1e-6)
    assert int(np.argmax(document["residuals_mm"])) == 3
    assert document["rms_error_mm"] == pytest.approx(np.sqrt(np.mean(residuals ** 2)), abs=1e-6)


def test_landmarks_target_error_grows_away_from_the_landmarks(capsys, tmp_path):
    """The estimated TRE is reported at the fixed points' centroid, or at --fixed-image's center, and
    (Fitzpatrick's model) is larger at a target far outside the landmark configuration."""
    fixed_points = apply(MOVING_TO_FIXED_RAS, MOVING_POINTS_RAS)
    fixed_points += np.random.default_rng(5).normal(0, 1.0, fixed_points.shape)  # clicking noise
    fixed = write_points(tmp_path / "fixed.csv", fixed_points, LANDMARK_LABELS)
    moving = write_points(tmp_path / "moving.csv", MOVING_POINTS_RAS, LANDMARK_LABELS)
    far_center_ras = fixed_points.mean(axis=0) + [400.0, 0.0, 0.0]
    far_volume = tmp_path / "far.nii.gz"
    affine = np.eye(4)
    affine[:3, 3] = far_center_ras - 1.0  # a 3 x 3 x 3 grid of 1 mm voxels centred there
    nib.save(nib.Nifti1Image(np.zeros((3, 3, 3), np.int16), affine), far_volume)

    near = run_json(capsys, "landmarks", "--fixed", fixed, "--moving", moving, "--output", tmp_path / "a.json")
    far = run_json(capsys, "landmarks", "--fixed", fixed, "--moving", moving, "--fixed-image", far_volume,
                   "--output", tmp_path / "b.json")

    np.testing.assert_allclose(near["target_ras"], fixed_points.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(far["target_ras"], far_center_ras, atol=1e-6)
    assert 0 < near["target_registration_error_mm"] < far["target_registration_error_mm"]


def test_landmarks_from_slicer_markups_in_lps(capsys, tmp_path):
    """A .mrk.json in LPS (Slicer's default) is read through Slicer: x and y change sign to RAS."""
    fixed_ras = apply(MOVING_TO_FIXED_RAS, MOVING_POINTS_RAS)
    markups = {"@schema": "https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/Resources/"
                          "Schema/markups-schema-v1.0.3.json#",
               "markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm",
                            "controlPoints": [{"id": str(n + 1), "label": label,
                                               "position": [-p[0], -p[1], p[2]]}
                                              for n, (p, label) in enumerate(zip(fixed_ras, LANDMARK_LABELS,
                                                                                 strict=True))]}]}
    (tmp_path / "fixed.mrk.json").write_text(json.dumps(markups))
    moving = write_points(tmp_path / "moving.csv", MOVING_POINTS_RAS, LANDMARK_LABELS)

    document = run_json(capsys, "landmarks", "--fixed", tmp_path / "fixed.mrk.json", "--moving", moving,
                        "--match", "labels", "--output", tmp_path / "t.mat4")

    np.testing.assert_allclose(document["moving_to_fixed_ras"], MOVING_TO_FIXED_RAS, atol=1e-6)
    np.testing.assert_allclose(np.loadtxt(tmp_path / "t.mat4"), MOVING_TO_FIXED_RAS, atol=1e-9)


def test_landmarks_mismatched_lists_fail_in_one_line(capsys, tmp_path):
    fixed = write_points(tmp_path / "fixed.csv", MOVING_POINTS_RAS, LANDMARK_LABELS)
    moving = write_points(tmp_path / "moving.csv", MOVING_POINTS_RAS[:4], LANDMARK_LABELS[:4])

    status, out, err = run(capsys, "landmarks", "--fixed", fixed, "--moving", moving, "--output", tmp_path / "t.h5")

    assert_one_line_error(status, out, err)
    assert not (tmp_path / "t.h5").exists()


# -- resample ---------------------------------------------------------------------------------------


def reference_truth_labels(key: str) -> np.ndarray:
    """A label volume on series ``key``'s grid, [k, j, i]: label = 1 + (i + 2 j + 3 k) % 4."""
    spec = SERIES[key]
    k, j, i = np.mgrid[0:spec["slices"], 0:spec["rows"], 0:spec["columns"]]
    return (1 + (i + 2 * j + 3 * k) % 4).astype(np.uint8)


def test_resample_nifti_in_its_own_axis_order_onto_dicom_grid(capsys, data, tmp_path):
    # The labels of A's grid stored as NIfTI with axes permuted (k, i, j) and the new first axis flipped.
    truth_kji = reference_truth_labels("A")
    truth_ijk = truth_kji.transpose(2, 1, 0)
    stored = truth_ijk.transpose(2, 0, 1)[::-1]  # stored[a, b, c] = truth_ijk[b, c, K-1-a]
    slices = SERIES["A"]["slices"]
    ijk_to_ras = hand_ijk_to_ras("A")
    # stored index (a, b, c) -> A's index (i, j, k) = (b, c, K-1-a): a 4x4 permutation-with-flip.
    stored_to_ijk = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [-1, 0, 0, slices - 1], [0, 0, 0, 1]], dtype=float)
    path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), ijk_to_ras @ stored_to_ijk), path)
    output = tmp_path / "mask_on_A.nii.gz"

    document = run_json(capsys, "resample", "--input", path, "--reference", data["root"] / "A", "--labelmap",
                        "--preview", tmp_path / "preview.png", "--output", output)

    assert [Path(p) for p in document["output"]] == [output]
    assert [Path(p) for p in document["extras"]] == [tmp_path / "preview.png"]
    assert (tmp_path / "preview.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert document["geometry"]["dimensions"] == [SERIES["A"]["columns"], SERIES["A"]["rows"], SERIES["A"]["slices"]]
    written = nib.load(output)
    np.testing.assert_allclose(written.affine, ijk_to_ras, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(written.dataobj), truth_ijk)


@pytest.mark.parametrize(("options", "encoding"), [((), "raw"), (("--compress",), "gzip")])
def test_resample_writes_raw_nrrd_unless_compress(capsys, data, tmp_path, options, encoding):
    output = tmp_path / "B_on_A.nrrd"
    run_json(capsys, "resample", "--input", data["root"] / "B", "--reference", data["root"] / "A", "--output", output,
             *options)
    header = output.read_bytes().split(b"\n\n", 1)[0].decode("latin-1").splitlines()
    assert f"encoding: {encoding}" in header


def test_resample_output_refused_without_force(capsys, data, tmp_path):
    output = tmp_path / "out.nrrd"
    output.write_bytes(b"keep")

    status, out, err = run(capsys, "resample", "--input", data["root"] / "B", "--reference", data["root"] / "A",
                           "--output", output)
    assert_one_line_error(status, out, err, str(output))
    assert output.read_bytes() == b"keep"

    status, out, err = run(capsys, "resample", "--input", data["root"] / "B", "--reference", data["root"] / "A",
                           "--output", output, "--force")
    assert status == 0, err
    assert output.read_bytes() != b"keep"
    assert f"wrote {output}" in out


def test_resample_with_a_flirt_transform_needs_and_uses_the_two_grids(capsys, data, tmp_path):
    """A FLIRT .mat written by `transform` is read back by `resample` against the same two grids."""
    flirt = tmp_path / "b_to_a.mat"
    run_json(capsys, "transform", "--fixed", data["root"] / "A", "--moving", data["root"] / "B", "--mode", "centers",
             "--output", flirt)
    json_transform = tmp_path / "b_to_a.json"
    run_json(capsys, "transform", "--fixed", data["root"] / "A", "--moving", data["root"] / "B", "--mode", "centers",
             "--output", json_transform)

    outputs = {}
    for name, transform in (("flirt", flirt), ("json", json_transform)):
        outputs[name] = tmp_path / f"{name}.nii.gz"
        run_json(capsys, "resample", "--input", data["root"] / "B", "--reference", data["root"] / "A",
                 "--transform", transform, "--interpolation", "nearest", "--output", outputs[name])
    np.testing.assert_array_equal(np.asarray(nib.load(outputs["flirt"]).dataobj),
                                  np.asarray(nib.load(outputs["json"]).dataobj))


# -- failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragments", [
    (["info", "/nonexistent/folder"], ["/nonexistent/folder"]),
    (["transform", "--fixed", "/nonexistent/a", "--moving", "/nonexistent/b", "--output", "{tmp}/t.h5"],
     ["/nonexistent/a"]),
    (["transform", "--fixed", "{A}", "--moving", "{B}", "--output", "{tmp}/t.xyz"], [".xyz"]),
    (["resample", "--input", "{B}", "--reference", "{A}", "--transform", "/nonexistent/t.h5",
      "--output", "{tmp}/o.nrrd"], ["/nonexistent/t.h5"]),
    (["resample", "--input", "{B}", "--reference", "{tmp}/missing.nrrd", "--output", "{tmp}/o.nrrd"],
     ["missing.nrrd"]),
    (["landmarks", "--fixed", "/nonexistent/f.csv", "--moving", "/nonexistent/m.csv", "--output", "{tmp}/t.h5"],
     ["/nonexistent/f.csv"]),
    (["transform", "--fixed", "{A}"], ["--moving"]),  # argparse: a required option missing
    (["transform", "--fixed", "{A}", "--moving", "{B}", "--mode", "bogus", "--output", "{tmp}/t.h5"], ["bogus"]),
    (["frobnicate"], ["frobnicate"]),
])
def test_failures_print_one_error_line_and_exit_2(capsys, data, tmp_path, args, fragments):
    values = {"tmp": tmp_path, "A": data["root"] / "A", "B": data["root"] / "B"}
    status, out, err = run(capsys, *[a.format(**values) for a in args])

    assert_one_line_error(status, out, err, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_resample_dicom_output_without_dicom_reference_is_refused(capsys, data, tmp_path):
    reference = tmp_path / "reference.nrrd"
    run_json(capsys, "resample", "--input", data["root"] / "A", "--reference", data["root"] / "A",
             "--output", reference)

    status, out, err = run(capsys, "resample", "--input", data["root"] / "B", "--reference", reference,
                           "--output", f"{tmp_path / 'dicom'}/")

    assert_one_line_error(status, out, err, "DICOM reference")
    assert not (tmp_path / "dicom").exists()


# -- demo and entry points --------------------------------------------------------------------------


def subprocess_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(PROJECT_ROOT / "AlignSeries"))


def test_python_m_entry_point_info_json(data):
    completed = subprocess.run([PYTHON, "-m", "AlignSeriesLib", "info", str(data["root"] / "both"), "--json"],
                               capture_output=True, text=True, env=subprocess_env(), timeout=120, check=False)

    assert completed.returncode == 0, completed.stderr
    volumes = json.loads(completed.stdout)["volumes"]
    assert sorted(v["series_instance_uid"] for v in volumes) == sorted(s["uid"] for s in SERIES.values())


def test_python_m_entry_point_failure_is_one_line(data, tmp_path):
    completed = subprocess.run([PYTHON, "-m", "AlignSeriesLib", "transform", "--fixed", str(data["root"] / "A"),
                                "--moving", str(data["root"] / "B_other_frame"), "--output", str(tmp_path / "t.h5")],
                               capture_output=True, text=True, env=subprocess_env(), timeout=120, check=False)

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert len(completed.stderr.splitlines()) == 1 and completed.stderr.startswith("error: ")
    assert "Traceback" not in completed.stderr


def test_json_into_a_closed_pipe_is_not_a_traceback(data):
    """`alignseries info --json | head -c 1`: the reader goes away; no traceback, no error line."""
    command = [PYTHON, "-m", "AlignSeriesLib", "info", str(data["root"] / "both"), "--json"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env()) as process:
        process.stdout.read(1)
        process.stdout.close()
        stderr = process.stderr.read().decode()
        process.wait(timeout=120)

    assert "Traceback" not in stderr
    assert process.returncode in (0, 1, 141, -13)  # success or SIGPIPE's conventional statuses


def test_demo_runs_through_the_installed_script_and_refuses_to_overwrite(tmp_path):
    script = Path(PYTHON).parent / "alignseries"
    if not script.exists():
        pytest.skip(f"the alignseries script is not installed beside {PYTHON}")
    output = tmp_path / "demo"
    completed = subprocess.run([str(script), "demo", "--output", str(output), "--json"], capture_output=True,
                               text=True, timeout=180, check=False)

    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["checks"] and all(check["passed"] for check in report["checks"])
    assert all(check["value"] <= check["tolerance"] for check in report["checks"])
    assert (output / "report.json").is_file()
    assert len(list((output / "mr_on_ct_dicom").glob("*.dcm"))) > 0

    again = subprocess.run([str(script), "demo", "--output", str(output)], capture_output=True, text=True,
                           timeout=180, check=False)
    assert again.returncode == 2
    assert len(again.stderr.splitlines()) == 1 and again.stderr.startswith("error: ")
    assert "--force" in again.stderr


def test_demo_in_process_refuses_a_foreign_folder(capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("not a demo")

    status, out, err = run(capsys, "demo", "--output", tmp_path)

    assert_one_line_error(status, out, err, str(tmp_path))
    assert (tmp_path / "mine.txt").read_text() == "not a demo"


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("alignseries ")
    with pytest.raises(SystemExit):
        cli.main(["resample", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--labelmap", "--png", "--force", "--transform", "--interpolation"):
        assert option in help_text


def test_info_regularizes_at_the_spacing_asked_for_or_at_the_finest_acquired_gap(capsys):
    folder = require_shared_dicom() / "ct_ge_tilt_varspacing" / "dicom"
    finest, = run_json(capsys, "info", folder)["volumes"]
    coarse, = run_json(capsys, "info", folder, "--regularize-spacing", "2.5")["volumes"]
    assert finest["regularized"] and coarse["regularized"]
    assert finest["spacing"][2] <= 1.09 and 2.4 <= coarse["spacing"][2] <= 2.5
    assert finest["dimensions"][2] > coarse["dimensions"][2]
    assert any(w["code"] == "regularized" and "smallest" in w["message"] for w in finest["warnings"])


HEAVY_MODULES = ("vtk", "vtkmodules", "slicer", "slicer_core", "SimpleITK", "nibabel", "distributed", "dask")

MODULES_AFTER = """
import json, sys
from AlignSeriesLib import cli
try:
    status = cli.main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
json.dump({"status": status, "modules": sorted(m.split(".")[0] for m in sys.modules)}, sys.stderr)
"""


def modules_imported_by(*arguments) -> set[str]:
    """Top-level modules imported by one ``alignseries`` run, in a fresh interpreter."""
    process = subprocess.run([sys.executable, "-c", MODULES_AFTER, *map(str, arguments)], capture_output=True,
                             text=True, check=False)
    report = json.loads(process.stderr.strip().splitlines()[-1])
    assert report["status"] == 0, process.stderr
    return set(report["modules"])


@pytest.mark.parametrize("arguments", [("--help",), ("resample", "--help"), ("batch", "--help")])
def test_help_starts_no_vtk_slicer_or_other_heavy_module(arguments):
    assert modules_imported_by(*arguments) & set(HEAVY_MODULES + ("pydicom",)) == set()


def test_info_on_dicom_starts_no_vtk_or_slicer(data):
    imported = modules_imported_by("info", "--json", data["root"] / "A")
    assert imported & set(HEAVY_MODULES) == set() and "pydicom" in imported


def stderr_of(arguments, *, terminal: bool) -> str:
    """What ``alignseries ARGUMENTS`` writes on stderr: a pseudo-terminal, or a pipe."""
    import fcntl
    import pty
    import struct
    import termios

    command = [sys.executable, "-m", "AlignSeriesLib", *map(str, arguments)]
    if not terminal:
        return subprocess.run(command, capture_output=True, text=True, check=True).stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    try:
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=follower, check=True)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(leader)


def test_progress_bar_on_a_terminal_only_and_never_with_json(data, tmp_path):
    arguments = ["resample", "--input", data["root"] / "B", "--reference", data["root"] / "A", "--force"]
    assert "resample:" in stderr_of([*arguments, "--output", tmp_path / "a.nrrd"], terminal=True)
    assert "%|" not in stderr_of([*arguments, "--output", tmp_path / "b.nrrd", "--json"], terminal=True)
    assert "%|" not in stderr_of([*arguments, "--output", tmp_path / "c.nrrd"], terminal=False)
    assert "scanning:" in stderr_of(["info", data["root"] / "A"], terminal=True)


def test_resample_with_relative_paths_separates_the_output_from_the_pictures(capsys, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    document = run_json(capsys, "resample", "--input", data["root"] / "A", "--reference", data["root"] / "A",
                        "--output", "out.nrrd", "--png", "pictures", "--preview", "fused.png")
    assert [Path(p).name for p in document["output"]] == ["out.nrrd"]
    extras = {(tmp_path / p).relative_to(tmp_path).as_posix() for p in document["extras"]}
    assert "fused.png" in extras and "pictures/index.csv" in extras
    assert extras == {"fused.png", *(f"pictures/{p.name}" for p in (tmp_path / "pictures").iterdir())}
