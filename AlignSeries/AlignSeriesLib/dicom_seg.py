"""DICOM Segmentation (SEG) objects out of and into label maps, slice for slice with a reference series.

highdicom (imported here only, and only when a SEG is written or read) builds and parses the objects.

Writing (:func:`write_seg`)
---------------------------
A label map on a DICOM reference's own slices (``array_kji[k]`` on reference slice ``k``, as the
DICOM exporter takes it, :mod:`.dicom_export`) becomes one SEG instance:

* one frame per reference slice and segment that holds the segment (empty frames are left out unless
  ``omit_empty_frames=False``); each frame names its reference slice (ReferencedSOPInstanceUID, and
  ReferencedFrameNumber for a frame of a multi-frame reference) and carries that slice's own
  ImagePositionPatient, so tilted, unevenly spaced and unsorted references are exact. The slices'
  plane (orientation, pixel spacing, position, SOPInstanceUID) is taken from the
  :class:`~AlignSeriesLib.dicom_headers.SliceHeader` objects the reader built; the reference files
  are opened once each, only for the patient and study modules and the SOP class;
* ``seg_type="binary"`` (default; what viewers read today): segment numbers are the label values
  when these run 1..N without gaps, else the labels are renumbered 1..N in ascending order (with a
  ``seg_segments_renumbered`` warning); ``"labelmap"`` (Label Map Segmentation Storage, highdicom ≥
  0.23): one frame per slice holding the label values themselves, which need not be consecutive;
* segments are described from a :class:`~AlignSeriesLib.label_table.LabelTable` (name, SNOMED CT
  category and type, colour); a label it does not list is "Segment N" with the generic code
  :data:`GENERIC_CODE` and a ``seg_generic_labels`` warning. The algorithm is AUTOMATIC with its
  name and version when ``algorithm`` is given, else MANUAL;
* the new series lies in the reference's Study and FrameOfReference, with new Series and SOP
  Instance UIDs and the reference's patient module.

Reading (:func:`read_seg`)
--------------------------
A SEG (BINARY, LABELMAP, or FRACTIONAL thresholded at :data:`FRACTIONAL_THRESHOLD` with a warning)
becomes a label map whose values are the segment numbers, on the grid its frames define: the frames'
distinct plane positions ordered along the normal, slice gaps (empty frames that were left out)
filled with background when the positions lie on one evenly stepped (possibly sheared) grid. Frames
at uneven positions are placed on a regular orthogonal grid by nearest slice and pixel (a
``regularized`` warning). Overlapping segments cannot share a label map: they are refused, naming
them, unless ``segments`` chooses ones that do not overlap.
"""

from __future__ import annotations

import logging
import os
import warnings as warnings_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import ArrayLike
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pydicom.valuerep import DSfloat

from . import __version__
from .describe import explained
from .dicom_headers import SliceHeader
from .dicom_stack import POSITION_ATOL, SliceFrame, analyse_stack, order_along_normal, regular_grid
from .errors import AlignSeriesWarning, DicomError, MissingDependencyError
from .geometry import VolumeGeometry
from .label_table import Code, Label, LabelTable

logger = logging.getLogger(__name__)

#: SOP classes of DICOM Segmentation objects.
SEGMENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
SEG_SOP_CLASSES = (SEGMENTATION_SOP_CLASS, LABEL_MAP_SEGMENTATION_SOP_CLASS)

#: The ``seg_type`` values of :func:`write_seg`.
SEG_TYPES = ("binary", "labelmap")

#: Largest label a SEG holds (segment numbers are 16-bit).
MAX_SEG_LABEL = 65535

#: Category and type of a segment no label table describes (SNOMED CT "Tissue", as dcmqi's default).
GENERIC_CODE = Code("85756007", "SCT", "Tissue")

#: A FRACTIONAL frame's pixel belongs to the segment when its value is at least this fraction of the maximum.
FRACTIONAL_THRESHOLD = 0.5

#: Pip requirement named when highdicom is missing.
HIGHDICOM_REQUIREMENT = "highdicom>=0.23"

#: Type 2 attributes of the patient and study modules that highdicom copies; empty when a reference lacks them.
_TYPE2_IDENTITY = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                   "StudyDate", "StudyTime", "ReferringPhysicianName")

#: Attributes copied from a reference file into the source image handed to highdicom.
_SOURCE_KEYWORDS = ("SpecificCharacterSet", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                    "SeriesNumber",
                    "PatientIdentityRemoved", "IssuerOfPatientID", "PatientAge", "PatientSize", "PatientWeight",
                    "StudyDescription", "PositionReferenceIndicator", "DeidentificationMethod",
                    "DeidentificationMethodCodeSequence", *_TYPE2_IDENTITY)


@dataclass(frozen=True)
class Segment:
    """One segment of a SEG: its number, the label value it holds in the label map, and its description."""

    number: int
    label: int
    name: str
    category: Code
    type: Code
    color: tuple[int, int, int] | None = None

    def to_dict(self) -> dict:
        """JSON-ready description."""
        entry = {"number": self.number, "label": self.label, "name": self.name,
                 "category": self.category.to_dict(), "type": self.type.to_dict()}
        if self.color is not None:
            entry["color"] = list(self.color)
        return entry


@dataclass
class SegWritten:
    """What :func:`write_seg` wrote: the file, its frames and segments, and the warnings."""

    path: Path
    frames: int
    segments: list[Segment]
    seg_type: str
    series_instance_uid: str
    warnings: list[AlignSeriesWarning] = field(default_factory=list)


@dataclass
class SegVolume:
    """A SEG read as a label map (:func:`read_seg`).

    Attributes
    ----------
    array : (K, J, I) ndarray of uint16
        Segment numbers (0 = background), indexed ``[k, j, i]``.
    geometry : VolumeGeometry
    segments : list of Segment
        The segments in the label map.
    seg_type : str
        ``BINARY``, ``LABELMAP`` or ``FRACTIONAL``.
    frames : int
    referenced_series_uids : list of str
    frame_of_reference_uid, series_instance_uid : str
    regularized : bool
        True when the frames' uneven positions were placed on a regular grid.
    warnings : list of AlignSeriesWarning
    """

    array: np.ndarray
    geometry: VolumeGeometry
    segments: list[Segment]
    seg_type: str
    frames: int
    referenced_series_uids: list[str]
    frame_of_reference_uid: str
    series_instance_uid: str
    regularized: bool = False
    warnings: list[AlignSeriesWarning] = field(default_factory=list)

    def label_table(self) -> LabelTable:
        """The segments as a label table (value = label in :attr:`array`)."""
        return LabelTable((Label(s.label, s.name, s.category, s.type, s.color) for s in self.segments), "DICOM SEG")


# -- writing --------------------------------------------------------------------------------------


def write_seg(array_kji: ArrayLike, reference_slices: Sequence[SliceHeader], path: str | os.PathLike, *,
              labels: LabelTable | None = None, seg_type: str = "binary",
              algorithm: tuple[str, str] | None = None, series_description: str = "Segmentation (AlignSeries)",
              series_instance_uid: str | None = None, omit_empty_frames: bool = True) -> SegWritten:
    """Write a label map on a DICOM reference's slices as one DICOM SEG instance at ``path``.

    ``path`` is written directly (callers stage it, see :func:`AlignSeriesLib.files.staged_outputs`).

    Parameters
    ----------
    array_kji : (K, J, I) array_like of whole numbers 0..65535
        The label map on the reference slices, indexed ``[k, j, i]``: slice ``k`` lies on reference
        slice ``k`` (J = Rows, I = Columns).
    reference_slices : sequence of K SliceHeader
        The reference slices in k order (``DicomVolume.slices`` or a slab of them).
    path : str or Path
    labels : LabelTable, optional
        Names, codes and colours of the labels.
    seg_type : {"binary", "labelmap"}
    algorithm : (name, version), optional
        The algorithm that made the labels: segments are AUTOMATIC; MANUAL without it.
    series_description : str
    series_instance_uid : str, optional
        A new UID by default.
    omit_empty_frames : bool
        Leave out frames where a segment is absent (default).

    Returns
    -------
    SegWritten

    Raises
    ------
    DicomError
        A label map that is not 3-D on the reference slices, holds negative, fractional or larger than
        65535 values, or holds no label; slices of more than one series; an unknown ``seg_type``.
    MissingDependencyError
        When highdicom is not installed.
    """
    if seg_type not in SEG_TYPES:
        raise DicomError(f"--seg-type must be one of {', '.join(SEG_TYPES)}, got {seg_type!r}")
    hd = _highdicom()
    array = _checked_label_map(array_kji, reference_slices)
    values = _label_values(array, labels)
    warnings: list[AlignSeriesWarning] = []
    segments = _segments(values, labels, binary=seg_type == "binary", warnings=warnings)
    pixels = _segment_numbers_array(array, segments)
    sources = _source_images(reference_slices)
    series_instance_uid = series_instance_uid or generate_uid()
    with warnings_module.catch_warnings():  # highdicom's advice on single-component person names (anonymized)
        warnings_module.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = _segmentation(hd, sources, reference_slices, pixels, seg_type, segments, algorithm, series_instance_uid,
                            series_description, path, omit_empty_frames)
    seg.SeriesDescription = series_description[:64]
    for keyword in ("PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence"):
        if keyword in sources[0]:
            setattr(seg, keyword, sources[0][keyword].value)
    _add_referenced_frame_numbers(seg, reference_slices)
    seg.save_as(path, enforce_file_format=True)
    frames = int(seg.get("NumberOfFrames", 1))
    logger.info("wrote DICOM SEG %s: %d frames, %d segments (%s)", path, frames, len(segments), seg_type)
    for warning in warnings:
        logger.warning("%s", warning.message)
    return SegWritten(Path(path), frames, segments, seg_type.upper(), series_instance_uid, warnings)


def _segmentation(hd, sources: list[Dataset], reference_slices: Sequence[SliceHeader], pixels: np.ndarray,
                  seg_type: str, segments: list[Segment], algorithm: tuple[str, str] | None,
                  series_instance_uid: str, series_description: str, path, omit_empty_frames: bool):
    from .dicom_export import SERIES_NUMBER_OFFSET  # the DICOM exporter's numbering (it imports VTK: not for `info`)

    series_number = sources[0].get("SeriesNumber")
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=seg_type.upper(),
        segment_descriptions=[_description(hd, segment, algorithm) for segment in segments],
        series_instance_uid=series_instance_uid,
        series_number=int(series_number or 0) + SERIES_NUMBER_OFFSET,
        sop_instance_uid=generate_uid(entropy_srcs=[series_instance_uid, "SEG", str(Path(path).name)]),
        instance_number=1, manufacturer="AlignSeries", manufacturer_model_name="AlignSeries",
        software_versions=__version__, device_serial_number="1", content_label="ALIGNSERIES",
        content_description=series_description[:64], omit_empty_frames=omit_empty_frames,
        plane_positions=_plane_positions(hd, reference_slices))


def _highdicom():
    try:
        import highdicom
    except ImportError:
        raise MissingDependencyError(
            f"DICOM SEG needs highdicom: pip install '{HIGHDICOM_REQUIREMENT}'", package=HIGHDICOM_REQUIREMENT
        ) from None
    return highdicom


def _checked_label_map(array_kji: ArrayLike, reference_slices: Sequence[SliceHeader]) -> np.ndarray:
    """The label map as integers, checked against the reference slices."""
    array = np.asarray(array_kji)
    if array.ndim != 3 or len(reference_slices) != array.shape[0]:
        raise DicomError(f"the label map has shape {array.shape}, but a SEG needs one [j, i] slice per reference "
                         f"slice ({len(reference_slices)}): resample onto the reference's grid first")
    for reference in reference_slices:
        if (reference.rows, reference.columns) != array.shape[1:]:
            raise DicomError(f"reference {reference.where} has Rows x Columns {reference.rows} x {reference.columns}, "
                             f"but the label map's slices are {array.shape[1]} x {array.shape[2]}")
    if array.dtype.kind not in "biuf":
        raise DicomError(f"a SEG is written from a label map of whole numbers, got values of type {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (np.mod(array, 1) == 0)):
        raise DicomError("the label map has fractional or non-finite values: a SEG holds whole labels 0.."
                         f"{MAX_SEG_LABEL}; resample it with --labelmap (nearest, label-safe)")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < 0 or high > MAX_SEG_LABEL:
        raise DicomError(f"the label map's values run from {low:g} to {high:g}: a SEG holds labels 0..{MAX_SEG_LABEL} "
                         "(0 = background), negative values are not labels")
    return array.astype(np.uint16)


def _label_values(array: np.ndarray, labels: LabelTable | None) -> list[int]:
    """The labels to describe: those present, and those the table lists."""
    present = {int(value) for value in np.unique(array) if value}
    values = sorted(present | (set(labels.labels) if labels is not None else set()))
    if not values:
        raise DicomError("the label map holds no label (every voxel is 0) and no label table names one: "
                         "a SEG needs at least one segment")
    return values


def _segments(values: list[int], labels: LabelTable | None, *, binary: bool,
              warnings: list[AlignSeriesWarning]) -> list[Segment]:
    """One segment per label value: numbered by value, or 1..N for BINARY when the values have gaps."""
    renumber = binary and values != list(range(1, len(values) + 1))
    if renumber:
        shown = ", ".join(f"{value}->{number}" for number, value in enumerate(values[:8], start=1))
        warnings.append(AlignSeriesWarning("seg_segments_renumbered", (
            f"BINARY SEG segments are numbered 1..N without gaps: the {len(values)} labels (from {values[0]} to "
            f"{values[-1]}) are written as segments 1..{len(values)} ({shown}{', …' if len(values) > 8 else ''}); "
            "--seg-type labelmap keeps the label values")))
    unnamed = [value for value in values if labels is None or value not in labels]
    if unnamed:
        warnings.append(AlignSeriesWarning("seg_generic_labels", (
            f"{len(unnamed)} label(s) ({', '.join(map(str, unnamed[:8]))}{', …' if len(unnamed) > 8 else ''}) are "
            f"not named by a label table: written as 'Segment N' with the generic code {GENERIC_CODE.meaning} "
            f"({GENERIC_CODE.scheme} {GENERIC_CODE.value}); give --labels TABLE to name them")))
    segments = []
    for number, value in enumerate(values, start=1):
        label = labels.get(value) if labels is not None else None
        segments.append(Segment(
            number if renumber else value, value, label.name if label else f"Segment {value}",
            (label.category if label and label.category else GENERIC_CODE),
            (label.type if label and label.type else GENERIC_CODE), label.color if label else None))
    return segments


def _segment_numbers_array(array: np.ndarray, segments: list[Segment]) -> np.ndarray:
    """The label map with each label replaced by its segment number."""
    if all(segment.number == segment.label for segment in segments):
        return array
    lookup = np.zeros(int(array.max()) + 1, dtype=np.uint16)
    for segment in segments:
        if segment.label < len(lookup):
            lookup[segment.label] = segment.number
    return lookup[array]


def _description(hd, segment: Segment, algorithm: tuple[str, str] | None):
    """highdicom's SegmentDescription of one segment."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code as DicomCode

    identification = None
    if algorithm is not None:
        identification = hd.AlgorithmIdentificationSequence(
            name=algorithm[0][:64], version=(algorithm[1] or "unknown")[:64],
            family=codes.cid7162.ArtificialIntelligence)
    color = None if segment.color is None else hd.color.CIELabColor.from_rgb(*segment.color)
    return hd.seg.SegmentDescription(
        segment_number=segment.number, segment_label=segment.name[:64],
        segmented_property_category=DicomCode(segment.category.value, segment.category.scheme,
                                              segment.category.meaning),
        segmented_property_type=DicomCode(segment.type.value, segment.type.scheme, segment.type.meaning),
        algorithm_type="AUTOMATIC" if algorithm is not None else "MANUAL",
        algorithm_identification=identification, display_color=color)


def _source_images(reference_slices: Sequence[SliceHeader]) -> list[Dataset]:
    """One source image per reference slice for highdicom: the slice's plane from its header, identity from its file.

    Every slice gets the first slice's ImageOrientationPatient (the reader grouped slices whose
    orientations agree within :data:`.dicom_series.ORIENTATION_DECIMALS`), as the SEG's frames share one.
    """
    series = {reference.series_instance_uid for reference in reference_slices}
    if len(series) != 1:
        raise DicomError(f"the reference slices come from {len(series)} series; a SEG references one series")
    if any(reference.frame is not None for reference in reference_slices):
        return [_multiframe_source(reference_slices)]
    files: dict[str, Dataset] = {}
    orientation = _decimal_strings(reference_slices[0].orientation)
    thickness = _slice_thickness(reference_slices)
    sources = []
    for reference in reference_slices:
        if reference.path not in files:
            files[reference.path] = _identity_of(reference.path)
        source = Dataset()
        for element in files[reference.path]:
            source.add(element)
        source.SOPInstanceUID = reference.sop_instance_uid
        source.FrameOfReferenceUID = reference.frame_of_reference_uid or ""
        source.Rows, source.Columns = reference.rows, reference.columns
        source.ImageOrientationPatient = orientation
        source.ImagePositionPatient = _decimal_strings(reference.position_lps)
        source.PixelSpacing = _decimal_strings(reference.pixel_spacing)
        source.SliceThickness = thickness
        sources.append(source)
    if not sources[0].FrameOfReferenceUID:
        raise DicomError(f"reference {reference_slices[0].where} has no FrameOfReferenceUID: a SEG must share the "
                         "reference's frame of reference")
    return sources


def _multiframe_source(reference_slices: Sequence[SliceHeader]) -> Dataset:
    """The header of the one multi-frame file whose frames the reference slices are (Type 2 identity filled)."""
    paths = {reference.path for reference in reference_slices}
    if len(paths) != 1:
        raise DicomError(f"the reference slices are frames of {len(paths)} multi-frame files; a SEG on a multi-frame "
                         "reference references one file")
    path = paths.pop()
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as error:
        raise DicomError(f"cannot read reference DICOM file {path}: {error}") from None
    identity = _identity_of(path)
    for keyword in identity.dir():
        if keyword not in header or not header[keyword].value:
            setattr(header, keyword, identity[keyword].value)
    _share_plane(header, reference_slices[0], _slice_thickness(reference_slices))
    return header


def _share_plane(header: Dataset, first: SliceHeader, thickness: float) -> None:
    """Put the slices' orientation and pixel spacing in the copy's shared functional groups (highdicom reads them
    there; some vendors keep them per frame)."""
    if not header.get("SharedFunctionalGroupsSequence"):
        header.SharedFunctionalGroupsSequence = [Dataset()]
    shared = header.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" not in shared:
        orientation = Dataset()
        orientation.ImageOrientationPatient = _decimal_strings(first.orientation)
        shared.PlaneOrientationSequence = [orientation]
    if "PixelMeasuresSequence" not in shared:
        measures = Dataset()
        measures.PixelSpacing = _decimal_strings(first.pixel_spacing)
        measures.SliceThickness = thickness
        shared.PixelMeasuresSequence = [measures]


def _plane_positions(hd, reference_slices: Sequence[SliceHeader]) -> list | None:
    """Each slice's plane position, for a multi-frame reference (highdicom matches the frames by them)."""
    if all(reference.frame is None for reference in reference_slices):
        return None
    return [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT,
                                     [float(value) for value in reference.position_lps])
            for reference in reference_slices]


def _decimal_strings(values) -> list[DSfloat]:
    """Values as DICOM decimal strings (at most 16 characters, as precise as that allows)."""
    return [DSfloat(float(value), auto_format=True) for value in values]


def _slice_thickness(reference_slices: Sequence[SliceHeader]) -> float:
    """SliceThickness of the first slice; else the median gap between the slices (1 mm for a single slice)."""
    thickness = reference_slices[0].attributes.get("slice_thickness")
    if thickness:
        return float(f"{float(thickness):.6g}")
    positions = np.array([reference.position_lps for reference in reference_slices])
    frame = SliceFrame.from_header(reference_slices[0].orientation, reference_slices[0].pixel_spacing)
    gaps = np.abs(np.diff(np.sort(positions @ frame.normal_lps)))
    return float(f"{np.median(gaps):.6g}") if len(gaps) and np.median(gaps) > 0 else 1.0


def _identity_of(path: str) -> Dataset:
    """The patient, study and SOP class attributes of a reference file (Type 2 ones empty when absent)."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(_SOURCE_KEYWORDS))
    except (OSError, pydicom.errors.InvalidDicomError) as error:
        raise DicomError(f"cannot read reference DICOM file {path}: {error}") from None
    identity = Dataset()
    for keyword in _SOURCE_KEYWORDS:
        if keyword in header:
            setattr(identity, keyword, header[keyword].value)
        elif keyword in _TYPE2_IDENTITY:
            setattr(identity, keyword, None)
    if identity.get("PatientIdentityRemoved") == "YES" and not identity.get("DeidentificationMethod") and (
            not identity.get("DeidentificationMethodCodeSequence")):
        identity.DeidentificationMethod = "as the reference series (its method is not recorded)"
    if "SOPClassUID" not in identity or "StudyInstanceUID" not in identity:
        raise DicomError(f"reference {path} has no SOPClassUID or StudyInstanceUID: a SEG cannot reference it")
    return identity


def _add_referenced_frame_numbers(seg: Dataset, reference_slices: Sequence[SliceHeader]) -> None:
    """Name the frame of each multi-frame reference slice in the SEG frames' source references.

    highdicom is given one single-frame source per reference slice; a slice that is a frame of a
    multi-frame file gets its ReferencedFrameNumber here, matched by its plane position.
    """
    if all(reference.frame is None for reference in reference_slices):
        return
    by_position = {_position_key(reference.position_lps): reference for reference in reference_slices}
    for item in seg.PerFrameFunctionalGroupsSequence:
        position = item.PlanePositionSequence[0].ImagePositionPatient
        reference = by_position[_position_key(position)]
        for derivation in item.get("DerivationImageSequence", []):
            # highdicom matched every frame at this position (e.g. magnitude and phase): keep the slice's own
            source = derivation.SourceImageSequence[0]
            source.ReferencedFrameNumber = reference.frame
            derivation.SourceImageSequence = [source]
    seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence = _unique_references(
        seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence)
    if "SourceImageSequence" in seg:
        seg.SourceImageSequence = _unique_references(seg.SourceImageSequence)


def _unique_references(items) -> list[Dataset]:
    seen, unique = set(), []
    for item in items:
        if item.ReferencedSOPInstanceUID not in seen:
            seen.add(item.ReferencedSOPInstanceUID)
            unique.append(item)
    return unique


def _position_key(position) -> tuple[float, ...]:
    return tuple(round(float(value), 3) for value in position)


# -- reading --------------------------------------------------------------------------------------


def is_seg_file(path) -> bool:
    """True when ``path`` is a file whose SOPClassUID is a DICOM Segmentation's (header read only)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (OSError, pydicom.errors.InvalidDicomError, ValueError):
        return False
    return str(header.get("SOPClassUID", "")) in SEG_SOP_CLASSES


def read_seg(path, *, segments: Sequence[int] | None = None) -> SegVolume:
    """Read a DICOM SEG into a label map of segment numbers on the grid its frames define.

    Parameters
    ----------
    path : str or Path
    segments : sequence of int, optional
        Segment numbers to keep (default all); they must not overlap.

    Returns
    -------
    SegVolume

    Raises
    ------
    DicomError
        Not a readable SEG; frames of different orientations; a requested segment it does not have;
        segments that overlap (naming them).
    """
    hd = _highdicom()
    try:
        seg = hd.seg.segread(path)
    except (OSError, ValueError, AttributeError, pydicom.errors.InvalidDicomError) as error:
        raise DicomError(f"{path}: not a readable DICOM SEG ({error})") from None
    seg_type = str(seg.SegmentationType)
    warnings = []
    if seg_type == "FRACTIONAL":
        warnings.append(AlignSeriesWarning("seg_fractional_thresholded", (
            f"{path}: FRACTIONAL segmentation ({seg.get('SegmentationFractionalType', '?')}) thresholded at "
            f"{FRACTIONAL_THRESHOLD:g} of MaximumFractionalValue {seg.MaximumFractionalValue} to make a label map")))
    described = _described_segments(seg)
    chosen = _chosen_segments(path, described, segments)
    frame = _seg_frame(path, seg)
    positions, frame_segments = _frame_planes(seg, seg_type)
    pixels = np.asarray(seg.pixel_array).reshape(len(positions), seg.Rows, seg.Columns)
    planes, plane_of_frame = _distinct_planes(positions, frame.normal_lps)
    stack = np.zeros((len(planes), seg.Rows, seg.Columns), dtype=np.uint16)
    overlaps: dict[tuple[int, int], int] = {}
    for index, plane in enumerate(plane_of_frame):
        _paint(stack[plane], pixels[index], frame_segments[index], seg, set(chosen), overlaps)
    if overlaps:
        pairs = "; ".join(f"segments {a} and {b} ({count} pixels)" for (a, b), count in sorted(overlaps.items()))
        raise DicomError(f"{path}: overlapping segments cannot share one label map: {pairs}; choose segments that "
                         "do not overlap with --segments 1,3,…")
    hint = _functional(seg.SharedFunctionalGroupsSequence[0], "PixelMeasuresSequence", "SpacingBetweenSlices")
    geometry, array, regularized = _place_planes(stack, planes, frame, None if hint is None else float(hint),
                                                 warnings, path)
    for warning in warnings:
        logger.warning("%s", warning.message)
    referenced = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])]
    return SegVolume(array, geometry, [described[number] for number in chosen], seg_type,
                     int(seg.get("NumberOfFrames", 1)), referenced, str(seg.get("FrameOfReferenceUID", "")),
                     str(seg.SeriesInstanceUID), regularized, warnings)


def describe_seg(path) -> dict:
    """The ``alignseries info`` description of a SEG: the volume contract fields plus its segments and references.

    Adds ``seg_type``, ``segments`` (number, label, name, codes, colour), ``referenced_series_uids`` and
    ``seg_frames`` (the SEG's frame count) to the fields of a volume (its label map's grid).
    """
    seg = read_seg(path)
    slices = seg.geometry.dimensions[2]
    info = {"name": f"DICOM SEG {Path(path).name} ({seg.seg_type}, {len(seg.segments)} segments)",
            "series_instance_uid": seg.series_instance_uid, "frame_of_reference_uid": seg.frame_of_reference_uid,
            "files": [str(path)] * slices, "frames": [None] * slices, "sop_instance_uids": [None] * slices,
            "regularized": seg.regularized, "warnings": [w.to_dict() for w in seg.warnings],
            **seg.geometry.to_dict(), "seg_type": seg.seg_type, "segments": [s.to_dict() for s in seg.segments],
            "referenced_series_uids": seg.referenced_series_uids, "seg_frames": seg.frames}
    return explained(info, seg.geometry, regularized=seg.regularized)


def _described_segments(seg) -> dict[int, Segment]:
    segments = {}
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        if number == 0:  # a LABELMAP's background
            continue
        segments[number] = Segment(number, number, str(item.get("SegmentLabel", f"Segment {number}")),
                                   _code_of(item, "SegmentedPropertyCategoryCodeSequence"),
                                   _code_of(item, "SegmentedPropertyTypeCodeSequence"), _rgb_of(item))
    return segments


def _code_of(item: Dataset, keyword: str) -> Code:
    coded = item.get(keyword)
    if not coded:
        return GENERIC_CODE
    return Code(str(coded[0].CodeValue), str(coded[0].CodingSchemeDesignator), str(coded[0].CodeMeaning))


def _rgb_of(item: Dataset) -> tuple[int, int, int] | None:
    if "RecommendedDisplayCIELabValue" not in item:
        return None
    from highdicom.color import CIELabColor

    return CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb(clip=True)


def _chosen_segments(path, described: dict[int, Segment], segments: Sequence[int] | None) -> list[int]:
    if segments is None:
        return sorted(described)
    missing = [number for number in segments if number not in described]
    if missing:
        raise DicomError(f"{path}: --segments asks for {missing}, but the SEG has segments {sorted(described)}")
    return sorted(set(int(number) for number in segments))


def _seg_frame(path, seg) -> SliceFrame:
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = _functional(shared, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _functional(shared, "PixelMeasuresSequence", "PixelSpacing")
    per_frame = seg.PerFrameFunctionalGroupsSequence
    if orientation is None:
        orientations = {tuple(np.round(np.asarray(_functional(item, "PlaneOrientationSequence",
                                                             "ImageOrientationPatient"), float), 4))
                        for item in per_frame}
        if len(orientations) != 1:
            raise DicomError(f"{path}: the SEG's frames have {len(orientations)} orientations; one label map needs one")
        orientation = next(iter(orientations))
    if spacing is None:
        spacing = _functional(per_frame[0], "PixelMeasuresSequence", "PixelSpacing")
    if orientation is None or spacing is None:
        raise DicomError(f"{path}: the SEG has no ImageOrientationPatient or PixelSpacing: it is not in patient space")
    return SliceFrame.from_header(orientation, spacing)


def _functional(group: Dataset, sequence: str, keyword: str):
    items = group.get(sequence)
    return items[0].get(keyword) if items else None


def _frame_planes(seg, seg_type: str) -> tuple[np.ndarray, list[int | None]]:
    """Each frame's ImagePositionPatient (F, 3) and segment number (None for LABELMAP frames)."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    shared_segment = _functional(shared, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
    positions, numbers = [], []
    frames = int(seg.get("NumberOfFrames", 1))
    if len(seg.PerFrameFunctionalGroupsSequence) < frames:
        raise DicomError(f"{seg.filename}: {frames} frames but {len(seg.PerFrameFunctionalGroupsSequence)} "
                         "PerFrameFunctionalGroupsSequence items: corrupt SEG")
    for item in seg.PerFrameFunctionalGroupsSequence[:frames]:  # extra items (a cut-down file) describe no frame
        position = _functional(item, "PlanePositionSequence", "ImagePositionPatient")
        if position is None:
            raise DicomError(f"{seg.filename}: a SEG frame has no ImagePositionPatient")
        positions.append([float(value) for value in position])
        number = _functional(item, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
        numbers.append(None if seg_type == "LABELMAP" else int(number if number is not None else shared_segment))
    return np.array(positions), numbers


def _distinct_planes(positions: np.ndarray, normal_lps: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The distinct positions (within :data:`POSITION_ATOL`) ordered along the normal, and each frame's plane."""
    order = order_along_normal(positions, normal_lps)
    planes: list[np.ndarray] = []
    plane_of_frame = [0] * len(positions)
    for index in order:
        if not planes or np.linalg.norm(positions[index] - planes[-1]) > POSITION_ATOL:
            planes.append(positions[index])
        plane_of_frame[index] = len(planes) - 1
    return np.array(planes), plane_of_frame


def _paint(plane: np.ndarray, pixels: np.ndarray, number: int | None, seg, chosen: set[int],
           overlaps: dict[tuple[int, int], int]) -> None:
    """Write one frame's segment(s) into a label plane, counting overlaps with what is there."""
    if number is None:  # LABELMAP: pixel values are segment numbers
        values = np.where(np.isin(pixels, list(chosen)), pixels, 0).astype(np.uint16)
        plane[values > 0] = values[values > 0]
        return
    if number not in chosen:
        return
    threshold = FRACTIONAL_THRESHOLD * float(seg.MaximumFractionalValue) if seg.SegmentationType == "FRACTIONAL" \
        else 0.5
    inside = pixels >= threshold
    clash = inside & (plane != 0) & (plane != number)
    for other in np.unique(plane[clash]):
        key = (int(min(other, number)), int(max(other, number)))
        overlaps[key] = overlaps.get(key, 0) + int(np.count_nonzero(clash & (plane == other)))
    plane[inside] = number


def _place_planes(stack: np.ndarray, planes: np.ndarray, frame: SliceFrame, spacing_hint: float | None,
                  warnings: list, path) -> tuple[VolumeGeometry, np.ndarray, bool]:
    """The label planes on the grid they define: gaps filled with background, or regularized by nearest slice.

    The grid steps by SpacingBetweenSlices (``spacing_hint``) when every plane lies on it, else by the
    smallest gap between planes; planes that fit neither are regularized.
    """
    shape_ji = stack.shape[1:]
    if len(planes) == 1:
        ijk_to_lps = frame.slice_ijk_to_lps(planes[0], 1.0)
        return VolumeGeometry.from_ijk_to_lps((shape_ji[1], shape_ji[0], 1), ijk_to_lps), stack, False
    report = analyse_stack(planes, frame.normal_lps)
    gaps = report.gaps
    for step in (spacing_hint, float(gaps.min())):
        steps = _grid_steps(planes, report.distances, step)
        if steps is not None:
            array = np.zeros((steps[-1] + 1, *shape_ji), dtype=np.uint16)
            array[steps] = stack
            ijk_to_lps = frame.slice_ijk_to_lps(planes[0], 1.0)
            ijk_to_lps[:3, 2] = (planes[-1] - planes[0]) / steps[-1]
            return VolumeGeometry.from_ijk_to_lps((shape_ji[1], shape_ji[0], len(array)), ijk_to_lps), array, False
    grid = regular_grid(frame, planes, report, shape_ji)
    warnings.append(AlignSeriesWarning("regularized", (
        f"{path}: the SEG's {len(planes)} frame planes are unevenly spaced (gaps {gaps.min():.4g} to "
        f"{gaps.max():.4g} mm, tolerance {POSITION_ATOL} mm): placed on a regular grid of "
        f"{grid.dimensions[2]} slices by nearest slice and pixel")))
    return grid, _nearest_planes(stack, planes, frame, grid), True


def _grid_steps(planes: np.ndarray, distances: np.ndarray, step: float | None) -> np.ndarray | None:
    """Each plane's index on an evenly stepped (possibly sheared) grid of ``step`` mm, or None if one is off it."""
    if step is None or not step > POSITION_ATOL:
        return None
    steps = np.rint(distances / step).astype(int)
    if steps[-1] == 0 or len(np.unique(steps)) != len(steps):
        return None
    predicted = planes[0] + steps[:, None] * ((planes[-1] - planes[0]) / steps[-1])
    return steps if np.max(np.linalg.norm(planes - predicted, axis=1)) <= POSITION_ATOL else None


def _nearest_planes(stack: np.ndarray, planes: np.ndarray, frame: SliceFrame, grid: VolumeGeometry) -> np.ndarray:
    """Each grid voxel takes the label of the nearest source plane's nearest pixel (background outside it)."""
    count_i, count_j, count_k = grid.dimensions
    distances = (planes - planes[0]) @ frame.normal_lps
    i, j = np.meshgrid(np.arange(count_i), np.arange(count_j))
    array = np.zeros((count_k, count_j, count_i), dtype=np.uint16)
    for k in range(count_k):
        points = grid.ijk_to_lps @ np.stack([i.ravel(), j.ravel(), np.full(i.size, k), np.ones(i.size)])
        nearest = int(np.argmin(np.abs(distances - (points[:3, 0] - planes[0]) @ frame.normal_lps)))
        source_ijk = np.linalg.inv(frame.slice_ijk_to_lps(planes[nearest], 1.0)) @ points
        source_i, source_j = np.rint(source_ijk[0]).astype(int), np.rint(source_ijk[1]).astype(int)
        inside = (source_i >= 0) & (source_i < stack.shape[2]) & (source_j >= 0) & (source_j < stack.shape[1])
        values = np.zeros(i.size, dtype=np.uint16)
        values[inside] = stack[nearest, source_j[inside], source_i[inside]]
        array[k] = values.reshape(count_j, count_i)
    return array
