"""DICOM series reconstruction on synthetic series whose geometry the test wrote itself."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from dicom_fixtures import (
    ORIENTATIONS,
    normal_of,
    phantom_slices,
    phantom_value,
    pixel_centers_lps,
    stack_positions,
    write_multiframe,
    write_phantom_series,
    write_series,
)
from scipy.ndimage import map_coordinates

from AlignSeriesLib.dicom import series as dicom_series
from AlignSeriesLib.dicom.stack import POSITION_ATOL
from AlignSeriesLib.errors import DicomError, IrregularSeriesError
from AlignSeriesLib.geometry import ras_to_lps_points

FIRST_LPS = (-12.5, 30.25, -40.0)
SPACING = (0.8, 0.7)  # PixelSpacing: row spacing (j), column spacing (i)
ROWS, COLUMNS = 24, 20


def only_volume(folder, **kwargs) -> dicom_series.DicomVolume:
    result = dicom_series.scan_dicom(folder, **kwargs)
    assert len(result.volumes) == 1, [v.name for v in result.volumes]
    return result.volumes[0]


def slice_corners_lps(position, orientation, rows=ROWS, columns=COLUMNS, spacing=SPACING) -> np.ndarray:
    """(4, 3) LPS centers of a slice's corner pixels (i fastest), from its own header values."""
    centers = pixel_centers_lps(position, orientation, spacing, rows, columns)
    return np.array([centers[0, 0], centers[0, -1], centers[-1, 0], centers[-1, -1]])


def grid_corners_of_slice(geometry, k) -> np.ndarray:
    """(4, 3) LPS corners of grid slice k, in :func:`slice_corners_lps` order."""
    i_last, j_last = geometry.dimensions[0] - 1, geometry.dimensions[1] - 1
    ijk = np.array([[0, 0, k], [i_last, 0, k], [0, j_last, k], [i_last, j_last, k]], dtype=float)
    return ras_to_lps_points(geometry.ijk_to_world(ijk))


def assert_slices_on_grid(volume, positions_in_k_order, orientation):
    for k, position in enumerate(positions_in_k_order):
        error = np.abs(grid_corners_of_slice(volume.geometry, k) - slice_corners_lps(position, orientation)).max()
        assert error <= POSITION_ATOL, f"slice {k}: corners off by {error:.4f} mm"


def codes(volume) -> list[str]:
    return [w.code for w in volume.warnings]


def sample_grid_at(volume, voxels, points_lps) -> np.ndarray:
    """Trilinear samples of a volume's voxels ``[k, j, i]`` at LPS points ``(..., 3)``."""
    ijk = np.linalg.solve(volume.geometry.ijk_to_lps[:3, :3], (points_lps - volume.geometry.ijk_to_lps[:3, 3]).T)
    return map_coordinates(voxels.astype(float), ijk[::-1], order=1, mode="nearest")


# -- regular stacks ------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal", "oblique"])
@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_regular_stack_is_ordered_along_the_normal_and_placed_exactly(tmp_path, orientation, descending):
    iop = ORIENTATIONS[orientation]
    distances = np.arange(7) * 2.5
    positions = stack_positions(FIRST_LPS, iop, distances[::-1] if descending else distances)
    files, pixels = write_phantom_series(tmp_path, positions, iop, SPACING, rows=ROWS, columns=COLUMNS)

    volume = only_volume(tmp_path)

    order = np.argsort(positions @ normal_of(iop))
    assert volume.files == [str(files[k]) for k in order]
    assert not volume.regularized and volume.warnings == []
    assert volume.geometry.dimensions == (COLUMNS, ROWS, 7)
    np.testing.assert_allclose(volume.geometry.spacing, [0.7, 0.8, 2.5], atol=1e-6)
    assert volume.geometry.is_orthogonal and not volume.geometry.is_mirrored
    assert_slices_on_grid(volume, positions[order], iop)
    np.testing.assert_array_equal(volume.read_voxels(), pixels[order])
    np.testing.assert_allclose(volume.slice_positions_lps, positions[order], atol=1e-5)


def test_shuffled_instance_numbers_do_not_change_the_order(tmp_path):
    positions = stack_positions(FIRST_LPS, ORIENTATIONS["axial"], np.arange(6) * 3.0)
    files, _ = write_phantom_series(tmp_path, positions, shuffle_seed=5)

    volume = only_volume(tmp_path)

    assert volume.files == [str(f) for f in files]
    assert volume.instance_numbers != sorted(volume.instance_numbers)


# -- irregular stacks ----------------------------------------------------------------------------


@pytest.mark.parametrize("tilt_deg", [-20.0, 5.0, 30.0])
def test_gantry_tilt_is_regularized_onto_an_orthogonal_grid_covering_every_slice(tmp_path, tilt_deg):
    iop = ORIENTATIONS["axial"]
    positions = stack_positions(FIRST_LPS, iop, np.arange(8) * 2.0, tilt_deg=tilt_deg)
    _, pixels = write_phantom_series(tmp_path, positions, iop, SPACING, rows=ROWS, columns=COLUMNS)

    volume = only_volume(tmp_path)

    assert volume.regularized and volume.geometry.is_orthogonal
    tilt = next(w for w in volume.warnings if w.code == "gantry_tilt")
    assert f"{abs(tilt_deg):.2f} deg" in tilt.message and f"{POSITION_ATOL} mm" in tilt.message
    assert "regularized" in codes(volume)
    upper = np.array(volume.geometry.dimensions) - 1 + POSITION_ATOL
    for k, position in enumerate(positions):
        corners_ijk = volume.geometry.world_to_ijk(ras_to_lps_points(slice_corners_lps(position, iop)))
        assert np.all(corners_ijk >= -POSITION_ATOL) and np.all(corners_ijk <= upper), k
    np.testing.assert_allclose(volume.slice_ijk_to_lps[:, :3, 3], positions, atol=1e-5)
    assert_regularized_values_match_source(volume, positions, iop)


def assert_regularized_values_match_source(volume, positions, iop, *, atol=4.0):
    """Sampling the regularized voxels at each source slice's inner pixel centers gives the source values."""
    voxels = volume.read_voxels()
    assert voxels.shape == volume.geometry.shape and voxels.dtype == np.float32
    for position in positions:
        centers = pixel_centers_lps(position, iop, SPACING, ROWS, COLUMNS)[1:-1, 1:-1].reshape(-1, 3)
        error = np.abs(sample_grid_at(volume, voxels, centers) - phantom_value(centers)).max()
        assert error <= atol, f"interpolation error {error:.2f} above {atol}"


def test_tilted_series_without_regularization_keeps_the_exact_sheared_grid(tmp_path):
    iop = ORIENTATIONS["axial"]
    positions = stack_positions(FIRST_LPS, iop, np.arange(6) * 2.0, tilt_deg=15.0)
    _, pixels = write_phantom_series(tmp_path, positions, iop, SPACING, rows=ROWS, columns=COLUMNS)

    volume = only_volume(tmp_path, regularize=False)

    assert not volume.regularized and not volume.geometry.is_orthogonal
    assert "gantry_tilt" in codes(volume)
    assert_slices_on_grid(volume, positions, iop)
    np.testing.assert_array_equal(volume.read_voxels(), pixels)


@pytest.mark.parametrize("distances, missing, max_gap", [([0, 2, 4, 8, 10], 1, 4), ([0, 2, 8, 10, 12, 18], 4, 6)],
                         ids=["one_missing", "several_missing"])
def test_missing_slices_are_reported_and_filled_at_the_acquisition_spacing(tmp_path, distances, missing, max_gap):
    iop = ORIENTATIONS["oblique"]
    positions = stack_positions(FIRST_LPS, iop, distances)
    _, pixels = write_phantom_series(tmp_path, positions, iop, SPACING, rows=ROWS, columns=COLUMNS)

    volume = only_volume(tmp_path)

    warning = next(w for w in volume.warnings if w.code == "missing_slices")
    assert warning.message.startswith(f"{missing} slice(s) missing")
    assert f"max {max_gap:.4f} mm" in warning.message and "median 2.0000" in warning.message
    assert volume.regularized and volume.geometry.dimensions[2] == distances[-1] // 2 + 1
    np.testing.assert_allclose(volume.geometry.spacing[2], 2.0, atol=1e-6)
    voxels = volume.read_voxels()
    for source_k, distance in enumerate(distances):  # grid planes through source slices copy them exactly
        np.testing.assert_allclose(voxels[distance // 2], pixels[source_k], atol=1e-3)


def test_uneven_spacing_is_reported_with_measured_gaps_and_threshold(tmp_path):
    iop = ORIENTATIONS["coronal"]
    positions = stack_positions(FIRST_LPS, iop, [0.0, 1.0, 3.0, 6.0, 7.5])
    write_phantom_series(tmp_path, positions, iop, SPACING, rows=ROWS, columns=COLUMNS)

    volume = only_volume(tmp_path)

    warning = next(w for w in volume.warnings if w.code == "nonuniform_spacing")
    assert "min 1.0000 / median 1.7500 / max 3.0000 mm" in warning.message
    assert f"tolerance {POSITION_ATOL} mm" in warning.message
    assert volume.regularized
    assert_regularized_values_match_source(volume, positions, iop)
    with pytest.raises(IrregularSeriesError, match="non-uniform slice spacing.*allow regularization"):
        dicom_series.scan_dicom(tmp_path, regularize=False)


def test_regular_series_raises_no_false_alarm_from_header_rounding(tmp_path):
    iop = ORIENTATIONS["oblique"]
    rng = np.random.default_rng(3)
    positions = stack_positions(FIRST_LPS, iop, np.arange(10) * 3.0) + rng.uniform(-0.004, 0.004, (10, 3))
    write_phantom_series(tmp_path, positions, iop, SPACING)

    volume = only_volume(tmp_path)

    assert volume.warnings == [] and not volume.regularized


# -- grouping ------------------------------------------------------------------------------------


def test_two_time_points_at_the_same_positions_become_two_volumes(tmp_path):
    iop = ORIENTATIONS["axial"]
    positions = stack_positions(FIRST_LPS, iop, np.arange(4) * 2.0)
    both = np.concatenate([positions, positions])
    per_slice = [{"TemporalPositionIdentifier": 1 + k // 4} for k in range(8)]
    _, pixels = write_phantom_series(tmp_path, both, iop, per_slice=per_slice)

    volumes = dicom_series.scan_dicom(tmp_path).volumes

    assert [v.name for v in volumes] == ["1 synthetic temporal position 1", "1 synthetic temporal position 2"]
    assert all(v.geometry.dimensions[2] == 4 and v.warnings == [] for v in volumes)


def test_repeated_positions_with_nothing_to_tell_them_apart_are_split_with_a_warning(tmp_path):
    positions = stack_positions(FIRST_LPS, ORIENTATIONS["axial"], np.arange(3) * 2.0)
    write_phantom_series(tmp_path, np.concatenate([positions, positions]))

    volumes = dicom_series.scan_dicom(tmp_path).volumes

    assert [v.name for v in volumes] == ["1 synthetic InstanceNumber order 1 of 2",
                                         "1 synthetic InstanceNumber order 2 of 2"]
    for volume in volumes:
        assert codes(volume) == ["duplicate_positions"]
        assert "3 of 3 slice positions hold up to 2 images" in volume.warnings[0].message
        assert "split into 2 volumes in InstanceNumber order" in volume.warnings[0].message


def test_frames_of_one_file_at_the_same_positions_are_split_in_frame_order(tmp_path):
    positions = stack_positions(FIRST_LPS, ORIENTATIONS["axial"], np.arange(3) * 2.0)
    both = np.concatenate([positions, positions])
    write_multiframe(tmp_path / "enhanced.dcm", np.zeros((6, 5, 4), np.int16), both, ORIENTATIONS["axial"],
                     (0.8, 0.7), shared_geometry=True)

    volumes = dicom_series.scan_dicom(tmp_path).volumes

    assert [v.name for v in volumes] == ["7 enhanced frame order 1 of 2", "7 enhanced frame order 2 of 2"]
    assert [v.frames for v in volumes] == [[1, 2, 3], [4, 5, 6]]
    assert "split into 2 volumes in frame order" in volumes[0].warnings[0].message


def test_a_ge_magnitude_and_phase_pair_is_named_by_ges_private_image_type(tmp_path):
    positions = stack_positions(FIRST_LPS, ORIENTATIONS["axial"], np.arange(3) * 2.0)
    files, _ = write_phantom_series(tmp_path, np.concatenate([positions, positions]), description="B0map")
    for k, path in enumerate(files):  # GE writes no standard attribute telling the two apart
        dataset = pydicom.dcmread(path)
        dataset.Manufacturer = "GE MEDICAL SYSTEMS"
        dataset.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x2F, "SS", 0 if k < 3 else 1)
        dataset.save_as(path)

    volumes = dicom_series.scan_dicom(tmp_path).volumes

    assert [v.name for v in volumes] == ["1 B0map magnitude", "1 B0map phase"]
    assert [sorted(v.files) for v in volumes] == [sorted(map(str, files[:3])), sorted(map(str, files[3:]))]
    assert all(v.warnings == [] for v in volumes)


def test_two_series_in_one_folder_and_a_localizer_are_told_apart(tmp_path):
    iop = ORIENTATIONS["axial"]
    positions = stack_positions(FIRST_LPS, iop, np.arange(5) * 2.0)
    write_phantom_series(tmp_path, positions, series_uid="1.2.3.1", name_prefix="a", series_number=3)
    write_phantom_series(tmp_path, positions[:4] + 1.0, series_uid="1.2.3.2", name_prefix="b", series_number=4)
    localizer = stack_positions((0, -60, 0), ORIENTATIONS["sagittal"], [0.0])
    write_phantom_series(tmp_path, localizer, "sagittal", series_uid="1.2.3.1", name_prefix="loc", series_number=3,
                         ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])

    volumes = {v.name: v for v in dicom_series.scan_dicom(tmp_path).volumes}

    assert sorted(volumes) == ["3 synthetic", "3 synthetic localizer", "4 synthetic"]
    assert volumes["3 synthetic"].geometry.dimensions[2] == 5 and volumes["3 synthetic"].warnings == []
    assert volumes["4 synthetic"].geometry.dimensions[2] == 4
    assert codes(volumes["3 synthetic localizer"]) == ["single_slice"]


def test_mixed_frames_of_reference_in_one_series_are_reported(tmp_path):
    positions = stack_positions(FIRST_LPS, ORIENTATIONS["axial"], np.arange(4) * 2.0)
    per_slice = [{"FrameOfReferenceUID": "1.2.9.1" if k else "1.2.9.2"} for k in range(4)]
    write_phantom_series(tmp_path, positions, per_slice=per_slice)

    volume = only_volume(tmp_path)

    assert codes(volume) == ["mixed_frame_of_reference"]
    assert volume.frame_of_reference_uid == "1.2.9.1"
    assert "2 FrameOfReferenceUIDs" in volume.warnings[0].message


def test_single_slice_gets_its_spacing_from_the_slice_thickness(tmp_path):
    write_phantom_series(tmp_path, stack_positions(FIRST_LPS, ORIENTATIONS["axial"], [0.0]), SliceThickness=3.5)

    volume = only_volume(tmp_path)

    assert codes(volume) == ["single_slice"] and "3.5 mm" in volume.warnings[0].message
    np.testing.assert_allclose(volume.geometry.spacing, [0.7, 0.8, 3.5])


def test_slightly_non_orthonormal_orientation_is_reported(tmp_path):
    iop = (1.0, 0.0, 0.0, 0.005, 1.0, 0.0)
    positions = stack_positions(FIRST_LPS, ORIENTATIONS["axial"], np.arange(3) * 2.0)
    pixels = phantom_slices(positions, iop, SPACING, ROWS, COLUMNS)
    write_series(tmp_path, pixels, positions, iop, SPACING)

    volume = only_volume(tmp_path)

    assert codes(volume) == ["non_orthonormal_orientation"]
    assert "5.00e-03" in volume.warnings[0].message and "tolerance 0.001" in volume.warnings[0].message


# -- enhanced multi-frame ------------------------------------------------------------------------


@pytest.mark.parametrize("shared_geometry", [True, False], ids=["shared", "per_frame"])
def test_multiframe_frames_are_ordered_along_the_normal(tmp_path, shared_geometry):
    iop = ORIENTATIONS["oblique"]
    positions = stack_positions(FIRST_LPS, iop, np.array([4, 0, 3, 1, 2]) * 2.5)
    pixels = phantom_slices(positions, iop, SPACING, ROWS, COLUMNS)
    path = write_multiframe(tmp_path / "enhanced.dcm", pixels, positions, iop, SPACING,
                            shared_geometry=shared_geometry)

    volume = only_volume(tmp_path)

    assert volume.files == [str(path)] * 5 and volume.frames == [2, 4, 5, 3, 1]
    assert volume.warnings == []
    order = np.array(volume.frames) - 1
    assert_slices_on_grid(volume, positions[order], iop)
    np.testing.assert_array_equal(volume.read_voxels(), pixels[order])


def test_multiframe_holding_two_stacks_and_two_frame_types_gives_three_volumes(tmp_path):
    axial, sagittal = ORIENTATIONS["axial"], ORIENTATIONS["sagittal"]
    positions = np.concatenate([stack_positions(FIRST_LPS, axial, np.arange(3) * 2.0)] * 2
                               + [stack_positions(FIRST_LPS, sagittal, np.arange(3) * 2.0)])
    orientations = [axial] * 6 + [sagittal] * 3
    pixels = np.zeros((9, ROWS, ROWS), dtype=np.int16)
    write_multiframe(tmp_path / "stacks.dcm", pixels, positions, orientations, SPACING, shared_geometry=False,
                     frame_types=["M"] * 3 + ["P"] * 3 + ["M"] * 3, stack_ids=["1"] * 6 + ["2"] * 3)

    volumes = dicom_series.scan_dicom(tmp_path).volumes

    assert [v.name for v in volumes] == ["7 enhanced stack 1 image type M", "7 enhanced stack 1 image type P",
                                         "7 enhanced stack 2"]
    assert [v.frames for v in volumes] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert all(v.warnings == [] for v in volumes)


# -- contract ------------------------------------------------------------------------------------


def test_info_dict_follows_the_design_contract(tmp_path):
    positions = stack_positions(FIRST_LPS, ORIENTATIONS["axial"], np.arange(3) * 2.0)
    files, _ = write_phantom_series(tmp_path, positions, shuffle_seed=None)

    info = json.loads(json.dumps(only_volume(tmp_path).to_info_dict()))

    assert set(info) == {"name", "series_instance_uid", "frame_of_reference_uid", "files", "frames",
                         "sop_instance_uids", "dimensions", "spacing", "ijk_to_ras", "ijk_to_lps", "regularized",
                         "warnings"}
    assert info["files"] == [str(f) for f in files] and info["frames"] == [None] * 3
    assert info["dimensions"] == [COLUMNS, ROWS, 3]
    np.testing.assert_allclose(np.array(info["ijk_to_lps"])[:3, 3], FIRST_LPS, atol=1e-6)
    np.testing.assert_allclose(np.array(info["ijk_to_ras"])[:3, 3], [12.5, -30.25, -40.0], atol=1e-6)


def test_reading_more_than_the_memory_limit_is_refused_before_allocating(tmp_path):
    write_phantom_series(tmp_path, stack_positions(FIRST_LPS, ORIENTATIONS["axial"], np.arange(3) * 2.0))

    with pytest.raises(DicomError, match=r"3 x 24 x 20 voxels x 2 bytes .* exceeds the limit"):
        only_volume(tmp_path).read_voxels(max_bytes=1000)
