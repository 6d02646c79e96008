"""Mattes mutual information of random samples, its gradient, and the stochastic descent that maximizes it.

The refinement (:mod:`.registration`) draws new random samples of the sampled image at every iteration, as
elastix's default registration does (Klein et al., "Adaptive stochastic gradient descent optimisation for image
registration", IJCV 2009): the noise of one small sample set then averages out over the iterations, where a fixed
sample set (ITK's registration framework samples once per level) leaves a rough surface on which gradient steps
stall. Everything here is vectorized numpy on a few thousand points per iteration.

Frames: points are world LPS (ITK's frame); an image maps its ``(i, j, k)`` indices to LPS with ``index_to_lps``.
A correction ``T`` (rigid or affine) maps points of the sampled image about a centre:
``T(x) = M (x - centre) + centre + t``. Parameters are scaled so that a unit step moves no point of the sampled
region by more than about a millimetre (rotations and matrix entries times the region's radius).

The metric follows Mattes et al. (IEEE TMI 2003), as ITK and elastix compute it: a joint histogram with a
zero-order (box) Parzen window on the sampled image's intensities and a cubic B-spline window on the other's, so
that the metric is differentiable in the other image's values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Histogram bins kept empty at each end of either axis (the cubic window reaches two bins out).
PADDING_BINS = 2


class SampledImage:
    """Voxels ``[k, j, i]`` and the ``(i, j, k)`` -> world LPS matrix of their grid (any affine)."""

    def __init__(self, voxels: np.ndarray, index_to_lps: np.ndarray):
        self.voxels = np.ascontiguousarray(voxels)
        self.index_to_lps = np.asarray(index_to_lps, dtype=float)
        self.lps_to_index = np.linalg.inv(self.index_to_lps)
        self.size_ijk = np.array(self.voxels.shape[::-1])
        self._flat = self.voxels.reshape(-1)
        self._strides = np.array([1, self.size_ijk[0], self.size_ijk[0] * self.size_ijk[1]])
        self._corner_offsets = np.array([dk * self._strides[2] + dj * self._strides[1] + di
                                         for dk in (0, 1) for dj in (0, 1) for di in (0, 1)])  # C order [dk, dj, di]
        self._last_cell = np.maximum(self.size_ijk - 2, 0)  # first corner of the last cell along each axis

    @classmethod
    def of_sitk(cls, sitk, image) -> SampledImage:
        """The voxels (float32) and grid of a ``SimpleITK.Image``."""
        index_to_lps = np.eye(4)
        direction = np.array(image.GetDirection()).reshape(3, 3)
        index_to_lps[:3, :3] = direction * np.array(image.GetSpacing())
        index_to_lps[:3, 3] = image.GetOrigin()
        return cls(sitk.GetArrayFromImage(image).astype(np.float32, copy=False), index_to_lps)

    def _index_of(self, points_lps: np.ndarray) -> np.ndarray:
        return points_lps @ self.lps_to_index[:3, :3].T + self.lps_to_index[:3, 3]

    def points_lps(self, flat_indices: np.ndarray) -> np.ndarray:
        """World LPS points ``(N, 3)`` of voxels given by their flat (C-order ``[k, j, i]``) indices."""
        k, j, i = np.unravel_index(flat_indices, self.voxels.shape)
        return np.stack([i, j, k], axis=1) @ self.index_to_lps[:3, :3].T + self.index_to_lps[:3, 3]

    def linear(self, points_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Trilinear values and their gradients (per mm, LPS) at points, and which points lie inside the grid.

        Returns ``(values, gradients, inside)``: ``values (M,)`` and ``gradients (M, 3)`` for the ``M`` points
        where ``inside (N,)`` is True. The gradient is the derivative of the trilinear interpolant itself.
        """
        index = self._index_of(points_lps)
        within = (index >= 0) & (index <= self.size_ijk - 1)
        inside = within[:, 0] & within[:, 1] & within[:, 2]  # faster than .all(axis=1) on 3 columns
        values, gradient_index = self.interpolate(index if inside.all() else index[inside])
        return values, gradient_index @ self.lps_to_index[:3, :3], inside

    def interpolate(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Trilinear values and their gradients along ``(i, j, k)`` at continuous indices inside the grid ``(N, 3)``."""
        first = np.minimum(index.astype(np.int64), self._last_cell)  # index >= 0: truncation floors
        fi, fj, fk = (index - first).T
        # The 8 corners, one row each (contiguous): [dk, dj, di, n].
        corners = self._flat[self._corner_offsets[:, None] + first @ self._strides].astype(np.float64)
        corners = corners.reshape(2, 2, 2, -1)
        slope_i = corners[:, :, 1] - corners[:, :, 0]  # [dk, dj, n]
        along_i = corners[:, :, 0] + slope_i * fi
        slope_j = along_i[:, 1] - along_i[:, 0]  # [dk, n]
        along_j = along_i[:, 0] + slope_j * fj
        slope_i_j = slope_i[:, 0] + (slope_i[:, 1] - slope_i[:, 0]) * fj  # [dk, n]
        slope_k = along_j[1] - along_j[0]
        values = along_j[0] + slope_k * fk
        gradient_index = np.column_stack([slope_i_j[0] + (slope_i_j[1] - slope_i_j[0]) * fk,
                                          slope_j[0] + (slope_j[1] - slope_j[0]) * fk, slope_k])
        return values, gradient_index

    def nearest_is_nonzero(self, points_lps: np.ndarray) -> np.ndarray:
        """True where the nearest voxel to a point is inside the grid and non-zero (a mask's test)."""
        index = np.rint(self._index_of(points_lps)).astype(np.int64)
        inside = np.all((index >= 0) & (index < self.size_ijk), axis=1)
        result = np.zeros(len(points_lps), dtype=bool)
        i, j, k = index[inside].T
        result[inside] = self.voxels[k, j, i] != 0
        return result


# -- the metric -------------------------------------------------------------------------------------


def cubic_bspline_weights(fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the 4 bins ``floor(x) - 1 .. floor(x) + 2`` of a cubic B-spline at ``x``, and their derivatives.

    ``fraction`` is ``x - floor(x)`` (``(N,)``); returns two ``(N, 4)`` arrays, the derivatives taken along ``x``.
    """
    squared = fraction * fraction
    powers = np.column_stack([np.ones_like(fraction), fraction, squared, squared * fraction])  # 1, t, t^2, t^3
    return powers @ _CUBIC_BSPLINE, powers[:, :3] @ _CUBIC_BSPLINE_SLOPES


#: The cubic B-spline's 4 pieces as polynomial coefficients (rows: 1, t, t^2, t^3; columns: the 4 bins):
#: (1 - t)^3 / 6, (3 t^3 - 6 t^2 + 4) / 6, (-3 t^3 + 3 t^2 + 3 t + 1) / 6, t^3 / 6; and their derivatives' (rows:
#: 1, t, t^2).
_CUBIC_BSPLINE = np.array([[1, 4, 1, 0], [-3, 0, 3, 0], [3, -6, 3, 0], [-1, 3, -3, 1]]) / 6.0
_CUBIC_BSPLINE_SLOPES = _CUBIC_BSPLINE[1:] * np.array([[1.0], [2.0], [3.0]])


@dataclass(frozen=True)
class MattesHistogram:
    """The joint histogram's layout: ``bins`` per axis over each image's intensity range.

    Values outside a range are clipped to it.
    """

    bins: int
    sampled_range: tuple[float, float]
    other_range: tuple[float, float]

    def _positions(self, values: np.ndarray, value_range: tuple[float, float]) -> tuple[np.ndarray, float]:
        low, high = value_range
        width = max(high - low, 1e-12) / (self.bins - 2 * PADDING_BINS - 1)
        return (np.clip(values, low, high) - low) / width + PADDING_BINS, width

    def sampled_bins(self, values: np.ndarray) -> np.ndarray:
        """The (box-window) bin of each of the sampled image's values."""
        return self._positions(values, self.sampled_range)[0].astype(np.int64)

    def mutual_information(self, sampled_bins: np.ndarray, other_values: np.ndarray,
                           with_slopes: bool = False) -> tuple[float, np.ndarray | None]:
        """Mutual information of the samples and, if asked, its derivative along each of the other image's values.

        Returns ``(value, slopes)``: nats (higher is better) and ``d value / d other_values`` ``(N,)``, or None.
        """
        count = len(other_values)
        if count == 0:
            return 0.0, np.zeros(0) if with_slopes else None
        position, width = self._positions(other_values, self.other_range)
        whole = np.floor(position)
        other_bins = whole.astype(np.int64)[:, None] + np.arange(-1, 3)
        weights, slopes = cubic_bspline_weights(position - whole)
        cells = (sampled_bins[:, None] * self.bins + other_bins).reshape(-1)
        joint = np.bincount(cells, weights.reshape(-1), self.bins * self.bins).reshape(self.bins, self.bins) / count
        sampled_marginal, other_marginal = joint.sum(axis=1), joint.sum(axis=0)
        log_joint, log_sampled, log_other = (np.log(np.where(p > 0, p, 1.0))  # 0 for empty bins: p log p -> 0
                                             for p in (joint, sampled_marginal, other_marginal))
        value = float(np.vdot(joint, log_joint) - sampled_marginal @ log_sampled - other_marginal @ log_other)
        if not with_slopes:
            return value, None
        # d MI / d p(a, b) summed against d p / d value: with the sampled marginal fixed, the terms in log p(a) and
        # the sums of d p vanish, leaving log(p(a, b) / p(b)).
        log_conditional = np.where(joint > 0, log_joint - log_other, 0.0)
        return value, np.einsum("nb,nb->n", slopes, log_conditional.reshape(-1)[cells].reshape(count, 4)) / (
            count * width)


# -- the transform models ----------------------------------------------------------------------------


def _euler_matrix(angles: np.ndarray) -> np.ndarray:
    """``R = Rz Ry Rx`` of three angles (radians)."""
    (cx, cy, cz), (sx, sy, sz) = np.cos(angles), np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _euler_axes(angles: np.ndarray) -> np.ndarray:
    """The world axes (rows) that a change of each Euler angle turns the rotated points about.

    ``d(R x) / d angle = w x (R x)``: ``Rz Ry`` e_x for the angle about x (applied first), ``Rz`` e_y, then e_z.
    """
    (_, cy, cz), (_, sy, sz) = np.cos(angles), np.sin(angles)
    return np.array([[cz * cy, sz * cy, -sy], [-sz, cz, 0.0], [0.0, 0.0, 1.0]])


class RigidModel:
    """Rotation (Euler angles, radians, ``R = Rz Ry Rx``) and translation (mm): 6 parameters."""

    name = "rigid"
    parameter_count = 6

    @staticmethod
    def matrix(parameters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _euler_matrix(parameters[:3]), parameters[3:]

    @staticmethod
    def scales(radius_mm: float) -> np.ndarray:
        return np.array([radius_mm] * 3 + [1.0] * 3)

    @staticmethod
    def weighted_derivatives(parameters: np.ndarray, offsets: np.ndarray, gradients: np.ndarray,
                             weights: np.ndarray) -> np.ndarray:
        """``sum_n weights[n] d value_n / d parameters`` ``(6,)``, from the points' offsets ``o`` to the centre and
        the values' gradients ``g`` at the moved points ``R o + centre + t``.

        Along angle ``a``, ``d value / d a = g . (w_a x R o) = w_a . (R o x g)`` (:func:`_euler_axes`); summed with
        the weights, ``sum_n R o_n x (weights g)_n`` comes from the 3 x 3 moment ``S = sum_n (weights g)_n (R o_n)^T``
        as ``(S[2, 1] - S[1, 2], S[0, 2] - S[2, 0], S[1, 0] - S[0, 1])``, without an ``(N, 6)`` Jacobian.
        """
        moment = (gradients * weights[:, None]).T @ offsets @ _euler_matrix(parameters[:3]).T
        turned = np.array([moment[2, 1] - moment[1, 2], moment[0, 2] - moment[2, 0], moment[1, 0] - moment[0, 1]])
        return np.concatenate([_euler_axes(parameters[:3]) @ turned, weights @ gradients])


class AffineModel:
    """Matrix (row-major, 9 entries) and translation (mm): 12 parameters."""

    name = "affine"
    parameter_count = 12

    @staticmethod
    def matrix(parameters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return parameters[:9].reshape(3, 3), parameters[9:]

    @staticmethod
    def scales(radius_mm: float) -> np.ndarray:
        return np.array([radius_mm] * 9 + [1.0] * 3)

    @staticmethod
    def weighted_derivatives(parameters: np.ndarray, offsets: np.ndarray, gradients: np.ndarray,
                             weights: np.ndarray) -> np.ndarray:
        """``sum_n weights[n] d value_n / d parameters`` ``(12,)``: ``d value / d M[r, c] = g[r] o[c]``."""
        return np.concatenate([((gradients * weights[:, None]).T @ offsets).reshape(-1), weights @ gradients])

    @staticmethod
    def parameters_of(matrix: np.ndarray, translation: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(matrix).reshape(-1), translation])


#: Either model (both are used as classes).
TransformModel = type[RigidModel] | type[AffineModel]


# -- the optimizer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DescentSettings:
    """Adaptive stochastic gradient descent: step ``a / (A + t + 1) ** alpha`` with an adaptive time ``t``.

    ``t`` grows by up to 1 when successive gradients point against each other (the search oscillates about an
    optimum) and shrinks by up to 0.8 when they agree (it is still travelling), as in elastix's
    AdaptiveStochasticGradientDescent. ``a`` is set from the typical gradient so that the first step is about
    ``max_step_mm``; no step moves a parameter by more than that (scaled units: mm).

    The result is the mean of the last ``averaged_fraction`` of the iterates (Polyak-Ruppert averaging: the steps'
    jitter about the optimum averages out), or the last iterate when it is 0.
    """

    iterations: int
    max_step_mm: float
    averaged_fraction: float = 0.0

    @property
    def averaged_from(self) -> int:
        """The first iteration whose iterate enters the result's mean (``iterations`` when none does)."""
        return self.iterations - int(round(self.averaged_fraction * self.iterations))
    offset: float = 20.0
    decay: float = 0.602
    sigmoid_width: float = 0.1
    estimation_draws: int = 5


def _time_change(agreement: float, width: float) -> float:
    """Elastix's sigmoid: +1 for opposite gradients (agreement -1), -0.8 for equal ones, 0 for orthogonal."""
    most, least = 1.0, -0.8
    return least + (most - least) / (1.0 - (most / least) * np.exp(agreement / width))


def adaptive_descent(gradient_of: Callable[[np.ndarray], np.ndarray], start: np.ndarray, settings: DescentSettings,
                     after_iteration: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
    """Maximize a function whose noisy gradient ``gradient_of(x)`` is drawn anew at each call.

    ``x`` is in scaled units (a unit moves a point about a millimetre). Returns the final ``x``, or the mean of the
    last iterates (``settings.averaged_fraction``).
    ``after_iteration(n, x)`` is called after each iteration (progress, cancel, watching ``x``).
    """
    x = np.array(start, dtype=float)
    draws = [gradient_of(x) for _ in range(settings.estimation_draws)]
    typical = float(np.mean([np.max(np.abs(draw)) for draw in draws]))
    gain = settings.max_step_mm * (settings.offset + 1) ** settings.decay / max(typical, 1e-12)
    time, previous = 0.0, None
    averaged_from = settings.averaged_from
    total = np.zeros_like(x)
    for iteration in range(settings.iterations):
        gradient = gradient_of(x)
        if previous is not None:
            norms = np.linalg.norm(gradient) * np.linalg.norm(previous)
            agreement = float(np.dot(gradient, previous) / norms) if norms > 0 else 0.0
            time = max(0.0, time + _time_change(agreement, settings.sigmoid_width))
        step = gain / (settings.offset + time + 1) ** settings.decay * gradient
        largest = float(np.max(np.abs(step)))
        x = x + (step if largest <= settings.max_step_mm else step * (settings.max_step_mm / largest))
        previous = gradient
        if iteration >= averaged_from:
            total += x
        if after_iteration is not None:
            after_iteration(iteration, x)
    return x if averaged_from >= settings.iterations else total / (settings.iterations - averaged_from)
