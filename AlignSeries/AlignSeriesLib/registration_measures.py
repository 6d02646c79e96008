"""What a moving-to-fixed transform does to the images' geometry: how far two transforms differ, how much the
volumes overlap, how far corresponding landmarks end up apart.

Pure numpy measures of the intensity refinement's report (:mod:`AlignSeriesLib.registration`); every matrix is
a moving-to-fixed RAS transform (Slicer's "to parent").
"""

from __future__ import annotations

import numpy as np

from .errors import AlignSeriesError
from .geometry import VolumeGeometry, apply_affine


def change_at_corners_mm(fixed_geometry: VolumeGeometry, first_moving_to_fixed_ras,
                         second_moving_to_fixed_ras) -> np.ndarray:
    """Distance (mm) between where two transforms send the fixed volume's 8 corners in the moving image.

    Returns
    -------
    (8,) ndarray
    """
    corners = fixed_geometry.corners_ras
    first = apply_affine(np.linalg.inv(first_moving_to_fixed_ras), corners)
    second = apply_affine(np.linalg.inv(second_moving_to_fixed_ras), corners)
    return np.linalg.norm(first - second, axis=1)


def rotation_between_degrees(first_moving_to_fixed_ras, second_moving_to_fixed_ras) -> float:
    """Angle (degrees) of the rotation part (polar decomposition) of ``second`` relative to ``first``."""
    first_linear = np.asarray(first_moving_to_fixed_ras)[:3, :3]
    relative = np.asarray(second_moving_to_fixed_ras)[:3, :3] @ np.linalg.inv(first_linear)
    u, _, vt = np.linalg.svd(relative)
    rotation = u @ vt
    cosine = np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)))


def overlap_fraction(fixed_geometry: VolumeGeometry, moving_geometry: VolumeGeometry, moving_to_fixed_ras,
                     *, samples_per_axis: int = 16) -> float:
    """Share of the smaller volume's box that lies inside the other's box under the transform (0..1)."""
    def inside_share(source: VolumeGeometry, target: VolumeGeometry, source_to_target_ras) -> float:
        # the centres of samples_per_axis equal cells along each axis: never on the box's faces, where
        # rounding would put half of two coincident boxes outside each other
        steps = [(np.arange(samples_per_axis) + 0.5) * n / samples_per_axis - 0.5 for n in source.dimensions]
        ijk = np.stack(np.meshgrid(*steps, indexing="ij"), axis=-1).reshape(-1, 3)
        points = apply_affine(target.ras_to_ijk @ source_to_target_ras @ source.ijk_to_ras, ijk)
        dimensions = np.array(target.dimensions)
        return float(np.mean(np.all((points >= -0.5) & (points <= dimensions - 0.5), axis=1)))

    if moving_geometry.volume_mm3 <= fixed_geometry.volume_mm3:
        return inside_share(moving_geometry, fixed_geometry, np.asarray(moving_to_fixed_ras))
    return inside_share(fixed_geometry, moving_geometry, np.linalg.inv(moving_to_fixed_ras))


def landmark_check(fixed_points_ras, moving_points_ras, initial_moving_to_fixed_ras,
                   moving_to_fixed_ras) -> dict:
    """Target registration error of corresponding points before and after refinement (mm).

    Parameters
    ----------
    fixed_points_ras, moving_points_ras : (N, 3) array_like, mm, RAS
        Paired points, not used by the refinement.
    """
    fixed = np.asarray(fixed_points_ras, dtype=float).reshape(-1, 3)
    moving = np.asarray(moving_points_ras, dtype=float).reshape(-1, 3)
    if len(fixed) != len(moving) or len(fixed) == 0:
        raise AlignSeriesError(f"landmark check: {len(fixed)} fixed and {len(moving)} moving points (expected the "
                               "same number, at least one)")
    before = np.linalg.norm(apply_affine(initial_moving_to_fixed_ras, moving) - fixed, axis=1)
    after = np.linalg.norm(apply_affine(moving_to_fixed_ras, moving) - fixed, axis=1)
    return {"count": len(fixed), "tre_mm_before": before, "tre_mm_after": after,
            "mean_mm_before": float(before.mean()), "max_mm_before": float(before.max()),
            "mean_mm_after": float(after.mean()), "max_mm_after": float(after.max())}
