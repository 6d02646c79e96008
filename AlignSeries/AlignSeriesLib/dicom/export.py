"""Write a volume resampled onto a DICOM series' grid as a DICOM series or PNGs, slice for slice.

The volume must lie on the reference series' grid (see :mod:`.resample`), its slice ``k`` on the
reference's slice ``k``: the reference slices are given as the
:class:`~AlignSeriesLib.dicom.headers.SliceHeader` objects of the scanned reference series, in k
order (``DicomVolume.slices``, or a slab of them). Those headers are the writers' only source of a
slice's plane and identity (position, orientation, spacing, InstanceNumber, SOPInstanceUID, frame,
MOSAIC tile); the DICOM writer opens one reference file per export, for the patient and study identity.

DICOM series (:func:`write_dicom_series`)
-----------------------------------------
One single-frame instance per reference slice, with that slice's ImagePositionPatient,
ImageOrientationPatient, PixelSpacing and SliceThickness, the reference's FrameOfReferenceUID and
its patient and study identity, so that it lines up with the reference in any viewer. Each
instance is DERIVED/SECONDARY, names its reference slice in SourceImageSequence and
ReferencedImageSequence, and has a new SOPInstanceUID; the series gets a new SeriesInstanceUID.

* SOP class: CT Image Storage for a CT reference, MR Image Storage for an MR reference (enhanced
  references too), so that readers that place images by ImagePositionPatient (ITK/GDCM, Slicer)
  do so. For other modalities Secondary Capture Image Storage is used, with the plane attributes
  kept as standard extended attributes (some readers ignore a secondary capture's geometry: a
  warning is logged). Acquisition attributes of the reference are *not* copied: the pixels
  come from another series.
* Pixels (:func:`pixel_encoding`): integer data is stored as integers with RescaleSlope 1 — int16
  with intercept 0 when it fits, else uint16 with intercept 0 or, for a range wider than that but
  at most 65535 wide, with the range's minimum as intercept; float data is scaled linearly to
  uint16 (error at most half a slope). One encoding serves the whole export: a caller writing
  slabs passes the encoding of the whole volume (e.g. from the input's value range), so that
  every slab stores its values alike. Label maps (``labelmap=True``) are never rescaled: whole-number
  labels within a 16-bit range are stored exactly, otherwise :class:`DicomError` is raised.
* Identity: each instance's InstanceNumber is its reference slice's when that slice is the only image
  of its file, else (no InstanceNumber, a frame of a multi-frame file, a MOSAIC tile) k + 1, k counted
  along the normal over the whole reference (:func:`export_instance_number`). Its file is named, and its
  SOPInstanceUID derived, from the reference slice's (SOPInstanceUID, frame, tile)
  (:func:`dicom_slice_name`), so the slabs of one export can share a folder; they share one
  SeriesInstanceUID when the caller passes it (``series_instance_uid``; :func:`derived_series_uid`
  gives a deterministic one).

PNG slices (:func:`export_png_slices`)
--------------------------------------
One PNG per reference slice, named ``<InstanceNumber>_<SOPInstanceUID>.png`` (with
``_frame<N>`` for a frame of a multi-frame file, ``_tile<N>`` for a MOSAIC tile), one channel, row 0 =
the slice's first row (the top line as a DICOM viewer shows it). Label maps hold the label values
themselves: 8-bit when every label fits, 16-bit otherwise (so a mask reads back exactly). Scalars are
8-bit grey through a window (default: :data:`.preview.DEFAULT_WINDOW_PERCENTILES` percentiles of the volume), stated in
``index.csv``. ``index.csv`` (:data:`PNG_INDEX_NAME`) lists each picture with its reference slice's
SOPInstanceUID, InstanceNumber, k along the normal and ImagePositionPatient, in k order.

Both write into a temporary folder beside ``output_dir`` and rename it into place when complete,
so a failure leaves no partial output. An existing non-empty folder is refused unless ``force``;
even then only a folder holding nothing but exported files (``.dcm``, ``.png``, ``index.csv``) is
replaced. :func:`write_dicom_files` and :func:`write_png_files` write into a given (staging) folder,
for callers that move several outputs into place together.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import ArrayLike
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from .. import __version__
from ..errors import AlignSeriesError, DicomError, OutputExistsError
from ..files import safe_name, staged_outputs
from ..preview import png_bytes, window_of, windowed
from .headers import SliceHeader
from .identity import used_uids

logger = logging.getLogger(__name__)

#: SOP class written for each reference Modality; others get Secondary Capture.
SOP_CLASS_BY_MODALITY = {"CT": CTImageStorage, "MR": MRImageStorage}

#: Attributes copied from the reference: patient, study, frame of reference, character set.
IDENTITY_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "PatientSize", "PatientWeight", "PatientIdentityRemoved", "StudyInstanceUID", "StudyDate",
    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition", "BodyPartExamined", "Modality",
)

#: Suffixes of the files the exporters write; with ``force`` only a folder of such files is replaced.
EXPORT_SUFFIXES = (".dcm", ".png", ".csv")

#: Name of the table of PNG slices written beside them.
PNG_INDEX_NAME = "index.csv"

#: Columns of :data:`PNG_INDEX_NAME`.
PNG_INDEX_COLUMNS = ("png", "sop_instance_uid", "instance_number", "k", "image_position_patient",
                     "window_center", "window_width")

#: Offset added to the reference's SeriesNumber for the exported series.
SERIES_NUMBER_OFFSET = 1000

_INT16 = np.iinfo(np.int16)
_UINT16 = np.iinfo(np.uint16)
_UINT8 = np.iinfo(np.uint8)


@dataclass(frozen=True)
class PixelEncoding:
    """How real values are stored: ``value = stored * slope + intercept``, stored as ``dtype``.

    ``window`` = (low, high) is the display window written as WindowCenter/WindowWidth.
    """

    dtype: np.dtype
    slope: float
    intercept: float
    window: tuple[float, float] = (0.0, 1.0)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Stored pixels of ``values`` (any shape), rounded and clipped to ``dtype``."""
        if self.slope == 1 and self.intercept == 0 and values.dtype.kind in "biu":
            return values.astype(self.dtype)
        info = np.iinfo(self.dtype)
        return np.clip(np.rint((values - self.intercept) / self.slope), info.min, info.max).astype(self.dtype)


@dataclass(frozen=True)
class _SeriesIdentity:
    series_instance_uid: str
    sop_class_uid: str
    series_number: int | None
    series_description: str
    derivation_description: str
    timestamp: datetime.datetime


# -- public API -----------------------------------------------------------------------------------


def write_dicom_series(
    array_kji: ArrayLike,
    reference_slices: Sequence[SliceHeader],
    output_dir: str | os.PathLike,
    *,
    series_description: str,
    labelmap: bool = False,
    force: bool = False,
    derivation_description: str | None = None,
    encoding: PixelEncoding | None = None,
    series_instance_uid: str | None = None,
    first_k: int = 0,
) -> list[Path]:
    """Write a volume on a DICOM series' grid as a DICOM series aligned slice for slice with it.

    Parameters
    ----------
    array_kji : (K, J, I) array_like
        The volume on the reference slices, indexed ``[k, j, i]``: slice ``k`` lies on reference
        slice ``k``, ``J`` = Rows and ``I`` = Columns of the reference.
    reference_slices : sequence of K SliceHeader
        The reference slices, in k order (a multi-frame file's frames share the file).
    output_dir : str or Path
        New folder to create (its parent must exist).
    series_description : str
        SeriesDescription of the new series.
    labelmap : bool
        The volume is a label map: stored without rescaling.
    force : bool
        Replace an existing non-empty folder that holds only exported files.
    derivation_description : str, optional
        DerivationDescription; a sentence naming the reference series by default.
    encoding : PixelEncoding, optional
        How values are stored; by default :func:`pixel_encoding` of this array. Pass the whole
        volume's encoding when writing one slab of it.
    series_instance_uid : str, optional
        SeriesInstanceUID of the new series (pass one to let slabs share it); a new UID by default.
    first_k : int
        k (along the reference's normal) of the first slice: a slab's first slice
        (:func:`export_instance_number`).

    Returns
    -------
    list of Path
        The written files, in k order, named by :func:`dicom_slice_name`.

    Raises
    ------
    DicomError
        If the reference file read for the identity is unreadable or has no FrameOfReferenceUID, the slices do
        not match the array's shape, or the labels cannot be stored.
    OutputExistsError, AlignSeriesError
        If ``output_dir`` exists and is not empty (without ``force``), or cannot be written.
    """
    array = _checked_array(array_kji, reference_slices)
    encoding = encoding or pixel_encoding(array, labelmap=labelmap)
    with _staged_folder(output_dir, force=force) as folder:
        names = [path.name for path in write_dicom_files(
            array, reference_slices, folder, series_description=series_description, labelmap=labelmap,
            derivation_description=derivation_description, encoding=encoding,
            series_instance_uid=series_instance_uid, first_k=first_k)]
    return [Path(output_dir) / name for name in names]


def write_dicom_files(
    array_kji: ArrayLike,
    reference_slices: Sequence[SliceHeader],
    folder: str | os.PathLike,
    *,
    series_description: str,
    labelmap: bool = False,
    derivation_description: str | None = None,
    encoding: PixelEncoding | None = None,
    series_instance_uid: str | None = None,
    series_timestamp: datetime.datetime | None = None,
    first_k: int = 0,
) -> list[Path]:
    """Write the instances of :func:`write_dicom_series` into an existing folder (no atomic rename).

    For callers that stage several outputs and move them into place together. Parameters as
    :func:`write_dicom_series`; ``series_timestamp`` sets SeriesDate/SeriesTime (now by default),
    so that slabs added to one series can keep its first slab's.
    """
    array = _checked_array(array_kji, reference_slices)
    first = _read_header(reference_slices[0].path)  # patient, study and frame of reference: one file per export
    for keyword, uid in used_uids(reference_slices[0]).items():  # anonymized files: the UIDs the scan used
        setattr(first, keyword, uid)
    encoding = encoding or pixel_encoding(array, labelmap=labelmap)
    identity = _SeriesIdentity(
        series_instance_uid=series_instance_uid or generate_uid(),
        sop_class_uid=_sop_class(first.get("Modality", "OT")),
        series_number=int(first.SeriesNumber) + SERIES_NUMBER_OFFSET if "SeriesNumber" in first else None,
        series_description=series_description,
        derivation_description=derivation_description or (
            f"Resampled onto the grid of series {first.get('SeriesInstanceUID', '?')} by AlignSeries {__version__}"),
        timestamp=series_timestamp or datetime.datetime.now(),
    )
    window = encoding.window
    folder = Path(folder)
    paths = []
    for k, header in enumerate(reference_slices):
        dataset = _slice_dataset(first, header, array[k], encoding, identity,
                                 export_instance_number(header, first_k + k), window)
        path = folder / dicom_slice_name(header)
        if path.exists():
            raise DicomError(f"two reference slices are both named {path.name}: duplicate SOPInstanceUID")
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    logger.info("wrote %d DICOM instances of series %s to %s", len(paths), identity.series_instance_uid, folder)
    return paths


def dicom_slice_name(reference: SliceHeader) -> str:
    """``<reference SOPInstanceUID>[_frame<N:04d>][_tile<N:04d>].dcm``: unique per reference slice, the same in
    every slab."""
    return f"{safe_name(reference.sop_instance_uid)}{_slice_suffix(reference)}.dcm"


def _slice_suffix(reference: SliceHeader) -> str:
    """What tells a slice apart from the other images of its file: its frame (1-based) or MOSAIC tile (1-based)."""
    frame = "" if reference.frame is None else f"_frame{reference.frame:04d}"
    tile = "" if reference.tile is None else f"_tile{reference.tile.index + 1:04d}"
    return frame + tile


def export_instance_number(reference: SliceHeader, k: int) -> int:
    """InstanceNumber of the instance exported on reference slice ``k`` (0-based, along the whole reference's normal).

    The reference slice's own InstanceNumber when it is the only image of its file; else (none given, a
    frame of a multi-frame file, a MOSAIC tile, whose images share one) ``k + 1``.
    """
    alone = reference.frame is None and reference.tile is None
    return reference.instance_number if alone and reference.instance_number is not None else k + 1


def derived_series_uid(reference_series_uid: str, *sources: str) -> str:
    """A SeriesInstanceUID derived deterministically from the reference series and the exported input.

    The default of an export's series: every slab of one input on one reference gets the same UID
    (so slabs written separately make one series), a different input or reference another.
    """
    return generate_uid(entropy_srcs=["AlignSeries export", reference_series_uid, *sources])


def export_png_slices(
    array_kji: ArrayLike,
    reference_slices: Sequence[SliceHeader],
    output_dir: str | os.PathLike,
    *,
    labelmap: bool = False,
    window: tuple[float, float] | None = None,
    force: bool = False,
    first_k: int = 0,
) -> list[Path]:
    """Write one PNG per reference slice, named by the slice's InstanceNumber and SOPInstanceUID, and an index.

    Parameters
    ----------
    array_kji : (K, J, I) array_like
        The volume on the reference slices, indexed ``[k, j, i]`` (see :func:`write_dicom_series`).
    reference_slices : sequence of K SliceHeader
        As for :func:`write_dicom_series`; the PNG names come from them (no file is read).
    output_dir : str or Path
        New folder to create.
    labelmap : bool
        Store the label values themselves (8- or 16-bit, :func:`label_png_dtype`) instead of
        windowed grey.
    window : (low, high), optional
        Values shown black and white (scalars); default the volume's percentiles
        (:data:`.preview.DEFAULT_WINDOW_PERCENTILES`).
    force : bool
        Replace an existing non-empty folder that holds only exported files.
    first_k : int
        k (along the reference's normal) of the first slice, for the index (a slab's first slice).

    Returns
    -------
    list of Path
        The written files, in k order: ``<InstanceNumber:04d>_<SOPInstanceUID>[_frame<N:04d>].png``,
        then :data:`PNG_INDEX_NAME`.

    Raises
    ------
    DicomError, OutputExistsError, AlignSeriesError
        As for :func:`write_dicom_series`; labels that are negative, fractional or above 65535.
    """
    array = _checked_array(array_kji, reference_slices)
    with _staged_folder(output_dir, force=force) as folder:
        names = [path.name for path in write_png_files(array, reference_slices, folder, labelmap=labelmap,
                                                       window=window, first_k=first_k)]
    return [Path(output_dir) / name for name in names]


def write_png_files(
    array_kji: ArrayLike,
    reference_slices: Sequence[SliceHeader],
    folder: str | os.PathLike,
    *,
    labelmap: bool = False,
    window: tuple[float, float] | None = None,
    first_k: int = 0,
    label_names: Callable[[int], str] | None = None,
) -> list[Path]:
    """Write the pictures and index of :func:`export_png_slices` into an existing folder (no atomic rename).

    ``label_names(value)`` names a label map's labels: ``index.csv`` then lists each slice's labels
    (``value=name;…``) in a ``labels`` column.
    """
    array = _checked_array(array_kji, reference_slices)
    label_dtype = label_png_dtype(array) if labelmap else None
    shown_window = window or window_of(array)
    folder = Path(folder)
    paths = []
    for k, reference in enumerate(reference_slices):
        picture = array[k].astype(label_dtype) if labelmap else windowed(array[k], shown_window)
        path = folder / png_slice_name(reference)
        if path.exists():
            raise DicomError(f"two reference slices are both named {path.name}: duplicate SOPInstanceUID")
        path.write_bytes(png_bytes(picture))
        paths.append(path)
    index = folder / PNG_INDEX_NAME
    index.write_text(_png_index(reference_slices, paths, first_k, None if labelmap else shown_window,
                                array if labelmap and label_names else None, label_names), encoding="utf-8")
    logger.info("wrote %d PNG slices to %s (%s)", len(paths), folder,
                f"label values as {label_dtype}" if labelmap else f"window {shown_window[0]:g} to {shown_window[1]:g}")
    return [*paths, index]


def label_png_dtype(labels) -> np.dtype:
    """uint8 when every label is within 0..255, uint16 within 0..65535.

    Raises
    ------
    DicomError
        If labels are fractional, negative or above 65535 (a PNG cannot hold them exactly).
    """
    labels = np.asarray(labels)
    low, high = (float(np.min(labels)), float(np.max(labels))) if labels.size else (0.0, 0.0)
    whole = labels.dtype.kind in "biu" or bool(np.all(np.equal(np.mod(labels, 1), 0)))
    if not whole or low < 0 or high > _UINT16.max:
        raise DicomError(f"label PNGs hold whole labels within 0..{_UINT16.max}; got range [{low:g}, {high:g}]"
                         f"{'' if whole else ' with fractional values'}")
    return np.dtype(np.uint8 if high <= _UINT8.max else np.uint16)


def _png_index(reference_slices: Sequence[SliceHeader], paths: list[Path], first_k: int,
               window: tuple[float, float] | None, labels_kji: np.ndarray | None = None,
               label_names: Callable[[int], str] | None = None) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(PNG_INDEX_COLUMNS + (("labels",) if labels_kji is not None else ()))
    center, width = ("", "") if window is None else (f"{(window[0] + window[1]) / 2:.6g}",
                                                     f"{window[1] - window[0]:.6g}")
    for k, (reference, path) in enumerate(zip(reference_slices, paths, strict=True)):
        position = "\\".join(f"{value:.6g}" for value in reference.position_lps)
        row = [path.name, reference.sop_instance_uid, reference.instance_number or "", first_k + k, position,
               center, width]
        if labels_kji is not None and label_names is not None:
            present = [int(value) for value in np.unique(labels_kji[k]) if value]
            row.append(";".join(f"{value}={label_names(value)}" for value in present))
        writer.writerow(row)
    return text.getvalue()


def png_slice_name(reference: SliceHeader) -> str:
    """``<InstanceNumber:04d>_<SOPInstanceUID>[_frame<N:04d>][_tile<N:04d>].png`` (InstanceNumber 0 if absent)."""
    return f"{reference.instance_number or 0:04d}_{safe_name(reference.sop_instance_uid)}{_slice_suffix(reference)}.png"


def pixel_encoding(array, *, labelmap: bool = False, value_range: tuple[float, float] | None = None,
                   integer: bool | None = None) -> PixelEncoding:
    """Choose how to store a volume's values in 16-bit DICOM pixels, once for a whole export.

    Parameters
    ----------
    array : array_like
        Values of the volume (any shape, e.g. ``(K, J, I)``); only its range and type are used.
    labelmap : bool
        Refuse rescaling (labels must be stored exactly).
    value_range : (low, high), optional
        The range the encoding must hold; by default the array's. A caller exporting slabs passes
        the whole export's range (e.g. the input's range and the background).
    integer : bool, optional
        Whether the values are integers; by default true for an integer array or a float array of
        whole numbers. A caller exporting slabs passes it from the input's type.

    Returns
    -------
    PixelEncoding
        Integers: int16 (slope 1, intercept 0) when the range fits, else uint16 with slope 1 and
        intercept 0, or intercept = low when the range is at most 65535 wide; beyond that (not for
        labels) scaled like floats. Floats: uint16, ``slope = (high - low) / 65535``, intercept = low.

    Raises
    ------
    DicomError
        If values are not finite, or labels are not whole numbers within a 16-bit range.
    """
    array = np.asarray(array)
    low, high = value_range if value_range is not None else (float(np.min(array)), float(np.max(array)))
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise DicomError(f"the volume has non-finite values (min {low}, max {high}); DICOM pixels cannot hold them")
    if integer is None:
        integer = array.dtype.kind in "biu" or bool(np.all(np.equal(np.mod(array, 1), 0)))
    window = (low, high) if labelmap or value_range is not None else window_of(array)
    if integer and high - low <= _UINT16.max:
        low, high = math.floor(low), math.ceil(high)
        if _INT16.min <= low and high <= _INT16.max:
            return PixelEncoding(np.dtype(np.int16), 1.0, 0.0, window)
        return PixelEncoding(np.dtype(np.uint16), 1.0, 0.0 if 0 <= low and high <= _UINT16.max else float(low), window)
    if labelmap:
        raise DicomError(
            f"labels must be whole numbers within a 16-bit range (at most {_UINT16.max} wide) to be stored exactly; "
            f"got range [{low}, {high}]{'' if integer else ' with fractional values'}"
        )
    return PixelEncoding(np.dtype(np.uint16), (high - low) / _UINT16.max if high > low else 1.0, low, window)


# -- inputs ---------------------------------------------------------------------------------------


def _checked_array(array_kji: ArrayLike, reference_slices: Sequence[SliceHeader]) -> np.ndarray:
    """The array, checked against the reference slices: one slice each, of their Rows x Columns."""
    array = np.asarray(array_kji)
    if array.ndim != 3:
        raise DicomError(f"array_kji must be 3-D [k, j, i], got shape {array.shape}")
    if len(reference_slices) != array.shape[0]:
        raise DicomError(f"array_kji has {array.shape[0]} slices but {len(reference_slices)} reference slices were "
                         "given (one per slice, in k order)")
    for reference in reference_slices:
        if (reference.rows, reference.columns) != array.shape[1:]:
            raise DicomError(
                f"reference {reference.where} has Rows x Columns {reference.rows} x {reference.columns}, but the "
                f"array's slices are {array.shape[1]} x {array.shape[2]} ([j, i]); resample onto the reference's "
                "grid first")
    return array


def _read_header(path) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as error:
        raise DicomError(f"cannot read reference DICOM file {path}: {error}") from None


# -- datasets -------------------------------------------------------------------------------------


def _slice_dataset(series_file: Dataset, header: SliceHeader, pixels_ji: np.ndarray, encoding: PixelEncoding,
                   identity: _SeriesIdentity, number: int, window: tuple[float, float]) -> Dataset:
    """One derived single-frame instance on reference slice ``header``, InstanceNumber ``number``.

    Patient, study and frame of reference come from ``series_file`` (a file of the reference series);
    the slice's plane and identity from its header.
    """
    dataset = Dataset()
    for keyword in IDENTITY_KEYWORDS:
        if keyword in series_file:
            setattr(dataset, keyword, series_file[keyword].value)
    if header.frame_of_reference_uid:
        dataset.FrameOfReferenceUID = header.frame_of_reference_uid
    if "FrameOfReferenceUID" not in dataset:
        raise DicomError(f"reference {header.where} has no FrameOfReferenceUID")
    dataset.SOPClassUID = identity.sop_class_uid
    # derived from the series and the reference slice: the same slice of one series keeps one UID
    dataset.SOPInstanceUID = generate_uid(entropy_srcs=[
        str(identity.series_instance_uid), header.sop_instance_uid, str(header.frame),
        str(None if header.tile is None else header.tile.index)])
    dataset.ImageType = ["DERIVED", "SECONDARY"]
    _set_series(dataset, identity, number)
    _set_derivation(dataset, series_file.SOPClassUID, header, identity)
    _set_modality_attributes(dataset)
    _set_plane(dataset, header)
    _set_pixels(dataset, pixels_ji, encoding, window)
    dataset.file_meta = _file_meta(dataset)
    return dataset


def _sop_class(modality: str) -> str:
    sop_class = SOP_CLASS_BY_MODALITY.get(modality)
    if sop_class is None:
        logger.warning("reference modality %s: writing Secondary Capture, whose geometry some readers ignore",
                       modality)
        return SecondaryCaptureImageStorage
    return sop_class


def _set_series(dataset: Dataset, identity: _SeriesIdentity, number: int) -> None:
    dataset.SeriesInstanceUID = identity.series_instance_uid
    dataset.SeriesDescription = identity.series_description
    if identity.series_number is not None:
        dataset.SeriesNumber = identity.series_number
    dataset.InstanceNumber = number
    date, time = identity.timestamp.strftime("%Y%m%d"), identity.timestamp.strftime("%H%M%S")
    dataset.SeriesDate = dataset.ContentDate = dataset.InstanceCreationDate = date
    dataset.SeriesTime = dataset.ContentTime = dataset.InstanceCreationTime = time
    dataset.Manufacturer = "AlignSeries"
    dataset.SoftwareVersions = __version__


def _set_derivation(dataset: Dataset, sop_class_uid: str, header: SliceHeader, identity: _SeriesIdentity) -> None:
    dataset.DerivationDescription = identity.derivation_description[:1024]
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = header.sop_instance_uid
    if header.frame is not None:
        item.ReferencedFrameNumber = header.frame
    dataset.SourceImageSequence = [item]
    dataset.ReferencedImageSequence = [Dataset(item)]


def _set_modality_attributes(dataset: Dataset) -> None:
    """Type 1/2 attributes of the CT, MR or SC image modules that are not copied from the reference."""
    if dataset.SOPClassUID == MRImageStorage:
        dataset.ScanningSequence = "RM"  # research mode: the pixels were computed, not acquired
        dataset.SequenceVariant = "NONE"
        for keyword in ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength", "RepetitionTime"):
            setattr(dataset, keyword, None)
    elif dataset.SOPClassUID == CTImageStorage:
        dataset.KVP = None
        dataset.AcquisitionNumber = None
    else:
        dataset.ConversionType = "WSD"
        dataset.Modality = dataset.get("Modality", "OT")


def _set_plane(dataset: Dataset, header: SliceHeader) -> None:
    """The slice's plane, as its header gives it (a MOSAIC tile's own position and size)."""
    dataset.ImagePositionPatient = _decimal_strings(header.position_lps)
    dataset.ImageOrientationPatient = _decimal_strings(header.orientation)
    dataset.PixelSpacing = _decimal_strings(header.pixel_spacing)
    thickness = header.attributes.get("slice_thickness")
    dataset.SliceThickness = None if thickness is None else DSfloat(thickness, auto_format=True)  # type 2


def _decimal_strings(values) -> list[DSfloat]:
    """Values as DICOM decimal strings (at most 16 characters; a header's own values come back as written)."""
    return [DSfloat(float(value), auto_format=True) for value in values]


def _set_pixels(dataset: Dataset, pixels_ji: np.ndarray, encoding: PixelEncoding,
                window: tuple[float, float]) -> None:
    stored = encoding.encode(np.asarray(pixels_ji))
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = int(encoding.dtype.kind == "i")
    dataset.RescaleSlope = f"{encoding.slope:.10g}"
    dataset.RescaleIntercept = f"{encoding.intercept:.10g}"
    dataset.RescaleType = "US"
    low, high = window
    dataset.WindowCenter = f"{(low + high) / 2:.6g}"
    dataset.WindowWidth = f"{max(high - low, 1):.6g}"
    dataset.PixelData = np.ascontiguousarray(stored, dtype=stored.dtype.newbyteorder("<")).tobytes()


def _file_meta(dataset: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


# -- atomic folder output -------------------------------------------------------------------------


@contextlib.contextmanager
def _staged_folder(output_dir, *, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``output_dir`` that replaces it when the block succeeds.

    On any exception the temporary folder is removed and an existing ``output_dir`` is untouched
    (:func:`AlignSeriesLib.files.staged_outputs`).
    """
    output_dir = _checked_output_folder(output_dir, force=force)
    with staged_outputs(force=force) as staging:
        yield staging.folder(output_dir)


def check_replaceable_folder(output_dir) -> None:
    """Refuse to replace (even with force) a folder holding anything but files the exporters write.

    Raises
    ------
    OutputExistsError
        Naming the first foreign entry.
    """
    contents = list(Path(output_dir).iterdir()) if Path(output_dir).is_dir() else []
    foreign = [p.name for p in contents if not (p.is_file() and p.suffix.lower() in EXPORT_SUFFIXES)]
    if foreign:
        raise OutputExistsError(
            f"output folder {output_dir} holds entries other than {'/'.join(EXPORT_SUFFIXES)} files "
            f"(e.g. {foreign[0]!r}); not replaced even with --force: choose a new folder"
        )


def _checked_output_folder(output_dir, *, force: bool) -> Path:
    output_dir = Path(output_dir).absolute()
    if not output_dir.parent.is_dir():
        raise AlignSeriesError(f"the parent of output folder {output_dir} does not exist or is not a folder")
    if not os.access(output_dir.parent, os.W_OK):
        raise AlignSeriesError(f"output folder's parent {output_dir.parent} is not writable")
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputExistsError(f"output {output_dir} exists and is not a folder")
    contents = list(output_dir.iterdir()) if output_dir.is_dir() else []
    if contents and not force:
        raise OutputExistsError(
            f"output folder {output_dir} is not empty ({len(contents)} entries); use --force to replace it"
        )
    check_replaceable_folder(output_dir)
    return output_dir
