"""Intensity refinement (AlignSeriesLib.registration): frames, recovery of known transforms, the report, cancel.

Truth is independent of the code under test: the frame conversion is checked by SimpleITK's own resampler on
an analytic phantom; recovery by known displacements of the analytic phantom, of two real MR series sharing a
FrameOfReferenceUID (truth: identity), and of a real CT against a remapped copy (Testing/registration_cases.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

import registration_cases as cases  # noqa: E402

from AlignSeriesLib import registration, registration_measures, registration_report  # noqa: E402
from AlignSeriesLib.errors import AlignSeriesError, GeometryError, OperationCancelledError  # noqa: E402
from AlignSeriesLib.geometry import VolumeGeometry  # noqa: E402
from AlignSeriesLib.mutual_information import RigidModel  # noqa: E402
from AlignSeriesLib.registration import ImageOnGrid  # noqa: E402

needs_real_data = pytest.mark.skipif(not cases.real_data_available(),
                                     reason=f"real DICOM data not available: {cases.SHARED_DICOM} is absent")


@pytest.fixture(scope="module")
def phantom_pair():
    return cases.phantom_pair()


# -- frames -------------------------------------------------------------------------------------------


def test_itk_transform_resamples_the_moving_phantom_onto_the_fixed_one(phantom_pair):
    """Slicer's moving-to-fixed RAS matrix, converted, makes SimpleITK's resampler reproduce the fixed image."""
    fixed, _ = phantom_pair
    truth = cases.rigid_about(fixed.geometry.center_ras, (0.3, -0.5, 1.0), 11.0, (7.0, -12.0, 4.0))
    moving_geometry = fixed.geometry.transformed(np.linalg.inv(truth))  # the moving patient, moved away
    moving = ImageOnGrid(fixed.array, moving_geometry)  # same voxels, placed elsewhere: truth maps them back
    fixed_image = registration.to_sitk_image(sitk, fixed.array, fixed.geometry, "fixed")
    moving_image = registration.to_sitk_image(sitk, moving.array, moving.geometry, "moving")
    transform = sitk.AffineTransform(3)
    matrix = registration.itk_fixed_to_moving_lps(truth)
    transform.SetMatrix(matrix[:3, :3].reshape(-1).tolist())
    transform.SetTranslation(matrix[:3, 3].tolist())
    resampled = sitk.GetArrayFromImage(sitk.Resample(moving_image, fixed_image, transform, sitk.sitkNearestNeighbor))
    np.testing.assert_allclose(resampled, fixed.array, atol=1e-3)
    wrong = sitk.AffineTransform(3)  # the matrix without the inversion would not do it
    wrong.SetMatrix(truth[:3, :3].reshape(-1).tolist())
    wrong.SetTranslation(truth[:3, 3].tolist())
    assert not np.allclose(sitk.GetArrayFromImage(sitk.Resample(moving_image, fixed_image, wrong)), fixed.array,
                           atol=1.0)


def test_frame_conversions_are_inverse_of_each_other():
    matrix = cases.rigid_about((10, 20, 30), (1, 2, 3), 25.0, (4, 5, 6)) @ np.diag([1.1, 0.9, 1.0, 1.0])
    np.testing.assert_allclose(registration.moving_to_fixed_ras_of(registration.itk_fixed_to_moving_lps(matrix)),
                               matrix, atol=1e-12)


def test_sheared_grid_is_refused_with_a_clear_error():
    sheared = np.eye(4)
    sheared[0, 2] = 0.3
    with pytest.raises(GeometryError, match="sheared"):
        registration.to_sitk_image(sitk, np.zeros((4, 4, 4), np.float32), VolumeGeometry((4, 4, 4), sheared),
                                   "fixed image")


# -- recovery -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", range(3))
def test_phantom_ct_mr_recovered_from_rigid_displacements(phantom_pair, number):
    fixed, moving = phantom_pair
    rng = np.random.default_rng(100 + number)
    case = cases.displaced("phantom", "phantom", fixed, moving,
                           cases.random_displacement(rng, moving.geometry.center_ras, 20.0, 15.0))
    assert case.error_mm(np.eye(4)) > 5.0  # the start is off
    report = registration.register(case.fixed, case.moving)
    assert case.error_mm(report.moving_to_fixed_ras) <= 2.0
    assert report.converged and report.metric_final < report.metric_initial
    assert not {w.code for w in report.warnings} & {"not_converged", "metric_not_improved", "low_overlap"}


@needs_real_data
def test_real_mr_pair_sharing_a_frame_never_fails_silently():
    """The real pair sharing a frame (sagittal T1, oblique field-map phase): recovered, or the report says so.

    Measured: even started at the truth (identity) the phase map's mutual information with the T1 pulls the
    transform tens of mm away, so this pair is a failure case; what matters is that it is flagged (the images
    share little information) or refused (the search left the images).
    """
    fixed, moving = cases.same_frame_pair()
    case = cases.displaced("same frame", "same_frame_mr", fixed, moving,
                           cases.random_displacement(np.random.default_rng(200), moving.geometry.center_ras, 20, 15))
    try:
        report = registration.register(case.fixed, case.moving)
    except AlignSeriesError as error:  # refused loudly: the search left the images
        assert "moved the images apart" in str(error)
        return
    assert case.error_mm(report.moving_to_fixed_ras) <= 2.0 or report.warnings, report.text()
    assert "weak_similarity" in {warning.code for warning in report.warnings}  # a phase image shares little


@needs_real_data
@pytest.mark.parametrize("model", ["rigid", "affine"])
def test_real_ct_and_remapped_partial_copy_never_fails_silently(model):
    """The real CT slab and its remapped, biased, noisy, partial, oblique copy: within 2 mm or flagged."""
    kind = f"multimodal_{model}"
    case, = cases.cases(1, seed=300, kinds=(kind,))
    report = registration.register(case.fixed, case.moving, model=model)
    assert case.error_mm(report.moving_to_fixed_ras) <= 2.0 or report.warnings, report.text()
    assert case.error_mm(report.moving_to_fixed_ras) < case.error_mm(np.eye(4))  # it got closer
    stages = [level.stage for level in report.levels]
    assert stages == ["rigid"] * 3 + (["affine"] * 2 if model == "affine" else [])


def test_initial_transform_is_where_the_search_starts(phantom_pair):
    """A start far off (an 80 mm shift) fails; the same case started from the truth's neighbourhood succeeds."""
    fixed, moving = phantom_pair
    shift = cases.rigid_about(moving.geometry.center_ras, (0, 0, 1), 0.0, (80.0, 0.0, 0.0))
    case = cases.displaced("far", "phantom", fixed, moving, shift)
    near = case.truth_moving_to_fixed_ras @ cases.rigid_about((0, 0, 0), (1, 0, 0), 3.0, (4.0, -3.0, 2.0))
    report = registration.register(case.fixed, case.moving, near)
    assert case.error_mm(report.moving_to_fixed_ras) <= 2.0
    np.testing.assert_allclose(report.initial_moving_to_fixed_ras, near)


def test_failure_far_from_the_truth_is_flagged(phantom_pair):
    """No silent failure: a start 80 mm off either succeeds or carries a warning."""
    fixed, moving = phantom_pair
    case = cases.displaced("far", "phantom", fixed, moving,
                           cases.rigid_about(moving.geometry.center_ras, (0, 1, 0), 30.0, (80.0, 0.0, 0.0)))
    report = registration.register(case.fixed, case.moving)
    assert case.error_mm(report.moving_to_fixed_ras) <= 2.0 or report.warnings


def test_same_inputs_give_the_same_transform(phantom_pair):
    fixed, moving = phantom_pair
    case = cases.displaced("again", "phantom", fixed, moving,
                           cases.random_displacement(np.random.default_rng(5), moving.geometry.center_ras, 15, 10))
    first = registration.register(case.fixed, case.moving)
    second = registration.register(case.fixed, case.moving)
    assert np.max(registration_measures.change_at_corners_mm(fixed.geometry, first.moving_to_fixed_ras,
                                                    second.moving_to_fixed_ras)) <= 1e-6


def test_fixed_mask_restricts_the_metric(phantom_pair):
    """A mask of the body (no air) still recovers the transform; an empty mask is refused clearly."""
    fixed, moving = phantom_pair
    case = cases.displaced("mask", "phantom", fixed, moving,
                           cases.rigid_about(moving.geometry.center_ras, (0, 0, 1), 6.0, (8.0, 5.0, -6.0)))
    k, j, i = np.meshgrid(*[np.arange(n) for n in fixed.geometry.shape], indexing="ij")
    points = fixed.geometry.ijk_to_world(np.stack([i, j, k], axis=-1))
    mask = (np.linalg.norm(points / [150, 100, 250], axis=-1) <= 1).astype(np.uint8)
    report = registration.register(case.fixed, case.moving, fixed_mask=ImageOnGrid(mask, fixed.geometry))
    assert case.error_mm(report.moving_to_fixed_ras) <= 2.0
    with pytest.raises(AlignSeriesError, match="mask"):
        registration.register(case.fixed, case.moving, fixed_mask=ImageOnGrid(0 * mask, fixed.geometry))


def test_images_that_do_not_overlap_are_refused(phantom_pair):
    fixed, moving = phantom_pair
    far = cases.rigid_about((0, 0, 0), (0, 0, 1), 0, (0, 0, 2000))
    away = ImageOnGrid(moving.array, moving.geometry.transformed(far))
    with pytest.raises(GeometryError, match="do not overlap"):
        registration.register(fixed, away)


@pytest.mark.parametrize("single_slice_is", ["fixed", "moving"])
def test_a_single_slice_is_refused_by_name_and_size(phantom_pair, single_slice_is):
    """A one-slice series (a localizer) inside the other volume: refused before ITK sees it, naming the image."""
    fixed, moving = phantom_pair
    one_slice = ImageOnGrid(moving.array[10:11], VolumeGeometry(
        (*moving.geometry.dimensions[:2], 1), moving.geometry.ijk_to_ras @ cases.rigid_about((0, 0, 0), (0, 0, 1), 0,
                                                                                             (0, 0, 10))))
    pair = (fixed, one_slice) if single_slice_is == "moving" else (one_slice, fixed)
    size = f"{moving.geometry.dimensions[0]} x {moving.geometry.dimensions[1]} x 1"
    with pytest.raises(GeometryError, match=f"the {single_slice_is} image is {size} voxels"):
        registration.register(*pair)


# -- progress and cancel ------------------------------------------------------------------------------


def test_progress_rises_to_one_and_cancel_stops_without_a_result(phantom_pair):
    fixed, moving = phantom_pair
    seen = []
    registration.register(fixed, moving, progress=lambda fraction: seen.append(fraction) or False)
    assert seen and all(0 <= f <= 1 for f in seen) and seen[-1] > 0.66 and seen == sorted(seen)
    calls = []
    with pytest.raises(OperationCancelledError, match="no transform"):
        registration.register(fixed, moving, progress=lambda fraction: calls.append(fraction) or len(calls) >= 5)
    assert len(calls) == 5  # nothing asked after the cancel


# -- the report ---------------------------------------------------------------------------------------


def test_report_measures_against_independent_arithmetic(phantom_pair):
    fixed, moving = phantom_pair
    shift = cases.rigid_about(moving.geometry.center_ras, (0, 0, 1), 0.0, (6.0, 0.0, 0.0))
    case = cases.displaced("report", "phantom", fixed, moving, shift)
    report = registration.register(case.fixed, case.moving)
    assert np.max(report.change_mm) == pytest.approx(6.0, abs=1.0)  # it moved by the displacement
    assert report.change_degrees < 1.0
    assert report.overlap_fraction == pytest.approx(1.0, abs=0.05)  # the moving grid lies inside the fixed one
    assert report.iterations == sum(level.iterations for level in report.levels) > 0
    document = json.loads(json.dumps(report.to_dict(), default=lambda a: np.asarray(a).tolist()))
    assert "not an accuracy" in document["metric"] and document["levels"][0]["shrink_factor"] == 4
    # the shared information rises as the images come into register (phantom: organs of constant values)
    assert document["entropy_correlation"] > document["entropy_correlation_initial"] + 0.1
    assert document["entropy_correlation"] > registration_report.MIN_ENTROPY_CORRELATION
    text = report.text()
    assert "not an accuracy" in text and "fused preview" in text and "accuracy:" not in text.lower()


def test_settling_is_the_drift_and_spread_of_the_averaged_iterates_at_the_corners():
    """Truth: under pure translations every corner moves by the translation, so the drift is the distance between
    the two halves' mean translations and the spread the root mean square distance of the translations from their
    mean; converged means both within their limits (0.5 and 0.75 of a 2 mm voxel)."""
    domain = sitk.Image([10, 10, 10], sitk.sitkFloat32)
    domain.SetSpacing([2.0, 2.0, 2.0])
    search = registration._Search(sitk, domain, domain, {}, np.eye(4), None, registration.RIGID_STAGES)
    rng = np.random.default_rng(3)
    translations = rng.normal(0.0, 0.4, (100, 3)) + np.linspace(0.0, 1.0, 100)[:, None] * [1.0, 0.0, 0.0]
    drift, spread = search._settling(RigidModel, [np.concatenate([np.zeros(3), t]) for t in translations])
    assert drift == pytest.approx(np.linalg.norm(translations[50:].mean(axis=0) - translations[:50].mean(axis=0)))
    assert spread == pytest.approx(np.sqrt(np.mean(np.sum((translations - translations.mean(axis=0)) ** 2, axis=1))))
    for drift_mm, spread_mm, converged in ((0.9, 1.4, True), (1.1, 1.4, False), (0.9, 1.6, False)):
        search.drift_mm, search.spread_mm = drift_mm, spread_mm
        assert search.converged is converged


def test_warnings_state_value_and_limit():
    geometry = VolumeGeometry.from_spacing_origin_directions((10, 10, 10), (1, 1, 1), (0, 0, 0))
    mirror = np.diag([-1.0, 1.0, 1.3, 1.0])
    report = registration_report.RegistrationReport(
        "affine", np.eye(4), mirror, registration_measures.change_at_corners_mm(geometry, np.eye(4), mirror), 0.0, [],
        -0.5, -0.4, 100, "Maximum number of iterations (100) exceeded.", False, 0.1, entropy_correlation=0.12)
    codes = {warning.code: warning.message for warning in registration_report.report_warnings(report)}
    assert set(codes) == {"not_converged", "low_overlap", "metric_not_improved", "reflection", "affine_scale",
                          "weak_similarity"}
    assert "10 %" in codes["low_overlap"] and "limit 25 %" in codes["low_overlap"]
    assert "0.12" in codes["weak_similarity"] and "limit 0.25" in codes["weak_similarity"]
    assert "1.3" in codes["affine_scale"]


@pytest.mark.parametrize(("centre_mm", "degrees", "flagged"), [(29.0, 19.0, False), (31.0, 0.0, True),
                                                              (0.0, 21.0, True)])
def test_large_change_weighs_the_overlap_centre_and_the_turn(centre_mm, degrees, flagged):
    """Truth: the limits, 30 mm for the overlap's centre and 20 degrees; the message states both values."""
    report = registration_report.RegistrationReport(
        "rigid", np.eye(4), np.eye(4), np.zeros(8), degrees, [], -0.5, -0.6, 100, "", True, 1.0,
        centre_change_mm=centre_mm, entropy_correlation=0.5)
    codes = {warning.code: warning.message for warning in registration_report.report_warnings(report)}
    assert ("large_change" in codes) is flagged
    if flagged:
        assert f"{centre_mm:.1f} mm" in codes["large_change"] and f"{degrees:.1f} degrees" in codes["large_change"]
        assert "limits 30 mm, 20 degrees" in codes["large_change"]


def test_overlap_fraction_of_half_shifted_boxes():
    geometry = VolumeGeometry.from_spacing_origin_directions((20, 20, 20), (1, 1, 1), (0, 0, 0))
    shift = cases.rigid_about((0, 0, 0), (0, 0, 1), 0.0, (10.0, 0.0, 0.0))
    assert registration_measures.overlap_fraction(geometry, geometry, shift) == pytest.approx(0.5, abs=0.07)
    # a CT grid and its copy moved by d, put back by the inverse of d: the boxes coincide up to rounding
    ct = VolumeGeometry.from_spacing_origin_directions((512, 512, 28), (0.449, 0.449, 5.0), (115.3, 120.7, 40.1),
                                                       np.diag([-1.0, -1.0, 1.0]))
    moved = cases.rigid_about((0, 0, 0), (0, 0, 1), 0.0, (-12.0, 8.0, 6.0))
    assert registration_measures.overlap_fraction(ct, ct.transformed(moved), np.linalg.inv(moved)) == 1.0


def _labels_image(array_kji: np.ndarray):
    image = sitk.GetImageFromArray(array_kji.astype(np.float32))  # origin 0, spacing 1 mm, identity directions
    return image


def test_entropy_correlation_matches_the_analytic_value_of_a_noisy_copy():
    """Four equiprobable labels A, and B = A for half the voxels, an independent label elsewhere.

    Then P(B = a | A = a) = 5/8 and 1/8 for each other label, so I(A;B) = log 4 - H(B|A) and the coefficient
    2 I / (H(A) + H(B)) = I / log 4 = 0.2256; a copy gives 1, independent labels about 0.
    """
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, (40, 40, 40))
    mixed = np.where(rng.random(labels.shape) < 0.5, labels, rng.integers(0, 4, labels.shape))
    conditional = -(5 / 8 * np.log(5 / 8) + 3 / 8 * np.log(1 / 8))
    expected = (np.log(4) - conditional) / np.log(4)
    a, identity = _labels_image(labels), np.eye(4)
    assert registration.entropy_correlation(sitk, a, _labels_image(mixed), identity, {}) == pytest.approx(
        expected, abs=0.01)
    assert registration.entropy_correlation(sitk, a, _labels_image(labels), identity, {}) == pytest.approx(1.0)
    independent = rng.integers(0, 4, labels.shape)
    assert registration.entropy_correlation(sitk, a, _labels_image(independent), identity, {}) < 0.01


def test_entropy_correlation_follows_the_transform_from_sampled_to_other_image():
    """B is A moved 3 voxels along i: through the 3 mm shift (sampled image's points to the other's) B predicts A."""
    labels = np.random.default_rng(8).integers(0, 4, (20, 20, 30))
    moved = np.zeros_like(labels)
    moved[:, :, 3:] = labels[:, :, :-3]  # B at i + 3 holds A at i
    shift_lps = cases.rigid_about((0, 0, 0), (0, 0, 1), 0.0, (3.0, 0.0, 0.0))
    a, b = _labels_image(labels), _labels_image(moved)
    assert registration.entropy_correlation(sitk, a, b, shift_lps, {}) == pytest.approx(1.0)
    assert registration.entropy_correlation(sitk, a, b, np.linalg.inv(shift_lps), {}) < 0.05
    mask = sitk.GetImageFromArray(np.zeros(labels.shape, np.uint8))
    assert registration.entropy_correlation(sitk, a, b, shift_lps, {"domain": mask}) == 0.0  # nothing inside


def test_landmark_check_reports_error_before_and_after():
    points = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0]])
    shift = cases.rigid_about((0, 0, 0), (0, 0, 1), 0.0, (3.0, 4.0, 0.0))
    check = registration_measures.landmark_check(points, points, shift, np.eye(4))
    assert check["mean_mm_before"] == pytest.approx(5.0) and check["max_mm_after"] == pytest.approx(0.0)


# -- the doors: command line, API ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory, phantom_pair):
    """The phantom pair as NRRD files, the moving one displaced by a known rigid transform."""
    import alignseries

    fixed, moving = phantom_pair
    case = cases.displaced("files", "phantom", fixed, moving,
                           cases.rigid_about(moving.geometry.center_ras, (1, 0, 1), 6.0, (9.0, -7.0, 5.0)))
    folder = tmp_path_factory.mktemp("phantom")
    paths = {}
    for role, image in (("fixed", case.fixed), ("moving", case.moving)):
        paths[role] = folder / f"{role}.nrrd"
        alignseries.Volume.from_array(image.array, image.geometry.ijk_to_ras).save(paths[role])
    return case, paths


def test_cli_refine_writes_the_refined_transform_and_reports(capsys, tmp_path, phantom_files):
    from conftest import run

    case, paths = phantom_files
    output = tmp_path / "refined.json"
    status, out, err = run(capsys, "transform", "--fixed", paths["fixed"], "--moving", paths["moving"],
                           "--mode", "centers", "--refine", "rigid", "--output", output, "--json")
    assert status == 0, err
    document = json.loads(out)
    written = np.array(json.loads(output.read_text())["moving_to_fixed_ras"], dtype=float)
    assert case.error_mm(written) <= 2.0
    refinement = document["refinement"]
    assert refinement["model"] == "rigid" and "not an accuracy" in refinement["metric"]
    assert len(refinement["change_mm_at_fixed_corners"]) == 8 and refinement["converged"] in (True, False)
    assert not any(w["code"] == "pre_alignment" for w in document["warnings"])  # it was refined


def test_cli_refine_from_a_transform_file_and_text_points_to_the_preview(capsys, tmp_path, phantom_files):
    from conftest import run

    case, paths = phantom_files
    start = tmp_path / "start.json"
    start.write_text(json.dumps({"moving_to_fixed_ras": np.eye(4).tolist()}))
    status, out, err = run(capsys, "transform", "--fixed", paths["fixed"], "--moving", paths["moving"],
                           "--initial", start, "--refine", "rigid", "--output", tmp_path / "refined.h5")
    assert status == 0, err
    assert "intensity refinement (rigid" in out and "--preview fused.png" in out and "not an accuracy" in out


@pytest.mark.parametrize("arguments, fragment", [
    (["--fixed-mask", "mask.nrrd"], "go(es) with --refine"),
    (["--initial", "start.json", "--mode", "centers", "--refine", "rigid"], "both choose the starting transform"),
])
def test_cli_refine_options_misused_fail_in_one_line(capsys, tmp_path, phantom_files, arguments, fragment):
    from conftest import run

    _, paths = phantom_files
    status, out, err = run(capsys, "transform", "--fixed", paths["fixed"], "--moving", paths["moving"],
                           "--output", tmp_path / "t.h5", *arguments)
    assert status == 2 and err.startswith("error:") and fragment in err and err.count("\n") == 1


@needs_real_data
def test_cli_refine_of_a_real_single_slice_fails_in_one_line_naming_it(capsys, tmp_path):
    """One real CT slice (a file copied out of its series) refined against the whole series: one ``error:`` line that
    names the moving image and its size, no transform written, both inputs byte for byte as they were."""
    import hashlib
    import shutil

    from conftest import run

    series = cases.SHARED_DICOM / cases.CT_SERIES / "dicom"
    one_slice = tmp_path / "slice"
    one_slice.mkdir()
    shutil.copy(sorted(p for p in series.iterdir() if p.is_file())[10], one_slice)

    def digest() -> dict:
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for folder in (series, one_slice)
                for p in sorted(folder.iterdir()) if p.is_file()}

    before = digest()
    output = tmp_path / "t.h5"
    status, out, err = run(capsys, "transform", "--fixed", series, "--moving", one_slice, "--mode", "centers",
                           "--refine", "rigid", "--output", output)
    assert status != 0 and err.startswith("error:") and err.count("\n") == 1, err
    assert "the moving image is 512 x 512 x 1 voxels" in err and "single slice" in err
    assert not output.exists() and digest() == before


def test_api_register_from_a_mode_and_cancel_leaves_no_result(phantom_files):
    import alignseries

    case, paths = phantom_files
    fixed, moving = alignseries.load(paths["fixed"]), alignseries.load(paths["moving"])
    result = alignseries.register(fixed, moving, initial="centers")
    assert case.error_mm(result.moving_to_fixed_ras) <= 2.0
    assert result.refinement is not None and result.mode == "centers"
    with pytest.raises(OperationCancelledError):
        alignseries.register(fixed, moving, progress=lambda fraction: True)


def test_batch_case_with_refine_writes_and_uses_the_refined_transform(tmp_path, phantom_files, scene):
    from AlignSeriesLib import batch, mrml, operations

    case, paths = phantom_files
    row = batch.Case(2, str(paths["moving"]), str(paths["fixed"]), "moved.nrrd", refine="rigid")
    result = batch.run_case(row, tmp_path)
    assert result["status"] == "done", result["error"]
    refined = tmp_path / "moved.nrrd.refined.h5"
    assert str(refined) in result["extras"]
    matrix = mrml.transform_to_parent_matrix(operations.read_transform(scene, refined))
    assert case.error_mm(matrix) <= 2.0
    bad = batch.run_case(batch.Case(3, str(paths["moving"]), str(paths["fixed"]), "other.nrrd", refine="elastic"),
                         tmp_path)
    assert bad["status"] == "failed" and "refine 'elastic'" in bad["error"]
