"""Tests of the MRML bridge (AlignSeriesLib.mrml) on a real slicer-core scene.

Truth comes from outside the bridge: hand-written matrices (hand_geometries.py), Slicer's own node
accessors (GetSpacing, GetOrigin, GetIJKToRASDirections), nibabel reading the files Slicer wrote, and
the text of ITK transform files.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import slicer
import vtk
from hand_geometries import CASES, HAND_SPACING, ORIENTATIONS, from_lps, rigid_transform
from vtk.util import numpy_support

from AlignSeriesLib import mrml, mrml_files
from AlignSeriesLib.errors import AlignSeriesError, GeometryError, OutputExistsError, TransformFileError
from AlignSeriesLib.geometry import VolumeGeometry

VOLUME_FORMATS = ["nrrd", "nii.gz", "nii", "mha"]
TRANSFORM_FORMATS = ["h5", "tfm", "txt", "hdf5"]

# Moving-to-fixed RAS: 25 degrees about (1, 2, 2) and a translation, as a registration would give.
MOVING_TO_FIXED_RAS = rigid_transform(angle_degrees=25.0, axis=(1.0, 2.0, 2.0), translation=(12.5, -7.0, 30.0))


def random_volume(scene, name="oblique", dtype=np.int16, dimensions=(5, 4, 3), seed=0, **kwargs):
    geometry = from_lps(name, dimensions)
    rng = np.random.default_rng(seed)
    array_kji = rng.integers(-1000, 1000, size=geometry.shape).astype(dtype)
    return mrml.add_volume_node(scene, array_kji, geometry, name, **kwargs), array_kji, geometry


def file_digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def node_matrix(get_matrix) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    get_matrix(matrix)
    return mrml.numpy_matrix(matrix)


def thin_plate_spline_node(scene, name="warp"):
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point in [(0, 0, 0), (50, 0, 0), (0, 50, 0), (0, 0, 50), (50, 50, 50)]:
        source.InsertNextPoint(point)
        target.InsertNextPoint(point)
    target.SetPoint(0, (3.0, -2.0, 1.0))
    spline = vtk.vtkThinPlateSplineTransform()
    spline.SetBasisToR()
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode", name)
    node.SetAndObserveTransformToParent(spline)
    return node


def grid_transform_node(scene, name="grid"):
    displacement = vtk.vtkImageData()
    displacement.SetDimensions(3, 3, 3)
    displacement.SetSpacing(20, 20, 20)
    displacement.AllocateScalars(vtk.VTK_DOUBLE, 3)
    values = numpy_support.vtk_to_numpy(displacement.GetPointData().GetScalars())
    values[:] = np.random.default_rng(3).normal(scale=2.0, size=values.shape)
    grid = slicer.vtkOrientedGridTransform()
    grid.SetDisplacementGridData(displacement)
    node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
    node.SetAndObserveTransformToParent(grid)
    return node


# -- matrices ----------------------------------------------------------------------------------------


def test_vtk_matrix_round_trip_keeps_element_order():
    matrix = np.arange(16, dtype=float).reshape(4, 4)
    converted = mrml.vtk_matrix(matrix)
    assert converted.GetElement(0, 3) == 3.0  # row 0, column 3
    assert converted.GetElement(3, 0) == 12.0
    np.testing.assert_array_equal(mrml.numpy_matrix(converted), matrix)


# -- volume nodes <-> geometry -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_node_stores_hand_spacing_origin_and_directions(scene, name):
    node, _, _ = random_volume(scene, name)
    np.testing.assert_allclose(node.GetSpacing(), HAND_SPACING[name], atol=1e-12)
    np.testing.assert_allclose(node.GetOrigin(), CASES[name]["ijk_to_ras"][:3, 3], atol=1e-12)
    directions = np.zeros((3, 3))
    node.GetIJKToRASDirections(directions)
    expected_directions = CASES[name]["ijk_to_ras"][:3, :3] / np.array(HAND_SPACING[name])
    np.testing.assert_allclose(directions, expected_directions, atol=1e-12)


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_node_geometry_round_trip(scene, name):
    node, _, geometry = random_volume(scene, name)
    read_back = mrml.volume_geometry(node)
    assert read_back.dimensions == (5, 4, 3)
    np.testing.assert_allclose(read_back.ijk_to_ras, CASES[name]["ijk_to_ras"], atol=1e-12)
    assert read_back.is_mirrored is CASES[name]["mirrored"]


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_set_volume_geometry_replaces_ijk_to_ras(scene, name):
    node, _, _ = random_volume(scene, "axial")
    mrml.set_volume_geometry(node, from_lps(name, (5, 4, 3)))
    np.testing.assert_allclose(node_matrix(node.GetIJKToRASMatrix), CASES[name]["ijk_to_ras"], atol=1e-12)


def test_sheared_geometry_survives_node_round_trip(scene):
    tilted = VolumeGeometry((5, 4, 3), [[1, 0, 0, 0], [0, 1, 0.5, 0], [0, 0, 2, 0], [0, 0, 0, 1]])
    node = mrml.add_volume_node(scene, np.zeros(tilted.shape, np.int16), tilted, "tilted")
    assert mrml.volume_geometry(node).is_close(tilted, atol=1e-12)


def test_array_is_indexed_k_j_i(scene):
    node, array_kji, _ = random_volume(scene, "axial", dimensions=(5, 4, 3))
    image = node.GetImageData()
    assert image.GetDimensions() == (5, 4, 3)
    for k, j, i in [(0, 0, 1), (2, 3, 4), (1, 2, 0)]:
        assert image.GetScalarComponentAsDouble(i, j, k, 0) == array_kji[k, j, i]
    np.testing.assert_array_equal(mrml.volume_array(node), array_kji)


def test_add_volume_node_copies_array(scene):
    node, array_kji, _ = random_volume(scene)
    original = array_kji.copy()
    array_kji[0, 0, 0] += 1
    np.testing.assert_array_equal(mrml.volume_array(node), original)


def test_add_volume_node_refuses_shape_mismatch(scene):
    geometry = from_lps("axial", (5, 4, 3))
    with pytest.raises(GeometryError, match=r"array shape \(5, 4, 3\) does not match .* \(3, 4, 5\)"):
        mrml.add_volume_node(scene, np.zeros((5, 4, 3)), geometry, "wrong order")


def test_add_volume_node_labelmap_and_attributes(scene):
    node, _, _ = random_volume(scene, dtype=np.uint8, labelmap=True, attributes={mrml.SERIES_UID_ATTRIBUTE: "1.2.3"})
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    assert node.GetAttribute(mrml.SERIES_UID_ATTRIBUTE) == "1.2.3"


@pytest.mark.parametrize("function", [mrml.volume_geometry, mrml.volume_array])
def test_volume_without_image_data_is_refused(scene, function):
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Empty CT")
    with pytest.raises(GeometryError, match="volume 'Empty CT' has no image data"):
        function(empty)


# -- world geometry under transforms -------------------------------------------------------------------


def test_geometry_under_linear_transform_is_world_geometry(scene):
    node, _, _ = random_volume(scene, "coronal")
    transform = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS)
    node.SetAndObserveTransformNodeID(transform.GetID())
    world = mrml.volume_geometry(node)
    local = mrml.volume_geometry(node, world=False)
    np.testing.assert_allclose(local.ijk_to_ras, CASES["coronal"]["ijk_to_ras"], atol=1e-12)
    np.testing.assert_allclose(world.ijk_to_ras, MOVING_TO_FIXED_RAS @ CASES["coronal"]["ijk_to_ras"], atol=1e-12)


def test_world_geometry_agrees_with_slicer_transform_of_a_voxel(scene):
    node, _, _ = random_volume(scene, "oblique")
    transform = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS)
    node.SetAndObserveTransformNodeID(transform.GetID())
    to_world = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(transform, None, to_world)
    voxel = (4, 1, 2)
    local_point = node_matrix(node.GetIJKToRASMatrix) @ [*voxel, 1]
    expected_world_point = to_world.TransformPoint(local_point[:3])
    np.testing.assert_allclose(mrml.volume_geometry(node).ijk_to_world(voxel), expected_world_point, atol=1e-9)


def test_nested_linear_transforms_compose_child_first(scene):
    node, _, _ = random_volume(scene, "axial")
    shift = np.eye(4)
    shift[:3, 3] = [0.0, 0.0, 100.0]
    inner = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS, name="inner")
    outer = mrml.set_linear_transform(scene, shift, name="outer")
    inner.SetAndObserveTransformNodeID(outer.GetID())
    node.SetAndObserveTransformNodeID(inner.GetID())
    expected = shift @ MOVING_TO_FIXED_RAS @ CASES["axial"]["ijk_to_ras"]
    np.testing.assert_allclose(mrml.volume_geometry(node).ijk_to_ras, expected, atol=1e-12)


@pytest.mark.parametrize("make_transform", [thin_plate_spline_node, grid_transform_node], ids=["spline", "grid"])
def test_non_linear_parent_is_refused_by_name(scene, make_transform):
    node, _, _ = random_volume(scene)
    warp = make_transform(scene, name="Deformable warp")
    node.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(GeometryError, match="non-linear transform 'Deformable warp'.*harden"):
        mrml.volume_geometry(node)
    np.testing.assert_allclose(mrml.volume_geometry(node, world=False).ijk_to_ras, CASES["oblique"]["ijk_to_ras"])


def test_non_linear_grandparent_is_named(scene):
    node, _, _ = random_volume(scene)
    linear = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS, name="Rigid step")
    warp = thin_plate_spline_node(scene, name="Deformable warp")
    linear.SetAndObserveTransformNodeID(warp.GetID())
    node.SetAndObserveTransformNodeID(linear.GetID())
    with pytest.raises(GeometryError, match="non-linear transform 'Deformable warp'"):
        mrml.volume_geometry(node)


def test_transform_to_parent_matrix_refuses_non_linear(scene):
    with pytest.raises(TransformFileError, match="'warp' is not a linear transform"):
        mrml.transform_to_parent_matrix(thin_plate_spline_node(scene))


# -- registration transform nodes -----------------------------------------------------------------------


def test_set_linear_transform_sets_to_parent_and_references(scene):
    moving, _, _ = random_volume(scene, "oblique")
    fixed, _, _ = random_volume(scene, "axial")
    node = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS, moving_volume=moving, fixed_volume=fixed)
    assert node.IsA("vtkMRMLLinearTransformNode")
    np.testing.assert_array_equal(node_matrix(node.GetMatrixTransformToParent), MOVING_TO_FIXED_RAS)
    assert node.GetNodeReference(mrml.MOVING_VOLUME_REFERENCE_ROLE) is moving
    assert node.GetNodeReference(mrml.FIXED_VOLUME_REFERENCE_ROLE) is fixed
    np.testing.assert_array_equal(mrml.transform_to_parent_matrix(node), MOVING_TO_FIXED_RAS)


def test_transform_aligns_moving_point_with_fixed_point(scene):
    # The "to parent" convention: a moving-volume point under the node lands on the fixed point.
    moving, _, _ = random_volume(scene, "oblique")
    node = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS, moving_volume=moving)
    moving.SetAndObserveTransformNodeID(node.GetID())
    moving_point = np.array([10.0, 20.0, 30.0])
    to_world = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(node, None, to_world)
    expected_fixed_point = MOVING_TO_FIXED_RAS[:3, :3] @ moving_point + MOVING_TO_FIXED_RAS[:3, 3]
    np.testing.assert_allclose(to_world.TransformPoint(moving_point), expected_fixed_point, atol=1e-9)


def test_set_linear_transform_updates_given_node(scene):
    existing = mrml.set_linear_transform(scene, np.eye(4), name="Existing")
    updated = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS, transform_node=existing)
    assert updated is existing
    assert scene.GetNumberOfNodesByClass("vtkMRMLLinearTransformNode") == 1
    np.testing.assert_array_equal(mrml.transform_to_parent_matrix(existing), MOVING_TO_FIXED_RAS)


def test_set_linear_transform_without_volumes_sets_no_references(scene):
    node = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS)
    assert node.GetNodeReference(mrml.MOVING_VOLUME_REFERENCE_ROLE) is None
    assert node.GetNodeReference(mrml.FIXED_VOLUME_REFERENCE_ROLE) is None


@pytest.mark.parametrize(
    ("matrix", "message"),
    [(np.diag([1.0, 0.0, 1.0, 1.0]), "moving_to_fixed_ras is singular"), (np.eye(3), "must be 4x4")],
    ids=["singular", "shape"],
)
def test_set_linear_transform_refuses_invalid_matrix(scene, matrix, message):
    with pytest.raises(GeometryError, match=message):
        mrml.set_linear_transform(scene, matrix)
    assert scene.GetNumberOfNodesByClass("vtkMRMLLinearTransformNode") == 0


# -- volume files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ORIENTATIONS)
@pytest.mark.parametrize("extension", VOLUME_FORMATS)
def test_volume_file_round_trip(scene, tmp_path, name, extension):
    node, array_kji, _ = random_volume(scene, name)
    path = mrml_files.save_node(node, tmp_path / f"volume.{extension}")
    loaded = mrml_files.load_volume_file(scene, path)
    assert loaded is not node
    np.testing.assert_allclose(mrml.volume_geometry(loaded).ijk_to_ras, CASES[name]["ijk_to_ras"], rtol=0, atol=1e-6)
    read_back = mrml.volume_array(loaded)
    assert read_back.dtype == array_kji.dtype
    np.testing.assert_array_equal(read_back, array_kji)


def header_field(path, name: str) -> str:
    """A field of a NRRD (``name: value``) or MetaImage (``Name = value``) text header, read up to the data."""
    with open(path, "rb") as file:
        for line in file:
            text = line.decode("latin-1").strip()
            if not text:
                break  # the blank line that ends a NRRD header
            key, _, value = text.replace(" = ", ":", 1).partition(":")
            if key.strip() == name:
                return value.strip()
            if key.strip() == "ElementDataFile":
                break  # the last field of a MetaImage header
    raise AssertionError(f"{path}: no header field {name!r}")


@pytest.mark.parametrize(("extension", "field", "raw", "compressed"),
                         [("nrrd", "encoding", "raw", "gzip"), ("mha", "CompressedData", "False", "True")])
def test_volume_files_are_raw_unless_compression_is_asked_for(scene, tmp_path, extension, field, raw, compressed):
    node, array_kji, _ = random_volume(scene, "oblique", dimensions=(40, 30, 20))
    plain = mrml_files.save_node(node, tmp_path / f"plain.{extension}")
    packed = mrml_files.save_node(node, tmp_path / f"packed.{extension}", compress=True)
    assert header_field(plain, field) == raw
    assert header_field(packed, field) == compressed
    assert plain.stat().st_size >= array_kji.nbytes > packed.stat().st_size
    for path in (plain, packed):
        np.testing.assert_array_equal(mrml.volume_array(mrml_files.load_volume_file(scene, path)), array_kji)


@pytest.mark.parametrize("compress", [False, True])
def test_nifti_gz_is_compressed_by_its_name_and_nii_never(scene, tmp_path, compress):
    node, _, _ = random_volume(scene, "axial")
    assert mrml_files.save_node(node, tmp_path / "v.nii.gz", compress=compress).read_bytes()[:2] == b"\x1f\x8b"
    assert mrml_files.save_node(node, tmp_path / "v.nii", compress=compress).read_bytes()[:2] != b"\x1f\x8b"


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64])
def test_volume_file_keeps_voxel_type(scene, tmp_path, dtype):
    node, array_kji, _ = random_volume(scene, "axial", dtype=dtype)
    loaded = mrml_files.load_volume_file(scene, mrml_files.save_node(node, tmp_path / "volume.nrrd"))
    read_back = mrml.volume_array(loaded)
    assert read_back.dtype == dtype
    np.testing.assert_array_equal(read_back, array_kji)


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_nifti_written_by_slicer_agrees_with_nibabel(scene, tmp_path, name):
    nibabel = pytest.importorskip("nibabel")
    node, array_kji, _ = random_volume(scene, name)
    image = nibabel.load(mrml_files.save_node(node, tmp_path / "volume.nii.gz"))
    np.testing.assert_allclose(image.affine, CASES[name]["ijk_to_ras"], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(image.dataobj), array_kji.transpose(2, 1, 0))  # nibabel: [i, j, k]


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_nifti_written_by_nibabel_loads_on_its_affine(scene, tmp_path, name):
    nibabel = pytest.importorskip("nibabel")
    data_ijk = np.random.default_rng(5).integers(0, 100, size=(5, 4, 3)).astype(np.int16)
    path = tmp_path / "nibabel.nii.gz"
    nibabel.save(nibabel.Nifti1Image(data_ijk, CASES[name]["ijk_to_ras"]), path)
    loaded = mrml_files.load_volume_file(scene, path)
    np.testing.assert_allclose(mrml.volume_geometry(loaded).ijk_to_ras, CASES[name]["ijk_to_ras"], atol=1e-5)
    np.testing.assert_array_equal(mrml.volume_array(loaded), data_ijk.transpose(2, 1, 0))


def test_labelmap_file_loads_as_labelmap(scene, tmp_path):
    node, array_kji, _ = random_volume(scene, dtype=np.uint8, labelmap=True)
    loaded = mrml_files.load_volume_file(scene, mrml_files.save_node(node, tmp_path / "mask.nrrd"), labelmap=True)
    assert loaded.IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(mrml.volume_array(loaded), array_kji)


def test_load_volume_file_names_node_after_file(scene, tmp_path):
    node, _, _ = random_volume(scene)
    loaded = mrml_files.load_volume_file(scene, mrml_files.save_node(node, tmp_path / "Patient CT.nii.gz"))
    assert loaded.GetName() == "Patient CT"


def test_load_volume_file_missing(scene, tmp_path):
    with pytest.raises(FileNotFoundError, match="volume file not found"):
        mrml_files.load_volume_file(scene, tmp_path / "absent.nrrd")


def test_load_volume_file_not_a_volume(scene, tmp_path):
    path = tmp_path / "text.nrrd"
    path.write_text("this is not a volume")
    with pytest.raises(AlignSeriesError, match="could not read this file as a volume") as raised:
        mrml_files.load_volume_file(scene, path)
    assert "text.nrrd" in str(raised.value)


# -- transform files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", TRANSFORM_FORMATS)
def test_transform_file_round_trip(scene, tmp_path, extension):
    node = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS)
    loaded = mrml_files.load_transform_file(scene, mrml_files.save_node(node, tmp_path / f"registration.{extension}"))
    assert loaded is not node
    assert loaded.GetName() == "registration"
    np.testing.assert_allclose(mrml.transform_to_parent_matrix(loaded), MOVING_TO_FIXED_RAS, rtol=0, atol=1e-9)


def test_tfm_file_holds_inverse_in_lps(scene, tmp_path):
    path = mrml_files.save_node(mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS), tmp_path / "registration.tfm")
    fields = dict(line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    assert fields["Transform"].strip() in ("AffineTransform_double_3_3", "MatrixOffsetTransformBase_double_3_3")
    parameters = np.array(fields["Parameters"].split(), dtype=float)
    center = np.array(fields["FixedParameters"].split(), dtype=float)
    # ITK: y = A (x - c) + t + c, so the 4x4 is [A | t + c - A c].
    linear, translation = parameters[:9].reshape(3, 3), parameters[9:12]
    from_parent_lps = np.eye(4)
    from_parent_lps[:3, :3] = linear
    from_parent_lps[:3, 3] = translation + center - linear @ center
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # written here by hand, not taken from geometry.py
    expected_from_parent_lps = np.linalg.inv(flip @ MOVING_TO_FIXED_RAS @ flip)
    np.testing.assert_allclose(from_parent_lps, expected_from_parent_lps, atol=1e-9)


def test_load_transform_file_missing(scene, tmp_path):
    with pytest.raises(FileNotFoundError, match="transform file not found"):
        mrml_files.load_transform_file(scene, tmp_path / "absent.h5")


def test_load_transform_file_not_a_transform(scene, tmp_path):
    path = tmp_path / "notes.tfm"
    path.write_text("no transform here\n")
    with pytest.raises(TransformFileError, match="not a transform file Slicer can read"):
        mrml_files.load_transform_file(scene, path)
    assert scene.GetNumberOfNodesByClass("vtkMRMLTransformNode") == 0


# -- data safety ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extension", VOLUME_FORMATS)
def test_save_volume_leaves_node_unchanged(scene, tmp_path, extension):
    node, array_kji, _ = random_volume(scene)
    matrix_before = node_matrix(node.GetIJKToRASMatrix)
    mrml_files.save_node(node, tmp_path / f"volume.{extension}")
    np.testing.assert_array_equal(mrml.volume_array(node), array_kji)
    np.testing.assert_array_equal(node_matrix(node.GetIJKToRASMatrix), matrix_before)
    assert node.GetStorageNode() is None  # the node is not tied to the written file


@pytest.mark.parametrize("extension", TRANSFORM_FORMATS)
def test_save_transform_leaves_node_unchanged(scene, tmp_path, extension):
    node = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS)
    mrml_files.save_node(node, tmp_path / f"registration.{extension}")
    np.testing.assert_array_equal(mrml.transform_to_parent_matrix(node), MOVING_TO_FIXED_RAS)
    assert node.GetStorageNode() is None


@pytest.mark.parametrize("extension", VOLUME_FORMATS)
def test_loading_leaves_volume_file_unchanged(scene, tmp_path, extension):
    node, _, _ = random_volume(scene)
    path = mrml_files.save_node(node, tmp_path / f"volume.{extension}")
    digest, modified = file_digest(path), path.stat().st_mtime_ns
    loaded = mrml_files.load_volume_file(scene, path)
    mrml.volume_geometry(loaded)
    assert file_digest(path) == digest
    assert path.stat().st_mtime_ns == modified
    assert folder_names(tmp_path) == [path.name]


@pytest.mark.parametrize("extension", TRANSFORM_FORMATS)
def test_loading_leaves_transform_file_unchanged(scene, tmp_path, extension):
    path = mrml_files.save_node(mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS), tmp_path / f"t.{extension}")
    digest = file_digest(path)
    mrml_files.load_transform_file(scene, path)
    assert file_digest(path) == digest
    assert folder_names(tmp_path) == [path.name]


@pytest.mark.parametrize("extension", VOLUME_FORMATS + TRANSFORM_FORMATS)
def test_save_node_refuses_existing_file(scene, tmp_path, extension):
    is_transform = extension in TRANSFORM_FORMATS
    node = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS) if is_transform else random_volume(scene)[0]
    path = tmp_path / f"output.{extension}"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="output exists"):
        mrml_files.save_node(node, path)
    assert path.read_bytes() == b"precious"
    assert folder_names(tmp_path) == [path.name]


def test_save_node_overwrites_with_force(scene, tmp_path):
    node, array_kji, _ = random_volume(scene)
    path = tmp_path / "output.nrrd"
    path.write_bytes(b"old")
    mrml_files.save_node(node, path, force=True)
    np.testing.assert_array_equal(mrml.volume_array(mrml_files.load_volume_file(scene, path)), array_kji)
    assert folder_names(tmp_path) == ["output.nrrd"]


@pytest.mark.parametrize(
    ("kind", "file_name"),
    [("volume", "volume.xyz"), ("volume", "volume.tfm"), ("transform", "transform.xyz"),
     ("transform", "transform.nrrd")],
)
def test_save_node_unwritable_format_leaves_nothing(scene, tmp_path, kind, file_name):
    node = random_volume(scene)[0] if kind == "volume" else mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS)
    with pytest.raises(AlignSeriesError, match=file_name):
        mrml_files.save_node(node, tmp_path / file_name)
    assert folder_names(tmp_path) == []


def test_save_node_failed_overwrite_keeps_original(scene, tmp_path):
    node = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS)
    path = tmp_path / "transform.nrrd"  # a linear transform cannot be written as a displacement field
    path.write_bytes(b"precious")
    with pytest.raises(AlignSeriesError):
        mrml_files.save_node(node, path, force=True)
    assert path.read_bytes() == b"precious"
    assert folder_names(tmp_path) == [path.name]


def test_save_volume_without_image_data_is_refused(scene, tmp_path):
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Empty CT")
    with pytest.raises(GeometryError, match="volume 'Empty CT' has no image data"):
        mrml_files.save_node(empty, tmp_path / "empty.nrrd")
    assert folder_names(tmp_path) == []


def test_module_logic_refuses_foreign_scene():
    with pytest.raises(AlignSeriesError, match="not made by AlignSeriesLib.mrml.new_scene"):
        mrml.module_logic(slicer.vtkMRMLScene(), "Volumes")


def test_a_node_takes_vtk_owned_voxels_without_copying_and_copies_any_other_array(scene):
    geometry = VolumeGeometry((4, 3, 2), np.eye(4))
    owned = mrml.new_voxel_array(geometry.shape, np.int16)
    owned[...] = np.arange(24).reshape(geometry.shape)
    foreign = np.arange(24, dtype=np.int16).reshape(geometry.shape)
    shared = mrml.add_volume_node(scene, owned, geometry, "shared", copy=False)
    copied = mrml.add_volume_node(scene, foreign, geometry, "copied", copy=False)
    owned[0, 0, 0] = foreign[0, 0, 0] = 99
    assert mrml.volume_array(shared)[0, 0, 0] == 99, "the node took the VTK-owned memory"
    assert mrml.volume_array(copied)[0, 0, 0] == 0, "numpy memory is copied, never shared"
    view = mrml.volume_array(shared, copy=False)
    assert not view.flags.writeable and np.shares_memory(view, owned)


@pytest.mark.parametrize("name", ORIENTATIONS)
@pytest.mark.parametrize("extension", VOLUME_FORMATS)
def test_header_only_geometry_is_the_loaded_nodes(scene, tmp_path, name, extension):
    node, _, _ = random_volume(scene, name, dimensions=(5, 4, 3))
    path = mrml_files.save_node(node, tmp_path / f"volume.{extension}")
    loaded = mrml.volume_geometry(mrml_files.load_volume_file(scene, path), world=False)
    header = mrml_files.read_volume_file_geometry(path)
    assert header.dimensions == loaded.dimensions == (5, 4, 3)
    np.testing.assert_allclose(header.ijk_to_ras, loaded.ijk_to_ras, rtol=0, atol=1e-9)


def test_header_only_geometry_of_a_bad_file_gives_the_readers_error(tmp_path):
    path = tmp_path / "broken.nrrd"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2\nencoding: raw\n\n" + bytes(16))
    with pytest.raises(AlignSeriesError, match="broken.nrrd"):
        mrml_files.read_volume_file_geometry(path)
