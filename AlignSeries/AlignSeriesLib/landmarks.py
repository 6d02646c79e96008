"""Landmark registration: the transform that best maps moving points onto fixed points.

Three modes, all closed-form weighted least squares (minimising ``sum w_n |T(m_n) - f_n|^2``):

* ``"rigid"`` — rotation and translation. Kabsch/Umeyama: the SVD of the weighted cross-covariance
  with the determinant correction, so the result is always a proper rotation (``det = +1``). A
  mirrored point set (one that only a reflection fits) is refused, never fitted by a rotation.
* ``"similarity"`` — rigid plus one isotropic scale (Umeyama 1991); mirrored sets refused as above.
* ``"affine"`` — twelve parameters by linear least squares. A fitted reflection (``det < 0``) is
  reported through :attr:`LandmarkResult.reflection` and a warning, never hidden.

Points are ``(N, 3)`` arrays in millimetres; the frame is the caller's (RAS everywhere in
AlignSeries). Correspondence comes from :func:`match_points` (by order, by label, or automatically
from distance signatures).

References
----------
Umeyama S. (1991) Least-squares estimation of transformation parameters between two point patterns.
IEEE TPAMI 13(4):376-380.
Fitzpatrick J.M., West J.B., Maurer C.R. (1998) Predicting error in rigid-body point-based
registration. IEEE TMI 17(5):694-702.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .choices import LANDMARK_MODES, MATCH_METHODS
from .errors import AlignSeriesWarning, LandmarkError

logger = logging.getLogger(__name__)


#: Minimum number of point pairs per mode.
MINIMUM_POINTS = {"rigid": 3, "similarity": 3, "affine": 4}

#: Number of free parameters per mode (used to estimate the localisation error from residuals).
PARAMETER_COUNT = {"rigid": 6, "similarity": 7, "affine": 12}

#: Relative tolerance for degenerate configurations: a point set is called collinear (coplanar) when
#: its second (third) principal spread is below this fraction of its first.
DEGENERATE_RTOL = 1e-3

#: Two points closer than this (mm) are duplicates.
DUPLICATE_ATOL = 1e-4

#: Largest coordinate magnitude (mm) accepted in a point list: 1 km. Beyond it the fit's squared
#: distances overflow (and LAPACK may never return).
MAX_COORDINATE_MM = 1e6

#: A point set is called mirrored when the best rotation fits with an RMS error above
#: ``MIRROR_RATIO`` times that of the best reflection *and* above it by more than ``MIRROR_ATOL`` mm.
MIRROR_RATIO = 2.0
MIRROR_ATOL = 1.0

#: Automatic matching warns when a point's best alternative partner is within this margin of its
#: chosen one (distance signatures are normalised by the mean inter-point distance, so unitless).
AMBIGUITY_ATOL = 0.02


@dataclass(frozen=True, eq=False)
class LandmarkResult:
    """Result of :func:`register_landmarks`.

    Attributes
    ----------
    moving_to_fixed_ras : (4, 4) ndarray
        Maps moving points onto fixed points (Slicer's "to parent" matrix of the moving volume).
    mode : str
    rms_error : float, mm
        Root mean square of :attr:`residuals` (unweighted).
    residuals : (N,) ndarray, mm
        ``|T(moving_n) - fixed_n|`` per pair, in the order of the fixed list.
    leave_one_out_errors : (N,) ndarray, mm
        For each pair, the distance between ``T_n(moving_n)`` and ``fixed_n`` where ``T_n`` was fitted
        without pair ``n``; NaN where the remaining points are too few or degenerate.
    reflection : bool
        True when the fitted linear part has a negative determinant (affine mode only; rigid and
        similarity modes refuse mirrored sets).
    warnings : list of AlignSeriesWarning
    fixed_points : (N, 3) ndarray, mm
        The fixed points used (kept for :meth:`target_registration_error`).
    """

    moving_to_fixed_ras: np.ndarray
    mode: str
    rms_error: float
    residuals: np.ndarray
    leave_one_out_errors: np.ndarray
    reflection: bool
    warnings: list = field(default_factory=list)
    fixed_points: np.ndarray = field(default_factory=lambda: np.empty((0, 3)), repr=False)

    @property
    def fiducial_localization_error(self) -> float:
        """Estimated RMS fiducial localisation error (mm) from the residuals.

        ``FLE^2 = FRE^2 * 3N / (3N - p)`` with ``p`` the mode's parameter count (6, 7, 12): the
        expected residual is smaller than the localisation error because the fit absorbs ``p`` of the
        ``3N`` noise components (for rigid: Fitzpatrick's ``<FRE^2> = (1 - 2/N) <FLE^2>``). NaN when
        ``3N <= p`` (an exact fit, nothing to estimate from).
        """
        count = 3 * len(self.residuals)
        dof = count - PARAMETER_COUNT[self.mode]
        if dof <= 0:
            return float("nan")
        return float(np.sqrt(np.mean(self.residuals**2) * count / dof))

    def target_registration_error(self, target_ras) -> np.ndarray:
        """Expected RMS target registration error (mm) at target points, by Fitzpatrick's model.

        ``TRE^2(r) = FLE^2 / N * (1 + 1/3 * sum_k d_k^2 / f_k^2)``, where ``d_k`` is the distance of
        the target from principal axis ``k`` of the fixed fiducial configuration (through its
        centroid), ``f_k`` the RMS distance of the fiducials from that axis, and ``FLE`` is
        :attr:`fiducial_localization_error`. The model assumes independent, isotropic, equal
        localisation errors and a rigid fit; for similarity and affine fits it is an optimistic
        approximation.

        Parameters
        ----------
        target_ras : (3,) or (M, 3) array_like, mm, fixed frame

        Returns
        -------
        float ndarray, mm
            One value per target (shape ``()`` for a single point).
        """
        target = np.asarray(target_ras, dtype=float)
        centered = self.fixed_points - self.fixed_points.mean(axis=0)
        _, _, axes = np.linalg.svd(centered, full_matrices=False)
        offsets = target - self.fixed_points.mean(axis=0)
        # squared distance from axis k = |x|^2 - (x . v_k)^2
        target_d2 = np.sum(offsets**2, axis=-1)[..., None] - (offsets @ axes.T) ** 2
        fiducial_f2 = np.mean(np.sum(centered**2, axis=1)[:, None] - (centered @ axes.T) ** 2, axis=0)
        ratio = np.sum(target_d2 / fiducial_f2, axis=-1) / 3.0
        count = len(self.fixed_points)
        return np.sqrt(self.fiducial_localization_error**2 / count * (1.0 + ratio))

    def to_dict(self) -> dict:
        """JSON-ready summary (the command line's ``landmarks --json`` fields)."""
        return {
            "mode": self.mode,
            "moving_to_fixed_ras": self.moving_to_fixed_ras.tolist(),
            "rms_error_mm": self.rms_error,
            "residuals_mm": self.residuals.tolist(),
            "leave_one_out_errors_mm": [None if np.isnan(e) else float(e) for e in self.leave_one_out_errors],
            "reflection": self.reflection,
            "warnings": [warning.to_dict() for warning in self.warnings],
        }


# -- registration -----------------------------------------------------------------------------------


def register_landmarks(fixed_points_ras, moving_points_ras, mode: str = "rigid", weights=None) -> LandmarkResult:
    """Fit the transform that maps corresponding moving points onto fixed points.

    Parameters
    ----------
    fixed_points_ras : (N, 3) array_like, mm, RAS
    moving_points_ras : (N, 3) array_like, mm, RAS
        Point ``n`` of each list is one pair (see :func:`match_points` to establish that).
    mode : {"rigid", "similarity", "affine"}
    weights : (N,) array_like, optional
        Positive weight per pair (e.g. ``1 / FLE_n^2``); equal weights by default.

    Returns
    -------
    LandmarkResult

    Raises
    ------
    LandmarkError
        On an unknown mode, NaN or infinite coordinates, mismatched counts, too few points for the
        mode, duplicate points, collinear points (coplanar for affine), bad weights, or a mirrored
        point set in rigid or similarity mode.

    Examples
    --------
    >>> fixed = [[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]]
    >>> moving = [[1, 2, 3], [11, 2, 3], [1, 12, 3], [1, 2, 13]]
    >>> result = register_landmarks(fixed, moving)
    >>> result.moving_to_fixed_ras[:3, 3].round(9).tolist(), round(result.rms_error, 9)
    ([-1.0, -2.0, -3.0], 0.0)
    """
    if mode not in LANDMARK_MODES:
        raise LandmarkError(f"unknown landmark mode {mode!r}; expected one of {', '.join(LANDMARK_MODES)}")
    fixed, moving = _validated_pairs(fixed_points_ras, moving_points_ras)
    weights = _validated_weights(weights, len(fixed))
    for points, name in ((fixed, "fixed points"), (moving, "moving points")):
        _check_configuration(points, mode, name)
    warnings: list[AlignSeriesWarning] = []
    moving_to_fixed = _fit(fixed, moving, weights, mode, warnings)
    residuals = np.linalg.norm(_apply(moving_to_fixed, moving) - fixed, axis=1)
    reflection = bool(np.linalg.det(moving_to_fixed[:3, :3]) < 0)
    if reflection:
        warnings.append(AlignSeriesWarning(
            "reflection",
            f"the affine fit contains a reflection (determinant {np.linalg.det(moving_to_fixed[:3, :3]):.4g}): "
            "one point list is mirrored (check LPS/RAS signs or left/right labels)"))
    leave_one_out = _leave_one_out_errors(fixed, moving, weights, mode, warnings)
    for warning in warnings:
        logger.warning(warning.message)
    return LandmarkResult(
        moving_to_fixed_ras=moving_to_fixed,
        mode=mode,
        rms_error=float(np.sqrt(np.mean(residuals**2))),
        residuals=residuals,
        leave_one_out_errors=leave_one_out,
        reflection=reflection,
        warnings=warnings,
        fixed_points=fixed,
    )


def _fit(fixed: np.ndarray, moving: np.ndarray, weights: np.ndarray, mode: str, warnings: list) -> np.ndarray:
    if mode == "affine":
        return _fit_affine(fixed, moving, weights)
    rotation_fit = _fit_umeyama(fixed, moving, weights, scale=mode == "similarity", allow_reflection=False)
    _refuse_mirror(fixed, moving, weights, mode, rotation_fit)
    return rotation_fit


def _fit_umeyama(fixed, moving, weights, *, scale: bool, allow_reflection: bool) -> np.ndarray:
    """Weighted Umeyama fit; with ``allow_reflection`` the best orthogonal (possibly improper) map."""
    w = weights / weights.sum()
    fixed_center = w @ fixed
    moving_center = w @ moving
    fixed_c = fixed - fixed_center
    moving_c = moving - moving_center
    covariance = (moving_c * w[:, None]).T @ fixed_c  # sum w m f^T, (3, 3)
    u, singular_values, vt = np.linalg.svd(covariance)
    correction = np.ones(3)
    if not allow_reflection and np.linalg.det(vt.T @ u.T) < 0:
        correction[2] = -1.0
    rotation = vt.T @ np.diag(correction) @ u.T
    factor = 1.0
    if scale:
        factor = float(singular_values @ correction / (w @ np.sum(moving_c**2, axis=1)))
    matrix = np.eye(4)
    matrix[:3, :3] = factor * rotation
    matrix[:3, 3] = fixed_center - factor * rotation @ moving_center
    return matrix


def _refuse_mirror(fixed, moving, weights, mode: str, rotation_fit: np.ndarray) -> None:
    reflection_fit = _fit_umeyama(fixed, moving, weights, scale=mode == "similarity", allow_reflection=True)
    if np.linalg.det(reflection_fit[:3, :3]) >= 0:
        return
    rms_rotation = _rms(rotation_fit, fixed, moving)
    rms_reflection = _rms(reflection_fit, fixed, moving)
    if rms_rotation > MIRROR_RATIO * rms_reflection and rms_rotation - rms_reflection > MIRROR_ATOL:
        raise LandmarkError(
            f"the point lists are mirror images of each other: the best reflection fits with RMS "
            f"{rms_reflection:.3g} mm, the best {mode} transform only with {rms_rotation:.3g} mm "
            f"(limits: ratio {MIRROR_RATIO}, difference {MIRROR_ATOL} mm). A {mode} transform cannot "
            "mirror; check LPS/RAS signs and left/right labels, or use mode='affine' to fit the reflection"
        )


def _fit_affine(fixed, moving, weights) -> np.ndarray:
    root_w = np.sqrt(weights)[:, None]
    design = np.hstack([moving, np.ones((len(moving), 1))]) * root_w
    solution, *_ = np.linalg.lstsq(design, fixed * root_w, rcond=None)  # (4, 3)
    matrix = np.eye(4)
    matrix[:3, :] = solution.T
    return matrix


def _leave_one_out_errors(fixed, moving, weights, mode: str, warnings: list) -> np.ndarray:
    errors = np.full(len(fixed), np.nan)
    for index in range(len(fixed)):
        keep = np.arange(len(fixed)) != index
        try:
            for points in (fixed[keep], moving[keep]):
                _check_configuration(points, mode, "remaining points")
            matrix = _fit(fixed[keep], moving[keep], weights[keep], mode, [])
        except LandmarkError:
            continue
        errors[index] = np.linalg.norm(_apply(matrix, moving[index]) - fixed[index])
    if np.any(np.isnan(errors)):
        warnings.append(AlignSeriesWarning(
            "leave_one_out",
            f"leave-one-out error not available for {int(np.sum(np.isnan(errors)))} of {len(fixed)} points: "
            f"the remaining points are too few or degenerate for {mode} mode "
            f"(needs {MINIMUM_POINTS[mode] + 1} well-spread pairs or more)"))
    return errors


def _rms(matrix, fixed, moving) -> float:
    return float(np.sqrt(np.mean(np.sum((_apply(matrix, moving) - fixed) ** 2, axis=1))))


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


# -- input checks -----------------------------------------------------------------------------------


def _validated_points(points, name: str) -> np.ndarray:
    try:
        array = np.array(points, dtype=float)
    except (TypeError, ValueError) as error:
        raise LandmarkError(f"{name} are not numeric coordinates: {error}") from None
    if array.ndim != 2 or array.shape[1] != 3:
        raise LandmarkError(f"{name} must be an (N, 3) array of x, y, z, got shape {array.shape}")
    bad = np.flatnonzero(~np.all(np.isfinite(array), axis=1))
    if bad.size:
        raise LandmarkError(f"{name} contain NaN or infinite coordinates at point(s) {(bad + 1).tolist()} (1-based)")
    far = np.flatnonzero(np.any(np.abs(array) > MAX_COORDINATE_MM, axis=1))
    if far.size:
        raise LandmarkError(f"{name} have coordinates beyond {MAX_COORDINATE_MM:g} mm at point(s) "
                            f"{(far + 1).tolist()} (1-based): not positions in a patient")
    return array


def _validated_pairs(fixed_points, moving_points) -> tuple[np.ndarray, np.ndarray]:
    """Both point lists validated, and of equal length (each fixed point needs one moving partner)."""
    fixed = _validated_points(fixed_points, "fixed points")
    moving = _validated_points(moving_points, "moving points")
    if len(fixed) != len(moving):
        raise LandmarkError(
            f"fixed and moving lists have different numbers of points ({len(fixed)} and {len(moving)}); "
            "every fixed point needs exactly one moving partner"
        )
    return fixed, moving


def _validated_weights(weights, count: int) -> np.ndarray:
    if weights is None:
        return np.ones(count)
    array = np.asarray(weights, dtype=float)
    if array.shape != (count,) or not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise LandmarkError(f"weights must be {count} positive finite numbers, got {np.asarray(weights).tolist()}")
    return array


def _check_configuration(points: np.ndarray, mode: str, name: str) -> None:
    """Raise LandmarkError if ``points`` cannot determine a ``mode`` transform."""
    minimum = MINIMUM_POINTS[mode]
    if len(points) < minimum:
        raise LandmarkError(
            f"{name}: {mode} registration needs at least {minimum} point pairs, got {len(points)}"
        )
    _check_duplicates(points, name)
    spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)
    if spread[1] < DEGENERATE_RTOL * spread[0]:
        raise LandmarkError(
            f"{name} are collinear (spread ratio {spread[1] / spread[0]:.2g} below {DEGENERATE_RTOL}): "
            "a rotation about their line is undetermined; add a point off the line"
        )
    if mode == "affine" and spread[2] < DEGENERATE_RTOL * spread[0]:
        raise LandmarkError(
            f"{name} are coplanar (spread ratio {spread[2] / spread[0]:.2g} below {DEGENERATE_RTOL}): "
            "an affine transform is undetermined out of their plane; add a point off the plane "
            "or use mode='rigid' / 'similarity'"
        )


def _check_duplicates(points: np.ndarray, name: str) -> None:
    distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2)
    first, second = np.nonzero(np.triu(distances < DUPLICATE_ATOL, k=1))
    if first.size:
        pairs = ", ".join(f"{a + 1} and {b + 1}" for a, b in zip(first, second, strict=True))
        raise LandmarkError(f"{name} contain duplicate points (closer than {DUPLICATE_ATOL} mm): {pairs} (1-based)")


# -- correspondence ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointMatch:
    """Which moving point pairs with each fixed point.

    Attributes
    ----------
    moving_order : (N,) ndarray of int
        ``moving[moving_order[n]]`` is the partner of ``fixed[n]``.
    method : str
        ``"order"``, ``"labels"`` or ``"signatures"``.
    warnings : list of AlignSeriesWarning
    """

    moving_order: np.ndarray
    method: str
    warnings: list = field(default_factory=list)

    def reorder(self, moving_points) -> np.ndarray:
        """The moving points in the fixed list's order, ``(N, 3)``."""
        return np.asarray(moving_points, dtype=float)[self.moving_order]


def match_points(fixed, moving, by: str = "order", fixed_labels=None, moving_labels=None) -> PointMatch:
    """Establish which moving point corresponds to each fixed point.

    Parameters
    ----------
    fixed, moving : (N, 3) array_like, mm
    by : {"order", "labels", "auto"}
        ``"order"``: point ``n`` pairs with point ``n``. ``"labels"``: equal labels pair. ``"auto"``:
        labels when both lists have the same set of unique labels, otherwise distance signatures —
        each point is described by its sorted distances to all other points, divided by the mean
        inter-point distance of its list (invariant to rotation, translation and scale), and the
        assignment minimising the total signature difference is found exactly (Hungarian method).
        Signature matching assumes a rigid or similarity relation and warns when a point's best
        alternative partner is within ``AMBIGUITY_ATOL`` of its chosen one (symmetric layouts).
    fixed_labels, moving_labels : sequence of str, optional

    Returns
    -------
    PointMatch

    Raises
    ------
    LandmarkError
        On an unknown method, mismatched counts, or labels that are missing, repeated or unmatched.
    """
    if by not in MATCH_METHODS:
        raise LandmarkError(f"unknown matching method {by!r}; expected one of {', '.join(MATCH_METHODS)}")
    fixed, moving = _validated_pairs(fixed, moving)
    if by == "order":
        return PointMatch(np.arange(len(fixed)), "order")
    if by == "labels" or (by == "auto" and labels_usable(fixed_labels, moving_labels)):
        return PointMatch(_match_labels(fixed_labels, moving_labels), "labels")
    return _match_signatures(fixed, moving)


def labels_usable(fixed_labels, moving_labels) -> bool:
    """True when both lists label every point, uniquely, with the same set of labels."""
    if fixed_labels is None or moving_labels is None:
        return False
    fixed_set, moving_set = set(fixed_labels), set(moving_labels)
    complete = all(fixed_labels) and all(moving_labels)
    return complete and len(fixed_set) == len(fixed_labels) and fixed_set == moving_set


def _match_labels(fixed_labels, moving_labels) -> np.ndarray:
    for labels, name in ((fixed_labels, "fixed"), (moving_labels, "moving")):
        if labels is None or not all(labels):
            raise LandmarkError(f"matching by labels needs a label on every {name} point")
        repeated = sorted({label for label in labels if list(labels).count(label) > 1})
        if repeated:
            raise LandmarkError(f"{name} labels are not unique: {repeated}")
    only_fixed = sorted(set(fixed_labels) - set(moving_labels))
    only_moving = sorted(set(moving_labels) - set(fixed_labels))
    if only_fixed or only_moving:
        raise LandmarkError(f"labels do not match: only in fixed {only_fixed}, only in moving {only_moving}")
    position = {label: index for index, label in enumerate(moving_labels)}
    return np.array([position[label] for label in fixed_labels])


def _match_signatures(fixed: np.ndarray, moving: np.ndarray) -> PointMatch:
    cost = np.linalg.norm(_signatures(fixed)[:, None, :] - _signatures(moving)[None, :, :], axis=2)
    order = solve_assignment(cost)
    warnings = []
    chosen = cost[np.arange(len(order)), order]
    alternatives = cost.copy()
    alternatives[np.arange(len(order)), order] = np.inf
    margins = alternatives.min(axis=1) - chosen
    ambiguous = np.flatnonzero(margins < AMBIGUITY_ATOL)
    if ambiguous.size:
        warnings.append(AlignSeriesWarning(
            "ambiguous_match",
            f"automatic matching is ambiguous for fixed point(s) {(ambiguous + 1).tolist()} (1-based): "
            f"smallest signature margin {margins.min():.3g}, below {AMBIGUITY_ATOL} (a symmetric layout?); "
            "match by labels or order instead"))
        for warning in warnings:
            logger.warning(warning.message)
    return PointMatch(order, "signatures", warnings)


def _signatures(points: np.ndarray) -> np.ndarray:
    distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2)
    others = np.sort(distances, axis=1)[:, 1:]
    return others / others.mean()


def solve_assignment(cost) -> np.ndarray:
    """Exact minimum-cost assignment of rows to columns (Hungarian method with potentials).

    Parameters
    ----------
    cost : (N, N) array_like
        Finite costs.

    Returns
    -------
    (N,) ndarray of int
        ``columns[n]`` is the column assigned to row ``n``; ``sum cost[n, columns[n]]`` is minimal.
    """
    cost = np.asarray(cost, dtype=float)
    count = cost.shape[0]
    row_potential = np.zeros(count + 1)
    column_potential = np.zeros(count + 1)
    row_of_column = np.zeros(count + 1, dtype=int)  # index 0 is a virtual column; rows are 1-based
    for row in range(1, count + 1):
        row_of_column[0] = row
        _augment(cost, row_potential, column_potential, row_of_column)
    columns = np.empty(count, dtype=int)
    columns[row_of_column[1:] - 1] = np.arange(count)
    return columns


def _augment(cost, row_potential, column_potential, row_of_column) -> None:
    """Add one row to the matching along a shortest augmenting path (Dijkstra on reduced costs)."""
    count = cost.shape[0]
    min_reduced = np.full(count + 1, np.inf)
    previous = np.zeros(count + 1, dtype=int)
    used = np.zeros(count + 1, dtype=bool)
    column = 0
    while row_of_column[column] != 0:
        used[column] = True
        row = row_of_column[column]
        free = ~used
        free[0] = False
        reduced = np.full(count + 1, np.inf)
        reduced[1:] = cost[row - 1] - row_potential[row] - column_potential[1:]
        better = free & (reduced < min_reduced)
        min_reduced[better] = reduced[better]
        previous[better] = column
        candidates = np.where(free, min_reduced, np.inf)
        next_column = int(np.argmin(candidates))
        delta = candidates[next_column]
        row_potential[row_of_column[used]] += delta
        column_potential[used] -= delta
        min_reduced[free] -= delta
        column = next_column
    while column:
        prior = previous[column]
        row_of_column[column] = row_of_column[prior]
        column = prior
