"""Header-only reading of DICOM files: one :class:`SliceHeader` per image or frame.

Nothing here decodes pixel data. Files are read with pydicom's ``defer_size`` so that the pixel
data element is skipped (its offset and length are kept for a later fast read, see
:mod:`AlignSeriesLib.dicom.pixels`). Enhanced multi-frame objects give one header per frame, with
the geometry taken from the per-frame functional groups, falling back to the shared ones.

Frames: positions and directions are DICOM patient coordinates (LPS, mm), as in the files.
Every error message names the file (and frame) and the DICOM tag that is missing or wrong.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ..errors import DicomError, MissingDependencyError
from .file_kinds import (
    API_ERRORS,
    READ_ERRORS,
    FileNote,
    inflation_note,
    non_image_note,
    unreadable_note,
)
from .identity import Identity, Substitution, file_identity, uid_value
from .mosaic import MosaicTile, is_mosaic, tile_headers
from .plain import NotPlainError, read_plain

logger = logging.getLogger(__name__)

#: SOP Class UID of DICOM Spatial Registration objects (collected for REG import, never loaded).
SPATIAL_REGISTRATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.1"

#: Elements longer than this many bytes are not read during the header scan (pixel data above all).
DEFER_SIZE_BYTES = 4096

#: Largest deviation from orthonormal (|row|-1, |column|-1, row.column) that ImageOrientationPatient
#: may have before a file is refused: beyond it the two vectors do not describe an image plane.
#: Smaller deviations are repaired and reported (see ``dicom_stack.ORIENTATION_ATOL``).
ORIENTATION_REJECT_ATOL = 0.02

#: Largest magnitude (mm) accepted in ImagePositionPatient and PixelSpacing: 1 km. Larger values are
#: header corruption, and would overflow the grid arithmetic (a 1e308 mm position has no neighbours).
MAX_COORDINATE_MM = 1e6

_PIXEL_DATA_TAG = 0x7FE00010


@functools.lru_cache(maxsize=256)
def _uid(value: str) -> UID:
    """``UID(value)``, made once per distinct value (a scan meets a few transfer syntaxes and SOP classes)."""
    return UID(value)


class TruncatedFileError(DicomError):
    """A file ends before the pixel data its header announces."""


@dataclass(frozen=True, slots=True)
class PixelLayout:
    """Where and how one file stores its pixels (shared by all frames of a multi-frame file).

    Attributes
    ----------
    transfer_syntax : str
        Transfer Syntax UID.
    bits_allocated, bits_stored, pixel_representation, samples_per_pixel : int
        As in the file (pixel representation 1 = signed).
    offset : int or None
        Byte offset of the pixel data value in the file; None when encapsulated (compressed).
    length : int or None
        Byte length of the native pixel data value; None when encapsulated.
    is_float : bool
        FloatPixelData (32-bit) or DoubleFloatPixelData (64-bit), as in a Parametric Map.
    """

    transfer_syntax: str
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    samples_per_pixel: int
    offset: int | None
    length: int | None
    is_float: bool = False

    @property
    def is_native_little_endian(self) -> bool:
        """True when the pixels can be read straight from the file (uncompressed little endian)."""
        syntax = _uid(self.transfer_syntax)
        return self.offset is not None and not syntax.is_compressed and syntax.is_little_endian and not (
            syntax.is_deflated
        )

    @property
    def stored_dtype(self) -> np.dtype:
        """numpy dtype of one stored sample (little endian)."""
        kind = "f" if self.is_float else "i" if self.pixel_representation == 1 else "u"
        return np.dtype(f"<{kind}{self.bits_allocated // 8}")


@dataclass(frozen=True, eq=False, slots=True)  # slots: a scan holds one per slice
class SliceHeader:
    """What the header of one image (one file, or one frame of a multi-frame file) says.

    Attributes
    ----------
    path : str
    frame : int or None
        1-based frame number in a multi-frame file, None for a single-frame file.
    orientation : (6,) ndarray
        ImageOrientationPatient as stored: row direction (along i) then column direction (along j), LPS.
    position_lps : (3,) ndarray, mm
        ImagePositionPatient: LPS center of the first pixel (i = j = 0).
    pixel_spacing : (2,) ndarray, mm
        PixelSpacing as stored: (row spacing, column spacing) = (j spacing, i spacing).
    rescale : tuple of 2 float
        (slope, intercept) of the modality LUT.
    image_type : tuple of str
        ImageType (or the frame's FrameType).
    attributes : dict
        Values that may tell images at one position apart (``echo``, ``echo_time``, ``complex`` (GE's
        magnitude/phase/real/imaginary), ``b_value``, ``gradient`` (GE's private ones when the standard are absent),
        ``temporal``, ``trigger``, ``acquisition_number``, ``acquisition_time``) and the slice
        spacing hints (``spacing_between_slices``, ``slice_thickness``); absent keys are None.
    tile : MosaicTile or None
        For one slice of a Siemens MOSAIC: where it sits in the file's image (``rows``, ``columns``
        and ``position_lps`` are then the tile's own); None otherwise.
    substitutions : tuple of Substitution
        The file's empty or missing UIDs and what stands for them (see :func:`file_identity`).
    """

    path: str
    frame: int | None
    sop_instance_uid: str
    instance_number: int | None
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str | None
    modality: str
    series_number: int | None
    series_description: str
    rows: int
    columns: int
    orientation: np.ndarray
    position_lps: np.ndarray
    pixel_spacing: np.ndarray
    rescale: tuple[float, float]
    image_type: tuple[str, ...]
    stack_id: str | None
    pixels: PixelLayout
    attributes: dict = field(default_factory=dict)
    tile: MosaicTile | None = None
    substitutions: tuple[Substitution, ...] = ()

    @property
    def where(self) -> str:
        """The file (and frame, or MOSAIC tile) for messages."""
        if self.tile is not None:
            return f"{self.path} MOSAIC tile {self.tile.index + 1} of {self.tile.count}"
        return self.path if self.frame is None else f"{self.path} frame {self.frame}"

    @property
    def is_localizer(self) -> bool:
        """True for scout / localizer images (ImageType contains LOCALIZER)."""
        return "LOCALIZER" in self.image_type


_FLOAT_PIXEL_DATA_TAGS = {0x7FE00008: 32, 0x7FE00009: 64}  # FloatPixelData, DoubleFloatPixelData: bits


def read_headers(path) -> list[SliceHeader] | FileNote:
    """Read one file's headers without its pixel data.

    Returns
    -------
    list of SliceHeader
        One per image (one per frame of a multi-frame file).
    FileNote
        When the file is not a DICOM image (not DICOM, corrupt, a non-image object, unusable
        geometry, empty or unreadable file); ``reason`` names the file and the tag.

    Raises
    ------
    MissingDependencyError
        If the file is a Siemens MOSAIC and nibabel is not installed (not a reason to skip the file).
    """
    path = str(path)
    unreadable = unreadable_note(path, opening=False)  # never open a FIFO; a plain file is then opened once
    if unreadable:
        return unreadable
    plain = _plain_headers(path)
    if plain is not None:
        return plain
    unreadable = unreadable_note(path) or inflation_note(path)
    if unreadable:
        return unreadable
    try:
        dataset = _read_dataset(path)
        if dataset is None:
            return FileNote(path, f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble)",
                            kind="not DICOM")
        return _headers_of_dataset(path, dataset)
    except MissingDependencyError:
        raise
    except MemoryError:
        return FileNote(path, f"{path}: not enough memory to read its header", kind="too large")
    except InvalidDicomError:
        return FileNote(path, f"{path}: not a DICOM file (no 'DICM' marker after the 128-byte preamble)",
                        kind="not DICOM")
    except TruncatedFileError as error:
        return FileNote(path, str(error), _series_uid_or_none(path), kind="corrupt or truncated")
    except DicomError as error:
        return FileNote(path, str(error), _series_uid_or_none(path))
    except API_ERRORS as error:  # a malformed element, or a pydicom whose API differs from the one AlignSeries needs
        return FileNote(path, f"{path}: pydicom {pydicom.__version__} could not read this file "
                              f"({type(error).__name__}: {error}); AlignSeries needs pydicom >= 3", kind="unreadable")
    except READ_ERRORS as error:
        return FileNote(path, f"{path}: corrupt or truncated DICOM file: pydicom says {type(error).__name__}: {error}",
                        kind="corrupt or truncated")


def _plain_headers(path: str) -> list[SliceHeader] | None:
    """The headers of a plain file (:mod:`.plain`: no pydicom Dataset built), or None for any other file and
    for any file whose headers are not plain images: pydicom reads those, and says what is wrong."""
    try:
        dataset = cast(Dataset, read_plain(path))  # offers the part of a Dataset that the functions below use
        headers = _headers_of_dataset(path, dataset)
    except (NotPlainError, DicomError) + READ_ERRORS + API_ERRORS:
        return None
    return headers if isinstance(headers, list) else None


def _read_dataset(path: str) -> Dataset | None:
    """The file's dataset, long values deferred; a file without the DICM preamble (an old or raw export) only
    when it still parses into one with a valid SOPClassUID; None for any other file."""
    try:
        return pydicom.dcmread(path, defer_size=DEFER_SIZE_BYTES)
    except InvalidDicomError:
        pass
    try:
        dataset = pydicom.dcmread(path, defer_size=DEFER_SIZE_BYTES, force=True)
        valid = UID(str(dataset.get("SOPClassUID", ""))).is_valid
    except READ_ERRORS + API_ERRORS:
        return None
    return dataset if valid else None


def _series_uid_or_none(path: str) -> str | None:
    try:
        return str(pydicom.dcmread(path, specific_tags=["SeriesInstanceUID"]).get("SeriesInstanceUID", "")) or None
    except READ_ERRORS + API_ERRORS:
        return None


def _headers_of_dataset(path: str, dataset: Dataset) -> list[SliceHeader] | FileNote:
    sop_class = _sop_class_uid(dataset)
    series_uid = str(dataset.get("SeriesInstanceUID", "")) or None
    if sop_class == SPATIAL_REGISTRATION_SOP_CLASS:
        return FileNote(path, f"{path}: spatial registration object, kept for REG import", series_uid, True,
                        kind="REG")
    name = _uid(sop_class).name if sop_class else "no SOPClassUID"
    _check_element_lengths(path, dataset)
    pixel_tag = _pixel_data_tag(dataset)
    non_image = non_image_note(path, dataset, sop_class, name, series_uid, pixel_tag)
    if non_image is not None:
        return non_image
    if pixel_tag is None and not sop_class:
        return FileNote(path, f"{path}: no SOPClassUID (0008,0016) and no PixelData (7FE0,0010): not an image "
                              "(no pydicom parsing error: the file holds no image elements)", series_uid,
                        kind="no image elements")
    if pixel_tag is None and ("Rows" in dataset or name.endswith("Image Storage")):
        return FileNote(path, f"{path}: {name} header without PixelData (7FE0,0010): no pixels to read (a file "
                              "stripped of its pixels, or cut short)", series_uid, kind="no pixel data")
    if pixel_tag is None:
        return FileNote(path, f"{path}: {name}: not an image (no PixelData), skipped", series_uid, kind=name)
    if "Rows" not in dataset:
        raise DicomError(f"{path}: {name} object with PixelData (7FE0,0010) but no Rows (0028,0010)")
    layout = _pixel_layout(path, dataset, pixel_tag)
    identity = file_identity(path, dataset)
    if "PerFrameFunctionalGroupsSequence" in dataset:
        return [_enhanced_frame_header(path, dataset, layout, frame, identity)
                for frame in _frame_numbers(path, dataset)]
    header = _classic_header(path, dataset, layout, identity)
    if is_mosaic(dataset):
        return tile_headers(header, dataset)
    frames = _optional_int(path, dataset, "NumberOfFrames", "(0028,0008)", 1)
    if frames > 1:
        raise DicomError(f"{path}: NumberOfFrames (0028,0008) is {frames} but there is no "
                         "PerFrameFunctionalGroupsSequence (5200,9230) giving each frame's position: "
                         "unknown multi-frame packing, not read")
    return [header]


def _check_element_lengths(path: str, dataset: Dataset) -> None:
    """Raise TruncatedFileError when an element's declared length runs past the end of the file (pydicom defers
    long values, so a cut or corrupt length is otherwise seen only when the value is read)."""
    if _uid(str(dataset.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian))).is_deflated:
        return  # offsets count in the inflated stream
    tags = list(dataset.keys())
    last = max(tags) if tags else None  # an overrun swallows the rest of the file: only the last element can
    if last is None or last == _PIXEL_DATA_TAG:
        return  # _check_pixel_length says how many pixel bytes are missing
    element = dataset.get_item(last, keep_deferred=True)
    start, length, size = getattr(element, "value_tell", None), getattr(element, "length", None), os.path.getsize(path)
    if start is not None and length not in (None, 0xFFFFFFFF) and start + length > size:
        raise TruncatedFileError(
            f"{path}: corrupt or truncated DICOM file: element {last} declares {length} bytes from offset {start}, "
            f"but the file ends after {size - start}")


def _sop_class_uid(dataset: Dataset) -> str:
    """SOPClassUID, or the file meta's MediaStorageSOPClassUID (a DICOMDIR has only the latter)."""
    return uid_value(dataset, "SOPClassUID") or uid_value(getattr(dataset, "file_meta", Dataset()),
                                                            "MediaStorageSOPClassUID")


def _pixel_data_tag(dataset: Dataset) -> int | None:
    """The tag of the file's pixels: PixelData, FloatPixelData or DoubleFloatPixelData; None without pixels."""
    return next((tag for tag in (_PIXEL_DATA_TAG, *_FLOAT_PIXEL_DATA_TAGS) if tag in dataset), None)


def _frame_numbers(path: str, dataset: Dataset) -> range:
    count = _optional_int(path, dataset, "NumberOfFrames", "(0028,0008)", 1)
    per_frame = len(dataset.PerFrameFunctionalGroupsSequence)
    if per_frame != count:
        raise DicomError(
            f"{path}: PerFrameFunctionalGroupsSequence (5200,9230) has {per_frame} items but "
            f"NumberOfFrames (0028,0008) is {count}"
        )
    return range(1, count + 1)


def _pixel_layout(path: str, dataset: Dataset, pixel_tag: int = _PIXEL_DATA_TAG) -> PixelLayout:
    bits_allocated = _required_int(path, dataset, "BitsAllocated", "(0028,0100)")
    samples = _optional_int(path, dataset, "SamplesPerPixel", "(0028,0002)", 1)
    float_bits = _FLOAT_PIXEL_DATA_TAGS.get(pixel_tag)
    if float_bits is not None:
        return _float_layout(path, dataset, pixel_tag, float_bits)
    if samples != 1 or bits_allocated not in (8, 16, 32):
        raise DicomError(
            f"{path}: SamplesPerPixel (0028,0002) {samples} / BitsAllocated (0028,0100) {bits_allocated}: "
            "only single-sample 8, 16 or 32-bit images can form a scalar volume"
        )
    element = dataset.get_item(_PIXEL_DATA_TAG, keep_deferred=True)
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", pydicom.uid.ImplicitVRLittleEndian))
    value_length = getattr(element, "length", None)  # a RawDataElement's or deferred element's byte length
    native = not _uid(syntax).is_encapsulated and value_length != 0xFFFFFFFF
    offset, length = (element.value_tell, value_length) if native and hasattr(element, "value_tell") else (None, None)
    bits_stored = _optional_int(path, dataset, "BitsStored", "(0028,0101)", bits_allocated)
    representation = _optional_int(path, dataset, "PixelRepresentation", "(0028,0103)", 0)
    if not 1 <= bits_stored <= bits_allocated or representation not in (0, 1):
        raise DicomError(f"{path}: BitsStored (0028,0101) {bits_stored} / PixelRepresentation (0028,0103) "
                         f"{representation}: expected 1..BitsAllocated ({bits_allocated}) bits, 0 or 1")
    high_bit = _optional_int(path, dataset, "HighBit", "(0028,0102)", bits_stored - 1)
    if high_bit != bits_stored - 1:
        raise DicomError(f"{path}: HighBit (0028,0102) {high_bit} with BitsStored (0028,0101) {bits_stored}: only "
                         "HighBit = BitsStored - 1 (stored bits at the bottom of each sample) is understood, not read")
    layout = PixelLayout(syntax, bits_allocated, bits_stored, representation, samples, offset, length)
    _check_pixel_length(path, dataset, layout)
    return layout


def _float_layout(path: str, dataset: Dataset, pixel_tag: int, bits: int) -> PixelLayout:
    """The layout of FloatPixelData (32-bit) or DoubleFloatPixelData (64-bit): native, never encapsulated."""
    element = dataset.get_item(pixel_tag, keep_deferred=True)
    syntax = str(dataset.file_meta.get("TransferSyntaxUID", pydicom.uid.ExplicitVRLittleEndian))
    offset, length = (element.value_tell, getattr(element, "length", None)) if hasattr(element, "value_tell") else (
        None, None)
    layout = PixelLayout(syntax, bits, bits, 0, 1, offset, length, is_float=True)
    _check_pixel_length(path, dataset, layout)
    return layout


def _check_pixel_length(path: str, dataset: Dataset, layout: PixelLayout) -> None:
    if layout.length is None or layout.offset is None:
        return
    rows = _required_int(path, dataset, "Rows", "(0028,0010)")
    columns = _required_int(path, dataset, "Columns", "(0028,0011)")
    frames = _optional_int(path, dataset, "NumberOfFrames", "(0028,0008)", 1)
    expected = rows * columns * frames * layout.bits_allocated // 8
    if layout.length < expected:
        raise DicomError(
            f"{path}: PixelData (7FE0,0010) holds {layout.length} bytes, but Rows (0028,0010) x Columns (0028,0011) "
            f"x NumberOfFrames x BitsAllocated/8 = {rows} x {columns} x {frames} x {layout.bits_allocated // 8} "
            f"= {expected} bytes"
        )
    if _uid(layout.transfer_syntax).is_deflated:
        return  # offsets count in the inflated stream, not in the file: pydicom checks while decoding
    available = os.path.getsize(path) - layout.offset
    if available < expected:
        raise TruncatedFileError(
            f"{path}: truncated file: PixelData (7FE0,0010) needs {expected} bytes from offset {layout.offset} "
            f"but only {available} bytes follow"
        )


def _classic_header(path: str, dataset: Dataset, layout: PixelLayout, identity: Identity) -> SliceHeader:
    geometry = _plane_geometry(path, dataset, dataset, dataset, dataset)
    slope = _rescale_value(path, dataset, "RescaleSlope", "(0028,1053)", 1.0)
    intercept = _rescale_value(path, dataset, "RescaleIntercept", "(0028,1052)", 0.0)
    attributes = _classic_attributes(dataset)
    return _make_header(path, None, dataset, identity, layout, geometry, (slope, intercept),
                        tuple(dataset.get("ImageType", ())), None, attributes)


def _enhanced_frame_header(path: str, dataset: Dataset, layout: PixelLayout, frame: int,
                           identity: Identity) -> SliceHeader:
    per_frame = dataset.PerFrameFunctionalGroupsSequence[frame - 1]
    shared = dataset.get("SharedFunctionalGroupsSequence", [Dataset()])[0]

    def group(keyword: str) -> Dataset:
        return _first_item(per_frame, keyword) or _first_item(shared, keyword) or Dataset()

    where = f"{path} frame {frame}"
    geometry = _plane_geometry(where, group("PlanePositionSequence"), group("PlaneOrientationSequence"),
                               group("PixelMeasuresSequence"), dataset)
    transformation = group("PixelValueTransformationSequence")
    rescale = (_rescale_value(where, transformation, "RescaleSlope", "(0028,1053)", 1.0),
               _rescale_value(where, transformation, "RescaleIntercept", "(0028,1052)", 0.0))
    frame_type = (group("MRImageFrameTypeSequence") or group("CTImageFrameTypeSequence")).get("FrameType")
    image_type = tuple(frame_type or dataset.get("ImageType", ()))
    content = group("FrameContentSequence")
    stack_id = content.get("StackID")
    attributes = _enhanced_attributes(content, group("MREchoSequence"), group("MRDiffusionSequence"))
    return _make_header(path, frame, dataset, identity, layout, geometry, rescale, image_type,
                        None if stack_id is None else str(stack_id), attributes)


def _first_item(dataset: Dataset, keyword: str) -> Dataset | None:
    sequence = dataset.get(keyword)
    return sequence[0] if sequence else None


def _make_header(path, frame, dataset, identity, layout, geometry, rescale, image_type, stack_id,
                 attributes) -> SliceHeader:
    orientation, position_lps, pixel_spacing = geometry
    attributes["spacing_between_slices"] = _float_or_none(dataset.get("SpacingBetweenSlices"))
    attributes["slice_thickness"] = _float_or_none(dataset.get("SliceThickness"))
    return SliceHeader(
        path=path, frame=frame, sop_instance_uid=identity.sop_instance_uid,
        instance_number=_int_or_none(dataset.get("InstanceNumber")),
        series_instance_uid=identity.series_instance_uid, study_instance_uid=identity.study_instance_uid,
        frame_of_reference_uid=identity.frame_of_reference_uid,
        modality=str(dataset.get("Modality", "")), series_number=_int_or_none(dataset.get("SeriesNumber")),
        series_description=str(dataset.get("SeriesDescription", "")).strip(),
        rows=_required_int(path, dataset, "Rows", "(0028,0010)"),
        columns=_required_int(path, dataset, "Columns", "(0028,0011)"),
        orientation=orientation, position_lps=position_lps, pixel_spacing=pixel_spacing, rescale=rescale,
        image_type=tuple(str(value).upper() for value in image_type), stack_id=stack_id, pixels=layout,
        attributes=attributes, substitutions=identity.substitutions,
    )


def _plane_geometry(where: str, position_source: Dataset, orientation_source: Dataset,
                    spacing_source: Dataset, dataset: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    position = _required_vector(where, position_source, "ImagePositionPatient", "(0020,0032)", 3)
    orientation = _required_vector(where, orientation_source, "ImageOrientationPatient", "(0020,0037)", 6)
    spacing = _required_vector(where, spacing_source, "PixelSpacing", "(0028,0030)", 2)
    if min(spacing.tolist()) <= 0:
        raise DicomError(f"{where}: PixelSpacing (0028,0030) must be positive, got {spacing.tolist()}")
    _check_orientation(where, orientation)
    return orientation, position, spacing


def _check_orientation(where: str, orientation: np.ndarray) -> None:
    row, column = orientation[:3], orientation[3:]
    norms = np.linalg.norm(row), np.linalg.norm(column)
    if min(norms) < 1e-6:
        raise DicomError(
            f"{where}: ImageOrientationPatient (0020,0037) has a zero-length vector: {orientation.tolist()}")
    cosine = abs(float(row @ column)) / (norms[0] * norms[1])
    deviation = max(abs(norms[0] - 1), abs(norms[1] - 1), cosine)
    if deviation > ORIENTATION_REJECT_ATOL:
        raise DicomError(
            f"{where}: ImageOrientationPatient (0020,0037) {orientation.tolist()} is not a pair of orthogonal unit "
            f"vectors (deviation {deviation:.3g}, limit {ORIENTATION_REJECT_ATOL})"
        )


def _required_vector(where: str, dataset: Dataset, keyword: str, tag: str, size: int) -> np.ndarray:
    value = dataset.get(keyword)
    if value is None or value == "":
        raise DicomError(f"{where}: missing {keyword} {tag}")
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        raise DicomError(f"{where}: {keyword} {tag} is not numeric: {value!r}") from None
    if len(numbers) != size or not all(map(math.isfinite, numbers)):  # plain Python: numpy is slower on 3 numbers
        raise DicomError(f"{where}: {keyword} {tag} must be {size} finite numbers, got {list(value)!r}")
    vector = np.array(numbers, dtype=float)
    if max(map(abs, numbers)) > MAX_COORDINATE_MM:
        raise DicomError(f"{where}: {keyword} {tag} {vector.tolist()} is beyond {MAX_COORDINATE_MM:g} mm: "
                         "a corrupt header")
    return vector


def _required_int(path: str, dataset: Dataset, keyword: str, tag: str) -> int:
    value = _int_or_absent(path, dataset, keyword, tag)
    if value is None or value <= 0:
        raise DicomError(f"{path}: missing or invalid {keyword} {tag}: {dataset.get(keyword)!r}")
    return value


def _optional_int(path: str, dataset: Dataset, keyword: str, tag: str, default: int) -> int:
    """An integer element, ``default`` when absent or empty; a DicomError naming the tag when not an integer."""
    value = _int_or_absent(path, dataset, keyword, tag)
    return default if value is None else value


def _int_or_absent(path: str, dataset: Dataset, keyword: str, tag: str) -> int | None:
    """An integer element, None when absent or empty; a DicomError naming the tag when not an integer."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DicomError(f"{path}: {keyword} {tag} is not an integer: {value!r}") from None


def _rescale_value(where: str, dataset: Dataset, keyword: str, tag: str, default: float) -> float:
    """RescaleSlope or RescaleIntercept: ``default`` when absent, else a finite number (a DicomError otherwise)."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DicomError(f"{where}: {keyword} {tag} is not a number: {value!r}") from None
    if not np.isfinite(number):
        raise DicomError(f"{where}: {keyword} {tag} must be a finite number, got {value!r}")
    if keyword == "RescaleSlope" and number == 0:  # a zero slope would blank the image: read as "not set"
        return default
    return number


#: GE's private complex image type (0043,102F) (creator GEMS_PARM_01): what a magnitude/phase pair differs by.
_GE_COMPLEX_TYPES = {0: "magnitude", 1: "phase", 2: "real", 3: "imaginary"}


def _classic_attributes(dataset: Dataset) -> dict:
    ge = "GE" in str(dataset.get("Manufacturer", "")).upper()  # GE's private elements, looked up on GE files only
    gradient = dataset.get("DiffusionGradientOrientation") or (_ge_gradient(dataset) if ge else None)
    b_value = _float_or_none(dataset.get("DiffusionBValue"))
    ge_b_value = _float_or_none(_private_value(dataset, 0x0043, "GEMS_PARM_01", 0x39)) if ge else None  # 1st of 4
    ge_complex = _int_or_none(_private_value(dataset, 0x0043, "GEMS_PARM_01", 0x2F)) if ge else None
    return {
        "echo": _float_or_none(dataset.get("EchoNumbers")),
        "echo_time": _float_or_none(dataset.get("EchoTime")),
        "complex": None if ge_complex is None else _GE_COMPLEX_TYPES.get(ge_complex),
        "b_value": b_value if b_value is not None or ge_b_value is None else ge_b_value % 100000,
        "gradient": None if gradient is None else tuple(round(float(g), 4) for g in gradient),
        "temporal": _float_or_none(dataset.get("TemporalPositionIdentifier")),
        "trigger": _float_or_none(dataset.get("TriggerTime")),
        "acquisition_number": _float_or_none(dataset.get("AcquisitionNumber")),
        "acquisition_time": str(dataset.get("AcquisitionTime", "")) or None,
    }


def _private_value(dataset: Dataset, group: int, creator: str, offset: int):
    """A private element's value from ``creator``'s block of ``group`` (e.g. GE's GEMS_PARM_01), None if absent."""
    try:
        return dataset.private_block(group, creator)[offset].value
    except KeyError:
        return None


def _ge_gradient(dataset: Dataset) -> tuple | None:
    """GE's diffusion gradient direction (0019,10BB), (0019,10BC), (0019,10BD) (creator GEMS_ACQU_01)."""
    values = [_float_or_none(_private_value(dataset, 0x0019, "GEMS_ACQU_01", offset)) for offset in (0xBB, 0xBC, 0xBD)]
    return None if None in values else tuple(values)


def _enhanced_attributes(content: Dataset, echo: Dataset, diffusion: Dataset) -> dict:
    direction = _first_item(diffusion, "DiffusionGradientDirectionSequence") or Dataset()
    gradient = direction.get("DiffusionGradientOrientation")
    return {
        "echo": None,
        "echo_time": _float_or_none(echo.get("EffectiveEchoTime")),
        "complex": None,
        "b_value": _float_or_none(diffusion.get("DiffusionBValue")),
        "gradient": None if gradient is None else tuple(round(float(g), 4) for g in gradient),
        "temporal": _float_or_none(content.get("TemporalPositionIndex")),
        "trigger": None,
        "acquisition_number": None,
        "acquisition_time": str(content.get("FrameAcquisitionDateTime", "")) or None,
    }


def _float_or_none(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value[0] if isinstance(value, list | pydicom.multival.MultiValue) else value)
    except (TypeError, ValueError):
        return None


def _int_or_none(value) -> int | None:
    number = _float_or_none(value)
    return None if number is None else int(number)
