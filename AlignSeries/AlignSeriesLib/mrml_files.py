"""Storage-node I/O of the MRML bridge: volume, transform and markups files read and written by Slicer.

Slicer's own storage nodes do the reading and writing, so their conventions hold: ITK transform
files are "from parent" LPS (the storage node inverts and converts), markups files declare their
coordinate system. Every write is atomic (:func:`AlignSeriesLib.files.atomic_output`): no partial
file, no overwrite without ``force``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import slicer

from . import preview, transform_files
from . import vtk_classes as vtk
from .errors import AlignSeriesError, GeometryError, LandmarkError, OutputWriteError, TransformFileError
from .files import (
    MARKUPS_FILE_SUFFIXES,
    WRITABLE_VOLUME_SUFFIXES,
    atomic_output,
    check_input_file,
    check_outputs_spare_inputs,
    check_room_to_write,
    destination_of,
    file_stem,
    file_suffix,
    native_stderr_held,
    protected_places,
    temporary_beside,
)
from .geometry import VolumeGeometry
from .mrml import (
    FIXED_VOLUME_REFERENCE_ROLE,
    MOVING_VOLUME_REFERENCE_ROLE,
    SOURCE_FILES_ATTRIBUTE,
    module_logic,
    node_name,
    remove_with_helpers,
    set_linear_transform,
    set_volume_array,
    transform_to_parent_matrix,
    volume_array,
    volume_geometry,
    vtk_messages,
)
from .points_files import read_points_csv, write_points_csv
from .volume_headers import MAX_DECODED_BYTES, check_volume_file, check_voxel_spacing, nifti_scaling

# -- volume files --------------------------------------------------------------------------------------

# Bits of vtkSlicerVolumesLogic's loading options: a label map; this one file (no search of its folder for a
# numbered series of files).
_LABEL_MAP = 1
_SINGLE_FILE = 4


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
    check_volume_file(path, max_bytes=MAX_DECODED_BYTES)
    if labelmap is None:
        labelmap = path.name.lower().endswith(".seg.nrrd")
    volumes_logic = module_logic(scene, "Volumes")
    new_name = name or file_stem(path)
    with _loading_defaults(scene):
        if labelmap:
            node = volumes_logic.AddArchetypeVolume(str(path), new_name, _LABEL_MAP | _SINGLE_FILE)
        else:  # the scalar factory alone: AddArchetypeVolume first tries (reads the file as) DWI, DTI and vectors
            node = volumes_logic.AddArchetypeScalarVolume(str(path), new_name, _SINGLE_FILE, None)
            if node is None:  # every factory, for the reason (e.g. a vector volume)
                vtk_messages()
                node = volumes_logic.AddArchetypeVolume(str(path), new_name, _SINGLE_FILE)
    messages = vtk_messages()  # logged; the reason of a failure
    if node is None or node.GetImageData() is None:
        raise AlignSeriesError(f"{path}: Slicer could not read this file as a volume{_because(messages)}")
    components = node.GetImageData().GetNumberOfScalarComponents()
    if components != 1:
        remove_with_helpers(scene, node)
        raise AlignSeriesError(f"{path}: {components} values per voxel (a vector, RGB or 4D volume); "
                               "AlignSeries aligns and resamples scalar volumes only")
    try:
        check_voxel_spacing(path, node.GetSpacing())
    except AlignSeriesError:
        remove_with_helpers(scene, node)
        raise
    _keep_scaled_integers_integer(node, path)
    display_node = node.GetDisplayNode()
    if display_node is not None and display_node.IsA("vtkMRMLScalarVolumeDisplayNode") and not labelmap:
        display_node.SetWindowLevelMinMax(*preview.window_of(volume_array(node, copy=False)))
    return node


def _keep_scaled_integers_integer(node, path: Path) -> None:
    """Give a NIfTI file of scaled integers (``scl_slope``/``scl_inter``) integer voxels when the scaled values are.

    The reader applies the file's scaling and returns floating point; when every scaled value is a whole
    number that fits 16 (or 32) bits, the volume holds those integers instead, so a DICOM export stores them
    exactly (no fractional RescaleSlope).
    """
    if nifti_scaling(path) is None:
        return
    voxels = volume_array(node, copy=False)
    whole = np.rint(voxels)
    if voxels.dtype.kind != "f" or not np.array_equal(whole, voxels):  # NaN is never equal: stays floating point
        return
    low, high = (float(whole.min()), float(whole.max())) if whole.size else (0.0, 0.0)
    fitting = [dtype for dtype in (np.int16, np.int32) if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max]
    if fitting:
        set_volume_array(node, whole.astype(fitting[0]), volume_geometry(node, world=False))


def read_volume_file_geometry(path) -> VolumeGeometry:
    """The grid of a volume file (RAS), read from its header only: what :func:`load_volume_file` would place.

    The reader is the one Slicer's volume storage node uses (``vtkITKArchetypeImageSeriesScalarReader``), with the
    same options (native orientation and origin, no right-handed flip), asked for its output information only,
    so a reference used as a grid costs milliseconds instead of reading all its voxels.

    Raises
    ------
    FileNotFoundError, AlignSeriesError
        As :func:`load_volume_file` (a header the reader cannot use is refused by a full read, with its reason).
    """
    path = check_input_file(path, "volume file")
    check_volume_file(path, max_bytes=MAX_DECODED_BYTES)
    reader = slicer.vtkITKArchetypeImageSeriesScalarReader()
    reader.SetArchetype(str(path))
    reader.SetSingleFile(1)
    reader.SetUseOrientationFromFile(1)
    reader.SetOutputScalarTypeToNative()
    reader.SetDesiredCoordinateOrientationToNative()
    reader.SetUseNativeOriginOn()
    reader.UpdateInformation()
    vtk_messages()  # a failed header read is told by the full read below
    extent = reader.GetOutputInformation(0).Get(vtk.vtkStreamingDemandDrivenPipeline.WHOLE_EXTENT())
    dimensions = tuple(extent[2 * n + 1] - extent[2 * n] + 1 for n in range(3)) if extent else (0, 0, 0)
    ras_to_ijk = np.array([[reader.GetRasToIjkMatrix().GetElement(r, c) for c in range(4)] for r in range(4)])
    if min(dimensions) < 1 or reader.GetNumberOfComponents() != 1 or not np.isfinite(ras_to_ijk).all() or (
            abs(np.linalg.det(ras_to_ijk[:3, :3])) < 1e-12):
        return _geometry_by_full_read(path)
    ijk_to_ras = np.linalg.inv(ras_to_ijk)
    check_voxel_spacing(path, np.linalg.norm(ijk_to_ras[:3, :3], axis=0))
    return VolumeGeometry(dimensions, ijk_to_ras)


def _geometry_by_full_read(path: Path) -> VolumeGeometry:
    """Load the file in a scratch scene: its reason to fail, or its grid (headers the fast path does not take)."""
    from .mrml import new_scene

    node = load_volume_file(new_scene(), path)
    return volume_geometry(node, world=False)


#: Node attribute: the files a volume was computed from (JSON list), so that no output of it replaces them.
DERIVED_FROM_ATTRIBUTE = "AlignSeries.derivedFrom"


def source_paths(*nodes) -> list[Path]:
    """The files the nodes were read or computed from: storage-node files, DICOM files, their inputs' files.

    What :func:`AlignSeriesLib.files.check_outputs_spare_inputs` protects (through ``files.protected_places``).
    """
    paths: list[str] = []
    for node in filter(None, nodes):
        storage = node.GetStorageNode() if hasattr(node, "GetStorageNode") else None
        if storage is not None:
            paths += [storage.GetFileName(), *map(storage.GetNthFileName, range(storage.GetNumberOfFileNames()))]
        for attribute, key in ((SOURCE_FILES_ATTRIBUTE, "files"), (DERIVED_FROM_ATTRIBUTE, "files")):
            text = node.GetAttribute(attribute)
            paths += json.loads(text)[key] if text else []
    return [Path(path) for path in dict.fromkeys(filter(None, paths))]


def mark_derived(node, *sources) -> None:
    """Record on ``node`` that it was computed from the ``sources`` nodes (see :func:`source_paths`)."""
    node.SetAttribute(DERIVED_FROM_ATTRIBUTE, json.dumps({"files": [str(path) for path in source_paths(*sources)]}))


def save_node(node, path, *, force: bool = False, compress: bool = False) -> Path:
    """Write a volume or transform node with its default storage node, atomically.

    The file is written beside its destination and renamed into place, so a failure leaves no
    partial file; an existing file is refused unless ``force``.

    Parameters
    ----------
    compress : bool
        Volumes: gzip the voxels of ``.nrrd`` and ``.mha`` files (Slicer's default zlib level). Off by
        default (:func:`uses_compression`): gzip costs several seconds per 100 MB of voxels, ten times the raw
        write. A ``.nii.gz`` file is always compressed, by its name; ITK ``.h5`` transforms always are.
    """
    path = Path(path)
    _check_node_can_be_written(node, path)
    check_outputs_spare_inputs(protected_places(source_paths(node)), [path])
    compressed = uses_compression(path, compress=compress)
    if file_suffix(path) != ".nii.gz":  # a short write crashes ITK's NRRD, MetaImage and HDF5 writers: predict it
        check_room_to_write(path, _written_size_bound(node, compressed))
    with atomic_output(path, force=force) as temporary_path:
        scratch = temporary_beside(temporary_path, ".partial")
        scratch.mkdir()
        try:
            storage_node = node.CreateDefaultStorageNode()
            storage_node.SetFileName(str(scratch / path.name))
            storage_node.SetWriteFileFormat(file_suffix(path).lstrip(".").removeprefix("seg."))
            if hasattr(storage_node, "SetUseCompression"):
                storage_node.SetUseCompression(compressed)
            with native_stderr_held() as native_messages:  # shown only after a complete write
                written = storage_node.WriteData(node) and (scratch / path.name).is_file()
            messages = vtk_messages()
            if not written:
                raise AlignSeriesError(f"{path}: Slicer could not write '{node.GetName()}' in this format"
                                       f"{_because(messages)}")
            _check_complete(scratch / path.name, path, node, compressed)
            sys.stderr.write("".join(native_messages))
            os.replace(scratch / path.name, temporary_path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return path


#: Bytes a file may hold beyond its voxels (header, compression overhead), and the most an ITK transform file takes.
HEADER_BYTES_BOUND = 16384
TRANSFORM_FILE_BYTES_BOUND = 16384


def _voxel_bytes(node) -> int:
    image = node.GetImageData()
    return image.GetScalarSize() * image.GetNumberOfPoints() * image.GetNumberOfScalarComponents()


def _written_size_bound(node, compressed: bool) -> int:
    """The most bytes :func:`save_node` writes for ``node`` (compressed data may exceed the raw by 0.1 %).

    For a compressed file this bound is far above what compressible data takes: on a nearly full disk, a
    compressed NRRD or MetaImage file is refused though it might have fitted (``.nii.gz``, which is checked
    after writing instead, is not).
    """
    if not node.IsA("vtkMRMLVolumeNode"):
        return TRANSFORM_FILE_BYTES_BOUND
    voxels = _voxel_bytes(node)
    return HEADER_BYTES_BOUND + (voxels + voxels // 1000 if compressed else voxels)


def _check_complete(written: Path, path: Path, node, compressed: bool) -> None:
    """Refuse a volume file that a writer left short without saying so (NIfTI's writer only logs a short write)."""
    if not node.IsA("vtkMRMLVolumeNode"):
        return
    size = written.stat().st_size
    voxels = _voxel_bytes(node)
    if not compressed:
        complete = size >= voxels
    elif file_suffix(path) == ".nii.gz":  # gzip keeps the data's length (mod 2**32) in its last four bytes
        with open(written, "rb") as file:
            file.seek(max(size - 4, 0))
            stored = int.from_bytes(file.read(4), "little")
        complete = (stored - voxels) % 2**32 < HEADER_BYTES_BOUND
    else:
        complete = size > 0
    if not complete:
        raise OutputWriteError(f"{destination_of(path)}: the writer stopped after {size} bytes of {voxels} bytes of "
                               "voxels (a full disk or the file-size limit, ulimit -f): nothing written")


def uses_compression(path, *, compress: bool = False) -> bool:
    """Whether :func:`save_node` gzips a file: ``.gz`` and ``.h5`` always, ``.nrrd``/``.mha`` when ``compress``."""
    suffix = Path(path).suffix.lower()
    return suffix in (".gz", ".h5") or (compress and suffix in (".nrrd", ".mha"))


def _check_node_can_be_written(node, path: Path) -> None:
    name = path.name.lower()
    if node.IsA("vtkMRMLTransformNode"):
        suffixes = transform_files.ITK_SUFFIXES
    elif node.IsA("vtkMRMLVolumeNode"):
        suffixes = WRITABLE_VOLUME_SUFFIXES
        if node.GetImageData() is None:
            raise GeometryError(f"volume '{node_name(node)}' has no image data: nothing to write to {path}")
    else:
        raise AlignSeriesError(f"{path}: cannot write '{node_name(node)}' ({node.GetClassName()})")
    if not name.endswith(suffixes):
        raise AlignSeriesError(
            f"{path}: cannot write '{node_name(node)}' in this format; use one of {', '.join(suffixes)}"
        )


@contextlib.contextmanager
def _loading_defaults(scene):
    """Within this block, volume files load on their own grid (a left-handed one included), without a full scan.

    By default Slicer's volume storage node reverses the k axis of a left-handed (mirrored) grid; the image stays
    in place but the grid and slice order are no longer the file's. And a scalar volume's display node computes its
    automatic window/level from every voxel (2.5 s for 80 M int16 voxels, eight times the read itself): it is
    switched off here, and :func:`load_volume_file` sets the window of a regular subsample
    (:func:`AlignSeriesLib.preview.window_of`), as :func:`AlignSeriesLib.mrml.add_volume_node` does.
    """
    defaults = {"vtkMRMLVolumeArchetypeStorageNode": lambda node: node.SetForceRightHandedIJKCoordinateSystem(False),
                "vtkMRMLScalarVolumeDisplayNode": lambda node: node.SetAutoWindowLevel(False)}
    previous = {name: scene.GetDefaultNodeByClass(name) for name in defaults}
    for name, change in defaults.items():
        default = getattr(slicer, name)()
        if previous[name] is not None:
            default.Copy(previous[name])
        change(default)
        scene.AddDefaultNode(default)
    try:
        yield
    finally:
        for name, default in previous.items():
            scene.AddDefaultNode(default if default is not None else getattr(slicer, name)())


def load_transform_file(scene, path):
    """Read an ITK transform file (``.h5``, ``.tfm``, ``.txt``) with Slicer's transform storage node."""
    path = check_input_file(path, "transform file")
    storage_node = slicer.vtkMRMLTransformStorageNode()
    transform_node = slicer.vtkMRMLLinearTransformNode()
    storage_node.SetFileName(str(path))
    if not storage_node.ReadData(transform_node):
        raise TransformFileError(f"{path}: not a transform file Slicer can read")
    transform_node.SetName(file_stem(path))
    scene.AddNode(transform_node)
    return transform_node




# -- transform and markups files ------------------------------------------------------------------

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
    return set_linear_transform(scene, matrix, name=file_stem(Path(path)))


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
        raise TransformFileError(f"{path}: a DICOM REG is written from the two DICOM series it relates "
                                 "(AlignSeriesLib.operations.write_transform)")
    if kind == "flirt":
        moving_geometry = moving_geometry or _referenced_geometry(scene, transform_node, MOVING_VOLUME_REFERENCE_ROLE)
        fixed_geometry = fixed_geometry or _referenced_geometry(scene, transform_node, FIXED_VOLUME_REFERENCE_ROLE)
    return transform_files.write_transform(path, matrix, force=force, moving_geometry=moving_geometry,
                                           fixed_geometry=fixed_geometry)


def _because(vtk_messages_found: list[str]) -> str:
    """The first VTK/ITK message as the reason of a failure (empty when VTK said nothing)."""
    return f" ({vtk_messages_found[0][:300]})" if vtk_messages_found else ""


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
    markups_node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(file_stem(path)))
    try:
        storage_node = _markups_storage_node(path)
        storage_node.SetFileName(str(path))
        if not storage_node.ReadData(markups_node):
            raise LandmarkError(f"{path}: Slicer could not read this markups file")
        count = markups_node.GetNumberOfControlPoints()
        if count == 0:
            raise LandmarkError(f"{path}: the markups file holds no control points")
        refuse_undefined_points(path, markups_node)
        points_ras = np.array([markups_node.GetNthControlPointPosition(n) for n in range(count)])
        labels = [markups_node.GetNthControlPointLabel(n) for n in range(count)]
    finally:
        scene.RemoveNode(markups_node)
    return points_ras, labels


def refuse_undefined_points(where, markups_node) -> None:
    """Refuse control points without a position (``null``, missing, or not placed): they read as 0,0,0.

    ``where`` names the file or the list in the message.
    """
    defined = markups_node.PositionDefined
    undefined = [f"{n + 1} ('{markups_node.GetNthControlPointLabel(n)}')"
                 for n in range(markups_node.GetNumberOfControlPoints())
                 if markups_node.GetNthControlPointPositionStatus(n) != defined]
    if undefined:
        raise LandmarkError(f"{where}: control point(s) {', '.join(undefined)} without a position (null, missing "
                            "or not placed): place them in Slicer or remove them from the list")


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
    markups_node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(file_stem(path)))
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
