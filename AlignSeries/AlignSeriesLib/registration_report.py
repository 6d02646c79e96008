"""The report of an intensity refinement: what the search did, and the plain statements of when to look.

:func:`.registration.register` fills a :class:`RegistrationReport`; :func:`report_warnings` judges it against the
limits below. Mutual information measures how well intensities predict each other, not distances: it is
reported as the optimizer's value, never as an accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import AlignSeriesWarning

#: Convergence, judged on the iterates the finest level averages, at the sampled region's corners in its voxels: the
#: means of their two halves lie no more than SETTLED_VOXELS apart (a drift; the steps' jitter averages out), and
#: they spread about their mean by no more than SPREAD_VOXELS (root mean square; a wider spread means a metric too flat
#: to place its optimum: 0.1-0.4 voxel on bench_register's cases, 1.4 voxels on a CT of smooth waves that the search
#: left 11 mm off without another warning).
SETTLED_VOXELS = 0.5
SPREAD_VOXELS = 0.75
#: Warning limits: overlap (share of the smaller volume inside the other), change from the initial transform (the
#: overlap's centre, mm, and the turn, degrees: corrections of starts within 20 mm and 15 degrees moved the centre
#: 7-20 mm on bench_register's cases), affine scales (singular values).
MIN_OVERLAP_FRACTION = 0.25
MAX_CHANGE_MM = 30.0
MAX_CHANGE_DEGREES = 20.0
AFFINE_SCALE_RANGE = (0.8, 1.25)
#: Below this entropy correlation coefficient at the result, the images share too little information for mutual
#: information to be trusted. Measured on bench_register's pairs: 0.35 (CT and its MR-like copy) and 0.56 (phantom) at
#: the truth; 0.10 for a T1 against a field-map phase image, 0.18-0.22 for CT-slab pairs left 16-20 mm off. Real
#: CT/MR pairs can share less than this when aligned: the warning asks for a look, it does not call the result wrong.
MIN_ENTROPY_CORRELATION = 0.25
#: The final metric must be lower than the initial one by at least this fraction of its magnitude.
METRIC_IMPROVEMENT_RTOL = 1e-3


@dataclass(frozen=True)
class LevelReport:
    """One pyramid level of one stage, as the optimizer reported it (Mattes MI: lower is better)."""

    stage: str
    level: int
    shrink_factor: int
    smoothing_mm: float
    iterations: int
    metric_start: float
    metric_end: float
    samples_fraction: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RegistrationReport:
    """What an intensity refinement did, and whether its result needs a look.

    Attributes
    ----------
    model : {"rigid", "affine"}
    initial_moving_to_fixed_ras, moving_to_fixed_ras : (4, 4) ndarray
        The starting transform and the refined one (world RAS, Slicer's "to parent").
    change_mm : (8,) ndarray
        How far the refinement moved the fixed volume's 8 corners' partners in the moving image, mm.
    change_degrees : float
        Rotation between the two transforms.
    centre_change_mm : float
        How far the refinement moved the partner, in the moving image, of the centre of the fixed volume's overlap
        with it: with ``change_degrees``, what the ``large_change`` warning weighs (corners far from the centre
        move by the turn as well: a correct 15 degree correction moves them 40 mm at a radius of 150 mm).
    levels : list of LevelReport
    metric_initial, metric_final : float
        Mattes MI at full resolution (same samples) at the start and at the end: lower is better; a
        similarity value, not an accuracy.
    iterations : int
        Optimizer iterations, all stages and levels.
    stop_condition : str
        The optimizer's own words at the last level.
    converged : bool
        False when the search had not settled: the finest level's averaged iterates still drifted (the means of
        their two halves more than half a voxel apart at the sampled region's corners) or spread widely (more than
        0.75 voxel about their mean: the metric is too flat there to place its optimum).
    overlap_fraction : float
        Share of the smaller volume that lies inside the other under the refined transform.
    entropy_correlation_initial, entropy_correlation : float
        How much information the images share where they overlap, at the start and at the end: the entropy
        correlation coefficient 2 I(A;B) / (H(A) + H(B)), 0 for independent images, 1 when one predicts the other
        (:func:`entropy_correlation`). Low values mean the metric had little to go on; not an accuracy either.
    landmark_check : dict or None
        Filled when landmarks are given as a check (:func:`.registration_measures.landmark_check`).
    warnings : list of AlignSeriesWarning
    seconds : float
    """

    model: str
    initial_moving_to_fixed_ras: np.ndarray
    moving_to_fixed_ras: np.ndarray
    change_mm: np.ndarray
    change_degrees: float
    levels: list[LevelReport]
    metric_initial: float
    metric_final: float
    iterations: int
    stop_condition: str
    converged: bool
    overlap_fraction: float
    centre_change_mm: float = 0.0
    entropy_correlation_initial: float = 0.0
    entropy_correlation: float = 0.0
    warnings: list[AlignSeriesWarning] = field(default_factory=list)
    landmark_check: dict | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """The JSON fields (``refinement`` of ``alignseries transform --json``)."""
        return {"model": self.model, "metric": "Mattes mutual information (lower is better; not an accuracy)",
                "initial_moving_to_fixed_ras": self.initial_moving_to_fixed_ras,
                "moving_to_fixed_ras": self.moving_to_fixed_ras,
                "change_mm_at_fixed_corners": self.change_mm, "max_change_mm": float(np.max(self.change_mm)),
                "change_degrees": self.change_degrees, "centre_change_mm": self.centre_change_mm,
                "levels": [level.to_dict() for level in self.levels],
                "metric_initial": self.metric_initial, "metric_final": self.metric_final,
                "iterations": self.iterations, "stop_condition": self.stop_condition, "converged": self.converged,
                "overlap_fraction": self.overlap_fraction,
                "entropy_correlation_initial": self.entropy_correlation_initial,
                "entropy_correlation": self.entropy_correlation, "landmark_check": self.landmark_check,
                "warnings": [warning.to_dict() for warning in self.warnings], "seconds": self.seconds}

    def text(self) -> str:
        """The report for people: check by eye first, then what moved and how the optimizer ended."""
        verdict = ("CHECK BY EYE: " + "; ".join(w.code for w in self.warnings)) if self.warnings else (
            "no warning; still check the fused preview by eye")
        lines = [f"intensity refinement ({self.model}, Mattes mutual information): {verdict}",
                 f"  change from the initial transform: up to {np.max(self.change_mm):.2f} mm at the fixed volume's "
                 f"corners, {self.change_degrees:.2f} degrees",
                 f"  overlap: {100 * self.overlap_fraction:.0f} % of the smaller volume",
                 f"  shared information (entropy correlation coefficient, 0..1): "
                 f"{self.entropy_correlation_initial:.3f} -> {self.entropy_correlation:.3f}",
                 f"  optimizer: {self.iterations} iterations, {'converged' if self.converged else 'NOT converged'}"
                 f" ({self.stop_condition}), {self.seconds:.1f} s",
                 f"  metric (lower is better, not an accuracy): {self.metric_initial:.4f} -> {self.metric_final:.4f}"]
        lines += [f"    {level.stage} level {level.level} (shrink {level.shrink_factor}, smoothing "
                  f"{level.smoothing_mm:g} mm): {level.metric_start:.4f} -> {level.metric_end:.4f}, "
                  f"{level.iterations} iterations" for level in self.levels]
        if self.landmark_check:
            check = self.landmark_check
            lines.append(f"  landmark check ({check['count']} pairs): TRE mean {check['mean_mm_after']:.2f} mm, "
                         f"max {check['max_mm_after']:.2f} mm (before refinement {check['mean_mm_before']:.2f} / "
                         f"{check['max_mm_before']:.2f} mm)")
        lines += [f"  warning: {warning.message}" for warning in self.warnings]
        return "\n".join(lines)


# -- warnings -------------------------------------------------------------------------------------


def report_warnings(report: RegistrationReport) -> list[AlignSeriesWarning]:
    """The plain statements of when a refinement's result must be checked by eye."""
    warnings = []
    if not report.converged:
        warnings.append(AlignSeriesWarning("not_converged", (
            f"the search had not settled when it stopped ({report.stop_condition}; limits {SETTLED_VOXELS:g} and "
            f"{SPREAD_VOXELS:g} of the sampled image's voxels): the result may lie short of the optimum, or the metric "
            "is too flat there to place it")))
    if report.overlap_fraction < MIN_OVERLAP_FRACTION:
        warnings.append(AlignSeriesWarning("low_overlap", (
            f"only {100 * report.overlap_fraction:.0f} % of the smaller volume lies inside the other (limit "
            f"{100 * MIN_OVERLAP_FRACTION:.0f} %): mutual information over a small overlap is unreliable")))
    if not report.metric_final < report.metric_initial - METRIC_IMPROVEMENT_RTOL * abs(report.metric_initial):
        warnings.append(AlignSeriesWarning("metric_not_improved", (
            f"the metric did not improve ({report.metric_initial:.4f} -> {report.metric_final:.4f}, lower is "
            "better): the refinement found nothing better than its start")))
    if report.entropy_correlation < MIN_ENTROPY_CORRELATION:
        warnings.append(AlignSeriesWarning("weak_similarity", (
            f"the images share little information where they overlap (entropy correlation coefficient "
            f"{report.entropy_correlation:.2f}, limit {MIN_ENTROPY_CORRELATION:g}): mutual information had little to "
            "hold on to, so its optimum may lie far from the anatomy's")))
    if report.centre_change_mm > MAX_CHANGE_MM or report.change_degrees > MAX_CHANGE_DEGREES:
        warnings.append(AlignSeriesWarning("large_change", (
            f"the refinement moved the overlap's centre by {report.centre_change_mm:.1f} mm and turned it by "
            f"{report.change_degrees:.1f} degrees (limits {MAX_CHANGE_MM:g} mm, {MAX_CHANGE_DEGREES:g} degrees) "
            "from its start: it may have found another structure")))
    if report.model == "affine":
        warnings += _affine_warnings(report.moving_to_fixed_ras, report.initial_moving_to_fixed_ras)
    return warnings


def _affine_warnings(moving_to_fixed_ras, initial_moving_to_fixed_ras) -> list[AlignSeriesWarning]:
    relative = np.asarray(moving_to_fixed_ras)[:3, :3] @ np.linalg.inv(np.asarray(initial_moving_to_fixed_ras)[:3, :3])
    warnings = []
    if np.linalg.det(relative) < 0:
        warnings.append(AlignSeriesWarning("reflection", (
            "the affine refinement contains a reflection (determinant < 0, expected > 0): a mirror image, "
            "not an anatomical fit")))
    scales = np.linalg.svd(relative, compute_uv=False)
    low, high = AFFINE_SCALE_RANGE
    if scales.min() < low or scales.max() > high:
        warnings.append(AlignSeriesWarning("affine_scale", (
            f"the affine refinement scales by {np.round(scales, 3).tolist()} (expected within {low:g}..{high:g}): "
            "implausible for two images of one patient")))
    return warnings
