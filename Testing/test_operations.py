"""The use-case layer (``operations.py``) on real MRML: data read once, slabs carried forward, one progress polarity."""

from __future__ import annotations

import builtins
import os

import numpy as np
import pydicom
import pytest
import vtk
from dicom_fixtures import stack_positions, write_phantom_series

from AlignSeriesLib import export_job, exports, mrml, mrml_files, operations
from AlignSeriesLib.dicom import export as dicom_export
from AlignSeriesLib.errors import AlignSeriesError, OperationCancelledError
from AlignSeriesLib.geometry import VolumeGeometry

SLICES = 6


@pytest.fixture
def reference_folder(tmp_path):
    """A 6-slice axial CT series, 2.5 mm apart, files and InstanceNumbers shuffled."""
    positions = stack_positions((-10.0, -12.0, 30.0), (1, 0, 0, 0, 1, 0), np.arange(SLICES) * 2.5)
    files, pixels = write_phantom_series(tmp_path / "reference", positions)
    return tmp_path / "reference", files, pixels


def count_reads(monkeypatch, files) -> dict:
    """Count the opens of each of ``files`` from Python (pydicom's reads, the scan's plain reads, any other) and
    whether pixel data was read."""
    calls: dict = {"headers": {}, "pixels": 0}
    original = builtins.open
    watched = {str(path) for path in files}

    def counting(path, *args, **kwargs):
        if isinstance(path, str | os.PathLike) and str(path) in watched:
            calls["headers"][str(path)] = calls["headers"].get(str(path), 0) + 1
        return original(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    from AlignSeriesLib.dicom import pixels as dicom_pixels
    original_read_slices = dicom_pixels.read_slices

    def counting_pixels(*args, **kwargs):
        calls["pixels"] += 1
        return original_read_slices(*args, **kwargs)

    monkeypatch.setattr(dicom_pixels, "read_slices", counting_pixels)
    return calls


def test_label_png_export_reads_each_reference_header_once_and_no_reference_pixels(scene, tmp_path, reference_folder,
                                                                                   monkeypatch):
    folder, files, _ = reference_folder
    calls = count_reads(monkeypatch, files)
    reference = operations.load_reference(scene, folder)
    labels = np.zeros(reference.geometry.shape, np.uint8)
    labels[:, 5:9, 4:7] = 3
    mask = mrml.add_volume_node(scene, labels, reference.geometry, "mask", labelmap=True)
    export_job.resample_and_write(scene, mask, reference, exports.ExportTargets(png_folder=tmp_path / "png"))
    assert calls["pixels"] == 0, "a reference used as a grid had its pixels read"
    assert sorted(calls["headers"]) == sorted(str(f) for f in files)
    assert set(calls["headers"].values()) == {1}, calls["headers"]
    assert len(list((tmp_path / "png").glob("*.png"))) == SLICES and (tmp_path / "png" / "index.csv").is_file()


def test_dicom_export_opens_one_reference_file_after_the_scan_for_the_patient_and_study(scene, tmp_path,
                                                                                       reference_folder, monkeypatch):
    folder, files, _ = reference_folder
    reference = operations.load_reference(scene, folder)
    volume = mrml.add_volume_node(scene, np.ones(reference.geometry.shape, np.int16), reference.geometry, "ones")
    calls = count_reads(monkeypatch, files)
    export_job.resample_and_write(scene, volume, reference, exports.ExportTargets(dicom_folder=tmp_path / "out",
                                                                                  png_folder=tmp_path / "png"))
    assert list(calls["headers"].values()) == [1] and set(calls["headers"]) <= {str(f) for f in files}
    assert calls["pixels"] == 0


@pytest.mark.parametrize("first, count", [(0, 1), (2, 3), (5, 1), (0, SLICES)])
def test_a_slab_export_copies_exactly_its_reference_slices(scene, tmp_path, reference_folder, first, count):
    folder, _, _ = reference_folder
    reference = operations.load_reference(scene, folder)
    volume = mrml.add_volume_node(scene, np.zeros(reference.geometry.shape, np.int16), reference.geometry, "whole")
    written = export_job.resample_and_write(scene, volume, reference,
                                            exports.ExportTargets(dicom_folder=tmp_path / "out"),
                                            export_job.ExportOptions(slab=(first, count))).written
    exported = sorted((pydicom.dcmread(p) for p in written), key=lambda d: float(d.ImagePositionPatient[2]))
    expected = reference.series.slices[first:first + count]
    assert [d.SourceImageSequence[0].ReferencedSOPInstanceUID for d in exported] == [
        s.sop_instance_uid for s in expected]
    np.testing.assert_allclose([d.ImagePositionPatient for d in exported], [s.position_lps for s in expected],
                               atol=1e-4)


def test_progress_true_cancels_loading_and_resampling_with_the_same_polarity(scene, reference_folder):
    folder, _, _ = reference_folder
    fractions = []

    def keep_going(fraction):
        fractions.append(fraction)
        return False

    node, = operations.load_volumes(scene, folder, progress=keep_going)
    assert fractions and fractions[-1] == pytest.approx(1.0) and fractions == sorted(fractions)
    with pytest.raises(OperationCancelledError):
        operations.load_volumes(scene, folder, progress=lambda fraction: True)
    with pytest.raises(OperationCancelledError):
        operations.resample_volume(scene, node, mrml.volume_geometry(node), progress=lambda fraction: True)
    assert operations.resample_volume(scene, node, mrml.volume_geometry(node), progress=lambda fraction: None)


def test_transform_result_json_fields_and_camel_case_view_agree(scene, reference_folder, tmp_path):
    folder, _, _ = reference_folder
    fixed, = operations.load_volumes(scene, folder)
    moving, = operations.load_volumes(scene, folder)
    result = operations.compute_geometry_transform(scene, fixed, moving, "centers")
    document = result.to_dict()
    np.testing.assert_allclose(document["moving_to_fixed_ras"], result.movingToFixedRas)
    np.testing.assert_allclose(document["fixed_ijk_to_moving_ijk"] @ document["moving_ijk_to_fixed_ijk"], np.eye(4),
                               atol=1e-12)
    assert result.transformNode is result.transform_node and result.rmsError is None
    assert all(set(w) == {"code", "message"} for w in document["warnings"])
    path = result.save(tmp_path / "t.h5")
    read_back = mrml_files.read_transform_file(scene, path)
    np.testing.assert_allclose(mrml.transform_to_parent_matrix(read_back), result.moving_to_fixed_ras, atol=1e-9)


def test_the_reference_grid_reaches_the_exporters_without_a_dicom_reference_refused(scene, tmp_path):
    geometry = VolumeGeometry((4, 3, 2), np.diag([1.0, 1.0, 2.0, 1.0]))
    node = mrml.add_volume_node(scene, np.zeros(geometry.shape, np.int16), geometry, "plain")
    reference = operations.reference_of_node(node)
    assert reference.series is None
    with pytest.raises(AlignSeriesError, match="not loaded from DICOM"):
        export_job.resample_and_write(scene, node, reference, exports.ExportTargets(png_folder=tmp_path / "png"))
    assert not (tmp_path / "png").exists()


def test_png_names_come_from_the_series_object(reference_folder):
    folder, files, _ = reference_folder
    by_file = {str(f): pydicom.dcmread(f, stop_before_pixels=True) for f in files}
    from AlignSeriesLib.dicom.series import scan_dicom

    for header in scan_dicom(folder).volumes[0].slices:
        dataset = by_file[header.path]
        assert dicom_export.png_slice_name(header) == f"{int(dataset.InstanceNumber):04d}_{dataset.SOPInstanceUID}.png"


def test_missing_output_folders_are_created_and_removed_again_when_the_export_fails(scene, tmp_path,
                                                                                    reference_folder):
    folder, _, _ = reference_folder
    reference = operations.load_reference(scene, folder)
    volume = mrml.add_volume_node(scene, np.ones(reference.geometry.shape, np.int16), reference.geometry, "ones")
    targets = exports.ExportTargets(volume_file=tmp_path / "new" / "deeper" / "ones.nrrd",
                                       png_folder=tmp_path / "pictures" / "png")
    written = export_job.resample_and_write(scene, volume, reference, targets).written
    assert (tmp_path / "new" / "deeper" / "ones.nrrd").is_file()
    assert len(written) == 1 + SLICES + 1  # the volume, the PNGs, index.csv
    failing = exports.ExportTargets(volume_file=tmp_path / "other" / "ones.nrrd",
                                       dicom_folder=tmp_path / "never" / "dicom")
    plain = operations.reference_of_node(mrml.add_volume_node(scene, np.zeros((2, 2, 2)),
                                                              VolumeGeometry((2, 2, 2), np.eye(4)), "plain"))
    with pytest.raises(AlignSeriesError, match="not loaded from DICOM"):
        export_job.resample_and_write(scene, mrml.add_volume_node(scene, np.zeros((2, 2, 2)), plain.geometry, "x"),
                                      plain, failing)
    assert not (tmp_path / "never").exists() and not (tmp_path / "other").exists()


def test_points_paired_by_order_whose_labels_pair_otherwise_warn_with_the_labels_rms(scene):
    fixed = np.array([[0.0, 0, 0], [40, 0, 0], [0, 30, 0], [0, 0, 20], [25, 25, 10]])
    moving = fixed + (3.0, -2.0, 1.0)
    labels = ["a", "b", "c", "d", "e"]
    order = [3, 0, 4, 1, 2]
    shuffled_moving, shuffled_labels = moving[order], [labels[n] for n in order]
    result = operations.compute_landmark_transform(scene, fixed, shuffled_moving, "rigid", match="order")
    assert result.warnings == []  # no labels: nothing to compare with
    fixed_node, moving_node = (scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode") for _ in range(2))
    for node, points, names in ((fixed_node, fixed, labels), (moving_node, shuffled_moving, shuffled_labels)):
        for point, name in zip(points, names, strict=True):
            node.AddControlPointWorld(vtk.vtkVector3d(*point), name)
    result = operations.compute_landmark_transform(scene, fixed_node, moving_node, "rigid", match="order")
    warning = next(w for w in result.warnings if w.code == "labels_disagree_with_order")
    assert result.rms_error > 10 and "0.00 mm by labels" in warning.message and "5 of 5" in warning.message
    agreeing = operations.compute_landmark_transform(scene, fixed_node, fixed_node, "rigid", match="order")
    assert [w.code for w in agreeing.warnings if w.code == "labels_disagree_with_order"] == []


def test_centers_and_moments_say_they_are_a_pre_alignment(scene, reference_folder):
    folder, _, _ = reference_folder
    node = operations.load_volumes(scene, folder)[0]
    for mode, expected in (("centers", True), ("moments", True), ("frameOfReference", False)):
        result = operations.compute_geometry_transform(scene, node, node, mode)
        assert ("pre_alignment" in [w.code for w in result.warnings]) is expected, mode


def test_a_transform_file_gets_its_missing_folders_and_a_failed_write_leaves_none(scene, tmp_path):
    node = mrml.set_linear_transform(scene, np.diag([1.0, 1.0, 1.0, 1.0]))
    written = operations.write_transform(node, tmp_path / "new" / "deeper" / "t.h5")
    read_back = mrml_files.read_transform_file(scene, written)
    np.testing.assert_allclose(mrml.transform_to_parent_matrix(read_back), np.eye(4), atol=1e-12)
    with pytest.raises(AlignSeriesError, match="FLIRT|geometr"):  # a FLIRT .mat needs both volumes' grids
        operations.write_transform(node, tmp_path / "never" / "t.mat")
    assert not (tmp_path / "never").exists()
    assert sorted(p.name for p in (tmp_path / "new" / "deeper").iterdir()) == ["t.h5"]
