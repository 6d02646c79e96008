"""Write a label map as a DICOM Segmentation (SEG) object, slice for slice with its reference series.

highdicom (imported only by this module and :mod:`.dicom_seg_read`, and only when a SEG is written or read)
builds the object.

Writing (:func:`write_seg`)
---------------------------
A label map on a DICOM reference's own slices (``array_kji[k]`` on reference slice ``k``, as the
DICOM exporter takes it, :mod:`.dicom_export`) becomes one SEG instance:

* one frame per reference slice and segment that holds the segment (empty frames are left out unless
  ``omit_empty_frames=False``); each frame names its reference slice (ReferencedSOPInstanceUID, and
  ReferencedFrameNumber for a frame of a multi-frame reference) and carries that slice's own
  ImagePositionPatient, so tilted, unevenly spaced and unsorted references are exact. The slices'
  plane (orientation, pixel spacing, position, SOPInstanceUID) is taken from the
  :class:`~AlignSeriesLib.dicom.headers.SliceHeader` objects the reader built; the reference files
  are opened once each, only for the patient and study modules and the SOP class;
* ``seg_type="binary"`` (default; what viewers read today): segment numbers are the label values
  when these run 1..N without gaps, else the labels are renumbered 1..N in ascending order (with a
  ``seg_segments_renumbered`` warning); ``"labelmap"`` (Label Map Segmentation Storage, DICOM 2024c,
  highdicom ≥ 0.24): one frame per slice holding the label values themselves, which need not be consecutive;
* segments are described from a :class:`~AlignSeriesLib.label_table.LabelTable` (name, SNOMED CT
  category and type, colour); a label it does not list is "Segment N" with the generic code
  :data:`GENERIC_CODE` and a ``seg_generic_labels`` warning. The algorithm is AUTOMATIC with its
  name and version when ``algorithm`` is given, else MANUAL;
* the new series lies in the reference's Study and FrameOfReference, with new Series and SOP
  Instance UIDs and the reference's patient module.

Reading is :mod:`.dicom_seg_read`.
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

from .. import __version__
from ..errors import AlignSeriesWarning, DicomError, MissingDependencyError
from ..label_table import Code, LabelTable
from .headers import SliceHeader
from .identity import used_uids
from .stack import SliceFrame

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

#: Pip requirement named when highdicom is missing.
HIGHDICOM_REQUIREMENT = "highdicom>=0.24"

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
    hd = import_highdicom()
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
    from .export import SERIES_NUMBER_OFFSET  # the DICOM exporter's numbering (it imports VTK: not for `info`)

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


def import_highdicom():
    """The highdicom module, or :class:`MissingDependencyError` naming the requirement."""
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
        for keyword, uid in used_uids(reference).items():  # anonymized files: the UIDs the scan used
            setattr(source, keyword, uid)
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
    for keyword, uid in used_uids(reference_slices[0]).items():  # anonymized files: the UIDs the scan used
        setattr(header, keyword, uid)
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
    if "SOPClassUID" not in identity:  # the UIDs themselves come from the slice headers (used_uids)
        raise DicomError(f"reference {path} has no SOPClassUID: a SEG cannot reference it")
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
