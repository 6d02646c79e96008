"""Issue 12 end to end: exports that lie on every reference slice, exact copies, whole-export encodings,
all-or-nothing outputs and the warnings that keep users from being misled.

Truth is independent of the code under test: pixel positions from the exported files' own pydicom headers,
PNGs read back with pillow, NIfTI written with nibabel, analytic label volumes.
"""

from __future__ import annotations

import csv

import numpy as np
import pydicom
import pytest
from conftest import require_shared_dicom
from dicom_fixtures import ORIENTATIONS, pixel_centers_lps, stack_positions, write_phantom_series

from AlignSeriesLib import mrml, mrml_files, operations
from AlignSeriesLib.dicom import export as dicom_export
from AlignSeriesLib.errors import OutputExistsError
from AlignSeriesLib.export_job import ExportOptions
from AlignSeriesLib.exports import ExportTargets
from AlignSeriesLib.geometry import VolumeGeometry

Image = pytest.importorskip("PIL.Image")
nib = pytest.importorskip("nibabel")

LABELS = 300  # more than 255: 16-bit PNGs, more than 16: resampled by nearest neighbour


def label_volume(scene, covering: VolumeGeometry, path, spacing: float = 1.3):
    """A label map file (values 1..LABELS-1, changing every voxel along each axis) on a rotated grid around it."""
    angle = np.radians(8.0)
    directions = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    extent = np.ptp(covering.bounds_ras, axis=1) + 20
    dimensions = tuple(int(n) for n in np.ceil(extent / spacing))
    origin = covering.center_ras - directions @ (np.array(dimensions) - 1) * spacing / 2 + (0.37, 0.23, 0.41)  # no ties
    geometry = VolumeGeometry.from_spacing_origin_directions(dimensions, (spacing,) * 3, origin, directions)
    k, j, i = np.indices(geometry.shape)
    labels = ((7 * i + 13 * j + 3 * k) % (LABELS - 1) + 1).astype(np.uint16)
    node = mrml.add_volume_node(scene, labels, geometry, "labels", labelmap=True)
    mrml_files.save_node(node, path)
    return labels, geometry


#: A point this close (in input voxels) to halfway between two voxels has no single nearest voxel.
TIE_ATOL = 1e-4


def truth_at(labels, geometry: VolumeGeometry, points_lps) -> np.ndarray:
    """The label of the input voxel nearest to each LPS point (0 outside the input; -1 where two voxels tie)."""
    points_ras = points_lps * np.array([-1.0, -1.0, 1.0])
    fractional = geometry.world_to_ijk(points_ras)
    tie = np.any(np.abs(np.abs(fractional - np.floor(fractional)) - 0.5) < TIE_ATOL, axis=-1)
    ijk = np.rint(fractional).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(geometry.dimensions)), axis=-1)
    ijk = np.where(inside[..., None], ijk, 0)
    return np.where(tie, -1, np.where(inside, labels[ijk[..., 2], ijk[..., 1], ijk[..., 0]].astype(np.int64), 0))


def mismatches_on_true_positions(folder_dicom, folder_png, reference_files, labels, geometry) -> dict:
    """Count exported pixels (DICOM, PNG) differing from the input at that pixel's true position."""
    references = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID:
                  pydicom.dcmread(p, stop_before_pixels=True) for p in reference_files}
    counts = {"dicom": 0, "png": 0, "slices": 0, "pixels": 0, "ties": 0}
    index = {row["sop_instance_uid"]: row["png"] for row in csv.DictReader((folder_png / "index.csv").open())}
    for path in sorted(folder_dicom.glob("*.dcm")):
        exported = pydicom.dcmread(path)
        source = references[exported.SourceImageSequence[0].ReferencedSOPInstanceUID]
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):  # its source's plane
            np.testing.assert_allclose(np.array(exported[keyword].value, float), np.array(source[keyword].value, float),
                                       atol=1e-5)
        assert exported.InstanceNumber == source.InstanceNumber
        centers = pixel_centers_lps(np.array(source.ImagePositionPatient, float),
                                    np.array(source.ImageOrientationPatient, float),
                                    np.array(source.PixelSpacing, float), int(source.Rows), int(source.Columns))
        truth = truth_at(labels, geometry, centers)
        dicom_values = exported.pixel_array * float(exported.RescaleSlope) + float(exported.RescaleIntercept)
        png_values = np.asarray(Image.open(folder_png / index[source.SOPInstanceUID]))
        decided = truth >= 0
        counts["ties"] += int(np.count_nonzero(~decided))
        counts["dicom"] += int(np.count_nonzero((dicom_values != truth) & decided))
        counts["png"] += int(np.count_nonzero((png_values != truth) & decided))
        counts["slices"] += 1
        counts["pixels"] += truth.size
        assert len(np.unique(truth)) > 20, "the check must see many labels"
    return counts


def export_both(scene, tmp_path, input_path, reference_folder, **options):
    return operations.resample_and_export(scene, input_path, reference_folder,
                                          ExportTargets(dicom_folder=tmp_path / "dicom", png_folder=tmp_path / "png"),
                                          ExportOptions("nearest", True, **options))


@pytest.mark.parametrize("kind", ["tilted", "uneven", "tilted_uneven_sagittal"])
def test_an_irregular_reference_is_exported_slice_for_slice_on_each_slices_own_plane(scene, tmp_path, kind):
    distances = {"tilted": np.arange(8) * 2.5, "uneven": np.array([0, 2, 4, 7, 9, 14, 16, 17.5]),
                 "tilted_uneven_sagittal": np.array([0, 3, 5, 6, 9, 12, 13, 15])}[kind]
    orientation = ORIENTATIONS["sagittal" if "sagittal" in kind else "axial"]
    positions = stack_positions((-20.0, -15.0, 40.0), orientation, distances, tilt_deg=0 if kind == "uneven" else 17)
    files, _ = write_phantom_series(tmp_path / "reference", positions, orientation, (0.9, 0.8), rows=30, columns=26)
    reference = operations.load_reference(scene, tmp_path / "reference")
    assert reference.series.regularized
    labels, geometry = label_volume(scene, reference.geometry, tmp_path / "labels.nrrd")
    export = export_both(scene, tmp_path, tmp_path / "labels.nrrd", tmp_path / "reference")
    assert len(export.outputs) == len(files)
    counts = mismatches_on_true_positions(tmp_path / "dicom", tmp_path / "png", files, labels, geometry)
    assert counts["slices"] == len(files) and counts["dicom"] == counts["png"] == 0, counts


def test_a_real_tilted_unevenly_spaced_ct_is_exported_slice_for_slice(scene, tmp_path):
    folder = require_shared_dicom() / "ct_ge_tilt_varspacing" / "dicom"
    if not folder.is_dir():
        pytest.skip(f"real series ct_ge_tilt_varspacing not available: {folder} is absent")
    reference = operations.load_reference(scene, folder)
    assert reference.series.regularized
    labels, geometry = label_volume(scene, reference.geometry, tmp_path / "labels.nrrd", spacing=2.0)
    export_both(scene, tmp_path, tmp_path / "labels.nrrd", folder)
    counts = mismatches_on_true_positions(tmp_path / "dicom", tmp_path / "png", reference.series.files, labels,
                                          geometry)
    assert counts["slices"] == len(reference.series.slices) and counts["dicom"] == counts["png"] == 0, counts
    assert counts["ties"] < 1e-3 * counts["pixels"]  # pixels within TIE_ATOL of halfway: no single nearest voxel


# -- exact where nothing moves ----------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal", "oblique"])
def test_a_nifti_converted_from_the_same_dicom_comes_back_bit_for_bit(scene, tmp_path, orientation):
    positions = stack_positions((-30.3, 12.7, -80.1), ORIENTATIONS[orientation], np.arange(7) * 3.3)
    write_phantom_series(tmp_path / "reference", positions, orientation, (0.7, 0.9), rows=22, columns=18)
    reference = operations.load_reference(scene, tmp_path / "reference")
    pixels = reference.series.read_voxels()
    affine = reference.geometry.nifti_affine.astype(np.float32)  # a float32-rounded header, as converters write
    image = nib.Nifti1Image(pixels.transpose(2, 1, 0), affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, tmp_path / "converted.nii.gz")
    export = operations.resample_and_export(scene, tmp_path / "converted.nii.gz", tmp_path / "reference",
                                            ExportTargets(volume_file=tmp_path / "back.nrrd"), ExportOptions("cubic"))
    np.testing.assert_array_equal(mrml.volume_array(export.volume_node), pixels)


# -- DICOM values and identity across slabs ---------------------------------------------------------------


@pytest.fixture
def axial_reference(tmp_path):
    positions = stack_positions((-10.0, -12.0, 30.0), ORIENTATIONS["axial"], np.arange(6) * 2.5)
    files, pixels = write_phantom_series(tmp_path / "reference", positions)
    return tmp_path / "reference", files, pixels


def test_two_slabs_written_into_one_folder_make_one_consistent_series(scene, tmp_path, axial_reference):
    folder, files, pixels = axial_reference
    ct = (pixels.astype(np.int32) - pixels.min()) * 200 - 20000  # beyond int16, negative: uint16 + intercept
    assert ct.max() > 32767 and ct.max() - ct.min() < 65535
    reference = operations.load_reference(scene, folder)
    node = mrml.add_volume_node(scene, ct, reference.geometry, "ct32")
    mrml_files.save_node(node, tmp_path / "ct32.nrrd")
    out = ExportTargets(dicom_folder=tmp_path / "series")
    first = operations.resample_and_export(scene, tmp_path / "ct32.nrrd", folder, out, ExportOptions(slab=(3, 3)))
    second = operations.resample_and_export(scene, tmp_path / "ct32.nrrd", folder, out, ExportOptions(slab=(0, 3)))
    assert len(first.outputs) == len(second.outputs) == 3
    exported = [pydicom.dcmread(p) for p in sorted((tmp_path / "series").glob("*.dcm"))]
    assert len(exported) == 6
    assert len({d.SeriesInstanceUID for d in exported}) == 1 and len({d.SOPInstanceUID for d in exported}) == 6
    assert len({(d.SeriesNumber, d.SeriesDescription, d.SeriesDate, d.SeriesTime) for d in exported}) == 1
    assert {(float(d.RescaleSlope), float(d.RescaleIntercept), d.PixelRepresentation) for d in exported} == {
        (1.0, float(ct.min()), 0)}  # integers: slope 1, one intercept
    by_source = {d.SourceImageSequence[0].ReferencedSOPInstanceUID: d for d in exported}
    for k, path in enumerate(files):  # files are in k order
        source = pydicom.dcmread(path, stop_before_pixels=True)
        dataset = by_source[source.SOPInstanceUID]
        assert dataset.InstanceNumber == source.InstanceNumber
        np.testing.assert_allclose(np.array(dataset.ImagePositionPatient, float),
                                   np.array(source.ImagePositionPatient, float), atol=1e-6)  # corner error 0
        values = dataset.pixel_array.astype(np.int64) + int(float(dataset.RescaleIntercept))
        np.testing.assert_array_equal(values, ct[k])
    with pytest.raises(OutputExistsError, match="already holds 2 of these slices.*--force"):
        operations.resample_and_export(scene, tmp_path / "ct32.nrrd", folder, out, ExportOptions(slab=(2, 2)))


def test_a_float_input_gets_one_slope_and_intercept_in_every_slab(scene, tmp_path, axial_reference):
    folder, _, pixels = axial_reference
    reference = operations.load_reference(scene, folder)
    values = pixels.astype(np.float32) / 7.0
    values[0] += 5000  # the first slab holds the high values: a per-slab choice would differ
    mrml_files.save_node(mrml.add_volume_node(scene, values, reference.geometry, "f"), tmp_path / "f.nrrd")
    for slab in ((0, 2), (2, 4)):
        operations.resample_and_export(scene, tmp_path / "f.nrrd", folder,
                                       ExportTargets(dicom_folder=tmp_path / "series"), ExportOptions(slab=slab))
    exported = [pydicom.dcmread(p) for p in (tmp_path / "series").glob("*.dcm")]
    assert len({(d.RescaleSlope, d.RescaleIntercept) for d in exported}) == 1 and len(exported) == 6


# -- all or nothing -----------------------------------------------------------------------------------------


def test_a_failure_midway_leaves_nothing_new(scene, tmp_path, axial_reference, monkeypatch):
    folder, _, pixels = axial_reference
    reference = operations.load_reference(scene, folder)
    mrml_files.save_node(mrml.add_volume_node(scene, pixels, reference.geometry, "ct"), tmp_path / "ct.nrrd")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "volume.nrrd").write_bytes(b"precious")

    def failing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(dicom_export, "write_png_files", failing)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for force in (False, True):
        with pytest.raises((OSError, OutputExistsError)):
            operations.resample_and_export(scene, tmp_path / "ct.nrrd", folder, ExportTargets(
                tmp_path / "out" / "volume.nrrd", png_folder=tmp_path / "out" / "png",
                preview=tmp_path / "out" / "p.png", force=force))
        assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no volume file, no PNG, no temporaries
        assert (tmp_path / "out" / "volume.nrrd").read_bytes() == b"precious"
    monkeypatch.undo()
    export = operations.resample_and_export(scene, tmp_path / "ct.nrrd", folder, ExportTargets(
        tmp_path / "out" / "new.nrrd", png_folder=tmp_path / "out" / "png", preview=tmp_path / "out" / "p.png"))
    assert all(path.is_file() for path in export.written) and len(export.written) == 1 + 6 + 1 + 1


# -- warnings where users are misled --------------------------------------------------------------------------


def test_resampling_between_frames_of_reference_without_a_transform_warns(scene, tmp_path, axial_reference):
    folder, _, _ = axial_reference
    positions = stack_positions((-10.0, -12.0, 30.0), ORIENTATIONS["axial"], np.arange(4) * 3.0)
    write_phantom_series(tmp_path / "other", positions, frame_of_reference_uid="1.2.826.0.1.3680043.8.498.77")
    write_phantom_series(tmp_path / "same", positions)
    codes = {}
    for name in ("other", "same"):
        export = operations.resample_and_export(scene, tmp_path / name, folder,
                                                ExportTargets(volume_file=tmp_path / f"{name}.nrrd"))
        codes[name] = [warning.code for warning in export.warnings]
    assert "frame_of_reference_mismatch" in codes["other"] and "frame_of_reference_mismatch" not in codes["same"]
