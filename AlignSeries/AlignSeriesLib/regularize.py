"""Exact regularization: resample an irregular stack of parallel slices onto an orthogonal grid.

The grid (see :func:`AlignSeriesLib.dicom.stack.regular_grid`) shares the slices' in-plane axes
and pixel spacing, so a grid point projects onto each source slice at a constant sub-pixel shift.
Each output voxel is interpolated from the true slice positions:

1. along the normal, *linearly* between the two source slices whose planes bracket it (a voxel on
   a source plane takes that slice alone, so no slice is blurred by its neighbours);
2. within each of those source slices, *bilinearly* at the point where the voxel projects along the
   normal (this removes the shear of a gantry-tilted series).

Sample points less than one pixel outside a source slice mix in, and points further out take,
``fill`` (by default the smallest value of the stack: the background).
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import VolumeGeometry

#: A fractional shift or weight smaller than this is treated as zero (the sample is on a pixel
#: center or on a source plane); it is far below any interpolation error that matters.
WEIGHT_EPSILON = 1e-6


def resample_stack(slices_kji, slice_ijk_to_lps, grid: VolumeGeometry, *, fill: float | None = None) -> np.ndarray:
    """Interpolate source slices onto ``grid`` (linear along the normal, bilinear in-plane).

    Parameters
    ----------
    slices_kji : (K, J, I) array_like
        Source slices in order along the normal (rows j, columns i).
    slice_ijk_to_lps : (K, 4, 4) array_like
        Each source slice's pixel index ``(i, j, 0)`` to LPS mm; the third column is the slice normal
        (any length). All slices are parallel to the grid's i-j plane.
    grid : VolumeGeometry
        Orthogonal target grid whose i and j axes and spacing are those of the slices.
    fill : float, optional
        Value outside every source slice; default the minimum of ``slices_kji``.

    Returns
    -------
    (K', J', I') ndarray of float32
        Voxels on ``grid``, indexed ``[k, j, i]``.
    """
    slices = np.asarray(slices_kji)
    matrices = np.asarray(slice_ijk_to_lps, dtype=float)
    fill = float(slices.min()) if fill is None else float(fill)
    grid_to_lps = grid.ijk_to_lps
    normal = grid_to_lps[:3, 2] / np.linalg.norm(grid_to_lps[:3, 2])
    source_distances = (matrices[:, :3, 3] - grid_to_lps[:3, 3]) @ normal
    output = np.empty(grid.shape, dtype=np.float32)
    for k in range(grid.dimensions[2]):
        plane_origin = grid_to_lps[:3, 3] + k * grid_to_lps[:3, 2]
        distance = float(k * grid_to_lps[:3, 2] @ normal)
        output[k] = _plane(slices, matrices, source_distances, plane_origin, distance, grid.shape[1:], fill)
    return output


def _plane(slices, matrices, source_distances, plane_origin, distance, shape_ji, fill) -> np.ndarray:
    """One output plane at ``distance`` mm along the normal: the bracketing source slices, mixed linearly."""
    result = np.zeros(shape_ji, dtype=np.float32)
    for index, weight in _bracket(source_distances, distance):
        shift_ij = _inplane_shift(matrices[index], plane_origin)
        result += np.float32(weight) * _sample_shifted(slices[index], shift_ij, shape_ji, fill)
    return result


def _bracket(source_distances: np.ndarray, distance: float) -> list[tuple[int, float]]:
    """(slice index, weight) of the one or two source slices to mix for a plane at ``distance`` mm."""
    upper = int(np.searchsorted(source_distances, distance))
    upper = min(max(upper, 1), len(source_distances) - 1)
    lower = upper - 1
    gap = source_distances[upper] - source_distances[lower]
    weight = 0.0 if gap <= 0 else min(max((distance - source_distances[lower]) / gap, 0.0), 1.0)
    if weight < WEIGHT_EPSILON:
        return [(lower, 1.0)]
    if weight > 1 - WEIGHT_EPSILON:
        return [(upper, 1.0)]
    return [(lower, 1.0 - weight), (upper, weight)]


def _inplane_shift(slice_ijk_to_lps: np.ndarray, point_lps: np.ndarray) -> tuple[float, float]:
    """Fractional (i, j) pixel index of ``point_lps`` projected along the normal onto the slice."""
    ijk = np.linalg.solve(slice_ijk_to_lps[:3, :3], point_lps - slice_ijk_to_lps[:3, 3])
    return float(ijk[0]), float(ijk[1])


def _sample_shifted(image_ji: np.ndarray, shift_ij: tuple[float, float], shape_ji, fill: float) -> np.ndarray:
    """Bilinear samples of ``image_ji`` at ``(j + shift_j, i + shift_i)`` for every output (j, i)."""
    start_i, start_j = math.floor(shift_ij[0]), math.floor(shift_ij[1])
    fraction_i, fraction_j = shift_ij[0] - start_i, shift_ij[1] - start_j
    result = np.zeros(shape_ji, dtype=np.float32)
    for offset_j, weight_j in ((0, 1 - fraction_j), (1, fraction_j)):
        for offset_i, weight_i in ((0, 1 - fraction_i), (1, fraction_i)):
            weight = weight_j * weight_i
            if weight > WEIGHT_EPSILON:
                window = _window(image_ji, start_j + offset_j, start_i + offset_i, shape_ji, fill)
                result += np.float32(weight) * window
    return result


def _window(image_ji: np.ndarray, start_j: int, start_i: int, shape_ji, fill: float) -> np.ndarray:
    """``image_ji[start_j : start_j + J, start_i : start_i + I]`` with ``fill`` outside the image."""
    window = np.full(shape_ji, fill, dtype=np.float32)
    rows, columns = image_ji.shape
    source_j = slice(max(start_j, 0), min(start_j + shape_ji[0], rows))
    source_i = slice(max(start_i, 0), min(start_i + shape_ji[1], columns))
    if source_j.start < source_j.stop and source_i.start < source_i.stop:
        target_j = slice(source_j.start - start_j, source_j.stop - start_j)
        target_i = slice(source_i.start - start_i, source_i.stop - start_i)
        window[target_j, target_i] = image_ji[source_j, source_i]
    return window
