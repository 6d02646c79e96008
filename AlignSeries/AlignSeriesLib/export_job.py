"""The one export job behind every door: an input node resampled onto a reference and written, all or nothing.

:func:`resample_and_write` is what the command line and the batch runner (through
:func:`AlignSeriesLib.operations.resample_and_export`, which loads paths first), the Python API and the
Slicer module's logic all call. It decides, once and for every door:

* **the world-coordinate rule**: the input is placed by its whole chain of parent transforms, then by the
  registration (moving-to-fixed) transform, each applied exactly once: a registration transform that already
  sits in the input's chain (the panel's "Apply") is not applied again (:func:`input_to_world_ras`). The
  reference grid is taken in world coordinates, its own parent transforms included.
* **the grid**: the whole reference, a slab of its slices, or the part of it the input covers
  (:class:`ExportOptions`);
* **the export source**: DICOM and PNG slices of an irregular reference are sampled from the input at each
  acquired slice's own plane, never from the regularized output (:class:`~AlignSeriesLib.exports.ExportSource`);
* **one DICOM encoding** for the whole export, from the input's value range, so slabs match;
* **the commit**: every output is checked before any work, all are moved into place together, and a job
  that fails leaves neither files nor nodes behind.

Its :class:`ExportResult` remembers these decisions, so more targets can be written later (the API's
``write_dicom``) without searching for the grid again, and carries the input's and the reference's warnings
(skipped files, missing slices) with the resampling's, so nothing is silently partial.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import mrml, mrml_files, resample
from .choices import INTERPOLATIONS
from .errors import AlignSeriesError, AlignSeriesWarning, ProgressCallback
from .exports import ExportSource, ExportTargets, Reference, check_targets, output_grid, write_outputs
from .files import file_stem

logger = logging.getLogger(__name__)

#: Share of a job's progress taken by the resampling; writing the outputs takes the rest.
RESAMPLE_SHARE = 0.9


@dataclass(frozen=True)
class ExportOptions:
    """How the input is resampled, and which part of the reference grid the export covers.

    Attributes
    ----------
    interpolation : {"nearest", "linear", "cubic"}
    labelmap : bool, optional
        Resample label-safe; by default true for a label map node.
    background : float, optional
        Value outside the input; its minimum by default (0 for labels).
    slab : (first, count), optional
        Only reference slices ``first .. first+count-1`` (k from 0 along the normal; for an irregular
        reference, its acquired slices).
    crop_to_overlap : bool
        Only the part of the reference grid that the input covers (for a volume file: there are no
        DICOM slices to align such a grid with).
    """

    interpolation: str = "linear"
    labelmap: bool | None = None
    background: float | None = None
    slab: tuple[int, int] | None = None
    crop_to_overlap: bool = False

    def check_against(self, targets: ExportTargets) -> None:
        """Refuse targets this grid choice cannot give: DICOM or PNG slices of a cropped grid."""
        _check_grid_choice(targets, self.crop_to_overlap)

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise AlignSeriesError(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        if self.slab is not None:
            object.__setattr__(self, "slab", (int(self.slab[0]), int(self.slab[1])))
            if self.crop_to_overlap:
                raise AlignSeriesError("--slab and --crop-to-overlap choose the output grid in two ways: give one")


@dataclass
class ExportResult:
    """What one export job made and decided.

    Attributes
    ----------
    volume_node : vtkMRMLScalarVolumeNode or vtkMRMLLabelMapVolumeNode
        The input on the reference grid (or its slab or overlap), in world coordinates, in the scene.
    reference : Reference
    source : ExportSource
        The input and its world transform, as the job decided them.
    slab : (first, count) or None
    cropped : bool
        The grid is the part of the reference the input covers.
    warnings : list of AlignSeriesWarning
        The input's and the reference's (skipped files, missing slices…), then the resampling's.
    written : list of Path
        Every file written by the job (a DICOM or PNG folder's files each).
    targets : ExportTargets
    """

    volume_node: object
    reference: Reference
    source: ExportSource
    slab: tuple[int, int] | None
    cropped: bool
    warnings: list[AlignSeriesWarning]
    written: list[Path] = field(default_factory=list)
    targets: ExportTargets = field(default_factory=ExportTargets)

    # Slicer's camelCase view, for console users of the module's logic
    volumeNode = property(lambda self: self.volume_node)

    @property
    def outputs(self) -> list[Path]:
        """The main output's files (the volume file, or the DICOM folder's files)."""
        return [path for path in self.written if not self._is_extra(path)]

    @property
    def extras(self) -> list[Path]:
        """The optional pictures beside the main output (PNG slices, fused preview)."""
        return [path for path in self.written if self._is_extra(path)]

    def _is_extra(self, path: Path) -> bool:
        png_folder, preview_file = self.targets.png_folder, self.targets.preview
        path = Path(path).absolute()  # written paths are absolute; the targets may be relative
        return (png_folder is not None and path.parent == Path(png_folder).absolute()) or (
            preview_file is not None and path == Path(preview_file).absolute())

    def write(self, targets: ExportTargets) -> list[Path]:
        """Write the job's volume to more targets, as the job itself would have (same slab, source, encoding).

        Raises
        ------
        AlignSeriesError
            For slice outputs of a cropped grid, and everything :func:`write_outputs` raises.
        """
        _check_grid_choice(targets, self.cropped)
        before = len(mrml.node_warnings(self.volume_node))
        written = write_outputs(self.volume_node, self.reference, targets, self.source, slab=self.slab)
        self.warnings += mrml.node_warnings(self.volume_node)[before:]  # the writers' own (e.g. a SEG's labels)
        return written


def resample_and_write(scene, input_node, reference: Reference, targets: ExportTargets | None = None,
                       options: ExportOptions | None = None, progress: ProgressCallback | None = None, *,
                       transform_node=None, output_node=None) -> ExportResult:
    """Resample ``input_node`` onto ``reference`` and write every target: the whole export job.

    Parameters
    ----------
    scene : vtkMRMLScene
    input_node : vtkMRMLScalarVolumeNode or vtkMRMLLabelMapVolumeNode
        Never modified. Placed in the world by its parent transforms (linear).
    reference : Reference
        The grid in world RAS, and its DICOM series when the outputs are aligned with its slices.
    targets : ExportTargets, optional
        Files to write; none by default (the volume node only).
    options : ExportOptions, optional
    progress : callable, optional
        ``progress(fraction) -> bool`` over the resampling then the writing; True cancels.
    transform_node : vtkMRMLTransformNode, optional
        The registration (moving-to-fixed, input-to-reference) linear transform, applied above the input's
        own chain unless it is already part of it (:func:`input_to_world_ras`).
    output_node : vtkMRMLScalarVolumeNode, optional
        Node that receives the result once everything is written (never the input or the reference);
        a new node by default.

    Returns
    -------
    ExportResult

    Raises
    ------
    AlignSeriesError
        For contradictory choices (checked before any work), and everything resampling and writing raise;
        the scene and the files are then as they were.
    """
    targets = targets or ExportTargets()
    options = options or ExportOptions()
    _check_output_node(output_node, input_node, reference)
    options.check_against(targets)
    labelmap = input_node.IsA("vtkMRMLLabelMapVolumeNode") if options.labelmap is None else options.labelmap
    source = ExportSource(input_node, source_name(input_node), input_to_world_ras(input_node, transform_node),
                          options.interpolation, labelmap, options.background)
    check_targets(reference, targets, source, slab=options.slab)  # before any work
    regularized = reference.series is not None and reference.series.regularized
    grid = output_grid(reference, slab=None if regularized else options.slab)
    input_geometry = mrml.volume_geometry(input_node, world=False)
    if options.crop_to_overlap:
        grid = resample.crop_to_overlap(grid, input_geometry, source.input_to_world_ras)
    resampled = resample.resample_to_geometry(
        mrml.volume_array(input_node, copy=False), input_geometry, grid, source.input_to_world_ras,
        interpolation=options.interpolation, labelmap=labelmap, background=options.background,
        progress=part_of(progress, 0.0, RESAMPLE_SHARE))
    node = mrml.add_volume_node(scene, resampled.array, grid, f"{input_node.GetName()}_resampled",
                                labelmap=labelmap, copy=False)  # a new array: the node takes it
    if labelmap and input_node.GetAttribute(mrml.LABEL_TABLE_ATTRIBUTE):  # label names travel with the labels
        node.SetAttribute(mrml.LABEL_TABLE_ATTRIBUTE, input_node.GetAttribute(mrml.LABEL_TABLE_ATTRIBUTE))
    mismatch = None if transform_node is not None else frame_of_reference_mismatch(input_node, reference)
    node_warnings = [*resampled.warnings, *([mismatch] if mismatch else [])]
    mrml.set_node_warnings(node, node_warnings)  # resample logged its own already
    if mismatch is not None:
        logger.warning("%s", mismatch.message)
    result = ExportResult(node, reference, source, options.slab, options.crop_to_overlap,
                          _input_warnings(input_node, reference) + node_warnings, targets=targets)
    try:
        result.written = result.write(targets)
        if output_node is not None:
            result.volume_node = _moved_into(scene, node, output_node)
    except BaseException:
        mrml.remove_with_helpers(scene, node)  # a failed job leaves the scene as it was
        raise
    mrml_files.mark_derived(result.volume_node, input_node, transform_node)  # never saved over these files
    if progress is not None:
        progress(1.0)
    return result


def input_to_world_ras(input_node, transform_node=None) -> np.ndarray:
    """The input's own RAS to world RAS: its parent chain, then the registration transform, each exactly once.

    A ``transform_node`` that is already in the input's chain (placed there by "Apply") is part of the
    chain and is not applied a second time.

    Raises
    ------
    GeometryError
        If a transform above the input is not linear.
    TransformFileError
        If ``transform_node`` does not hold a linear transform.
    """
    parents_to_world = mrml.parent_to_world_matrix(input_node)
    if transform_node is None:
        return parents_to_world
    if mrml.is_under(input_node, transform_node):
        logger.info("'%s' is already above '%s': applied once, as part of its parents", transform_node.GetName(),
                    input_node.GetName())
        return parents_to_world
    # the transform where it sits: with its own parents, if any (mrml.set_linear_transform keeps it world to world)
    transform_to_world_ras = mrml.parent_to_world_matrix(transform_node) @ mrml.transform_to_parent_matrix(
        transform_node)
    return transform_to_world_ras @ parents_to_world


def source_name(input_node) -> str:
    """The input's stable name: its file's stem, its DICOM series' name, else the node's name."""
    storage = input_node.GetStorageNode()
    if storage is not None and storage.GetFileName():
        return file_stem(storage.GetFileName())
    series = mrml.dicom_series_of(input_node)
    return series.name if series is not None else input_node.GetName()


def frame_of_reference_mismatch(input_node, reference: Reference) -> AlignSeriesWarning | None:
    """A ``frame_of_reference_mismatch`` warning when the input and the reference name different frames.

    Their coordinates then mean nothing to each other without a transform (``transform`` refuses
    such a pair in ``frameOfReference`` mode); None when the frames agree or either is unknown.
    """
    input_uid = mrml.frame_of_reference_uid(input_node)
    reference_uid = (reference.series.frame_of_reference_uid if reference.series is not None
                     else mrml.frame_of_reference_uid(reference.node) if reference.node is not None else None)
    if not input_uid or not reference_uid or input_uid == reference_uid:
        return None
    return AlignSeriesWarning("frame_of_reference_mismatch", (
        f"the input's FrameOfReferenceUID {input_uid} differs from the reference's {reference_uid}, and no "
        "transform was given: the input was placed by its own coordinates, which need not match the "
        "reference's (expected: the same frame, or a transform); give --transform (from landmarks, a REG, "
        "or a centers/moments pre-alignment)"))


def _input_warnings(input_node, reference: Reference) -> list[AlignSeriesWarning]:
    """What was found wrong with the inputs while they were read (skipped files, missing slices), each once."""
    found = [*mrml.node_warnings(input_node), *reference.warnings]
    return [warning for n, warning in enumerate(found) if warning not in found[:n]]


def _check_output_node(output_node, input_node, reference: Reference) -> None:
    if output_node is None:
        return
    if output_node.GetID() == input_node.GetID():
        raise AlignSeriesError("the output volume must differ from the input volume: the input is never modified")
    if output_node.GetID() == _node_id(reference.node):
        raise AlignSeriesError(f"the output volume '{output_node.GetName()}' is the reference volume: choose a new "
                               "output volume (the reference is never modified)")


def _node_id(node) -> str | None:
    return None if node is None else node.GetID()


def _check_grid_choice(targets: ExportTargets, cropped: bool) -> None:
    if cropped and targets.slices:
        raise AlignSeriesError("--crop-to-overlap gives a grid smaller than the reference, with no DICOM slices to "
                               "align with: write a volume file (.nrrd, .nii.gz, .mha) and drop --png")


def _moved_into(scene, node, output_node):
    """``output_node`` given ``node``'s voxels, grid and warnings (``node`` is removed)."""
    mrml.set_volume_array(output_node, mrml.volume_array(node, copy=False), mrml.volume_geometry(node))
    mrml.set_node_warnings(output_node, mrml.node_warnings(node))
    mrml.remove_with_helpers(scene, node)
    return output_node


def part_of(progress: ProgressCallback | None, start: float, end: float) -> ProgressCallback | None:
    """The callback of one step of a job that covers fractions ``start`` to ``end`` of ``progress``."""
    if progress is None:
        return None
    return lambda fraction: progress(start + (end - start) * fraction)
