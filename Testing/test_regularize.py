"""The regular grid of an irregular stack keeps the acquired resolution (dicom_stack.choose_grid_spacing)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_shared_dicom
from dicom_fixtures import ORIENTATIONS, stack_positions, write_phantom_series

from AlignSeriesLib.dicom import series as dicom_series
from AlignSeriesLib.dicom.stack import (
    POSITION_ATOL,
    SliceFrame,
    analyse_stack,
    choose_grid_spacing,
    regular_grid,
)
from AlignSeriesLib.errors import GeometryError

AXIAL = ORIENTATIONS["axial"]
FIRST_LPS = (-12.5, 30.25, -40.0)


def report_of(distances, tilt_deg=0.0):
    return analyse_stack(stack_positions(FIRST_LPS, AXIAL, distances, tilt_deg=tilt_deg), (0, 0, 1))


def grid_of(distances, **kwargs):
    positions = stack_positions(FIRST_LPS, AXIAL, distances)
    frame = SliceFrame.from_header(np.array(AXIAL), np.array([1.0, 1.0]))
    return regular_grid(frame, positions, analyse_stack(positions, frame.normal_lps), (4, 5), **kwargs)


@pytest.mark.parametrize("distances, expected", [
    ([0.0, 1.0, 3.0, 6.0, 7.5], 1.0),       # smallest gap
    ([0.0, 4.0, 8.0, 9.0, 13.0], 1.0),      # one fine gap among coarse ones
    ([0.0, 4.0, 4.4, 8.4, 12.4], 1.0),      # 0.4 mm is below a quarter of the 4 mm median: the floor
    ([0.0, 2.0, 4.0, 8.0, 10.0], 2.0),      # a missing slice keeps the usual spacing
])
def test_grid_spacing_is_the_smallest_gap_floored_at_a_quarter_of_the_median(distances, expected):
    chosen = choose_grid_spacing(report_of(distances))

    assert chosen.spacing == pytest.approx(expected)
    assert f"{np.median(np.diff(distances)):.4g} mm" in chosen.reason  # the measured median is stated


def test_requested_spacing_wins_and_bad_values_are_refused():
    report = report_of([0.0, 1.0, 3.0, 6.0])
    assert choose_grid_spacing(report, 0.5).spacing == 0.5
    assert "as requested" in choose_grid_spacing(report, 0.5).reason
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(GeometryError, match="positive number of mm"):
            choose_grid_spacing(report, bad)


@pytest.mark.parametrize("distances, spacing, count", [
    ([0.0, 1.0, 3.0, 6.0, 7.5], None, 9),    # 7.5 mm at most 1.0 apart: 8 steps of 0.9375
    ([0.0, 2.0, 4.0, 8.0, 10.0], None, 6),   # missing slice: 2 mm steps
    ([0.0, 1.0, 3.0, 6.0, 7.5], 2.5, 4),     # requested: 3 steps of 2.5
    ([0.0, 1.0, 3.0, 6.0, 7.5], 100.0, 2),   # coarser than the span: first and last planes only
])
def test_grid_runs_from_first_to_last_slice_in_steps_no_longer_than_the_spacing(distances, spacing, count):
    grid = grid_of(distances, spacing=spacing)

    assert grid.dimensions[2] == count
    np.testing.assert_allclose(grid.spacing[2] * (count - 1), distances[-1], atol=1e-9)
    np.testing.assert_allclose(grid.ijk_to_lps[:3, 3], FIRST_LPS, atol=1e-9)


def test_exact_multiples_within_rounding_noise_do_not_add_a_plane():
    grid = grid_of([0.0, 1.0, 3.0, 6.0, 8.0 + POSITION_ATOL / 2])
    assert grid.dimensions[2] == 9


def test_scan_passes_the_requested_spacing_to_the_grid_and_names_it_in_the_warning(tmp_path):
    write_phantom_series(tmp_path, stack_positions(FIRST_LPS, AXIAL, [0.0, 1.0, 3.0, 6.0, 7.5]), rows=6, columns=5)

    default, = dicom_series.scan_dicom(tmp_path).volumes
    coarse, = dicom_series.scan_dicom(tmp_path, regularize_spacing=2.5).volumes

    assert default.geometry.dimensions[2] == 9 and coarse.geometry.dimensions[2] == 4
    message = next(w.message for w in default.warnings if w.code == "regularized")
    assert "0.9375 mm along the normal" in message and "smallest gap between adjacent acquired slices (1 mm" in message
    assert "as requested" in next(w.message for w in coarse.warnings if w.code == "regularized")
    with pytest.raises(GeometryError, match="regularize_spacing"):
        dicom_series.scan_dicom(tmp_path, regularize_spacing=-2)


def test_real_ge_tilted_ct_keeps_its_finest_slices():
    folder = require_shared_dicom() / "ct_ge_tilt_varspacing" / "dicom"
    volume, = dicom_series.scan_dicom(folder).volumes

    gaps = np.diff(volume.report.distances)
    assert volume.regularized and gaps.min() == pytest.approx(1.0811, abs=1e-3)
    assert volume.geometry.spacing[2] <= 1.09  # was 4.0 mm (the median gap)
    assert volume.geometry.dimensions == (512, 611, 135)  # 161 MiB as float32 (37 planes, 44 MiB, at 4.0 mm)
