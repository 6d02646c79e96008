"""Transform files: plain 4x4 (RAS/LPS), FSL FLIRT, and ITK through Slicer's storage node."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from AlignSeriesLib import mrml, mrml_files
from AlignSeriesLib.errors import OutputExistsError, TransformFileError
from AlignSeriesLib.geometry import VolumeGeometry, ras_to_lps_transform
from AlignSeriesLib.transform_files import (
    flirt_to_ras,
    fsl_scaled_from_ijk,
    ras_to_flirt,
    read_matrix_file,
    read_transform,
    write_matrix_file,
    write_transform,
)


def affine_matrix() -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", [20, -35, 110], degrees=True).as_matrix() @ np.array(
        [[1.1, 0.04, 0.0], [0.0, 0.93, 0.02], [0.03, 0.0, 1.2]])
    matrix[:3, 3] = [12.345678901, -250.5, 1000.125]
    return matrix


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- plain 4x4 files -------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".mat4"])
@pytest.mark.parametrize("frame", ["RAS", "LPS"])
def test_matrix_files_round_trip_exactly_in_both_frames(tmp_path, suffix, frame):
    path = write_matrix_file(tmp_path / f"t{suffix}", affine_matrix(), frame=frame, description="test")
    np.testing.assert_allclose(read_matrix_file(path), affine_matrix(), rtol=0, atol=1e-12)
    text = path.read_text()
    assert f"frame: {frame}" in text if suffix == ".mat4" else json.loads(text)["frame"] == frame


def test_lps_variant_stores_the_lps_matrix_and_declares_it(tmp_path):
    document = json.loads(write_matrix_file(tmp_path / "t.json", affine_matrix(), frame="LPS").read_text())
    assert "moving_to_fixed_ras" not in document
    np.testing.assert_allclose(document["moving_to_fixed_lps"], ras_to_lps_transform(affine_matrix()))


def test_hand_written_mat4_is_ras_unless_declared_lps(tmp_path):
    rows = "1 0 0 10\n0 1 0 20\n0 0 1 30\n0 0 0 1\n"
    (tmp_path / "ras.mat4").write_text(rows)
    (tmp_path / "lps.mat4").write_text("# frame: LPS\n" + rows)
    (tmp_path / "commas.mat4").write_text(rows.replace(" ", ", "))
    np.testing.assert_array_equal(read_matrix_file(tmp_path / "ras.mat4")[:3, 3], [10, 20, 30])
    np.testing.assert_array_equal(read_matrix_file(tmp_path / "lps.mat4")[:3, 3], [-10, -20, 30])
    np.testing.assert_array_equal(read_matrix_file(tmp_path / "commas.mat4")[:3, 3], [10, 20, 30])


# -- FSL FLIRT -------------------------------------------------------------------------------------

# Hand-derived case. Moving: 10 x 20 x 30 voxels, ijk_to_ras = diag(2, 3, 4) + (5, 6, 7): determinant > 0,
# so FSL flips i: x_fsl = 2 (9 - i), y_fsl = 3 j, z_fsl = 4 k. Fixed: 8^3 voxels, ijk_to_ras = diag(-1, 1, 1):
# determinant < 0, no flip: (x, y, z)_fsl = (i, j, k). World transform: translate by (1, 2, 3) RAS.
# A moving scaled point (x, y, z) is voxel (9 - x/2, y/3, z/4), RAS (23 - x, y + 6, z + 7), moved to
# (24 - x, y + 8, z + 10), fixed voxel (x - 24, y + 8, z + 10) = fixed scaled point. So:
HAND_MOVING = VolumeGeometry((10, 20, 30), [[2, 0, 0, 5], [0, 3, 0, 6], [0, 0, 4, 7], [0, 0, 0, 1]])
HAND_FIXED = VolumeGeometry((8, 8, 8), np.diag([-1.0, 1.0, 1.0, 1.0]))
HAND_RAS = np.array([[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]])
HAND_FLIRT = np.array([[1.0, 0, 0, -24], [0, 1, 0, 8], [0, 0, 1, 10], [0, 0, 0, 1]])


def test_flirt_conversion_matches_the_hand_derived_case_in_both_directions():
    np.testing.assert_allclose(ras_to_flirt(HAND_RAS, HAND_MOVING, HAND_FIXED), HAND_FLIRT, atol=1e-12)
    np.testing.assert_allclose(flirt_to_ras(HAND_FLIRT, HAND_MOVING, HAND_FIXED), HAND_RAS, atol=1e-12)


def test_fsl_scaled_coordinates_flip_only_neurological_grids():
    np.testing.assert_allclose(fsl_scaled_from_ijk(HAND_MOVING) @ [0, 0, 0, 1], [18, 0, 0, 1])
    np.testing.assert_allclose(fsl_scaled_from_ijk(HAND_MOVING) @ [9, 1, 1, 1], [0, 3, 4, 1])
    np.testing.assert_allclose(fsl_scaled_from_ijk(HAND_FIXED), np.eye(4))


def test_flirt_files_round_trip_for_oblique_grids(tmp_path):
    oblique = VolumeGeometry.from_spacing_origin_directions(
        (64, 48, 20), (0.9, 0.9, 3.0), (-40, 20, -10), Rotation.from_euler("xz", [15, -8], degrees=True).as_matrix())
    mirrored = VolumeGeometry(HAND_MOVING.dimensions, np.diag([-1.0, 1.0, 1.0, 1.0]) @ HAND_MOVING.ijk_to_ras)
    for moving in (oblique, mirrored):
        path = write_transform(tmp_path / f"flirt{moving.determinant:+.0f}.mat", affine_matrix(),
                               moving_geometry=moving, fixed_geometry=HAND_FIXED)
        back = read_transform(path, moving_geometry=moving, fixed_geometry=HAND_FIXED)
        np.testing.assert_allclose(back, affine_matrix(), atol=1e-9)


def test_flirt_files_need_both_geometries(tmp_path):
    path = tmp_path / "flirt.mat"
    path.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(TransformFileError, match="geometries of both images"):
        read_transform(path, moving_geometry=HAND_MOVING)
    with pytest.raises(TransformFileError, match="geometries of both images"):
        write_transform(tmp_path / "out.mat", np.eye(4))


# -- through Slicer --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".h5", ".tfm", ".txt", ".json", ".mat4"])
def test_every_format_round_trips_through_slicer(scene, tmp_path, suffix):
    node = mrml.set_linear_transform(scene, affine_matrix())
    path = mrml_files.write_transform_file(scene, node, tmp_path / f"t{suffix}")
    back = mrml.transform_to_parent_matrix(mrml_files.read_transform_file(scene, path))
    np.testing.assert_allclose(back, affine_matrix(), rtol=0, atol=1e-9)


def test_flirt_round_trips_through_slicer_using_the_node_volume_references(scene, tmp_path):
    moving = mrml.add_volume_node(scene, np.zeros(HAND_MOVING.shape), HAND_MOVING, "moving")
    fixed = mrml.add_volume_node(scene, np.zeros(HAND_FIXED.shape), HAND_FIXED, "fixed")
    node = mrml.set_linear_transform(scene, HAND_RAS, moving_volume=moving, fixed_volume=fixed)
    path = mrml_files.write_transform_file(scene, node, tmp_path / "t.mat")
    np.testing.assert_allclose(np.loadtxt(path), HAND_FLIRT, atol=1e-12)
    back = mrml_files.read_transform_file(scene, path, moving_geometry=HAND_MOVING, fixed_geometry=HAND_FIXED)
    np.testing.assert_allclose(mrml.transform_to_parent_matrix(back), HAND_RAS, atol=1e-12)


def test_itk_text_file_holds_the_from_parent_lps_matrix(scene, tmp_path):
    node = mrml.set_linear_transform(scene, affine_matrix())
    path = mrml_files.write_transform_file(scene, node, tmp_path / "t.tfm")
    fields = dict(line.split(": ", 1) for line in path.read_text().splitlines() if ": " in line)
    parameters = np.array(fields["Parameters"].split(), dtype=float)
    center = np.array(fields["FixedParameters"].split(), dtype=float)
    linear = parameters[:9].reshape(3, 3)
    from_parent_lps = np.eye(4)
    from_parent_lps[:3, :3] = linear
    from_parent_lps[:3, 3] = parameters[9:] + center - linear @ center
    np.testing.assert_allclose(from_parent_lps, np.linalg.inv(ras_to_lps_transform(affine_matrix())), atol=1e-9)


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, text, message", [
    ("short.mat4", "1 0 0 0\n0 1 0 0\n0 0 1 0\n", "4 lines of 4 numbers"),
    ("word.mat4", "1 0 0 0\n0 one 0 0\n0 0 1 0\n0 0 0 1\n", "not a number"),
    ("singular.mat4", "1 0 0 0\n0 0 0 0\n0 0 1 0\n0 0 0 1\n", "singular"),
    ("projective.mat4", "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 1 1\n", "not affine"),
    ("nan.mat4", "1 0 0 nan\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", "non-finite"),
    ("bad.json", "{not json", "not valid JSON"),
    ("list.json", "[1, 2]", "JSON object"),
    ("key.json", '{"frame": "LPS", "moving_to_fixed_ras": [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]}',
     "'moving_to_fixed_lps' is missing"),
    ("frame.json", '{"frame": "XYZ"}', "unknown frame"),
    ("shape.json", '{"moving_to_fixed_ras": [[1, 0], [0, 1]]}', "4x4"),
    ("unknown.xfm", "1 0 0 0", "unknown transform file type"),
])
def test_bad_files_give_clear_errors_and_stay_unchanged(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    before = digest(path)
    with pytest.raises(TransformFileError, match=message):
        read_transform(path)
    assert digest(path) == before


def test_unreadable_itk_file_through_slicer_is_a_clear_error(scene, tmp_path):
    path = tmp_path / "garbage.tfm"
    path.write_text("#Insight Transform File V1.0\nnonsense\n")
    before = digest(path)
    with pytest.raises(TransformFileError, match="not a transform file Slicer can read"):
        mrml_files.read_transform_file(scene, path)
    assert digest(path) == before
    with pytest.raises(TransformFileError, match="through Slicer"):
        read_transform(path)


@pytest.mark.parametrize("suffix", [".json", ".mat4", ".h5"])
def test_existing_outputs_are_not_overwritten_without_force(scene, tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    path.write_bytes(b"precious")
    node = mrml.set_linear_transform(scene, affine_matrix())
    with pytest.raises(OutputExistsError):
        mrml_files.write_transform_file(scene, node, path)
    assert path.read_bytes() == b"precious"
    mrml_files.write_transform_file(scene, node, path, force=True)
    np.testing.assert_allclose(mrml.transform_to_parent_matrix(mrml_files.read_transform_file(scene, path)),
                               affine_matrix(), atol=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_invalid_matrices_and_frames_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="singular"):
        write_matrix_file(tmp_path / "t.json", np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(TransformFileError, match="unknown frame"):
        write_matrix_file(tmp_path / "t.json", np.eye(4), frame="XYZ")
    with pytest.raises(TransformFileError, match=".json or .mat4"):
        write_matrix_file(tmp_path / "t.txt", np.eye(4))
    assert list(tmp_path.iterdir()) == []
