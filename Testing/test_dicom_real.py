"""DICOM reconstruction of the real series in ../shared/data/dicom, checked against their headers.

Ground truth is each series' own ImagePositionPatient / ImageOrientationPatient / PixelSpacing
(read here again with pydicom, and ``expected.json``'s ``dicom_header_geometry``). The dcm2niix
NIfTI files are compared only where ``expected.json`` records that dcm2niix agrees with the headers.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from conftest import real_series_names
from dicom_fixtures import pixel_centers_lps

from AlignSeriesLib.dicom import series as dicom_series
from AlignSeriesLib.dicom.stack import POSITION_ATOL
from AlignSeriesLib.geometry import ras_to_lps_points

pytestmark = pytest.mark.skipif(not real_series_names(), reason="real DICOM data (../shared/data/dicom) is absent")
SERIES = real_series_names() or ["absent"]
IRREGULARITY_CODES = {"gantry_tilt", "nonuniform_spacing", "missing_slices", "non_orthonormal_orientation",
                      "mixed_frame_of_reference", "regularized"}


@pytest.fixture(scope="module")
def scans():
    cache = {}

    def scan(folder):
        if folder not in cache:
            cache[folder] = dicom_series.scan_dicom(folder)
        return cache[folder]
    return scan


def header_corners_lps(path, frame) -> np.ndarray:
    """(4, 3) corner pixel centers of one source slice from its own header (pydicom, no AlignSeries code)."""
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    if frame is None:
        position, orientation = dataset.ImagePositionPatient, dataset.ImageOrientationPatient
        spacing = dataset.PixelSpacing
    else:
        groups = dataset.PerFrameFunctionalGroupsSequence[frame - 1]
        shared = dataset.SharedFunctionalGroupsSequence[0]

        def find(sequence, keyword):
            return (groups.get(sequence) or shared.get(sequence))[0].get(keyword)
        position = find("PlanePositionSequence", "ImagePositionPatient")
        orientation = find("PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = find("PixelMeasuresSequence", "PixelSpacing")
    centers = pixel_centers_lps(np.array(position, float), np.array(orientation, float), np.array(spacing, float),
                                int(dataset.Rows), int(dataset.Columns))
    return np.array([centers[0, 0], centers[0, -1], centers[-1, 0], centers[-1, -1]])


def grid_slice_corners_lps(geometry, k) -> np.ndarray:
    i_last, j_last = geometry.dimensions[0] - 1, geometry.dimensions[1] - 1
    ijk = np.array([[0, 0, k], [i_last, 0, k], [0, j_last, k], [i_last, j_last, k]], dtype=float)
    return ras_to_lps_points(geometry.ijk_to_world(ijk))


def set_distance(a, b) -> float:
    """Symmetric largest nearest-neighbour distance between two point sets (mm)."""
    distances = np.linalg.norm(np.asarray(a)[:, None] - np.asarray(b)[None], axis=2)
    return float(max(distances.min(axis=1).max(), distances.min(axis=0).max()))


@pytest.mark.parametrize("real_series", SERIES, indirect=True)
def test_every_source_slice_is_where_its_own_header_puts_it(real_series, scans):
    folder, _ = real_series
    for volume in scans(folder).volumes:
        for k, (path, frame) in enumerate(zip(volume.files, volume.frames, strict=True)):
            truth = header_corners_lps(path, frame)
            placed = volume.slice_ijk_to_lps[k]
            columns, rows = volume.slices[k].columns, volume.slices[k].rows
            corners = np.array([placed[:3, 3] + i * placed[:3, 0] + j * placed[:3, 1]
                                for j in (0, rows - 1) for i in (0, columns - 1)])
            assert np.abs(corners - truth).max() <= POSITION_ATOL, (volume.name, k)
            if not volume.regularized:
                error = np.abs(grid_slice_corners_lps(volume.geometry, k) - truth).max()
                assert error <= POSITION_ATOL, f"{volume.name} slice {k}: {error:.4f} mm"


@pytest.mark.parametrize("real_series", SERIES, indirect=True)
def test_regularized_grids_are_orthogonal_and_cover_every_source_slice(real_series, scans):
    folder, _ = real_series
    for volume in (v for v in scans(folder).volumes if v.regularized):
        assert volume.geometry.is_orthogonal
        upper = np.array(volume.geometry.dimensions) - 1 + POSITION_ATOL
        for path, frame in zip(volume.files, volume.frames, strict=True):
            corners_ijk = volume.geometry.world_to_ijk(ras_to_lps_points(header_corners_lps(path, frame)))
            assert np.all(corners_ijk >= -POSITION_ATOL) and np.all(corners_ijk <= upper), path


@pytest.mark.parametrize("real_series", SERIES, indirect=True)
def test_volumes_match_each_header_stack_and_the_irregularities_are_reported(real_series, scans):
    folder, expected = real_series
    volumes = scans(folder).volumes
    stacks = expected["dicom_header_geometry"]
    for stack in stacks:
        matching = [v for v in volumes if v.regularized
                    or set_distance(v.geometry.corners_lps, stack["corners_lps"]) <= POSITION_ATOL]
        assert len(matching) == stack["images_per_position"][0], [v.name for v in volumes]
        for volume in matching:
            codes = {w.code for w in volume.warnings}
            assert ("gantry_tilt" in codes) == stack["gantry_tilt_detected"], volume.name
            spread = (stack["spacing_along_normal_max"] or 0) - (stack["spacing_along_normal_min"] or 0)
            assert bool(codes & {"nonuniform_spacing", "missing_slices"}) == (spread > POSITION_ATOL), volume.name
            assert volume.regularized == bool(codes & {"gantry_tilt", "nonuniform_spacing", "missing_slices"})
            assert ("single_slice" in codes) == (stack["n_positions"] == 1)
    assert len(volumes) == sum(stack["images_per_position"][0] for stack in stacks)


@pytest.mark.parametrize("real_series", SERIES, indirect=True)
def test_regular_series_raise_no_geometry_alarm(real_series, scans):
    folder, expected = real_series
    if any(stack["gantry_tilt_detected"] for stack in expected["dicom_header_geometry"]):
        pytest.skip("this series is irregular")
    for volume in scans(folder).volumes:
        assert not {w.code for w in volume.warnings} & IRREGULARITY_CODES, volume.name


@pytest.mark.parametrize("real_series", SERIES, indirect=True)
def test_corners_agree_with_dcm2niix_wherever_dcm2niix_agrees_with_the_headers(real_series, scans):
    nibabel = pytest.importorskip("nibabel")
    folder, expected = real_series
    right = {c["a"] for c in expected["physical_space_comparisons"]
             if c["b"].startswith("DICOM header") and c["max_corner_dist_mm"] <= POSITION_ATOL}
    checked = 0
    for reference in expected["dcm2niix"]["nifti"]:
        path = folder.parent / reference["file"]
        if reference["file"] not in right or not path.is_file():
            continue
        image = nibabel.load(path)
        shape = image.shape[:3]
        corners_ijk = np.array([[i, j, k] for k in (0, shape[2] - 1) for j in (0, shape[1] - 1)
                                for i in (0, shape[0] - 1)], dtype=float)
        nifti_corners_lps = ras_to_lps_points(corners_ijk @ image.affine[:3, :3].T + image.affine[:3, 3])
        distance = min(set_distance(v.geometry.corners_lps, nifti_corners_lps) for v in scans(folder).volumes)
        assert distance <= POSITION_ATOL, f"{reference['file']}: {distance:.4f} mm"
        checked += 1
    if not checked:
        pytest.skip("no shipped dcm2niix output agrees with the headers for this series (the headers win)")
