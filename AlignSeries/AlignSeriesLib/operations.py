"""The jobs users run, shared by the Slicer module's logic, the command line, the batch runner and the API.

Each function is one use case over MRML nodes (:mod:`AlignSeriesLib.mrml`, the bridge) and the core:
load, describe, compute a transform (geometry or landmarks), resample, and export to a volume file,
a DICOM folder, PNGs or a fused preview. A front end parses its own input (widgets, arguments,
a manifest row), calls one of these, and shows the result; so every front end gains every option
at once.

Data moves forward once. A DICOM series is scanned once, into a
:class:`~AlignSeriesLib.dicom.series.DicomVolume`; a reference used only as a grid is read header-only
(:func:`load_reference`), and the exporters take that object with the slab they write.

Progress callbacks have one polarity throughout: ``progress(fraction) -> bool``, returning True cancels
(:class:`~AlignSeriesLib.errors.OperationCancelledError`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import files, landmarks, mrml, mrml_files, registration, registration_measures
from .describe import describe_dicom, summary_line, volume_file_info
from .errors import (
    AlignSeriesError,
    AlignSeriesWarning,
    LandmarkError,
    ProgressCallback,
    TransformFileError,
)
from .export_job import ExportOptions, ExportResult, part_of, resample_and_write
from .exports import ExportTargets, Reference
from .files import file_stem, is_volume_file
from .geometry import VolumeGeometry, moving_ijk_to_fixed_ijk
from .label_table import LabelTable, read_label_table

if TYPE_CHECKING:  # DICOM modules (and pydicom) are imported on the DICOM paths only: a volume file job needs none
    from .dicom.reg import SeriesReference
    from .dicom.series import DicomVolume

logger = logging.getLogger(__name__)


# -- loading --------------------------------------------------------------------------------------


def load_volumes(scene, paths, *, labelmap: bool | None = None, regularize: bool = True,
                 regularize_spacing: float | None = None, progress: ProgressCallback | None = None,
                 chosen: tuple[int | None, str] | None = None, include_segs: bool = False) -> list:
    """Load every volume that ``paths`` hold: one volume file, or DICOM folders and files.

    Parameters
    ----------
    scene : vtkMRMLScene
    paths : str, Path or list of them
        A volume file (``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``, ``.seg.nrrd``), or DICOM folders/files.
    labelmap : bool, optional
        Load volume files as label maps (``.seg.nrrd`` always is).
    regularize : bool
        Resample irregular DICOM series onto a regular grid (else refuse them).
    regularize_spacing : float, optional
        Spacing (mm) along the normal of a regularized grid; by default the smallest acquired gap.
    progress : callable, optional
        ``progress(fraction) -> bool`` during the DICOM header scan; True cancels.
    chosen : (index, role), optional
        Load only volume number ``index`` (1-based; None: the only one) of those found, as
        :func:`load_one_volume` does; the others are never read.
    include_segs : bool
        Also load the DICOM SEG files found among the DICOM files, as label maps (:func:`load_seg`),
        after the volumes. A single SEG file given alone is always loaded.

    Returns
    -------
    list of vtkMRMLScalarVolumeNode
        One per volume, with its DICOM series kept (:func:`mrml.dicom_series_of`).
    """
    paths = _as_paths(paths)
    if _is_one_volume_file(paths):
        if chosen is not None:
            _chosen_index([file_stem(paths[0])], *chosen)
        return [mrml_files.load_volume_file(scene, paths[0], labelmap=labelmap)]
    from .dicom import seg_read as dicom_seg_read
    from .dicom.series import scan_dicom

    if len(paths) == 1 and dicom_seg_read.is_seg_file(paths[0]):
        if chosen is not None:
            _chosen_index([file_stem(paths[0])], *chosen)
        return [load_seg(scene, paths[0])]
    scan = scan_dicom(paths, regularize=regularize, regularize_spacing=regularize_spacing, progress=progress)
    segs = [path for path, _ in scan.skipped if include_segs and dicom_seg_read.is_seg_file(path)]
    skipped = scan.skipped_warning()
    if skipped is not None:  # once, grouped, whatever the number of volumes
        logger.warning("%s", skipped.message)
    volumes = scan.volumes
    if chosen is not None:
        volumes = [volumes[_chosen_index([volume.name for volume in volumes], *chosen)]]
    return ([mrml.load_dicom_volume(scene, volume, registrations=scan.registrations) for volume in volumes]
            + [load_seg(scene, path) for path in segs])


def load_seg(scene, path, *, segments=None):
    """Load a DICOM SEG as a label map node on the grid its frames define (:func:`.dicom_seg_read.read_seg`).

    The node keeps the SEG's segment names (:func:`.exports.label_table_of`) and the reader's warnings.
    """
    from .dicom.seg_read import read_seg

    seg = read_seg(path, segments=segments)
    node = mrml.add_volume_node(scene, seg.array, seg.geometry, file_stem(path), labelmap=True, copy=False)
    node.SetAttribute(mrml.LABEL_TABLE_ATTRIBUTE, seg.label_table().to_json())
    if seg.frame_of_reference_uid:
        node.SetAttribute(mrml.FRAME_OF_REFERENCE_ATTRIBUTE, seg.frame_of_reference_uid)
    mrml.set_node_warnings(node, seg.warnings)
    return node


def load_one_volume(scene, paths, *, index: int | None = None, role: str = "--input",
                    labelmap: bool | None = None, progress: ProgressCallback | None = None):
    """Load ``paths`` and return the one volume they hold, or volume number ``index`` (1-based) of several.

    Raises
    ------
    AlignSeriesError
        If ``paths`` hold no volume, or several and ``index`` does not choose one; the message
        lists the volumes found.
    """
    return load_volumes(scene, paths, labelmap=labelmap, progress=progress, chosen=(index, role))[0]


def load_reference(scene, paths, *, index: int | None = None, role: str = "--reference") -> Reference:
    """Load a reference used as a grid, header-only: a DICOM series, or a volume file (Slicer's reader).

    Raises
    ------
    AlignSeriesError
        As :func:`load_one_volume`.
    """
    paths = _as_paths(paths)
    if _is_one_volume_file(paths):
        return Reference(file_stem(paths[0]), mrml_files.read_volume_file_geometry(paths[0]), path=paths[0])
    from .dicom.series import scan_dicom

    volumes = scan_dicom(paths).volumes
    series = volumes[_chosen_index([volume.name for volume in volumes], index, role)]
    return Reference(series.name, series.geometry, series)


def reference_of_node(volume_node) -> Reference:
    """The reference that a volume node in the scene gives (its world grid, its DICOM series if any)."""
    return Reference(volume_node.GetName(), mrml.volume_geometry(volume_node), mrml.dicom_series_of(volume_node),
                     volume_node)


def _chosen_index(names: list[str], index: int | None, role: str) -> int:
    if index is not None:
        if not 1 <= index <= len(names):
            raise AlignSeriesError(f"{role}: volume {index} requested, but {len(names)} found")
        return index - 1
    if len(names) != 1:
        listing = "; ".join(f"[{n}] {name}" for n, name in enumerate(names, start=1))
        raise AlignSeriesError(f"{role} holds {len(names)} volumes ({listing}): choose one with {role}-volume N")
    return 0


def _as_paths(paths) -> list[Path]:
    """One path or a sequence of them, as a list of Paths."""
    return [Path(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]


def _is_one_volume_file(paths: list[Path]) -> bool:
    if len(paths) == 1 and is_volume_file(paths[0]):
        return True
    if any(is_volume_file(p) for p in paths):
        raise AlignSeriesError(f"give one volume file or DICOM folders/files, not a mix: {[str(p) for p in paths]}")
    return False


# -- describing -----------------------------------------------------------------------------------


def describe_inputs(paths, *, regularize: bool = True, regularize_spacing: float | None = None,
                    progress: ProgressCallback | None = None) -> list[dict]:
    """What ``alignseries info`` reports for each volume that ``paths`` hold (DICOM: headers only).

    Volume files are described in the order given; all DICOM paths are scanned together, at the
    first one's place. See :mod:`AlignSeriesLib.describe` for the fields.
    """
    paths = _as_paths(paths)
    dicom_paths = [path for path in paths if not is_volume_file(path)]
    described = []
    for path in paths:
        if is_volume_file(path):  # header only
            described.append(volume_file_info(path, file_stem(path), mrml_files.read_volume_file_geometry(path)))
        elif path == dicom_paths[0]:
            described += describe_dicom(dicom_paths, regularize=regularize, regularize_spacing=regularize_spacing,
                                        progress=progress)
    return described


def describe_volume_node(volume_node) -> str:
    """One line for a person: dimensions, spacing, orientation, frame of reference, warnings."""
    try:
        geometry = mrml.volume_geometry(volume_node, world=False)
    except AlignSeriesError as error:
        return str(error)
    return summary_line(geometry, mrml.frame_of_reference_uid(volume_node), mrml.node_warnings(volume_node))


# -- transforms -----------------------------------------------------------------------------------


@dataclass
class TransformResult:
    """A computed moving-to-fixed transform, the node that holds it, and what tells how good it is.

    The one result of :func:`compute_geometry_transform` and :func:`compute_landmark_transform`, for
    every front end; Slicer users read it in camelCase (``transformNode``, ``rmsError``, ``residuals``…).

    Attributes
    ----------
    transform_node : vtkMRMLLinearTransformNode
    mode : str
    moving_to_fixed_ras : (4, 4) ndarray
    moving_ijk_to_fixed_ijk : (4, 4) ndarray or None
        Voxel-to-voxel matrix (geometry modes, when both volumes are known).
    explanation : str
        How the transform was obtained, in one sentence.
    warnings : list of AlignSeriesWarning
    rms_error, residuals, labels, leave_one_out_errors
        Landmark modes only: mm, per pair in the fixed list's order.
    target_registration_error : float or None
        Landmark modes only: expected error (mm, Fitzpatrick's model) at ``target_ras``.
    target_ras : (3,) ndarray or None
        Where that error is estimated: the fixed volume's center, or the fixed points' centroid.
    refinement : RegistrationReport or None
        When refined by image intensity: the initial and refined transforms, how far it moved, the
        optimizer's end, the overlap and the warnings (:class:`registration.RegistrationReport`).
    """

    transform_node: object
    mode: str
    moving_to_fixed_ras: np.ndarray
    moving_ijk_to_fixed_ijk: np.ndarray | None = None
    explanation: str = ""
    warnings: list[AlignSeriesWarning] = field(default_factory=list)
    rms_error: float | None = None
    residuals: np.ndarray | None = None
    labels: list[str] = field(default_factory=list)
    leave_one_out_errors: np.ndarray | None = None
    target_registration_error: float | None = None
    target_ras: np.ndarray | None = None
    refinement: registration.RegistrationReport | None = None

    # Slicer's camelCase view (the console contract of DESIGN.md)
    transformNode = property(lambda self: self.transform_node)
    movingToFixedRas = property(lambda self: self.moving_to_fixed_ras)
    movingIjkToFixedIjk = property(lambda self: self.moving_ijk_to_fixed_ijk)
    rmsError = property(lambda self: self.rms_error)
    leaveOneOutErrors = property(lambda self: self.leave_one_out_errors)
    targetRegistrationError = property(lambda self: self.target_registration_error)

    def to_dict(self) -> dict:
        """The JSON fields of ``alignseries transform`` / ``landmarks`` (arrays as arrays; the CLI lists them)."""
        document: dict[str, object] = {"mode": self.mode, "moving_to_fixed_ras": self.moving_to_fixed_ras,
                                       "warnings": [warning.to_dict() for warning in self.warnings]}
        if self.moving_ijk_to_fixed_ijk is not None:
            document |= {"moving_ijk_to_fixed_ijk": self.moving_ijk_to_fixed_ijk,
                         "fixed_ijk_to_moving_ijk": np.linalg.inv(self.moving_ijk_to_fixed_ijk),
                         "explanation": self.explanation}
        if self.rms_error is not None:
            document |= {"rms_error_mm": self.rms_error, "residuals_mm": self.residuals, "labels": list(self.labels),
                         "leave_one_out_errors_mm": self.leave_one_out_errors,
                         "target_registration_error_mm": self.target_registration_error,
                         "target_ras": self.target_ras}
        if self.refinement is not None:
            document["refinement"] = self.refinement.to_dict()
        return document

    def save(self, path, *, force: bool = False) -> Path:
        """Write the transform to a file chosen by suffix (see :func:`write_transform`)."""
        return write_transform(self.transform_node, path, force=force)


def compute_geometry_transform(scene, fixed_node, moving_node, mode: str, *, registrations=(),
                               transform_node=None, refine: RefineRequest | str | None = None) -> TransformResult:
    """Moving-to-fixed transform from the two volumes' geometry, stored in a transform node.

    World coordinates throughout: the transform maps the moving volume's world RAS (where its chain of
    parent transforms shows it; ``transform_node`` itself left out when it already sits in that chain)
    to the fixed volume's world RAS, so that placing it above the moving volume's chain
    (:func:`apply_transform`) lines the two up. "centers" and "moments" compare the two world grids;
    "frameOfReference" relates the volumes' own coordinates (identity, or a REG's matrix ``R``), so the
    world transform is ``fixed_to_world @ R @ inv(moving_to_world)``.

    Parameters
    ----------
    scene : vtkMRMLScene
    fixed_node, moving_node : vtkMRMLScalarVolumeNode
    mode : {"frameOfReference", "centers", "moments"}
    registrations : iterable of path or SpatialRegistration
        DICOM REG objects that may relate the two frames of reference ("frameOfReference" mode);
        the REG files found beside the volumes' DICOM files are searched too.
    transform_node : vtkMRMLLinearTransformNode, optional
        Node to update; a new node is created when omitted.
    refine : RefineRequest or {"rigid", "affine"}, optional
        Refine the transform by image intensity afterwards (:func:`refine_transform`).

    Raises
    ------
    FrameOfReferenceError
        In "frameOfReference" mode, when the frames differ (or are unknown) and no REG relates them.
    OperationCancelledError
        When a refinement was cancelled (no transform node is made or changed).
    """
    fixed_to_world_ras = mrml.parent_to_world_matrix(fixed_node, below=transform_node)
    moving_to_world_ras = mrml.parent_to_world_matrix(moving_node, below=transform_node)
    fixed_geometry = mrml.volume_geometry(fixed_node, world=False)
    moving_geometry = mrml.volume_geometry(moving_node, world=False)
    if mode != "frameOfReference":
        fixed_geometry = fixed_geometry.transformed(fixed_to_world_ras)
        moving_geometry = moving_geometry.transformed(moving_to_world_ras)
    arrays = {}
    if mode == "moments":
        arrays = {"fixed_array_kji": mrml.volume_array(fixed_node, copy=False),
                  "moving_array_kji": mrml.volume_array(moving_node, copy=False)}
    known_registrations = (list(registrations) + mrml.registration_files(fixed_node)
                           + mrml.registration_files(moving_node))
    from .alignment import align_geometries  # its DICOM REG reader imports pydicom

    result = align_geometries(
        mode, fixed_geometry, moving_geometry, fixed_for_uid=mrml.frame_of_reference_uid(fixed_node),
        moving_for_uid=mrml.frame_of_reference_uid(moving_node), registrations=known_registrations, **arrays)
    moving_to_fixed_ras = result.moving_to_fixed_ras
    if mode == "frameOfReference":
        moving_to_fixed_ras = fixed_to_world_ras @ moving_to_fixed_ras @ np.linalg.inv(moving_to_world_ras)
    if refine is not None:
        return refine_transform(scene, fixed_node, moving_node, moving_to_fixed_ras, refine, mode=mode,
                                transform_node=transform_node, explanation=result.description,
                                warnings=list(result.warnings))
    node = mrml.set_linear_transform(scene, moving_to_fixed_ras, moving_volume=moving_node, fixed_volume=fixed_node,
                                     transform_node=transform_node,
                                     name=f"{moving_node.GetName()}_to_{fixed_node.GetName()}")
    return TransformResult(node, mode, moving_to_fixed_ras, result.moving_ijk_to_fixed_ijk, result.description,
                           list(result.warnings))


@dataclass(frozen=True)
class RefineRequest:
    """An intensity refinement to run from an initial transform (:func:`refine_transform`).

    Attributes
    ----------
    model : {"rigid", "affine"}
    fixed_mask, moving_mask : vtkMRMLLabelMapVolumeNode or vtkMRMLSegmentationNode, optional
        Only voxels inside the mask (non-zero labels, or any segment) count in the metric.
    check_landmarks : (fixed points, moving points), optional
        Markups nodes, points files or (N, 3) RAS arrays, paired by label when both lists have usable
        labels (else by order), used only to report their error after refinement.
    progress : callable, optional
        ``progress(fraction) -> bool`` at every optimizer iteration; True cancels.
    """

    model: str = "rigid"
    fixed_mask: object = None
    moving_mask: object = None
    check_landmarks: tuple | None = None
    progress: ProgressCallback | None = None


def refine_transform(scene, fixed_node, moving_node, initial_moving_to_fixed_ras, refine: RefineRequest | str, *,
                     mode: str = "initial", transform_node=None, explanation: str = "",
                     warnings: list[AlignSeriesWarning] | None = None) -> TransformResult:
    """Refine a moving-to-fixed transform by image intensity (Mattes MI) and store it in a transform node.

    Both volumes are taken where they are shown (world coordinates, their parent transforms included);
    ``initial_moving_to_fixed_ras`` maps the moving volume's world RAS to the fixed volume's. The node
    is made (or changed) only when the refinement finished: a cancelled one leaves no transform.

    Parameters
    ----------
    scene : vtkMRMLScene
    fixed_node, moving_node : vtkMRMLScalarVolumeNode
    initial_moving_to_fixed_ras : (4, 4) array_like
        The start: from a geometry mode, landmarks, a REG or a transform file.
    refine : RefineRequest or {"rigid", "affine"}
    mode : str
        How the initial transform was obtained (the result's ``mode``).
    transform_node : vtkMRMLLinearTransformNode, optional
    explanation : str
        How the initial transform was obtained, in one sentence.
    warnings : list of AlignSeriesWarning, optional
        The initial transform's warnings (a pre-alignment's is dropped: it was refined).

    Returns
    -------
    TransformResult
        With ``refinement`` (:class:`registration.RegistrationReport`); its warnings are the result's too.
    """
    request = RefineRequest(refine) if isinstance(refine, str) else refine
    masks = [_mask_image(scene, node) if node is not None else None
             for node in (request.fixed_mask, request.moving_mask)]
    # world grids, ``transform_node`` left out where it already sits in a chain (it is what is being computed)
    fixed_geometry, moving_geometry = (
        mrml.volume_geometry(node, world=False).transformed(mrml.parent_to_world_matrix(node, below=transform_node))
        for node in (fixed_node, moving_node))
    report = registration.register(
        registration.ImageOnGrid(mrml.volume_array(fixed_node, copy=False), fixed_geometry),
        registration.ImageOnGrid(mrml.volume_array(moving_node, copy=False), moving_geometry),
        initial_moving_to_fixed_ras, model=request.model, fixed_mask=masks[0], moving_mask=masks[1],
        progress=request.progress)
    if request.check_landmarks is not None:
        fixed, fixed_labels = points_and_labels(scene, request.check_landmarks[0], "fixed check points")
        moving, moving_labels = points_and_labels(scene, request.check_landmarks[1], "moving check points")
        by = "labels" if landmarks.labels_usable(fixed_labels, moving_labels) else "order"
        pairing = landmarks.match_points(fixed, moving, by=by, fixed_labels=fixed_labels, moving_labels=moving_labels)
        report.landmark_check = registration_measures.landmark_check(
            fixed, pairing.reorder(moving), report.initial_moving_to_fixed_ras, report.moving_to_fixed_ras)
    node = mrml.set_linear_transform(scene, report.moving_to_fixed_ras, moving_volume=moving_node,
                                     fixed_volume=fixed_node, transform_node=transform_node,
                                     name=f"{moving_node.GetName()}_to_{fixed_node.GetName()}")
    kept = [warning for warning in warnings or [] if warning.code != "pre_alignment"]
    sentence = f"{explanation or mode}, then refined by image intensity ({request.model}, Mattes mutual information)"
    return TransformResult(node, mode, report.moving_to_fixed_ras,
                           moving_ijk_to_fixed_ijk(moving_geometry, fixed_geometry, report.moving_to_fixed_ras),
                           sentence, kept + report.warnings, refinement=report)


def _mask_image(scene, mask_node) -> registration.ImageOnGrid:
    """A label map or segmentation node as a mask image (non-zero voxels count), in world coordinates."""
    with mrml.as_labelmap(scene, mask_node) as labelmap:
        return registration.ImageOnGrid(mrml.volume_array(labelmap), mrml.volume_geometry(labelmap))


def compute_landmark_transform(scene, fixed_points, moving_points, mode: str, *, match: str = "order",
                               weights=None, transform_node=None, fixed_volume=None) -> TransformResult:
    """Moving-to-fixed transform from corresponding points, stored in a transform node.

    Parameters
    ----------
    scene : vtkMRMLScene
    fixed_points, moving_points : vtkMRMLMarkupsFiducialNode, points file path, or (N, 3) array_like (RAS mm)
        Markups nodes give their world positions; files are read by :func:`mrml_files.load_points_file`.
    mode : {"rigid", "similarity", "affine"}
    match : {"order", "labels", "auto"}
        How points are paired (see :func:`landmarks.match_points`).
    weights : (N,) array_like, optional
        Per-pair weights, in the fixed list's order.
    transform_node : vtkMRMLLinearTransformNode, optional
    fixed_volume : vtkMRMLScalarVolumeNode, optional
        The fixed volume: the target registration error is estimated at its center (at the fixed
        points' centroid without it), and it becomes the transform's fixed reference.

    Returns
    -------
    TransformResult
        With ``rms_error``, ``residuals`` and ``leave_one_out_errors`` in mm, in the fixed list's order,
        and ``target_registration_error`` at ``target_ras``.
    """
    fixed, fixed_labels = points_and_labels(scene, fixed_points, "fixed points", below=transform_node)
    moving, moving_labels = points_and_labels(scene, moving_points, "moving points", below=transform_node)
    pairing = landmarks.match_points(fixed, moving, by=match, fixed_labels=fixed_labels, moving_labels=moving_labels)
    result = landmarks.register_landmarks(fixed, pairing.reorder(moving), mode=mode, weights=weights)
    disagreement = _labels_pair_otherwise(fixed, moving, fixed_labels, moving_labels, pairing, result.rms_error,
                                          mode=mode, weights=weights)
    node = mrml.set_linear_transform(scene, result.moving_to_fixed_ras, transform_node=transform_node,
                                     fixed_volume=fixed_volume, name="LandmarkTransform")
    labels = fixed_labels if fixed_labels and all(fixed_labels) else [str(n + 1) for n in range(len(fixed))]
    target_ras = mrml.volume_geometry(fixed_volume).center_ras if fixed_volume is not None else fixed.mean(axis=0)
    return TransformResult(node, mode, result.moving_to_fixed_ras, None, f"{mode} fit to {len(fixed)} landmark pairs",
                           list(pairing.warnings) + disagreement + list(result.warnings), result.rms_error,
                           result.residuals,
                           labels, result.leave_one_out_errors,
                           float(result.target_registration_error(target_ras)), target_ras)


def _labels_pair_otherwise(fixed, moving, fixed_labels, moving_labels, pairing, rms_error: float, *, mode: str,
                           weights) -> list[AlignSeriesWarning]:
    """A ``labels_disagree_with_order`` warning when points paired by order carry labels that pair them otherwise."""
    if (pairing.method != "order" or len(fixed_labels or []) != len(fixed)
            or not landmarks.labels_usable(fixed_labels, moving_labels)):
        return []
    by_labels = landmarks.match_points(fixed, moving, by="labels", fixed_labels=fixed_labels,
                                       moving_labels=moving_labels)
    if np.array_equal(by_labels.moving_order, pairing.moving_order):
        return []
    label_rms = landmarks.register_landmarks(fixed, by_labels.reorder(moving), mode=mode, weights=weights).rms_error
    differing = int(np.count_nonzero(by_labels.moving_order != pairing.moving_order))
    warning = AlignSeriesWarning("labels_disagree_with_order", (
        f"points were paired by list order, but their labels pair {differing} of {len(fixed)} points differently "
        f"(expected: the same pairs): RMS error {rms_error:.2f} mm by order, {label_rms:.2f} mm by labels; "
        "use --match labels if the labels are right"))
    logger.warning("%s", warning.message)  # on stderr too, beside the text output
    return [warning]


def points_and_labels(scene, source, role: str, *, below=None) -> tuple[np.ndarray, list[str]]:
    """(N, 3) RAS points and their labels from a markups node, a points file, or an array.

    A markups node gives its points as displayed (world RAS); when it sits under ``below`` (the
    transform being computed), where it lies without that transform.
    """
    if isinstance(source, str | Path):
        return mrml_files.load_points_file(scene, source)
    if hasattr(source, "IsA") and source.IsA("vtkMRMLMarkupsNode"):
        mrml_files.refuse_undefined_points(f"{role} '{source.GetName()}'", source)
        count = source.GetNumberOfControlPoints()
        if mrml.is_under(source, below):
            local = np.array([source.GetNthControlPointPosition(n) for n in range(count)]).reshape(-1, 3)
            to_world_ras = mrml.parent_to_world_matrix(source, below=below)
            points = local @ to_world_ras[:3, :3].T + to_world_ras[:3, 3]
        else:
            points = np.array([source.GetNthControlPointPositionWorld(n) for n in range(count)]).reshape(-1, 3)
        return points, [source.GetNthControlPointLabel(n) for n in range(count)]
    if source is None:
        raise LandmarkError(f"{role}: no point list given")
    return np.asarray(source, dtype=float), []


def apply_transform(moving_node, transform_node) -> None:
    """Place a computed transform above the moving node's whole chain of parent transforms.

    The transforms the node already has stay as they are (never replaced): the topmost of them (the
    node itself when it has none) gets ``transform_node`` as its parent. Nothing changes when the node
    is already under ``transform_node``, so applying twice applies once.

    Raises
    ------
    AlignSeriesError
        If ``transform_node`` sits under the chain's top (a loop), or the transform's fixed volume hangs
        from that top too (applying would move it with the moving volume).
    """
    if mrml.is_under(moving_node, transform_node):
        return
    chain = mrml.transform_chain(moving_node)
    top = chain[-1] if chain else moving_node
    if chain and (top.GetID() == transform_node.GetID() or mrml.is_under(transform_node, top)):
        raise AlignSeriesError(f"'{transform_node.GetName()}' sits under '{top.GetName()}', above which it would be "
                               "placed: move it out of that transform hierarchy first")
    fixed = transform_node.GetNodeReference(mrml.FIXED_VOLUME_REFERENCE_ROLE)
    if chain and fixed is not None and mrml.is_under(fixed, top):
        raise AlignSeriesError(f"the fixed volume '{fixed.GetName()}' is under '{top.GetName()}' too: placing "
                               f"'{transform_node.GetName()}' above it would move both volumes; give the moving "
                               "volume a transform of its own first")
    top.SetAndObserveTransformNodeID(transform_node.GetID())


def read_transform(scene, path, *, moving_geometry: VolumeGeometry | None = None,
                   fixed_geometry: VolumeGeometry | None = None):
    """Read a transform file into a new linear transform node (see :func:`mrml_files.read_transform_file`)."""
    return mrml_files.read_transform_file(scene, path, moving_geometry=moving_geometry, fixed_geometry=fixed_geometry)


def write_transform(transform_node, path, *, force: bool = False) -> Path:
    """Write a linear transform node's moving-to-fixed matrix to a file chosen by suffix.

    ``.h5``/``.tfm``/``.txt`` (ITK), ``.json``/``.mat4`` (RAS 4x4), ``.mat`` (FLIRT, with the node's
    moving and fixed volumes' grids) and ``.dcm``: a DICOM Spatial Registration relating the two DICOM
    series the node references.
    """
    scene = transform_node.GetScene()
    if not str(path).lower().endswith(".dcm"):
        with files.staged_outputs(force=force, create_folders=True) as staging:
            mrml_files.write_transform_file(scene, transform_node, staging.file(path), force=True)
        return Path(path)
    fixed, moving = (mrml.dicom_series_of(transform_node.GetNodeReference(role))
                     for role in (mrml.FIXED_VOLUME_REFERENCE_ROLE, mrml.MOVING_VOLUME_REFERENCE_ROLE))
    if fixed is None or moving is None:
        raise TransformFileError(f"{path}: a DICOM REG relates two DICOM series: both volumes must be loaded from "
                                 "DICOM (this transform does not reference two such volumes)")
    import pydicom

    from .dicom import reg as dicom_reg

    fixed_header = pydicom.dcmread(fixed.files[0], stop_before_pixels=True)
    moving_class = pydicom.dcmread(moving.files[0], stop_before_pixels=True, specific_tags=["SOPClassUID"])
    with files.staged_outputs(force=force, create_folders=True) as staging:
        dicom_reg.write_registration(
            staging.file(path), mrml.transform_to_parent_matrix(transform_node),
            _series_reference(fixed, fixed_header.SOPClassUID), _series_reference(moving, moving_class.SOPClassUID),
            reference_dataset=fixed_header, force=True)
    return Path(path)


def _series_reference(series: DicomVolume, sop_class_uid: str) -> SeriesReference:
    """The UIDs a DICOM REG needs about a series."""
    from .dicom.reg import SeriesReference

    return SeriesReference(
        series_instance_uid=series.series_instance_uid, frame_of_reference_uid=series.frame_of_reference_uid or "",
        sop_instance_uids=series.sop_instance_uids, sop_class_uid=sop_class_uid,
        study_instance_uid=series.study_instance_uid)


# -- resampling and export ------------------------------------------------------------------------

#: Share of :func:`resample_and_export`'s progress taken by loading the input; the export job takes the rest.
LOAD_SHARE = 0.3


def resample_volume(scene, input_node, grid: VolumeGeometry, *, transform_node=None, interpolation: str = "linear",
                    labelmap: bool | None = None, background=None, output_node=None,
                    progress: ProgressCallback | None = None, crop_to_overlap: bool = False):
    """Resample a volume onto any grid, into a new (or given) volume node: the export job with nothing to write.

    Parameters
    ----------
    scene : vtkMRMLScene
    input_node : vtkMRMLScalarVolumeNode or vtkMRMLLabelMapVolumeNode
        Never modified. Its parent transforms are applied (linear only).
    grid : VolumeGeometry
        The output grid in world RAS (a node's ``mrml.volume_geometry``).
    transform_node : vtkMRMLTransformNode, optional
        Moving-to-fixed (input-to-reference) linear transform, applied once above the input's own parents
        (:func:`export_job.input_to_world_ras`).
    interpolation, labelmap, background, crop_to_overlap
        As :class:`export_job.ExportOptions`.
    output_node : vtkMRMLScalarVolumeNode, optional
        Node to fill; a new node is created when omitted (never the input).
    progress : callable, optional
        ``progress(fraction) -> bool``; True cancels.

    Returns
    -------
    vtkMRMLScalarVolumeNode or vtkMRMLLabelMapVolumeNode
        On the grid (world coordinates, no parent transform), with the resampling's warnings kept
        on the node (:func:`mrml.node_warnings`).
    """
    options = ExportOptions(interpolation, labelmap, background, crop_to_overlap=crop_to_overlap)
    return resample_and_write(scene, input_node, Reference("grid", grid), None, options, progress,
                              transform_node=transform_node, output_node=output_node).volume_node


def resample_and_export(scene, input_paths, reference_paths, targets: ExportTargets,
                        options: ExportOptions | None = None, *, transform=None, input_index: int | None = None,
                        reference_index: int | None = None,
                        progress: ProgressCallback | None = None, segments=None) -> ExportResult:
    """Load an input and a reference from paths, then run the export job (:func:`export_job.resample_and_write`).

    The whole job of ``alignseries resample``, for the command line and the batch runner alike: the input is
    loaded (DICOM or a volume file), the reference read header-only (:func:`load_reference`), a transform
    file read into a node; the job decides everything else.

    Parameters
    ----------
    scene : vtkMRMLScene
    input_paths, reference_paths : str, Path or list of them
        DICOM folders/files or one volume file each (:func:`load_volumes`).
    targets : ExportTargets
        What to write (:meth:`ExportTargets.for_output` makes them from an output path).
    options : ExportOptions, optional
    transform : str or Path, optional
        Moving-to-fixed (input-to-reference) transform file; a FLIRT ``.mat`` is read against the
        input's grid (``-in``) and the reference's (``-ref``).
    input_index, reference_index : int, optional
        Which volume (1-based) of paths that hold several.
    progress : callable, optional
        ``progress(fraction) -> bool`` over the whole job (the input's DICOM scan, then the job); True cancels.
    segments : sequence of int, optional
        For a DICOM SEG input: the segments to read (they must not overlap; :func:`load_seg`).

    Raises
    ------
    AlignSeriesError
        For contradictory options (before loading), and everything that loading, resampling and writing raise.
    """
    files.check_outputs_spare_inputs(files.protected_places([*_as_paths(input_paths), *_as_paths(reference_paths),
                                                             transform]), (targets.volume_file, targets.dicom_folder,
                                                                           targets.png_folder, targets.preview))
    options = options or ExportOptions()
    options.check_against(targets)
    if segments is not None:  # a SEG input's chosen segments (a SEG alone is loaded by load_one_volume too)
        input_node = load_seg(scene, _as_paths(input_paths)[0], segments=segments)
    else:
        input_node = load_one_volume(scene, input_paths, index=input_index, role="--input",
                                     labelmap=options.labelmap or None, progress=part_of(progress, 0.0, LOAD_SHARE))
    reference = load_reference(scene, reference_paths, index=reference_index)
    transform_node = None
    if transform:  # a FLIRT .mat is relative to the two grids: -in = the input, -ref = the reference
        transform_node = read_transform(scene, transform, moving_geometry=mrml.volume_geometry(input_node, world=False),
                                        fixed_geometry=reference.geometry)
    return resample_and_write(scene, input_node, reference, targets, options, part_of(progress, LOAD_SHARE, 1.0),
                              transform_node=transform_node)


def as_label_table(labels) -> LabelTable:
    """A label table given as itself or as a file (CSV/TSV or a Slicer colour table)."""
    return labels if isinstance(labels, LabelTable) else read_label_table(labels)
