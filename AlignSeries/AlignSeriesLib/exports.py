"""The writing half of the export job: a resampled volume written to files, DICOM slices, PNGs and a preview.

:func:`write_outputs` writes one volume that lies on a :class:`Reference` grid (or a slab of its
slices) to every :class:`ExportTargets` target at once: every output is checked before any is
written, written to a temporary, and moved into place together; missing folders are created and
removed again on failure. DICOM and PNG slices copy the reference's own slices (for an irregular
reference, each sampled on its acquired slice's plane, from the :class:`ExportSource`).

Part of the use-case layer. The whole job, which decides the grid, the source and the transforms
and calls this, is :func:`AlignSeriesLib.export_job.resample_and_write`; front ends call that.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import files, mrml, mrml_files, preview, resample
from .errors import AlignSeriesError, OutputExistsError
from .geometry import VolumeGeometry, lps_to_ras_matrix
from .label_table import LabelTable, label_table_from_json

if TYPE_CHECKING:  # the DICOM modules (and pydicom) are imported by the DICOM targets: a volume file needs none
    from .dicom.export import PixelEncoding
    from .dicom.series import DicomVolume

logger = logging.getLogger(__name__)


@dataclass
class Reference:
    """The grid a volume is resampled onto, and the DICOM series whose slices that grid holds, if any.

    Attributes
    ----------
    name : str
    geometry : VolumeGeometry
        The reference grid in world RAS.
    series : DicomVolume or None
        The scanned DICOM series (slices, files, UIDs) when the reference came from DICOM.
    node : vtkMRMLVolumeNode or None
        The reference's node when it was loaded into the scene (its voxels are read only when needed).
    path : Path or None
        The volume file whose header gave the grid (its voxels are read only when needed).
    """

    name: str
    geometry: VolumeGeometry
    series: DicomVolume | None = None
    node: object = None
    path: Path | None = None

    def voxels(self) -> np.ndarray:
        """The reference's voxels ``[k, j, i]``, read-only (read from its files on first need)."""
        if self.node is not None:
            return mrml.volume_array(self.node, copy=False)
        if self.path is not None:
            return mrml.volume_array(mrml_files.load_volume_file(mrml.new_scene(), self.path))
        if self.series is None:
            raise AlignSeriesError(f"reference '{self.name}' has neither a node nor a DICOM series to read voxels from")
        return self.series.read_voxels()

    @property
    def warnings(self) -> list:
        """What to know about the reference: its DICOM reconstruction's warnings (skipped files, missing slices)."""
        if self.series is not None:
            return list(self.series.warnings)
        return mrml.node_warnings(self.node) if self.node is not None else []


def output_grid(reference: Reference, *, slab: tuple[int, int] | None = None) -> VolumeGeometry:
    """The reference grid, or slices ``FIRST .. FIRST+COUNT-1`` of it (``slab = (first, count)``)."""
    return resample.slab(reference.geometry, *slab) if slab else reference.geometry


@dataclass
class ExportTargets:
    """Where one export writes, and how; every field is optional.

    One more kind of output (e.g. a DICOM SEG aligned with the reference's slices) is one more field here, its
    check in ``_check_targets`` and one more branch in ``_write_targets``, which already has the reference
    slices of the export and their voxels (sampled from the export source on an irregular reference).

    Attributes
    ----------
    volume_file : path, optional
        ``.nrrd``, ``.nii``, ``.nii.gz`` or ``.mha``.
    dicom_folder : path, optional
        A folder for a DICOM series aligned slice for slice with a DICOM reference: new or empty, or
        one holding only earlier slabs of the same series (the new slices are added to it).
    png_folder : path, optional
        A new folder for one PNG per reference DICOM slice, and its ``index.csv``.
    preview : path, optional
        A fused PNG of the reference and the output.
    force : bool
        Replace existing outputs.
    png_window : (center, width), optional
        Window of scalar PNGs; default from the data (:data:`.preview.DEFAULT_WINDOW_PERCENTILES`).
    series_uid : str, optional
        SeriesInstanceUID of the DICOM output; default derived from the reference series UID and the
        input's name (:func:`dicom_export.derived_series_uid`), so that slabs exported separately
        make one series.
    preview_at_ras : (3,) sequence of float, optional
        Point (RAS mm) the preview's three planes cut through; the reference's centre by default.
    compress : bool
        Gzip a ``.nrrd``/``.mha`` volume file (off by default, to keep the job fast: raw files write ten
        times faster); a ``.nii.gz`` file is compressed by its name (:func:`mrml_files.save_node`).
    seg_file : path, optional
        A DICOM Segmentation of a label map, referencing the DICOM reference's slices (:mod:`.dicom_seg`).
    labels : LabelTable, optional
        Names, codes and colours of a label map's labels: the SEG's segments, a ``labels`` column in the PNGs'
        ``index.csv``, and a ``<name>.labels.json`` sidecar of a volume file. By default the table the label
        map node carries (:func:`label_table_of`: from a DICOM SEG or a segmentation).
    seg_type : {"binary", "labelmap"}
    seg_algorithm : (name, version), optional
        The algorithm that made the labels (segments AUTOMATIC; MANUAL without it).
    """

    volume_file: Path | str | None = None
    dicom_folder: Path | str | None = None
    png_folder: Path | str | None = None
    preview: Path | str | None = None
    force: bool = False
    png_window: tuple[float, float] | None = None
    series_uid: str | None = None
    preview_at_ras: tuple[float, float, float] | None = None
    compress: bool = False
    seg_file: Path | str | None = None
    labels: LabelTable | None = None
    seg_type: str = "binary"
    seg_algorithm: tuple[str, str] | None = None

    @classmethod
    def for_output(cls, output=None, **fields) -> ExportTargets:
        """Targets whose main output is ``output``: a DICOM folder when it names one (:func:`is_folder_output`),
        else a volume file; ``fields`` as the attributes."""
        if not output:
            return cls(**fields)
        return cls(dicom_folder=output, **fields) if is_folder_output(output) else cls(volume_file=output, **fields)

    @property
    def slices(self) -> bool:
        """True when a target is aligned slice for slice with the reference's DICOM slices."""
        return bool(self.dicom_folder or self.png_folder or self.seg_file)


@dataclass(frozen=True)
class ExportSource:
    """The input an export was resampled from, and how (decided once, by the export job).

    The DICOM and PNG outputs of an irregular (regularized) reference sample it at each reference
    slice's own plane, and the DICOM encoding is chosen from its value range, the same for every slab.

    Attributes
    ----------
    input_node : vtkMRMLVolumeNode
    name : str
        The input's stable name (its file's, or its DICOM series'), for the DICOM series' description
        and default SeriesInstanceUID: the same for every slab of one input, whatever its node is called.
    input_to_world_ras : (4, 4) ndarray
        The input's own RAS to the reference's world: its parent transforms, then the registration
        transform, each once (:func:`AlignSeriesLib.export_job.input_to_world_ras`).
    interpolation : str
    labelmap : bool
    background : float, optional
    """

    input_node: object
    name: str
    input_to_world_ras: np.ndarray
    interpolation: str = "linear"
    labelmap: bool = False
    background: float | None = None


def write_outputs(volume_node, reference: Reference, targets: ExportTargets, source: ExportSource, *,
                  slab: tuple[int, int] | None = None) -> list[Path]:
    """Write a volume that lies on ``reference``'s grid (or a slab of it) to every target, all or nothing.

    Every output is checked before any is written, written to a temporary beside its destination,
    and all are moved into place together once all are complete: a failure leaves nothing new.

    Parameters
    ----------
    volume_node : vtkMRMLVolumeNode
        On ``output_grid(reference, slab=slab)`` (as the export job made it); for a regularized
        reference, on its whole regularized grid.
    reference : Reference
    targets : ExportTargets
    slab : (first, count), optional
        The reference slices the export covers; all of them by default. For a regularized reference
        they count the acquired slices (the DICOM and PNG outputs).
    source : ExportSource
        The input ``volume_node`` was resampled from: the DICOM and PNG slices of a regularized
        reference are sampled from it, and the DICOM encoding is chosen from its values.

    Returns
    -------
    list of Path
        The files written (a DICOM or PNG folder's files each).
    """
    series_uid = _series_uid(source, reference, targets)
    _check_inputs_spared(volume_node, reference, source, targets)
    merge = _check_targets(reference, targets, slab, series_uid)  # every output checked before any is written
    with files.staged_outputs(force=targets.force, create_folders=True) as staging:
        staged = _write_targets(volume_node, reference, targets, slab, staging,
                                _SliceExport(source, series_uid, merge))
        return [staging.final_path(path) for path in staged]


def check_targets(reference: Reference, targets: ExportTargets, source: ExportSource, *,
                  slab: tuple[int, int] | None = None) -> None:
    """Refuse an export before any work (outputs that exist or would touch an input, slices that do not fit);
    written outputs are checked again by :func:`write_outputs`."""
    _check_inputs_spared(None, reference, source, targets)
    _check_targets(reference, targets, slab, _series_uid(source, reference, targets))


def _check_inputs_spared(volume_node, reference: Reference | None, source: ExportSource | None,
                         targets: ExportTargets) -> None:
    """Refuse outputs that touch a file or DICOM folder the export was made from (as ``files`` checks it)."""
    nodes = (volume_node, source.input_node if source else None, reference.node if reference else None)
    series_files = reference.series.files if reference is not None and reference.series is not None else []
    reference_file = reference.path if reference is not None else None
    files.check_outputs_spare_inputs(
        files.protected_places([reference_file, *series_files, *mrml_files.source_paths(*nodes)]),
        (targets.volume_file, targets.dicom_folder, targets.png_folder, targets.preview))


@dataclass
class _SliceExport:
    source: ExportSource
    series_uid: str | None
    merge_dicom: bool


def _series_uid(source: ExportSource, reference: Reference, targets: ExportTargets) -> str | None:
    """The export's SeriesInstanceUID: given, or derived from the reference series and the input's name."""
    if not targets.dicom_folder or reference.series is None:
        return None
    from .dicom import export as dicom_export

    return targets.series_uid or dicom_export.derived_series_uid(reference.series.series_instance_uid,
                                                                 source.name)


def _check_targets(reference: Reference, targets: ExportTargets, slab: tuple[int, int] | None,
                   series_uid: str | None = None) -> bool:
    """Refuse an export before anything is written; True when the DICOM folder gets slices added to its series."""
    merge = False
    for folder in (targets.dicom_folder, targets.png_folder):
        if folder:
            slices = _reference_slices(reference, slab, folder)
            if folder == targets.dicom_folder and _holds_slabs_of(Path(folder), series_uid):
                _check_slab_names(Path(folder), slices, targets.force)
                merge = True
            elif Path(folder).is_dir() and any(Path(folder).iterdir()):
                if not targets.force:
                    raise OutputExistsError(f"output folder {folder} is not empty; use --force to replace it")
                from .dicom.export import check_replaceable_folder

                check_replaceable_folder(folder)
    if targets.volume_file and slab and reference.series is not None and reference.series.regularized:
        raise AlignSeriesError(f"--slab of the irregular reference '{reference.name}' counts its acquired slices, "
                               "which a volume file cannot hold: write DICOM or PNG slices, or drop --slab")
    if targets.seg_file:
        _reference_slices(reference, slab, targets.seg_file)
    sidecar = labels_sidecar_path(targets.volume_file) if targets.volume_file else None
    for path in (targets.volume_file, targets.preview, targets.seg_file, sidecar):
        if path and Path(path).exists() and not targets.force:
            raise OutputExistsError(f"output exists, not overwritten (use --force): {path}")
    return merge


def _holds_slabs_of(folder: Path, series_uid: str | None) -> bool:
    """True when ``folder`` holds DICOM files only, all of series ``series_uid`` (earlier slabs of this export)."""
    if series_uid is None or not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    if not entries or any(entry.suffix.lower() != ".dcm" or not entry.is_file() for entry in entries):
        return False
    import pydicom

    try:
        return all(pydicom.dcmread(entry, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).get(
            "SeriesInstanceUID") == series_uid for entry in entries)
    except (OSError, pydicom.errors.InvalidDicomError):
        return False


def _check_slab_names(folder: Path, slices: Sequence, force: bool) -> None:
    from .dicom.export import dicom_slice_name

    taken = [name for name in map(dicom_slice_name, slices) if (folder / name).exists()]
    if taken and not force:
        raise OutputExistsError(f"output folder {folder} already holds {len(taken)} of these slices (e.g. {taken[0]}); "
                                "use --force to replace them")


def _write_targets(volume_node, reference: Reference, targets: ExportTargets, slab: tuple[int, int] | None,
                   staging: files.StagedOutputs, export: _SliceExport) -> list[Path]:
    """Write every target into ``staging``; returns the staged paths."""
    written = []
    labelmap = volume_node.IsA("vtkMRMLLabelMapVolumeNode")
    table = _labels(volume_node, targets)
    if targets.volume_file:
        written.append(mrml_files.save_node(volume_node, staging.file(targets.volume_file), force=True,
                                            compress=targets.compress))
        if table is not None:  # the label names travel beside the voxels
            sidecar = staging.file(labels_sidecar_path(targets.volume_file))
            sidecar.write_text(table.to_json(), encoding="utf-8")
            written.append(sidecar)
    first_k = (slab or (0, 0))[0]
    if targets.slices:
        from .dicom import export as dicom_export

        slices = _reference_slices(reference, slab, targets.dicom_folder or targets.png_folder or targets.seg_file)
        array = _slice_array(volume_node, reference, slab, export.source)
    if targets.seg_file:
        written.append(_write_seg(array, slices, volume_node, targets, staging.file(targets.seg_file)))
    if targets.dicom_folder:
        folder = staging.folder(targets.dicom_folder, merge=export.merge_dicom)
        description, timestamp = _existing_series(targets, export)
        written += dicom_export.write_dicom_files(
            array, slices, folder,
            series_description=description or f"{export.source.name} (AlignSeries)",
            labelmap=labelmap, encoding=_whole_export_encoding(export.source, labelmap),
            series_instance_uid=export.series_uid, series_timestamp=timestamp, first_k=first_k)
    if targets.png_folder:
        window = None if targets.png_window is None else _window_of_center_width(*targets.png_window)
        written += dicom_export.write_png_files(array, slices, staging.folder(targets.png_folder), labelmap=labelmap,
                                                window=window, first_k=first_k,
                                                label_names=None if table is None else table.name_of)
    if targets.preview:
        written.append(_write_preview(volume_node, reference, targets, staging.file(targets.preview), table))
    return written


def label_table_of(node) -> LabelTable | None:
    """The label table a label map node carries (from a DICOM SEG or a segmentation), or None."""
    text = node.GetAttribute(mrml.LABEL_TABLE_ATTRIBUTE) if node is not None else None
    return label_table_from_json(text, node.GetName()) if text else None


def _labels(volume_node, targets: ExportTargets) -> LabelTable | None:
    if not volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        return None
    return targets.labels if targets.labels is not None else label_table_of(volume_node)


def labels_sidecar_path(volume_file) -> Path:
    """``<folder>/<stem>.labels.json`` beside a volume file (``mask.nii.gz`` → ``mask.labels.json``)."""
    return Path(volume_file).with_name(f"{files.file_stem(volume_file)}.labels.json")


def _write_seg(array: np.ndarray, slices: Sequence, volume_node, targets: ExportTargets, path: Path) -> Path:
    if not volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise AlignSeriesError(f"{targets.seg_file}: a DICOM SEG holds a label map; resample the input as one "
                               "(--labelmap, a label map node or a segmentation)")
    from .dicom.seg import write_seg

    written = write_seg(array, slices, path, labels=_labels(volume_node, targets), seg_type=targets.seg_type,
                        algorithm=targets.seg_algorithm,
                        series_description=f"{volume_node.GetName()} (AlignSeries SEG)")
    mrml.set_node_warnings(volume_node, [*mrml.node_warnings(volume_node), *written.warnings])
    return path


def _write_preview(volume_node, reference: Reference, targets: ExportTargets, path: Path,
                   table: LabelTable | None = None) -> Path:
    """The fused picture of the volume and the reference voxels of its grid (a part of the reference's grid)."""
    grid = mrml.volume_geometry(volume_node)
    i, j, k = (int(index) for index in np.rint(reference.geometry.world_to_ijk(grid.origin_ras)))
    columns, rows, slices = grid.dimensions
    reference_voxels = reference.voxels()[k:k + slices, j:j + rows, i:i + columns]
    return preview.write_fusion_png(
        reference_voxels, mrml.volume_array(volume_node), grid, path, force=True,
        names=(reference.name, volume_node.GetName()), at_ras=targets.preview_at_ras,
        labelmap=volume_node.IsA("vtkMRMLLabelMapVolumeNode"), label_names=None if table is None else table.name_of)


def _window_of_center_width(center: float, width: float) -> tuple[float, float]:
    if not width > 0:
        raise AlignSeriesError(f"--png-window: the width must be positive, got {width}")
    return float(center) - float(width) / 2, float(center) + float(width) / 2


def _existing_series(targets: ExportTargets, export: _SliceExport) -> tuple[str | None, datetime.datetime | None]:
    """SeriesDescription and SeriesDate/Time of the slabs already in the folder, so that an added slab keeps them."""
    if not export.merge_dicom or targets.dicom_folder is None:
        return None, None
    import pydicom

    first = next(Path(targets.dicom_folder).glob("*.dcm"))
    header = pydicom.dcmread(first, stop_before_pixels=True,
                             specific_tags=["SeriesDescription", "SeriesDate", "SeriesTime"])
    try:
        timestamp = datetime.datetime.strptime(f"{header.SeriesDate}{str(header.SeriesTime)[:6]}", "%Y%m%d%H%M%S")
    except (AttributeError, ValueError):
        timestamp = None
    return header.get("SeriesDescription"), timestamp


def _whole_export_encoding(source: ExportSource, labelmap: bool) -> PixelEncoding:
    """One DICOM encoding for the whole export: from the input's value range and type (and the background).

    Resampling keeps values within the input's range and the background (cubic output is clamped),
    so every slab of one input gets the same encoding.
    """
    values = mrml.volume_array(source.input_node, copy=False)
    low, high = float(np.min(values)), float(np.max(values))
    if source.background is not None:
        low, high = min(low, float(source.background)), max(high, float(source.background))
    elif labelmap:
        low = min(low, 0.0)
    from .dicom.export import pixel_encoding

    return pixel_encoding(values, labelmap=labelmap, value_range=(low, high),
                          integer=values.dtype.kind in "biu" or labelmap)


def _slice_array(volume_node, reference: Reference, slab: tuple[int, int] | None,
                 source: ExportSource) -> np.ndarray:
    """The voxels of the exported reference slices ``[k, j, i]``.

    On a regular reference: the volume's own voxels. On a regularized one: the input sampled at each
    acquired slice's own plane (its ImagePositionPatient, ImageOrientationPatient, PixelSpacing).
    """
    if reference.series is None or not reference.series.regularized:
        return mrml.volume_array(volume_node)
    first, count = slab or (0, len(reference.series.slices))
    input_array = mrml.volume_array(source.input_node, copy=False)
    input_geometry = mrml.volume_geometry(source.input_node, world=False)
    planes = []
    for slice_ijk_to_lps, header in zip(reference.series.slice_ijk_to_lps[first:first + count],
                                        reference.series.slices[first:first + count], strict=True):
        plane = VolumeGeometry((header.columns, header.rows, 1), lps_to_ras_matrix(slice_ijk_to_lps))
        planes.append(resample.resample_to_geometry(
            input_array, input_geometry, plane, source.input_to_world_ras, interpolation=source.interpolation,
            labelmap=source.labelmap, background=source.background).array[0])
    return np.stack(planes)


def _reference_slices(reference: Reference, slab: tuple[int, int] | None, path) -> Sequence:
    """The reference DICOM slices of a slab, in k order, or why there are none."""
    if reference.series is None:
        raise AlignSeriesError(f"{path}: DICOM slices, PNGs and SEGs are aligned with a DICOM reference series; "
                               "the reference was not loaded from DICOM files")
    slices = reference.series.slices
    first, count = slab or (0, len(slices))
    if not (0 <= first and count >= 1 and first + count <= len(slices)):
        raise AlignSeriesError(f"{path}: slab of {count} slices from slice {first} does not fit the reference "
                               f"'{reference.name}' of {len(slices)} acquired slices")
    return slices[first:first + count]


def is_folder_output(path) -> bool:
    """True when a command-line output path names a folder (it ends in ``/`` or exists as one)."""
    return str(path).endswith(("/", "\\")) or Path(path).is_dir()
