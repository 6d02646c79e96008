"""Pictures to check a result by eye: PNG encoding, windowing, label colours and a fused overview.

Pictures are ``(rows, columns)`` uint8 greyscale or ``(rows, columns, 3)`` uint8 RGB arrays whose
row 0 is the *top* line of the picture. They are encoded with ``vtkPNGWriter`` (no PIL in the
core); VTK counts rows from the bottom, which :func:`png_bytes` accounts for.

:func:`write_fusion_png` shows a reference volume and a volume resampled onto its grid on the
three central index planes of that grid, as a colour overlay or a checkerboard.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

from .errors import AlignSeriesError
from .files import atomic_output
from .geometry import VolumeGeometry

logger = logging.getLogger(__name__)

#: Percentiles of the intensities mapped to black and white by the default window.
DEFAULT_WINDOW_PERCENTILES = (0.5, 99.5)

#: At most this many voxels are read to estimate the default window (a regular subsample).
WINDOW_SAMPLE_SIZE = 1_000_000

#: RGB colour of label value ``v`` is ``LABEL_COLORS[v % 16]``; value 0 (background) is black.
LABEL_COLORS = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
     [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0]],
    dtype=np.uint8,
)

#: Fusion styles of :func:`write_fusion_png`.
FUSION_STYLES = ("overlay", "checkerboard")

#: Side of a checkerboard square, in picture pixels.
CHECKER_SIZE = 24

#: Largest side, in pixels, of one plane of the fused picture (larger planes are scaled down).
PANEL_MAX_SIZE = 512

_PANEL_GAP = 4


def png_bytes(image) -> bytes:
    """Encode a picture as PNG.

    Parameters
    ----------
    image : (rows, columns) or (rows, columns, 3) array_like of uint8, or (rows, columns) of uint16
        Row 0 is the top of the picture. uint16 gives a 16-bit greyscale PNG.

    Returns
    -------
    bytes
        The PNG file's content.
    """
    image = np.asarray(image)
    sixteen_bit = image.dtype == np.uint16 and image.ndim == 2
    if not sixteen_bit and (image.dtype != np.uint8 or image.ndim not in (2, 3)
                            or (image.ndim == 3 and image.shape[2] != 3)):
        raise AlignSeriesError(f"a picture must be uint8 (rows, columns[, 3]) or uint16 (rows, columns), "
                               f"got {image.dtype} {image.shape}")
    components = 1 if image.ndim == 2 else 3
    bottom_up = np.ascontiguousarray(image[::-1]).reshape(-1, components)
    vtk_image = vtk.vtkImageData()
    vtk_image.SetDimensions(image.shape[1], image.shape[0], 1)
    vtk_image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(bottom_up, deep=False))
    writer = vtk.vtkPNGWriter()
    writer.SetInputData(vtk_image)
    writer.WriteToMemoryOn()
    writer.Write()
    return bytes(numpy_support.vtk_to_numpy(writer.GetResult()))


def window_of(array, percentiles=DEFAULT_WINDOW_PERCENTILES) -> tuple[float, float]:
    """Default display window ``(low, high)``: percentiles of a regular subsample of ``array``.

    Parameters
    ----------
    array : array_like
        Any shape, e.g. ``(K, J, I)`` indexed ``[k, j, i]``.
    percentiles : (2,) sequence of float
        Percentiles mapped to black and white (:data:`DEFAULT_WINDOW_PERCENTILES`).
    """
    flat = np.asarray(array).reshape(-1)
    step = max(1, flat.size // WINDOW_SAMPLE_SIZE)
    sample = flat[::step].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(sample, percentiles)
    return float(low), float(high if high > low else low + 1.0)


def windowed(array, window: tuple[float, float]) -> np.ndarray:
    """Map ``window = (low, high)`` linearly to 0..255 (uint8, clipped); same shape as ``array``."""
    low, high = window
    scaled = (np.asarray(array, dtype=np.float32) - low) * (255.0 / (high - low))
    return np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)


def label_colored(labels) -> np.ndarray:
    """RGB picture ``(..., 3)`` of integer labels coloured by :data:`LABEL_COLORS`."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu" and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise AlignSeriesError("label colouring needs whole-number labels")
    return LABEL_COLORS[np.mod(labels.astype(np.int64), len(LABEL_COLORS))]


def write_fusion_png(reference_array, resampled_array, geometry: VolumeGeometry, path, force: bool = False, *,
                     style: str = "overlay") -> Path:
    """Write one PNG showing a reference and a resampled volume fused on three central planes.

    Left to right: the central k slice (i across, j down), the central j plane (i across, k up)
    and the central i plane (j across, k up) of the reference grid; for an axial DICOM-ordered
    grid these are axial, coronal and sagittal views. Each plane is shown with square pixels
    (using ``geometry.spacing``) and at most :data:`PANEL_MAX_SIZE` pixels a side. Each volume is
    windowed on its own percentiles (:data:`DEFAULT_WINDOW_PERCENTILES`).

    Parameters
    ----------
    reference_array, resampled_array : (K, J, I) array_like
        Both on ``geometry``'s grid, indexed ``[k, j, i]``.
    geometry : VolumeGeometry
        The reference grid (spacing in mm sets the aspect ratio).
    path : str or Path
        Output ``.png`` file, written atomically.
    force : bool
        Overwrite an existing file.
    style : {"overlay", "checkerboard"}
        ``overlay``: reference in green, resampled in magenta (grey where they agree).
        ``checkerboard``: alternating squares of :data:`CHECKER_SIZE` pixels, reference first.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    AlignSeriesError
        If the arrays do not match the geometry, the style is unknown or the path is unusable.
    OutputExistsError
        If ``path`` exists and ``force`` is False.
    """
    reference_array, resampled_array = (_checked_volume(a, geometry, name) for a, name in
                                        ((reference_array, "reference_array"), (resampled_array, "resampled_array")))
    if style not in FUSION_STYLES:
        raise AlignSeriesError(f"style must be one of {', '.join(FUSION_STYLES)}; got {style!r}")
    windows = window_of(reference_array), window_of(resampled_array)
    panels = []
    for plane_of, row_spacing, column_spacing in _central_planes(geometry):
        pair = [windowed(_square_pixels(plane_of(volume), row_spacing, column_spacing), window)
                for volume, window in zip((reference_array, resampled_array), windows, strict=True)]
        panels.append(_fused(pair[0], pair[1], style))
    picture = _side_by_side(panels)
    with atomic_output(path, force=force) as temporary:
        temporary.write_bytes(png_bytes(picture))
    logger.info("wrote fused preview %s (%d x %d pixels)", path, picture.shape[1], picture.shape[0])
    return Path(path)


def _checked_volume(array, geometry: VolumeGeometry, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != geometry.shape:
        raise AlignSeriesError(f"{name} has shape {array.shape}, expected {geometry.shape} ([k, j, i] of the geometry)")
    return array


def _central_planes(geometry: VolumeGeometry):
    """(plane extractor, row spacing, column spacing) for the central k, j and i planes; rows top first."""
    centre_i, centre_j, centre_k = (n // 2 for n in geometry.dimensions)
    spacing_i, spacing_j, spacing_k = geometry.spacing
    return (
        (lambda volume: volume[centre_k], spacing_j, spacing_i),
        (lambda volume: volume[::-1, centre_j, :], spacing_k, spacing_i),
        (lambda volume: volume[::-1, :, centre_i], spacing_k, spacing_j),
    )


def _square_pixels(plane: np.ndarray, row_spacing: float, column_spacing: float) -> np.ndarray:
    """Nearest-neighbour rescale of a plane so that a pixel is square, at most PANEL_MAX_SIZE a side."""
    height, width = plane.shape[0] * row_spacing, plane.shape[1] * column_spacing
    pixel = max(min(row_spacing, column_spacing), max(height, width) / PANEL_MAX_SIZE)
    rows = ((np.arange(max(1, round(height / pixel))) + 0.5) * pixel / row_spacing).astype(int)
    columns = ((np.arange(max(1, round(width / pixel))) + 0.5) * pixel / column_spacing).astype(int)
    return plane[np.ix_(np.minimum(rows, plane.shape[0] - 1), np.minimum(columns, plane.shape[1] - 1))]


def _fused(reference: np.ndarray, resampled: np.ndarray, style: str) -> np.ndarray:
    if style == "overlay":
        return np.stack([resampled, reference, resampled], axis=-1)
    rows, columns = np.indices(reference.shape)
    first = ((rows // CHECKER_SIZE + columns // CHECKER_SIZE) % 2) == 0
    return np.repeat(np.where(first, reference, resampled)[..., None], 3, axis=-1)


def _side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    height = max(panel.shape[0] for panel in panels)
    width = sum(panel.shape[1] for panel in panels) + _PANEL_GAP * (len(panels) - 1)
    picture = np.zeros((height, width, 3), dtype=np.uint8)
    left = 0
    for panel in panels:
        picture[: panel.shape[0], left: left + panel.shape[1]] = panel
        left += panel.shape[1] + _PANEL_GAP
    return picture
