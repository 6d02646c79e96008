"""Landmark registration: exact recovery, least-squares optimality against independent solvers,
mirrors, correspondence, degenerate input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK
import vtk
from scipy.optimize import linear_sum_assignment
from scipy.spatial.transform import Rotation

from AlignSeriesLib.errors import LandmarkError
from AlignSeriesLib.landmarks import match_points, register_landmarks, solve_assignment

SEED = 20240417


def random_points(count: int, rng) -> np.ndarray:
    return rng.uniform(-80, 80, size=(count, 3))


def known_transform(mode: str, rng) -> np.ndarray:
    matrix = np.eye(4)
    rotation = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    if mode == "rigid":
        matrix[:3, :3] = rotation
    elif mode == "similarity":
        matrix[:3, :3] = 1.37 * rotation
    else:
        matrix[:3, :3] = rotation @ np.diag([1.2, 0.8, 1.1]) + 0.15 * rng.standard_normal((3, 3))
    matrix[:3, 3] = rng.uniform(-50, 50, 3)
    return matrix


def apply(matrix, points):
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def horn_quaternion(fixed, moving, weights=None, *, scale: bool = False) -> np.ndarray:
    """Horn (1987) closed-form absolute orientation via the unit quaternion (independent of SVD)."""
    w = np.ones(len(fixed)) if weights is None else np.asarray(weights, float)
    w = w / w.sum()
    fc, mc = w @ fixed, w @ moving
    f, m = fixed - fc, moving - mc
    s = (m * w[:, None]).T @ f  # S_ab = sum w m_a f_b
    n = np.array([
        [s[0, 0] + s[1, 1] + s[2, 2], s[1, 2] - s[2, 1], s[2, 0] - s[0, 2], s[0, 1] - s[1, 0]],
        [s[1, 2] - s[2, 1], s[0, 0] - s[1, 1] - s[2, 2], s[0, 1] + s[1, 0], s[2, 0] + s[0, 2]],
        [s[2, 0] - s[0, 2], s[0, 1] + s[1, 0], -s[0, 0] + s[1, 1] - s[2, 2], s[1, 2] + s[2, 1]],
        [s[0, 1] - s[1, 0], s[2, 0] + s[0, 2], s[1, 2] + s[2, 1], -s[0, 0] - s[1, 1] + s[2, 2]],
    ])
    q0, qx, qy, qz = np.linalg.eigh(n)[1][:, -1]
    rotation = np.array([
        [q0**2 + qx**2 - qy**2 - qz**2, 2 * (qx * qy - q0 * qz), 2 * (qx * qz + q0 * qy)],
        [2 * (qy * qx + q0 * qz), q0**2 - qx**2 + qy**2 - qz**2, 2 * (qy * qz - q0 * qx)],
        [2 * (qz * qx - q0 * qy), 2 * (qz * qy + q0 * qx), q0**2 - qx**2 - qy**2 + qz**2],
    ])
    factor = float(np.sum(w * np.sum(f * (m @ rotation.T), axis=1)) / np.sum(w * np.sum(m**2, axis=1))) if scale else 1
    matrix = np.eye(4)
    matrix[:3, :3] = factor * rotation
    matrix[:3, 3] = fc - factor * rotation @ mc
    return matrix


def vtk_landmark_transform(fixed, moving, mode: str) -> np.ndarray:
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    source.SetDataTypeToDouble()
    target.SetDataTypeToDouble()
    for m, f in zip(moving, fixed, strict=True):
        source.InsertNextPoint(*m)
        target.InsertNextPoint(*f)
    transform = vtk.vtkLandmarkTransform()
    transform.SetSourceLandmarks(source)
    transform.SetTargetLandmarks(target)
    {"rigid": transform.SetModeToRigidBody, "similarity": transform.SetModeToSimilarity,
     "affine": transform.SetModeToAffine}[mode]()
    transform.Update()
    matrix = transform.GetMatrix()
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def sitk_rigid(fixed, moving) -> np.ndarray:
    """SimpleITK's landmark initializer: its transform maps fixed-image points to moving-image points."""
    initial = SimpleITK.VersorRigid3DTransform()
    result = SimpleITK.LandmarkBasedTransformInitializer(initial, fixed.ravel().tolist(), moving.ravel().tolist())
    result = SimpleITK.VersorRigid3DTransform(result)
    fixed_to_moving = np.eye(4)
    fixed_to_moving[:3, :3] = np.array(result.GetMatrix()).reshape(3, 3)
    center = np.array(result.GetCenter())
    fixed_to_moving[:3, 3] = np.array(result.GetTranslation()) + center - fixed_to_moving[:3, :3] @ center
    return np.linalg.inv(fixed_to_moving)


# -- exact recovery --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["rigid", "similarity", "affine"])
def test_noise_free_landmarks_recover_the_known_transform(mode):
    rng = np.random.default_rng(SEED)
    truth = known_transform(mode, rng)
    moving = random_points(7, rng)
    fixed = apply(truth, moving)
    result = register_landmarks(fixed, moving, mode)
    np.testing.assert_allclose(result.moving_to_fixed_ras, truth, atol=1e-9)
    assert result.rms_error < 1e-9
    assert np.all(result.residuals < 1e-9) and np.all(result.leave_one_out_errors < 1e-8)
    assert not result.reflection and result.warnings == []


def test_three_points_suffice_for_rigid():
    rng = np.random.default_rng(SEED)
    truth = known_transform("rigid", rng)
    moving = random_points(3, rng)
    result = register_landmarks(apply(truth, moving), moving, "rigid")
    np.testing.assert_allclose(result.moving_to_fixed_ras, truth, atol=1e-9)
    assert np.all(np.isnan(result.leave_one_out_errors))
    assert any(w.code == "leave_one_out" and "leave-one-out" in w.message for w in result.warnings)


# -- least-squares optimum with noise ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["rigid", "similarity"])
def test_noisy_fit_equals_horn_quaternion_optimum_and_vtk(mode):
    rng = np.random.default_rng(SEED + 1)
    truth = known_transform(mode, rng)
    moving = random_points(9, rng)
    fixed = apply(truth, moving) + rng.normal(0, 1.5, (9, 3))
    result = register_landmarks(fixed, moving, mode)
    horn = horn_quaternion(fixed, moving, scale=mode == "similarity")
    np.testing.assert_allclose(result.moving_to_fixed_ras, horn, atol=1e-9)
    vtk_matrix = vtk_landmark_transform(fixed, moving, mode)
    if mode == "rigid":
        assert np.abs(result.moving_to_fixed_ras - vtk_matrix).max() < 1e-9
    else:
        # vtkLandmarkTransform uses Horn's symmetric scale sqrt(sum |f'|^2 / sum |m'|^2), not the
        # least-squares scale; the rotations agree.
        scale = np.cbrt(np.linalg.det(result.moving_to_fixed_ras[:3, :3]))
        vtk_scale = np.cbrt(np.linalg.det(vtk_matrix[:3, :3]))
        centered_f, centered_m = fixed - fixed.mean(0), moving - moving.mean(0)
        assert vtk_scale == pytest.approx(np.sqrt(np.sum(centered_f**2) / np.sum(centered_m**2)))
        assert np.abs(result.moving_to_fixed_ras[:3, :3] / scale - vtk_matrix[:3, :3] / vtk_scale).max() < 1e-9
    np.testing.assert_allclose(result.rms_error, np.sqrt(np.mean(np.sum((apply(horn, moving) - fixed) ** 2, 1))))


def test_noisy_rigid_fit_agrees_with_simpleitk_landmark_initializer():
    rng = np.random.default_rng(SEED + 2)
    truth = known_transform("rigid", rng)
    moving = random_points(8, rng)
    fixed = apply(truth, moving) + rng.normal(0, 1.0, (8, 3))
    result = register_landmarks(fixed, moving, "rigid")
    assert np.abs(result.moving_to_fixed_ras - sitk_rigid(fixed, moving)).max() < 1e-9


def test_noisy_affine_fit_agrees_with_vtk():
    rng = np.random.default_rng(SEED + 3)
    truth = known_transform("affine", rng)
    moving = random_points(10, rng)
    fixed = apply(truth, moving) + rng.normal(0, 1.0, (10, 3))
    result = register_landmarks(fixed, moving, "affine")
    assert np.abs(result.moving_to_fixed_ras - vtk_landmark_transform(fixed, moving, "affine")).max() < 1e-9


def test_weighted_rigid_fit_equals_weighted_horn():
    rng = np.random.default_rng(SEED + 4)
    moving = random_points(6, rng)
    fixed = apply(known_transform("rigid", rng), moving) + rng.normal(0, 2.0, (6, 3))
    weights = rng.uniform(0.2, 5.0, 6)
    result = register_landmarks(fixed, moving, "rigid", weights=weights)
    np.testing.assert_allclose(result.moving_to_fixed_ras, horn_quaternion(fixed, moving, weights), atol=1e-9)
    assert not np.allclose(result.moving_to_fixed_ras, register_landmarks(fixed, moving).moving_to_fixed_ras)


def test_rigid_result_is_a_proper_rotation_even_for_noisy_planar_points():
    rng = np.random.default_rng(SEED + 5)
    moving = np.column_stack([rng.uniform(-50, 50, (5, 2)), np.zeros(5)])
    fixed = apply(known_transform("rigid", rng), moving) + rng.normal(0, 0.5, (5, 3))
    linear = register_landmarks(fixed, moving, "rigid").moving_to_fixed_ras[:3, :3]
    np.testing.assert_allclose(linear.T @ linear, np.eye(3), atol=1e-12)
    assert np.linalg.det(linear) == pytest.approx(1.0)


# -- residuals, leave-one-out, TRE -----------------------------------------------------------------


def test_residuals_are_in_fixed_order_and_leave_one_out_finds_the_outlier():
    rng = np.random.default_rng(SEED + 6)
    moving = random_points(8, rng)
    fixed = apply(known_transform("rigid", rng), moving)
    fixed[5] += [0, 0, 12.0]
    result = register_landmarks(fixed, moving, "rigid")
    assert result.residuals.shape == (8,) and int(np.argmax(result.residuals)) == 5
    assert int(np.argmax(result.leave_one_out_errors)) == 5
    assert result.leave_one_out_errors[5] == pytest.approx(12.0, abs=1e-9)
    assert result.rms_error == pytest.approx(np.sqrt(np.mean(result.residuals**2)))


def test_target_registration_error_follows_fitzpatrick_model_monte_carlo():
    rng = np.random.default_rng(SEED + 7)
    moving = random_points(6, rng)
    truth = known_transform("rigid", rng)
    target_moving = np.array([100.0, -40.0, 30.0])
    fle = 1.0
    errors, predictions = [], []
    for _ in range(400):
        fixed = apply(truth, moving) + rng.normal(0, fle / np.sqrt(3), (6, 3))
        result = register_landmarks(fixed, moving, "rigid")
        errors.append(np.linalg.norm(apply(result.moving_to_fixed_ras, target_moving) - apply(truth, target_moving)))
        predictions.append(result.target_registration_error(apply(truth, target_moving)))
    measured = np.sqrt(np.mean(np.square(errors)))
    predicted = np.sqrt(np.mean(np.square(predictions)))
    assert predicted == pytest.approx(measured, rel=0.15)


def test_target_registration_error_is_smallest_at_the_centroid():
    rng = np.random.default_rng(SEED + 8)
    moving = random_points(6, rng)
    fixed = apply(known_transform("rigid", rng), moving) + rng.normal(0, 1, (6, 3))
    result = register_landmarks(fixed, moving)
    centroid = fixed.mean(axis=0)
    tre = result.target_registration_error([centroid, centroid + 50, centroid + 200])
    assert tre[0] == pytest.approx(result.fiducial_localization_error / np.sqrt(6))
    assert tre[0] < tre[1] < tre[2]
    assert result.fiducial_localization_error == pytest.approx(result.rms_error * np.sqrt(18 / 12))


# -- mirrors ---------------------------------------------------------------------------------------


MIRROR = np.diag([-1.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("mode", ["rigid", "similarity"])
def test_mirrored_point_set_is_refused(mode):
    rng = np.random.default_rng(SEED + 9)
    moving = random_points(6, rng)
    fixed = apply(known_transform("rigid", rng) @ MIRROR, moving)
    with pytest.raises(LandmarkError, match="mirror"):
        register_landmarks(fixed, moving, mode)


def test_mirrored_point_set_is_flagged_in_affine_mode():
    rng = np.random.default_rng(SEED + 9)
    moving = random_points(6, rng)
    truth = known_transform("rigid", rng) @ MIRROR
    result = register_landmarks(apply(truth, moving), moving, "affine")
    assert result.reflection
    assert any(w.code == "reflection" and "reflection" in w.message for w in result.warnings)
    np.testing.assert_allclose(result.moving_to_fixed_ras, truth, atol=1e-9)


def test_lps_ras_sign_flip_is_not_mistaken_for_a_mirror():
    # negating x and y is a 180 degree rotation about z, not a mirror
    rng = np.random.default_rng(SEED + 10)
    moving = random_points(5, rng)
    fixed = moving * [-1, -1, 1]
    result = register_landmarks(fixed, moving, "rigid")
    np.testing.assert_allclose(result.moving_to_fixed_ras[:3, :3], np.diag([-1.0, -1.0, 1.0]), atol=1e-12)


# -- correspondence --------------------------------------------------------------------------------


def test_automatic_matching_recovers_a_shuffled_order():
    rng = np.random.default_rng(SEED + 11)
    fixed = random_points(9, rng)
    moving_in_order = apply(np.linalg.inv(known_transform("similarity", rng)), fixed) + rng.normal(0, 0.2, (9, 3))
    shuffle = rng.permutation(9)
    moving = moving_in_order[shuffle]
    match = match_points(fixed, moving, by="auto")
    assert match.method == "signatures" and match.warnings == []
    np.testing.assert_array_equal(shuffle[match.moving_order], np.arange(9))
    result = register_landmarks(fixed, match.reorder(moving), "similarity")
    assert result.rms_error < 1.0


def test_automatic_matching_warns_on_a_symmetric_layout():
    cube = np.array(list(itertools.product([0.0, 10.0], repeat=3)))
    match = match_points(cube, cube[::-1], by="auto")
    assert any(w.code == "ambiguous_match" and "ambiguous" in w.message for w in match.warnings)


def test_matching_by_labels_and_auto_prefers_complete_labels():
    fixed = np.eye(3) * 10
    moving = fixed[[2, 0, 1]]
    for by in ("labels", "auto"):
        match = match_points(fixed, moving, by=by, fixed_labels=["a", "b", "c"], moving_labels=["c", "a", "b"])
        assert match.method == "labels"
        np.testing.assert_array_equal(match.reorder(moving), fixed)
    assert match_points(fixed, moving).method == "order"


@pytest.mark.parametrize("fixed_labels, moving_labels, message", [
    (["a", "b", "c"], ["a", "b", "d"], "only in fixed"),
    (["a", "a", "c"], ["a", "b", "c"], "not unique"),
    (["a", "", "c"], ["a", "b", "c"], "label on every"),
    (None, ["a", "b", "c"], "label on every"),
])
def test_bad_labels_are_refused(fixed_labels, moving_labels, message):
    with pytest.raises(LandmarkError, match=message):
        match_points(np.eye(3), np.eye(3), by="labels", fixed_labels=fixed_labels, moving_labels=moving_labels)


def test_assignment_is_exact_against_scipy():
    rng = np.random.default_rng(SEED + 12)
    for size in (1, 2, 3, 6, 12):
        for _ in range(20):
            cost = rng.random((size, size))
            rows, columns = linear_sum_assignment(cost)
            assert cost[np.arange(size), solve_assignment(cost)].sum() == pytest.approx(cost[rows, columns].sum())


# -- bad input -------------------------------------------------------------------------------------


GOOD = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10], [5, 5, 5]])


@pytest.mark.parametrize("fixed, moving, mode, message", [
    (GOOD[:2], GOOD[:2], "rigid", "at least 3"),
    (GOOD[:3], GOOD[:3], "affine", "at least 4"),
    ([[0, 0, 0], [1, 1, 1], [2, 2, 2], [5, 5, 5]], GOOD[:4], "rigid", "collinear"),
    (GOOD[:3].tolist() + [[3, 3, 0]], GOOD[:4], "affine", "coplanar"),
    (GOOD, GOOD[:4], "rigid", "different numbers"),
    (GOOD[[0, 1, 2, 1]], GOOD[:4], "rigid", "duplicate points"),
    (np.where(GOOD == 5, np.nan, GOOD), GOOD, "rigid", "NaN"),
    (GOOD[:, :2], GOOD[:, :2], "rigid", "shape"),
    ([["a", "b", "c"]] * 3, GOOD[:3], "rigid", "not numeric"),
    (GOOD, GOOD, "projective", "unknown landmark mode"),
])
def test_degenerate_input_gives_a_clear_error_and_leaves_input_unchanged(fixed, moving, mode, message):
    fixed_before, moving_before = np.array(fixed, dtype=object), np.array(moving, dtype=object)
    with pytest.raises(LandmarkError, match=message):
        register_landmarks(fixed, moving, mode)
    assert np.array_equal(np.array(fixed, dtype=object), fixed_before, equal_nan=False) or message == "NaN"
    assert np.array_equal(np.array(moving, dtype=object), moving_before)


def test_coplanar_points_are_fine_for_rigid():
    result = register_landmarks(GOOD[:3].tolist() + [[3, 3, 0]], GOOD[:3].tolist() + [[3, 3, 0]], "rigid")
    np.testing.assert_allclose(result.moving_to_fixed_ras, np.eye(4), atol=1e-12)


@pytest.mark.parametrize("weights", [[1, 1, 1, 1], [1, 1, 1, 0, 1], [1, 1, 1, -1, 1], [1, 1, np.nan, 1, 1]])
def test_bad_weights_are_refused(weights):
    with pytest.raises(LandmarkError, match="weights"):
        register_landmarks(GOOD, GOOD, weights=weights)


def test_input_arrays_are_not_modified():
    fixed, moving = GOOD.copy(), GOOD[::-1].copy()
    register_landmarks(fixed, moving, "affine")
    match_points(fixed, moving, by="auto")
    np.testing.assert_array_equal(fixed, GOOD)
    np.testing.assert_array_equal(moving, GOOD[::-1])
