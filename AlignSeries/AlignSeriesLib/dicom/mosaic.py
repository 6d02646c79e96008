"""Siemens MOSAIC images: one file holding a whole 3D volume as a light-box of tiles.

Siemens MR (fMRI, DWI, ASL on VB/VE and many XA exports) stores each volume as one 2D image whose
Rows x Columns is a square grid of ``ceil(sqrt(n))`` x ``ceil(sqrt(n))`` tiles; the first ``n``
tiles, in row-major order, are the acquired slices. The number ``n`` and the slice direction live
only in the private CSA image header (tags (0029,1010) or (0029,1110) of the "SIEMENS CSA HEADER"
block), read here with nibabel's :mod:`nibabel.nicom.csareader` (nibabel is imported only when a
MOSAIC is met; :func:`require_nibabel` says what to install when it is missing).

Geometry (DICOM patient space, LPS, mm):

* ImagePositionPatient of a MOSAIC file is the first pixel of a *virtual* slice of the whole mosaic
  size centred on the true slice; tile 0's first pixel is moved to the tile corner by half the
  size difference along the column and row directions (:func:`tile_origin_lps`).
* Tile ``t`` lies ``t * spacing`` mm from tile 0 along the CSA ``SliceNormalVector``, which may
  point against ``row x column`` (descending or head-to-foot acquisitions); ``spacing`` is
  SpacingBetweenSlices, else SliceThickness.

Each tile becomes its own :class:`AlignSeriesLib.dicom.headers.SliceHeader` (with a
:class:`MosaicTile`), so ordering along the normal, checks and grouping of several mosaic files
(time points, diffusion volumes) are those of ordinary slices.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset

from ..errors import DicomError, MissingDependencyError

if TYPE_CHECKING:
    from .headers import SliceHeader

#: Largest distance between the unit CSA SliceNormalVector and +-(row x column) accepted: beyond it
#: the private header and ImageOrientationPatient disagree about the slice plane (same limit as the
#: orthonormality of ImageOrientationPatient, ``headers.ORIENTATION_REJECT_ATOL``).
SLICE_NORMAL_ATOL = 0.02

#: What a user must install to read MOSAIC files (the version pinned in requirements.txt).
NIBABEL_REQUIREMENT = "nibabel>=5"

#: Private creator of the Siemens CSA headers.
CSA_CREATOR = "SIEMENS CSA HEADER"


@dataclass(frozen=True)
class MosaicTile:
    """Where one slice sits inside a MOSAIC image.

    Attributes
    ----------
    index : int
        0-based tile number in row-major order = acquisition slice number.
    count : int
        NumberOfImagesInMosaic (acquired slices).
    tile_rows, tile_columns : int
        Size of one tile (one slice).
    mosaic_rows, mosaic_columns : int
        Rows and Columns of the stored image.
    """

    index: int
    count: int
    tile_rows: int
    tile_columns: int
    mosaic_rows: int
    mosaic_columns: int

    @property
    def tiles_per_side(self) -> int:
        """Tiles along each side of the mosaic: ``ceil(sqrt(count))``."""
        return tiles_per_side(self.count)

    @property
    def corner_ji(self) -> tuple[int, int]:
        """(row, column) of the tile's first pixel in the mosaic image."""
        block_j, block_i = divmod(self.index, self.tiles_per_side)
        return block_j * self.tile_rows, block_i * self.tile_columns

    def cut(self, mosaic_ji: np.ndarray) -> np.ndarray:
        """This tile's pixels, ``[j, i]``, from the whole mosaic image ``[j, i]`` (a view)."""
        row, column = self.corner_ji
        return mosaic_ji[row:row + self.tile_rows, column:column + self.tile_columns]

    def to_info_dict(self) -> dict:
        """The ``mosaic`` field of ``info --json``."""
        return {"tiles": self.count, "tile_rows": self.tile_rows, "tile_columns": self.tile_columns,
                "mosaic_rows": self.mosaic_rows, "mosaic_columns": self.mosaic_columns}


def tiles_per_side(count: int) -> int:
    """Number of tiles along each side of a mosaic of ``count`` slices.

    Examples
    --------
    >>> tiles_per_side(36), tiles_per_side(37), tiles_per_side(1)
    (6, 7, 1)
    """
    side = math.isqrt(count)
    return side if side * side == count else side + 1


def tile_size(mosaic_rows: int, mosaic_columns: int, count: int, *, where: str = "MOSAIC") -> tuple[int, int]:
    """(rows, columns) of one tile: the mosaic size divided by ``ceil(sqrt(count))``.

    Raises
    ------
    DicomError
        If ``count`` is not positive or the mosaic does not divide into whole tiles.
    """
    if count < 1:
        raise DicomError(f"{where}: NumberOfImagesInMosaic in the CSA image header is {count}, expected at least 1")
    side = tiles_per_side(count)
    if mosaic_rows % side or mosaic_columns % side:
        raise DicomError(
            f"{where}: a MOSAIC of {count} images needs {side} x {side} tiles, but Rows x Columns "
            f"{mosaic_rows} x {mosaic_columns} does not divide by {side}: unknown packing, not read")
    return mosaic_rows // side, mosaic_columns // side


def tile_origin_lps(position_lps, orientation, pixel_spacing, mosaic_shape_ji, tile_shape_ji) -> np.ndarray:
    """First pixel (LPS) of tile 0 from the mosaic's ImagePositionPatient.

    Parameters
    ----------
    position_lps : (3,) array_like, mm
        The MOSAIC file's ImagePositionPatient.
    orientation : (6,) array_like
        ImageOrientationPatient (row direction along i, then column direction along j).
    pixel_spacing : (2,) array_like, mm
        PixelSpacing (row spacing = j spacing, column spacing = i spacing).
    mosaic_shape_ji, tile_shape_ji : tuple of 2 int
        (Rows, Columns) of the mosaic and of one tile.

    Returns
    -------
    (3,) ndarray, mm, LPS
        ``position + column_dir * dy * (R - r) / 2 + row_dir * dx * (C - c) / 2``.
    """
    orientation = np.asarray(orientation, dtype=float)
    spacing_j, spacing_i = (float(s) for s in pixel_spacing)
    shift_j = (mosaic_shape_ji[0] - tile_shape_ji[0]) / 2
    shift_i = (mosaic_shape_ji[1] - tile_shape_ji[1]) / 2
    return (np.asarray(position_lps, dtype=float) + orientation[3:] * spacing_j * shift_j
            + orientation[:3] * spacing_i * shift_i)


def slice_direction(slice_normal, orientation, *, where: str = "MOSAIC", atol: float = SLICE_NORMAL_ATOL
                    ) -> np.ndarray:
    """Unit CSA SliceNormalVector, checked to be +-(row x column) of ImageOrientationPatient.

    Raises
    ------
    DicomError
        If the vector is missing, zero, or off the slice normal by more than ``atol``.
    """
    if slice_normal is None:
        raise DicomError(f"{where}: MOSAIC without SliceNormalVector in the CSA image header (0029,1010): "
                         "the order of its tiles is unknown, not read")
    vector = np.asarray(slice_normal, dtype=float)
    length = float(np.linalg.norm(vector))
    if vector.shape != (3,) or not np.isfinite(length) or length < 1e-6:
        raise DicomError(f"{where}: CSA SliceNormalVector {vector.tolist()} is not a direction, not read")
    direction = vector / length
    orientation = np.asarray(orientation, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    normal /= np.linalg.norm(normal)
    deviation = float(min(np.linalg.norm(direction - normal), np.linalg.norm(direction + normal)))
    if deviation > atol:
        raise DicomError(
            f"{where}: CSA SliceNormalVector {np.round(direction, 6).tolist()} is {deviation:.3g} from the slice "
            f"normal {np.round(normal, 6).tolist()} of ImageOrientationPatient (tolerance {atol}): not read")
    return direction


def tile_positions_lps(origin_lps, direction_lps, spacing: float, count: int) -> np.ndarray:
    """(count, 3) first-pixel positions of the tiles: ``origin + t * spacing * direction``, LPS mm."""
    steps = np.arange(count, dtype=float)[:, None] * float(spacing)
    return np.asarray(origin_lps, dtype=float) + steps * np.asarray(direction_lps, dtype=float)


# -- the CSA header ------------------------------------------------------------------------------


def _nibabel_csareader():
    """nibabel's CSA reader, imported on first need (see :func:`require_nibabel`)."""
    require_nibabel("read a Siemens MOSAIC")
    return _import_csareader()


def _import_csareader():
    """nibabel.nicom.csareader, without the "DICOM readers are highly experimental" warning that importing
    nibabel.nicom gives (about nibabel's own DICOM readers, which AlignSeries does not use)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The DICOM readers are highly experimental", category=UserWarning)
        return importlib.import_module("nibabel.nicom.csareader")


def nibabel_available() -> bool:
    """True when nibabel can be imported (it is needed only for MOSAIC files)."""
    try:
        _import_csareader()
    except ImportError:
        return False
    return True


def require_nibabel(what: str) -> None:
    """Raise :class:`MissingDependencyError` naming nibabel when it cannot be imported.

    This is the hook for environments that install packages on demand: the Slicer module calls
    ``slicer.packaging.pip_ensure`` with :data:`NIBABEL_REQUIREMENT` when it catches this error
    (or beforehand), then reads again.
    """
    if not nibabel_available():
        raise MissingDependencyError(
            f"nibabel is needed to {what} (its CSA header reader) but is not installed: "
            f"install it with `pip install '{NIBABEL_REQUIREMENT}'`", package=NIBABEL_REQUIREMENT)


def has_csa_image_header(dataset: Dataset) -> bool:
    """True when the dataset has a "SIEMENS CSA HEADER" private block (without reading its value)."""
    creators = [tag for tag in dataset.keys() if 0x00290010 <= tag <= 0x002900FF]  # private creators of (0029)
    return any(str(dataset[tag].value).strip() == CSA_CREATOR for tag in creators)


def read_csa_image_header(dataset: Dataset, *, where: str) -> dict:
    """The CSA image header as nibabel parses it (``{name: {"items": [...], ...}}``).

    Raises
    ------
    MissingDependencyError
        If nibabel is not installed.
    DicomError
        If the header is absent or cannot be parsed.
    """
    csareader = _nibabel_csareader()
    try:
        header = csareader.get_csa_header(dataset, "image")
    except (csareader.CSAError, ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError) as error:
        raise DicomError(f"{where}: the Siemens CSA image header (0029,xx10) cannot be read: "
                         f"{type(error).__name__}: {error}") from None
    if header is None:
        raise DicomError(f"{where}: no Siemens CSA image header (0029,1010) ('{CSA_CREATOR}' private block)")
    return header


def csa_mosaic_count(csa_header: dict) -> int | None:
    """NumberOfImagesInMosaic of a parsed CSA image header, None when absent or empty."""
    tag = csa_header.get("tags", {}).get("NumberOfImagesInMosaic") or {}
    items = tag.get("items") or []
    return int(items[0]) if items else None


def csa_slice_normal(csa_header: dict) -> np.ndarray | None:
    """SliceNormalVector of a parsed CSA image header, None when absent or incomplete."""
    tag = csa_header.get("tags", {}).get("SliceNormalVector") or {}
    items = tag.get("items") or []
    return np.array(items[:3], dtype=float) if len(items) >= 3 else None


# -- detection and unpacking ---------------------------------------------------------------------


def is_mosaic(dataset: Dataset) -> bool:
    """True when a file is a Siemens MOSAIC.

    ImageType containing ``MOSAIC`` is enough (nibabel is not imported). Without it, a file with a
    CSA image header whose NumberOfImagesInMosaic is above 1 is a MOSAIC too; that header is read
    only when nibabel is installed (never installed for this check alone).
    """
    if "MOSAIC" in (str(value).upper() for value in dataset.get("ImageType", ())):
        return True
    if not has_csa_image_header(dataset) or not nibabel_available():
        return False
    try:
        count = csa_mosaic_count(read_csa_image_header(dataset, where=""))
    except DicomError:
        return False
    return count is not None and count > 1


def tile_headers(header: SliceHeader, dataset: Dataset) -> list[SliceHeader]:
    """One header per acquired tile of a MOSAIC file, each at its true position.

    Parameters
    ----------
    header : SliceHeader
        The file's header as an ordinary image (mosaic Rows/Columns, uncorrected position).
    dataset : pydicom Dataset
        The file's header dataset (for the CSA image header and the slice spacing).

    Raises
    ------
    MissingDependencyError
        If nibabel is not installed.
    DicomError
        If the CSA header, its NumberOfImagesInMosaic or SliceNormalVector is missing or unreadable,
        the mosaic does not divide into tiles, the file has several frames, or no slice spacing is given.
    """
    where = header.where
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise DicomError(f"{where}: MOSAIC with NumberOfFrames {dataset.NumberOfFrames}: unknown packing, not read")
    csa_header = read_csa_image_header(dataset, where=where)
    count = csa_mosaic_count(csa_header)
    if count is None:
        raise DicomError(f"{where}: MOSAIC without NumberOfImagesInMosaic in the CSA image header (0029,1010): "
                         "the number of tiles is unknown, not read")
    tile_rows, tile_columns = tile_size(header.rows, header.columns, count, where=where)
    direction = slice_direction(csa_slice_normal(csa_header), header.orientation, where=where)
    spacing = _slice_spacing(header, where)
    origin = tile_origin_lps(header.position_lps, header.orientation, header.pixel_spacing,
                             (header.rows, header.columns), (tile_rows, tile_columns))
    positions = tile_positions_lps(origin, direction, spacing, count)
    return [dataclasses.replace(
        header, rows=tile_rows, columns=tile_columns, position_lps=positions[index], attributes=dict(header.attributes),
        tile=MosaicTile(index, count, tile_rows, tile_columns, header.rows, header.columns))
        for index in range(count)]


def _slice_spacing(header: SliceHeader, where: str) -> float:
    for key, name in (("spacing_between_slices", "SpacingBetweenSlices (0018,0088)"),
                      ("slice_thickness", "SliceThickness (0018,0050)")):
        value = header.attributes.get(key)
        if value is not None and np.isfinite(value) and value > 0:
            return float(value)
        if value is not None:
            raise DicomError(f"{where}: MOSAIC {name} is {value}, expected a positive distance in mm")
    raise DicomError(f"{where}: MOSAIC without SpacingBetweenSlices (0018,0088) or SliceThickness (0018,0050): "
                     "the distance between its tiles is unknown, not read")
