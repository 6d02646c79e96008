"""The MRML bridge: converts between Slicer's MRML nodes and AlignSeriesLib's core objects.

This is the only module of AlignSeriesLib that imports ``slicer``. It runs inside the Slicer
application and on ``slicer-core`` (the PyPI wheel of Slicer's MRML), where :func:`new_scene`
builds a scene the way the application does.

Frames: MRML world coordinates are RAS; a transform node's "to parent" matrix maps moving RAS to
fixed RAS (see :func:`set_linear_transform`). Files on disk are read and written with Slicer's own
storage nodes, so their LPS conventions are handled by Slicer, not here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import slicer
import vtk
from vtk.util import numpy_support

from . import alignment, dicom_export, dicom_pixels, dicom_reg, dicom_series, landmarks, resample, transform_files
from . import preview as preview_module
from .errors import AlignSeriesError, DicomDecodeError, DicomError, GeometryError, LandmarkError, TransformFileError
from .files import atomic_output, check_input_file, check_volume_file
from .geometry import VolumeGeometry, as_matrix4
from .points_files import read_points_csv, write_points_csv

logger = logging.getLogger(__name__)

#: Node reference roles that link a registration transform to the volumes it relates.
MOVING_VOLUME_REFERENCE_ROLE = "movingVolume"
FIXED_VOLUME_REFERENCE_ROLE = "fixedVolume"

#: Node attribute names under which DICOM identity is kept on a volume node (Slicer's DICOM
#: plugins use ``DICOM.instanceUIDs``; the others follow the same pattern).
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
SERIES_UID_ATTRIBUTE = "DICOM.SeriesInstanceUID"
FRAME_OF_REFERENCE_ATTRIBUTE = "DICOM.FrameOfReferenceUID"
STUDY_UID_ATTRIBUTE = "DICOM.StudyInstanceUID"
#: JSON list of ``{"code", "message"}`` geometry warnings found when the volume was loaded.
WARNINGS_ATTRIBUTE = "AlignSeries.warnings"
#: JSON ``{"files", "frames", "regularized"}``: the DICOM source slices in k order (for DICOM export).
SOURCE_FILES_ATTRIBUTE = "AlignSeries.sourceFiles"
#: JSON list of DICOM Spatial Registration files found beside the volume's files.
REGISTRATIONS_ATTRIBUTE = "AlignSeries.registrations"

VOLUME_FILE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd", ".seg.nrrd")
TRANSFORM_FILE_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt")


# -- scene --------------------------------------------------------------------------------------


def in_slicer_application() -> bool:
    """True inside the Slicer application (where ``slicer.app`` and module logics exist)."""
    return getattr(slicer, "app", None) is not None


def new_scene() -> vtk.vtkObject:
    """Create a MRML scene set up like the Slicer application's (headless ``slicer-core``).

    The scene gets an application logic with its colour logic and default colour nodes, and the
    volumes and markups module logics; ``slicer.mrmlScene`` is set to it when it is not set yet
    (``slicer.util`` functions use that global).

    Returns
    -------
    vtkMRMLScene
    """
    if in_slicer_application():
        return slicer.mrmlScene
    scene = slicer.vtkMRMLScene()
    application_logic = slicer.vtkSlicerApplicationLogic()
    application_logic.SetMRMLScene(scene)
    application_logic.GetColorLogic().SetMRMLScene(scene)
    application_logic.GetColorLogic().AddDefaultColorNodes()
    logics = {"Application": application_logic, "Colors": application_logic.GetColorLogic()}
    application_logic.SetModuleLogic("Colors", logics["Colors"])
    for name, logic in (("Volumes", slicer.vtkSlicerVolumesLogic()), ("Markups", slicer.vtkSlicerMarkupsLogic())):
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(application_logic)
        application_logic.SetModuleLogic(name, logic)
        logics[name] = logic
    # The application logic keeps only weak references: hold the logics as long as the scene's wrapper lives.
    _HEADLESS_LOGICS[scene] = logics
    if getattr(slicer, "mrmlScene", None) is None:
        slicer.mrmlScene = scene
    return scene


_HEADLESS_LOGICS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def module_logic(scene, name: str):
    """Return the scene's module logic ``name`` ("Volumes", "Markups"), as the application has it."""
    if in_slicer_application():
        return getattr(slicer.modules, name.lower()).logic()
    logics = _HEADLESS_LOGICS.get(scene)
    if logics is None:
        raise AlignSeriesError("this MRML scene was not made by AlignSeriesLib.mrml.new_scene()")
    return logics[name]


# -- matrices -----------------------------------------------------------------------------------


def vtk_matrix(matrix) -> vtk.vtkMatrix4x4:
    """Return a ``vtkMatrix4x4`` holding a 4x4 array."""
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            result.SetElement(row, column, float(matrix[row][column]))
    return result


def numpy_matrix(vtk_matrix4x4) -> np.ndarray:
    """Return a ``vtkMatrix4x4`` as a 4x4 float array."""
    return np.array([[vtk_matrix4x4.GetElement(r, c) for c in range(4)] for r in range(4)])


# -- volumes ------------------------------------------------------------------------------------


def volume_geometry(volume_node, *, world: bool = True) -> VolumeGeometry:
    """Geometry of a scalar volume node.

    Parameters
    ----------
    volume_node : vtkMRMLScalarVolumeNode
    world : bool
        If True (default), include the node's parent transforms, giving the grid where Slicer shows
        it; if False, the node's own IJKToRAS.

    Raises
    ------
    GeometryError
        If the node has no image data, or ``world`` is requested and a parent transform is not
        linear (a non-linear transform cannot be folded into a grid: harden or remove it first).
    """
    image = volume_node.GetImageData() if volume_node is not None else None
    if image is None:
        raise GeometryError(f"volume '{_node_name(volume_node)}' has no image data")
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    matrix = numpy_matrix(ijk_to_ras)
    if world:
        matrix = parent_to_world_matrix(volume_node) @ matrix
    return VolumeGeometry(image.GetDimensions(), matrix)


def parent_to_world_matrix(node) -> np.ndarray:
    """4x4 RAS matrix of all linear transforms above ``node`` (identity when it has none).

    Raises
    ------
    GeometryError
        If a transform above the node is not linear.
    """
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        non_linear = parent
        while non_linear.IsLinear():  # name the culprit, which may sit higher than the direct parent
            non_linear = non_linear.GetParentTransformNode()
        raise GeometryError(
            f"'{_node_name(node)}' is under the non-linear transform '{non_linear.GetName()}': "
            "harden it or remove it from the transform hierarchy first"
        )
    to_world = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(to_world)
    return numpy_matrix(to_world)


def set_volume_geometry(volume_node, geometry: VolumeGeometry) -> None:
    """Set a volume node's IJKToRAS (origin, spacing, directions) from a geometry."""
    volume_node.SetIJKToRASMatrix(vtk_matrix(geometry.ijk_to_ras))


def add_volume_node(scene, array_kji, geometry: VolumeGeometry, name: str, *, labelmap: bool = False,
                    attributes: dict | None = None):
    """Add a new volume node holding a copy of ``array_kji`` placed on ``geometry``.

    Parameters
    ----------
    scene : vtkMRMLScene
    array_kji : (K, J, I) ndarray
        Voxel values indexed ``[k, j, i]``; must match ``geometry.shape``.
    geometry : VolumeGeometry
    name : str
        Node name (made unique by the scene).
    labelmap : bool
        Create a ``vtkMRMLLabelMapVolumeNode`` instead of a scalar volume.
    attributes : dict of str to str, optional
        Node attributes to set (e.g. DICOM UIDs).

    Returns
    -------
    vtkMRMLScalarVolumeNode or vtkMRMLLabelMapVolumeNode
    """
    array_kji = np.asarray(array_kji)
    if array_kji.shape != geometry.shape:
        raise GeometryError(f"array shape {array_kji.shape} does not match the geometry's (k, j, i) {geometry.shape}")
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    set_volume_geometry(node, geometry)
    node.SetAndObserveImageData(_image_data_from_array(array_kji))
    for key, value in (attributes or {}).items():
        node.SetAttribute(key, str(value))
    if labelmap:
        node.CreateDefaultDisplayNodes()
    else:
        _add_grey_display_node(scene, node, array_kji)
    return node


def _add_grey_display_node(scene, volume_node, array_kji: np.ndarray) -> None:
    """Give a scalar volume a grey display node whose window is :func:`preview.window_of` (a subsample's percentiles).

    Slicer's automatic window/level scans every voxel (0.7 s for 100 M voxels); a regular
    subsample gives the same window for display at a fraction of the cost.
    """
    low, high = preview_module.window_of(array_kji)
    display_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    display_node.SetAutoWindowLevel(False)
    display_node.SetWindowLevelMinMax(low, high)
    display_node.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    volume_node.SetAndObserveDisplayNodeID(display_node.GetID())


def volume_array(volume_node) -> np.ndarray:
    """A copy of a volume node's voxels, indexed ``[k, j, i]``."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise GeometryError(f"volume '{_node_name(volume_node)}' has no image data")
    return slicer.util.arrayFromVolume(volume_node).copy()


def _image_data_from_array(array_kji: np.ndarray) -> vtk.vtkImageData:
    image = vtk.vtkImageData()
    image.SetDimensions(array_kji.shape[::-1])
    flat = np.ascontiguousarray(array_kji).reshape(-1)
    scalars = numpy_support.numpy_to_vtk(flat, deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def _dicom_database():
    """Slicer's DICOM database in the application (``None`` on slicer-core or when it is not open)."""
    database = getattr(slicer, "dicomDatabase", None)
    return database if database is not None and database.isOpen else None


def _database_files(volume_node) -> list[str]:
    """Files of a volume loaded by Slicer's own DICOM module, found through its instance UIDs, in slice order."""
    database = _dicom_database()
    uids = (volume_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split() if volume_node is not None else []
    if database is None or not uids:
        return []
    files = [database.fileForInstance(uid) for uid in uids]
    return files if all(files) else []


def registration_files(volume_node) -> list[str]:
    """DICOM REG files found beside a volume's DICOM files when it was loaded."""
    text = volume_node.GetAttribute(REGISTRATIONS_ATTRIBUTE)
    return json.loads(text) if text else []


def dicom_source(volume_node) -> dict | None:
    """``{"files", "frames", "regularized"}`` of a volume loaded from DICOM, else None.

    Volumes AlignSeries loaded carry this as an attribute; for a volume loaded by Slicer's DICOM
    module the files are looked up in Slicer's DICOM database by the node's instance UIDs.
    """
    text = volume_node.GetAttribute(SOURCE_FILES_ATTRIBUTE) if volume_node is not None else None
    if text:
        return json.loads(text)
    files = _database_files(volume_node)
    return {"files": files, "frames": [None] * len(files), "regularized": False} if files else None


def frame_of_reference_uid(volume_node) -> str | None:
    """A volume's FrameOfReferenceUID: kept by AlignSeries' DICOM loader, or read from its first DICOM file.

    For a volume loaded by Slicer's DICOM module, the file comes from Slicer's DICOM database.
    """
    value = volume_node.GetAttribute(FRAME_OF_REFERENCE_ATTRIBUTE)
    if value:
        return value
    files = _database_files(volume_node)
    return _dicom_database().fileValue(files[0], "0020,0052") or None if files else None


# -- transforms ---------------------------------------------------------------------------------


def set_linear_transform(scene, moving_to_fixed_ras, *, moving_volume=None, fixed_volume=None,
                         transform_node=None, name: str = "AlignSeriesTransform"):
    """Store a moving-to-fixed RAS matrix in a linear transform node.

    The matrix becomes the node's "to parent" matrix, so placing the moving volume under the node
    aligns it with the fixed one. The Moving/Fixed node references are set when volumes are given.

    Parameters
    ----------
    scene : vtkMRMLScene
    moving_to_fixed_ras : (4, 4) array_like
    moving_volume, fixed_volume : vtkMRMLVolumeNode, optional
    transform_node : vtkMRMLLinearTransformNode, optional
        Node to update; a new node is added when omitted.
    name : str
        Name of a new node.

    Returns
    -------
    vtkMRMLLinearTransformNode
    """
    matrix = as_matrix4(moving_to_fixed_ras, "moving_to_fixed_ras")
    if transform_node is None:
        transform_node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", scene.GenerateUniqueName(name))
    transform_node.SetMatrixTransformToParent(vtk_matrix(matrix))
    if moving_volume is not None:
        transform_node.SetNodeReferenceID(MOVING_VOLUME_REFERENCE_ROLE, moving_volume.GetID())
    if fixed_volume is not None:
        transform_node.SetNodeReferenceID(FIXED_VOLUME_REFERENCE_ROLE, fixed_volume.GetID())
    return transform_node


def transform_to_parent_matrix(transform_node) -> np.ndarray:
    """The "to parent" RAS matrix of a linear transform node.

    Raises
    ------
    TransformFileError
        If the node does not hold a linear transform.
    """
    if transform_node is None or not transform_node.IsLinear():
        raise TransformFileError(f"transform '{_node_name(transform_node)}' is not a linear transform")
    matrix = vtk.vtkMatrix4x4()
    transform_node.GetMatrixTransformToParent(matrix)
    return numpy_matrix(matrix)


# -- inputs -------------------------------------------------------------------------------------


def is_volume_file(path) -> bool:
    """True for a path Slicer reads as one volume file (by its suffix)."""
    name = str(path).lower()
    return any(name.endswith(suffix) for suffix in VOLUME_FILE_SUFFIXES)


def load_volumes(scene, paths, *, labelmap: bool | None = None, regularize: bool = True, progress=None) -> list:
    """Load every volume that ``paths`` hold: one volume file, or DICOM folders and files.

    Parameters
    ----------
    scene : vtkMRMLScene
    paths : str, Path or list of them
        A volume file (``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``), or DICOM folders/files.
    labelmap : bool, optional
        Load volume files as label maps.
    regularize : bool
        Resample irregular DICOM series onto a regular grid (else refuse them).

    Returns
    -------
    list of vtkMRMLScalarVolumeNode
    """
    paths = _as_paths(paths)
    if len(paths) == 1 and is_volume_file(paths[0]):
        return [load_volume_file(scene, paths[0], labelmap=labelmap)]
    if any(is_volume_file(p) for p in paths):
        raise AlignSeriesError(f"give one volume file or DICOM folders/files, not a mix: {[str(p) for p in paths]}")
    return load_dicom_series(scene, paths, regularize=regularize, progress=progress)


def _as_paths(paths) -> list[Path]:
    """One path or a sequence of them, as a list of Paths."""
    return [Path(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]


def load_one_volume(scene, paths, *, index: int | None = None, role: str = "input", labelmap: bool | None = None):
    """Load ``paths`` and return the one volume they hold, or volume number ``index`` (1-based) of several.

    Raises
    ------
    AlignSeriesError
        If ``paths`` hold no volume, or several and ``index`` does not choose one; the message
        lists the volumes found.
    """
    nodes = load_volumes(scene, paths, labelmap=labelmap)
    if index is not None:
        if not 1 <= index <= len(nodes):
            raise AlignSeriesError(f"{role}: volume {index} requested, but {len(nodes)} found")
        return nodes[index - 1]
    if len(nodes) != 1:
        listing = "; ".join(f"[{n}] {node.GetName()}" for n, node in enumerate(nodes, start=1))
        raise AlignSeriesError(
            f"{role} holds {len(nodes)} volumes ({listing}): choose one with {role}-volume N"
        )
    return nodes[0]


def node_warnings(volume_node) -> list[dict]:
    """Warnings kept on a volume node (``{"code", "message"}``), e.g. from DICOM reconstruction."""
    text = volume_node.GetAttribute(WARNINGS_ATTRIBUTE) if volume_node is not None else None
    return json.loads(text) if text else []


def set_node_warnings(volume_node, warnings) -> None:
    """Keep ``{"code", "message"}`` warnings on a volume node (as JSON in a node attribute)."""
    volume_node.SetAttribute(WARNINGS_ATTRIBUTE, json.dumps([dict(w) for w in warnings]))


def describe_volume_node(volume_node) -> str:
    """One line for a person: dimensions, spacing, orientation, frame of reference, warnings."""
    try:
        geometry = volume_geometry(volume_node, world=False)
    except GeometryError as error:
        return str(error)
    frame = frame_of_reference_uid(volume_node)
    warnings = node_warnings(volume_node)
    parts = [geometry.summary(), f"frame of reference {frame}" if frame else "no frame of reference"]
    parts.append("; ".join(w["message"] for w in warnings) if warnings else "regular grid")
    return " | ".join(parts)


def describe_inputs(paths, *, regularize: bool = True) -> list[dict]:
    """What ``alignseries info`` reports for each volume that ``paths`` hold (DICOM: headers only).

    Each dict has the DESIGN.md ``info`` fields (name, UIDs, files, frames, dimensions, spacing,
    ``ijk_to_ras``, ``ijk_to_lps``, regularized, warnings) plus ``summary`` and ``origin_lines``,
    which explain where the first voxel lies in LPS and in RAS.
    """
    paths = _as_paths(paths)
    dicom_paths = [path for path in paths if not is_volume_file(path)]
    described = []
    for path in paths:  # volume files in the order given; all DICOM paths scanned together, at the first one's place
        if is_volume_file(path):
            described.append(_describe_volume_file(path))
        elif path == dicom_paths[0]:
            scan = dicom_series.scan_dicom(dicom_paths, regularize=regularize)
            described += [_with_explanations(volume.to_info_dict(), volume.geometry, volume.instance_numbers,
                                             volume.slice_positions_lps) for volume in scan.volumes]
    return described


def _describe_volume_file(path: Path) -> dict:
    """The ``info`` description of one volume file (.nrrd, .nii, .mha), read by Slicer on its own grid.

    As for DICOM, ``files``, ``frames`` and ``sop_instance_uids`` have one entry per slice: the file,
    the slice's 1-based number in it (like a multi-frame file's frame), and no UID.
    """
    node = load_volume_file(new_scene(), path)
    geometry = volume_geometry(node, world=False)
    slices = geometry.dimensions[2]
    info = {"name": node.GetName(), "series_instance_uid": None, "frame_of_reference_uid": None,
            "files": [str(path)] * slices, "frames": list(range(1, slices + 1)),
            "sop_instance_uids": [None] * slices, "regularized": False, "warnings": [], **geometry.to_dict()}
    return _with_explanations(info, geometry)


def _with_explanations(info: dict, geometry: VolumeGeometry, instance_numbers=(), positions_lps=()) -> dict:
    """Add a summary, handedness and the explanation of the origin (why viewers show different origins).

    ``instance_numbers`` and ``positions_lps`` (per source slice, in k order) say which image a viewer
    that lists images by InstanceNumber shows first, and where it lies.
    """
    origin_lps, origin_ras = geometry.origin_lps, geometry.origin_ras
    info["summary"] = geometry.summary()
    info.setdefault("orientation", geometry.orientation)
    info.setdefault("mirrored", geometry.is_mirrored)
    info["origin_lines"] = [
        f"slices ordered along the normal {np.round(geometry.directions_ras[:, 2], 4).tolist()} (RAS), "
        f"first slice at k=0",
        f"first voxel center: LPS {np.round(origin_lps, 3).tolist()} (DICOM ImagePositionPatient) = "
        f"RAS {np.round(origin_ras, 3).tolist()} (Slicer): x and y change sign between the two conventions",
    ]
    info["origin_lines"] += _instance_number_lines(instance_numbers, positions_lps)
    if geometry.is_mirrored:
        info["origin_lines"].append(
            f"mirrored grid: determinant {geometry.determinant:+.0f} (left-handed index axes); no rotation "
            "turns it into a right-handed grid, so it is kept as stored")
    return info


def _instance_number_lines(instance_numbers, positions_lps) -> list[str]:
    """Where the image with the lowest InstanceNumber lies, when it is not the first slice along the normal."""
    numbered = [(number, k) for k, number in enumerate(instance_numbers) if number is not None]
    if not numbered or len({number for number, _ in numbered}) != len(numbered):  # none, or multi-frame repeats
        return []
    lowest, k = min(numbered)
    if k == 0:
        return [f"InstanceNumber {lowest} is the first slice along the normal (k=0)"]
    return [f"k=0 is InstanceNumber {instance_numbers[0]}; InstanceNumber {lowest}, which a viewer listing images "
            f"by number shows first, is slice k={k} at LPS {np.round(positions_lps[k], 3).tolist()}: "
            "a viewer that shows that image's ImagePositionPatient gives another origin"]


# -- operations (shared by the module logic and the command line) --------------------------------


@dataclass
class TransformOutcome:
    """A computed moving-to-fixed transform and what tells how good it is.

    Attributes
    ----------
    transform_node : vtkMRMLLinearTransformNode
    moving_to_fixed_ras : (4, 4) ndarray
    moving_ijk_to_fixed_ijk : (4, 4) ndarray or None
        Voxel-to-voxel matrix (geometry modes, when both volumes are known).
    explanation : str
        How the transform was obtained, in one sentence.
    warnings : list of str
    rms_error, residuals, labels, leave_one_out_errors
        Landmark modes only: mm, per pair in the fixed list's order.
    target_registration_error : float or None
        Landmark modes only: expected error (mm, Fitzpatrick's model) at ``target_ras``.
    target_ras : (3,) ndarray or None
        Where that error is estimated: the fixed volume's center, or the fixed points' centroid.
    """

    transform_node: object
    moving_to_fixed_ras: np.ndarray
    moving_ijk_to_fixed_ijk: np.ndarray | None = None
    explanation: str = ""
    warnings: list = field(default_factory=list)
    rms_error: float | None = None
    residuals: np.ndarray | None = None
    labels: list = field(default_factory=list)
    leave_one_out_errors: np.ndarray | None = None
    target_registration_error: float | None = None
    target_ras: np.ndarray | None = None


def compute_geometry_transform(scene, fixed_node, moving_node, mode: str, *, registrations=(),
                               transform_node=None) -> TransformOutcome:
    """Moving-to-fixed transform from the two volumes' geometry, stored in a transform node.

    The transform maps the moving volume's own RAS (without its parent transforms) to the fixed
    volume's world RAS, so that the moving volume placed under it lines up with the fixed one.

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

    Returns
    -------
    TransformOutcome

    Raises
    ------
    FrameOfReferenceError
        In "frameOfReference" mode, when the frames differ (or are unknown) and no REG relates them.
    """
    fixed_geometry = volume_geometry(fixed_node, world=False)
    moving_geometry = volume_geometry(moving_node, world=False)
    arrays = {}
    if mode == "moments":
        arrays = {"fixed_array_kji": volume_array(fixed_node), "moving_array_kji": volume_array(moving_node)}
    known_registrations = list(registrations) + registration_files(fixed_node) + registration_files(moving_node)
    result = alignment.align_geometries(
        mode, fixed_geometry, moving_geometry, fixed_for_uid=frame_of_reference_uid(fixed_node),
        moving_for_uid=frame_of_reference_uid(moving_node), registrations=known_registrations, **arrays)
    moving_to_fixed_ras = parent_to_world_matrix(fixed_node) @ result.moving_to_fixed_ras
    name = f"{moving_node.GetName()}_to_{fixed_node.GetName()}"
    node = set_linear_transform(scene, moving_to_fixed_ras, moving_volume=moving_node, fixed_volume=fixed_node,
                                transform_node=transform_node, name=name)
    return TransformOutcome(node, moving_to_fixed_ras, result.moving_ijk_to_fixed_ijk, result.description,
                            list(result.warnings))


def compute_landmark_transform(scene, fixed_points, moving_points, mode: str, *, match: str = "order",
                               weights=None, transform_node=None, fixed_volume=None) -> TransformOutcome:
    """Moving-to-fixed transform from corresponding points, stored in a transform node.

    Parameters
    ----------
    scene : vtkMRMLScene
    fixed_points, moving_points : vtkMRMLMarkupsFiducialNode, points file path, or (N, 3) array_like (RAS mm)
        Markups nodes give their world positions; files are read as :func:`load_points_file` says.
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
    TransformOutcome
        With ``rms_error``, ``residuals`` and ``leave_one_out_errors`` in mm, in the fixed list's order,
        and ``target_registration_error`` at ``target_ras``.
    """
    fixed, fixed_labels = points_and_labels(scene, fixed_points, "fixed points")
    moving, moving_labels = points_and_labels(scene, moving_points, "moving points")
    pairing = landmarks.match_points(fixed, moving, by=match, fixed_labels=fixed_labels, moving_labels=moving_labels)
    result = landmarks.register_landmarks(fixed, pairing.reorder(moving), mode=mode, weights=weights)
    node = set_linear_transform(scene, result.moving_to_fixed_ras, transform_node=transform_node,
                                fixed_volume=fixed_volume, name="LandmarkTransform")
    labels = fixed_labels if fixed_labels and all(fixed_labels) else [str(n + 1) for n in range(len(fixed))]
    target_ras = volume_geometry(fixed_volume).center_ras if fixed_volume is not None else fixed.mean(axis=0)
    return TransformOutcome(node, result.moving_to_fixed_ras, None, f"{mode} fit to {len(fixed)} landmark pairs",
                            list(pairing.warnings) + list(result.warnings), result.rms_error, result.residuals,
                            labels, result.leave_one_out_errors,
                            float(result.target_registration_error(target_ras)), target_ras)


def points_and_labels(scene, source, role: str) -> tuple[np.ndarray, list[str]]:
    """(N, 3) RAS points and their labels from a markups node, a points file, or an array."""
    if isinstance(source, str | Path):
        return load_points_file(scene, source)
    if hasattr(source, "IsA") and source.IsA("vtkMRMLMarkupsNode"):
        count = source.GetNumberOfControlPoints()
        points = np.array([source.GetNthControlPointPositionWorld(n) for n in range(count)]).reshape(-1, 3)
        return points, [source.GetNthControlPointLabel(n) for n in range(count)]
    if source is None:
        raise LandmarkError(f"{role}: no point list given")
    return np.asarray(source, dtype=float), []


def resample_volume_node(scene, input_node, reference, *, transform_node=None, interpolation: str = "linear",
                         labelmap: bool | None = None, background=None, output_node=None, progress=None,
                         crop_to_overlap: bool = False):
    """Resample a volume onto a reference grid through a transform, into a new (or given) volume node.

    Parameters
    ----------
    scene : vtkMRMLScene
    input_node : vtkMRMLScalarVolumeNode or vtkMRMLLabelMapVolumeNode
        Never modified. Its parent transforms are applied (linear only).
    reference : vtkMRMLVolumeNode or VolumeGeometry
        The output grid; a node's parent transforms place its grid in the world.
    transform_node : vtkMRMLTransformNode, optional
        Moving-to-fixed (input-to-reference) linear transform, applied after the input's own parents.
    interpolation : {"nearest", "linear", "cubic"}
    labelmap : bool, optional
        Resample label-safe; by default true for label map nodes.
    background : float, optional
        Value outside the input; its minimum by default (0 for labels).
    output_node : vtkMRMLScalarVolumeNode, optional
        Node to fill; a new node is created when omitted (never the input).
    crop_to_overlap : bool
        Use only the part of the reference grid that the (transformed) input covers
        (:func:`resample.crop_to_overlap`): same spacing, directions and voxel positions, fewer voxels.

    Returns
    -------
    vtkMRMLScalarVolumeNode or vtkMRMLLabelMapVolumeNode
        Placed on the reference grid (in world coordinates, no parent transform), with warnings such
        as "no overlap" kept as a node attribute (:func:`node_warnings`).
    """
    if output_node is not None and input_node is not None and output_node.GetID() == input_node.GetID():
        raise AlignSeriesError("the output volume must differ from the input volume: the input is never modified")
    labelmap = input_node.IsA("vtkMRMLLabelMapVolumeNode") if labelmap is None else labelmap
    input_geometry = volume_geometry(input_node, world=False)
    input_to_world_ras = parent_to_world_matrix(input_node)
    if transform_node is not None:
        input_to_world_ras = transform_to_parent_matrix(transform_node) @ input_to_world_ras
    reference_geometry = reference if isinstance(reference, VolumeGeometry) else volume_geometry(reference)
    if crop_to_overlap:
        reference_geometry = resample.crop_to_overlap(reference_geometry, input_geometry, input_to_world_ras)
    result = resample.resample_to_geometry(
        volume_array(input_node), input_geometry, reference_geometry, input_to_world_ras,
        interpolation=interpolation, labelmap=labelmap, background=background, progress=progress)
    name = f"{input_node.GetName()}_resampled"
    if output_node is None:
        output_node = add_volume_node(scene, result.array, reference_geometry, name, labelmap=labelmap)
    else:
        set_volume_geometry(output_node, reference_geometry)
        output_node.SetAndObserveImageData(_image_data_from_array(result.array))
        output_node.SetAndObserveTransformNodeID(None)
    set_node_warnings(output_node, [w.to_dict() for w in result.warnings])  # resample logged them already
    return output_node


def is_folder_output(path) -> bool:
    """True when an output path names a folder (it ends in ``/`` or exists as one): a DICOM series is written there."""
    return str(path).endswith(("/", os.sep)) or Path(path).is_dir()


def write_volume(volume_node, path, *, reference_node=None, force: bool = False) -> list[Path]:
    """Write a volume to a file, or to a folder as a DICOM series aligned with a DICOM reference.

    Parameters
    ----------
    volume_node : vtkMRMLScalarVolumeNode
        For DICOM output: on ``reference_node``'s grid, or on a slab of its slices (as
        :func:`resample_volume_node` makes it with ``resample.slab``).
    path : str or Path
        A volume file (``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``), or a folder: a path ending in
        ``/`` or an existing folder gets one DICOM file per reference slice it covers.
    reference_node : vtkMRMLScalarVolumeNode, optional
        The DICOM series (loaded by AlignSeries or Slicer) whose slices the DICOM output copies.
    force : bool
        Replace an existing output.

    Returns
    -------
    list of Path
        The files written.
    """
    if not is_folder_output(path):
        return [save_node(volume_node, path, force=force)]
    files, frames = _reference_slice_files(volume_node, reference_node, path)
    return dicom_export.write_dicom_series(
        volume_array(volume_node), files, frames, Path(path), force=force,
        series_description=f"{volume_node.GetName()} (AlignSeries)",
        labelmap=volume_node.IsA("vtkMRMLLabelMapVolumeNode"))


def write_resample_extras(volume_node, reference_node, *, png_folder=None, preview=None,
                          force: bool = False) -> list[Path]:
    """Write the optional pictures of a resampled volume: one PNG per reference DICOM slice, a fused preview."""
    written = []
    if png_folder:
        files, frames = _reference_slice_files(volume_node, reference_node, png_folder)
        written += dicom_export.export_png_slices(volume_array(volume_node), files, frames, png_folder,
                                                  labelmap=volume_node.IsA("vtkMRMLLabelMapVolumeNode"),
                                                  force=force)
    if preview:
        slices = _reference_slab(volume_node, reference_node)
        if slices is None:
            raise AlignSeriesError(f"{preview}: the fused preview needs the output on the reference's grid "
                                   "(or a slab of its slices)")
        written.append(preview_module.write_fusion_png(volume_array(reference_node)[slices], volume_array(volume_node),
                                                       volume_geometry(volume_node), preview, force=force))
    return written


def _reference_slice_files(volume_node, reference_node, path) -> tuple[list, list]:
    """The DICOM files (and frames) of the reference slices a volume lies on, in k order.

    Raises
    ------
    AlignSeriesError
        If the reference is not a DICOM series, was regularized (its grid has no DICOM slices), or
        the volume is not on its grid or a slab of its slices.
    """
    source = dicom_source(reference_node) if reference_node is not None else None
    if source is None:
        raise AlignSeriesError(f"{path}: DICOM slices and PNGs are aligned with a DICOM reference series; "
                               "the reference was not loaded from DICOM files")
    if source["regularized"]:
        raise AlignSeriesError(
            f"{path}: the reference '{reference_node.GetName()}' was regularized from an irregular series, so its "
            "grid has no DICOM slices to align with: write a volume file instead")
    slices = _reference_slab(volume_node, reference_node)
    if slices is None:
        raise AlignSeriesError(f"'{volume_node.GetName()}' is not on the grid of '{reference_node.GetName()}' "
                               "(nor on a slab of its slices): resample it onto the reference first")
    return source["files"][slices], source["frames"][slices]


def _reference_slab(volume_node, reference_node) -> slice | None:
    """The reference slices ``k0:k0 + n`` a volume's grid coincides with (1e-4 mm), or None."""
    grid, reference = volume_geometry(volume_node), volume_geometry(reference_node)
    first = int(round(reference.world_to_ijk(grid.origin_ras)[2]))
    count = grid.dimensions[2]
    fits = grid.dimensions[:2] == reference.dimensions[:2] and 0 <= first <= reference.dimensions[2] - count
    if not fits or not resample.slab(reference, first, count).is_close(grid, atol=1e-4):
        return None
    return slice(first, first + count)


# -- files --------------------------------------------------------------------------------------


def load_volume_file(scene, path, *, labelmap: bool | None = None, name: str | None = None):
    """Read a volume file (``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``) with Slicer's volumes logic.

    Parameters
    ----------
    labelmap : bool, optional
        Load as a label map; by default only ``.seg.nrrd`` files and NRRD files that Slicer tags as
        label maps are.

    Raises
    ------
    FileNotFoundError, AlignSeriesError
    """
    path = check_input_file(path, "volume file")
    check_volume_file(path, max_bytes=dicom_pixels.MAX_VOLUME_BYTES)
    if labelmap is None:
        labelmap = path.name.lower().endswith(".seg.nrrd")
    volumes_logic = module_logic(scene, "Volumes")
    node_name = name or _stem(path)
    options = 1 if labelmap else 0  # bit 0 of AddArchetypeVolume's options: load as label map
    with _native_ijk_orientation(scene):
        node = volumes_logic.AddArchetypeVolume(str(path), node_name, options)
    if node is None or node.GetImageData() is None:
        raise AlignSeriesError(f"{path}: Slicer could not read this file as a volume")
    components = node.GetImageData().GetNumberOfScalarComponents()
    if components != 1:
        _remove_with_helpers(scene, node)
        raise AlignSeriesError(f"{path}: {components} values per voxel (a vector, RGB or 4D volume); "
                               "AlignSeries aligns and resamples scalar volumes only")
    return node


def save_node(node, path, *, force: bool = False) -> Path:
    """Write a volume or transform node with its default storage node, atomically.

    The file is written beside its destination and renamed into place, so a failure leaves no
    partial file; an existing file is refused unless ``force``.
    """
    path = Path(path)
    _check_node_can_be_written(node, path)
    with atomic_output(path, force=force) as temporary_path:
        scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=temporary_path.parent))
        try:
            storage_node = node.CreateDefaultStorageNode()
            storage_node.SetFileName(str(scratch / path.name))
            storage_node.SetWriteFileFormat(_write_format(path))
            if hasattr(storage_node, "SetUseCompression"):
                storage_node.SetUseCompression(path.suffix.lower() in (".gz", ".h5", ".nrrd"))
            if not storage_node.WriteData(node) or not (scratch / path.name).is_file():
                raise AlignSeriesError(f"{path}: Slicer could not write '{node.GetName()}' in this format")
            os.replace(scratch / path.name, temporary_path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return path


#: Single-file formats save_node writes, by node type (detached headers such as .nhdr/.mhd would
#: leave their data file behind the atomic rename).
WRITABLE_VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")
WRITABLE_TRANSFORM_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt")


def _check_node_can_be_written(node, path: Path) -> None:
    name = path.name.lower()
    if node.IsA("vtkMRMLTransformNode"):
        suffixes = WRITABLE_TRANSFORM_SUFFIXES
    elif node.IsA("vtkMRMLVolumeNode"):
        suffixes = WRITABLE_VOLUME_SUFFIXES
        if node.GetImageData() is None:
            raise GeometryError(f"volume '{_node_name(node)}' has no image data: nothing to write to {path}")
    else:
        raise AlignSeriesError(f"{path}: cannot write '{_node_name(node)}' ({node.GetClassName()})")
    if not name.endswith(suffixes):
        raise AlignSeriesError(
            f"{path}: cannot write '{_node_name(node)}' in this format; use one of {', '.join(suffixes)}"
        )


@contextlib.contextmanager
def _native_ijk_orientation(scene):
    """Within this block, volume files load on their own grid, a left-handed one included.

    By default Slicer's volume storage node reverses the k axis of a left-handed (mirrored) grid;
    the image stays in place but the grid and slice order are no longer the file's.
    """
    previous = scene.GetDefaultNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    default = slicer.vtkMRMLVolumeArchetypeStorageNode()
    if previous is not None:
        default.Copy(previous)
    default.SetForceRightHandedIJKCoordinateSystem(False)
    scene.AddDefaultNode(default)
    try:
        yield
    finally:
        scene.AddDefaultNode(previous if previous is not None else slicer.vtkMRMLVolumeArchetypeStorageNode())


def load_transform_file(scene, path):
    """Read an ITK transform file (``.h5``, ``.tfm``, ``.txt``) with Slicer's transform storage node."""
    path = check_input_file(path, "transform file")
    storage_node = slicer.vtkMRMLTransformStorageNode()
    transform_node = slicer.vtkMRMLLinearTransformNode()
    storage_node.SetFileName(str(path))
    if not storage_node.ReadData(transform_node):
        raise TransformFileError(f"{path}: not a transform file Slicer can read")
    transform_node.SetName(_stem(path))
    scene.AddNode(transform_node)
    return transform_node


def _write_format(path: Path) -> str:
    name = path.name.lower()
    for suffix in (".nii.gz", ".seg.nrrd") + VOLUME_FILE_SUFFIXES + TRANSFORM_FILE_SUFFIXES:
        if name.endswith(suffix):
            return suffix.lstrip(".").split(".")[-1] if suffix != ".nii.gz" else "nii.gz"
    return path.suffix.lstrip(".")


def _stem(path: Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".seg.nrrd", ".mrk.json"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _node_name(node) -> str:
    return node.GetName() if node is not None else "None"


def vtk_errors_to_log() -> None:
    """Route VTK's error and warning output to Python logging instead of the terminal."""
    output = vtk.vtkStringOutputWindow()
    vtk.vtkOutputWindow.SetInstance(output)
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)  # MRML storage nodes log there directly


# -- markups and transform files ------------------------------------------------------------------

#: Markups file suffixes read and written with Slicer's markups storage nodes.
MARKUPS_FILE_SUFFIXES = (".mrk.json", ".fcsv")


def read_transform_file(scene, path, *, moving_geometry: VolumeGeometry | None = None,
                        fixed_geometry: VolumeGeometry | None = None):
    """Read any transform file into a new linear transform node ("to parent" = moving to fixed, RAS).

    ITK files (``.h5``, ``.tfm``, ``.txt``) go through Slicer's transform storage node, which handles
    ITK's "from parent" LPS convention; ``.json``, ``.mat4`` and FLIRT ``.mat`` through
    :mod:`transform_files` (FLIRT needs both volumes' geometries).

    Returns
    -------
    vtkMRMLLinearTransformNode
        Added to ``scene``.

    Raises
    ------
    TransformFileError, FileNotFoundError
    """
    if transform_files.transform_file_kind(path) == "itk":
        transform_node = load_transform_file(scene, path)
        transform_to_parent_matrix(transform_node)  # refuses a non-linear transform
        return transform_node
    matrix = transform_files.read_transform(path, moving_geometry=moving_geometry, fixed_geometry=fixed_geometry)
    return set_linear_transform(scene, matrix, name=_stem(Path(path)))


def write_transform_file(scene, transform_node, path, *, force: bool = False,
                         moving_geometry: VolumeGeometry | None = None,
                         fixed_geometry: VolumeGeometry | None = None) -> Path:
    """Write a linear transform node's "to parent" matrix to a transform file chosen by suffix.

    ITK suffixes are written by Slicer's storage node (as "from parent" LPS); ``.json``/``.mat4``
    as plain RAS matrices; FLIRT ``.mat`` needs the geometries, taken by default from the node's
    moving/fixed volume references (set by :func:`set_linear_transform`).

    Raises
    ------
    TransformFileError, OutputExistsError
    """
    matrix = transform_to_parent_matrix(transform_node)
    kind = transform_files.transform_file_kind(path)
    if kind == "itk":
        return save_node(transform_node, path, force=force)
    if kind == "reg":
        return _write_registration_file(scene, transform_node, matrix, path, force=force)
    if kind == "flirt":
        moving_geometry = moving_geometry or _referenced_geometry(scene, transform_node, MOVING_VOLUME_REFERENCE_ROLE)
        fixed_geometry = fixed_geometry or _referenced_geometry(scene, transform_node, FIXED_VOLUME_REFERENCE_ROLE)
    return transform_files.write_transform(path, matrix, force=force, moving_geometry=moving_geometry,
                                           fixed_geometry=fixed_geometry)


def _write_registration_file(scene, transform_node, moving_to_fixed_ras, path, *, force: bool) -> Path:
    """Write a DICOM Spatial Registration relating the DICOM series the transform node references."""
    fixed, moving = (scene.GetNodeByID(transform_node.GetNodeReferenceID(role) or "")
                     for role in (FIXED_VOLUME_REFERENCE_ROLE, MOVING_VOLUME_REFERENCE_ROLE))
    if fixed is None or moving is None or dicom_source(fixed) is None or dicom_source(moving) is None:
        raise TransformFileError(f"{path}: a DICOM REG relates two DICOM series: both volumes must be loaded from "
                                 "DICOM (this transform does not reference two such volumes)")
    fixed_header = pydicom.dcmread(dicom_source(fixed)["files"][0], stop_before_pixels=True)
    return dicom_reg.write_registration(path, moving_to_fixed_ras, _series_reference(fixed),
                                        _series_reference(moving), reference_dataset=fixed_header, force=force)


def _series_reference(volume_node) -> dicom_reg.SeriesReference:
    """The UIDs a DICOM REG needs about a volume loaded from DICOM."""
    first_file = dicom_source(volume_node)["files"][0]
    sop_class_uid = pydicom.dcmread(first_file, stop_before_pixels=True, specific_tags=["SOPClassUID"]).SOPClassUID
    return dicom_reg.SeriesReference(
        series_instance_uid=volume_node.GetAttribute(SERIES_UID_ATTRIBUTE),
        frame_of_reference_uid=frame_of_reference_uid(volume_node),
        sop_instance_uids=volume_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE).split(),
        sop_class_uid=sop_class_uid,
        study_instance_uid=volume_node.GetAttribute(STUDY_UID_ATTRIBUTE))


def _referenced_geometry(scene, transform_node, role: str) -> VolumeGeometry | None:
    volume_node = transform_node.GetNodeReference(role)
    return volume_geometry(volume_node, world=False) if volume_node is not None else None


def load_points_file(scene, path) -> tuple[np.ndarray, list[str]]:
    """Read a point list: Slicer markups (``.mrk.json``, ``.fcsv``) or CSV ``x,y,z[,label]``.

    Markups are read with Slicer's markups storage nodes, which honour the file's coordinate system
    (``.mrk.json`` is LPS unless it says otherwise); the temporary node is removed afterwards.

    Returns
    -------
    points_ras : (N, 3) ndarray, mm, RAS
    labels : list of str
        One per point (empty where the file has none).

    Raises
    ------
    LandmarkError, FileNotFoundError
    """
    path = check_input_file(path, "points file")
    if not path.name.lower().endswith(MARKUPS_FILE_SUFFIXES):
        points = read_points_csv(path)
        return points.points_ras, points.labels
    markups_node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(_stem(path)))
    try:
        storage_node = _markups_storage_node(path)
        storage_node.SetFileName(str(path))
        if not storage_node.ReadData(markups_node):
            raise LandmarkError(f"{path}: Slicer could not read this markups file")
        count = markups_node.GetNumberOfControlPoints()
        if count == 0:
            raise LandmarkError(f"{path}: the markups file holds no control points")
        points = np.array([markups_node.GetNthControlPointPosition(n) for n in range(count)])
        labels = [markups_node.GetNthControlPointLabel(n) for n in range(count)]
    finally:
        scene.RemoveNode(markups_node)
    return points, labels


def save_points_file(scene, path, points_ras, labels=None, *, force: bool = False,
                     coordinate_system: str = "LPS") -> Path:
    """Write points as a Slicer markups file (``.mrk.json``, ``.fcsv``) or CSV, atomically.

    Parameters
    ----------
    points_ras : (N, 3) array_like, mm, RAS
    labels : sequence of str, optional
    coordinate_system : {"LPS", "RAS"}
        Frame of the numbers in a markups file (Slicer's default is LPS); CSV files are RAS.
    """
    path = Path(path)
    if not path.name.lower().endswith(MARKUPS_FILE_SUFFIXES):
        return write_points_csv(path, points_ras, labels, force=force)
    markups_node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(_stem(path)))
    try:
        for n, point in enumerate(np.asarray(points_ras, dtype=float)):
            markups_node.AddControlPoint(vtk.vtkVector3d(*point), labels[n] if labels else f"F-{n + 1}")
        with atomic_output(path, force=force) as temporary_path:
            storage_node = _markups_storage_node(path)
            storage_node.SetFileName(str(temporary_path))
            storage_node.SetCoordinateSystem(storage_node.GetCoordinateSystemFromString(coordinate_system))
            if not storage_node.WriteData(markups_node):
                raise AlignSeriesError(f"{path}: Slicer could not write the markups file")
    finally:
        scene.RemoveNode(markups_node)
    return path


def _markups_storage_node(path: Path):
    if path.name.lower().endswith(".fcsv"):
        return slicer.vtkMRMLMarkupsFiducialStorageNode()
    return slicer.vtkMRMLMarkupsJsonStorageNode()


# -- DICOM --------------------------------------------------------------------------------------

#: Largest difference (mm per index step, and mm for the origin) tolerated between a loaded node's
#: IJKToRAS and the DICOM header geometry: the position tolerance of :mod:`AlignSeriesLib.dicom_stack`.
DICOM_GEOMETRY_ATOL = dicom_series.POSITION_ATOL


def load_dicom_series(scene, paths, *, regularize: bool = True, progress=None) -> list:
    """Scan DICOM files/folders and load every volume found as a scalar volume node.

    Parameters
    ----------
    scene : vtkMRMLScene
    paths : str, Path or sequence of them
        DICOM folders (searched recursively) and files.
    regularize : bool
        Resample irregular series onto an orthogonal grid (default); when False a series that
        cannot be placed without resampling is refused (:class:`IrregularSeriesError`).
    progress : callable, optional
        Called with the fraction of the header scan done; returning True cancels.

    Returns
    -------
    list of vtkMRMLScalarVolumeNode
        One per volume, in :func:`AlignSeriesLib.dicom_series.scan_dicom` order.
    """
    scan = dicom_series.scan_dicom(paths, regularize=regularize, progress=progress)
    for path, reason in scan.skipped:
        logger.warning("skipped %s: %s", path, reason)
    return [load_dicom_volume(scene, volume, registrations=scan.registrations) for volume in scan.volumes]


def load_dicom_volume(scene, dicom_volume, *, name: str | None = None, registrations=()):
    """Load one scanned DICOM volume into a new scalar volume node on its exact geometry.

    Pixels are read with pydicom (straight from the files when uncompressed); a transfer syntax
    pydicom cannot decode (e.g. JPEG Lossless without a plugin) is read with Slicer's ITK/GDCM
    reader, given the files in k order, after checking that Slicer places them where the headers do.
    The node keeps the DICOM UIDs (:data:`INSTANCE_UIDS_ATTRIBUTE`: SOPInstanceUIDs in slice order,
    space-separated) and the reconstruction warnings (:data:`WARNINGS_ATTRIBUTE`).

    Parameters
    ----------
    scene : vtkMRMLScene
    dicom_volume : AlignSeriesLib.dicom_series.DicomVolume
    name : str, optional
        Node name; default the volume's name.
    registrations : sequence of path
        DICOM REG files found with the series, kept for ``frameOfReference`` mode.

    Raises
    ------
    DicomError
        If the pixels cannot be read, are too large, or the node's IJKToRAS differs from the headers.
    """
    try:
        voxels_kji = dicom_volume.read_voxels()
    except DicomDecodeError as error:
        logger.info("%s; reading with Slicer's DICOM reader instead", error)
        voxels_kji = dicom_volume.read_voxels(read_slices=lambda volume: _slicer_read_slices(scene, volume))
    attributes = {
        SERIES_UID_ATTRIBUTE: dicom_volume.series_instance_uid,
        STUDY_UID_ATTRIBUTE: dicom_volume.study_instance_uid,
        FRAME_OF_REFERENCE_ATTRIBUTE: dicom_volume.frame_of_reference_uid or "",
        INSTANCE_UIDS_ATTRIBUTE: " ".join(dicom_volume.sop_instance_uids),
        SOURCE_FILES_ATTRIBUTE: json.dumps({"files": dicom_volume.files, "frames": dicom_volume.frames,
                                            "regularized": dicom_volume.regularized}),
        REGISTRATIONS_ATTRIBUTE: json.dumps([str(path) for path in registrations]),
    }
    node = add_volume_node(scene, voxels_kji, dicom_volume.geometry, name or dicom_volume.name, attributes=attributes)
    set_node_warnings(node, [warning.to_dict() for warning in dicom_volume.warnings])
    for warning in dicom_volume.warnings:
        logger.warning("'%s' [%s]: %s", node.GetName(), warning.code, warning.message)
    _check_node_geometry(node, dicom_volume.geometry, dicom_volume.name, columns=range(4))
    return node


def _slicer_read_slices(scene, dicom_volume) -> np.ndarray:
    """(K, Rows, Columns) source slices of a single-frame volume, read by Slicer's ITK/GDCM reader in k order."""
    if any(frame is not None for frame in dicom_volume.frames):
        raise DicomError(f"'{dicom_volume.name}': compressed multi-frame file {dicom_volume.files[0]} needs a pydicom "
                         "decoder plugin (pylibjpeg or python-gdcm)")
    file_list = vtk.vtkStringArray()
    for path in dicom_volume.files:
        file_list.InsertNextValue(path)
    node = module_logic(scene, "Volumes").AddArchetypeVolume(dicom_volume.files[0], "AlignSeriesDicomRead", 0,
                                                              file_list)
    try:
        if node is None or node.GetImageData() is None:
            raise DicomError(f"'{dicom_volume.name}': neither pydicom nor Slicer could decode PixelData (7FE0,0010) "
                             f"of {dicom_volume.files[0]} and {len(dicom_volume.files) - 1} more files "
                             f"(TransferSyntaxUID {dicom_volume.slices[0].pixels.transfer_syntax})")
        source_grid = VolumeGeometry.from_ijk_to_lps(node.GetImageData().GetDimensions(),
                                                     dicom_volume.slice_ijk_to_lps[0])
        # Slicer's k axis is its own estimate (sheared or averaged for irregular series): compare i, j, origin.
        _check_node_geometry(node, source_grid, dicom_volume.name, columns=(0, 1, 3))
        return volume_array(node)
    finally:
        _remove_with_helpers(scene, node)


def _check_node_geometry(node, expected: VolumeGeometry, what: str, *, columns) -> None:
    """Raise DicomError when the node's IJKToRAS columns differ from ``expected`` by more than 0.02 mm/voxel."""
    actual = volume_geometry(node, world=False)
    columns = list(columns)
    difference = np.abs(actual.ijk_to_ras[:3, columns] - expected.ijk_to_ras[:3, columns]).max()
    if actual.dimensions != expected.dimensions or difference > DICOM_GEOMETRY_ATOL:
        raise DicomError(
            f"'{what}': the loaded node's IJKToRAS differs from the DICOM headers by {difference:.4f} mm "
            f"(tolerance {DICOM_GEOMETRY_ATOL} mm; dimensions {actual.dimensions} vs {expected.dimensions})")


def _remove_with_helpers(scene, node) -> None:
    """Remove a temporary volume node with its display and storage nodes."""
    if node is None:
        return
    helpers = [node.GetStorageNode()] + [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None:
            scene.RemoveNode(helper)
