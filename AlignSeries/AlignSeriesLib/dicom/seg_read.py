"""Read a DICOM Segmentation (SEG) into a label map on the grid its frames define (highdicom).

A SEG (BINARY, LABELMAP, or FRACTIONAL thresholded at :data:`FRACTIONAL_THRESHOLD` with a warning)
becomes a label map whose values are the segment numbers, on the grid its frames define: the frames'
distinct plane positions ordered along the normal, slice gaps (empty frames that were left out)
filled with background when the positions lie on one evenly stepped (possibly sheared) grid. Frames
at uneven positions are placed on a regular orthogonal grid by nearest slice and pixel (a
``regularized`` warning). Overlapping segments cannot share a label map: they are refused, naming
them, unless ``segments`` chooses ones that do not overlap.

Writing is :mod:`.dicom_seg`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..describe import explained
from ..errors import AlignSeriesWarning, DicomError
from ..geometry import VolumeGeometry
from ..label_table import Code, Label, LabelTable
from .file_kinds import inflation_note, unreadable_note
from .seg import GENERIC_CODE, SEG_SOP_CLASSES, Segment, import_highdicom
from .stack import POSITION_ATOL, SliceFrame, analyse_stack, order_along_normal, regular_grid

logger = logging.getLogger(__name__)

#: A FRACTIONAL frame's pixel belongs to the segment when its value is at least this fraction of the maximum.
FRACTIONAL_THRESHOLD = 0.5

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


def is_seg_file(path) -> bool:
    """True when ``path`` is a file whose SOPClassUID is a DICOM Segmentation's (header read only)."""
    path = Path(path)
    if not path.is_file() or unreadable_note(str(path)) or inflation_note(str(path)):
        return False  # the DICOM scan says what the file is
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (OSError, MemoryError, pydicom.errors.InvalidDicomError, ValueError):
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
    hd = import_highdicom()
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
