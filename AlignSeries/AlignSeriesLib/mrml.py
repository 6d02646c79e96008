"""The MRML bridge: converts between Slicer's MRML nodes and AlignSeriesLib's core objects.

This is the only module of AlignSeriesLib that imports ``slicer``. It runs inside the Slicer
application and on ``slicer-core`` (the PyPI wheel of Slicer's MRML), where :func:`new_scene`
builds a scene the way the application does.

Frames: MRML world coordinates are RAS; a transform node's "to parent" matrix maps moving RAS to
fixed RAS (see :func:`set_linear_transform`). Files on disk are read and written with Slicer's own
storage nodes, so their LPS conventions are handled by Slicer, not here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .errors import AlignSeriesError, GeometryError, TransformFileError
from .files import atomic_output, check_input_file
from .geometry import VolumeGeometry, as_matrix4

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
    # The application logic keeps only weak references: hold the logics as long as the scene lives.
    _HEADLESS_LOGICS[scene] = logics
    if getattr(slicer, "mrmlScene", None) is None:
        slicer.mrmlScene = scene
    return scene


_HEADLESS_LOGICS: dict = {}


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
        raise GeometryError(
            f"'{_node_name(node)}' is under the non-linear transform '{parent.GetName()}': "
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
    node.CreateDefaultDisplayNodes()
    return node


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


def frame_of_reference_uid(volume_node) -> str | None:
    """The FrameOfReferenceUID kept on a volume node by AlignSeries' DICOM loader, if any."""
    value = volume_node.GetAttribute(FRAME_OF_REFERENCE_ATTRIBUTE)
    return value or None


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
    if labelmap is None:
        labelmap = path.name.lower().endswith(".seg.nrrd")
    volumes_logic = module_logic(scene, "Volumes")
    node_name = name or _stem(path)
    options = 1 if labelmap else 0  # bit 0 of AddArchetypeVolume's options: load as label map
    node = volumes_logic.AddArchetypeVolume(str(path), node_name, options)
    if node is None or node.GetImageData() is None:
        raise AlignSeriesError(f"{path}: Slicer could not read this file as a volume")
    return node


def save_node(node, path, *, force: bool = False) -> Path:
    """Write a volume or transform node with its default storage node, atomically.

    The file is written beside its destination and renamed into place, so a failure leaves no
    partial file; an existing file is refused unless ``force``.
    """
    path = Path(path)
    with atomic_output(path, force=force) as temporary_path:
        storage_node = node.CreateDefaultStorageNode()
        storage_node.SetFileName(str(temporary_path))
        storage_node.SetWriteFileFormat(_write_format(path))
        if hasattr(storage_node, "SetUseCompression"):
            storage_node.SetUseCompression(path.suffix.lower() in (".gz", ".h5", ".nrrd"))
        if not storage_node.WriteData(node):
            raise AlignSeriesError(f"{path}: Slicer could not write '{node.GetName()}' in this format")
    return path


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
