"""The volume-file read path: one read by the scalar (or label-map) factory, the same voxels and grid as
Slicer's full ``AddArchetypeVolume``, and as SimpleITK's reader, for every format, orientation and pixel type."""

from __future__ import annotations

import numpy as np
import pytest

from AlignSeriesLib import mrml, mrml_files
from AlignSeriesLib.errors import AlignSeriesError

SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")
PIXEL_TYPES = (np.uint8, np.int8, np.int16, np.uint16, np.int32, np.float32, np.float64)
#: Direction cosines (LPS columns i, j, k): axial, oblique, and a left-handed (mirrored) grid.
DIRECTIONS_LPS = {
    "axial": np.eye(3),
    "oblique": np.array([[0.8, -0.6, 0.0], [0.36, 0.48, -0.8], [0.48, 0.64, 0.6]]),
    "left-handed": np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
}


def write_with_simpleitk(path, dtype, orientation):
    """A 7 x 6 x 5 volume of ``dtype`` written by SimpleITK; returns (array [k, j, i], ijk_to_ras)."""
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    low, high = (info.min, info.max) if info else (-1000.0, 1000.0)
    array = rng.uniform(low, high, (5, 6, 7)).astype(dtype)
    image = sitk.GetImageFromArray(array)
    spacing = (0.7, 0.9, 2.5)
    directions = DIRECTIONS_LPS[orientation]
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 30.25, -7.0))
    image.SetDirection(directions.ravel().tolist())
    sitk.WriteImage(image, str(path))
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = directions * spacing
    ijk_to_lps[:3, 3] = (-12.5, 30.25, -7.0)
    return array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_lps


def read_by_every_factory(scene, path):
    """Slicer's general read: ``AddArchetypeVolume`` trying each volume type in turn (the path before this one)."""
    with mrml_files._loading_defaults(scene):
        return mrml.module_logic(scene, "Volumes").AddArchetypeVolume(str(path), "every factory", 0)


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("orientation", list(DIRECTIONS_LPS))
@pytest.mark.parametrize("dtype", PIXEL_TYPES)
def test_volume_file_read_gives_the_storage_nodes_voxels_and_grid(scene, tmp_path, suffix, orientation, dtype):
    path = tmp_path / f"volume{suffix}"
    array, ijk_to_ras = write_with_simpleitk(path, dtype, orientation)
    fast = mrml_files.load_volume_file(scene, path)
    general = read_by_every_factory(scene, path)
    assert fast.GetClassName() == general.GetClassName() == "vtkMRMLScalarVolumeNode"
    fast_array, general_array = mrml.volume_array(fast), mrml.volume_array(general)
    assert fast_array.dtype == general_array.dtype and np.array_equal(fast_array, general_array)
    fast_grid, general_grid = mrml.volume_geometry(fast), mrml.volume_geometry(general)
    assert fast_grid.dimensions == general_grid.dimensions
    assert np.array_equal(fast_grid.ijk_to_ras, general_grid.ijk_to_ras)
    # and both are what SimpleITK wrote (NIfTI stores the header in float32)
    assert fast_array.dtype == dtype and np.array_equal(fast_array, array)
    np.testing.assert_allclose(fast_grid.ijk_to_ras, ijk_to_ras, atol=1e-5)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_label_map_read_gives_the_storage_nodes_voxels_and_grid(scene, tmp_path, suffix):
    path = tmp_path / f"mask{suffix}"
    array, ijk_to_ras = write_with_simpleitk(path, np.uint8, "oblique")
    fast = mrml_files.load_volume_file(scene, path, labelmap=True)
    with mrml_files._loading_defaults(scene):
        general = mrml.module_logic(scene, "Volumes").AddArchetypeVolume(str(path), "every factory", 1)
    assert fast.GetClassName() == general.GetClassName() == "vtkMRMLLabelMapVolumeNode"
    assert np.array_equal(mrml.volume_array(fast), mrml.volume_array(general))
    assert np.array_equal(mrml.volume_geometry(fast).ijk_to_ras, mrml.volume_geometry(general).ijk_to_ras)
    assert np.array_equal(mrml.volume_array(fast), array)


def test_a_numbered_file_is_read_alone_not_as_a_series_of_its_folder(scene, tmp_path):
    first, _ = write_with_simpleitk(tmp_path / "case001.nrrd", np.int16, "axial")
    write_with_simpleitk(tmp_path / "case002.nrrd", np.int16, "oblique")
    loaded = mrml_files.load_volume_file(scene, tmp_path / "case001.nrrd")
    assert mrml.volume_geometry(loaded).dimensions == (7, 6, 5)
    assert np.array_equal(mrml.volume_array(loaded), first)


def test_a_vector_file_is_still_refused_with_its_reason(scene, tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    path = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True), str(path))
    with pytest.raises(AlignSeriesError, match=r"rgb.nrrd: 3 values per voxel \(a vector"):
        mrml_files.load_volume_file(scene, path)
