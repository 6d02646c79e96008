"""Pictures to check a result by eye: PNG encoding, windowing, label colours and a fused overview.

Pictures are ``(rows, columns)`` uint8 greyscale or ``(rows, columns, 3)`` uint8 RGB arrays whose
row 0 is the *top* line of the picture. They are encoded with ``vtkPNGWriter`` (no PIL in the
core); VTK counts rows from the bottom, which :func:`png_bytes` accounts for.

:func:`write_fusion_png` shows a reference volume and a volume resampled onto its grid on axial,
coronal and sagittal panes through the grid's centre (or a given point), as a colour overlay or a
checkerboard, or a label map as coloured outlines; panes are titled, lettered on their edges and
drawn at their physical aspect ratio, with a legend naming the two volumes. Text is drawn with
VTK's FreeType renderer (no PIL in the core).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vtkmodules.util import numpy_support

from . import vtk_classes as vtk
from .errors import AlignSeriesError
from .files import atomic_output
from .geometry import VolumeGeometry
from .resample import resample_to_geometry

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
    sample = flat[::step]
    if sample.dtype.kind not in "iu":  # integers are finite, and their percentiles are computed in float64 anyway
        sample = sample.astype(np.float64)
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


#: The three panes of :func:`write_fusion_png`: name, RAS direction across (left to right), RAS direction down
#: (top to bottom), and the letters on the left, right, top and bottom edges (radiological convention:
#: the patient's right on the viewer's left).
PANES = (
    ("axial", (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), ("R", "L", "A", "P")),
    ("coronal", (-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), ("R", "L", "S", "I")),
    ("sagittal", (0.0, -1.0, 0.0), (0.0, 0.0, -1.0), ("A", "P", "S", "I")),
)

#: Colours (RGB) of the reference and of the resampled volume in the overlay.
REFERENCE_COLOR, RESAMPLED_COLOR = (0, 255, 0), (255, 0, 255)

_MARGIN = 18  # pixels around each pane, for its title and edge letters
_FONT_SIZE = 12


@dataclass(frozen=True)
class Pane:
    """Where one pane sits in the fused picture: ``name``, ``box`` (top, left, height, width) in pixels,
    ``letters`` on its (left, right, top, bottom) edges, and the RAS point its centre pixel shows."""

    name: str
    box: tuple[int, int, int, int]
    letters: tuple[str, str, str, str]
    center_ras: tuple[float, float, float]


def write_fusion_png(reference_array, resampled_array, geometry: VolumeGeometry, path, force: bool = False, *,
                     style: str = "overlay", names: tuple[str, str] = ("reference", "resampled"),
                     at_ras=None, labelmap: bool = False, label_names: Callable[[int], str] | None = None) -> Path:
    """Write one PNG showing a reference and a resampled volume fused on axial, coronal and sagittal panes.

    Each pane cuts through ``at_ras`` (the grid's centre by default) along the patient's axes, is
    drawn at its physical aspect ratio (square pixels of one size for all panes, at most
    :data:`PANEL_MAX_SIZE` a side), titled, and lettered on its edges (:data:`PANES`: the patient's
    right on the viewer's left). A legend names the two volumes and their colours. Scalars are windowed
    on their own percentiles (:data:`DEFAULT_WINDOW_PERCENTILES`); a label map (``labelmap``) is drawn as
    coloured outlines (:data:`LABEL_COLORS`) over the reference in grey.

    Parameters
    ----------
    reference_array, resampled_array : (K, J, I) array_like
        Both on ``geometry``'s grid, indexed ``[k, j, i]``.
    geometry : VolumeGeometry
        The grid, in RAS.
    path : str or Path
        Output ``.png`` file, written atomically.
    force : bool
        Overwrite an existing file.
    style : {"overlay", "checkerboard"}
        ``overlay``: reference in green, resampled in magenta (grey where they agree).
        ``checkerboard``: alternating squares of :data:`CHECKER_SIZE` pixels, reference first.
    names : (str, str)
        The reference's and the resampled volume's names, for the legend.
    at_ras : (3,) array_like, optional
        RAS point (mm) the three panes cut through.
    labelmap : bool
        ``resampled_array`` is a label map: outlines instead of the magenta overlay.
    label_names : callable, optional
        ``label_names(value) -> name`` of a label map's labels: a second legend line names the labels the
        panes show, each in its outline colour (at most :data:`LEGEND_MAX_LABELS`).

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
    picture, _ = fusion_picture(reference_array, resampled_array, geometry, style=style, names=names, at_ras=at_ras,
                                labelmap=labelmap, label_names=label_names)
    with atomic_output(path, force=force) as temporary:
        temporary.write_bytes(png_bytes(picture))
    logger.info("wrote fused preview %s (%d x %d pixels)", path, picture.shape[1], picture.shape[0])
    return Path(path)


def fusion_picture(reference_array, resampled_array, geometry: VolumeGeometry, *, style: str = "overlay",
                   names: tuple[str, str] = ("reference", "resampled"), at_ras=None,
                   labelmap: bool = False, label_names: Callable[[int], str] | None = None
                   ) -> tuple[np.ndarray, list[Pane]]:
    """The picture of :func:`write_fusion_png` ``(rows, columns, 3)`` uint8, and where its panes are."""
    reference_array, resampled_array = (_checked_volume(a, geometry, name) for a, name in
                                        ((reference_array, "reference_array"), (resampled_array, "resampled_array")))
    if style not in FUSION_STYLES:
        raise AlignSeriesError(f"style must be one of {', '.join(FUSION_STYLES)}; got {style!r}")
    at_ras = geometry.center_ras if at_ras is None else np.asarray(at_ras, dtype=float).reshape(3)
    windows = window_of(reference_array), (None if labelmap else window_of(resampled_array))
    pixel = _pane_pixel_size(geometry)
    images, panes, left, shown = [], [], 0, set()
    for name, across, down, letters in PANES:
        plane = _pane_geometry(geometry, at_ras, np.array(across), np.array(down), pixel)
        reference_plane, resampled_plane = (_sampled(volume, geometry, plane, nearest) for volume, nearest in
                                            ((reference_array, False), (resampled_array, labelmap)))
        image = _fused_pane(reference_plane, resampled_plane, windows, style, labelmap)
        shown |= {int(value) for value in np.unique(resampled_plane) if value} if labelmap else set()
        images.append(image)
        panes.append(Pane(name, (_MARGIN, left + _MARGIN, *image.shape[:2]), letters, tuple(at_ras.tolist())))
        left += image.shape[1] + 2 * _MARGIN
    picture = _compose(images, panes, names, labelmap)
    if label_names is not None and shown:
        picture = _with_label_legend(picture, sorted(shown), label_names)
    return picture, panes


def _with_label_legend(picture: np.ndarray, values: list[int], label_names: Callable[[int], str]) -> np.ndarray:
    """The picture with a line below it naming ``values`` in their outline colours."""
    line = np.zeros((_FONT_SIZE + 10, picture.shape[1], 3), dtype=np.uint8)
    column = 4
    for value in values[:LEGEND_MAX_LABELS]:
        color = tuple(int(c) for c in label_colored(np.array([value]))[0])
        column = _draw_text(line, f"{value} {label_names(value)}", (4, column), color) + 12
    if len(values) > LEGEND_MAX_LABELS:
        _draw_text(line, f"+{len(values) - LEGEND_MAX_LABELS} more", (4, column), (200, 200, 200))
    return np.concatenate([picture, line])


#: Most labels the preview's legend names (the first, by value).
LEGEND_MAX_LABELS = 12


def _pane_pixel_size(geometry: VolumeGeometry) -> float:
    extent = np.ptp(geometry.bounds_ras, axis=1)
    return float(max(geometry.spacing.min(), extent.max() / PANEL_MAX_SIZE))


def _pane_geometry(geometry: VolumeGeometry, at_ras: np.ndarray, across: np.ndarray, down: np.ndarray,
                   pixel: float) -> VolumeGeometry:
    """A one-slice grid through ``at_ras`` spanning the grid's bounds, columns along ``across``, rows ``down``."""
    bounds = geometry.bounds_ras  # (3, 2): low, high per RAS axis
    start = np.where(np.concatenate([across, down]).reshape(2, 3).sum(axis=0) < 0, bounds[:, 1], bounds[:, 0])
    columns = max(1, round(abs(across @ np.ptp(bounds, axis=1)) / pixel))
    rows = max(1, round(abs(down @ np.ptp(bounds, axis=1)) / pixel))
    normal = np.cross(across, down)
    origin = at_ras * np.abs(normal) + start * (1 - np.abs(normal)) + (across + down) * pixel / 2
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, 0], ijk_to_ras[:3, 1], ijk_to_ras[:3, 2] = across * pixel, down * pixel, normal * pixel
    ijk_to_ras[:3, 3] = origin
    return VolumeGeometry((columns, rows, 1), ijk_to_ras)


def _sampled(volume: np.ndarray, geometry: VolumeGeometry, plane: VolumeGeometry, nearest: bool) -> np.ndarray:
    background = 0 if nearest else volume.min().item()
    return resample_to_geometry(volume, geometry, plane, interpolation="nearest" if nearest else "linear",
                                background=background).array[0]


def _fused_pane(reference: np.ndarray, resampled: np.ndarray, windows, style: str, labelmap: bool) -> np.ndarray:
    grey = windowed(reference, windows[0])
    if labelmap:
        image = np.repeat(grey[..., None], 3, axis=-1)
        edge = _outline(resampled)
        image[edge] = label_colored(resampled[edge])
        return image
    return _fused(grey, windowed(resampled, windows[1]), style)


def _outline(labels: np.ndarray) -> np.ndarray:
    """Pixels of a non-zero label whose 4-neighbour has another label."""
    padded = np.pad(labels, 1, mode="edge")
    differs = np.zeros(labels.shape, dtype=bool)
    for dr, dc in ((0, 1), (2, 1), (1, 0), (1, 2)):
        differs |= padded[dr:dr + labels.shape[0], dc:dc + labels.shape[1]] != labels
    return differs & (labels != 0)


def _compose(images: list[np.ndarray], panes: list[Pane], names: tuple[str, str], labelmap: bool) -> np.ndarray:
    legend_height = _FONT_SIZE + 10
    height = max(image.shape[0] for image in images) + 2 * _MARGIN + legend_height
    width = sum(image.shape[1] + 2 * _MARGIN for image in images)
    picture = np.zeros((height, max(width, 320), 3), dtype=np.uint8)
    white = (255, 255, 255)
    for image, pane in zip(images, panes, strict=True):
        top, left, rows, columns = pane.box
        picture[top:top + rows, left:left + columns] = image
        _draw_text(picture, pane.name, (2, left), white)
        west, east, north, south = pane.letters
        _draw_text(picture, west, (top + rows // 2 - 6, left - 12), white)
        _draw_text(picture, east, (top + rows // 2 - 6, left + columns + 3), white)
        _draw_text(picture, north, (top - 14, left + columns // 2 - 3), white)
        _draw_text(picture, south, (top + rows + 2, left + columns // 2 - 3), white)
    row = height - legend_height + 4
    second = f"outlines: labels of {names[1]}" if labelmap else f"magenta: {names[1]}"
    first = f"grey: {names[0]}" if labelmap else f"green: {names[0]}"
    column = _draw_text(picture, first, (row, 4), (200, 200, 200) if labelmap else REFERENCE_COLOR)
    _draw_text(picture, second, (row, column + 16), (255, 200, 0) if labelmap else RESAMPLED_COLOR)
    return picture


def _draw_text(picture: np.ndarray, text: str, top_left: tuple[int, int], color) -> int:
    """Draw ``text`` (VTK's FreeType renderer) with its top-left at (row, column); returns the column after it."""
    alpha = _text_alpha(text)
    row, column = max(0, top_left[0]), max(0, top_left[1])
    rows = min(alpha.shape[0], picture.shape[0] - row)
    columns = min(alpha.shape[1], picture.shape[1] - column)
    if rows <= 0 or columns <= 0:
        return column
    weight = alpha[:rows, :columns, None] / 255.0
    region = picture[row:row + rows, column:column + columns]
    region[:] = np.rint(region * (1 - weight) + np.array(color) * weight).astype(np.uint8)
    return column + columns


def _text_alpha(text: str) -> np.ndarray:
    """(rows, columns) uint8 coverage of ``text``, row 0 at the top (empty when VTK cannot render text)."""
    properties = vtk.vtkTextProperty()
    properties.SetFontSize(_FONT_SIZE)
    properties.SetFontFamilyToArial()
    properties.SetColor(1.0, 1.0, 1.0)
    image = vtk.vtkImageData()
    if not vtk.vtkTextRenderer().RenderString(properties, text, image, [0, 0], 72):
        return np.zeros((0, 0), dtype=np.uint8)
    columns, rows, _ = image.GetDimensions()
    rgba = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1)
    return np.ascontiguousarray(rgba[::-1, :, -1])


def _checked_volume(array, geometry: VolumeGeometry, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.shape != geometry.shape:
        raise AlignSeriesError(f"{name} has shape {array.shape}, expected {geometry.shape} ([k, j, i] of the geometry)")
    return np.ascontiguousarray(array)


def _fused(reference: np.ndarray, resampled: np.ndarray, style: str) -> np.ndarray:
    if style == "overlay":
        return np.stack([resampled, reference, resampled], axis=-1)
    rows, columns = np.indices(reference.shape)
    first = ((rows // CHECKER_SIZE + columns // CHECKER_SIZE) % 2) == 0
    return np.repeat(np.where(first, reference, resampled)[..., None], 3, axis=-1)
