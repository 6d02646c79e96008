"""Tests of AlignSeriesLib.geometry against hand-computed truths (see hand_geometries.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hand_geometries import CASES, DIMENSIONS, HAND_SPACING, ORIENTATIONS, from_lps, rigid_transform

from AlignSeriesLib import geometry
from AlignSeriesLib.errors import GeometryError
from AlignSeriesLib.geometry import VolumeGeometry, moving_ijk_to_fixed_ijk

# -- index-to-world matrices ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_ijk_to_ras_from_lps_matches_hand_matrix(name):
    np.testing.assert_allclose(from_lps(name).ijk_to_ras, CASES[name]["ijk_to_ras"], atol=1e-12)


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_ijk_to_lps_from_ras_matches_hand_matrix(name):
    geometry_ras = VolumeGeometry(DIMENSIONS, CASES[name]["ijk_to_ras"])
    np.testing.assert_allclose(geometry_ras.ijk_to_lps, CASES[name]["ijk_to_lps"], atol=1e-12)


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_spacing_is_hand_spacing(name):
    np.testing.assert_allclose(from_lps(name).spacing, HAND_SPACING[name], atol=1e-12)


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_origin_lps_is_image_position_patient(name):
    expected_ipp = CASES[name]["ijk_to_lps"][:3, 3]
    np.testing.assert_allclose(from_lps(name).origin_lps, expected_ipp, atol=1e-12)


def test_axial_directions_ras_are_flipped_dicom_axes():
    np.testing.assert_allclose(from_lps("axial").directions_ras, [[-1, 0, 0], [0, -1, 0], [0, 0, 1]], atol=1e-12)


def test_from_spacing_origin_directions_builds_hand_matrix():
    directions_ras = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)  # sagittal: P, I, R
    built = VolumeGeometry.from_spacing_origin_directions(DIMENSIONS, (0.9, 0.8, 3), (-20, 110, 90), directions_ras)
    np.testing.assert_allclose(built.ijk_to_ras, CASES["sagittal"]["ijk_to_ras"], atol=1e-12)


def test_from_spacing_origin_directions_normalizes_direction_columns():
    built = VolumeGeometry.from_spacing_origin_directions((2, 2, 2), (2, 3, 4), (0, 0, 0), np.diag([5.0, 0.1, 7.0]))
    np.testing.assert_allclose(built.ijk_to_ras, np.diag([2.0, 3.0, 4.0, 1.0]), atol=1e-12)


def test_from_nifti_affine_takes_first_three_dimensions():
    built = VolumeGeometry.from_nifti_affine((4, 3, 2, 7), CASES["axial"]["ijk_to_ras"])
    assert built.dimensions == (4, 3, 2)
    assert built.shape == (2, 3, 4)


def test_ijk_to_world_maps_hand_points():
    axial = from_lps("axial")
    # voxel (2, 1, 1): x = 100 - 2 * 0.5, y = 120 - 1 * 0.75, z = 50 + 1 * 2
    np.testing.assert_allclose(axial.ijk_to_world([2, 1, 1]), [99.0, 119.25, 52.0], atol=1e-12)
    np.testing.assert_allclose(axial.world_to_ijk([99.0, 119.25, 52.0]), [2, 1, 1], atol=1e-12)


# -- corners, center, bounds -------------------------------------------------------------------------


def test_axial_corners_ras_are_hand_values():
    expected = [
        [100.0, 120.0, 50.0], [98.5, 120.0, 50.0], [100.0, 118.5, 50.0], [98.5, 118.5, 50.0],
        [100.0, 120.0, 52.0], [98.5, 120.0, 52.0], [100.0, 118.5, 52.0], [98.5, 118.5, 52.0],
    ]  # fmt: skip
    np.testing.assert_allclose(from_lps("axial").corners_ras, expected, atol=1e-12)


def test_axial_corners_lps_are_hand_values():
    expected_first_last = [[-100.0, -120.0, 50.0], [-98.5, -118.5, 52.0]]
    np.testing.assert_allclose(from_lps("axial").corners_lps[[0, -1]], expected_first_last, atol=1e-12)


def test_corner_indices_run_i_fastest():
    expected = [[0, 0, 0], [3, 0, 0], [0, 2, 0], [3, 2, 0], [0, 0, 1], [3, 0, 1], [0, 2, 1], [3, 2, 1]]
    np.testing.assert_array_equal(from_lps("axial").corner_indices, expected)


def test_axial_center_ras_is_hand_value():
    # index (1.5, 1, 0.5): 100 - 0.75, 120 - 0.75, 50 + 1
    np.testing.assert_allclose(from_lps("axial").center_ras, [99.25, 119.25, 51.0], atol=1e-12)


def test_axial_bounds_ras_include_half_voxels():
    expected = [[98.25, 100.25], [118.125, 120.375], [49.0, 53.0]]
    np.testing.assert_allclose(from_lps("axial").bounds_ras, expected, atol=1e-12)


def test_sagittal_bounds_ras_are_hand_values():
    # x from k: -20 + 3 * [-0.5, 1.5]; y from i: 110 - 0.9 * [-0.5, 3.5]; z from j: 90 - 0.8 * [-0.5, 2.5]
    expected = [[-21.5, -15.5], [106.85, 110.45], [88.0, 90.4]]
    np.testing.assert_allclose(from_lps("sagittal").bounds_ras, expected, atol=1e-12)


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_center_is_mean_of_corners(name):
    g = from_lps(name)
    np.testing.assert_allclose(g.center_ras, g.corners_ras.mean(axis=0), atol=1e-12)


# -- orientation and predicates -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_orientation_letters(name):
    assert from_lps(name).orientation == CASES[name]["orientation"]


@pytest.mark.parametrize(
    ("directions_columns", "expected"),
    [
        (np.eye(3), "RAS"),
        (-np.eye(3), "LPI"),
        ([[0, 1, 0], [0, 0, 1], [1, 0, 0]], "SRA"),
        ([[0.9, 0.1, 0], [-0.1, 0.9, 0.2], [0, -0.2, 0.9]], "RAS"),  # oblique: named by the largest component
    ],
)
def test_orientation_letters_function(directions_columns, expected):
    assert geometry.orientation_letters(directions_columns) == expected


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_is_mirrored(name):
    assert from_lps(name).is_mirrored is CASES[name]["mirrored"]


@pytest.mark.parametrize(("name", "expected_determinant"), [(n, -1.0 if CASES[n]["mirrored"] else 1.0) for n in CASES])
def test_determinant_sign(name, expected_determinant):
    assert from_lps(name).determinant == pytest.approx(expected_determinant, abs=1e-12)


def test_mirror_of_any_single_axis_is_mirrored():
    for axis in range(3):
        flip = np.eye(4)
        flip[axis, axis] = -1
        assert VolumeGeometry(DIMENSIONS, flip).is_mirrored, axis


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_orthogonal_geometries_are_orthogonal(name):
    assert from_lps(name).is_orthogonal


def test_gantry_tilted_geometry_is_not_orthogonal():
    # Axial slices stepped 2 mm in z and 0.5 mm in y: a 14 degree gantry tilt.
    tilted = VolumeGeometry(DIMENSIONS, [[1, 0, 0, 0], [0, 1, 0.5, 0], [0, 0, 2, 0], [0, 0, 0, 1]])
    assert not tilted.is_orthogonal
    assert "sheared" in tilted.summary()


def _shifted(name, row, column, delta):
    matrix = CASES[name]["ijk_to_ras"].copy()
    matrix[row, column] += delta
    return matrix


def test_is_close_same_geometry_within_tolerance():
    assert from_lps("oblique").is_close(VolumeGeometry(DIMENSIONS, _shifted("oblique", 1, 2, 1e-8)))


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(VolumeGeometry((4, 3, 3), CASES["axial"]["ijk_to_ras"]), id="dimensions"),
        pytest.param(VolumeGeometry(DIMENSIONS, CASES["mirrored"]["ijk_to_ras"]), id="direction"),
        pytest.param(VolumeGeometry(DIMENSIONS, _shifted("axial", 0, 3, 1e-3)), id="origin"),
        pytest.param(VolumeGeometry(DIMENSIONS, _shifted("axial", 2, 2, 1e-3)), id="spacing"),
    ],
)
def test_is_close_detects_difference(other):
    assert not from_lps("axial").is_close(other)


def test_is_close_respects_atol():
    shifted = VolumeGeometry(DIMENSIONS, _shifted("axial", 0, 3, 1e-3))
    assert not from_lps("axial").is_close(shifted)
    assert from_lps("axial").is_close(shifted, atol=1e-2)


def test_is_close_tolerance_is_absolute_far_from_origin():
    # Scenario 1 sits 1.5 m from the origin: a 0.01 mm shift there must still count as different.
    far = np.diag([0.8, 0.8, 2.0, 1.0])
    far[:3, 3] = [205.0967, 384.0967, -1496.5]
    shifted = far.copy()
    shifted[2, 3] += 0.01
    assert not VolumeGeometry(DIMENSIONS, far).is_close(VolumeGeometry(DIMENSIONS, shifted))


def test_summary_of_mirrored_names_mirror():
    assert from_lps("mirrored").summary() == "4x3x2 voxels, 0.5x0.75x2 mm, LPI (mirrored)"


def test_to_dict_is_json_ready():
    described = from_lps("coronal").to_dict()
    assert described["dimensions"] == [4, 3, 2]
    assert described["orientation"] == "LIP"
    assert described["mirrored"] is False
    np.testing.assert_allclose(described["ijk_to_lps"], CASES["coronal"]["ijk_to_lps"], atol=1e-12)


# -- RAS <-> LPS ----------------------------------------------------------------------------------------


def test_lps_to_ras_points_hand_value():
    np.testing.assert_array_equal(geometry.lps_to_ras_points([[1.0, 2.0, 3.0]]), [[-1.0, -2.0, 3.0]])


def test_points_round_trip_and_input_untouched():
    points_lps = np.random.default_rng(1).normal(scale=100, size=(10, 3))
    original = points_lps.copy()
    np.testing.assert_array_equal(geometry.ras_to_lps_points(geometry.lps_to_ras_points(points_lps)), original)
    np.testing.assert_array_equal(points_lps, original)


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_index_matrices_round_trip(name):
    ijk_to_lps = CASES[name]["ijk_to_lps"]
    np.testing.assert_allclose(geometry.ras_to_lps_matrix(geometry.lps_to_ras_matrix(ijk_to_lps)), ijk_to_lps)


def test_translation_toward_left_is_negative_x_in_ras():
    shift_lps = np.eye(4)
    shift_lps[0, 3] = 10.0  # +10 mm towards Left
    expected_ras = np.eye(4)
    expected_ras[0, 3] = -10.0
    np.testing.assert_array_equal(geometry.lps_to_ras_transform(shift_lps), expected_ras)


def test_rotation_about_left_axis_is_opposite_rotation_about_right_axis():
    # +90 degrees about +x in LPS (the Left axis) is -90 degrees about +x in RAS (the Right axis).
    rotation_lps = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    expected_ras = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=float)
    np.testing.assert_array_equal(geometry.lps_to_ras_transform(rotation_lps), expected_ras)


def test_world_transform_acts_on_same_physical_point():
    transform_ras = rigid_transform()
    transform_lps = geometry.ras_to_lps_transform(transform_ras)
    point_ras = np.array([30.0, -40.0, 12.0])
    moved_via_lps = geometry.apply_affine(transform_lps, [-30.0, 40.0, 12.0])  # the same point, written in LPS
    moved_ras = geometry.apply_affine(transform_ras, point_ras)
    np.testing.assert_allclose(moved_via_lps, [-moved_ras[0], -moved_ras[1], moved_ras[2]], atol=1e-12)


def test_world_transforms_round_trip():
    transform_ras = rigid_transform()
    round_trip = geometry.lps_to_ras_transform(geometry.ras_to_lps_transform(transform_ras))
    np.testing.assert_allclose(round_trip, transform_ras, atol=1e-12)


# -- derived inverses, immutability -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_ras_to_ijk_inverts_ijk_to_ras(name):
    g = from_lps(name)
    np.testing.assert_allclose(g.ras_to_ijk @ CASES[name]["ijk_to_ras"], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(g.lps_to_ijk @ CASES[name]["ijk_to_lps"], np.eye(4), atol=1e-12)


def test_geometry_copies_and_freezes_its_matrix():
    source = CASES["axial"]["ijk_to_ras"].copy()
    g = VolumeGeometry(DIMENSIONS, source)
    source[0, 3] = 999.0
    assert g.ijk_to_ras[0, 3] == 100.0
    with pytest.raises(ValueError, match="read-only"):
        g.ijk_to_ras[0, 3] = 1.0


def test_transformed_moves_grid_by_world_transform():
    shift = np.eye(4)
    shift[:3, 3] = [1.0, 2.0, 3.0]
    moved = from_lps("axial").transformed(shift)
    np.testing.assert_allclose(moved.origin_ras, [101.0, 122.0, 53.0], atol=1e-12)
    np.testing.assert_allclose(moved.spacing, HAND_SPACING["axial"], atol=1e-12)


# -- voxel to voxel ----------------------------------------------------------------------------------------


def _world_point(origin, columns, spacing_free_index):
    """World point of an index written as origin + i * column_i + j * column_j + k * column_k."""
    i, j, k = spacing_free_index
    return origin + i * columns[:, 0] + j * columns[:, 1] + k * columns[:, 2]


@pytest.mark.parametrize("fixed_name", ["axial", "sagittal", "mirrored"])
def test_moving_ijk_to_fixed_ijk_sends_corners_to_same_world_point(fixed_name):
    moving = from_lps("oblique", (7, 6, 5))
    fixed = from_lps(fixed_name, (9, 8, 6))
    moving_to_fixed_ras = rigid_transform(angle_degrees=-17.0, axis=(0.3, -1.0, 0.5), translation=(4.0, -9.0, 2.5))
    voxel_to_voxel = moving_ijk_to_fixed_ijk(moving, fixed, moving_to_fixed_ras)

    moving_columns = CASES["oblique"]["ijk_to_ras"][:3, :3]
    fixed_columns = CASES[fixed_name]["ijk_to_ras"][:3, :3]
    for corner in [(i, j, k) for i in (0, 6) for j in (0, 5) for k in (0, 4)]:
        world_moving = _world_point(CASES["oblique"]["ijk_to_ras"][:3, 3], moving_columns, corner)
        world_fixed = moving_to_fixed_ras[:3, :3] @ world_moving + moving_to_fixed_ras[:3, 3]
        expected_fixed_ijk = np.linalg.solve(fixed_columns, world_fixed - CASES[fixed_name]["ijk_to_ras"][:3, 3])
        np.testing.assert_allclose(geometry.apply_affine(voxel_to_voxel, corner), expected_fixed_ijk, atol=1e-9)


def test_moving_ijk_to_fixed_ijk_identity_for_same_grid():
    g = from_lps("oblique")
    np.testing.assert_allclose(moving_ijk_to_fixed_ijk(g, g), np.eye(4), atol=1e-12)


def test_moving_ijk_to_fixed_ijk_hand_value_between_axial_grids():
    # Scenario 1 style: same orientation, different origin and spacing, identity world transform.
    moving = VolumeGeometry.from_ijk_to_lps((512, 512, 10), [[0.8, 0, 0, -205], [0, 0.8, 0, -384], [0, 0, 2, -1496],
                                                               [0, 0, 0, 1]])
    fixed = VolumeGeometry.from_ijk_to_lps((512, 512, 10), [[0.5, 0, 0, -171], [0, 0.5, 0, -356], [0, 0, 2, -1100],
                                                              [0, 0, 0, 1]])
    # fixed index = (moving LPS - fixed origin) / fixed spacing: i' = (0.8 i - 34) / 0.5, k' = (2 k - 396) / 2
    expected = [[1.6, 0, 0, -68], [0, 1.6, 0, -56], [0, 0, 1, -198], [0, 0, 0, 1]]
    np.testing.assert_allclose(moving_ijk_to_fixed_ijk(moving, fixed), expected, atol=1e-9)


def test_moving_ijk_to_fixed_ijk_rejects_singular_transform():
    with pytest.raises(GeometryError, match="moving_to_fixed_ras is singular"):
        moving_ijk_to_fixed_ijk(from_lps("axial"), from_lps("axial"), np.diag([1.0, 1.0, 0.0, 1.0]))


# -- other file conventions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_nifti_affine_agrees_with_nibabel(name, tmp_path):
    nibabel = pytest.importorskip("nibabel")
    from nibabel.orientations import aff2axcodes

    g = from_lps(name)
    data = np.arange(np.prod(g.dimensions), dtype=np.int16).reshape(g.dimensions)  # nibabel arrays are [i, j, k]
    path = tmp_path / "volume.nii.gz"
    nibabel.save(nibabel.Nifti1Image(data, g.nifti_affine), path)
    loaded = nibabel.load(path)
    np.testing.assert_allclose(loaded.affine, CASES[name]["ijk_to_ras"], atol=1e-5)  # stored as float32
    assert "".join(aff2axcodes(loaded.affine)) == g.orientation
    assert loaded.shape == g.dimensions


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_nrrd_space_directions_match_slicer_header(name, scene, tmp_path):
    from AlignSeriesLib import mrml, mrml_files

    g = from_lps(name)
    node = mrml.add_volume_node(scene, np.zeros(g.shape, dtype=np.int16), g, "volume")
    path = mrml_files.save_node(node, tmp_path / "volume.nrrd")
    header = _nrrd_header(path)
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(_nrrd_vectors(header["space directions"]), g.nrrd_space_directions, atol=1e-9)
    np.testing.assert_allclose(_nrrd_vectors(header["space origin"])[0], g.nrrd_space_origin, atol=1e-9)
    # and against the hand matrix: row n of space directions is LPS column n
    np.testing.assert_allclose(g.nrrd_space_directions, CASES[name]["ijk_to_lps"][:3, :3].T, atol=1e-12)


def _nrrd_header(path) -> dict:
    text = path.read_bytes().split(b"\n\n", 1)[0].decode("ascii")
    fields = {}
    for line in text.splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip()] = value.strip()
    return fields


def _nrrd_vectors(text: str) -> np.ndarray:
    return np.array([[float(v) for v in group.split(",")] for group in re.findall(r"\(([^)]*)\)", text)])


# -- validation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        pytest.param(np.diag([1.0, 1.0, 0.0, 1.0]), "ijk_to_ras is singular", id="singular-zero-column"),
        pytest.param([[1, 2, 0, 0], [2, 4, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "is singular", id="singular-rank2"),
        pytest.param(np.diag([1.0, 1.0, 1e-12, 1.0]), "ijk_to_ras is singular", id="nearly-singular"),
        pytest.param(np.diag([1.0, np.nan, 1.0, 1.0]), "non-finite", id="nan"),
        pytest.param(np.diag([1.0, 1.0, np.inf, 1.0]), "non-finite", id="inf"),
        pytest.param(np.eye(3), r"must be 4x4, got shape \(3, 3\)", id="shape-3x3"),
        pytest.param(np.eye(4)[:3], r"must be 4x4, got shape \(3, 4\)", id="shape-3x4"),
        pytest.param([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0.5, 1]], "not affine", id="projective"),
        pytest.param([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2]], "not affine: last row", id="scaled-w"),
        pytest.param([["a", 0, 0, 0]] * 4, "not a numeric 4x4 matrix", id="text"),
    ],
)
def test_invalid_matrix_is_refused(matrix, message):
    with pytest.raises(GeometryError, match=message):
        VolumeGeometry(DIMENSIONS, matrix)


def test_invalid_lps_matrix_names_ijk_to_lps():
    with pytest.raises(GeometryError, match="ijk_to_lps is singular"):
        VolumeGeometry.from_ijk_to_lps(DIMENSIONS, np.zeros((4, 4)) + np.diag([0, 0, 0, 1]))


@pytest.mark.parametrize(
    "dimensions",
    [
        pytest.param((4, 3, 0), id="zero"),
        pytest.param((4, -3, 2), id="negative"),
        pytest.param((4, 3, 2.5), id="fractional"),
        pytest.param((4, 3), id="two"),
        pytest.param((4, 3, 2, 1), id="four"),
        pytest.param(("four", 3, 2), id="text"),
        pytest.param(None, id="none"),
    ],
)
def test_invalid_dimensions_are_refused(dimensions):
    with pytest.raises(GeometryError, match="dimensions must be three"):
        VolumeGeometry(dimensions, np.eye(4))


def test_whole_float_dimensions_are_accepted():
    assert VolumeGeometry((4.0, 3.0, np.int64(2)), np.eye(4)).dimensions == (4, 3, 2)


@pytest.mark.parametrize(
    "spacing",
    [
        pytest.param((1, 0, 1), id="zero"),
        pytest.param((1, -1, 1), id="negative"),
        pytest.param((1, np.nan, 1), id="nan"),
        pytest.param((1, 1), id="two-values"),
    ],
)
def test_invalid_spacing_is_refused(spacing):
    with pytest.raises(GeometryError, match="spacing must be three positive finite numbers"):
        VolumeGeometry.from_spacing_origin_directions(DIMENSIONS, spacing, (0, 0, 0))


@pytest.mark.parametrize(
    ("directions", "message"),
    [
        pytest.param(np.eye(2), r"directions must be 3x3, got shape \(2, 2\)", id="shape"),
        pytest.param(np.diag([1.0, 0.0, 1.0]), "direction vectors must be non-zero", id="zero-vector"),
        pytest.param([[1, 1, 0], [0, 0, 0], [0, 0, 1]], "singular", id="parallel"),
    ],
)
def test_invalid_directions_are_refused(directions, message):
    with pytest.raises(GeometryError, match=message):
        VolumeGeometry.from_spacing_origin_directions(DIMENSIONS, (1, 1, 1), (0, 0, 0), directions)


def test_geometry_error_is_a_value_error():
    assert issubclass(GeometryError, ValueError)
