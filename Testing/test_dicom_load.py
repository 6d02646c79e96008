"""Loading DICOM volumes into MRML nodes: pixel values, geometry and DICOM attributes."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DICOM, real_series_names
from dicom_fixtures import ORIENTATIONS, stack_positions, write_phantom_series

from AlignSeriesLib import mrml, operations
from AlignSeriesLib.dicom import series as dicom_series
from AlignSeriesLib.errors import IrregularSeriesError

SERIES = real_series_names() or ["absent"]
JPEG_SERIES = SHARED_DICOM / "mr_siemens_sag_t1_jpegll" / "dicom"


def pydicom_values(path, frame) -> np.ndarray:
    """Modality values of one slice by plain pydicom (the oracle for uncompressed files)."""
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array if frame is None else dataset.pixel_array[frame - 1]
    if frame is None:
        slope, intercept = float(dataset.get("RescaleSlope", 1)), float(dataset.get("RescaleIntercept", 0))
    else:
        groups = dataset.PerFrameFunctionalGroupsSequence[frame - 1].PixelValueTransformationSequence[0]
        slope, intercept = float(groups.RescaleSlope), float(groups.RescaleIntercept)
    return pixels * slope + intercept


def node_matrix(node) -> np.ndarray:
    return mrml.volume_geometry(node, world=False).ijk_to_ras


def test_loaded_node_holds_the_pixels_geometry_and_uids_in_slice_order(tmp_path, scene):
    positions = stack_positions((3.0, -7.0, 11.0), ORIENTATIONS["oblique"], np.arange(6)[::-1] * 2.0)
    write_phantom_series(tmp_path, positions, "oblique", RescaleIntercept=-1024, BitsStored=12, HighBit=11)
    (volume,) = dicom_series.scan_dicom(tmp_path).volumes

    (node,) = operations.load_volumes(scene, tmp_path)

    expected = np.stack([pydicom_values(path, None) for path in volume.files])
    np.testing.assert_array_equal(mrml.volume_array(node), expected)
    assert mrml.volume_array(node).dtype == np.int16
    np.testing.assert_allclose(node_matrix(node), volume.geometry.ijk_to_ras, atol=1e-9)
    assert node.GetAttribute(mrml.INSTANCE_UIDS_ATTRIBUTE) == " ".join(volume.sop_instance_uids)
    assert node.GetAttribute(mrml.SERIES_UID_ATTRIBUTE) == volume.series_instance_uid
    assert node.GetAttribute(mrml.FRAME_OF_REFERENCE_ATTRIBUTE) == volume.frame_of_reference_uid
    assert node.GetAttribute(mrml.STUDY_UID_ATTRIBUTE) == volume.study_instance_uid


def test_regularized_volume_is_loaded_on_its_orthogonal_grid_with_its_warnings(tmp_path, scene):
    positions = stack_positions((0.0, 0.0, 0.0), ORIENTATIONS["axial"], np.arange(5) * 2.0, tilt_deg=12.0)
    write_phantom_series(tmp_path, positions)
    (volume,) = dicom_series.scan_dicom(tmp_path).volumes

    (node,) = operations.load_volumes(scene, tmp_path)

    assert mrml.volume_geometry(node, world=False).is_orthogonal
    np.testing.assert_allclose(node_matrix(node), volume.geometry.ijk_to_ras, atol=1e-9)
    np.testing.assert_allclose(mrml.volume_array(node), volume.read_voxels())
    assert [w.code for w in mrml.node_warnings(node)] == ["gantry_tilt", "regularized"]


def test_irregular_series_is_refused_when_regularization_is_off(tmp_path, scene):
    write_phantom_series(tmp_path, stack_positions((0, 0, 0), ORIENTATIONS["axial"], [0.0, 2.0, 3.0, 7.0]))

    with pytest.raises(IrregularSeriesError, match="non-uniform slice spacing"):
        operations.load_volumes(scene, tmp_path, regularize=False)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0


@pytest.mark.parametrize("real_series", SERIES, indirect=True)
def test_real_series_pixels_equal_pydicom_in_the_computed_order(real_series, scene):
    folder, _ = real_series  # compressed series too: pydicom decodes them with the shipped plugins
    for volume in dicom_series.scan_dicom(folder).volumes:
        node = mrml.load_dicom_volume(scene, volume)
        np.testing.assert_allclose(node_matrix(node), volume.geometry.ijk_to_ras, atol=1e-9)
        if volume.regularized:
            continue
        truth = np.stack([pydicom_values(p, f) for p, f in zip(volume.files, volume.frames, strict=True)])
        np.testing.assert_allclose(mrml.volume_array(node), truth, rtol=1e-6, atol=1e-3)


def test_jpeg_lossless_series_loads_pixel_equal_to_gdcm_in_the_computed_order(scene):
    simpleitk = pytest.importorskip("SimpleITK")
    if not JPEG_SERIES.is_dir():
        pytest.skip(f"real DICOM data not available: {JPEG_SERIES} is absent")
    (volume,) = dicom_series.scan_dicom(JPEG_SERIES).volumes

    node = mrml.load_dicom_volume(scene, volume)

    truth = np.stack([simpleitk.GetArrayFromImage(simpleitk.ReadImage(path))[0] for path in volume.files])
    np.testing.assert_array_equal(mrml.volume_array(node), truth)
    np.testing.assert_allclose(node_matrix(node), volume.geometry.ijk_to_ras, atol=1e-9)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1  # the reader's temporary node is gone


def test_a_zero_rescale_slope_is_read_as_not_set_instead_of_blanking_the_image(tmp_path, scene):
    """RescaleSlope 0 (seen in broken exports) would make every voxel the intercept: it is read as 1."""
    positions = stack_positions((0.0, 0.0, 0.0), ORIENTATIONS["axial"], np.arange(3) * 2.0)
    files, pixels = write_phantom_series(tmp_path, positions, RescaleSlope=0, RescaleIntercept=-1024)
    node, = operations.load_volumes(scene, tmp_path)
    voxels = mrml.volume_array(node)
    assert np.ptp(pixels) > 0 and np.ptp(voxels) == np.ptp(pixels)
    np.testing.assert_array_equal(voxels, pixels.astype(np.int32) - 1024)
