"""Geometry-based transforms: frames of reference, REG objects, centers, moments (synthetic and real)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from conftest import require_shared_dicom

from AlignSeriesLib.alignment import (
    align_geometries,
    centers_transform,
    frame_of_reference_transform,
    intensity_centroid_ras,
    moments_transform,
)
from AlignSeriesLib.dicom.reg import SeriesReference, read_registration, write_registration
from AlignSeriesLib.errors import FrameOfReferenceError, GeometryError
from AlignSeriesLib.geometry import VolumeGeometry, apply_affine

ALTERNATIVES = ("landmarks", "--registration", "centers", "moments")


def translation(offset) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def oblique_geometry(dimensions=(40, 30, 20), spacing=(1.5, 2.0, 3.0), origin=(-30.0, 12.0, 5.0)) -> VolumeGeometry:
    c, s = np.cos(0.3), np.sin(0.3)
    directions = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, 0.96, -0.28], [0, 0.28, 0.96]])
    return VolumeGeometry.from_spacing_origin_directions(dimensions, spacing, origin, directions)


def blob(geometry: VolumeGeometry, center_ras, background: float = 0.0, noise: float = 0.0, seed: int = 0):
    """A Gaussian blob at ``center_ras`` on ``geometry``'s grid, [k, j, i]."""
    k, j, i = np.indices(geometry.shape)
    points = geometry.ijk_to_world(np.stack([i, j, k], axis=-1))
    values = 1000.0 * np.exp(-np.sum((points - center_ras) ** 2, axis=-1) / (2 * 8.0**2))
    rng = np.random.default_rng(seed)
    return values + background + (rng.normal(0, noise, values.shape) if noise else 0.0)


# -- frames of reference ---------------------------------------------------------------------------


def test_same_frame_of_reference_gives_identity():
    np.testing.assert_array_equal(frame_of_reference_transform("1.2.3", "1.2.3"), np.eye(4))


@pytest.mark.parametrize("fixed_uid, moving_uid", [("1.2.3", "1.2.4"), (None, "1.2.4"), ("1.2.3", "")])
def test_unrelated_frames_give_a_clear_error_naming_the_alternatives(fixed_uid, moving_uid):
    with pytest.raises(FrameOfReferenceError) as error:
        frame_of_reference_transform(fixed_uid, moving_uid)
    assert all(word in str(error.value) for word in ALTERNATIVES)


def test_a_registration_relating_the_frames_gives_its_matrix_in_either_direction(tmp_path):
    moving_to_fixed_ras = translation([5.0, -7.0, 11.0])
    moving_to_fixed_ras[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    path = write_registration(tmp_path / "reg.dcm", moving_to_fixed_ras, SeriesReference("1.1", "1.2.3"),
                              SeriesReference("2.1", "1.2.4"))
    np.testing.assert_allclose(frame_of_reference_transform("1.2.3", "1.2.4", [path]), moving_to_fixed_ras, atol=1e-9)
    registration = read_registration(path)
    np.testing.assert_allclose(frame_of_reference_transform("1.2.4", "1.2.3", [registration]),
                               np.linalg.inv(moving_to_fixed_ras), atol=1e-9)
    with pytest.raises(FrameOfReferenceError, match="no given REG relates them"):
        frame_of_reference_transform("1.2.3", "1.2.5", [registration])


def test_align_geometries_reports_the_voxel_to_voxel_matrix():
    fixed, moving = oblique_geometry(), oblique_geometry((64, 64, 10), (1.0, 1.0, 4.0), (0.0, 0.0, 0.0))
    result = align_geometries("frameOfReference", fixed, moving, fixed_for_uid="1.2", moving_for_uid="1.2")
    ijk = np.array([[3.0, 7.0, 2.0], [63.0, 0.0, 9.0]])
    np.testing.assert_allclose(fixed.ijk_to_world(apply_affine(result.moving_ijk_to_fixed_ijk, ijk)),
                               moving.ijk_to_world(ijk), atol=1e-9)
    np.testing.assert_allclose(result.fixed_ijk_to_moving_ijk @ result.moving_ijk_to_fixed_ijk, np.eye(4), atol=1e-12)
    document = result.to_dict()
    assert document["moving_to_fixed_ras"] == np.eye(4).tolist() and len(document["moving_ijk_to_fixed_ijk"]) == 4
    with pytest.raises(GeometryError, match="unknown alignment mode"):
        align_geometries("principalAxes", fixed, moving)
    with pytest.raises(GeometryError, match="voxel arrays"):
        align_geometries("moments", fixed, moving)


# -- centers ---------------------------------------------------------------------------------------


def test_centers_transform_is_the_translation_between_grid_centers():
    # fixed: 11 x 11 x 11 voxels of 1 mm from the origin -> center (5, 5, 5);
    # moving: 3 x 3 x 3 voxels of 2 mm from (100, 0, -20) -> center (102, 2, -18)
    fixed = VolumeGeometry.from_spacing_origin_directions((11, 11, 11), (1, 1, 1), (0, 0, 0))
    moving = VolumeGeometry.from_spacing_origin_directions((3, 3, 3), (2, 2, 2), (100, 0, -20))
    result = centers_transform(fixed, moving)
    np.testing.assert_allclose(result.moving_to_fixed_ras, translation([-97, 3, 23]))
    np.testing.assert_allclose(apply_affine(result.moving_ijk_to_fixed_ijk, [1, 1, 1]), [5, 5, 5])


# -- moments ---------------------------------------------------------------------------------------


def test_moments_transform_recovers_a_known_shift_between_differently_sampled_grids():
    fixed = oblique_geometry()
    moving = VolumeGeometry.from_spacing_origin_directions((36, 36, 30), (2.2, 2.2, 2.5), (-60, -30, -40))
    fixed_center, moving_center = fixed.center_ras + [3, -2, 1], moving.center_ras + [-4, 5, 2]
    result = moments_transform(blob(fixed, fixed_center), fixed, blob(moving, moving_center), moving)
    np.testing.assert_allclose(result.moving_to_fixed_ras, translation(fixed_center - moving_center), atol=0.05)
    assert result.mode == "moments"


def test_moments_ignore_a_background_offset_and_noise():
    geometry = oblique_geometry()
    center = geometry.center_ras + [6, -4, 3]
    clean = intensity_centroid_ras(blob(geometry, center), geometry)
    noisy_ct = intensity_centroid_ras(blob(geometry, center, background=-1000.0, noise=15.0), geometry)
    np.testing.assert_allclose(clean, center, atol=0.05)
    np.testing.assert_allclose(noisy_ct, center, atol=0.3)
    # without the background threshold the plain (shifted-positive) mean would sit near the grid center
    plain = blob(geometry, center, background=-1000.0, noise=15.0) + 2000.0
    k, j, i = np.indices(geometry.shape)
    plain_centroid = geometry.ijk_to_world([np.average(a, weights=plain) for a in (i, j, k)])
    assert np.linalg.norm(plain_centroid - center) > 3 * np.linalg.norm(noisy_ct - center)


@pytest.mark.parametrize("array, message", [
    (np.zeros((20, 30, 40)), "no voxels above"),
    (np.zeros((40, 30, 20)), "does not match"),
    (np.full((20, 30, 40), np.nan), "NaN"),
])
def test_moments_refuse_unusable_arrays(array, message):
    geometry = oblique_geometry()
    before = array.copy()
    with pytest.raises(GeometryError, match=message):
        moments_transform(array, geometry, blob(geometry, geometry.center_ras), geometry)
    np.testing.assert_array_equal(array, before)


# -- real series -----------------------------------------------------------------------------------


def header_volume(folder):
    """(geometry, frame UID, [k, j, i] voxels or None) of a single-stack series, from pydicom headers."""
    datasets = [pydicom.dcmread(path) for path in sorted(folder.iterdir())]
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    datasets.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float))))
    positions = np.array([d.ImagePositionPatient for d in datasets], dtype=float)
    row_spacing, column_spacing = (float(v) for v in datasets[0].PixelSpacing)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, 0] = orientation[:3] * column_spacing
    ijk_to_lps[:3, 1] = orientation[3:] * row_spacing
    ijk_to_lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    ijk_to_lps[:3, 3] = positions[0]
    dimensions = (int(datasets[0].Columns), int(datasets[0].Rows), len(datasets))
    geometry = VolumeGeometry.from_ijk_to_lps(dimensions, ijk_to_lps)
    uncompressed = not datasets[0].file_meta.TransferSyntaxUID.is_compressed
    voxels = np.stack([d.pixel_array for d in datasets]).astype(float) if uncompressed else None
    return geometry, str(datasets[0].FrameOfReferenceUID), voxels


@pytest.fixture(scope="module")
def real_volumes():
    shared = require_shared_dicom()
    return {name: header_volume(shared / name / "dicom")
            for name in ("mr_siemens_obl_fmap", "mr_siemens_sag_t1_jpegll", "ct_philips_axial")}


def test_real_series_sharing_a_frame_of_reference_give_identity(real_volumes):
    fixed, fixed_uid, _ = real_volumes["mr_siemens_sag_t1_jpegll"]
    moving, moving_uid, _ = real_volumes["mr_siemens_obl_fmap"]
    result = align_geometries("frameOfReference", fixed, moving, fixed_for_uid=fixed_uid, moving_for_uid=moving_uid)
    np.testing.assert_array_equal(result.moving_to_fixed_ras, np.eye(4))
    corners_in_fixed = apply_affine(result.moving_ijk_to_fixed_ijk, moving.corner_indices)
    np.testing.assert_allclose(fixed.ijk_to_world(corners_in_fixed), moving.corners_ras, atol=1e-9)


def test_real_series_with_different_frames_give_the_error_then_centers_and_moments(real_volumes):
    fixed, fixed_uid, fixed_voxels = real_volumes["ct_philips_axial"]
    moving, moving_uid, moving_voxels = real_volumes["mr_siemens_obl_fmap"]
    with pytest.raises(FrameOfReferenceError, match="different frames of reference"):
        align_geometries("frameOfReference", fixed, moving, fixed_for_uid=fixed_uid, moving_for_uid=moving_uid)
    centers = align_geometries("centers", fixed, moving)
    np.testing.assert_allclose(apply_affine(centers.moving_to_fixed_ras, moving.center_ras), fixed.center_ras)
    moments = align_geometries("moments", fixed, moving, fixed_array_kji=fixed_voxels, moving_array_kji=moving_voxels)
    moved_centroid = apply_affine(moments.moving_to_fixed_ras, intensity_centroid_ras(moving_voxels, moving))
    np.testing.assert_allclose(moved_centroid, intensity_centroid_ras(fixed_voxels, fixed), atol=1e-9)


def test_moments_on_a_real_series_recover_a_known_displacement(real_volumes):
    geometry, _, voxels = real_volumes["mr_siemens_obl_fmap"]
    displaced = geometry.transformed(translation([40.0, -25.0, 60.0]))
    result = moments_transform(voxels, geometry, voxels, displaced)
    np.testing.assert_allclose(result.moving_to_fixed_ras, translation([-40.0, 25.0, -60.0]), atol=1e-9)
