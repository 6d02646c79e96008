"""The Python API (`import alignseries`): the command line's results, nibabel/SimpleITK round trips, clear errors.

Truth comes from outside the API: the command line run in this process, nibabel's and SimpleITK's own
readers of files they wrote, and pydicom's reading of the DICOM headers.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813 - the name SimpleITK documents
from conftest import run_json
from dicom_fixtures import ORIENTATIONS, stack_positions, write_series
from PIL import Image

import alignseries
from AlignSeriesLib.errors import AlignSeriesError, FrameOfReferenceError, GeometryError, LandmarkError

AXIAL = ORIENTATIONS["axial"]
CT_ROWS, CT_COLUMNS, CT_SLICES = 14, 12, 7
CT_PIXEL_SPACING = (0.8, 0.7)
CT_FIRST_LPS = (-20.0, -30.0, 40.0)
# The mask's own grid: axis a -> RAS +y, b -> RAS +x, c -> RAS -z (transposed and flipped against the CT).
MASK_SHAPE = (30, 26, 16)
MASK_AFFINE = np.array([[0, 0.35, 0, 11.845], [0.4, 0, 0, 19.08], [0, 0, -1.25, 56.625], [0, 0, 0, 1]])


def mask_labels(points_ras) -> np.ndarray:
    """1 in an ellipsoid, 2 in a box, placed asymmetrically so that a flip shows."""
    p = np.asarray(points_ras, dtype=float)
    labels = np.zeros(p.shape[:-1], np.uint8)
    labels[((p[..., 0] - 15) / 2.5) ** 2 + ((p[..., 1] - 26) / 3) ** 2 + ((p[..., 2] - 44) / 4) ** 2 <= 1] = 1
    labels[(abs(p[..., 0] - 19) <= 1.5) & (abs(p[..., 1] - 22) <= 2) & (abs(p[..., 2] - 50.5) <= 2.5)] = 2
    return labels


@pytest.fixture
def ct_and_mask(tmp_path):
    """A CT DICOM series with shuffled InstanceNumbers, and an AI mask NIfTI on its own permuted grid."""
    positions = stack_positions(CT_FIRST_LPS, AXIAL, np.arange(CT_SLICES) * 2.5)
    pixels = np.arange(CT_SLICES * CT_ROWS * CT_COLUMNS, dtype=np.int16).reshape(CT_SLICES, CT_ROWS, CT_COLUMNS)
    files = write_series(tmp_path / "ct", pixels, positions, AXIAL, CT_PIXEL_SPACING, shuffle_seed=3)
    abc = np.stack(np.meshgrid(*[np.arange(n) for n in MASK_SHAPE], indexing="ij"), axis=-1)
    mask = mask_labels(abc @ MASK_AFFINE[:3, :3].T + MASK_AFFINE[:3, 3])
    assert set(np.unique(mask).tolist()) == {0, 1, 2}
    mask_path = tmp_path / "ai_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, MASK_AFFINE), mask_path)
    return tmp_path / "ct", files, mask_path


def dicom_values_by_position(folder: Path) -> dict[tuple, np.ndarray]:
    """Each slice's modality values, keyed by its ImagePositionPatient (pydicom, no AlignSeries)."""
    values = {}
    for path in sorted(folder.iterdir()):
        dataset = pydicom.dcmread(path)
        key = tuple(np.round([float(v) for v in dataset.ImagePositionPatient], 4))
        values[key] = dataset.pixel_array * float(dataset.get("RescaleSlope", 1)) + float(
            dataset.get("RescaleIntercept", 0))
    return values


# -- one implementation, two doors --------------------------------------------------------------------


def test_mask_on_ct_from_python_is_exactly_the_command_line_result(capsys, tmp_path, ct_and_mask):
    ct_folder, _, mask_path = ct_and_mask
    run_json(capsys, "resample", "--input", mask_path, "--reference", ct_folder, "--labelmap",
             "--png", tmp_path / "cli_png", "--output", tmp_path / "cli.nrrd")
    run_json(capsys, "resample", "--input", mask_path, "--reference", ct_folder, "--labelmap",
             "--output", f"{tmp_path / 'cli_dicom'}/")

    ct = alignseries.load(ct_folder)
    mask = alignseries.load(mask_path, labelmap=True)
    mask_on_ct = alignseries.resample(mask, ct)
    mask_on_ct.save(tmp_path / "api.nrrd")
    pngs = alignseries.write_pngs(mask_on_ct, ct, tmp_path / "api_png")
    dicoms = alignseries.write_dicom(mask_on_ct, ct, tmp_path / "api_dicom")

    cli_image, api_image = sitk.ReadImage(tmp_path / "cli.nrrd"), sitk.ReadImage(tmp_path / "api.nrrd")
    cli_array = sitk.GetArrayFromImage(cli_image)
    assert set(np.unique(cli_array).tolist()) == {0, 1, 2}, "the comparison must see both labels"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(api_image), cli_array)
    np.testing.assert_array_equal(mask_on_ct.array, cli_array)
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(api_image, get)(), getattr(cli_image, get)(), atol=1e-9)
    assert mask_on_ct.labelmap

    assert len(pngs) == CT_SLICES + 1 and pngs[-1].name == "index.csv"
    assert sorted(p.name for p in pngs) == sorted(p.name for p in (tmp_path / "cli_png").iterdir())
    for png in pngs[:-1]:
        cli_png = tmp_path / "cli_png" / png.name
        np.testing.assert_array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(cli_png)))

    assert len(dicoms) == CT_SLICES
    cli_slices, api_slices = (dicom_values_by_position(tmp_path / name) for name in ("cli_dicom", "api_dicom"))
    assert cli_slices.keys() == api_slices.keys() and len(cli_slices) == CT_SLICES
    for position, values in cli_slices.items():
        np.testing.assert_array_equal(api_slices[position], values, err_msg=str(position))


def test_mask_from_nibabel_gives_the_same_result_as_the_mask_file(capsys, tmp_path, ct_and_mask):
    ct_folder, _, mask_path = ct_and_mask
    run_json(capsys, "resample", "--input", mask_path, "--reference", ct_folder, "--labelmap",
             "--interpolation", "nearest", "--output", tmp_path / "cli.nii.gz")

    ct = alignseries.load(ct_folder)
    mask = alignseries.Volume.from_nibabel(nib.load(mask_path), labelmap=True)
    mask_on_ct = alignseries.resample(mask, ct, interpolation="nearest")

    expected = np.asarray(nib.load(tmp_path / "cli.nii.gz").dataobj).transpose(2, 1, 0)
    assert np.count_nonzero(expected == 2) > 0
    np.testing.assert_array_equal(mask_on_ct.array, expected)


def test_dicom_provenance_lists_slices_along_the_normal(ct_and_mask):
    ct_folder, files, _ = ct_and_mask
    ct = alignseries.load(ct_folder)

    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    by_height = sorted(zip(headers, files, strict=True), key=lambda pair: float(pair[0].ImagePositionPatient[2]))
    assert ct.dicom.files == [str(f) for _, f in by_height]
    assert ct.dicom.instance_numbers == [int(h.InstanceNumber) for h, _ in by_height]
    assert ct.dicom.instance_numbers != sorted(ct.dicom.instance_numbers), "the fixture shuffles InstanceNumbers"
    assert ct.dicom.sop_instance_uids == [h.SOPInstanceUID for h, _ in by_height]
    first = by_height[0][0]
    np.testing.assert_allclose(ct.ijk_to_lps[:3, 3], [float(v) for v in first.ImagePositionPatient], atol=1e-6)
    np.testing.assert_array_equal(ct.array[0], pydicom.dcmread(by_height[0][1]).pixel_array)
    one_slice = alignseries.load(files[0])
    assert one_slice.dicom.files == [str(files[0])]
    assert [warning.code for warning in one_slice.warnings] == ["single_slice"]


def test_transform_gives_the_command_line_matrices(capsys, tmp_path):
    positions_1 = stack_positions((-20.0, -30.0, 40.0), AXIAL, np.arange(5) * 2.0)
    positions_2 = stack_positions((-17.0, -26.5, 43.0), AXIAL, np.arange(4) * 3.0)
    files_1 = write_series(tmp_path / "s1", np.zeros((5, 10, 8), np.int16), positions_1, AXIAL, (0.8, 0.7),
                           FrameOfReferenceUID="1.2.3.4")
    write_series(tmp_path / "s2", np.zeros((4, 9, 6), np.int16), positions_2, AXIAL, (0.6, 0.5),
                 FrameOfReferenceUID="1.2.3.4")
    document = run_json(capsys, "transform", "--fixed", tmp_path / "s1", "--moving", tmp_path / "s2",
                        "--output", tmp_path / "cli.json")

    result = alignseries.transform(alignseries.load(tmp_path / "s1"), alignseries.load(tmp_path / "s2"))

    np.testing.assert_allclose(result.moving_to_fixed_ras, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(result.moving_ijk_to_fixed_ijk, document["moving_ijk_to_fixed_ijk"], atol=1e-9)
    # by hand from the headers: moving voxel (i, j, k) = (1, 2, 1) is at s2's position + offsets, LPS
    point_lps = np.array(positions_2[1]) + 1 * 0.5 * np.array(AXIAL[:3]) + 2 * 0.6 * np.array(AXIAL[3:])
    fixed_ijk = result.moving_ijk_to_fixed_ijk @ [1, 2, 1, 1]
    fixed_point_lps = (np.array(positions_1[0]) + fixed_ijk[0] * 0.7 * np.array(AXIAL[:3])
                       + fixed_ijk[1] * 0.8 * np.array(AXIAL[3:]) + fixed_ijk[2] * 2.0 * np.cross(AXIAL[:3], AXIAL[3:]))
    np.testing.assert_allclose(fixed_point_lps, point_lps, atol=1e-9)
    saved = result.save(tmp_path / "api.json")
    assert json.loads(saved.read_text()) == json.loads((tmp_path / "cli.json").read_text())
    assert files_1


def test_transform_between_frames_is_refused_with_the_alternatives(tmp_path):
    fixed = alignseries.Volume.from_array(np.zeros((3, 4, 5), np.int16), np.eye(4))
    with pytest.raises(FrameOfReferenceError, match="landmarks"):
        alignseries.transform(fixed, fixed)


def test_resample_takes_a_result_a_matrix_or_a_transform_file_alike(capsys, tmp_path):
    rng = np.random.default_rng(5)
    moving = alignseries.Volume.from_array(rng.integers(0, 1000, (8, 9, 10)).astype(np.int16),
                                           np.diag([1.1, 0.9, 1.7, 1.0]), name="moving")
    fixed = alignseries.Volume.from_array(np.zeros((7, 8, 9), np.int16), np.diag([1.0, 1.0, 1.5, 1.0]), name="fixed")
    moving_to_fixed_ras = np.eye(4)
    moving_to_fixed_ras[:3, 3] = (1.3, -0.7, 2.2)
    points = rng.normal(0, 20, (5, 3))
    result = alignseries.landmarks(points + moving_to_fixed_ras[:3, 3], points, mode="rigid")
    np.testing.assert_allclose(result.moving_to_fixed_ras, moving_to_fixed_ras, atol=1e-9)
    assert result.rms_error < 1e-9 and result.residuals.shape == (5,)
    result.save(tmp_path / "t.h5")
    moving.save(tmp_path / "moving.nrrd")
    fixed.save(tmp_path / "fixed.nrrd")
    run_json(capsys, "resample", "--input", tmp_path / "moving.nrrd", "--reference", tmp_path / "fixed.nrrd",
             "--transform", tmp_path / "t.h5", "--output", tmp_path / "cli.nrrd")
    expected = sitk.GetArrayFromImage(sitk.ReadImage(tmp_path / "cli.nrrd"))

    for transform in (result, moving_to_fixed_ras, tmp_path / "t.h5", str(tmp_path / "t.h5")):
        resampled = alignseries.resample(moving, fixed, transform=transform)
        np.testing.assert_array_equal(resampled.array, expected, err_msg=type(transform).__name__)
    assert not np.array_equal(alignseries.resample(moving, fixed).array, expected), "the transform must matter"


# -- nibabel and SimpleITK in and out -----------------------------------------------------------------

AFFINES_RAS = {
    "ras": np.array([[0.7, 0, 0, -10.5], [0, 0.8, 0, 20.25], [0, 0, 2.5, -33.0], [0, 0, 0, 1]]),
    "lps": np.array([[-0.7, 0, 0, 10.5], [0, -0.8, 0, 12.0], [0, 0, 2.5, 7.5], [0, 0, 0, 1]]),
    "permuted": MASK_AFFINE,
    "oblique": None,  # filled below: rotated, left-handed
}
_rotation = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
AFFINES_RAS["oblique"] = np.vstack([np.hstack([_rotation * [0.9, 1.2, 3.0], [[4.0], [-7.0], [12.5]]]), [0, 0, 0, 1]])


def corner_distance_mm(geometry_a, geometry_b) -> float:
    return float(np.max(np.linalg.norm(geometry_a.corners_ras - geometry_b.corners_ras, axis=1)))


def sitk_ijk_to_lps(image) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * image.GetSpacing()
    matrix[:3, 3] = image.GetOrigin()
    return matrix


@pytest.mark.parametrize("frame", AFFINES_RAS)
def test_nibabel_files_round_trip_geometry_and_values(tmp_path, frame):
    data_ijk = np.random.default_rng(2).integers(-1000, 3000, (9, 7, 5)).astype(np.int16)
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(data_ijk, AFFINES_RAS[frame]), path)
    truth = nib.load(path)

    volume = alignseries.Volume.from_nibabel(nib.load(path))

    assert np.abs(volume.ijk_to_ras - truth.affine).max() < 1e-6
    assert volume.array.dtype == data_ijk.dtype
    np.testing.assert_array_equal(volume.array.transpose(2, 1, 0), np.asarray(truth.dataobj))
    itk = sitk.ReadImage(path)  # ITK's own reading of the same file, in LPS
    assert np.abs(volume.ijk_to_lps - sitk_ijk_to_lps(itk)).max() < 1e-5  # NIfTI stores float32
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(itk))
    assert corner_distance_mm(alignseries.load(path).geometry, volume.geometry) < 1e-5  # Slicer's reader

    nib.save(volume.to_nibabel(), tmp_path / "again.nii.gz")
    again = nib.load(tmp_path / "again.nii.gz")
    assert np.abs(again.affine - truth.affine).max() < 1e-6
    assert again.get_data_dtype() == data_ijk.dtype
    np.testing.assert_array_equal(np.asarray(again.dataobj), data_ijk)
    assert again.header.get_sform(coded=True)[1] == 1 and again.header.get_qform(coded=True)[1] == 1


SITK_DIRECTIONS_LPS = {
    "lps": np.eye(3),
    "ras": np.diag([-1.0, -1.0, 1.0]),
    "permuted": np.array([[0, 0, -1.0], [1.0, 0, 0], [0, -1.0, 0]]),
    "oblique": _rotation,
}


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
@pytest.mark.parametrize("frame", SITK_DIRECTIONS_LPS)
def test_simpleitk_files_round_trip_geometry_and_values(tmp_path, frame, suffix):
    array_kji = np.random.default_rng(3).uniform(-5, 5, (5, 7, 9)).astype(np.float32)
    written = sitk.GetImageFromArray(array_kji)
    written.SetSpacing((0.6, 0.75, 2.0))
    written.SetOrigin((-12.25, 30.5, -7.0))
    written.SetDirection(SITK_DIRECTIONS_LPS[frame].reshape(-1).tolist())
    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(written, path)
    truth = sitk.ReadImage(path)

    volume = alignseries.Volume.from_sitk(truth)
    out = volume.to_sitk()

    assert np.abs(volume.ijk_to_lps - sitk_ijk_to_lps(truth)).max() < 1e-6
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(truth))
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert np.abs(np.subtract(getattr(out, get)(), getattr(truth, get)())).max() < 1e-6, get
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), array_kji)
    assert out.GetPixelID() == truth.GetPixelID()
    assert corner_distance_mm(alignseries.load(path).geometry, volume.geometry) < 1e-5  # Slicer's reader
    if suffix == ".nii.gz":  # nibabel's reading of the file SimpleITK wrote: RAS, [i, j, k]
        other = nib.load(path)
        assert np.abs(volume.ijk_to_ras - other.affine).max() < 1e-5
        np.testing.assert_array_equal(volume.array.transpose(2, 1, 0), np.asarray(other.dataobj))
    sitk.WriteImage(out, tmp_path / f"again{suffix}")
    again = sitk.ReadImage(tmp_path / f"again{suffix}")
    assert np.abs(sitk_ijk_to_lps(again) - sitk_ijk_to_lps(truth)).max() < 1e-6
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again), array_kji)


def test_mask_through_sitk_and_nibabel_resamples_alike(ct_and_mask):
    ct_folder, _, mask_path = ct_and_mask
    ct = alignseries.load(ct_folder)
    from_nibabel = alignseries.Volume.from_nibabel(nib.load(mask_path), labelmap=True)
    from_sitk = alignseries.Volume.from_sitk(sitk.ReadImage(mask_path), labelmap=True)
    a = alignseries.resample(from_nibabel, ct).array
    b = alignseries.resample(from_sitk, ct).array
    assert np.count_nonzero(a) > 0
    np.testing.assert_array_equal(a, b)


# -- wrong input, clearly refused --------------------------------------------------------------------


def test_a_folder_of_several_volumes_needs_a_choice(tmp_path):
    for number, (rows, value) in enumerate([(6, 10), (8, 20)]):
        positions = stack_positions((0.0, 0.0, 10.0 * number), AXIAL, np.arange(3) * 1.5)
        write_series(tmp_path / "both", np.full((3, rows, 5), value, np.int16), positions, AXIAL, (0.5, 0.5),
                     name_prefix=f"s{number}_", SeriesNumber=number + 1, SeriesDescription=f"series {number + 1}")

    with pytest.raises(AlignSeriesError, match=r"holds 2 volumes \(\[1\] .*series 1.*; \[2\] .*series 2.*volume=N"):
        alignseries.load(tmp_path / "both")
    with pytest.raises(AlignSeriesError, match="volume=3 requested, but .* holds 2"):
        alignseries.load(tmp_path / "both", volume=3)
    volumes = alignseries.load_all(tmp_path / "both")
    second = alignseries.load(tmp_path / "both", volume=2)
    assert [v.array.max() for v in volumes] == [10, 20] and second.array.max() == 20


def test_arrays_come_in_only_with_their_placement():
    with pytest.raises(GeometryError, match="3-D, indexed"):
        alignseries.Volume.from_array(np.zeros((4, 5)), np.eye(4))
    with pytest.raises(GeometryError, match="ijk_to_ras"):
        alignseries.Volume.from_array(np.zeros((2, 3, 4)), np.eye(3))
    with pytest.raises(GeometryError, match="singular"):
        alignseries.Volume.from_array(np.zeros((2, 3, 4)), np.diag([1.0, 1.0, 0.0, 1.0]))
    with pytest.raises(GeometryError, match="float16"):
        alignseries.Volume.from_array(np.zeros((2, 3, 4), np.float16), np.eye(4))
    with pytest.raises(TypeError, match="from_array"):
        alignseries.Volume(None)
    volume = alignseries.Volume.from_array(np.zeros((2, 3, 4), bool), np.eye(4), labelmap=True)
    assert volume.array.dtype == np.uint8 and volume.labelmap
    with pytest.raises(ValueError, match="read-only"):
        volume.array[0, 0, 0] = 1
    for wrong, hint in ((np.zeros((2, 3, 4)), "Volume.from_array"),
                        (nib.Nifti1Image(np.zeros((4, 3, 2)), np.eye(4)), "Volume.from_nibabel"),
                        (sitk.Image(4, 3, 2, sitk.sitkInt16), "Volume.from_sitk")):
        with pytest.raises(AlignSeriesError, match=hint):
            alignseries.resample(wrong, volume)
        with pytest.raises(AlignSeriesError, match=hint):
            alignseries.resample(volume, wrong)


def test_adapters_refuse_what_is_not_one_scalar_volume():
    with pytest.raises(GeometryError, match=r"shape \(4, 3, 2, 2\).*3-D"):
        alignseries.Volume.from_nibabel(nib.Nifti1Image(np.zeros((4, 3, 2, 2), np.int16), np.eye(4)))
    assert alignseries.Volume.from_nibabel(nib.Nifti1Image(np.zeros((4, 3, 2, 1), np.int16), np.eye(4))).array.shape \
        == (2, 3, 4)
    with pytest.raises(GeometryError, match="3 components"):
        alignseries.Volume.from_sitk(sitk.Image([4, 3, 2], sitk.sitkVectorFloat32, 3))
    sheared = np.eye(4)
    sheared[0, 2] = 0.5
    with pytest.raises(GeometryError, match="sheared"):
        alignseries.Volume.from_array(np.zeros((2, 3, 4)), sheared).to_sitk()


@pytest.mark.parametrize("package, call", [("nibabel", "to_nibabel"), ("SimpleITK", "to_sitk")])
def test_a_missing_optional_package_is_named(monkeypatch, package, call):
    volume = alignseries.Volume.from_array(np.zeros((2, 3, 4)), np.eye(4))
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=f"'{package}'.*pip install {package}"):
        getattr(volume, call)()


def test_exports_need_the_volume_on_a_dicom_reference_grid(tmp_path, ct_and_mask):
    ct_folder, _, mask_path = ct_and_mask
    ct = alignseries.load(ct_folder)
    mask = alignseries.load(mask_path, labelmap=True)
    with pytest.raises(AlignSeriesError, match="not on the grid .* resample it first"):
        alignseries.write_pngs(mask, ct, tmp_path / "png")
    with pytest.raises(AlignSeriesError, match="DICOM reference"):
        alignseries.write_dicom(mask, mask, tmp_path / "dicom")
    with pytest.raises(AlignSeriesError, match="4x4"):
        alignseries.resample(mask, ct, transform=np.eye(3))
    with pytest.raises(LandmarkError):
        alignseries.landmarks(np.zeros((2, 3)), np.zeros((2, 3)))
    assert not (tmp_path / "png").exists() and not (tmp_path / "dicom").exists()


def test_nodes_leave_the_private_scene_with_their_objects():
    from alignseries import _scene

    volume = alignseries.Volume.from_array(np.zeros((2, 3, 4)), np.eye(4))
    gc.collect()
    before = _scene.scene().GetNumberOfNodes()
    for _ in range(3):
        other = alignseries.Volume.from_array(np.ones((2, 3, 4)), np.eye(4))
        alignseries.resample(other, volume)
        alignseries.landmarks(np.eye(3) * 10, np.eye(3) * 10)
    del other
    gc.collect()
    assert _scene.scene().GetNumberOfNodes() == before


def test_the_readme_python_example_runs_as_written(tmp_path, ct_and_mask):
    ct_folder, _, mask_path = ct_and_mask
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Python"):]
    example = section[section.index("```python") + len("```python"):section.index("```\n")]
    assert len(example.strip().splitlines()) == 5
    for placeholder, path in (("CT_FOLDER", ct_folder), ("mask.nii.gz", mask_path), ("mask_png", tmp_path / "png")):
        assert f'"{placeholder}"' in example
        example = example.replace(f'"{placeholder}"', repr(str(path)))
    exec(compile(example, "README.md", "exec"), {})
    assert len(list((tmp_path / "png").glob("*.png"))) == CT_SLICES


def test_save_writes_raw_nrrd_unless_compress(tmp_path):
    volume = alignseries.Volume.from_array(np.arange(4000, dtype=np.int16).reshape(10, 20, 20) % 7, np.eye(4))
    raw, packed = volume.save(tmp_path / "raw.nrrd"), volume.save(tmp_path / "packed.nrrd", compress=True)

    assert b"\nencoding: raw\n" in raw.read_bytes()[:1000]
    assert b"\nencoding: gzip\n" in packed.read_bytes()[:1000]
    np.testing.assert_array_equal(alignseries.load(packed).array, volume.array)
