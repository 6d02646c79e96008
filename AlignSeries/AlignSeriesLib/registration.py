"""Intensity-based refinement of a moving-to-fixed transform: Mattes mutual information, stochastic descent.

Starting from any initial transform (a shared frame of reference, a REG, centers, moments, landmarks,
a transform file), :func:`register` crops each image to its overlap with the other, then optimizes a
rigid (and, for ``"affine"``, afterwards an affine) correction of that transform on a three-level
pyramid. The preset is tuned here, once, for every front end:

* the metric samples the image with the larger voxels where it overlaps the other, and interpolates the finer one
  (:func:`_sampling_roles`); samples whose partners leave the other image (or its mask) are dropped, and as many
  more drawn;
* the sampled region is put on cubic voxels (the pyramid shrinks every axis alike: 5 mm slices would otherwise become
  20 mm at the coarsest level); pyramid: shrink factors 4, 2, 1, both images smoothed by 2, 1, 0 voxels;
* Mattes mutual information (32 bins) on 1,536 random voxels drawn anew at every iteration, maximized by adaptive
  stochastic gradient descent (:mod:`.mutual_information`, elastix's scheme), 60, 100 and 200 iterations per level,
  each level's result the mean of its last half of iterates, with scales from physical shifts (a unit step moves
  no point more than about a millimetre), the rotation centred on the sampled region; the random draws have a
  fixed seed, so the same inputs give the same transform run to run;
* optional masks (label maps: non-zero voxels count) on either image restrict the metric;
* the result judged by how much information the images then share (:func:`entropy_correlation`).

Why not ITK's registration framework: it draws its samples once per level, and on a fixed sample set of a few
thousand points the metric is a rough surface on which gradient steps stall (regular-step descent crawled at
0.05 mm per iteration on the benchmark's CT/MR pairs) and line searches take 4-25 times longer; drawing new samples
at every iteration averages that roughness out. SimpleITK still smooths and shrinks the images and measures the
shared information of the result.

Frames: AlignSeries keeps the moving-to-fixed RAS matrix (Slicer's "to parent"); the search optimizes the LPS
transform from the sampled image's points to the other's (fixed-to-moving when the fixed image has the larger
voxels, moving-to-fixed otherwise), as an ITK registration would. The two conversions (:func:`itk_fixed_to_moving_lps`,
:func:`moving_to_fixed_ras_of`) are the only place AlignSeries' and ITK's conventions meet.

The :class:`.registration_report.RegistrationReport` says what happened and when the result must be checked by eye
(still drifting at the end, little overlap, metric not improved, little shared information, a large change, an
implausible affine).

SimpleITK is imported only inside :func:`register` (and the image adapter), when refining.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from .choices import REFINE_MODELS
from .errors import (
    AlignSeriesError,
    GeometryError,
    MissingDependencyError,
    OperationCancelledError,
    ProgressCallback,
)
from .geometry import VolumeGeometry, apply_affine, as_matrix4, lps_to_ras_transform, ras_to_lps_transform
from .mutual_information import (
    AffineModel,
    DescentSettings,
    MattesHistogram,
    RigidModel,
    SampledImage,
    TransformModel,
    adaptive_descent,
)
from .registration_measures import change_at_corners_mm, overlap_fraction, rotation_between_degrees
from .registration_report import SETTLED_VOXELS, SPREAD_VOXELS, LevelReport, RegistrationReport, report_warnings
from .resample import crop_to_overlap

logger = logging.getLogger(__name__)

#: The pip requirement of the refinement (Slicer ships SimpleITK).
SIMPLEITK_REQUIREMENT = "SimpleITK>=2.3"

#: Pyramid: shrink factor per level, coarse to fine (the sampled image shrinks; the other image is only smoothed, on
#: blocks no wider than the smoothing: :func:`_block_averaged`).
SHRINK_FACTORS = (4, 2, 1)
#: Gaussian smoothing (sigma) per level of both images, in voxels of the full-resolution sampled image (on cubic
#: voxels), so it follows the voxel size. None at the finest level: half a voxel there left the demo's refinement
#: 1.8 mm off over the MR's field of view (0.9 mm without; 1.2 mm with an exact, not recursive, Gaussian).
SMOOTHING_VOXELS = (2.0, 1.0, 0.0)
#: Mattes histogram bins.
HISTOGRAM_BINS = 32
#: Random samples of the sampled image drawn anew at every iteration, and iterations per level (coarse to fine).
#: 1,536 samples: 2,048 took 1.2 times as long for the same errors on bench_register's cases.
SAMPLES_PER_ITERATION = 1536
ITERATIONS = (60, 100, 200)
#: Each level's result is the mean of its last half of iterates. Measured on bench_register's cases (6 per class),
#: against 250 iterations per level and the last iterate: median corner error phantom 0.79 -> 0.66 mm, CT rigid
#: 0.33 -> 0.32 mm, CT affine 0.46 -> 0.36 mm, in half the time.
AVERAGED_FRACTION = 0.5
#: The first step moves no point more than this many voxels of the full-resolution sampled image; the steps then
#: shrink as the search settles.
MAX_STEP_VOXELS = 1.0
#: Seed of the random sampling (fixed: results reproducible run to run).
SAMPLING_SEED = 1
#: Samples (a fixed set) of the metric values in the report.
REPORT_SAMPLES = 20_000
#: Stages: (transform model, pyramid levels). The affine stage follows the rigid one on the two finest levels.
RIGID_STAGES = (("rigid", (0, 1, 2)),)
AFFINE_STAGES = (("affine", (1, 2)),)
#: Fewer of an iteration's samples than this share inside the other image (and its mask) stops the search.
MIN_INSIDE_FRACTION = 0.25
#: Fewest voxels along any axis of either image, and of the interpolated image's crop (ITK's recursive Gaussian needs
#: 4); the sampled region needs two of the coarsest level's voxels.
MIN_VOXELS_PER_AXIS = 4
#: The interpolated image is cropped to the sampled region's footprint under the initial transform, plus this margin
#: (mm): room for the search to move.
OVERLAP_MARGIN_MM = 60.0

#: Histogram bins of each image for the entropy correlation coefficient.
ENTROPY_BINS = 32


@dataclass(frozen=True)
class ImageOnGrid:
    """Voxels and where they lie: ``array`` indexed ``[k, j, i]`` on ``geometry`` (world RAS).

    A mask is an image whose non-zero voxels count.
    """

    array: np.ndarray
    geometry: VolumeGeometry


def register(fixed: ImageOnGrid, moving: ImageOnGrid, initial_moving_to_fixed_ras=None, *, model: str = "rigid",
             fixed_mask: ImageOnGrid | None = None, moving_mask: ImageOnGrid | None = None,
             progress: ProgressCallback | None = None) -> RegistrationReport:
    """Refine a moving-to-fixed transform by maximizing the mutual information of the two images.

    Parameters
    ----------
    fixed, moving : ImageOnGrid
        Voxels ``[k, j, i]`` and their world geometry (parent transforms included).
    initial_moving_to_fixed_ras : (4, 4) array_like, optional
        The starting transform, moving world RAS to fixed world RAS; identity by default. It may be
        any affine: the refinement composes a rigid (or affine) correction with it.
    model : {"rigid", "affine"}
        ``"affine"`` runs the rigid stage first, then an affine one on the two finest levels.
    fixed_mask, moving_mask : ImageOnGrid, optional
        Only voxels where the mask is non-zero count in the metric (any grid).
    progress : callable, optional
        ``progress(fraction) -> bool`` at every iteration; True cancels.

    Returns
    -------
    RegistrationReport

    Raises
    ------
    OperationCancelledError
        When ``progress`` returned True (no transform results).
    GeometryError
        For a sheared grid, images that do not overlap under the initial transform, or too few voxels.
    MissingDependencyError
        If SimpleITK is not installed.
    """
    if model not in REFINE_MODELS:
        raise AlignSeriesError(f"unknown refinement model {model!r}; expected one of {', '.join(REFINE_MODELS)}")
    sitk = _simpleitk()
    started = time.perf_counter()
    initial = as_matrix4(np.eye(4) if initial_moving_to_fixed_ras is None else initial_moving_to_fixed_ras,
                         "initial transform")
    domain, other, domain_is_fixed = _sampling_roles(fixed, moving, initial)
    names = _role_names(domain_is_fixed)
    domain_image = _isotropic(sitk, to_sitk_image(sitk, domain.array.astype(np.float32, copy=False), domain.geometry,
                                                  f"{names[0]} image"))
    other_image = to_sitk_image(sitk, other.array.astype(np.float32, copy=False), other.geometry, f"{names[1]} image")
    masks = {role: to_sitk_image(sitk, (np.asarray(mask.array) != 0).astype(np.uint8), mask.geometry, f"{name} mask")
             for role, name, mask in (("domain", names[0], (fixed_mask, moving_mask)[not domain_is_fixed]),
                                      ("other", names[1], (moving_mask, fixed_mask)[not domain_is_fixed]))
             if mask is not None}
    fixed_to_moving_lps = itk_fixed_to_moving_lps(initial)
    initial_lps = fixed_to_moving_lps if domain_is_fixed else np.linalg.inv(fixed_to_moving_lps)
    search = _Search(sitk, domain_image, other_image, masks, initial_lps, progress,
                     RIGID_STAGES + (AFFINE_STAGES if model == "affine" else ()))
    domain_to_other_lps = search.run()
    fixed_to_moving_lps = domain_to_other_lps if domain_is_fixed else np.linalg.inv(domain_to_other_lps)
    refined = moving_to_fixed_ras_of(fixed_to_moving_lps)
    finest = search.level(len(SHRINK_FACTORS) - 1)
    metrics = [finest.metric_through(matrix) for matrix in (initial_lps, domain_to_other_lps)]
    report = RegistrationReport(
        model, initial, refined, change_at_corners_mm(fixed.geometry, initial, refined),
        rotation_between_degrees(initial, refined), search.levels, metrics[0], metrics[1],
        sum(level.iterations for level in search.levels), search.stop_condition, search.converged,
        overlap_fraction(fixed.geometry, moving.geometry, refined), seconds=time.perf_counter() - started)
    overlap = crop_to_overlap(fixed.geometry, moving.geometry, refined) if report.overlap_fraction > 0 else (
        fixed.geometry)
    report.centre_change_mm = float(np.linalg.norm(np.diff([apply_affine(np.linalg.inv(matrix), overlap.center_ras)
                                                            for matrix in (initial, refined)], axis=0)))
    report.entropy_correlation_initial, report.entropy_correlation = (
        entropy_correlation(sitk, domain_image, other_image, matrix, masks)
        for matrix in (initial_lps, domain_to_other_lps))
    report.warnings = report_warnings(report)
    for warning in report.warnings:
        logger.warning("%s", warning.message)
    return report


# -- frames ---------------------------------------------------------------------------------------


def itk_fixed_to_moving_lps(moving_to_fixed_ras) -> np.ndarray:
    """The ITK transform that resamples the moving image: fixed LPS points to moving LPS points.

    Slicer's "to parent" moving-to-fixed RAS matrix, inverted (ITK maps output to input) and expressed in LPS.
    """
    return ras_to_lps_transform(np.linalg.inv(as_matrix4(moving_to_fixed_ras, "moving_to_fixed_ras")))


def moving_to_fixed_ras_of(fixed_to_moving_lps) -> np.ndarray:
    """Inverse of :func:`itk_fixed_to_moving_lps`."""
    return np.linalg.inv(lps_to_ras_transform(as_matrix4(fixed_to_moving_lps, "fixed_to_moving_lps")))


def to_sitk_image(sitk, array_kji: np.ndarray, geometry: VolumeGeometry, name: str):
    """A ``SimpleITK.Image`` of an array ``[k, j, i]`` on a geometry (origin, spacing, direction in LPS).

    Raises
    ------
    GeometryError
        For a sheared grid (e.g. gantry tilt), which an ITK image cannot hold, or an array that does not
        match its geometry.
    """
    if not geometry.is_orthogonal:
        raise GeometryError(f"{name} has a sheared grid ({geometry.summary()}), which an ITK image cannot hold: "
                            "resample it onto an orthogonal grid first")
    if np.shape(array_kji) != geometry.shape:
        raise GeometryError(f"{name}: array shape {np.shape(array_kji)} does not match its geometry's (k, j, i) "
                            f"{geometry.shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_kji))
    image.SetOrigin(geometry.origin_lps.tolist())
    image.SetSpacing(geometry.spacing.tolist())
    image.SetDirection((geometry.ijk_to_lps[:3, :3] / geometry.spacing).reshape(-1).tolist())
    return image


def _set_matrix(transform, matrix4: np.ndarray) -> None:
    transform.SetMatrix(np.asarray(matrix4)[:3, :3].reshape(-1).tolist())
    transform.SetTranslation(np.asarray(matrix4)[:3, 3].tolist())


# -- the registration -----------------------------------------------------------------------------


def _simpleitk():
    try:
        import SimpleITK as sitk  # noqa: N813 - the name SimpleITK documents
    except ImportError:
        raise MissingDependencyError(
            f"intensity refinement needs SimpleITK, which is not installed: pip install '{SIMPLEITK_REQUIREMENT}'",
            package=SIMPLEITK_REQUIREMENT) from None
    return sitk


def _sampling_roles(fixed: ImageOnGrid, moving: ImageOnGrid,
                    initial_moving_to_fixed_ras) -> tuple[ImageOnGrid, ImageOnGrid, bool]:
    """Which image the metric samples, cropped to where it overlaps the other, and the other one, cropped with room.

    The metric samples the image with the larger voxels and interpolates the one with the finer voxels: interpolation
    blurs an image by an amount that varies with the sub-voxel position, and the coarser the interpolated image, the
    more that pulls the optimum (measured on the phantom, CT 3.5 x 3.5 x 5 mm and MR 3 x 3 x 4 mm: 1.4 mm off when the
    CT was interpolated, 0.7 mm when the MR was). The sampled image is cropped to the other's footprint under the
    initial transform; the other is cropped to the sampled region's footprint grown by :data:`OVERLAP_MARGIN_MM`, room
    for the search to move. Returns ``(domain, other, domain_is_fixed)``.
    """
    for image, name in ((fixed, "fixed"), (moving, "moving")):
        if min(image.geometry.dimensions) < MIN_VOXELS_PER_AXIS:
            raise GeometryError(f"cannot refine: the {name} image is {_size(image)} voxels, too thin to refine in 3-D "
                                f"(at least {MIN_VOXELS_PER_AXIS} along each axis): a single slice or a localizer "
                                "cannot be refined; use landmarks")
    inverse = np.linalg.inv(initial_moving_to_fixed_ras)
    domain_is_fixed = bool(np.prod(fixed.geometry.spacing) >= np.prod(moving.geometry.spacing))
    if domain_is_fixed:
        domain = _cropped_to_footprint(fixed, moving.geometry, initial_moving_to_fixed_ras, "fixed", 0.0)
        other = _cropped_to_footprint(moving, domain.geometry, inverse, "moving", OVERLAP_MARGIN_MM)
    else:
        domain = _cropped_to_footprint(moving, fixed.geometry, inverse, "moving", 0.0)
        other = _cropped_to_footprint(fixed, domain.geometry, initial_moving_to_fixed_ras, "fixed", OVERLAP_MARGIN_MM)
    names = _role_names(domain_is_fixed)
    for region, name, least in ((domain, names[0], 2 * SHRINK_FACTORS[0]), (other, names[1], MIN_VOXELS_PER_AXIS)):
        if min(region.geometry.dimensions) < least:
            raise GeometryError(f"cannot refine: where the images overlap, the {name} image is {_size(region)} "
                                f"voxels, too thin to refine in 3-D (at least {least} along each axis): start from a "
                                "transform under which they overlap more, or use landmarks")
    return domain, other, domain_is_fixed


def _size(image: ImageOnGrid) -> str:
    return " x ".join(map(str, image.geometry.dimensions))


def _role_names(domain_is_fixed: bool) -> tuple[str, str]:
    """The names of the sampled and the interpolated image, for messages."""
    return ("fixed", "moving") if domain_is_fixed else ("moving", "fixed")


def _cropped_to_footprint(image: ImageOnGrid, other_geometry: VolumeGeometry, other_to_image_ras, name: str,
                          margin_mm: float) -> ImageOnGrid:
    """``image`` cropped to the other image's footprint under a transform, grown by a margin."""
    margin = np.ceil(margin_mm / other_geometry.spacing).astype(int)
    padded = VolumeGeometry(tuple(np.array(other_geometry.dimensions) + 2 * margin),
                            other_geometry.ijk_to_ras @ _translation(-margin))
    try:
        region = crop_to_overlap(image.geometry, padded, other_to_image_ras)
    except GeometryError as error:
        raise GeometryError(f"cannot refine: the images do not overlap under the initial transform ({error}); "
                            "start from a pre-alignment (centers, moments) or landmarks") from None
    first = np.rint(apply_affine(image.geometry.ras_to_ijk, region.origin_ras)).astype(int)
    i, j, k = first
    last = first + np.array(region.dimensions)
    return ImageOnGrid(np.asarray(image.array)[k:last[2], j:last[1], i:last[0]], region)


def _translation(offset) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def _isotropic(sitk, image):
    """The image on a grid of cubic voxels (the geometric mean of its spacings), same directions and extent.

    The pyramid shrinks every axis alike: on 0.9 x 0.9 x 5 mm voxels its coarsest level would be 3.6 x 3.6 x 20 mm.
    """
    spacing = np.array(image.GetSpacing())
    if spacing.max() / spacing.min() < 1.5:
        return image
    cube = float(np.prod(spacing) ** (1.0 / 3.0))
    size = np.maximum(np.round((np.array(image.GetSize()) - 1) * spacing / cube).astype(int) + 1, 1)
    return sitk.Resample(image, [int(n) for n in size], sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         [cube] * 3, image.GetDirection(), 0.0, sitk.sitkFloat32)


class _Level:
    """One pyramid level: the sampled image smoothed and shrunk, the other image smoothed, and the metric on them.

    Points are world LPS. ``initial_lps`` maps the sampled image's points to the other's; the correction being
    optimized acts before it, about ``centre_lps``.
    """

    def __init__(self, sitk, domain_image, other_image, masks: dict, level: int, initial_lps: np.ndarray,
                 centre_lps: np.ndarray):
        sigma_mm = SMOOTHING_VOXELS[level] * float(min(domain_image.GetSpacing()))
        self.shrink_factor, self.smoothing_mm = SHRINK_FACTORS[level], sigma_mm

        def smoothed(image):
            return sitk.SmoothingRecursiveGaussian(image, sigma_mm) if sigma_mm > 0 else image

        sampled = smoothed(domain_image)
        if self.shrink_factor > 1:
            sampled = sitk.Shrink(sampled, [self.shrink_factor] * 3)
        self.sampled = SampledImage.of_sitk(sitk, sampled)
        self.other = SampledImage.of_sitk(sitk, smoothed(_block_averaged(sitk, other_image, sigma_mm)))
        self.other_mask = SampledImage.of_sitk(sitk, masks["other"]) if "other" in masks else None
        voxels = self.sampled.voxels.reshape(-1)
        #: Flat indices of the voxels the samples are drawn from (inside the mask), or None for every voxel.
        self.candidates: np.ndarray | None = None
        if "domain" in masks:
            on_grid = sitk.Resample(masks["domain"], sampled, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            self.candidates = np.flatnonzero(sitk.GetArrayViewFromImage(on_grid))
            voxels = voxels[self.candidates]
        self.candidate_count = voxels.size
        if self.candidate_count == 0:
            raise GeometryError("cannot refine: the mask of the sampled image has no voxel inside the overlap")
        self.histogram = MattesHistogram(HISTOGRAM_BINS, _value_range(voxels), _value_range(self.other.voxels))
        self.initial, self.centre = initial_lps, centre_lps
        self.kept_fraction = 1.0

    @property
    def samples_to_draw(self) -> int:
        """Samples to draw for :data:`SAMPLES_PER_ITERATION` of them to count, given the share the last draw kept
        (a mask on the other image drops those whose partners fall outside it)."""
        return int(np.ceil(SAMPLES_PER_ITERATION / self.kept_fraction))

    @property
    def samples_fraction(self) -> float:
        return min(1.0, SAMPLES_PER_ITERATION / self.candidate_count)

    def mutual_information(self, model: TransformModel, parameters: np.ndarray, samples: tuple[np.ndarray, np.ndarray],
                           with_gradient: bool) -> tuple[float, np.ndarray | None]:
        """Mattes MI of ``samples`` (points, values: :meth:`draw`) through the correction, and its gradient if asked."""
        points, sampled_values = samples
        offsets = points - self.centre
        matrix, translation = model.matrix(parameters)
        initial_matrix = self.initial[:3, :3]
        partners = offsets @ (initial_matrix @ matrix).T + (initial_matrix @ (self.centre + translation)
                                                             + self.initial[:3, 3])
        if self.other_mask is None:
            values, gradients, kept = self.other.linear(partners)
        else:
            kept = self.other_mask.nearest_is_nonzero(partners)
            values, gradients, inside = self.other.linear(partners[kept])
            kept[kept] = inside
        kept_count = int(np.count_nonzero(kept))
        if kept_count < MIN_INSIDE_FRACTION * len(points):
            raise AlignSeriesError(
                f"the intensity refinement failed: only {kept_count} of {len(points)} samples fell inside the other "
                "image (and its mask): the search moved the images apart; check that they and their masks overlap "
                "under the initial transform and show the same anatomy, or start closer (landmarks)")
        self.kept_fraction = kept_count / len(points)
        if kept_count < len(points):
            offsets, sampled_values = offsets[kept], sampled_values[kept]
        bins = self.histogram.sampled_bins(sampled_values)
        value, slopes = self.histogram.mutual_information(bins, values, with_gradient)
        if slopes is None:
            return value, None
        return value, model.weighted_derivatives(parameters, offsets, gradients @ initial_matrix, slopes)

    def draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Random voxels of the sampled image (inside its mask): their points (LPS) and values."""
        drawn = rng.integers(0, self.candidate_count, count)
        flat_indices = drawn if self.candidates is None else self.candidates[drawn]
        return self.sampled.points_lps(flat_indices), self.sampled.voxels.reshape(-1)[flat_indices]

    def metric_of(self, model: TransformModel, parameters: np.ndarray) -> float:
        """Mattes MI, negated as ITK reports it (lower is better), through a correction, on a fixed sample set."""
        samples = self.draw(np.random.default_rng(SAMPLING_SEED), min(REPORT_SAMPLES, self.candidate_count))
        return -self.mutual_information(model, parameters, samples, False)[0]

    def metric_through(self, domain_to_other_lps: np.ndarray) -> float:
        """:meth:`metric_of` through a whole transform from the sampled image's points to the other's (LPS)."""
        correction = np.linalg.inv(self.initial) @ domain_to_other_lps
        matrix = correction[:3, :3]
        return self.metric_of(AffineModel, AffineModel.parameters_of(matrix, correction[:3, 3] + matrix @ self.centre
                                                                      - self.centre))


def _block_averaged(sitk, image, sigma_mm: float):
    """The image averaged over blocks of whole voxels no wider than ``sigma_mm`` along each axis (itself if none).

    Smoothing the finer image (a 0.9 x 0.9 x 5 mm CT slab) by sigma costs as much as 50 iterations at each coarse
    level; on blocks no wider than sigma it costs a few, and the box adds less than 5 % to the Gaussian's width
    (a box of width ``w`` is a Gaussian of ``w / sqrt(12)``).
    """
    factors = np.maximum(np.floor(sigma_mm / np.array(image.GetSpacing())), 1).astype(int)
    return sitk.BinShrink(image, factors.tolist()) if factors.max() > 1 else image


def _value_range(values: np.ndarray) -> tuple[float, float]:
    return float(values.min()), float(values.max())


class _Search:
    """The stages of one refinement, each over its pyramid levels, with progress, cancel and what to report."""

    def __init__(self, sitk, domain_image, other_image, masks: dict, initial_lps: np.ndarray,
                 progress: ProgressCallback | None, stages: tuple):
        self.sitk, self.domain_image, self.other_image, self.masks = sitk, domain_image, other_image, masks
        self.initial_lps, self.progress, self.stages = initial_lps, progress, stages
        size = np.array(domain_image.GetSize())
        self.centre = np.array(domain_image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist()))
        self.corners = np.array([domain_image.TransformIndexToPhysicalPoint([int(v) for v in corner])
                                 for corner in np.array(list(np.ndindex(2, 2, 2))) * (size - 1)])
        self.radius = float(np.max(np.linalg.norm(self.corners - self.centre, axis=1)))
        self.voxel_mm = float(min(domain_image.GetSpacing()))
        self.rng = np.random.default_rng(SAMPLING_SEED)
        self.levels: list[LevelReport] = []
        self._built: dict[int, _Level] = {}
        self.drift_mm, self.spread_mm, self.stop_condition = 0.0, 0.0, ""

    @property
    def converged(self) -> bool:
        return self.drift_mm <= SETTLED_VOXELS * self.voxel_mm and self.spread_mm <= SPREAD_VOXELS * self.voxel_mm

    def level(self, index: int) -> _Level:
        if index not in self._built:
            self._built[index] = _Level(self.sitk, self.domain_image, self.other_image, self.masks, index,
                                        self.initial_lps, self.centre)
        return self._built[index]

    def run(self) -> np.ndarray:
        """Optimize every stage; returns the sampled image's points -> the other's (LPS)."""
        model: TransformModel = RigidModel
        parameters = np.zeros(RigidModel.parameter_count)
        total = sum(ITERATIONS[index] for _, levels in self.stages for index in levels)
        done = 0
        for stage, levels in self.stages:
            if stage == "affine" and model is RigidModel:
                model, parameters = AffineModel, AffineModel.parameters_of(*RigidModel.matrix(parameters))
            for index in levels:
                parameters = self._optimize_level(model, parameters, index, done / total,
                                                  ITERATIONS[index] / total)
                done += ITERATIONS[index]
        return self.initial_lps @ _correction_matrix(model, parameters, self.centre)

    def _optimize_level(self, model: TransformModel, parameters: np.ndarray, index: int, progress_start: float,
                        progress_share: float) -> np.ndarray:
        level = self.level(index)
        scales = model.scales(self.radius)
        start = level.metric_of(model, parameters)
        iterations = ITERATIONS[index]
        settings = DescentSettings(iterations, MAX_STEP_VOXELS * self.voxel_mm, AVERAGED_FRACTION)
        averaged: list[np.ndarray] = []  # the iterates the descent averages, for the settling measures

        def gradient_of(scaled: np.ndarray) -> np.ndarray:
            samples = level.draw(self.rng, level.samples_to_draw)
            return level.mutual_information(model, scaled / scales, samples, True)[1] / scales

        def after_iteration(iteration: int, scaled: np.ndarray) -> None:
            if iteration >= settings.averaged_from:
                averaged.append(scaled / scales)
            if self.progress is not None and self.progress(progress_start + progress_share * (iteration + 1)
                                                           / iterations):
                raise OperationCancelledError("intensity refinement cancelled: no transform was made")

        parameters = adaptive_descent(gradient_of, parameters * scales, settings, after_iteration) / scales
        self.levels.append(LevelReport(model.name, index, level.shrink_factor, level.smoothing_mm, iterations, start,
                                       level.metric_of(model, parameters), level.samples_fraction))
        self.drift_mm, self.spread_mm = self._settling(model, averaged)
        self.stop_condition = (f"{iterations} iterations of adaptive stochastic gradient descent; over the last "
                               f"{len(averaged)}, at the sampled region's corners, the iterates drifted "
                               f"{self.drift_mm:.2f} mm (mean of the second half from the first's) and spread "
                               f"{self.spread_mm:.2f} mm (root mean square about their mean)")
        return parameters

    def _settling(self, model: TransformModel, averaged: list[np.ndarray]) -> tuple[float, float]:
        """How far the averaged iterates still drift (the second half's mean corners from the first's) and how widely
        they spread about their mean (root mean square), at the sampled region's worst corner, mm."""
        placed = np.array([apply_affine(_correction_matrix(model, x, self.centre), self.corners) for x in averaged])
        half = len(placed) // 2
        drift = np.linalg.norm(placed[half:].mean(axis=0) - placed[:half].mean(axis=0), axis=1)
        spread = np.sqrt(np.sum((placed - placed.mean(axis=0)) ** 2, axis=2).mean(axis=0))
        return float(drift.max()), float(spread.max())


def _correction_matrix(model: TransformModel, parameters: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4x4 of ``x -> M (x - centre) + centre + t``."""
    matrix, translation = model.matrix(parameters)
    result = np.eye(4)
    result[:3, :3] = matrix
    result[:3, 3] = centre + translation - matrix @ centre
    return result


def entropy_correlation(sitk, domain_image, other_image, domain_to_other_lps: np.ndarray, masks: dict) -> float:
    """The entropy correlation coefficient of two images where they overlap, through a transform (0..1).

    ``2 I(A;B) / (H(A) + H(B))`` from a joint histogram of :data:`ENTROPY_BINS` bins per image (each image's
    0.5-99.5 percentile range) over every voxel of ``domain_image`` whose partner lies inside ``other_image`` (and
    inside the masks). Unlike the optimizer's Mattes value it is normalized, so one limit serves every pair.
    """
    transform = sitk.AffineTransform(3)
    _set_matrix(transform, domain_to_other_lps)
    partner = sitk.Resample(other_image, domain_image, transform, sitk.sitkLinear, float("nan"), sitk.sitkFloat32)
    inside = np.isfinite(sitk.GetArrayViewFromImage(partner))
    for role, mask_transform in (("domain", sitk.Transform()), ("other", transform)):
        if role in masks:
            inside &= sitk.GetArrayFromImage(sitk.Resample(masks[role], domain_image, mask_transform,
                                                           sitk.sitkNearestNeighbor, 0)) != 0  # a copy: a view
            # would outlive the temporary image it reads
    values = [sitk.GetArrayViewFromImage(image)[inside] for image in (domain_image, partner)]
    if min(len(v) for v in values) == 0:
        return 0.0
    first, second = (_percentile_bins(v) for v in values)
    joint = np.bincount(first * ENTROPY_BINS + second, minlength=ENTROPY_BINS**2).reshape(ENTROPY_BINS, ENTROPY_BINS)
    joint = joint / joint.sum()
    marginal_entropies = _entropy(joint.sum(axis=1)) + _entropy(joint.sum(axis=0))
    if marginal_entropies == 0:
        return 0.0
    return float(2 * (marginal_entropies - _entropy(joint)) / marginal_entropies)


def _percentile_bins(values: np.ndarray) -> np.ndarray:
    """Each value's bin of :data:`ENTROPY_BINS` equal bins over the values' 0.5-99.5 percentile range (clipped)."""
    low, high = np.percentile(values, [0.5, 99.5])
    width = (high - low if high > low else 1.0) / ENTROPY_BINS
    return np.clip(((values - low) / width).astype(np.int64), 0, ENTROPY_BINS - 1)


def _entropy(probabilities: np.ndarray) -> float:
    p = probabilities[probabilities > 0]
    return float(-np.sum(p * np.log(p)))
