"""Geometry of a stack of parallel DICOM slices: order, checks, and the grid that holds it.

A stack is a set of images with one ImageOrientationPatient, one size and one PixelSpacing. Its
slices are ordered by the projection of ImagePositionPatient on the slice normal
``row x column`` (never by InstanceNumber, SliceLocation or file name), so ``k`` always runs
along ``+normal``. The stack is then checked against a regular grid:

* *regular*: every slice lies within :data:`POSITION_ATOL` of ``first + k * step``. The header
  grid (:func:`header_grid`) then places every pixel exactly; it is sheared when the slices
  advance at an angle to the normal (gantry tilt).
* *missing slices*: the gaps along the normal are whole multiples of the median gap.
* *non-uniform spacing*: anything else.

Irregular stacks (tilted, missing slices, non-uniform) get an orthogonal grid
(:func:`regular_grid`) onto which :mod:`AlignSeriesLib.regularize` interpolates the pixels.

Frames: every position and direction here is DICOM patient space (LPS, mm); the LPS to RAS step
happens in :class:`AlignSeriesLib.geometry.VolumeGeometry`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import AlignSeriesWarning, GeometryError
from ..geometry import VolumeGeometry

#: Largest distance (mm) by which a slice may miss the position a grid gives it and still count as
#: on that grid. Real headers store positions with 3-6 decimals (rounding up to 0.0005 mm per
#: coordinate) and scanners place slices to about 0.001 mm; 0.02 mm is far above that noise and
#: far below any clinically visible misplacement (0.02 mm is 1/25 of the finest CT pixel).
POSITION_ATOL = 0.02

#: Largest deviation from orthonormal of ImageOrientationPatient (|row|-1, |column|-1, row.column)
#: accepted without a warning. Headers round direction cosines to 4-6 decimals (deviation up to
#: about 1e-4); 1e-3 moves a pixel 256 mm from the origin by at most 0.26 mm.
ORIENTATION_ATOL = 1e-3

#: Relative tolerance (fraction of the median gap) for calling a gap a whole number of slices.
MISSING_SLICE_RTOL = 0.01

#: The regular grid's spacing along the normal is never below this fraction of the median gap between
#: acquired slices, so that two slices a rounding error apart cannot explode the grid.
MIN_SPACING_FRACTION_OF_MEDIAN = 0.25

#: Slice spacing (mm) given to a single-slice volume whose header has neither SpacingBetweenSlices
#: nor SliceThickness.
DEFAULT_SINGLE_SLICE_SPACING = 1.0


@dataclass(frozen=True)
class SliceFrame:
    """In-plane axes shared by a stack's slices.

    Attributes
    ----------
    row_lps, column_lps : (3,) ndarray
        Unit directions of increasing i (along a row) and j (down a column), LPS.
    normal_lps : (3,) ndarray
        Unit slice normal ``row x column``: the direction of increasing k.
    spacing_ij : (2,) ndarray, mm
        Pixel spacing along i and along j (PixelSpacing reversed).
    """

    row_lps: np.ndarray
    column_lps: np.ndarray
    normal_lps: np.ndarray
    spacing_ij: np.ndarray

    @classmethod
    def from_header(cls, orientation, pixel_spacing) -> SliceFrame:
        """Frame from ImageOrientationPatient (6,) and PixelSpacing (row spacing, column spacing)."""
        orientation = np.asarray(orientation, dtype=float)
        row, column = orientation[:3], orientation[3:]
        row, column = row / np.linalg.norm(row), column / np.linalg.norm(column)
        normal = np.cross(row, column)
        normal /= np.linalg.norm(normal)
        return cls(row, column, normal, np.asarray(pixel_spacing, dtype=float)[::-1].copy())

    @property
    def orthonormality_error(self) -> float:
        """|row . column|: how far the (unit) row and column directions are from orthogonal."""
        return abs(float(self.row_lps @ self.column_lps))

    def orthonormalized(self) -> SliceFrame:
        """The nearest frame with exactly orthogonal axes (column made orthogonal to row)."""
        column = self.column_lps - (self.column_lps @ self.row_lps) * self.row_lps
        column /= np.linalg.norm(column)
        return SliceFrame(self.row_lps, column, np.cross(self.row_lps, column), self.spacing_ij)

    def slice_ijk_to_lps(self, position_lps, thickness: float) -> np.ndarray:
        """4x4 matrix placing one slice: ``(i, j, 0)`` to LPS, k axis ``thickness`` mm along the normal."""
        matrix = np.eye(4)
        matrix[:3, 0] = self.row_lps * self.spacing_ij[0]
        matrix[:3, 1] = self.column_lps * self.spacing_ij[1]
        matrix[:3, 2] = self.normal_lps * thickness
        matrix[:3, 3] = position_lps
        return matrix


def order_along_normal(positions_lps, normal_lps) -> np.ndarray:
    """Indices that sort slices by the projection of their position on the normal (stable).

    Parameters
    ----------
    positions_lps : (K, 3) array_like, mm, LPS
        ImagePositionPatient of each slice.
    normal_lps : (3,) array_like
        Slice normal.

    Returns
    -------
    (K,) ndarray of int
    """
    distances = np.asarray(positions_lps, dtype=float) @ np.asarray(normal_lps, dtype=float)
    return np.argsort(distances, kind="stable")


@dataclass(frozen=True)
class StackReport:
    """How an ordered stack departs from a regular orthogonal grid.

    Attributes
    ----------
    distances : (K,) ndarray, mm
        Position of each slice along the normal, relative to the first.
    step_lps : (3,) ndarray, mm
        Mean slice-to-slice displacement ``(last - first) / (K - 1)`` (zero for one slice).
    max_residual : float, mm
        Largest distance of a slice from ``first + k * step_lps``.
    tilt_deg : float
        Angle between the normal and the slice-to-slice direction.
    inplane_shift : float, mm
        In-plane displacement of the last slice relative to the first.
    missing : int
        Number of missing slices (0 unless the gaps are whole multiples of the median gap).
    """

    distances: np.ndarray
    step_lps: np.ndarray
    max_residual: float
    tilt_deg: float
    inplane_shift: float
    missing: int

    @property
    def gaps(self) -> np.ndarray:
        """(K-1,) distances between neighbouring slices along the normal, mm."""
        return np.diff(self.distances)

    @property
    def is_evenly_spaced(self) -> bool:
        """True when every slice lies on ``first + k * step`` within :data:`POSITION_ATOL`."""
        return self.max_residual <= POSITION_ATOL

    @property
    def is_tilted(self) -> bool:
        """True when the slices drift in-plane by more than :data:`POSITION_ATOL` (gantry tilt)."""
        return self.inplane_shift > POSITION_ATOL

    @property
    def needs_regularization(self) -> bool:
        """True when only a resampled grid is both orthogonal and exact."""
        return len(self.distances) > 1 and (self.is_tilted or not self.is_evenly_spaced)


def analyse_stack(positions_lps, normal_lps) -> StackReport:
    """Measure how a stack ordered along the normal departs from a regular orthogonal grid.

    Parameters
    ----------
    positions_lps : (K, 3) array_like, mm, LPS
        ImagePositionPatient of each slice, already in k order (see :func:`order_along_normal`).
    normal_lps : (3,) array_like
        Unit slice normal.
    """
    positions = np.asarray(positions_lps, dtype=float)
    normal = np.asarray(normal_lps, dtype=float)
    distances = (positions - positions[0]) @ normal
    count = len(positions)
    if count == 1:
        return StackReport(distances, np.zeros(3), 0.0, 0.0, 0.0, 0)
    step = (positions[-1] - positions[0]) / (count - 1)
    residuals = positions - (positions[0] + np.arange(count)[:, None] * step)
    span = positions[-1] - positions[0]
    along = float(span @ normal)
    inplane = float(np.linalg.norm(span - along * normal))
    tilt = math.degrees(math.atan2(inplane, abs(along)))
    max_residual = float(np.max(np.linalg.norm(residuals, axis=1)))
    missing = 0 if max_residual <= POSITION_ATOL else _missing_slice_count(np.diff(distances))
    return StackReport(distances, step, max_residual, tilt, inplane, missing)


def _missing_slice_count(gaps: np.ndarray) -> int:
    """Slices missing when every gap is a whole multiple of the median gap, else 0."""
    median = float(np.median(gaps))
    if median <= POSITION_ATOL:
        return 0
    multiples = np.maximum(np.rint(gaps / median), 1)
    tolerance = np.maximum(POSITION_ATOL, MISSING_SLICE_RTOL * median) * multiples
    if np.all(np.abs(gaps - multiples * median) <= tolerance):
        return int(np.sum(multiples - 1))
    return 0


def stack_warnings(report: StackReport, frame: SliceFrame) -> list[AlignSeriesWarning]:
    """Warnings for a stack: tilt, missing slices, non-uniform spacing, non-orthonormal orientation."""
    warnings = []
    if frame.orthonormality_error > ORIENTATION_ATOL:
        warnings.append(AlignSeriesWarning(
            "non_orthonormal_orientation",
            f"ImageOrientationPatient row and column directions are {frame.orthonormality_error:.2e} from orthogonal "
            f"(|cos| of their angle; tolerance {ORIENTATION_ATOL:g})"))
    if report.is_tilted:
        warnings.append(AlignSeriesWarning(
            "gantry_tilt",
            f"slices advance at {report.tilt_deg:.2f} deg to the slice normal (gantry tilt): the last slice is "
            f"shifted {report.inplane_shift:.3f} mm in-plane from the first (tolerance {POSITION_ATOL} mm)"))
    if not report.is_evenly_spaced:
        warnings.append(_spacing_warning(report))
    return warnings


def _spacing_warning(report: StackReport) -> AlignSeriesWarning:
    gaps = report.gaps
    summary = (f"gaps along the normal min {gaps.min():.4f} / median {np.median(gaps):.4f} / max {gaps.max():.4f} mm, "
               f"a slice is up to {report.max_residual:.3f} mm off an evenly spaced grid "
               f"(tolerance {POSITION_ATOL} mm)")
    if report.missing:
        return AlignSeriesWarning("missing_slices", f"{report.missing} slice(s) missing: {summary}")
    return AlignSeriesWarning("nonuniform_spacing", f"non-uniform slice spacing: {summary}")


def header_grid(frame: SliceFrame, positions_lps, report: StackReport, shape_ji, single_spacing: float
                ) -> VolumeGeometry:
    """The grid the headers define, exact for an evenly spaced stack (sheared when tilted).

    Parameters
    ----------
    frame : SliceFrame
    positions_lps : (K, 3) array_like, mm, LPS
        Slice positions in k order.
    report : StackReport
        From :func:`analyse_stack`; must be evenly spaced.
    shape_ji : tuple of 2 int
        (Rows, Columns) of each slice.
    single_spacing : float, mm
        k spacing used when there is one slice.
    """
    positions = np.asarray(positions_lps, dtype=float)
    if len(positions) == 1:
        step = frame.normal_lps * single_spacing
    elif report.is_tilted:
        step = report.step_lps
    else:
        step = frame.normal_lps * (report.distances[-1] / (len(positions) - 1))
    ijk_to_lps = frame.slice_ijk_to_lps(positions[0], 1.0)
    ijk_to_lps[:3, 2] = step
    return VolumeGeometry.from_ijk_to_lps((shape_ji[1], shape_ji[0], len(positions)), ijk_to_lps)


@dataclass(frozen=True)
class GridSpacing:
    """The spacing chosen for a regular grid along the normal, and why (for the ``regularized`` warning).

    Attributes
    ----------
    spacing : float, mm
        Target distance between grid planes (the grid divides the span evenly, at most this far apart).
    reason : str
        Why, with the measured values and the threshold.
    """

    spacing: float
    reason: str


def choose_grid_spacing(report: StackReport, requested: float | None = None) -> GridSpacing:
    """Spacing along the normal of the regular grid for an irregular stack.

    * ``requested`` when given;
    * the usual (median) gap when slices are missing (every gap a whole multiple of it);
    * else the smallest gap between adjacent acquired slices, to keep the acquired resolution,
      but not below :data:`MIN_SPACING_FRACTION_OF_MEDIAN` of the median gap.

    Parameters
    ----------
    report : StackReport
        Of a stack of at least 2 slices.
    requested : float, optional, mm
        Spacing asked for by the caller; must be positive and finite.

    Raises
    ------
    GeometryError
        If ``requested`` is not a positive finite number.
    """
    gaps = report.gaps
    median, smallest = float(np.median(gaps)), float(gaps.min())
    if requested is not None:
        if not (isinstance(requested, int | float) and math.isfinite(requested) and requested > 0):
            raise GeometryError(f"regularize spacing must be a positive number of mm, got {requested!r}")
        return GridSpacing(float(requested), f"as requested (acquired gaps {smallest:.4g} to {gaps.max():.4g} mm)")
    if report.missing:
        return GridSpacing(median, f"the usual slice spacing (median gap {median:.4g} mm): every gap is a whole "
                                   f"multiple of it, {report.missing} slice(s) missing")
    floor = MIN_SPACING_FRACTION_OF_MEDIAN * median
    if smallest < floor:
        return GridSpacing(floor, f"{MIN_SPACING_FRACTION_OF_MEDIAN:g} x the median gap {median:.4g} mm, as the "
                                  f"smallest gap {smallest:.4g} mm is below that floor")
    return GridSpacing(smallest, f"the smallest gap between adjacent acquired slices ({smallest:.4g} mm; median "
                                 f"{median:.4g} mm), to keep the acquired resolution")


def regular_grid(frame: SliceFrame, positions_lps, report: StackReport, shape_ji, *,
                 spacing: float | None = None) -> VolumeGeometry:
    """An orthogonal grid covering every source slice, for regularizing an irregular stack.

    The in-plane axes are the orthonormalized row and column directions with the source pixel
    spacing; the grid is extended in-plane so that every (shifted) source slice lies inside it and
    its lattice contains the first slice's pixel centers. Along the normal it runs from the first to
    the last source slice in ``n`` equal steps of at most ``spacing`` (within :data:`POSITION_ATOL`
    over the span), so that the first and last source planes are grid planes.

    Parameters
    ----------
    frame : SliceFrame
    positions_lps : (K, 3) array_like, mm, LPS
        Slice positions in k order, K >= 2.
    report : StackReport
    shape_ji : tuple of 2 int
        (Rows, Columns) of each slice.
    spacing : float, optional, mm
        Largest step along the normal; default :func:`choose_grid_spacing` (the smallest acquired gap,
        or the usual gap when slices are missing).
    """
    axes = frame.orthonormalized()
    positions_lps = np.asarray(positions_lps, dtype=float)
    offsets = positions_lps - positions_lps[0]
    start_i, count_i = _covering_range(offsets @ axes.row_lps, axes.spacing_ij[0], shape_ji[1])
    start_j, count_j = _covering_range(offsets @ axes.column_lps, axes.spacing_ij[1], shape_ji[0])
    span = float(report.distances[-1])
    step = choose_grid_spacing(report, spacing).spacing
    count_k = max(math.ceil((span - POSITION_ATOL) / step), 1) + 1
    ijk_to_lps = axes.slice_ijk_to_lps(positions_lps[0], span / (count_k - 1))
    ijk_to_lps[:3, 3] += start_i * ijk_to_lps[:3, 0] + start_j * ijk_to_lps[:3, 1]
    return VolumeGeometry.from_ijk_to_lps((count_i, count_j, count_k), ijk_to_lps)


def _covering_range(starts_mm: np.ndarray, spacing: float, count: int) -> tuple[int, int]:
    """First index and number of a lattice (step ``spacing``, through 0) covering all shifted rows.

    Each source row spans ``[start, start + (count - 1) * spacing]`` mm; a lattice point less than
    :data:`POSITION_ATOL` outside that span still counts as inside.
    """
    slack = POSITION_ATOL / spacing
    first = math.floor(float(starts_mm.min()) / spacing + slack)
    last = math.ceil(float(starts_mm.max()) / spacing + count - 1 - slack)
    return first, last - first + 1
