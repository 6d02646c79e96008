"""The MRML bridge: converts between Slicer's MRML nodes and AlignSeriesLib's core objects.

With :mod:`AlignSeriesLib.mrml_files` (storage-node I/O) this is the only part of AlignSeriesLib
below :mod:`AlignSeriesLib.operations` that imports ``slicer``. It runs inside the Slicer
application and on ``slicer-core`` (the PyPI wheel of Slicer's MRML), where :func:`new_scene`
builds a scene the way the application does. It holds no use case and no report text.

Frames: MRML world coordinates are RAS; a transform node's "to parent" matrix maps moving RAS to
fixed RAS (see :func:`set_linear_transform`).

A volume loaded from DICOM travels through the layers as its
:class:`~AlignSeriesLib.dicom.series.DicomVolume` (slices, files, UIDs, planes, warnings). On a node,
node attributes are that object's save/reload form only: :func:`dicom_series_of` gives the object
back, from memory when this process loaded it, else by a header-only scan of the files the node names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import slicer
from vtkmodules.util import numpy_support

from . import preview, reslice
from . import vtk_classes as vtk
from .dicom.stack import POSITION_ATOL
from .errors import (
    AlignSeriesError,
    AlignSeriesWarning,
    DicomDecodeError,
    DicomError,
    GeometryError,
    MissingDependencyError,
    TransformFileError,
)
from .geometry import VolumeGeometry, as_matrix4
from .label_table import Code, Label, LabelTable

if TYPE_CHECKING:  # the DICOM modules (and pydicom) are imported where DICOM is read: a volume file job needs neither
    from .dicom.series import DicomVolume

logger = logging.getLogger(__name__)

#: Node reference roles that link a registration transform to the volumes it relates: Slicer's own
#: (``vtkMRMLTransformNode::GetMovingNodeReferenceRole``), which SlicerRT's REG export reads too.
MOVING_VOLUME_REFERENCE_ROLE = slicer.vtkMRMLTransformNode.GetMovingNodeReferenceRole()
FIXED_VOLUME_REFERENCE_ROLE = slicer.vtkMRMLTransformNode.GetFixedNodeReferenceRole()

#: Node attribute names under which DICOM identity is kept on a volume node (Slicer's DICOM
#: plugins use ``DICOM.instanceUIDs``; the others follow the same pattern).
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
SERIES_UID_ATTRIBUTE = "DICOM.SeriesInstanceUID"
FRAME_OF_REFERENCE_ATTRIBUTE = "DICOM.FrameOfReferenceUID"
STUDY_UID_ATTRIBUTE = "DICOM.StudyInstanceUID"
#: JSON list of ``{"code", "message"}`` geometry warnings found when the volume was loaded.
WARNINGS_ATTRIBUTE = "AlignSeries.warnings"
#: JSON ``{"files", "frames", "regularized"}``: the DICOM source slices in k order (the save form of the series).
SOURCE_FILES_ATTRIBUTE = "AlignSeries.sourceFiles"
#: JSON list of DICOM Spatial Registration files found beside the volume's files.
REGISTRATIONS_ATTRIBUTE = "AlignSeries.registrations"
#: JSON label table (:mod:`.label_table`) of a label map: from a DICOM SEG or a segmentation's segments.
LABEL_TABLE_ATTRIBUTE = "AlignSeries.LabelTable"


# -- scene --------------------------------------------------------------------------------------


def in_slicer_application() -> bool:
    """True inside the Slicer application (where ``slicer.app`` and module logics exist)."""
    return getattr(slicer, "app", None) is not None


def new_scene() -> slicer.vtkMRMLScene:
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
        raise GeometryError(f"volume '{node_name(volume_node)}' has no image data")
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    matrix = numpy_matrix(ijk_to_ras)
    if world:
        matrix = parent_to_world_matrix(volume_node) @ matrix
    return VolumeGeometry(image.GetDimensions(), matrix)


def parent_to_world_matrix(node, *, below=None) -> np.ndarray:
    """4x4 RAS matrix of all linear transforms above ``node`` (identity when it has none).

    Parameters
    ----------
    node : vtkMRMLTransformableNode
    below : vtkMRMLTransformNode, optional
        When this transform is above ``node``, only the transforms between ``node`` and it count: the
        matrix then maps ``node``'s coordinates to the frame that ``below`` maps from. A transform being
        computed into ``below`` is so computed from where the node lies without it (never counted twice).

    Raises
    ------
    GeometryError
        If a transform that counts is not linear.
    """
    chain = transform_chain(node)
    ids = [transform.GetID() for transform in chain]
    if below is not None and below.GetID() in ids:
        chain = chain[:ids.index(below.GetID())]
    elif chain:  # the whole chain, as MRML composes it
        _check_linear(node, chain)
        to_world = vtk.vtkMatrix4x4()
        chain[0].GetMatrixTransformToWorld(to_world)
        return numpy_matrix(to_world)
    _check_linear(node, chain)
    matrix = np.eye(4)
    for transform in chain:  # nearest first: each one maps into the next one's frame
        matrix = transform_to_parent_matrix(transform) @ matrix
    return matrix


def transform_chain(node) -> list:
    """The transform nodes above ``node``, nearest first (its parent, that one's parent, ...)."""
    chain = []
    parent = node.GetParentTransformNode() if node is not None else None
    while parent is not None:
        chain.append(parent)
        parent = parent.GetParentTransformNode()
    return chain


def is_under(node, transform_node) -> bool:
    """True when ``transform_node`` is one of the transforms above ``node`` (it moves the node already)."""
    return transform_node is not None and transform_node.GetID() in [t.GetID() for t in transform_chain(node)]


def _check_linear(node, chain: list) -> None:
    """Raise GeometryError naming the first non-linear transform of ``chain`` above ``node``."""
    non_linear = next((transform for transform in chain if not transform.IsLinear()), None)
    if non_linear is not None:
        raise GeometryError(
            f"'{node_name(node)}' is under the non-linear transform '{non_linear.GetName()}': "
            "harden it or remove it from the transform hierarchy first"
        )


def set_volume_geometry(volume_node, geometry: VolumeGeometry) -> None:
    """Set a volume node's IJKToRAS (origin, spacing, directions) from a geometry."""
    volume_node.SetIJKToRASMatrix(vtk_matrix(geometry.ijk_to_ras))


def add_volume_node(scene, array_kji, geometry: VolumeGeometry, name: str, *, labelmap: bool = False,
                    attributes: dict | None = None, copy: bool = True):
    """Add a new volume node holding a copy of ``array_kji`` (or the array itself) placed on ``geometry``.

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
    copy : bool
        If False and VTK owns ``array_kji``'s memory (:func:`new_voxel_array`, a resampling result), the node
        takes that memory without copying: for a fresh array that nobody else changes afterwards.

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
    node.SetAndObserveImageData(_image_data_from_array(array_kji, copy=copy))
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
    low, high = preview.window_of(array_kji)
    display_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeDisplayNode")
    display_node.SetAutoWindowLevel(False)
    display_node.SetWindowLevelMinMax(low, high)
    display_node.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    volume_node.SetAndObserveDisplayNodeID(display_node.GetID())


def set_volume_array(volume_node, array_kji, geometry: VolumeGeometry, *, copy: bool = True) -> None:
    """Replace a volume node's voxels and grid (in world coordinates: its parent transform is removed).

    ``copy=False`` shares the array's memory, as in :func:`add_volume_node`.
    """
    set_volume_geometry(volume_node, geometry)
    volume_node.SetAndObserveImageData(_image_data_from_array(np.asarray(array_kji), copy=copy))
    volume_node.SetAndObserveTransformNodeID(None)


def volume_array(volume_node, *, copy: bool = True) -> np.ndarray:
    """A volume node's voxels, indexed ``[k, j, i]``: a copy, or with ``copy=False`` a read-only view.

    The view shares the node's memory (no time, no memory): for reading while the node keeps its image data.
    """
    if volume_node is None or volume_node.GetImageData() is None:
        raise GeometryError(f"volume '{node_name(volume_node)}' has no image data")
    image = volume_node.GetImageData()  # as slicer.util.arrayFromVolume, without its `import vtk`
    view = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])
    if copy:
        return view.copy()
    view.flags.writeable = False
    return view


def _image_data_from_array(array_kji: np.ndarray, *, copy: bool = True) -> vtk.vtkImageData:
    """A vtkImageData holding ``array_kji``: a copy, or with ``copy=False`` the VTK array whose memory it is.

    Only memory that VTK owns is shared (:func:`new_voxel_array`, a filter's output): VTK then keeps it
    alive by reference counting. Any other array is copied (numpy memory under a VTK array crashed when
    the wrapper holding the numpy reference went away before the C++ array).
    """
    image = vtk.vtkImageData()
    image.SetDimensions(array_kji.shape[::-1])
    flat = np.ascontiguousarray(array_kji).reshape(-1)
    owner = None if copy else _vtk_array_of(flat)
    image.GetPointData().SetScalars(owner if owner is not None else numpy_support.numpy_to_vtk(flat, deep=True))
    return image


def _vtk_array_of(flat: np.ndarray):
    """The single-component VTK array whose whole memory ``flat`` views with the same type, else None."""
    base = flat
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    owner = getattr(base, "obj", None) if isinstance(base, memoryview) else None
    if not isinstance(owner, vtk.vtkDataArray) or owner.GetNumberOfComponents() != 1:
        return None
    try:
        same_type = owner.GetDataType() == numpy_support.get_vtk_array_type(flat.dtype)
    except KeyError:
        return None
    whole = np.frombuffer(owner, dtype=np.uint8)
    same_memory = whole.ctypes.data == flat.ctypes.data and whole.nbytes == flat.nbytes
    return owner if same_type and same_memory else None


def new_voxel_array(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` x ``dtype`` whose memory a VTK array owns.

    :func:`add_volume_node` with ``copy=False`` then gives it to a node without copying: read voxels
    straight into it.
    """
    return reslice.filled_array(shape, dtype, None)


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




# -- segmentations -------------------------------------------------------------------------------


@contextlib.contextmanager
def as_labelmap(scene, node) -> Iterator:
    """Within this block, a segmentation node as a temporary label map node; any other node as it is.

    Each segment keeps its label value (its ``LabelValue``); segments whose values are not distinct and
    non-zero are numbered 1..N in segment order instead. The label map lies where the segmentation does
    (same parent transform). Every node the conversion added is removed on exit.

    Raises
    ------
    AlignSeriesError
        If the segmentation has no segment or cannot be converted.
    """
    if node is None or not node.IsA("vtkMRMLSegmentationNode"):
        yield node
        return
    segmentation = node.GetSegmentation()
    segment_ids = vtk.vtkStringArray()
    values = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_ids.InsertNextValue(segmentation.GetNthSegmentID(index))
        values.append(segmentation.GetNthSegment(index).GetLabelValue())
    if not values:
        raise AlignSeriesError(f"the segmentation '{node.GetName()}' has no segment to export")
    if 0 in values or len(set(values)) != len(values):
        values = list(range(1, len(values) + 1))
    before = _node_ids(scene)
    try:
        colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "AlignSeriesSegmentColors")
        colors.SetTypeToUser()
        colors.SetNumberOfColors(max(values) + 1)
        colors.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
        for index, value in enumerate(values):
            colors.SetColor(value, segmentation.GetNthSegment(index).GetName(), 1.0, 1.0, 1.0, 1.0)
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", node.GetName())
        converted = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            node, segment_ids, labelmap, None, slicer.vtkSegmentation.EXTENT_UNION_OF_EFFECTIVE_SEGMENTS, colors)
    finally:  # the label map, its display node, the colour table: everything the conversion added
        temporary = [scene.GetNodeByID(node_id) for node_id in _node_ids(scene) - before]
    try:
        if not converted:
            raise AlignSeriesError(f"the segmentation '{node.GetName()}' could not be converted to a label map")
        labelmap.SetAndObserveTransformNodeID(node.GetTransformNodeID())
        labelmap.SetAttribute(LABEL_TABLE_ATTRIBUTE, _segment_label_table(segmentation, values).to_json())
        yield labelmap
    finally:
        for added in temporary:
            if added is not None and added.GetScene() is not None:
                scene.RemoveNode(added)


def _segment_label_table(segmentation, values: list[int]) -> LabelTable:
    """The segments' names, colours and terminology codes (Slicer's ``TerminologyEntry`` tag), by label value."""
    labels = []
    for index, value in enumerate(values):
        segment = segmentation.GetNthSegment(index)
        color = tuple(int(round(255 * channel)) for channel in segment.GetColor())
        entry = vtk.reference("")
        category = kind = None
        if segment.GetTag("TerminologyEntry", entry):  # "context~SCT^value^meaning~SCT^value^meaning~…"
            parts = str(entry).split("~")
            category, kind = (_terminology_code(part) for part in (parts + ["", ""])[1:3])
        labels.append(Label(value, segment.GetName(), category, kind, color))  # type: ignore[arg-type]
    return LabelTable(labels, "segmentation")


def _terminology_code(text: str) -> Code | None:
    scheme, value, meaning = (text.split("^") + ["", "", ""])[:3]
    return Code(value, scheme, meaning) if scheme and value and meaning else None


def _node_ids(scene) -> set:
    nodes = scene.GetNodes()
    return {nodes.GetItemAsObject(n).GetID() for n in range(nodes.GetNumberOfItems())}


# -- DICOM series on nodes -----------------------------------------------------------------------

#: The series object of each node this process loaded from DICOM (the attributes are its save form).
_SERIES_OF_NODE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def dicom_series_of(volume_node) -> DicomVolume | None:
    """The DICOM series a volume node was loaded from, or None for a volume that did not come from DICOM.

    The object this process loaded is returned as it is. Otherwise (a saved and reloaded scene, a
    volume loaded by Slicer's DICOM module) the node's files are scanned again, headers only, and the
    volume holding the node's SOPInstanceUIDs is returned.
    """
    if volume_node is None:
        return None
    known = _SERIES_OF_NODE.get(volume_node)
    if known is not None:
        return known
    files = _source_files(volume_node)
    uids = (volume_node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    if not files or not uids:
        return None
    regularized = json.loads(volume_node.GetAttribute(SOURCE_FILES_ATTRIBUTE) or "{}").get("regularized", False)
    from .dicom.series import scan_dicom
    scan = scan_dicom(sorted(set(files)), regularize=regularized)
    found = next((volume for volume in scan.volumes if volume.sop_instance_uids == uids), None)
    if found is None:
        logger.warning("'%s': its DICOM files no longer hold the slices it was loaded from", volume_node.GetName())
        return None
    _SERIES_OF_NODE[volume_node] = found
    return found


def _source_files(volume_node) -> list[str]:
    """The node's DICOM files in k order: from AlignSeries' attribute, or Slicer's DICOM database."""
    text = volume_node.GetAttribute(SOURCE_FILES_ATTRIBUTE)
    return json.loads(text)["files"] if text else _database_files(volume_node)


def registration_files(volume_node) -> list[str]:
    """DICOM REG files found beside a volume's DICOM files when it was loaded."""
    text = volume_node.GetAttribute(REGISTRATIONS_ATTRIBUTE)
    return json.loads(text) if text else []


def frame_of_reference_uid(volume_node) -> str | None:
    """A volume's FrameOfReferenceUID: kept by AlignSeries' DICOM loader, or read from its first DICOM file.

    For a volume loaded by Slicer's DICOM module, the file comes from Slicer's DICOM database.
    """
    value = volume_node.GetAttribute(FRAME_OF_REFERENCE_ATTRIBUTE)
    if value:
        return value
    files = _database_files(volume_node)
    return _dicom_database().fileValue(files[0], "0020,0052") or None if files else None


def node_warnings(volume_node) -> list[AlignSeriesWarning]:
    """Warnings kept on a volume node, e.g. from DICOM reconstruction or resampling."""
    text = volume_node.GetAttribute(WARNINGS_ATTRIBUTE) if volume_node is not None else None
    return [AlignSeriesWarning.from_dict(item) for item in json.loads(text)] if text else []


def set_node_warnings(volume_node, warnings) -> None:
    """Keep warnings on a volume node (as JSON ``{"code", "message"}`` in a node attribute)."""
    volume_node.SetAttribute(WARNINGS_ATTRIBUTE, json.dumps([warning.to_dict() for warning in warnings]))


# -- transforms ---------------------------------------------------------------------------------


def set_linear_transform(scene, moving_to_fixed_ras, *, moving_volume=None, fixed_volume=None,
                         transform_node=None, name: str = "AlignSeriesTransform"):
    """Store a moving-to-fixed RAS matrix in a linear transform node.

    The matrix maps world RAS to world RAS: it becomes the node's "to parent" matrix (composed with the
    inverse of the node's own parent transforms, when it has any), so placing the node above the moving
    volume's chain aligns it with the fixed one. The Moving/Fixed node references are set when volumes are given.

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
    if transform_node.GetParentTransformNode() is not None:
        matrix = np.linalg.inv(parent_to_world_matrix(transform_node)) @ matrix
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
        raise TransformFileError(f"transform '{node_name(transform_node)}' is not a linear transform")
    matrix = vtk.vtkMatrix4x4()
    transform_node.GetMatrixTransformToParent(matrix)
    return numpy_matrix(matrix)


# -- DICOM --------------------------------------------------------------------------------------

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
    dicom_volume : AlignSeriesLib.dicom.series.DicomVolume
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
        voxels_kji = dicom_volume.read_voxels(allocate=new_voxel_array)  # read into the node's own memory
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
    node = add_volume_node(scene, voxels_kji, dicom_volume.geometry, name or dicom_volume.name, attributes=attributes,
                           copy=False)  # the voxels were just read: the node takes them
    set_node_warnings(node, dicom_volume.warnings)
    _SERIES_OF_NODE[node] = dicom_volume
    for warning in dicom_volume.warnings:
        logger.warning("'%s' [%s]: %s", node.GetName(), warning.code, warning.message)
    _check_node_geometry(node, dicom_volume.geometry, dicom_volume.name, columns=range(4))
    return node


def _slicer_read_slices(scene, dicom_volume) -> np.ndarray:
    """(K, Rows, Columns) source slices of a single-frame volume, read by Slicer's ITK/GDCM reader in k order."""
    what = ("MOSAIC" if any(header.tile is not None for header in dicom_volume.slices)
            else "multi-frame" if any(frame is not None for frame in dicom_volume.frames) else None)
    if what is not None:  # Slicer's reader cannot unpack MOSAIC tiles or place frames: pydicom's decoders must
        from .dicom.pixels import DECODER_REQUIREMENTS
        decoders = " ".join(DECODER_REQUIREMENTS)
        raise MissingDependencyError(
            f"'{dicom_volume.name}': compressed {what} file {dicom_volume.files[0]} needs pydicom's decoders, which "
            f"are not installed: pip install {decoders}", package=decoders)
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
        return volume_array(node)  # a copy: the node goes
    finally:
        remove_with_helpers(scene, node)


def _check_node_geometry(node, expected: VolumeGeometry, what: str, *, columns) -> None:
    """Raise DicomError when the node's IJKToRAS columns differ from ``expected`` by more than the position
    tolerance of :mod:`AlignSeriesLib.dicom.stack` (mm per index step, and mm for the origin)."""
    actual = volume_geometry(node, world=False)
    columns = list(columns)
    difference = np.abs(actual.ijk_to_ras[:3, columns] - expected.ijk_to_ras[:3, columns]).max()
    if actual.dimensions != expected.dimensions or difference > POSITION_ATOL:
        raise DicomError(
            f"'{what}': the loaded node's IJKToRAS differs from the DICOM headers by {difference:.4f} mm "
            f"(tolerance {POSITION_ATOL} mm; dimensions {actual.dimensions} vs {expected.dimensions})")


def node_name(node) -> str:
    """A node's name for messages ("None" for no node)."""
    return node.GetName() if node is not None else "None"


def remove_with_helpers(scene, node) -> None:
    """Remove a temporary volume node with its display and storage nodes."""
    if node is None:
        return
    helpers = [node.GetStorageNode()] + [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None:
            scene.RemoveNode(helper)


# -- VTK messages ---------------------------------------------------------------------------------

#: The window VTK writes its messages to once :func:`capture_vtk_messages` ran, and how much of it was read.
_VTK_OUTPUT: dict = {"window": None, "read": 0}


def capture_vtk_messages() -> None:
    """Collect VTK's and ITK's error and warning output instead of printing it (see :func:`vtk_messages`)."""
    if _VTK_OUTPUT["window"] is None:
        window = _VTK_OUTPUT["window"] = vtk.vtkStringOutputWindow()
        vtk.vtkOutputWindow.SetInstance(window)
        vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)  # MRML storage nodes log there directly


def vtk_messages() -> list[str]:
    """VTK/ITK messages collected since the last call, each also logged as a warning; empty when not capturing."""
    if _VTK_OUTPUT["window"] is None:
        return []
    text = _VTK_OUTPUT["window"].GetOutput()
    unread, _VTK_OUTPUT["read"] = text[_VTK_OUTPUT["read"]:], len(text)
    messages = [line.strip() for line in unread.splitlines() if line.strip()]
    for message in messages:
        logger.warning("VTK: %s", message)
    return messages
