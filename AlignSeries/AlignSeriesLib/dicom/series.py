"""DICOM series reconstruction: from files and folders to volumes with exact geometry.

:func:`scan_dicom` reads headers only (no pixel data) and returns one :class:`DicomVolume` per
reconstructable volume:

1. Files are grouped by SeriesInstanceUID, then split into *stacks* on what changes the image
   plane: ImageOrientationPatient, Rows/Columns, PixelSpacing, StackID, and localizer ImageType.
2. Within a stack, images that share a position (within ``POSITION_ATOL``) are split into volumes
   by the first attribute that tells them apart (:data:`REPEAT_ATTRIBUTES`: ImageType, GE's complex
   image type, echo, diffusion b-value and direction, temporal position, trigger time, acquisition
   number and time); when none does, in InstanceNumber (or frame) order, with a ``duplicate_positions``
   warning. Each volume's name says what it follows.
3. Each volume's slices are ordered along the slice normal and checked
   (:mod:`AlignSeriesLib.dicom.stack`). An irregular volume (gantry tilt, missing slices,
   non-uniform spacing) is regularized onto an orthogonal grid by default
   (:mod:`AlignSeriesLib.regularize`); with ``regularize=False`` a tilted but evenly spaced volume
   keeps its exact sheared grid and any other irregular volume is refused.

Frames: ``geometry`` is a :class:`AlignSeriesLib.geometry.VolumeGeometry` (RAS and LPS);
``slice_positions_lps`` are the headers' ImagePositionPatient values (LPS, mm). Voxel arrays are
indexed ``[k, j, i]``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import (
    AlignSeriesWarning,
    DicomError,
    GeometryError,
    IrregularSeriesError,
    OperationCancelledError,
    ProgressCallback,
)
from ..files import safe_name
from ..geometry import VolumeGeometry
from ..regularize import resample_stack
from . import pixels as dicom_pixels
from .file_kinds import FileNote, iter_files
from .headers import SliceHeader, read_headers
from .stack import (
    DEFAULT_SINGLE_SLICE_SPACING,
    POSITION_ATOL,
    GridSpacing,
    SliceFrame,
    StackReport,
    analyse_stack,
    choose_grid_spacing,
    header_grid,
    order_along_normal,
    regular_grid,
    stack_warnings,
)

logger = logging.getLogger(__name__)

__all__ = ["DicomVolume", "ScanResult", "scan_dicom"]

#: Header attributes that may tell apart images sharing one position, in the order tried, with the
#: DICOM names used in messages.
REPEAT_ATTRIBUTES = (
    ("image_type", "ImageType"),
    ("complex", "GE image type (0043,102F)"),
    ("echo", "EchoNumbers"),
    ("echo_time", "EchoTime"),
    ("b_value", "DiffusionBValue"),
    ("gradient", "DiffusionGradientOrientation"),
    ("temporal", "TemporalPositionIdentifier"),
    ("trigger", "TriggerTime"),
    ("acquisition_number", "AcquisitionNumber"),
    ("acquisition_time", "AcquisitionTime"),
    ("mosaic_file", "MOSAIC file"),
)

#: Header scans of at least this many files parse them in a pool of processes, one per core (pydicom
#: parses about 0.6 ms a file, in Python); smaller scans stay in this process, where starting workers
#: would cost more than it saves.
PARALLEL_MIN_FILES = 400

#: Files parsed per task of the pool: large enough to amortize the hand-over, small enough for progress.
PARALLEL_CHUNK_FILES = 64

#: Decimals to which ImageOrientationPatient and PixelSpacing are rounded when grouping slices
#: into stacks: slices whose values differ less stay together (header rounding noise).
ORIENTATION_DECIMALS = 3
SPACING_DECIMALS = 4

SliceReader = Callable[["DicomVolume"], np.ndarray]


class DicomVolume:
    """One reconstructable volume: its source slices in k order and the grid that holds them.

    Attributes
    ----------
    name : str
        Series number and description, plus what distinguishes it from the series' other volumes
        ("stack 2", "localizer", "image type M", "echo 2", "phase", "b=1000", "diffusion direction 3",
        "temporal position 3", "InstanceNumber order 2 of 2", "frame order 1 of 2").
    series_instance_uid, study_instance_uid, modality : str
    frame_of_reference_uid : str or None
        The slices' FrameOfReferenceUID (the most common one if they disagree, with a warning).
    geometry : VolumeGeometry
        The grid of :meth:`read_voxels`: the exact header grid, or the orthogonal regularized grid.
    regularized : bool
        True when the grid was resampled from an irregular acquisition.
    warnings : list of AlignSeriesWarning
    slices : list of SliceHeader
        Source slices in k order (along the normal).
    """

    def __init__(self, name: str, slices: Sequence[SliceHeader], report: StackReport, geometry: VolumeGeometry,
                 regularized: bool, warnings: list[AlignSeriesWarning]):
        self.name = name
        self.slices = list(slices)
        self.report = report
        self.geometry = geometry
        self.regularized = regularized
        self.warnings = list(warnings)
        first = self.slices[0]
        self.series_instance_uid = first.series_instance_uid
        self.study_instance_uid = first.study_instance_uid
        self.modality = first.modality
        uids = Counter(s.frame_of_reference_uid for s in self.slices)
        self.frame_of_reference_uid = uids.most_common(1)[0][0]

    def __repr__(self) -> str:
        return f"DicomVolume({self.name!r}, {self.geometry.summary()}, regularized={self.regularized})"

    @property
    def files(self) -> list[str]:
        """Source file of each slice, in k order (a multi-frame file repeats)."""
        return [s.path for s in self.slices]

    @property
    def frames(self) -> list[int | None]:
        """1-based frame number of each slice (None for single-frame files)."""
        return [s.frame for s in self.slices]

    @property
    def sop_instance_uids(self) -> list[str]:
        """SOPInstanceUID of each slice, in k order."""
        return [s.sop_instance_uid for s in self.slices]

    @property
    def instance_numbers(self) -> list[int | None]:
        """InstanceNumber of each slice, in k order (informative only: never used to order)."""
        return [s.instance_number for s in self.slices]

    @property
    def slice_positions_lps(self) -> np.ndarray:
        """(K, 3) ImagePositionPatient of each source slice in k order, LPS mm."""
        return np.array([s.position_lps for s in self.slices])

    @property
    def slice_ijk_to_lps(self) -> np.ndarray:
        """(K, 4, 4) each source slice's own placement: pixel ``(i, j, 0)`` to LPS, from its own header.

        The third column is the unit slice normal. This is the exact, unregularized placement.
        """
        return np.array([SliceFrame.from_header(s.orientation, s.pixel_spacing).slice_ijk_to_lps(s.position_lps, 1.0)
                         for s in self.slices])

    def read_voxels(self, *, regularize: bool = True, read_slices: SliceReader | None = None,
                    max_bytes: int = dicom_pixels.MAX_VOLUME_BYTES,
                    allocate: dicom_pixels.Allocator = np.empty) -> np.ndarray:
        """Read the pixel data (rescaled to modality values).

        Parameters
        ----------
        regularize : bool
            If True (default), return voxels on :attr:`geometry`, interpolated when
            :attr:`regularized`. If False, return the source slices as stored, stacked in k order
            (each placed by :attr:`slice_ijk_to_lps`); for a volume that is not regularized both
            are the same array.
        read_slices : callable, optional
            ``read_slices(volume) -> (K, Rows, Columns)`` array of the source slices in k order;
            default :func:`AlignSeriesLib.dicom.pixels.read_slices` (pydicom).
        max_bytes : int
            Memory limit for the source and the output arrays.
        allocate : callable
            ``allocate(shape, dtype)``: the memory of the result when it is not interpolated (see
            :func:`AlignSeriesLib.dicom.pixels.read_slices`).

        Returns
        -------
        (K, J, I) ndarray
            ``int16`` when exact, else ``float32`` (always ``float32`` when interpolated).

        Raises
        ------
        DicomDecodeError
            If pydicom has no decoder for the files' transfer syntax (and no ``read_slices``).
        DicomError
            If a file cannot be read or the arrays exceed ``max_bytes``.
        """
        resample = regularize and self.regularized
        if resample:
            dicom_pixels.check_memory(self.geometry.shape, np.float32, self.name, max_bytes=max_bytes)
        if read_slices is None:
            source = dicom_pixels.read_slices(self.slices, max_bytes=max_bytes,
                                              allocate=np.empty if resample else allocate)
        else:
            source = read_slices(self)
        if not resample:
            return source
        return resample_stack(source, self.slice_ijk_to_lps, self.geometry)

    def to_info_dict(self) -> dict:
        """The ``alignseries info --json`` description of this volume (DESIGN.md contract)."""
        info = {
            "name": self.name,
            "series_instance_uid": self.series_instance_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "files": self.files,
            "frames": self.frames,
            "sop_instance_uids": self.sop_instance_uids,
            "dimensions": list(self.geometry.dimensions),
            "spacing": self.geometry.spacing.tolist(),
            "ijk_to_ras": self.geometry.ijk_to_ras.tolist(),
            "ijk_to_lps": self.geometry.ijk_to_lps.tolist(),
            "regularized": self.regularized,
            "warnings": [w.to_dict() for w in self.warnings],
        }
        if self.mosaic is not None:  # only for slices cut from Siemens MOSAIC files
            info["mosaic"] = self.mosaic
        return info

    @property
    def mosaic(self) -> dict | None:
        """For slices cut from Siemens MOSAIC files: ``{"tiles", "tile_rows", "tile_columns", "mosaic_rows",
        "mosaic_columns"}`` (tiles = NumberOfImagesInMosaic of each file); None otherwise."""
        tiles = [s.tile for s in self.slices if s.tile is not None]
        return tiles[0].to_info_dict() if tiles else None


@dataclass
class ScanResult:
    """What :func:`scan_dicom` found.

    Attributes
    ----------
    volumes : list of DicomVolume
    skipped : list of (path, reason)
        Files that gave no image, each with a message naming the file and the tag.
    registrations : list of str
        Paths of DICOM Spatial Registration objects (SOP Class 1.2.840.10008.5.1.4.1.1.66.1).
    """

    volumes: list[DicomVolume] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    registrations: list[str] = field(default_factory=list)
    notes: list[FileNote] = field(default_factory=list)

    def skipped_warning(self) -> AlignSeriesWarning | None:
        """All skipped files in one ``skipped_file`` warning ("4 files skipped: 2 DICOMDIR, 2 raw data"), for a
        command to report once; None when no file was skipped."""
        notes = [note for note in self.notes if not note.is_registration]
        return AlignSeriesWarning("skipped_file", skipped_summary(notes)) if notes else None

    def skipped_info(self) -> list[dict]:
        """Each skipped file as ``{"path", "kind", "reason"}`` (JSON)."""
        return [{"path": n.path, "kind": n.kind, "reason": n.reason} for n in self.notes if not n.is_registration]


#: Kinds of skipped files that may be a lost slice of any series (their own series is unknown): they are
#: reported on every volume, where non-image objects of other series are not.
DAMAGE_KINDS = ("corrupt or truncated", "unreadable", "empty", "unusable header", "too large", "no pixel data")

#: Skipped files named one by one in a grouped warning; more are counted.
LISTED_SKIPPED_FILES = 4


def skipped_summary(notes: Sequence[FileNote], *, what: str = "skipped", details: bool = False) -> str:
    """"4 files skipped: 2 DICOMDIR, 2 raw data (a, b, c, d)": counts by kind, then the first files (their
    reasons too with ``details``)."""
    kinds = Counter(note.kind for note in notes)
    counts = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
    listed = [note.reason if details else os.path.basename(note.path) for note in notes[:LISTED_SKIPPED_FILES]]
    more = f"; and {len(notes) - LISTED_SKIPPED_FILES} more" if len(notes) > LISTED_SKIPPED_FILES else ""
    plural = "file" if len(notes) == 1 else "files"
    return f"{len(notes)} {plural} {what}: {counts} ({'; '.join(listed)}{more})"


def scan_dicom(paths, *, regularize: bool = True, progress: ProgressCallback | None = None,
               regularize_spacing: float | None = None) -> ScanResult:
    """Find every reconstructable volume in DICOM files and folders, reading headers only.

    Parameters
    ----------
    paths : str, Path or sequence of them
        Files and folders (searched recursively; hidden files are ignored).
    regularize : bool
        If True (default), irregular volumes get an orthogonal regularized grid. If False, a tilted
        but evenly spaced volume keeps its exact sheared grid and other irregular volumes are refused.
    progress : callable, optional
        Called with the fraction of files read (0..1); returning True cancels.
    regularize_spacing : float, optional, mm
        Spacing along the normal of the regular grid of irregular volumes. Default: the smallest gap
        between adjacent acquired slices (not below a quarter of the median gap), or the usual gap
        when slices are missing (:func:`AlignSeriesLib.dicom.stack.choose_grid_spacing`).

    Returns
    -------
    ScanResult

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    DicomError
        If no image volume is found (the message lists why files were skipped).
    IrregularSeriesError
        If ``regularize`` is False and a volume cannot be placed without resampling.
    GeometryError
        If ``regularize_spacing`` is not a positive number.
    MissingDependencyError
        If a Siemens MOSAIC is met and nibabel is not installed.
    OperationCancelledError
        If ``progress`` returned True.
    """
    if regularize_spacing is not None:
        _check_regularize_spacing(regularize_spacing)
    headers, notes = _read_all(list(iter_files(paths)), progress)
    result = ScanResult(skipped=[(n.path, n.reason) for n in notes if not n.is_registration],
                        registrations=[n.path for n in notes if n.is_registration], notes=notes)
    if not headers:
        raise DicomError(_nothing_found_message(paths, result.skipped))
    refused = []
    for name, slices, warnings in _volume_groups(headers):
        try:
            result.volumes.append(_build_volume(name, slices, warnings, regularize=regularize,
                                                spacing=regularize_spacing))
        except IrregularSeriesError as error:
            refused.append(str(error))
    if refused:
        raise IrregularSeriesError("; ".join(refused))
    _add_skipped_file_warnings(result.volumes, notes)
    _add_duplicate_uid_warnings(result.volumes)
    return result


def _check_regularize_spacing(spacing) -> None:
    if isinstance(spacing, bool) or not isinstance(spacing, int | float) or not np.isfinite(spacing) or spacing <= 0:
        raise GeometryError(f"regularize_spacing must be a positive number of mm, got {spacing!r}")


def _read_all(files, progress: ProgressCallback | None) -> tuple[list[SliceHeader], list[FileNote]]:
    """Every file's headers, in file order: in a process pool for many files (:data:`PARALLEL_MIN_FILES`)."""
    headers: list[SliceHeader] = []
    notes: list[FileNote] = []
    done = 0
    with contextlib.closing(_read_chunks(files)) as chunks:  # closing stops the pool at once on cancel or error
        for chunk in chunks:
            for read in chunk:
                if isinstance(read, FileNote):
                    logger.info("skipped %s", read.reason)
                    notes.append(read)
                else:
                    headers.extend(read)
            done += len(chunk)
            if progress is not None and progress(done / len(files)):
                raise OperationCancelledError(f"DICOM scan cancelled after {done} of {len(files)} files")
    return headers, notes


def _read_chunks(files):
    """Yield the headers of ``files`` in order, in chunks: one file at a time in this process, or pool tasks."""
    workers = _pool_workers(len(files))
    if workers < 2:
        for path in files:
            yield [read_headers(path)]
        return
    from concurrent.futures import ProcessPoolExecutor

    chunks = [files[n:n + PARALLEL_CHUNK_FILES] for n in range(0, len(files), PARALLEL_CHUNK_FILES)]
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
    try:
        yield from pool.map(_read_chunk, chunks)  # in order: the same headers, notes and warnings as serially
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # also on cancel or error: no task left running


def _read_chunk(paths) -> list:
    """Pool task: the headers (or skip notes) of a few files."""
    return [read_headers(path) for path in paths]


def _pool_workers(file_count: int) -> int:
    """Processes for a scan of ``file_count`` files: 1 (this process) for small scans, one per core otherwise."""
    if file_count < PARALLEL_MIN_FILES or multiprocessing.current_process().daemon:
        return 1  # a daemonic process (e.g. a multiprocessing worker) may not start children
    return min(os.cpu_count() or 1, -(-file_count // PARALLEL_CHUNK_FILES))


def _pool_context():
    """Fork on Linux (workers start in milliseconds, with the parser already imported); elsewhere the default
    (spawn on macOS and Windows, where fork is unsafe or absent)."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)


def _nothing_found_message(paths, skipped) -> str:
    shown = [str(p) for p in ([paths] if isinstance(paths, str | os.PathLike) else paths)]
    if not skipped:
        return f"no files found in {', '.join(shown)}: give a folder or files holding a DICOM series"
    reasons = "; ".join(reason for _, reason in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return f"no DICOM image volume found in {', '.join(shown)}: {len(skipped)} file(s) skipped: {reasons}{more}"


def _add_skipped_file_warnings(volumes: list[DicomVolume], notes: list[FileNote]) -> None:
    """One grouped ``skipped_file`` warning on each volume that skipped files concern.

    A file of a series that gave volumes concerns that series' volumes; a damaged file whose series is unknown
    or gave no volume (:data:`DAMAGE_KINDS`: truncated, unreadable, empty …) may be a lost slice of any, and
    concerns every volume. Non-image objects of other series (a DICOMDIR, an SR …) concern none: the scan
    reports them once (:meth:`ScanResult.skipped_warning`). REG objects are not skipped files.
    """
    loaded_series = {volume.series_instance_uid for volume in volumes}
    for volume in volumes:
        own = [n for n in notes if not n.is_registration and n.series_instance_uid == volume.series_instance_uid]
        stray = [n for n in notes if not n.is_registration and n.series_instance_uid not in loaded_series
                 and n.kind in DAMAGE_KINDS]
        if own:
            volume.warnings.append(AlignSeriesWarning(
                "skipped_file", skipped_summary(own, what="left out of this series", details=True)))
        if stray:
            volume.warnings.append(AlignSeriesWarning(
                "skipped_file", skipped_summary(stray, what="found with this series but left out", details=True)))


def _add_duplicate_uid_warnings(volumes: list[DicomVolume]) -> None:
    """Warn on volumes whose SOPInstanceUIDs also name other files (copied files, re-used UIDs)."""
    files_of: dict[str, set] = {}
    for volume in volumes:
        for header in volume.slices:
            files_of.setdefault(header.sop_instance_uid, set()).add(header.path)
    for volume in volumes:
        shared = sorted({h.sop_instance_uid for h in volume.slices if len(files_of[h.sop_instance_uid]) > 1})
        if shared:
            example = sorted(files_of[shared[0]])
            volume.warnings.append(AlignSeriesWarning(
                "duplicate_sop_instance_uid",
                f"{len(shared)} SOPInstanceUID(s) (0008,0018) of this volume also identify other files (expected "
                f"each once), e.g. {shared[0]} in {example[0]} and {example[1]}: copied files or re-used UIDs"))


# -- grouping ------------------------------------------------------------------------------------


def _volume_groups(headers: list[SliceHeader]) -> list[tuple[str, list[SliceHeader], list[AlignSeriesWarning]]]:
    """(name, slices, warnings) of every volume: series, then stacks, then repeated positions."""
    groups = []
    for series in _split(headers, lambda h: h.series_instance_uid).values():
        base = _series_label(series[0])
        stacks = list(_split(series, _stack_key).values())
        stacks.sort(key=lambda stack: (stack[0].is_localizer, min(_instance_order(h) for h in stack)))
        image_stacks = sum(not stack[0].is_localizer for stack in stacks)
        for number, stack in enumerate(stacks, start=1):
            stack_label = _stack_label(stack, number, image_stacks)
            for labels, slices, warnings in _split_repeats(stack, ()):
                groups.append((" ".join(filter(None, (base, stack_label, *labels))), slices, warnings))
    return _unique_names(groups)


def _split(headers: list[SliceHeader], key: Callable) -> dict:
    groups: dict = {}
    for header in headers:
        groups.setdefault(key(header), []).append(header)
    return groups


def _stack_key(header: SliceHeader) -> tuple:
    """What must be equal for two images to belong to one stack of parallel slices."""
    return (header.stack_id, tuple(np.round(header.orientation, ORIENTATION_DECIMALS) + 0.0),
            header.rows, header.columns, tuple(np.round(header.pixel_spacing, SPACING_DECIMALS)),
            header.is_localizer)


def _instance_order(header: SliceHeader) -> tuple:
    """Tie-breaker for naming and for telling repeats apart; never used to order slices in space."""
    number = header.instance_number
    return (number is None, number or 0, header.path, header.frame or 0)


def _series_label(header: SliceHeader) -> str:
    number = "" if header.series_number is None else str(header.series_number)
    label = safe_name(f"{number} {header.series_description}")
    return label or f"series {safe_name(header.series_instance_uid[-12:])}"



def _stack_label(stack: list[SliceHeader], number: int, image_stacks: int) -> str:
    """"localizer", or "stack n" when a series has several (non-localizer) stacks, else ""."""
    if stack[0].is_localizer:
        return "localizer"
    return f"stack {number}" if image_stacks > 1 else ""


def _unique_names(groups: list) -> list:
    seen: Counter = Counter()
    unique = []
    for name, slices, warnings in groups:
        seen[name] += 1
        unique.append((name if seen[name] == 1 else f"{name} ({seen[name]})", slices, warnings))
    return unique


def _split_repeats(headers: list[SliceHeader], labels: tuple) -> list[tuple[tuple, list, list]]:
    """Split images that share positions by the first attribute that tells them apart."""
    clusters = _position_clusters(headers)
    most = max(len(cluster) for cluster in clusters)
    if most == 1:
        return [(labels, headers, [])]
    acquired = sorted(range(len(headers)), key=lambda i: _instance_order(headers[i]))
    for key, _ in REPEAT_ATTRIBUTES:
        values = [_repeat_value(h, key) for h in headers]
        if key == "gradient":  # numbered in acquisition order, not by the vectors' values
            distinct = list(dict.fromkeys(values[i] for i in acquired))
        else:
            distinct = sorted(set(values), key=_sort_key)
        if 1 < len(distinct) <= most:
            return [part for value in distinct for part in _split_repeats(
                [h for h, v in zip(headers, values, strict=True) if v == value],
                labels + (_repeat_label(key, value, distinct),))]
    return _split_by_rank(headers, clusters, labels)


def _position_clusters(headers: list[SliceHeader]) -> list[list[int]]:
    """Indices of the images at each distinct position (within POSITION_ATOL along the normal)."""
    normal = SliceFrame.from_header(headers[0].orientation, headers[0].pixel_spacing).normal_lps
    distances = np.array([h.position_lps @ normal for h in headers])
    order = np.argsort(distances, kind="stable")
    clusters = [[int(order[0])]]
    for previous, index in zip(order[:-1], order[1:], strict=True):
        if distances[index] - distances[previous] > POSITION_ATOL:
            clusters.append([])
        clusters[-1].append(int(index))
    return clusters


def _repeat_value(header: SliceHeader, key: str):
    if key == "mosaic_file":  # each MOSAIC file is one volume (a time point or diffusion direction)
        return None if header.tile is None else header.path
    return header.image_type if key == "image_type" else header.attributes.get(key)


def _sort_key(value) -> tuple:
    return (value is not None, value if isinstance(value, float) else 0.0, str(value))


def _repeat_label(key: str, value, distinct: list) -> str:
    """What a split volume follows, in its name: "image type M", "echo 2", "b=1000", "temporal position 3" …"""
    if key == "image_type":
        common = set.intersection(*(set(v) for v in distinct))
        return "image type " + ("/".join(part for part in value if part not in common) or "/".join(value))
    if value is None:
        return f"no {dict(REPEAT_ATTRIBUTES)[key]}"
    formats = {"echo": "echo {:g}", "echo_time": "TE={:g}", "complex": "{}", "b_value": "b={:g}",
               "temporal": "temporal position {:g}", "trigger": "trigger {:g} ms",
               "acquisition_number": "acquisition {:g}", "acquisition_time": "acquired at {}"}
    if key == "gradient":
        return f"diffusion direction {distinct.index(value) + 1}"
    if key == "mosaic_file":
        return f"MOSAIC file {distinct.index(value) + 1} of {len(distinct)}"
    return formats[key].format(value)


def _split_by_rank(headers: list[SliceHeader], clusters: list[list[int]], labels: tuple) -> list:
    """Last resort: the n-th image at every position goes to volume n, in frame order within one multi-frame
    file, else in InstanceNumber order (file name, then frame, breaking ties)."""
    most = max(len(cluster) for cluster in clusters)
    ranks: list[list[SliceHeader]] = [[] for _ in range(most)]
    for cluster in clusters:
        for rank, index in enumerate(sorted(cluster, key=lambda i: _instance_order(headers[i]))):
            ranks[rank].append(headers[index])
    shared = sum(len(cluster) > 1 for cluster in clusters)
    attributes = ", ".join(name for _, name in REPEAT_ATTRIBUTES)
    order = "frame order" if len({h.path for h in headers}) == 1 and headers[0].frame is not None else (
        "InstanceNumber order")
    warning = AlignSeriesWarning(
        "duplicate_positions",
        f"{shared} of {len(clusters)} slice positions hold up to {most} images (positions closer than "
        f"{POSITION_ATOL} mm along the normal count as one) and no header attribute ({attributes}) tells them "
        f"apart: split into {most} volumes in {order}, the n-th image at each position going to volume n")
    return [(labels + (f"{order} {rank + 1} of {most}",), group, [warning]) for rank, group in enumerate(ranks)]


# -- volumes -------------------------------------------------------------------------------------


def _build_volume(name: str, headers: list[SliceHeader], warnings: list[AlignSeriesWarning], *,
                  regularize: bool, spacing: float | None = None) -> DicomVolume:
    """Order a group's slices along the normal, check them, and choose the grid."""
    frame = SliceFrame.from_header(headers[0].orientation, headers[0].pixel_spacing)
    positions = np.array([h.position_lps for h in headers])
    slices = [headers[i] for i in order_along_normal(positions, frame.normal_lps)]
    positions = np.array([s.position_lps for s in slices])
    report = analyse_stack(positions, frame.normal_lps)
    warnings = warnings + stack_warnings(report, frame) + _series_warnings(slices)
    shape_ji = (slices[0].rows, slices[0].columns)
    if not report.needs_regularization:
        geometry = header_grid(frame, positions, report, shape_ji, _single_slice_spacing(slices[0]))
        return DicomVolume(name, slices, report, geometry, False, warnings)
    if regularize:
        geometry = regular_grid(frame, positions, report, shape_ji, spacing=spacing)
        warnings.append(_regularized_warning(geometry, choose_grid_spacing(report, spacing)))
        return DicomVolume(name, slices, report, geometry, True, warnings)
    if report.is_evenly_spaced:
        geometry = header_grid(frame, positions, report, shape_ji, 0.0)
        return DicomVolume(name, slices, report, geometry, False, warnings)
    raise IrregularSeriesError(
        f"'{name}' ({slices[0].path} and {len(slices) - 1} more) is irregular and regularization is off: "
        + "; ".join(w.message for w in warnings if w.code in ("missing_slices", "nonuniform_spacing"))
        + ". It cannot be placed on one grid without resampling; allow regularization to load it")


def _series_warnings(slices: list[SliceHeader]) -> list[AlignSeriesWarning]:
    warnings = _substitution_warnings(slices)
    frames_of_reference = Counter(s.frame_of_reference_uid for s in slices)
    if len(frames_of_reference) > 1:
        counts = ", ".join(f"{uid} ({count} slices)" for uid, count in frames_of_reference.most_common())
        warnings.append(AlignSeriesWarning("mixed_frame_of_reference",
                                     f"{len(frames_of_reference)} FrameOfReferenceUIDs in one volume (expected 1): "
                                     f"{counts}; the most common one is used"))
    if len(slices) == 1:
        spacing = _single_slice_spacing(slices[0])
        warnings.append(AlignSeriesWarning("single_slice",
                                     f"only 1 slice (at least 2 are needed to measure the slice spacing): "
                                     f"k spacing set to {spacing:g} mm from SpacingBetweenSlices/SliceThickness "
                                     f"(default {DEFAULT_SINGLE_SLICE_SPACING:g} mm)"))
    return warnings


def _substitution_warnings(slices: list[SliceHeader]) -> list[AlignSeriesWarning]:
    """One warning per kind of identifier substitution (anonymized files), with the number of files concerned."""
    files: dict = {}
    for header in slices:
        for substitution in header.substitutions:
            files.setdefault(substitution, set()).add(header.path)
    warnings = []
    for substitution, paths in files.items():
        unknown_frame = substitution.element.startswith("FrameOfReferenceUID")
        count = f"{len(paths)} of {len({header.path for header in slices})} files"
        warnings.append(AlignSeriesWarning(
            "unknown_frame_of_reference" if unknown_frame else "substituted_uid",
            f"{substitution.element} is empty or missing in {count}; used instead: {substitution.used}"))
    return warnings


def _single_slice_spacing(header: SliceHeader) -> float:
    for key in ("spacing_between_slices", "slice_thickness"):
        value = header.attributes.get(key)
        if value is not None and np.isfinite(value) and value > 0:
            return float(value)
    return DEFAULT_SINGLE_SLICE_SPACING


def _regularized_warning(geometry: VolumeGeometry, chosen: GridSpacing) -> AlignSeriesWarning:
    spacing = " x ".join(f"{s:.4g}" for s in geometry.spacing)
    dims = " x ".join(str(n) for n in geometry.dimensions)
    return AlignSeriesWarning(
        "regularized",
        f"resampled onto an orthogonal grid of {dims} voxels, {spacing} mm, covering every source slice; "
        f"{geometry.spacing[2]:.4g} mm along the normal (at most {chosen.spacing:.4g} mm: {chosen.reason}); "
        "linear along the normal between the two bracketing source slices, bilinear in-plane within each "
        "source slice at its true (shifted) position")
