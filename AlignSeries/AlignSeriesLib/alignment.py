"""Transforms from geometry alone: shared frames of reference, REG objects, centers, moments.

Every transform maps moving RAS points onto fixed RAS points (``moving_to_fixed_ras``, Slicer's
"to parent" matrix of the moving volume). :class:`AlignmentResult` also carries the voxel-to-voxel
matrix ``moving_ijk_to_fixed_ijk`` from :func:`geometry.moving_ijk_to_fixed_ijk`.

* Same FrameOfReferenceUID: the scanner placed both series in one patient space — identity.
* Different frames: the matrix of a DICOM Spatial Registration (REG) that relates them, or an
  explicit pre-alignment by :func:`centers_transform` or :func:`moments_transform` (translations).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .choices import GEOMETRY_MODES
from .dicom.reg import SpatialRegistration, read_registration
from .errors import AlignSeriesWarning, FrameOfReferenceError, GeometryError
from .geometry import VolumeGeometry, moving_ijk_to_fixed_ijk

logger = logging.getLogger(__name__)


#: Percentile of the voxel values taken as the background level in :func:`moments_transform`.
BACKGROUND_PERCENTILE = 5.0

#: Percentile taken as the foreground level in :func:`moments_transform`.
FOREGROUND_PERCENTILE = 99.0

#: Voxels weigh in :func:`moments_transform` only above ``background + fraction * (foreground - background)``.
BACKGROUND_FRACTION = 0.1


@dataclass(frozen=True, eq=False)
class AlignmentResult:
    """A geometry-based transform between two volumes.

    Attributes
    ----------
    moving_to_fixed_ras : (4, 4) ndarray
    moving_ijk_to_fixed_ijk : (4, 4) ndarray
        Moving voxel index ``(i, j, k, 1)`` to the fixed voxel index of the same (transformed) point.
    mode : str
        "frameOfReference", "centers" or "moments".
    description : str
        How the transform was obtained, for people.
    """

    moving_to_fixed_ras: np.ndarray
    moving_ijk_to_fixed_ijk: np.ndarray
    mode: str
    description: str = ""
    warnings: list = field(default_factory=list)

    @property
    def fixed_ijk_to_moving_ijk(self) -> np.ndarray:
        """The voxel-to-voxel matrix the other way round."""
        return np.linalg.inv(self.moving_ijk_to_fixed_ijk)

    def to_dict(self) -> dict:
        """JSON-ready fields (those of ``alignseries transform --json``)."""
        return {
            "mode": self.mode,
            "description": self.description,
            "moving_to_fixed_ras": self.moving_to_fixed_ras.tolist(),
            "moving_ijk_to_fixed_ijk": self.moving_ijk_to_fixed_ijk.tolist(),
            "fixed_ijk_to_moving_ijk": self.fixed_ijk_to_moving_ijk.tolist(),
            "warnings": [warning.to_dict() for warning in self.warnings],
        }


def frame_of_reference_transform(fixed_for_uid: str | None, moving_for_uid: str | None,
                                 registrations: Iterable = ()) -> np.ndarray:
    """The moving-to-fixed RAS matrix implied by the frames of reference.

    Parameters
    ----------
    fixed_for_uid, moving_for_uid : str or None
        FrameOfReferenceUID of each series.
    registrations : iterable of SpatialRegistration or path
        DICOM REG objects to search for one relating the two frames.

    Returns
    -------
    (4, 4) ndarray
        Identity when the UIDs are equal; otherwise the matrix of the first REG that relates them.

    Raises
    ------
    FrameOfReferenceError
        If a UID is missing, or the frames differ and no REG relates them; the message names the
        alternatives.
    """
    for uid, role in ((fixed_for_uid, "fixed"), (moving_for_uid, "moving")):
        if not uid:
            raise FrameOfReferenceError(
                f"the {role} series has no FrameOfReferenceUID, so its relation to the other series is "
                f"unknown. {_ALTERNATIVES}"
            )
    if fixed_for_uid == moving_for_uid:
        return np.eye(4)
    registrations = list(registrations)
    for registration in registrations:
        if not isinstance(registration, SpatialRegistration):
            registration = read_registration(registration)
        matrix = registration.moving_to_fixed_ras(str(moving_for_uid), str(fixed_for_uid))  # both checked above
        if matrix is not None:
            logger.info("frames related by REG %s", registration.source)
            return matrix
    raise FrameOfReferenceError(
        f"the series have different frames of reference (fixed {fixed_for_uid}, moving {moving_for_uid})"
        f"{' and no given REG relates them' if registrations else ''}: their coordinates are not comparable. "
        f"{_ALTERNATIVES}"
    )


_ALTERNATIVES = (
    "Alternatives: corresponding landmarks (alignseries landmarks), a DICOM Spatial Registration "
    "(--registration REG), or a pre-alignment by volume centers (--mode centers) or intensity "
    "moments (--mode moments)."
)


def centers_transform(fixed_geometry: VolumeGeometry, moving_geometry: VolumeGeometry) -> AlignmentResult:
    """Translation that puts the moving grid's center on the fixed grid's center.

    Parameters
    ----------
    fixed_geometry, moving_geometry : VolumeGeometry

    Returns
    -------
    AlignmentResult
        ``moving_to_fixed_ras`` is a pure translation by ``fixed.center_ras - moving.center_ras``.
    """
    offset = fixed_geometry.center_ras - moving_geometry.center_ras
    return _translation_result(offset, fixed_geometry, moving_geometry, "centers",
                               f"volume centers aligned (translation {np.round(offset, 3).tolist()} mm, RAS)")


def moments_transform(fixed_array_kji, fixed_geometry: VolumeGeometry, moving_array_kji,
                      moving_geometry: VolumeGeometry) -> AlignmentResult:
    """Translation that puts the moving image's intensity centroid on the fixed image's.

    Robust to background: in each image a background level ``b`` (the ``BACKGROUND_PERCENTILE``-th
    percentile) and a foreground level ``f`` (the ``FOREGROUND_PERCENTILE``-th) are estimated, and
    only voxels above ``t = b + BACKGROUND_FRACTION * (f - b)`` weigh, with weight ``value - t``.
    So a constant offset (CT air at -1000), background noise and the size of the field of view do
    not pull the centroid. Rotation is not estimated (principal axes have no reliable sign).

    Parameters
    ----------
    fixed_array_kji, moving_array_kji : (K, J, I) array_like
        Voxel values indexed ``[k, j, i]``, matching the geometry's shape.
    fixed_geometry, moving_geometry : VolumeGeometry

    Returns
    -------
    AlignmentResult

    Raises
    ------
    GeometryError
        If an array does not match its geometry, has non-finite values, or has no voxel above its
        background threshold (a constant image).
    """
    fixed_centroid = intensity_centroid_ras(fixed_array_kji, fixed_geometry, name="fixed image")
    moving_centroid = intensity_centroid_ras(moving_array_kji, moving_geometry, name="moving image")
    offset = fixed_centroid - moving_centroid
    return _translation_result(offset, fixed_geometry, moving_geometry, "moments",
                               f"intensity centroids aligned (translation {np.round(offset, 3).tolist()} mm, RAS)")


def intensity_centroid_ras(array_kji, geometry: VolumeGeometry, *, name: str = "image") -> np.ndarray:
    """Background-robust intensity centroid of a volume, RAS mm (see :func:`moments_transform`).

    Returns
    -------
    (3,) ndarray, mm, RAS
    """
    array = np.asarray(array_kji)
    if array.shape != geometry.shape:
        raise GeometryError(
            f"{name}: array shape {array.shape} does not match its geometry's (k, j, i) {geometry.shape}"
        )
    array = array.astype(float, copy=False)
    if not np.all(np.isfinite(array)):
        raise GeometryError(f"{name} has NaN or infinite voxel values")
    background, foreground = np.percentile(array, [BACKGROUND_PERCENTILE, FOREGROUND_PERCENTILE])
    threshold = background + BACKGROUND_FRACTION * (foreground - background)
    weights = np.clip(array - threshold, 0.0, None)
    total = weights.sum()
    if total <= 0:
        raise GeometryError(
            f"{name} has no voxels above its background threshold {threshold:.4g} "
            f"(background {background:.4g}, foreground {foreground:.4g}): a constant image has no centroid"
        )
    centroid_kji = [
        np.arange(size) @ weights.sum(axis=tuple(a for a in range(3) if a != axis)) / total
        for axis, size in enumerate(array.shape)
    ]
    return geometry.ijk_to_world(np.array(centroid_kji[::-1]))


def align_geometries(mode: str, fixed_geometry: VolumeGeometry, moving_geometry: VolumeGeometry, *,
                     fixed_for_uid: str | None = None, moving_for_uid: str | None = None,
                     registrations: Iterable = (), fixed_array_kji=None, moving_array_kji=None) -> AlignmentResult:
    """Compute a geometry-based transform by mode name (the command line's ``transform --mode``).

    Parameters
    ----------
    mode : {"frameOfReference", "centers", "moments"}
    fixed_geometry, moving_geometry : VolumeGeometry
    fixed_for_uid, moving_for_uid : str, optional
        Needed for "frameOfReference".
    registrations : iterable of SpatialRegistration or path
        REG objects for "frameOfReference".
    fixed_array_kji, moving_array_kji : (K, J, I) array_like, optional
        Needed for "moments".

    Returns
    -------
    AlignmentResult
    """
    if mode == "frameOfReference":
        matrix = frame_of_reference_transform(fixed_for_uid, moving_for_uid, registrations)
        same = fixed_for_uid == moving_for_uid
        description = "same frame of reference: identity" if same else "frames related by a DICOM REG"
        return AlignmentResult(matrix, moving_ijk_to_fixed_ijk(moving_geometry, fixed_geometry, matrix),
                               mode, description)
    if mode == "centers":
        return centers_transform(fixed_geometry, moving_geometry)
    if mode == "moments":
        if fixed_array_kji is None or moving_array_kji is None:
            raise GeometryError("mode 'moments' needs the voxel arrays of both volumes")
        return moments_transform(fixed_array_kji, fixed_geometry, moving_array_kji, moving_geometry)
    raise GeometryError(f"unknown alignment mode {mode!r}; expected one of {', '.join(GEOMETRY_MODES)}")


def _translation_result(offset_ras, fixed_geometry, moving_geometry, mode: str, description: str) -> AlignmentResult:
    matrix = np.eye(4)
    matrix[:3, 3] = offset_ras
    warning = AlignSeriesWarning("pre_alignment", (
        f"'{mode}' is a pre-alignment: a translation of {np.linalg.norm(offset_ras):.1f} mm only (rotation and "
        "scale not estimated, expected: a registration); refine it with landmarks or a registration tool "
        "before relying on it"))
    return AlignmentResult(matrix, moving_ijk_to_fixed_ijk(moving_geometry, fixed_geometry, matrix), mode, description,
                           [warning])
