"""DESIGN.md's five user scenarios, end to end through the ``alignseries`` command line.

Each test builds the user's data with pydicom and nibabel, runs the command the scenario calls
for (``cli.main`` in-process, on a real slicer-core scene) and checks the result against a truth
computed here from the numbers the files were written with: header positions, hand-written
matrices, analytic masks evaluated at the pixel centers each DICOM header defines.
"""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import run, run_json
from dicom_fixtures import pixel_centers_lps, stack_positions, write_series
from PIL import Image

from AlignSeriesLib import mrml, mrml_files, phantom, resample, transform_files
from AlignSeriesLib.dicom import series as dicom_series
from AlignSeriesLib.geometry import VolumeGeometry

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # also RAS from LPS: x and y change sign
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def header(path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def ras_points_of_slice(dataset) -> np.ndarray:
    """(Rows, Columns, 3) RAS pixel centers of a DICOM slice, from its own header values."""
    centers_lps = pixel_centers_lps([float(v) for v in dataset.ImagePositionPatient],
                                    [float(v) for v in dataset.ImageOrientationPatient],
                                    [float(v) for v in dataset.PixelSpacing], int(dataset.Rows), int(dataset.Columns))
    return centers_lps * [-1.0, -1.0, 1.0]


# -- scenario 1: two axial CT series of one frame of reference ---------------------------------------

CT1 = {"first_lps": (-205.0967, -384.0967, -1496.5), "pixel_spacing": 0.80664}
CT2 = {"first_lps": (-171.6504, -356.6504, -1099.7), "pixel_spacing": 0.69922}
SLICE_MM = 2.0


def write_ct(folder: Path, spec: dict, *, frame_uid: str, slices: int = 4, size: int = 16) -> list[Path]:
    """An axial CT series with the scenario's header values (size x size pixels instead of 512 x 512)."""
    positions = stack_positions(spec["first_lps"], AXIAL, np.arange(slices) * SLICE_MM)
    pixels = np.zeros((slices, size, size), np.int16)
    return write_series(folder, pixels, positions, AXIAL, (spec["pixel_spacing"],) * 2,
                        frame_of_reference_uid=frame_uid)


def hand_voxel_matrix(moving: dict, fixed: dict) -> np.ndarray:
    """Moving ijk -> fixed ijk of two axial grids: x_f = IPP_m + ps_m * i  =>  i_f = (x - IPP_f) / ps_f."""
    scale = moving["pixel_spacing"] / fixed["pixel_spacing"]
    offset = [(moving["first_lps"][0] - fixed["first_lps"][0]) / fixed["pixel_spacing"],
              (moving["first_lps"][1] - fixed["first_lps"][1]) / fixed["pixel_spacing"],
              (moving["first_lps"][2] - fixed["first_lps"][2]) / SLICE_MM]
    return np.array([[scale, 0, 0, offset[0]], [0, scale, 0, offset[1]], [0, 0, 1, offset[2]], [0, 0, 0, 1]])


def test_scenario1_same_frame_gives_identity_and_voxel_matrices_both_ways(capsys, tmp_path):
    frame = "1.2.826.0.1.3680043.8.498.4242"
    write_ct(tmp_path / "series1", CT1, frame_uid=frame)
    write_ct(tmp_path / "series2", CT2, frame_uid=frame, slices=6, size=20)

    one_to_two = run_json(capsys, "transform", "--fixed", tmp_path / "series2", "--moving", tmp_path / "series1",
                          "--mode", "frameOfReference", "--output", tmp_path / "1_to_2.h5")
    two_to_one = run_json(capsys, "transform", "--fixed", tmp_path / "series1", "--moving", tmp_path / "series2",
                          "--mode", "frameOfReference", "--output", tmp_path / "2_to_1.h5")

    for document in (one_to_two, two_to_one):
        np.testing.assert_allclose(document["moving_to_fixed_ras"], np.eye(4), atol=1e-12)
    # e.g. i2 = (0.80664 / 0.69922) i1 + (-205.0967 + 171.6504) / 0.69922, k2 = k1 + (-1496.5 + 1099.7) / 2
    np.testing.assert_allclose(one_to_two["moving_ijk_to_fixed_ijk"], hand_voxel_matrix(CT1, CT2), atol=1e-5)
    np.testing.assert_allclose(two_to_one["moving_ijk_to_fixed_ijk"], hand_voxel_matrix(CT2, CT1), atol=1e-5)
    np.testing.assert_allclose(one_to_two["fixed_ijk_to_moving_ijk"], hand_voxel_matrix(CT2, CT1), atol=1e-5)
    assert hand_voxel_matrix(CT1, CT2)[2, 3] == pytest.approx(-198.4)
    # Slicer reads the ITK file back to the same (identity) registration.
    node = mrml_files.read_transform_file(mrml.new_scene(), tmp_path / "1_to_2.h5")
    np.testing.assert_allclose(mrml.transform_to_parent_matrix(node), np.eye(4), atol=1e-12)


def test_scenario1_different_frames_are_refused_with_the_alternatives(capsys, tmp_path):
    write_ct(tmp_path / "series1", CT1, frame_uid="1.2.826.0.1.3680043.8.498.1111")
    write_ct(tmp_path / "series2", CT2, frame_uid="1.2.826.0.1.3680043.8.498.2222")

    status, out, err = run(capsys, "transform", "--fixed", tmp_path / "series2", "--moving", tmp_path / "series1",
                           "--mode", "frameOfReference", "--output", tmp_path / "t.h5")

    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for fragment in ("1.2.826.0.1.3680043.8.498.1111", "1.2.826.0.1.3680043.8.498.2222", "landmarks",
                     "--registration", "--mode centers", "--mode moments"):
        assert fragment in err
    assert not (tmp_path / "t.h5").exists()


# -- scenario 2: an AI mask (NIfTI) sliced like the DICOM slices -------------------------------------

CT_ROWS, CT_COLUMNS, CT_SLICES = 14, 12, 7
CT_PIXEL_SPACING = (0.8, 0.7)  # rows (j), columns (i)
CT_FIRST_LPS = (-20.0, -30.0, 40.0)
CT_STEP_MM = 2.5
# The mask's own grid: axis a -> RAS +y (0.4 mm), b -> RAS +x (0.35 mm), c -> RAS -z (1.25 mm), so the
# axis order is transposed and one axis flipped relative to the CT; the DICOM pixel centers fall at
# index fractions of 0.3 (never near a rounding tie).
MASK_SHAPE = (30, 26, 16)
MASK_AFFINE = np.array([[0, 0.35, 0, 11.845], [0.4, 0, 0, 19.08], [0, 0, -1.25, 56.625], [0, 0, 0, 1]])


def analytic_mask(points_ras) -> np.ndarray:
    """Labels at RAS points: 1 in an ellipsoid, 2 in a box (placed asymmetrically, so flips show)."""
    p = np.asarray(points_ras, dtype=float)
    labels = np.zeros(p.shape[:-1], np.uint8)
    ellipsoid = ((p[..., 0] - 15) / 2.5) ** 2 + ((p[..., 1] - 26) / 3) ** 2 + ((p[..., 2] - 44) / 4) ** 2 <= 1
    box = (p[..., 0] >= 17.5) & (p[..., 0] <= 20.5) & (p[..., 1] >= 20) & (p[..., 1] <= 24) & \
          (p[..., 2] >= 48) & (p[..., 2] <= 53)
    labels[ellipsoid] = 1
    labels[box] = 2
    return labels


def mask_voxels() -> np.ndarray:
    a, b, c = np.meshgrid(*[np.arange(n) for n in MASK_SHAPE], indexing="ij")
    abc = np.stack([a, b, c, np.ones_like(a)], axis=-1).astype(float)
    return analytic_mask((abc @ MASK_AFFINE.T)[..., :3])


def expected_mask_slice(dataset, mask_abc: np.ndarray) -> np.ndarray:
    """(Rows, Columns) mask labels at one DICOM slice's pixel centers: nearest mask voxel, 0 outside."""
    points = ras_points_of_slice(dataset)
    abc = (np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1) @ np.linalg.inv(MASK_AFFINE).T)[..., :3]
    fraction = np.abs(abc - np.round(abc))
    assert fraction.max() < 0.4, "a pixel center is near a rounding tie: the truth would be ambiguous"
    index = np.round(abc).astype(int)
    inside = np.all((index >= 0) & (index < np.array(MASK_SHAPE)), axis=-1)
    labels = np.zeros(points.shape[:-1], np.uint8)
    labels[inside] = mask_abc[tuple(index[inside].T)]
    return labels


@pytest.fixture
def ct_and_mask(tmp_path):
    positions = stack_positions(CT_FIRST_LPS, AXIAL, np.arange(CT_SLICES) * CT_STEP_MM)
    pixels = np.full((CT_SLICES, CT_ROWS, CT_COLUMNS), 40, np.int16)
    files = write_series(tmp_path / "ct", pixels, positions, AXIAL, CT_PIXEL_SPACING, shuffle_seed=3)
    numbers = [int(header(f).InstanceNumber) for f in files]
    assert numbers != sorted(numbers), "the scenario needs InstanceNumbers out of slice order"
    mask = mask_voxels()
    assert {1, 2} <= set(np.unique(mask).tolist())
    mask_path = tmp_path / "ai_mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, MASK_AFFINE), mask_path)
    return tmp_path / "ct", files, mask_path, mask


def test_scenario2_png_per_dicom_slice_named_by_instance_and_uid(capsys, tmp_path, ct_and_mask):
    ct_folder, files, mask_path, mask = ct_and_mask

    run_json(capsys, "resample", "--input", mask_path, "--reference", ct_folder, "--labelmap", "--interpolation",
             "nearest", "--png", tmp_path / "png", "--output", tmp_path / "mask_on_ct.nrrd")

    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == CT_SLICES
    labels_seen = set()
    for path in files:
        dataset = header(path)
        png = tmp_path / "png" / f"{int(dataset.InstanceNumber):04d}_{dataset.SOPInstanceUID}.png"
        assert png.is_file(), f"no PNG named after {path.name}"
        picture = np.asarray(Image.open(png))  # the label values themselves, one channel
        expected = expected_mask_slice(dataset, mask)
        labels_seen |= set(np.unique(expected).tolist())
        assert picture.shape == (CT_ROWS, CT_COLUMNS)
        np.testing.assert_array_equal(picture, expected, err_msg=png.name)
    assert labels_seen == {0, 1, 2}, "the check must see both labels and background"


def test_scenario2_label_safe_default_keeps_the_labels(capsys, tmp_path, ct_and_mask):
    ct_folder, files, mask_path, mask = ct_and_mask
    output = tmp_path / "mask_on_ct.nii.gz"

    run_json(capsys, "resample", "--input", mask_path, "--reference", ct_folder, "--labelmap", "--output", output)

    on_ct = np.asarray(nib.load(output).dataobj)  # [i, j, k] on the CT grid, k along the normal
    assert set(np.unique(on_ct).tolist()) <= {0, 1, 2}
    by_z = sorted(files, key=lambda f: float(header(f).ImagePositionPatient[2]))
    expected = np.stack([expected_mask_slice(header(f), mask).T for f in by_z], axis=-1)
    # A label-wise vote may differ from nearest-neighbour truth only on a few boundary voxels.
    assert set(np.unique(on_ct).tolist()) == {0, 1, 2}
    assert np.count_nonzero(on_ct != expected) <= 0.1 * np.count_nonzero(expected)


def test_scenario2_dicom_output_lines_up_slice_for_slice(capsys, tmp_path, ct_and_mask):
    ct_folder, files, mask_path, mask = ct_and_mask

    document = run_json(capsys, "resample", "--input", mask_path, "--reference", ct_folder, "--labelmap",
                        "--interpolation", "nearest", "--output", f"{tmp_path / 'mask_dicom'}/")

    written = [Path(p) for p in document["output"]]
    assert len(written) == CT_SLICES
    references = {tuple(np.round([float(v) for v in header(f).ImagePositionPatient], 4)): header(f) for f in files}
    matched = set()
    for path in written:
        dataset = pydicom.dcmread(path)
        position = tuple(np.round([float(v) for v in dataset.ImagePositionPatient], 4))
        reference = references[position]
        matched.add(position)
        np.testing.assert_allclose([float(v) for v in dataset.ImageOrientationPatient],
                                   [float(v) for v in reference.ImageOrientationPatient], atol=1e-6)
        np.testing.assert_allclose([float(v) for v in dataset.PixelSpacing],
                                   [float(v) for v in reference.PixelSpacing], atol=1e-6)
        assert dataset.FrameOfReferenceUID == reference.FrameOfReferenceUID
        assert dataset.SeriesInstanceUID != reference.SeriesInstanceUID
        values = dataset.pixel_array * float(dataset.get("RescaleSlope", 1)) + float(dataset.get("RescaleIntercept", 0))
        np.testing.assert_array_equal(values, expected_mask_slice(reference, mask), err_msg=path.name)
    assert len(matched) == CT_SLICES


def test_scenario5_dicom_chunks_of_the_reference_copy_exactly_their_slices(capsys, tmp_path, ct_and_mask):
    """``resample --slab FIRST COUNT`` writes a chunk whose DICOM slices are the reference's slices FIRST.. ."""
    ct_folder, files, mask_path, mask = ct_and_mask
    by_position = sorted(files, key=lambda f: float(header(f).ImagePositionPatient[2]))  # axial: k along +z
    first, count = 1, CT_SLICES - 2

    document = run_json(capsys, "resample", "--input", mask_path, "--reference", ct_folder, "--labelmap",
                        "--interpolation", "nearest", "--slab", first, count, "--output", f"{tmp_path / 'chunk'}/")

    written = [pydicom.dcmread(p) for p in document["output"]]
    assert len(written) == count
    for dataset, reference in zip(written, map(header, by_position[first:first + count]), strict=True):
        np.testing.assert_allclose([float(v) for v in dataset.ImagePositionPatient],
                                   [float(v) for v in reference.ImagePositionPatient], atol=1e-4)
        assert dataset.SourceImageSequence[0].ReferencedSOPInstanceUID == reference.SOPInstanceUID
        values = dataset.pixel_array * float(dataset.get("RescaleSlope", 1)) + float(dataset.get("RescaleIntercept", 0))
        np.testing.assert_array_equal(values, expected_mask_slice(reference, mask))
    status, _, err = run(capsys, "resample", "--input", mask_path, "--reference", ct_folder, "--slab", CT_SLICES - 1,
                         2, "--output", tmp_path / "too_far.nrrd")
    assert status == 2 and "does not fit the reference's" in err and not (tmp_path / "too_far.nrrd").exists()


# -- scenario 3: whole-body CT and a partial abdomen MR ------------------------------------------------

# CT: axial, whole trunk, 10 x 10 x 20 mm voxels. MR: coronal, 5 mm, abdomen only, another frame of
# reference in which the patient sits at +SHIFT_LPS. One "organ" (a box) is seen by both.
CT_SPEC = {"first_lps": (-200.0, -150.0, -1200.0), "spacing": (10.0, 10.0, 20.0), "dims": (40, 30, 60)}
MR_SPEC = {"first_lps": (-82.5, -47.5, 17.5), "spacing": 5.0, "dims": (24, 20, 16)}  # columns, rows, slices
SHIFT_LPS = np.array([15.0, -25.0, 320.0])
# The organ's min, max per LPS axis, halfway between voxel centers of both grids (no ambiguous voxel).
ORGAN_CT_LPS = np.array([[-45.0, -5.0], [-15.0, 25.0], [-390.0, -310.0]])


def ct_ijk_to_lps() -> np.ndarray:
    (x, y, z), (si, sj, sk) = CT_SPEC["first_lps"], CT_SPEC["spacing"]
    return np.array([[si, 0, 0, x], [0, sj, 0, y], [0, 0, sk, z], [0, 0, 0, 1]])


def mr_ijk_to_lps() -> np.ndarray:
    """Coronal: i along +x (row), j along -z (column), k along (1,0,0) x (0,0,-1) = (0,1,0)."""
    x, y, z = MR_SPEC["first_lps"]
    s = MR_SPEC["spacing"]
    return np.array([[s, 0, 0, x], [0, 0, s, y], [0, -s, 0, z], [0, 0, 0, 1]])


def organ_values(ijk_to_lps, dims, value, shift_lps=(0.0, 0.0, 0.0)) -> np.ndarray:
    k, j, i = np.mgrid[0:dims[2], 0:dims[1], 0:dims[0]]
    lps = np.stack([i, j, k, np.ones_like(i)], axis=-1) @ ijk_to_lps.T
    bounds = ORGAN_CT_LPS + np.asarray(shift_lps)[:, None]
    inside = np.all((lps[..., :3] > bounds[:, 0]) & (lps[..., :3] < bounds[:, 1]), axis=-1)
    return np.where(inside, value, 0).astype(np.int16)


@pytest.fixture
def ct_and_mr(tmp_path):
    ct_matrix, mr_matrix = ct_ijk_to_lps(), mr_ijk_to_lps()
    ct_pixels = organ_values(ct_matrix, CT_SPEC["dims"], 1000)
    mr_pixels = organ_values(mr_matrix, MR_SPEC["dims"], 800, SHIFT_LPS)
    assert (ct_pixels > 0).sum() == 4 * 4 * 4 and (mr_pixels > 0).sum() == 8 * 8 * 16
    ct_positions = ct_matrix[:3, 3] + np.arange(CT_SPEC["dims"][2])[:, None] * ct_matrix[:3, 2]
    mr_positions = mr_matrix[:3, 3] + np.arange(MR_SPEC["dims"][2])[:, None] * mr_matrix[:3, 2]
    write_series(tmp_path / "ct", ct_pixels, ct_positions, AXIAL, CT_SPEC["spacing"][1::-1],
                 frame_of_reference_uid="1.2.826.0.1.3680043.8.498.31")
    write_series(tmp_path / "mr", mr_pixels, mr_positions, CORONAL, (MR_SPEC["spacing"],) * 2, modality="MR",
                 frame_of_reference_uid="1.2.826.0.1.3680043.8.498.32")
    return tmp_path / "ct", tmp_path / "mr"


def center_ras(ijk_to_lps, dims) -> np.ndarray:
    return (LPS_FROM_RAS @ ijk_to_lps @ [*(np.array(dims) - 1) / 2, 1])[:3]


def test_scenario3_centers_and_moments_prealign_the_mr(capsys, tmp_path, ct_and_mr):
    ct, mr = ct_and_mr

    status, _, err = run(capsys, "transform", "--fixed", ct, "--moving", mr, "--output", tmp_path / "for.h5")
    assert status == 2 and "frames of reference" in err

    centers = run_json(capsys, "transform", "--fixed", ct, "--moving", mr, "--mode", "centers",
                       "--output", tmp_path / "centers.h5")
    expected = np.eye(4)
    expected[:3, 3] = center_ras(ct_ijk_to_lps(), CT_SPEC["dims"]) - center_ras(mr_ijk_to_lps(), MR_SPEC["dims"])
    np.testing.assert_allclose(centers["moving_to_fixed_ras"], expected, atol=1e-4)

    # The organ is the only signal in both: its centroids differ by exactly the patient shift.
    moments = run_json(capsys, "transform", "--fixed", ct, "--moving", mr, "--mode", "moments",
                       "--output", tmp_path / "moments.h5")
    expected = np.eye(4)
    expected[:3, 3] = (LPS_FROM_RAS[:3, :3] @ -SHIFT_LPS)
    np.testing.assert_allclose(moments["moving_to_fixed_ras"], expected, atol=1e-4)


def test_scenario3_mr_onto_the_ct_grid_cropped_to_the_overlap(capsys, tmp_path, ct_and_mr):
    ct, mr = ct_and_mr
    run_json(capsys, "transform", "--fixed", ct, "--moving", mr, "--mode", "moments", "--output",
             tmp_path / "moments.h5")
    output = tmp_path / "mr_on_ct.nii.gz"

    document = run_json(capsys, "resample", "--input", mr, "--reference", ct, "--transform", tmp_path / "moments.h5",
                        "--interpolation", "nearest", "--crop-to-overlap", "--output", output)

    # Truth: CT voxels whose boxes overlap the MR's field (its voxel boxes) moved into the CT frame.
    mr_box_lps = np.sort(np.stack([mr_ijk_to_lps() @ [i, j, k, 1] for i in (-0.5, MR_SPEC["dims"][0] - 0.5)
                                   for j in (-0.5, MR_SPEC["dims"][1] - 0.5)
                                   for k in (-0.5, MR_SPEC["dims"][2] - 0.5)])[:, :3] - SHIFT_LPS, axis=0)
    low, high = mr_box_lps[0], mr_box_lps[-1]
    first, last = [], []
    for axis in range(3):
        centers = CT_SPEC["first_lps"][axis] + CT_SPEC["spacing"][axis] * np.arange(CT_SPEC["dims"][axis])
        half = CT_SPEC["spacing"][axis] / 2
        overlapping = np.flatnonzero((centers - half < high[axis] - 1e-6) & (centers + half > low[axis] + 1e-6))
        first.append(overlapping[0])
        last.append(overlapping[-1])
    dims = [int(b - a + 1) for a, b in zip(first, last, strict=True)]
    expected_ijk_to_lps = ct_ijk_to_lps().copy()
    expected_ijk_to_lps[:3, 3] = ct_ijk_to_lps()[:3, :3] @ first + ct_ijk_to_lps()[:3, 3]

    written = nib.load(output)
    assert list(written.shape) == dims == document["geometry"]["dimensions"]
    assert dims[0] < CT_SPEC["dims"][0] and dims[2] < CT_SPEC["dims"][2]
    np.testing.assert_allclose(written.affine, LPS_FROM_RAS @ expected_ijk_to_lps, atol=1e-4)
    # The organ lands where the CT sees it: 800 on the CT's organ voxels, 0 elsewhere in the crop.
    ct_organ = organ_values(ct_ijk_to_lps(), CT_SPEC["dims"], 800)
    crop = ct_organ[first[2]:last[2] + 1, first[1]:last[1] + 1, first[0]:last[0] + 1]
    np.testing.assert_array_equal(np.asarray(written.dataobj).transpose(2, 1, 0), crop)


def test_scenario3_crop_to_overlap_refuses_dicom_and_png_outputs(capsys, tmp_path, ct_and_mr):
    ct, mr = ct_and_mr
    for extra in (["--output", f"{tmp_path / 'dicom'}/"], ["--png", tmp_path / "png", "--output", tmp_path / "o.nrrd"]):
        status, out, err = run(capsys, "resample", "--input", mr, "--reference", ct, "--crop-to-overlap", *extra)
        assert status == 2 and out == ""
        assert len(err.splitlines()) == 1 and "--crop-to-overlap" in err
    assert sorted(tmp_path.iterdir()) == sorted([ct, mr]), "nothing is written when the request is refused"


# -- scenario 4: "Slicer shows a different origin than my DICOM viewer" ---------------------------------

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # normal (0,1,0) x (0,0,-1) = (-1, 0, 0) LPS = +x RAS


def test_scenario4_info_explains_the_origin(capsys, tmp_path):
    distances = np.arange(5) * 3.0
    positions = stack_positions((12.5, -80.0, 95.0), SAGITTAL, distances)
    files = write_series(tmp_path / "sag", np.zeros((5, 6, 7), np.int16), positions, SAGITTAL, (1.1, 0.9),
                         shuffle_seed=None)
    # InstanceNumber 1 is the last slice along the normal, as many scanners number them.
    for n, path in enumerate(files):
        dataset = pydicom.dcmread(path)
        dataset.InstanceNumber = len(files) - n
        dataset.save_as(path)

    status, out, err = run(capsys, "info", tmp_path / "sag")

    assert status == 0, err
    first_lps = positions[0]  # the first slice along the normal, whatever its InstanceNumber
    assert first_lps[0] == pytest.approx(12.5)
    numbers = [[float(v) for v in group.split(",")] for group in re.findall(r"\[([^\]]+)\]", out)]
    normal_line = next(line for line in out.splitlines() if "normal" in line)
    origin_line = next(line for line in out.splitlines() if "LPS" in line and "RAS" in line)
    normal_ras = [float(v) for v in re.search(r"\[([^\]]+)\]", normal_line).group(1).split(",")]
    np.testing.assert_allclose(normal_ras, [1.0, 0.0, 0.0], atol=1e-4)  # LPS (-1, 0, 0) with x negated
    lps_text, ras_text = re.findall(r"\[([^\]]+)\]", origin_line)[:2]
    np.testing.assert_allclose([float(v) for v in lps_text.split(",")], first_lps, atol=1e-3)
    np.testing.assert_allclose([float(v) for v in ras_text.split(",")], first_lps * [-1, -1, 1], atol=1e-3)
    assert "ImagePositionPatient" in origin_line and "sign" in origin_line
    assert numbers, out
    # The InstanceNumber that a viewer's "image 1" shows is not the first slice along the normal: say so.
    assert "InstanceNumber" in out
    last_lps = positions[-1]
    assert any(np.allclose(n, last_lps, atol=1e-3) for n in numbers if len(n) == 3), \
        "info should show where InstanceNumber 1 (what a viewer shows first) lies"


# -- scenario 5: NIfTI <-> DICOM in 64-slice chunks, mirrors, FLIRT ------------------------------------

# A right-handed NIfTI of 150 slices with its own axis order (i -> posterior, j -> inferior, k -> right,
# slightly oblique), as a converter might give it.
ROTATION = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: RAS directions of i, j, k
TILT = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(0.2), -np.sin(0.2)], [0.0, np.sin(0.2), np.cos(0.2)]])
VOLUME_SHAPE = (6, 5, 150)


def volume_affine(mirrored: bool = False) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = TILT @ ROTATION @ np.diag([0.9, 1.1, -0.6 if mirrored else 0.6])
    affine[:3, 3] = (30.0, -12.0, 45.0)
    return affine


@pytest.mark.parametrize("mirrored", [False, True], ids=["right-handed", "mirrored"])
def test_scenario5_nifti_to_dicom_in_chunks_keeps_each_chunk_position(capsys, tmp_path, mirrored):
    affine = volume_affine(mirrored)
    assert bool(np.linalg.det(affine[:3, :3]) < 0) is mirrored
    rng = np.random.default_rng(5)
    values = rng.integers(0, 3000, size=VOLUME_SHAPE).astype(np.int16)  # [i, j, k], nibabel order
    nifti = tmp_path / "volume.nii.gz"
    nib.save(nib.Nifti1Image(values, affine), nifti)
    geometry = VolumeGeometry(VOLUME_SHAPE, affine)

    (tmp_path / "dicom").mkdir()
    chunks = [(first, min(64, VOLUME_SHAPE[2] - first)) for first in range(0, VOLUME_SHAPE[2], 64)]
    assert [count for _, count in chunks] == [64, 64, 22]
    for number, (first, count) in enumerate(chunks):
        chunk = resample.slab(geometry, first, count)
        # Each chunk gets a DICOM grid of its own (headers from the slab), then the NIfTI is exported onto it.
        acquisition = phantom.Acquisition(f"chunk{number}", "MR", chunk, number + 1, "1.2.826.0.1.3680043.8.498.55",
                                          np.eye(4))
        phantom.write_dicom_series(acquisition, np.zeros(chunk.shape, np.int16), tmp_path / f"grid{number}",
                                   study_uid="1.2.826.0.1.3680043.8.498.56")
        run_json(capsys, "resample", "--input", nifti, "--reference", tmp_path / f"grid{number}", "--interpolation",
                 "nearest", "--output", f"{tmp_path / 'dicom' / f'chunk{number}'}/")

    # Back: every exported chunk, scanned as DICOM, sits exactly where its slices sat in the NIfTI. DICOM
    # orders slices along row x column, so a mirrored chunk comes back with k reversed: the same voxels at
    # the same positions, never a rotated or flipped image.
    scene = mrml.new_scene()
    for number, (first, count) in enumerate(chunks):
        volume, = dicom_series.scan_dicom(tmp_path / "dicom" / f"chunk{number}").volumes
        expected_ijk_to_ras = affine.copy()
        expected_ijk_to_ras[:3, 3] = (affine @ [0, 0, first, 1])[:3]
        expected_values = values[:, :, first:first + count]
        if mirrored:
            expected_ijk_to_ras[:3, 3] = (affine @ [0, 0, first + count - 1, 1])[:3]
            expected_ijk_to_ras[:3, 2] *= -1
            expected_values = expected_values[:, :, ::-1]
        assert volume.geometry.dimensions == (VOLUME_SHAPE[0], VOLUME_SHAPE[1], count)
        assert not volume.geometry.is_mirrored
        np.testing.assert_allclose(volume.geometry.ijk_to_ras, expected_ijk_to_ras, atol=2e-3)
        node = mrml.load_dicom_volume(scene, volume)
        np.testing.assert_array_equal(mrml.volume_array(node), expected_values.transpose(2, 1, 0))


def test_scenario5_mirrored_nifti_is_reported_as_a_mirror_not_rotated(capsys, tmp_path):
    # LAS-like grid (i towards the patient's left): determinant -1, a mirror of the usual RAS storage.
    affine = np.array([[-1.5, 0, 0, 40.0], [0, 1.25, 0, -20.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
    values = np.zeros((8, 6, 5), np.uint8)
    values[1, 2, 3] = 7  # one marked voxel: where it lies tells a mirror from a rotation
    path = tmp_path / "mirrored.nii.gz"
    nib.save(nib.Nifti1Image(values, affine), path)

    volume, = run_json(capsys, "info", path)["volumes"]
    status, out, _ = run(capsys, "info", path)

    np.testing.assert_allclose(volume["ijk_to_ras"], affine, atol=1e-5)  # the file's own grid, left-handed
    assert np.linalg.det(np.array(volume["ijk_to_ras"])[:3, :3]) < 0
    assert volume.get("mirrored") is True
    assert status == 0 and "mirrored" in out
    assert "determinant" in out

    # Resampled onto a right-handed grid, the marked voxel stays at its RAS position (x = 40 - 1.5 = 38.5).
    reference = tmp_path / "reference.nii.gz"
    reference_affine = np.array([[1.5, 0, 0, 40.0 - 7 * 1.5], [0, 1.25, 0, -20.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.zeros((8, 6, 5), np.uint8), reference_affine), reference)
    output = tmp_path / "on_reference.nii.gz"
    run_json(capsys, "resample", "--input", path, "--reference", reference, "--labelmap", "--interpolation",
             "nearest", "--output", output)
    on_reference = np.asarray(nib.load(output).dataobj)
    marked = np.argwhere(on_reference == 7)
    assert len(marked) == 1
    np.testing.assert_allclose((reference_affine @ [*marked[0], 1])[:3], (affine @ [1, 2, 3, 1])[:3])


@pytest.mark.parametrize("handedness", ["neurological", "radiological"])
def test_scenario5_flirt_matrix_from_and_to_slicer(capsys, tmp_path, handedness):
    """FSL's scaled voxels are ``(s_i * i, s_j * j, s_k * k)`` with i reversed first for a neurological
    (positive determinant) image: a content shift of (2, 1, -1) voxels on one grid is the FLIRT
    translation (-/+ 2 s_i, s_j, -s_k)."""
    sign = 1.0 if handedness == "neurological" else -1.0
    affine = np.array([[sign * 2.0, 0, 0, -30.0], [0, 2.5, 0, 10.0], [0, 0, 3.0, -5.0], [0, 0, 0, 1]])
    for name, voxel in (("fixed", (4, 3, 1)), ("moving", (2, 2, 2))):
        values = np.zeros((7, 6, 5), np.int16)
        values[voxel] = 100  # the only signal: its intensity centroid is this voxel's center
        nib.save(nib.Nifti1Image(values, affine), tmp_path / f"{name}.nii.gz")

    document = run_json(capsys, "transform", "--fixed", tmp_path / "fixed.nii.gz", "--moving",
                        tmp_path / "moving.nii.gz", "--mode", "moments", "--output", tmp_path / "flirt.mat")

    shift_ras = (affine[:3, :3] @ [2, 1, -1])
    np.testing.assert_allclose(np.array(document["moving_to_fixed_ras"])[:3, 3], shift_ras, atol=1e-6)
    flirt = np.loadtxt(tmp_path / "flirt.mat")
    expected = np.eye(4)
    expected[:3, 3] = [-sign * 2 * 2.0, 1 * 2.5, -1 * 3.0]
    np.testing.assert_allclose(flirt, expected, atol=1e-6)
    # And back: FLIRT -> Slicer's moving-to-fixed RAS, given the two images' grids.
    geometry = VolumeGeometry((7, 6, 5), affine)
    np.testing.assert_allclose(transform_files.flirt_to_ras(flirt, geometry, geometry),
                               document["moving_to_fixed_ras"], atol=1e-6)
    np.testing.assert_allclose(transform_files.ras_to_flirt(document["moving_to_fixed_ras"], geometry, geometry),
                               flirt, atol=1e-6)
