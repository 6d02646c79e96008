"""Resample a voxel array onto a reference geometry through a linear world transform.

The one public workhorse is :func:`resample_to_geometry`; :func:`geometry_covering`,
:func:`slab` and :func:`crop_to_overlap` build explicit reference geometries for it.

Frames and conventions
----------------------
* Arrays are indexed ``[k, j, i]`` (:mod:`.geometry`). Geometries are :class:`VolumeGeometry`.
* ``input_geometry`` places the input array in its own (moving) RAS world; ``moving_to_fixed_ras``
  maps that world onto the reference's (fixed) RAS world, as a registration transform node's
  "to parent" matrix does. The output voxel at reference index ``p`` samples the input at
  ``input.ras_to_ijk @ inv(moving_to_fixed_ras) @ reference.ijk_to_ras @ p``.
* A sample lying within half a voxel outside the input's first/last voxel centre takes the edge
  voxel's value (the input's voxel *boxes* are covered); farther out it takes ``background``.

How it is computed
------------------
``vtkImageReslice`` works in index space (:mod:`.reslice`): the input is wrapped without copying as a
``vtkImageData`` of spacing 1 and origin 0, and the reslice axes are the combined
reference-index-to-input-index matrix, which sidesteps VTK's partial support of direction matrices.
Threads come from ``vtkSMPTools`` with the ``STDThread`` backend. Integer outputs are rounded to nearest
(``vtkImageReslice`` rounds and clamps to the output type), never truncated.

Interpolation and value range
-----------------------------
* ``nearest``, ``linear`` (trilinear) and ``cubic`` (``vtkImageReslice``'s cubic: Catmull-Rom,
  i.e. Keys with a = -0.5, interpolating). Cubic overshoots at edges; its output is clamped to
  the range of the input and the background, for every scalar type, so it never invents
  intensities that are not in the input's range (and never wraps).
* The output keeps the input's scalar type. Only a ``background`` that the type cannot hold
  (e.g. ``-1`` for ``uint8``, ``nan`` for ``int16``) widens it, with a ``dtype_widened`` warning.

Work proportional to the overlap
--------------------------------
Only the input's *footprint* in the output grid is interpolated: the box of output voxels that
contains the input's voxel centres grown by the kernel's support (:data:`KERNEL_SUPPORT`: half a
voxel for nearest, one for linear, two for cubic, in input voxels) and mapped through the
transform, plus one output voxel against rounding. Every output voxel outside it is filled with
``background`` without interpolating. ``vtkImageReslice`` computes each output voxel from its
absolute index, and returns ``background`` for every sample beyond half a voxel outside the input,
so the result is the full-grid resampling's, bit for bit (``footprint=False`` interpolates the whole
grid, for comparison). A partial MR or a mask covering a fifth of a whole-body grid costs about a
fifth of the grid.

Exact where nothing moves
-------------------------
When the reference-index-to-input-index mapping is a permutation and/or flip of the axes with
integer offsets — every reference voxel centre within :data:`EXACT_COPY_ATOL` voxel of an input
voxel centre (e.g. a NIfTI converted from the same DICOM, whose header was rounded to float32) —
the input voxels are copied, whatever the interpolation: no interpolation changes a value.
``ResampleResult.method`` is then ``"copy"``.

Label maps (``labelmap=True``)
------------------------------
Labels are label-safe: the output contains only values present in the input, plus
``background`` outside the input's field. With ``interpolation="nearest"`` the nearest input
voxel is taken. Otherwise (``linear`` or ``cubic`` requested) a *label-wise linear* vote is used
when the input has at most :data:`LABELWISE_MAX_LABELS` distinct values: each label's one-hot mask
is interpolated linearly and the label of largest weight wins, ties going to a foreground label
rather than background. Boundaries are then smooth instead of stair-stepped, and a structure one
voxel thick that falls between output samples (e.g. a 1 mm sheet on a 2 mm grid) is kept, where
nearest-neighbour sampling drops every other one. It costs one linear resampling per label; beyond
:data:`LABELWISE_MAX_LABELS` labels nearest-neighbour is used and a ``labels_nearest`` warning
says so.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .choices import INTERPOLATIONS
from .errors import AlignSeriesWarning, GeometryError, OperationCancelledError, ProgressCallback, ResampleError
from .geometry import VolumeGeometry, apply_affine, as_matrix4, moving_ijk_to_fixed_ijk
from .reslice import Box, Reslicer, box_shape, filled_array, window

logger = logging.getLogger(__name__)

#: Interpolation names accepted by :func:`resample_to_geometry`.

#: Largest number of distinct values (background included) for which label maps are resampled by a
#: label-wise linear vote; more labels fall back to nearest neighbour (one linear pass per label).
LABELWISE_MAX_LABELS = 16

#: Largest distance, in input voxels, between a reference voxel centre and an input voxel centre for the
#: voxels to be copied rather than interpolated (see "Exact where nothing moves").
EXACT_COPY_ATOL = 1e-3

#: Tolerance, in voxels, when deciding whether two grids' voxel boxes overlap.
OVERLAP_ATOL = 1e-6

#: Number of output slabs processed one after the other when a ``progress`` callback is given.
PROGRESS_STEPS = 10

#: Number of ``vtkImageReslice`` calls (slabs of output slices) when only a footprint is interpolated: the
#: temporary of each is a few percent of the output.
FOOTPRINT_SLABS = 32

#: Reach of each interpolation kernel beyond a sample point, in input voxels: the footprint of the input
#: in the output grid is its voxel centres' box grown by this much (see "Work proportional to the overlap").
KERNEL_SUPPORT = {"nearest": 0.5, "linear": 1.0, "cubic": 2.0}

_VOTE_SCALE = 255  # one-hot masks are interpolated to uint8 weights 0..255
_SUPPORTED_KINDS = "biuf"



@dataclass(frozen=True, eq=False)
class ResampleResult:
    """Output of :func:`resample_to_geometry`.

    Attributes
    ----------
    array : (K, J, I) ndarray
        Voxels on the reference grid, indexed ``[k, j, i]``; ``(K, J, I) = geometry.shape``.
    geometry : VolumeGeometry
        The reference geometry the array lies on.
    method : str
        Interpolation actually used: ``nearest``, ``linear``, ``cubic``, ``label-wise linear``, or
        ``copy`` when the grids coincide voxel for voxel (up to a permutation or flip of axes).
    background : int or float
        Value given to reference voxels outside the input's field.
    warnings : tuple of AlignSeriesWarning
    """

    array: np.ndarray
    geometry: VolumeGeometry
    method: str
    background: float
    warnings: tuple[AlignSeriesWarning, ...] = ()


# -- public API -----------------------------------------------------------------------------------


def resample_to_geometry(
    array_kji,
    input_geometry: VolumeGeometry,
    reference_geometry: VolumeGeometry,
    moving_to_fixed_ras=None,
    *,
    interpolation: str = "linear",
    labelmap: bool = False,
    background: float | None = None,
    progress: ProgressCallback | None = None,
    footprint: bool = True,
) -> ResampleResult:
    """Resample an array onto a reference grid through a linear world transform.

    Parameters
    ----------
    array_kji : (K, J, I) array_like
        Input voxels indexed ``[k, j, i]``; ``(K, J, I)`` must equal ``input_geometry.shape``. Any
        integer, boolean or float32/float64 type. Never modified; not copied when C-contiguous.
    input_geometry : VolumeGeometry
        Grid of the input in its own (moving) RAS world.
    reference_geometry : VolumeGeometry
        Output grid, in the fixed RAS world.
    moving_to_fixed_ras : (4, 4) array_like, optional
        Affine mapping moving RAS mm to fixed RAS mm (a transform node's "to parent" matrix);
        identity by default. Non-linear transforms are not supported.
    interpolation : {"nearest", "linear", "cubic"}
    labelmap : bool
        Treat the input as a label map: label-safe resampling (see the module notes).
    background : float, optional
        Value outside the input's field; default the input's minimum (``0`` for label maps).
    progress : callable, optional
        Called with the completed fraction (0..1) as the work advances; returning True cancels
        (:class:`OperationCancelledError` is raised).
    footprint : bool
        Interpolate only the input's footprint in the output grid (the default; same voxels, see the
        module notes); False interpolates every output voxel.

    Returns
    -------
    ResampleResult
        ``array`` of shape ``reference_geometry.shape`` (``[k, j, i]``), the input's scalar type
        unless a warning says it was widened.

    Raises
    ------
    OperationCancelledError
        If ``progress`` returned True.
    ResampleError
        If the array does not match ``input_geometry``, its type is unsupported, the interpolation
        is unknown or the transform is not a 4x4 affine.
    GeometryError
        If a geometry is missing or invalid, or the transform is singular.
    """
    input_geometry = _checked_geometry(input_geometry, "input_geometry")
    reference_geometry = _checked_geometry(reference_geometry, "reference_geometry")
    array = _checked_array(array_kji, input_geometry)
    interpolation = _checked_interpolation(interpolation)
    reference_ijk_to_input_ijk = reference_ijk_to_input_ijk_matrix(
        reference_geometry, input_geometry, moving_to_fixed_ras
    )
    background = _default_background(array, labelmap) if background is None else background
    output_dtype, warnings = _output_dtype(array.dtype, background)
    if not _grids_overlap(reference_geometry.dimensions, reference_ijk_to_input_ijk, input_geometry.dimensions):
        warnings.append(_no_overlap_warning(reference_geometry, input_geometry, moving_to_fixed_ras))
        output = np.full(reference_geometry.shape, background, dtype=output_dtype)
        method = "label-wise linear" if labelmap and interpolation != "nearest" else interpolation
    elif (copy := _index_copy(reference_ijk_to_input_ijk, reference_geometry.dimensions)) is not None:
        output, method = _copied(array, copy, reference_geometry.shape, background, output_dtype), "copy"
        _report(progress, 1.0)
    else:
        labelwise = labelmap and interpolation != "nearest"
        box = (footprint_box(reference_ijk_to_input_ijk, input_geometry.dimensions, reference_geometry.dimensions,
                             "linear" if labelwise else interpolation)
               if footprint else _whole_box(reference_geometry.dimensions))
        job = Reslicer(array, reference_ijk_to_input_ijk, reference_geometry.shape, box)
        if labelwise:
            output, method, label_warnings = _resample_labels(job, background, output_dtype, progress)
            warnings.extend(label_warnings)
        else:
            output = _resample_scalars(job, interpolation, background, output_dtype, progress)
            method = interpolation
    for warning in warnings:
        logger.warning("%s", warning.message)
    return ResampleResult(output, reference_geometry, method, background, tuple(warnings))


def reference_ijk_to_input_ijk_matrix(
    reference_geometry: VolumeGeometry, input_geometry: VolumeGeometry, moving_to_fixed_ras=None
) -> np.ndarray:
    """Index-to-index matrix that tells which input voxel each reference voxel samples.

    Parameters
    ----------
    reference_geometry, input_geometry : VolumeGeometry
    moving_to_fixed_ras : (4, 4) array_like, optional
        Input (moving) RAS to reference (fixed) RAS; identity by default.

    Returns
    -------
    (4, 4) ndarray
        ``input.ras_to_ijk @ inv(moving_to_fixed_ras) @ reference.ijk_to_ras``: maps a reference
        index ``(i, j, k, 1)`` to a fractional input index.
    """
    fixed_to_moving_ras = np.linalg.inv(_checked_transform(moving_to_fixed_ras))
    return moving_ijk_to_fixed_ijk(reference_geometry, input_geometry, fixed_to_moving_ras)


def footprint_box(reference_ijk_to_input_ijk, input_dimensions, reference_dimensions,
                  interpolation: str = "linear") -> Box:
    """The box of output voxels where an input can contribute: everywhere else resampling gives background.

    Parameters
    ----------
    reference_ijk_to_input_ijk : (4, 4) array_like
        Reference index to input index (:func:`reference_ijk_to_input_ijk_matrix`).
    input_dimensions, reference_dimensions : tuple of 3 int
        ``(I, J, K)`` of the input and of the reference grid.
    interpolation : {"nearest", "linear", "cubic"}
        Its kernel's support (:data:`KERNEL_SUPPORT`) grows the input's box.

    Returns
    -------
    first, stop : tuple of 3 int
        Reference indices ``(i, j, k)``: the box is ``first <= index < stop``, within the reference grid;
        empty (some ``stop <= first``) when the input cannot reach it.
    """
    support = KERNEL_SUPPORT[interpolation]
    low, high = -support, np.asarray(input_dimensions, dtype=float) - 1 + support
    corners = np.array([[(low, high[0])[a], (low, high[1])[b], (low, high[2])[c]]
                        for c in (0, 1) for b in (0, 1) for a in (0, 1)])
    in_reference = apply_affine(np.linalg.inv(np.asarray(reference_ijk_to_input_ijk, dtype=float)), corners)
    first = np.maximum(np.floor(in_reference.min(axis=0)).astype(int) - 1, 0)
    stop = np.minimum(np.ceil(in_reference.max(axis=0)).astype(int) + 2, np.asarray(reference_dimensions))
    stop = np.maximum(stop, first)
    return (int(first[0]), int(first[1]), int(first[2])), (int(stop[0]), int(stop[1]), int(stop[2]))


def _whole_box(reference_dimensions) -> Box:
    i, j, k = (int(n) for n in reference_dimensions)
    return (0, 0, 0), (i, j, k)


def geometry_covering(
    input_geometry: VolumeGeometry, spacing=None, *, directions_ras=None
) -> VolumeGeometry:
    """An axis-aligned grid that covers every voxel box of the input, centred on it.

    Parameters
    ----------
    input_geometry : VolumeGeometry
    spacing : float or (3,) array_like, mm, optional
        Isotropic spacing (one number) or spacing along i, j, k; default the input's smallest
        spacing, isotropic.
    directions_ras : (3, 3) array_like, optional
        Column ``n`` is the RAS direction of the new grid's axis ``n``; identity (i towards Right,
        j towards Anterior, k towards Superior) by default.

    Returns
    -------
    VolumeGeometry
        The smallest grid of that spacing and orientation whose voxel boxes contain all of the
        input's, with the same centre as the input.

    Examples
    --------
    >>> g = VolumeGeometry.from_spacing_origin_directions((4, 4, 2), (1, 1, 3), (0, 0, 0))
    >>> geometry_covering(g, 2).dimensions
    (2, 2, 3)
    """
    input_geometry = _checked_geometry(input_geometry, "input_geometry")
    spacing = np.broadcast_to(
        np.asarray(input_geometry.spacing.min() if spacing is None else spacing, dtype=float), (3,)
    )
    directions = np.eye(3) if directions_ras is None else np.asarray(directions_ras, dtype=float)
    probe = VolumeGeometry.from_spacing_origin_directions((1, 1, 1), spacing, (0, 0, 0), directions)
    box_corners = _box_corners(input_geometry.dimensions)
    corners_in_probe = apply_affine(probe.ras_to_ijk @ input_geometry.ijk_to_ras, box_corners)
    extent = corners_in_probe.max(axis=0) - corners_in_probe.min(axis=0)
    dimensions = tuple(max(1, math.ceil(n - OVERLAP_ATOL)) for n in extent)
    centre_in_probe = corners_in_probe.mean(axis=0)
    origin_ras = probe.ijk_to_world(centre_in_probe - (np.array(dimensions) - 1) / 2.0)
    return VolumeGeometry.from_spacing_origin_directions(dimensions, spacing, origin_ras, probe.directions_ras)


def slab(reference_geometry: VolumeGeometry, first_slice: int, count: int) -> VolumeGeometry:
    """Slices ``first_slice .. first_slice + count - 1`` of a grid, at their true position.

    Parameters
    ----------
    reference_geometry : VolumeGeometry
    first_slice : int
        Index k of the slab's first slice in the reference grid.
    count : int
        Number of slices.

    Returns
    -------
    VolumeGeometry
        Dimensions ``(I, J, count)``; voxel ``(i, j, k)`` of the slab is voxel
        ``(i, j, first_slice + k)`` of the reference, at the same RAS position. An array on the
        reference grid ``a[k, j, i]`` gives the slab's voxels as ``a[first_slice:first_slice + count]``.

    Raises
    ------
    GeometryError
        If the slab does not lie within the reference's slices.
    """
    reference_geometry = _checked_geometry(reference_geometry, "reference_geometry")
    slices = reference_geometry.dimensions[2]
    if not (0 <= first_slice and count >= 1 and first_slice + count <= slices):
        raise GeometryError(
            f"slab of {count} slices from slice {first_slice} does not fit the reference's {slices} slices "
            f"(need 0 <= first_slice and first_slice + count <= {slices}, count >= 1)"
        )
    return _subgrid(reference_geometry, (0, 0, first_slice), (*reference_geometry.dimensions[:2], count))


def crop_to_overlap(
    reference_geometry: VolumeGeometry, input_geometry: VolumeGeometry, moving_to_fixed_ras=None
) -> VolumeGeometry:
    """The part of the reference grid that the input covers, as a grid of its own.

    Parameters
    ----------
    reference_geometry, input_geometry : VolumeGeometry
    moving_to_fixed_ras : (4, 4) array_like, optional
        Input (moving) RAS to reference (fixed) RAS; identity by default.

    Returns
    -------
    VolumeGeometry
        The smallest index-aligned box of reference voxels containing every reference voxel
        whose box overlaps the input's voxel boxes' bounding box in reference index space (for an
        oblique input a few corner voxels of the crop may lie outside the input). Same spacing and
        directions as the reference, each voxel at its reference position.

    Raises
    ------
    GeometryError
        If the input does not overlap the reference at all.
    """
    reference_geometry = _checked_geometry(reference_geometry, "reference_geometry")
    input_geometry = _checked_geometry(input_geometry, "input_geometry")
    input_ijk_to_reference_ijk = np.linalg.inv(
        reference_ijk_to_input_ijk_matrix(reference_geometry, input_geometry, moving_to_fixed_ras)
    )
    corners = apply_affine(input_ijk_to_reference_ijk, _box_corners(input_geometry.dimensions))
    first = np.maximum(np.floor(corners.min(axis=0) - 0.5 + OVERLAP_ATOL).astype(int) + 1, 0)
    last = np.minimum(np.ceil(corners.max(axis=0) + 0.5 - OVERLAP_ATOL).astype(int) - 1,
                      np.array(reference_geometry.dimensions) - 1)
    if np.any(last < first) or not _grids_overlap(
        reference_geometry.dimensions, np.linalg.inv(input_ijk_to_reference_ijk), input_geometry.dimensions
    ):
        raise GeometryError(
            "input does not overlap the reference: " + _no_overlap_warning(
                reference_geometry, input_geometry, moving_to_fixed_ras).message
        )
    return _subgrid(reference_geometry, tuple(first), tuple(last - first + 1))


# -- argument checks ------------------------------------------------------------------------------


def _checked_geometry(geometry, name: str) -> VolumeGeometry:
    if geometry is None:
        raise GeometryError(f"{name} is missing: the volume has no geometry (dimensions and ijk_to_ras)")
    if not isinstance(geometry, VolumeGeometry):
        raise GeometryError(f"{name} must be a VolumeGeometry, got {type(geometry).__name__}")
    return geometry


def _checked_array(array_kji, input_geometry: VolumeGeometry) -> np.ndarray:
    array = np.asarray(array_kji)
    if array.ndim != 3 or array.shape != input_geometry.shape:
        raise ResampleError(
            f"array_kji has shape {array.shape}, expected {input_geometry.shape} ([k, j, i] of "
            f"input_geometry with dimensions (i, j, k) = {input_geometry.dimensions})"
        )
    if array.dtype.kind not in _SUPPORTED_KINDS or array.dtype == np.float16:
        raise ResampleError(f"array_kji has unsupported type {array.dtype}: use an integer, bool, float32 or float64")
    return np.ascontiguousarray(array)


def _checked_interpolation(interpolation: str) -> str:
    if interpolation not in INTERPOLATIONS:
        raise ResampleError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}")
    return interpolation


def _checked_transform(moving_to_fixed_ras) -> np.ndarray:
    if moving_to_fixed_ras is None:
        return np.eye(4)
    try:
        matrix = np.asarray(moving_to_fixed_ras, dtype=float)
    except (TypeError, ValueError):
        raise ResampleError(
            f"moving_to_fixed_ras must be a 4x4 affine matrix (moving RAS to fixed RAS), got "
            f"{type(moving_to_fixed_ras).__name__}; non-linear transforms are not supported"
        ) from None
    if matrix.shape != (4, 4):
        raise ResampleError(
            f"moving_to_fixed_ras must be a 4x4 affine matrix, got shape {matrix.shape}; "
            "non-linear transforms are not supported"
        )
    return as_matrix4(matrix, "moving_to_fixed_ras")


def _default_background(array: np.ndarray, labelmap: bool):
    if labelmap:
        return False if array.dtype == bool else 0
    return array.min().item()


def _output_dtype(dtype: np.dtype, background) -> tuple[np.dtype, list[AlignSeriesWarning]]:
    """The input's type if it holds ``background`` exactly, else the smallest type that does."""
    if _holds_exactly(dtype, background):
        return dtype, []
    if float(background).is_integer():
        widened = np.result_type(dtype, np.min_scalar_type(int(background)))
    else:
        widened = np.promote_types(dtype, np.float32)
    if widened.kind == "f" and not _holds_exactly(widened, background):
        widened = np.dtype(np.float64)
    message = (f"background {background!r} does not fit the input type {dtype}: output widened to {widened}")
    return widened, [AlignSeriesWarning("dtype_widened", message)]


def _holds_exactly(dtype: np.dtype, value) -> bool:
    value = float(value)
    if dtype.kind == "f":
        return math.isnan(value) or float(np.asarray(value, dtype=dtype)) == value
    if dtype.kind == "b":
        return value in (0.0, 1.0)
    info = np.iinfo(dtype)
    return value.is_integer() and info.min <= value <= info.max


# -- overlap --------------------------------------------------------------------------------------


def _box_corners(dimensions) -> np.ndarray:
    """(8, 3) index coordinates of the corners of a grid's voxel boxes (half a voxel out)."""
    low, high = -0.5, np.asarray(dimensions, dtype=float) - 0.5
    return np.array([[(low, high[0])[a], (low, high[1])[b], (low, high[2])[c]]
                     for c in (0, 1) for b in (0, 1) for a in (0, 1)])


def _grids_overlap(reference_dimensions, reference_ijk_to_input_ijk: np.ndarray, input_dimensions) -> bool:
    """Exact test (separating axes) whether two grids' voxel-box parallelepipeds intersect.

    Works in input index space, where the input box is axis-aligned and the reference box is a
    parallelepiped; touching faces (within :data:`OVERLAP_ATOL`) do not count as overlap.
    """
    input_corners = _box_corners(input_dimensions)
    reference_corners = apply_affine(reference_ijk_to_input_ijk, _box_corners(reference_dimensions))
    edges = reference_ijk_to_input_ijk[:3, :3].T
    axes = [*np.eye(3), *(np.cross(edges[a], edges[b]) for a, b in ((0, 1), (1, 2), (2, 0))),
            *(np.cross(unit, edge) for unit in np.eye(3) for edge in edges)]
    for axis in axes:
        norm = np.linalg.norm(axis)
        if norm < 1e-12:
            continue
        a, b = input_corners @ (axis / norm), reference_corners @ (axis / norm)
        if a.max() <= b.min() + OVERLAP_ATOL or b.max() <= a.min() + OVERLAP_ATOL:
            return False
    return True


def _no_overlap_warning(reference: VolumeGeometry, input_geometry: VolumeGeometry, moving_to_fixed_ras):
    moved = input_geometry.transformed(_checked_transform(moving_to_fixed_ras))
    message = (
        f"the input does not overlap the reference grid: input spans RAS {_bounds_text(moved)} after the "
        f"transform, reference spans {_bounds_text(reference)}; the output is all background. Check the "
        "transform (or pre-align the volumes) and the reference."
    )
    return AlignSeriesWarning("no_overlap", message)


def _bounds_text(geometry: VolumeGeometry) -> str:
    return " x ".join(f"[{lo:.1f}, {hi:.1f}]" for lo, hi in geometry.bounds_ras)


def _subgrid(geometry: VolumeGeometry, first_index, dimensions) -> VolumeGeometry:
    matrix = geometry.ijk_to_ras.copy()
    matrix[:3, 3] = geometry.ijk_to_world(np.asarray(first_index, dtype=float))
    i, j, k = (int(n) for n in dimensions)
    return VolumeGeometry((i, j, k), matrix)


# -- exact copy -----------------------------------------------------------------------------------


def _index_copy(reference_ijk_to_input_ijk: np.ndarray, reference_dimensions) -> list[tuple[int, int, int]] | None:
    """For each reference axis (i, j, k): (input axis, sign, offset) when the mapping is a signed permutation
    with integer offsets within :data:`EXACT_COPY_ATOL` voxel at every corner of the reference grid; else None."""
    linear = reference_ijk_to_input_ijk[:3, :3]
    rounded = np.rint(linear)
    if not (np.all(np.abs(rounded).sum(axis=0) == 1) and np.all(np.abs(rounded).sum(axis=1) == 1)):
        return None
    offsets = np.rint(reference_ijk_to_input_ijk[:3, 3])
    exact = np.eye(4)
    exact[:3, :3], exact[:3, 3] = rounded, offsets
    corners = np.array([[a, b, c] for a in (0, reference_dimensions[0] - 1) for b in (0, reference_dimensions[1] - 1)
                        for c in (0, reference_dimensions[2] - 1)], dtype=float)
    error = np.abs(apply_affine(reference_ijk_to_input_ijk, corners) - apply_affine(exact, corners)).max()
    if error > EXACT_COPY_ATOL:
        return None
    axes = [int(np.flatnonzero(rounded[:, b])[0]) for b in range(3)]
    return [(a, int(rounded[a, b]), int(offsets[a])) for b, a in enumerate(axes)]


def _copied(array: np.ndarray, copy: list[tuple[int, int, int]], reference_shape, background,
            output_dtype: np.dtype) -> np.ndarray:
    """The input's voxels at the reference's, ``background`` where the reference lies outside the input."""
    # array axis of input axis a is 2 - a; output array axis c holds reference axis 2 - c
    moved = np.transpose(array, [2 - copy[2 - c][0] for c in range(3)])
    picks, valid = [], []
    for c in range(3):
        _, sign, offset = copy[2 - c]
        index = sign * np.arange(reference_shape[c]) + offset
        inside = (index >= 0) & (index < moved.shape[c])
        picks.append(index[inside])
        valid.append(inside)
    output = np.full(reference_shape, background, dtype=output_dtype)
    output[np.ix_(*valid)] = moved[np.ix_(*picks)]
    return output


# -- resampling in the box --------------------------------------------------------------------------


def _resample_scalars(job: Reslicer, interpolation: str, background, output_dtype: np.dtype,
                      progress: ProgressCallback | None) -> np.ndarray:
    """Nearest, linear or cubic resampling of the box, background elsewhere.

    The whole grid without progress is one call whose result is the output; otherwise the box is done in slabs
    (:data:`FOOTPRINT_SLABS`) written into a background-filled output.
    """
    options = {"mode": interpolation, "background": background, "output_dtype": output_dtype}
    if job.whole and progress is None:
        output = job.reslice(job.array, box=job.box, **options)
    else:
        output = filled_array(job.reference_shape, output_dtype, background)
        slabs = job.slabs(math.ceil(box_shape(job.box)[0] / (FOOTPRINT_SLABS if progress is None else PROGRESS_STEPS)))
        for done, box in enumerate(slabs, start=1):
            if 0 not in box_shape(box):
                output[window(box)] = job.reslice(job.array, box=box, **options)
            _report(progress, done / len(slabs))
    if interpolation == "cubic":
        _clamp_to_input_range(output[window(job.box)], job.array, background)
    return output


def _report(progress: ProgressCallback | None, fraction: float) -> None:
    if progress is not None and progress(fraction):
        raise OperationCancelledError(f"resampling cancelled at {fraction:.0%}")


def _clamp_to_input_range(output: np.ndarray, array: np.ndarray, background) -> None:
    """Clip cubic overshoot in place to ``[min(input, background), max(input, background)]``."""
    low = min(array.min().item(), background)
    high = max(array.max().item(), background)
    np.clip(output, low, high, out=output)


def _resample_labels(job: Reslicer, background, output_dtype: np.dtype,
                     progress: ProgressCallback | None) -> tuple[np.ndarray, str, list[AlignSeriesWarning]]:
    """Label-wise linear vote in the box (background elsewhere), or nearest neighbour when there are too many labels."""
    labels = _label_values(job.array, LABELWISE_MAX_LABELS)
    if labels is None:
        message = (f"label map has more than {LABELWISE_MAX_LABELS} distinct values: resampled by nearest "
                   "neighbour instead of label-wise linear (thin structures may be lost)")
        output = _resample_scalars(job, "nearest", background, output_dtype, progress)
        return output, "nearest", [AlignSeriesWarning("labels_nearest", message)]
    foreground = [label for label in labels if label != background]
    votes = [(background, _VOTE_SCALE)] + [(label, 0) for label in foreground]
    mask = np.empty(job.array.shape, dtype=bool)
    output = filled_array(job.reference_shape, output_dtype, background)
    voted = output[window(job.box)]
    best_weight: np.ndarray | None = None
    for done, (label, outside_weight) in enumerate(votes, start=1):
        np.equal(job.array, label, out=mask)
        weight = job.reslice(mask, box=job.box, mode="linear", background=outside_weight,
                             output_dtype=np.dtype(np.uint8), scale=_VOTE_SCALE)
        if best_weight is None:  # the background's vote: the output starts as background everywhere
            best_weight = weight
        else:
            wins = weight >= best_weight
            np.copyto(best_weight, weight, where=wins)
            np.copyto(voted, label, where=wins)
        _report(progress, done / len(votes))
    return output, "label-wise linear", []


def _label_values(array: np.ndarray, limit: int) -> list | None:
    """Sorted distinct values of ``array``, or None when there are more than ``limit``.

    Scans slice by slice so that no full-size temporary is made; 8- and 16-bit integers are
    counted with ``bincount`` instead of sorting.
    """
    values: set = set()
    small_integer = array.dtype.kind in "biu" and array.dtype.itemsize <= 2
    for plane in array:
        if small_integer:
            unsigned = plane.reshape(-1).view(f"u{array.dtype.itemsize}")
            present = np.flatnonzero(np.bincount(unsigned)).astype(unsigned.dtype).view(array.dtype)
        else:
            present = np.unique(plane)
        values.update(present.tolist())
        if len(values) > limit:
            return None
    return sorted(values)
