"""Tests of AlignSeriesLib.resample: placement, agreement with SimpleITK, label safety, value range."""

from __future__ import annotations

import numpy as np
import pytest

from AlignSeriesLib.errors import GeometryError, OperationCancelledError, ResampleError
from AlignSeriesLib.geometry import VolumeGeometry, apply_affine
from AlignSeriesLib.resample import (
    LABELWISE_MAX_LABELS,
    crop_to_overlap,
    footprint_box,
    geometry_covering,
    reference_ijk_to_input_ijk_matrix,
    resample_to_geometry,
    slab,
)


def rotation(axis, degrees) -> np.ndarray:
    """3x3 rotation about ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def rigid(axis=(1, 2, 3), degrees=10.0, shift=(4.0, -3.0, 5.0)) -> np.ndarray:
    """4x4 rigid moving-to-fixed RAS transform."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(axis, degrees)
    matrix[:3, 3] = shift
    return matrix


DIRECTIONS = {
    "axial": np.eye(3),
    "lps_axial": np.diag([-1.0, -1.0, 1.0]),
    "sagittal": np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float),
    "oblique": rotation((1, -1, 2), 23.0),
    "mirrored": rotation((2, 1, 0), 15.0) @ np.diag([1.0, 1.0, -1.0]),
}


def grid(dimensions, spacing, orientation="axial", centre=(0.0, 0.0, 0.0)) -> VolumeGeometry:
    """A geometry of the given orientation centred on ``centre`` (RAS)."""
    directions = DIRECTIONS[orientation]
    half = (np.asarray(dimensions) - 1) / 2 * np.asarray(spacing)
    origin = np.asarray(centre) - directions @ half
    return VolumeGeometry.from_spacing_origin_directions(dimensions, spacing, origin, directions)


def world_points(geometry: VolumeGeometry) -> np.ndarray:
    """(K, J, I, 3) RAS positions of every voxel of a grid."""
    k, j, i = np.indices(geometry.shape)
    return geometry.ijk_to_world(np.stack([i, j, k], axis=-1).astype(float))


def smooth_phantom(geometry: VolumeGeometry, dtype=np.float32) -> np.ndarray:
    """A smooth analytic field (RAS mm) sampled on a grid, range about 0..1000."""
    x, y, z = np.moveaxis(world_points(geometry), -1, 0)
    field = 500 + 300 * np.sin(x / 9.0) * np.cos(y / 11.0) + 200 * np.cos(z / 7.0 + x / 13.0)
    return field.astype(dtype)


def blobs(geometry: VolumeGeometry, centres_ras, sigma_mm=2.0) -> np.ndarray:
    """Gaussian blobs (peak 1000) at RAS positions, float32 [k, j, i]."""
    points = world_points(geometry)
    volume = np.zeros(geometry.shape, dtype=np.float32)
    for centre in centres_ras:
        volume += 1000 * np.exp(-np.sum((points - centre) ** 2, axis=-1) / (2 * sigma_mm**2))
    return volume


def centroid_near(volume: np.ndarray, peak_kji, radius=4) -> np.ndarray:
    """Intensity centroid (i, j, k) in a cube of ``radius`` voxels around ``peak_kji``."""
    lo = np.maximum(np.asarray(peak_kji) - radius, 0)
    window = volume[lo[0]: peak_kji[0] + radius + 1, lo[1]: peak_kji[1] + radius + 1, lo[2]: peak_kji[2] + radius + 1]
    weights = window.astype(float)
    k, j, i = np.indices(window.shape)
    total = weights.sum()
    return np.array([(i * weights).sum(), (j * weights).sum(), (k * weights).sum()]) / total + lo[::-1]


INPUT = dict(dimensions=(40, 36, 30), spacing=(1.0, 1.2, 1.5))
REFERENCE = dict(dimensions=(44, 38, 34), spacing=(1.3, 1.1, 1.4))


# -- placement ------------------------------------------------------------------------------------


@pytest.mark.parametrize("input_orientation", ["axial", "oblique", "mirrored"])
@pytest.mark.parametrize("reference_orientation", ["lps_axial", "sagittal", "oblique", "mirrored"])
def test_markers_land_on_expected_reference_voxels(input_orientation, reference_orientation):
    input_geometry = grid(orientation=input_orientation, **INPUT)
    reference = grid(orientation=reference_orientation, centre=(3.0, -2.0, 4.0), **REFERENCE)
    moving_to_fixed_ras = rigid()
    markers_input_ras = np.array([[-8.0, -6.0, -9.0], [9.0, 7.0, 8.0], [6.0, -8.0, 1.0], [-7.0, 8.0, 6.0]])
    result = resample_to_geometry(blobs(input_geometry, markers_input_ras), input_geometry, reference,
                                  moving_to_fixed_ras, interpolation="linear")
    expected_ijk = reference.world_to_ijk(apply_affine(moving_to_fixed_ras, markers_input_ras))
    for expected in expected_ijk:
        peak = np.round(expected).astype(int)[::-1]
        assert np.all(np.abs(centroid_near(result.array, peak) - expected) <= 0.5), expected


@pytest.mark.parametrize("interpolation", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64])
def test_identity_reproduces_input_exactly(interpolation, dtype):
    geometry = grid((7, 6, 5), (1.0, 2.0, 3.0), "oblique")
    array = np.random.default_rng(1).integers(0, 200, geometry.shape).astype(dtype)
    result = resample_to_geometry(array, geometry, geometry, interpolation=interpolation)
    assert result.array.dtype == dtype
    np.testing.assert_array_equal(result.array, array)
    assert result.warnings == ()


def test_whole_voxel_shift_moves_array_by_one_index():
    geometry = grid((6, 5, 4), (2.0, 1.0, 1.0))
    array = np.arange(np.prod(geometry.shape), dtype=np.int16).reshape(geometry.shape)
    shift = np.eye(4)
    shift[0, 3] = 2.0  # one voxel along i, in mm
    result = resample_to_geometry(array, geometry, geometry, shift, interpolation="linear", background=-1)
    np.testing.assert_array_equal(result.array[:, :, 1:], array[:, :, :-1])
    np.testing.assert_array_equal(result.array[:, :, 0], -1)


def test_reference_index_to_input_index_matrix_matches_definition():
    input_geometry, reference = grid(orientation="oblique", **INPUT), grid(orientation="mirrored", **REFERENCE)
    transform = rigid()
    expected = input_geometry.ras_to_ijk @ np.linalg.inv(transform) @ reference.ijk_to_ras
    np.testing.assert_allclose(reference_ijk_to_input_ijk_matrix(reference, input_geometry, transform), expected)


# -- agreement with SimpleITK and round trips -----------------------------------------------------


def _sitk_image(array, geometry: VolumeGeometry):
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing.tolist())
    image.SetOrigin(geometry.origin_lps.tolist())
    image.SetDirection((geometry.ijk_to_lps[:3, :3] / geometry.spacing).ravel().tolist())
    return image


def _sitk_resample(array, input_geometry, reference, moving_to_fixed_ras, interpolator):
    """SimpleITK's resampling: its transform maps fixed (output) LPS points to moving (input) ones."""
    sitk = pytest.importorskip("SimpleITK")
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    fixed_to_moving_lps = flip @ np.linalg.inv(moving_to_fixed_ras) @ flip
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(fixed_to_moving_lps[:3, :3].ravel().tolist())
    transform.SetTranslation(fixed_to_moving_lps[:3, 3].tolist())
    output = sitk.Resample(_sitk_image(array, input_geometry), _sitk_image(np.zeros(reference.shape, array.dtype),
                           reference), transform, interpolator, 0.0, _sitk_pixel(array.dtype))
    return sitk.GetArrayFromImage(output)


def _sitk_pixel(dtype):
    sitk = pytest.importorskip("SimpleITK")
    return {np.dtype(np.float32): sitk.sitkFloat32, np.dtype(np.int16): sitk.sitkInt16}[np.dtype(dtype)]


def inside_mask(reference: VolumeGeometry, input_geometry: VolumeGeometry, moving_to_fixed_ras, margin=1.0):
    """Reference voxels that sample the input at least ``margin`` voxels inside its first/last centres."""
    matrix = reference_ijk_to_input_ijk_matrix(reference, input_geometry, moving_to_fixed_ras)
    k, j, i = np.indices(reference.shape)
    sampled = apply_affine(matrix, np.stack([i, j, k], axis=-1).astype(float))
    upper = np.array(input_geometry.dimensions) - 1 - margin
    return np.all((sampled >= margin) & (sampled <= upper), axis=-1)


@pytest.mark.parametrize("orientations", [("axial", "lps_axial"), ("oblique", "sagittal"), ("mirrored", "oblique")])
def test_linear_agrees_with_simpleitk(orientations):
    sitk = pytest.importorskip("SimpleITK")
    input_geometry = grid(orientation=orientations[0], **INPUT)
    reference = grid(orientation=orientations[1], centre=(2.0, 1.0, -3.0), **REFERENCE)
    transform = rigid()
    array = smooth_phantom(input_geometry)
    ours = resample_to_geometry(array, input_geometry, reference, transform).array
    theirs = _sitk_resample(array, input_geometry, reference, transform, sitk.sitkLinear)
    inside = inside_mask(reference, input_geometry, transform)
    assert inside.sum() > 0.2 * inside.size
    value_range = float(array.max() - array.min())
    assert np.mean(np.abs(ours[inside] - theirs[inside])) < 0.01 * value_range
    assert np.max(np.abs(ours[inside] - theirs[inside])) < 1e-3 * value_range


def test_nearest_agrees_with_simpleitk_on_integers():
    sitk = pytest.importorskip("SimpleITK")
    input_geometry, reference = grid(orientation="oblique", **INPUT), grid(orientation="lps_axial", **REFERENCE)
    transform = rigid(degrees=7.0)
    array = smooth_phantom(input_geometry, np.int16)
    ours = resample_to_geometry(array, input_geometry, reference, transform, interpolation="nearest").array
    theirs = _sitk_resample(array, input_geometry, reference, transform, sitk.sitkNearestNeighbor)
    inside = inside_mask(reference, input_geometry, transform)
    assert np.mean(ours[inside] == theirs[inside]) > 0.99  # exact ties may round either way


@pytest.mark.parametrize("interpolation, tolerance", [("linear", 0.01), ("cubic", 0.005)])
def test_round_trip_reproduces_input_in_overlap(interpolation, tolerance):
    geometry_a = grid(orientation="oblique", **INPUT)
    geometry_b = grid((60, 56, 50), (0.8, 0.8, 0.8), "mirrored")
    transform = rigid(degrees=12.0, shift=(1.5, -2.0, 0.5))
    array = smooth_phantom(geometry_a)
    on_b = resample_to_geometry(array, geometry_a, geometry_b, transform, interpolation=interpolation).array
    back = resample_to_geometry(on_b, geometry_b, geometry_a, np.linalg.inv(transform),
                                interpolation=interpolation).array
    overlap = inside_mask(geometry_b, geometry_a, transform, margin=2.0)
    back_overlap = inside_mask(geometry_a, geometry_b, np.linalg.inv(transform), margin=2.0)
    assert overlap.any() and back_overlap.sum() > 0.3 * back_overlap.size
    value_range = float(array.max() - array.min())
    assert np.mean(np.abs(back[back_overlap] - array[back_overlap])) < tolerance * value_range


# -- value range: rounding, clamping, widening, background ----------------------------------------


def test_integer_output_is_rounded_not_truncated():
    input_geometry, reference = grid(orientation="oblique", **INPUT), grid(orientation="axial", **REFERENCE)
    transform = rigid(degrees=5.0, shift=(0.37, 0.21, -0.44))
    array = smooth_phantom(input_geometry, np.int16)
    exact = resample_to_geometry(array.astype(np.float64), input_geometry, reference, transform).array
    rounded = resample_to_geometry(array, input_geometry, reference, transform).array
    inside = inside_mask(reference, input_geometry, transform)
    difference = rounded[inside] - exact[inside]
    assert np.max(np.abs(difference)) <= 0.5 + 1e-6
    assert abs(np.mean(difference)) < 0.02  # truncation would give about -0.5


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_cubic_overshoot_is_clamped_to_input_range(dtype):
    geometry = grid((20, 4, 4), (1.0, 1.0, 1.0))
    high = np.iinfo(dtype).max if np.dtype(dtype).kind in "iu" else 100.0
    array = np.zeros(geometry.shape, dtype=dtype)
    array[:, :, 10:] = high
    shift = np.eye(4)
    shift[0, 3] = 0.3
    result = resample_to_geometry(array, geometry, geometry, shift, interpolation="cubic")
    assert result.array.dtype == dtype
    assert result.array.min() == 0 and result.array.max() == high
    assert np.all(result.array[:, :, 12:] >= 0.9 * high)  # no wrap-around to small values past the edge


def test_background_default_is_input_minimum_and_settable():
    geometry = grid((10, 10, 10), (1.0, 1.0, 1.0))
    array = np.full(geometry.shape, 50, dtype=np.int16)
    array[0, 0, 0] = -7
    shift = np.eye(4)
    shift[:3, 3] = 5.0
    default = resample_to_geometry(array, geometry, geometry, shift)
    assert default.background == -7 and default.array[0, 0, 0] == -7 and default.array[-1, -1, -1] == 50
    chosen = resample_to_geometry(array, geometry, geometry, shift, background=1000)
    assert chosen.array[0, 0, 0] == 1000 and chosen.array.dtype == np.int16


def test_background_outside_type_widens_and_warns():
    geometry = grid((6, 6, 6), (1.0, 1.0, 1.0))
    array = np.full(geometry.shape, 200, dtype=np.uint8)
    shift = np.eye(4)
    shift[0, 3] = 3.0
    result = resample_to_geometry(array, geometry, geometry, shift, background=-1)
    assert result.array.dtype == np.int16
    assert [w.code for w in result.warnings] == ["dtype_widened"]
    assert "uint8" in result.warnings[0].message and result.array.min() == -1 and result.array.max() == 200
    nan_result = resample_to_geometry(array.astype(np.int16), geometry, geometry, shift, background=float("nan"))
    assert nan_result.array.dtype == np.float32 and np.isnan(nan_result.array[0, 0, 0])


# -- label maps -----------------------------------------------------------------------------------


def label_phantom(geometry: VolumeGeometry, labels=(1, 2, 5, 9)) -> np.ndarray:
    """Nested spheres and a slab of distinct labels (uint8, [k, j, i])."""
    points = world_points(geometry)
    radius = np.linalg.norm(points - geometry.center_ras, axis=-1)
    array = np.zeros(geometry.shape, dtype=np.uint8)
    array[radius < 12] = labels[0]
    array[radius < 7] = labels[1]
    array[radius < 3] = labels[2]
    array[np.abs(points[..., 0] - geometry.center_ras[0] - 10) < 1.0] = labels[3]
    return array


@pytest.mark.parametrize("interpolation", ["nearest", "linear", "cubic"])
def test_label_map_keeps_exactly_its_label_set(interpolation):
    input_geometry = grid(orientation="oblique", **INPUT)
    reference = grid(orientation="mirrored", **REFERENCE)
    array = label_phantom(input_geometry)
    result = resample_to_geometry(array, input_geometry, reference, rigid(), interpolation=interpolation,
                                  labelmap=True)
    assert set(np.unique(result.array)) == set(np.unique(array))
    assert result.array.dtype == np.uint8
    assert result.method == ("nearest" if interpolation == "nearest" else "label-wise linear")


def test_label_wise_vote_keeps_thin_sheets_that_nearest_drops():
    input_geometry = grid((16, 16, 16), (1.0, 1.0, 1.0))
    array = np.zeros(input_geometry.shape, dtype=np.int16)
    array[2:14:3] = 4  # one-voxel sheets at k = 2, 5, 8, 11 (both parities)
    reference = geometry_covering(input_geometry, 2.0)  # 2 mm voxels, each box covering two slices
    voted = resample_to_geometry(array, input_geometry, reference, labelmap=True, interpolation="linear").array
    nearest = resample_to_geometry(array, input_geometry, reference, labelmap=True, interpolation="nearest").array
    sheets_voted = np.flatnonzero(voted[:, 4, 4] == 4)
    sheets_nearest = np.flatnonzero(nearest[:, 4, 4] == 4)
    np.testing.assert_array_equal(sheets_voted, [1, 2, 4, 5])  # every sheet kept, in the slice covering it
    assert len(sheets_nearest) == 2  # nearest sampling keeps only the sheets on one parity


def test_many_labels_fall_back_to_nearest_and_stay_label_safe():
    input_geometry = grid(orientation="oblique", **INPUT)
    array = np.random.default_rng(3).choice(np.arange(0, 300, 7), input_geometry.shape).astype(np.uint16)
    assert len(np.unique(array)) > LABELWISE_MAX_LABELS
    result = resample_to_geometry(array, input_geometry, grid(orientation="sagittal", **REFERENCE), rigid(),
                                  labelmap=True)
    assert result.method == "nearest" and [w.code for w in result.warnings] == ["labels_nearest"]
    assert set(np.unique(result.array)) <= set(np.unique(array))


def test_boolean_mask_stays_boolean():
    geometry = grid((12, 12, 12), (1.0, 1.0, 1.0))
    mask = np.zeros(geometry.shape, dtype=bool)
    mask[3:9, 3:9, 3:9] = True
    result = resample_to_geometry(mask, geometry, grid((10, 10, 10), (1.2, 1.2, 1.2), "oblique"), labelmap=True)
    assert result.array.dtype == bool and result.array.any() and not result.array.all()


# -- explicit reference geometries ----------------------------------------------------------------


@pytest.mark.parametrize("orientation", ["axial", "oblique", "mirrored"])
def test_geometry_covering_is_axis_aligned_isotropic_and_covers_input(orientation):
    input_geometry = grid(orientation=orientation, **INPUT)
    covering = geometry_covering(input_geometry, 1.7)
    np.testing.assert_allclose(covering.directions_ras, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(covering.spacing, 1.7)
    low, high = covering.bounds_ras.T
    assert np.all(input_geometry.bounds_ras[:, 0] >= low - 1e-9)
    assert np.all(input_geometry.bounds_ras[:, 1] <= high + 1e-9)
    assert np.all(high - low - np.ptp(input_geometry.bounds_ras, axis=1) < 1.7 + 1e-9)  # no extra voxel
    np.testing.assert_allclose(covering.center_ras, input_geometry.center_ras, atol=1e-9)
    assert geometry_covering(input_geometry).spacing.tolist() == [1.0, 1.0, 1.0]  # smallest input spacing


def test_slab_keeps_the_true_position_of_each_chunk():
    input_geometry, reference = grid(orientation="oblique", **INPUT), grid(orientation="mirrored", **REFERENCE)
    array = smooth_phantom(input_geometry)
    whole = resample_to_geometry(array, input_geometry, reference, rigid()).array
    chunks = [resample_to_geometry(array, input_geometry, slab(reference, first, min(8, 34 - first)), rigid()).array
              for first in range(0, 34, 8)]
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-3)
    part = slab(reference, 5, 3)
    assert part.dimensions == (44, 38, 3)
    np.testing.assert_allclose(part.ijk_to_world([0, 0, 0]), reference.ijk_to_world([0, 0, 5]))


@pytest.mark.parametrize("first, count", [(-1, 2), (30, 5), (0, 0)])
def test_slab_outside_reference_is_refused(first, count):
    with pytest.raises(GeometryError, match="slab"):
        slab(grid(**REFERENCE), first, count)


def test_crop_to_overlap_is_the_covered_part_of_the_reference():
    reference = grid((80, 70, 60), (1.0, 1.0, 1.0), "lps_axial")
    input_geometry = grid((20, 16, 12), (1.5, 1.5, 2.0), "axial", centre=(10.0, -5.0, 8.0))
    transform = rigid(degrees=0.0, shift=(3.0, 0.0, 0.0))
    crop = crop_to_overlap(reference, input_geometry, transform)
    assert crop.dimensions == (30, 24, 24)
    array = smooth_phantom(input_geometry)
    on_crop = resample_to_geometry(array, input_geometry, crop, transform).array
    whole = resample_to_geometry(array, input_geometry, reference, transform).array
    first = np.round(reference.world_to_ijk(crop.origin_ras)).astype(int)
    np.testing.assert_allclose(whole[first[2]:first[2] + 24, first[1]:first[1] + 24, first[0]:first[0] + 30], on_crop)
    outside = whole.copy()
    outside[first[2]:first[2] + 24, first[1]:first[1] + 24, first[0]:first[0] + 30] = array.min()
    assert np.all(outside == array.min())  # nothing of the input lies outside the crop


# -- bad input ------------------------------------------------------------------------------------


def test_no_overlap_warns_and_returns_background():
    input_geometry, reference = grid(**INPUT), grid(**REFERENCE)
    far = np.eye(4)
    far[:3, 3] = (500.0, 0.0, 0.0)
    result = resample_to_geometry(smooth_phantom(input_geometry), input_geometry, reference, far, background=-5)
    assert [w.code for w in result.warnings] == ["no_overlap"]
    assert "does not overlap" in result.warnings[0].message and "all background" in result.warnings[0].message
    assert result.array.shape == reference.shape and np.all(result.array == -5)
    with pytest.raises(GeometryError, match="does not overlap"):
        crop_to_overlap(reference, input_geometry, far)


@pytest.mark.parametrize("offset_mm, overlaps", [(4.0, False), (3.0, True)])
def test_overlap_test_is_exact_for_oblique_grids(offset_mm, overlaps):
    # A 10 mm square turned 45 degrees has its edge 5 mm from its centre along the diagonal: centred
    # offset*sqrt(2) mm beyond the reference's corner it misses it although the bounding boxes overlap.
    reference = VolumeGeometry.from_spacing_origin_directions((10, 10, 10), (1, 1, 1), (0, 0, 0))
    centre = np.array([9.5 + offset_mm, 9.5 + offset_mm, 4.5])
    directions = rotation((0, 0, 1), 45.0)
    origin = centre - directions @ [4.5, 4.5, 4.5]
    diamond = VolumeGeometry.from_spacing_origin_directions((10, 10, 10), (1, 1, 1), origin, directions)
    assert diamond.bounds_ras[0, 0] < 9.5  # bounding boxes overlap in both cases
    result = resample_to_geometry(np.ones(diamond.shape, np.int16), diamond, reference, background=0)
    assert bool(result.array.any()) == overlaps
    assert [w.code for w in result.warnings] == ([] if overlaps else ["no_overlap"])


@pytest.mark.parametrize("transform, match", [
    (np.eye(3), "4x4"),
    ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0.1, 1]], "not affine"),
    (np.diag([1.0, 1.0, 0.0, 1.0]), "singular"),
    (object(), "non-linear"),
    ("not a matrix", "non-linear"),
])
def test_unsupported_transform_is_refused(transform, match):
    geometry = grid((4, 4, 4), (1.0, 1.0, 1.0))
    with pytest.raises((ResampleError, GeometryError), match=match):
        resample_to_geometry(np.zeros(geometry.shape), geometry, geometry, transform)


def test_missing_or_wrong_arguments_are_refused():
    geometry = grid((4, 5, 6), (1.0, 1.0, 1.0))
    array = np.zeros(geometry.shape, dtype=np.int16)
    with pytest.raises(GeometryError, match="reference_geometry is missing"):
        resample_to_geometry(array, geometry, None)
    with pytest.raises(GeometryError, match="must be a VolumeGeometry"):
        resample_to_geometry(array, geometry, np.eye(4))
    with pytest.raises(ResampleError, match=r"shape \(5, 4, 6\), expected \(6, 5, 4\)"):
        resample_to_geometry(np.zeros((5, 4, 6)), geometry, geometry)
    with pytest.raises(ResampleError, match="interpolation must be one of"):
        resample_to_geometry(array, geometry, geometry, interpolation="bspline")
    with pytest.raises(ResampleError, match="unsupported type complex128"):
        resample_to_geometry(array.astype(complex), geometry, geometry)


def test_progress_reports_fractions_and_can_cancel():
    input_geometry, reference = grid(orientation="oblique", **INPUT), grid(**REFERENCE)
    array = smooth_phantom(input_geometry, np.int16)
    fractions = []
    reported = resample_to_geometry(array, input_geometry, reference, rigid(), progress=fractions.append)
    plain = resample_to_geometry(array, input_geometry, reference, rigid())
    np.testing.assert_array_equal(reported.array, plain.array)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 1
    with pytest.raises(OperationCancelledError, match="cancelled"):
        resample_to_geometry(array, input_geometry, reference, rigid(), progress=lambda fraction: fraction > 0.3)


def test_input_is_never_modified():
    input_geometry = grid(orientation="oblique", **INPUT)
    array = label_phantom(input_geometry)
    before = array.copy()
    resample_to_geometry(array, input_geometry, grid(**REFERENCE), rigid(), labelmap=True)
    np.testing.assert_array_equal(array, before)


# -- exact where nothing moves --------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("labelmap", [False, True])
def test_grids_that_coincide_up_to_axis_permutation_and_flip_copy_voxels(interpolation, labelmap):
    rng = np.random.default_rng(5)
    array = rng.integers(0, 30 if labelmap else 3000, (7, 6, 5)).astype(np.int16)
    input_geometry = VolumeGeometry.from_spacing_origin_directions((5, 6, 7), (0.9, 1.1, 2.5), (-4, 3, 10),
                                                                   DIRECTIONS["oblique"])
    # reference (i, j, k) -> input (i, j, k): i_in = 4 - k_ref + 1, j_in = i_ref - 1, k_in = j_ref (flip, permute)
    reference_ijk_to_input_ijk = np.array([[0, 0, -1, 5], [1, 0, 0, -1], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)
    reference_ijk_to_input_ijk[:3, 3] += 4e-4  # below EXACT_COPY_ATOL: a float32-rounded header
    reference = VolumeGeometry((8, 6, 6), input_geometry.ijk_to_ras @ reference_ijk_to_input_ijk)
    result = resample_to_geometry(array, input_geometry, reference, interpolation=interpolation, labelmap=labelmap,
                                  background=-7 if not labelmap else 0)
    assert result.method == "copy"
    k, j, i = np.indices(reference.shape)
    i_in, j_in, k_in = 5 - k, i - 1, j
    inside = (i_in >= 0) & (i_in < 5) & (j_in >= 0) & (j_in < 6) & (k_in < 7)
    expected = np.where(inside, array[np.clip(k_in, 0, 6), np.clip(j_in, 0, 5), np.clip(i_in, 0, 4)],
                        0 if labelmap else -7)
    np.testing.assert_array_equal(result.array, expected)
    assert result.array.dtype == np.int16


def test_a_grid_offset_beyond_the_copy_tolerance_is_interpolated():
    array = np.arange(5 * 6 * 7, dtype=np.float32).reshape(7, 6, 5)
    input_geometry = VolumeGeometry.from_spacing_origin_directions((5, 6, 7), (1, 1, 1), (0, 0, 0))
    for offset, method in ((5e-4, "copy"), (2e-3, "linear")):
        reference = slab(input_geometry, 0, 7).transformed(np.array([[1, 0, 0, offset], [0, 1, 0, 0], [0, 0, 1, 0],
                                                                      [0, 0, 0, 1]]))
        result = resample_to_geometry(array, input_geometry, reference)
        assert result.method == method
    assert not np.array_equal(result.array, array)  # 2e-3 voxel: interpolated, values move


# -- work proportional to the overlap: the footprint ----------------------------------------------

SMALL_INPUT = dict(dimensions=(14, 12, 10), spacing=(1.1, 0.9, 1.3))
WIDE_REFERENCE = dict(dimensions=(50, 46, 40), spacing=(1.0, 1.0, 1.0))
REFLECTION = np.diag([-1.0, 1.0, 1.0, 1.0]) @ rigid(degrees=17.0, shift=(2.0, 1.0, -3.0))


def footprint_case(kind: str):
    """(array, input geometry, reference geometry, moving_to_fixed_ras) of a named case."""
    input_geometry = grid(orientation="oblique", centre=(4.0, -3.0, 2.0), **SMALL_INPUT)
    reference = grid(orientation="lps_axial", **WIDE_REFERENCE)
    transform = rigid(degrees=23.0)
    if kind == "reflection":
        transform = REFLECTION
    elif kind == "slab":  # a chunk of 3 slices through the input
        reference = slab(reference, 19, 3)
    elif kind == "tilted plane":  # one slice of an irregular reference, on its own tilted plane
        reference = grid((50, 46, 1), (1.0, 1.0, 1.0), "oblique", centre=(3.0, -2.0, 1.0))
    elif kind == "whole grid":  # the input covers the whole (small) reference
        reference = grid((8, 7, 6), (1.0, 1.0, 1.0), "mirrored", centre=(5.0, -3.0, 2.0))
    elif kind == "edge":  # the input crosses the reference's corner
        transform = np.eye(4)
        transform[:3, 3] = (-24.0, 22.0, -19.0)
    values = np.random.default_rng(11).integers(0, 1000, input_geometry.shape)
    return values.astype(np.int16) + smooth_phantom(input_geometry, np.int16), input_geometry, reference, transform


FOOTPRINT_CASES = ["oblique", "reflection", "slab", "tilted plane", "whole grid", "edge"]


@pytest.mark.parametrize("kind", FOOTPRINT_CASES)
@pytest.mark.parametrize("interpolation", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_footprint_resampling_is_the_full_grid_resampling_bit_for_bit(kind, interpolation, dtype):
    array, input_geometry, reference, transform = footprint_case(kind)
    options = dict(interpolation=interpolation, background=-999)
    full = resample_to_geometry(array.astype(dtype), input_geometry, reference, transform, footprint=False, **options)
    fast = resample_to_geometry(array.astype(dtype), input_geometry, reference, transform, **options)
    assert fast.array.dtype == full.array.dtype == dtype
    assert np.array_equal(fast.array, full.array)
    assert (full.array != -999).any()  # the case samples the input
    if kind not in ("whole grid", "tilted plane"):
        assert (full.array == -999).any()  # and reaches outside the footprint


@pytest.mark.parametrize("kind", FOOTPRINT_CASES)
@pytest.mark.parametrize("interpolation", ["nearest", "linear", "cubic"])
def test_label_map_footprint_resampling_is_the_full_grid_resampling(kind, interpolation):
    _, input_geometry, reference, transform = footprint_case(kind)
    labels = label_phantom(input_geometry, labels=(1, 2, 5, 9))
    labels[:, :, :3] = 3  # a label touching the input's edge
    full = resample_to_geometry(labels, input_geometry, reference, transform, interpolation=interpolation,
                                labelmap=True, footprint=False)
    fast = resample_to_geometry(labels, input_geometry, reference, transform, interpolation=interpolation,
                                labelmap=True)
    assert fast.method == full.method and np.array_equal(fast.array, full.array)
    assert full.array.any()


@pytest.mark.parametrize("kind", ["oblique", "reflection", "edge"])
@pytest.mark.parametrize("interpolation", ["nearest", "linear", "cubic"])
def test_every_voxel_the_input_reaches_lies_in_its_footprint_and_the_footprint_is_small(kind, interpolation):
    array, input_geometry, reference, transform = footprint_case(kind)
    full = resample_to_geometry(array, input_geometry, reference, transform, interpolation=interpolation,
                                background=-999, footprint=False).array
    matrix = reference_ijk_to_input_ijk_matrix(reference, input_geometry, transform)
    first, stop = footprint_box(matrix, input_geometry.dimensions, reference.dimensions, interpolation)
    inside = np.zeros(reference.shape, dtype=bool)
    inside[first[2]:stop[2], first[1]:stop[1], first[0]:stop[0]] = True
    assert np.all(full[~inside] == -999)
    assert (full[inside] != -999).mean() > 0.05  # the box is not much larger than the (turned) input's reach
    assert inside.mean() < 0.25  # a small input costs a small part of the wide grid


def test_footprint_box_is_empty_when_the_input_cannot_reach_the_grid():
    input_geometry, reference = grid(**SMALL_INPUT), grid(**WIDE_REFERENCE)
    far = np.eye(4)
    far[:3, 3] = (0.0, 0.0, 80.0)  # 80 mm above a 40 mm tall reference
    matrix = reference_ijk_to_input_ijk_matrix(reference, input_geometry, far)
    first, stop = footprint_box(matrix, input_geometry.dimensions, reference.dimensions, "cubic")
    assert stop[2] <= first[2]
    near = np.eye(4)
    near[:3, 3] = (0.0, 0.0, 25.0)  # the input's top slices (6.5 mm of it) reach the reference's last ones
    first, stop = footprint_box(reference_ijk_to_input_ijk_matrix(reference, input_geometry, near),
                                input_geometry.dimensions, reference.dimensions, "linear")
    assert stop[2] == 40 and 30 <= first[2] < 40
    result = resample_to_geometry(smooth_phantom(input_geometry), input_geometry, reference, far, background=-5)
    assert np.all(result.array == -5)


def test_footprint_resampling_reports_progress_and_can_cancel():
    array, input_geometry, reference, transform = footprint_case("oblique")
    fractions = []
    reported = resample_to_geometry(array, input_geometry, reference, transform, progress=fractions.append)
    plain = resample_to_geometry(array, input_geometry, reference, transform, footprint=False)
    assert np.array_equal(reported.array, plain.array)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 1
    with pytest.raises(OperationCancelledError, match="cancelled"):
        resample_to_geometry(array, input_geometry, reference, transform, progress=lambda fraction: fraction > 0.3)



@pytest.mark.parametrize("kind", ["oblique", "reflection", "edge"])
def test_thin_slabs_give_the_full_grid_resampling(kind, monkeypatch):
    from AlignSeriesLib import resample

    monkeypatch.setattr(resample, "FOOTPRINT_SLABS", 1000)  # one vtkImageReslice call per output slice
    array, input_geometry, reference, transform = footprint_case(kind)
    for interpolation in ("nearest", "linear", "cubic"):
        options = dict(interpolation=interpolation, background=-999)
        full = resample_to_geometry(array, input_geometry, reference, transform, footprint=False, **options).array
        assert np.array_equal(resample_to_geometry(array, input_geometry, reference, transform, **options).array, full)


@pytest.mark.parametrize("kind", ["oblique", "whole grid"])
@pytest.mark.parametrize("labelmap", [False, True])
def test_a_resampled_array_goes_to_a_volume_node_without_a_copy(scene, kind, labelmap):
    from AlignSeriesLib import mrml

    array, input_geometry, reference, transform = footprint_case(kind)
    values = (array % 3).astype(np.uint8) if labelmap else array
    result = resample_to_geometry(values, input_geometry, reference, transform, labelmap=labelmap)
    node = mrml.add_volume_node(scene, result.array, reference, "resampled", labelmap=labelmap, copy=False)
    assert np.shares_memory(mrml.volume_array(node, copy=False), result.array)
