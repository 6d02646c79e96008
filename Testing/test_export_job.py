"""The export job's seams, one small test per kind of bug that once slipped through them.

Parent transforms (of the moving and of the fixed volume) and their composition with the registration,
"Apply" before an export, progress fractions, slabs (their k in ``index.csv``, the preview's reference
slices), label PNG depth, InstanceNumbers and SOPInstanceUIDs per frame and per MOSAIC tile, a failed commit,
and the batch runner's resume and ``--force``. Truths are independent: analytic grids and labels, pydicom
and pillow reads of the files, nibabel's MOSAIC geometry.
"""

from __future__ import annotations

import csv
import gzip
import warnings
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from dicom_fixtures import ORIENTATIONS, stack_positions, write_multiframe, write_phantom_series, write_series

from AlignSeriesLib import batch, export_job, files, mrml, mrml_files, operations, preview
from AlignSeriesLib.export_job import ExportOptions
from AlignSeriesLib.exports import ExportTargets, Reference
from AlignSeriesLib.geometry import VolumeGeometry

Image = pytest.importorskip("PIL.Image")

SHIFT = np.array([[1.0, 0, 0, 12.0], [0, 1, 0, -7.0], [0, 0, 1, 4.0], [0, 0, 0, 1]])


def turn(degrees: float, axis: int = 2) -> np.ndarray:
    angle = np.radians(degrees)
    a, b = [n for n in range(3) if n != axis]
    matrix = np.eye(4)
    matrix[a, a] = matrix[b, b] = np.cos(angle)
    matrix[a, b], matrix[b, a] = -np.sin(angle), np.sin(angle)
    return matrix


def numbered(scene, geometry: VolumeGeometry, name="numbered", labelmap=True):
    """A label map whose every voxel holds its own number (so any misplacement changes values)."""
    values = np.arange(np.prod(geometry.shape), dtype=np.int32).reshape(geometry.shape) % 30000 + 1
    return mrml.add_volume_node(scene, values.astype(np.uint16), geometry, name, labelmap=labelmap), values


@pytest.fixture
def grid():
    return VolumeGeometry.from_spacing_origin_directions((9, 8, 7), (1.5, 1.2, 2.0), (-5.0, 3.0, 11.0),
                                                         turn(10)[:3, :3])


@pytest.fixture
def reference_folder(tmp_path):
    positions = stack_positions((-10.0, -12.0, 30.0), ORIENTATIONS["oblique"], np.arange(6) * 2.5)
    files, pixels = write_phantom_series(tmp_path / "reference", positions, "oblique")
    return tmp_path / "reference", files


# -- world coordinates: every transform once, in order ----------------------------------------------------


def test_the_registration_goes_above_the_moving_volumes_parents(scene, grid):
    node, values = numbered(scene, grid)
    parent, registration = SHIFT @ turn(7, 0), turn(-5, 1)  # they do not commute
    node.SetAndObserveTransformNodeID(mrml.set_linear_transform(scene, parent).GetID())
    transform = mrml.set_linear_transform(scene, registration)
    on_world_grid = Reference("world", grid.transformed(registration @ parent))
    result = export_job.resample_and_write(scene, node, on_world_grid, options=ExportOptions("nearest"),
                                           transform_node=transform)
    np.testing.assert_array_equal(mrml.volume_array(result.volume_node), values)  # registration @ parent: a copy


def test_a_registration_already_applied_above_the_moving_volume_is_applied_once(scene, grid):
    node, values = numbered(scene, grid)
    parent = mrml.set_linear_transform(scene, SHIFT)
    registration = mrml.set_linear_transform(scene, turn(9, 0))
    node.SetAndObserveTransformNodeID(parent.GetID())
    parent.SetAndObserveTransformNodeID(registration.GetID())  # "Apply": above the chain
    np.testing.assert_allclose(export_job.input_to_world_ras(node, registration), turn(9, 0) @ SHIFT, atol=1e-12)
    result = export_job.resample_and_write(scene, node, Reference("world", grid.transformed(turn(9, 0) @ SHIFT)),
                                           options=ExportOptions("nearest"), transform_node=registration)
    np.testing.assert_array_equal(mrml.volume_array(result.volume_node), values)


def test_a_fixed_volumes_parent_transform_places_the_reference_grid(scene, grid):
    fixed, _ = numbered(scene, grid, "fixed", labelmap=False)
    fixed.SetAndObserveTransformNodeID(mrml.set_linear_transform(scene, SHIFT).GetID())
    moving, values = numbered(scene, grid.transformed(SHIFT), "moving")  # lies where the fixed one is shown
    reference = operations.reference_of_node(fixed)
    np.testing.assert_allclose(reference.geometry.ijk_to_ras, SHIFT @ grid.ijk_to_ras, atol=1e-12)
    output = export_job.resample_and_write(scene, moving, reference, options=ExportOptions("nearest")).volume_node
    np.testing.assert_array_equal(mrml.volume_array(output), values)


def test_centers_of_a_fixed_volume_under_a_parent_transform_are_its_world_centers(scene, grid):
    fixed, _ = numbered(scene, grid, "fixed", labelmap=False)
    moving, _ = numbered(scene, grid, "moving", labelmap=False)
    fixed.SetAndObserveTransformNodeID(mrml.set_linear_transform(scene, SHIFT).GetID())
    result = operations.compute_geometry_transform(scene, fixed, moving, "centers")
    np.testing.assert_allclose(result.moving_to_fixed_ras, SHIFT, atol=1e-9)


# -- progress ---------------------------------------------------------------------------------------------


def test_progress_of_a_whole_job_rises_from_loading_through_resampling_to_one(scene, tmp_path, reference_folder):
    folder, _ = reference_folder
    fractions: list[float] = []
    operations.resample_and_export(scene, folder, folder, ExportTargets(png_folder=tmp_path / "png"),
                                   progress=lambda fraction: fractions.append(fraction) and False)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and 0 <= fractions[0]
    loading = [f for f in fractions if f <= operations.LOAD_SHARE]
    resampling = [f for f in fractions if operations.LOAD_SHARE < f < 1.0]
    assert loading and loading[-1] == pytest.approx(operations.LOAD_SHARE)
    end_of_resampling = operations.LOAD_SHARE + (1 - operations.LOAD_SHARE) * export_job.RESAMPLE_SHARE
    assert resampling and max(resampling) == pytest.approx(end_of_resampling)


# -- slabs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", range(5))
def test_a_slab_lists_its_own_k_and_previews_its_own_reference_slices(scene, tmp_path, reference_folder, first,
                                                                      monkeypatch):
    folder, files_in_k_order = reference_folder
    reference = operations.load_reference(scene, folder)
    node, _ = numbered(scene, reference.geometry, labelmap=False)
    shown = {}
    real = preview.write_fusion_png

    def seen(reference_voxels, *args, **kwargs):
        shown["voxels"] = reference_voxels
        return real(reference_voxels, *args, **kwargs)

    monkeypatch.setattr(preview, "write_fusion_png", seen)
    export_job.resample_and_write(scene, node, reference,
                                  ExportTargets(png_folder=tmp_path / "png", preview=tmp_path / "p.png"),
                                  ExportOptions(slab=(first, 2)))
    rows = list(csv.DictReader((tmp_path / "png" / "index.csv").open()))
    assert [int(row["k"]) for row in rows] == [first, first + 1]
    assert [row["sop_instance_uid"] for row in rows] == [
        pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in files_in_k_order[first:first + 2]]
    np.testing.assert_array_equal(shown["voxels"], reference.series.read_voxels()[first:first + 2])


# -- what the slices are called and hold -----------------------------------------------------------------------


@pytest.mark.parametrize("high, mode", [(255, "L"), (256, "I;16")])
def test_label_pngs_are_8_bit_up_to_255_and_16_bit_above(scene, tmp_path, reference_folder, high, mode):
    folder, _ = reference_folder
    reference = operations.load_reference(scene, folder)
    labels = np.zeros(reference.geometry.shape, np.uint16)
    labels[:, 3:9, 4:8] = high
    node = mrml.add_volume_node(scene, labels, reference.geometry, "mask", labelmap=True)
    written = export_job.resample_and_write(scene, node, reference, ExportTargets(png_folder=tmp_path / "png")).written
    pictures = [Image.open(path) for path in written if path.suffix == ".png"]
    assert {picture.mode for picture in pictures} == {mode}
    assert {int(np.asarray(picture).max()) for picture in pictures} == {high}


def test_slices_without_instance_number_are_numbered_from_one_along_the_whole_reference(scene, tmp_path):
    positions = stack_positions((-10.0, -12.0, 30.0), ORIENTATIONS["axial"], np.arange(6) * 2.5)
    write_series(tmp_path / "reference", np.zeros((6, 24, 20), np.int16), positions, ORIENTATIONS["axial"],
                 (0.8, 0.7), InstanceNumber=None)
    reference = operations.load_reference(scene, tmp_path / "reference")
    assert reference.series.instance_numbers == [None] * 6
    node = mrml.add_volume_node(scene, np.ones(reference.geometry.shape, np.int16), reference.geometry, "ones")
    for slab in ((0, 6), (2, 3)):
        folder = tmp_path / f"dicom{slab[0]}"
        export_job.resample_and_write(scene, node, reference, ExportTargets(dicom_folder=folder),
                                      ExportOptions(slab=slab))
        exported = sorted((pydicom.dcmread(path) for path in folder.glob("*.dcm")),
                          key=lambda dataset: float(dataset.ImagePositionPatient[2]))
        assert [int(dataset.InstanceNumber) for dataset in exported] == list(range(slab[0] + 1, sum(slab) + 1))


def test_every_frame_of_a_multiframe_reference_gets_its_own_instance(scene, tmp_path):
    positions = stack_positions((-10.0, -12.0, 30.0), ORIENTATIONS["axial"], np.arange(5) * 3.0)
    (tmp_path / "reference").mkdir()
    write_multiframe(tmp_path / "reference" / "enhanced.dcm", np.zeros((5, 16, 12), np.int16), positions,
                     ORIENTATIONS["axial"], (0.9, 0.8), shared_geometry=True)
    reference = operations.load_reference(scene, tmp_path / "reference")
    node = mrml.add_volume_node(scene, np.ones(reference.geometry.shape, np.int16), reference.geometry, "ones")
    export_job.resample_and_write(scene, node, reference, ExportTargets(dicom_folder=tmp_path / "dicom",
                                                                       png_folder=tmp_path / "png"))
    exported = [pydicom.dcmread(path) for path in sorted((tmp_path / "dicom").glob("*.dcm"))]
    assert len(exported) == 5 and len({dataset.SOPInstanceUID for dataset in exported}) == 5
    frames = sorted(int(dataset.SourceImageSequence[0].ReferencedFrameNumber) for dataset in exported)
    assert frames == [1, 2, 3, 4, 5] and len(list((tmp_path / "png").glob("*.png"))) == 5
    by_frame = {int(d.SourceImageSequence[0].ReferencedFrameNumber): d for d in exported}
    for frame, position in enumerate(positions, start=1):
        np.testing.assert_allclose(np.array(by_frame[frame].ImagePositionPatient, float), position, atol=1e-6)


def test_a_mosaic_reference_gets_one_slice_per_tile_at_the_tiles_own_position(scene, tmp_path):
    data = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / "siemens_dwi_1000.dcm.gz"
    (tmp_path / "mosaic").mkdir()
    (tmp_path / "mosaic" / "dwi.dcm").write_bytes(gzip.open(data).read())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel: "The DICOM readers are highly experimental"
        from nibabel.nicom import dicomwrappers

        wrapper = dicomwrappers.wrapper_from_file(str(tmp_path / "mosaic" / "dwi.dcm"))
        tiles = wrapper.image_shape[2]
        truth_lps = [(wrapper.affine @ (0, 0, tile, 1))[:3] for tile in range(tiles)]  # (row, column, slice) -> LPS
        reference = operations.load_reference(scene, tmp_path / "mosaic")
    node = mrml.add_volume_node(scene, np.ones(reference.geometry.shape, np.int16), reference.geometry, "ones")
    written = export_job.resample_and_write(scene, node, reference, ExportTargets(
        dicom_folder=tmp_path / "dicom", png_folder=tmp_path / "png")).written
    exported = [pydicom.dcmread(path, stop_before_pixels=True) for path in written if path.suffix == ".dcm"]
    assert len(exported) == tiles == 48 and len([path for path in written if path.suffix == ".png"]) == tiles
    assert len({dataset.SOPInstanceUID for dataset in exported}) == tiles
    assert {(int(dataset.Rows), int(dataset.Columns)) for dataset in exported} == {(128, 128)}
    positions = np.array([np.array(dataset.ImagePositionPatient, float) for dataset in exported])
    distances = np.linalg.norm(positions[:, None, :] - np.array(truth_lps)[None, :, :], axis=-1)
    assert np.all(distances.min(axis=1) < 0.02) and len(set(distances.argmin(axis=1))) == tiles


# -- all or nothing -----------------------------------------------------------------------------------------


def test_a_commit_that_fails_midway_puts_back_what_it_replaced(scene, tmp_path, reference_folder, monkeypatch):
    folder, _ = reference_folder
    reference = operations.load_reference(scene, folder)
    node, _ = numbered(scene, reference.geometry, labelmap=False)
    (tmp_path / "volume.nrrd").write_bytes(b"precious")
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "index.csv").write_text("earlier export")
    real_rename = files.os.rename

    def failing_rename(source, target):
        if Path(target).name == "png" and ".partial" in Path(source).name:  # the second output's move
            raise OSError("disk full")
        return real_rename(source, target)

    monkeypatch.setattr(files.os, "rename", failing_rename)
    nodes_before = scene.GetNumberOfNodes()
    with pytest.raises(OSError, match="disk full"):
        export_job.resample_and_write(scene, node, reference, ExportTargets(
            volume_file=tmp_path / "volume.nrrd", png_folder=tmp_path / "png", force=True))
    assert (tmp_path / "volume.nrrd").read_bytes() == b"precious"
    assert [path.name for path in (tmp_path / "png").iterdir()] == ["index.csv"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["png", "reference", "volume.nrrd"]
    assert scene.GetNumberOfNodes() == nodes_before  # nor a node left behind


# -- the batch runner's resume and --force -------------------------------------------------------------------


@pytest.fixture
def case(scene, tmp_path, reference_folder):
    folder, _ = reference_folder
    node, _ = numbered(scene, operations.load_reference(scene, folder).geometry, labelmap=False)
    mrml_files.save_node(node, tmp_path / "input.nrrd")
    return batch.Case(2, str(tmp_path / "input.nrrd"), str(folder), "out/", png="png")


def test_a_case_whose_output_was_deleted_is_redone(tmp_path, case):
    output_dir = tmp_path / "results"
    assert batch.run_case(case, output_dir)["status"] == "done"
    assert batch.finished_result(case, output_dir)["status"] == "skipped"
    next((output_dir / "out").glob("*.dcm")).unlink()
    assert batch.finished_result(case, output_dir) is None
    assert batch.run_case(case, output_dir)["status"] == "done"
    assert len(list((output_dir / "out").glob("*.dcm"))) == 6


def test_an_output_the_batch_did_not_make_is_replaced_only_with_force(tmp_path, case):
    output_dir = tmp_path / "results"
    (output_dir / "png").mkdir(parents=True)
    (output_dir / "png" / "index.csv").write_text("someone else's")
    refused = batch.run_case(case, output_dir)
    assert refused["status"] == "failed" and "was not written by this batch" in refused["error"]
    assert (output_dir / "png" / "index.csv").read_text() == "someone else's"
    assert batch.run_case(case, output_dir, force=True)["status"] == "done"
    assert len(list((output_dir / "png").glob("*.png"))) == 6


# -- the API's reference path ------------------------------------------------------------------------------


def test_the_api_reads_a_reference_path_header_only_and_writes_through_the_job_that_resampled(
        tmp_path, reference_folder, monkeypatch):
    import alignseries
    from AlignSeriesLib.dicom import pixels as dicom_pixels

    folder, files_in_k_order = reference_folder
    grid = operations.load_reference(mrml.new_scene(), folder).geometry
    mask = alignseries.Volume.from_array(np.ones(grid.shape, np.uint8), grid.ijk_to_ras, labelmap=True)
    reads = []
    monkeypatch.setattr(dicom_pixels, "read_slices", lambda *args, **kwargs: reads.append(args))
    on_reference = alignseries.resample(mask, str(folder), slab=(1, 3))
    written = alignseries.write_pngs(on_reference, str(folder), tmp_path / "png")
    assert reads == [] and on_reference.array.shape == (3, *grid.shape[1:])
    rows = list(csv.DictReader((tmp_path / "png" / "index.csv").open()))
    assert [int(row["k"]) for row in rows] == [1, 2, 3] and len(written) == 4
    other = alignseries.Volume.from_array(np.ones(grid.shape, np.uint8), grid.transformed(SHIFT).ijk_to_ras)
    with pytest.raises(alignseries.AlignSeriesError, match="was resampled onto .* not onto"):
        alignseries.write_dicom(on_reference, other, tmp_path / "dicom")


def test_the_job_result_carries_the_inputs_warnings_so_nothing_is_silently_partial(capsys, tmp_path):
    from conftest import run_json

    positions = stack_positions((-10.0, -12.0, 30.0), ORIENTATIONS["axial"], np.arange(6) * 2.5)
    write_phantom_series(tmp_path / "reference", positions)
    first_slice = sorted((tmp_path / "reference").iterdir())[0]
    (tmp_path / "reference" / "cut.dcm").write_bytes(first_slice.read_bytes()[:300])  # a slice cut short: skipped
    moving = positions[[0, 1, 2, 4, 5]]  # the input misses a slice
    write_phantom_series(tmp_path / "input", moving, frame_of_reference_uid="1.2.826.0.1.3680043.8.498.77")
    document = run_json(capsys, "resample", "--input", tmp_path / "input", "--reference", tmp_path / "reference",
                        "--output", tmp_path / "out.nrrd")
    codes = [warning["code"] for warning in document["warnings"]]
    assert {"skipped_file", "missing_slices", "frame_of_reference_mismatch"} <= set(codes), codes
    skipped = next(warning for warning in document["warnings"] if warning["code"] == "skipped_file")
    assert "cut.dcm" in skipped["message"]
