"""Hand-written geometries shared by the test suites: DICOM-like grids in five orientations.

Every matrix is written out by hand from the definitions, never computed with AlignSeriesLib:

* DICOM gives ``ijk_to_lps``: column i = column spacing x row direction (ImageOrientationPatient[:3]),
  column j = row spacing x column direction (IOP[3:]), column k = slice step x normal
  (row x column), translation = ImagePositionPatient of the first slice.
* RAS = LPS with x and y negated, so ``ijk_to_ras`` is ``ijk_to_lps`` with its first two rows negated.
* Orientation letters name where each index axis points in RAS (nibabel's ``aff2axcodes``).
"""

from __future__ import annotations

import numpy as np

from AlignSeriesLib.geometry import VolumeGeometry

DIMENSIONS = (4, 3, 2)


def _case(ijk_to_lps, ijk_to_ras, orientation, mirrored):
    return {
        "ijk_to_lps": np.array(ijk_to_lps, dtype=float),
        "ijk_to_ras": np.array(ijk_to_ras, dtype=float),
        "orientation": orientation,
        "mirrored": mirrored,
    }


# Each case: a DICOM-like acquisition written out by hand in LPS and in RAS.
CASES = {
    # IOP (1,0,0, 0,1,0), normal +z; PixelSpacing (0.75, 0.5), slice step 2; IPP (-100, -120, 50).
    "axial": _case(
        [[0.5, 0, 0, -100], [0, 0.75, 0, -120], [0, 0, 2, 50], [0, 0, 0, 1]],
        [[-0.5, 0, 0, 100], [0, -0.75, 0, 120], [0, 0, 2, 50], [0, 0, 0, 1]],
        "LPS",
        False,
    ),
    # IOP (0,1,0, 0,0,-1), normal (0,1,0) x (0,0,-1) = (-1,0,0); spacing (0.8, 0.9), step 3; IPP (20, -110, 90).
    "sagittal": _case(
        [[0, 0, -3, 20], [0.9, 0, 0, -110], [0, -0.8, 0, 90], [0, 0, 0, 1]],
        [[0, 0, 3, -20], [-0.9, 0, 0, 110], [0, -0.8, 0, 90], [0, 0, 0, 1]],
        "PIR",
        False,
    ),
    # IOP (1,0,0, 0,0,-1), normal (1,0,0) x (0,0,-1) = (0,1,0); spacing (0.7, 0.6), step 4; IPP (-150, 30, 120).
    "coronal": _case(
        [[0.6, 0, 0, -150], [0, 0, 4, 30], [0, -0.7, 0, 120], [0, 0, 0, 1]],
        [[-0.6, 0, 0, 150], [0, 0, -4, -30], [0, -0.7, 0, 120], [0, 0, 0, 1]],
        "LIP",
        False,
    ),
    # Rotation with rational cosines: row (2,3,6)/7, column (3,-6,2)/7, normal (6,2,-3)/7
    # (= row x column); spacing i 0.7, j 1.4, k 3.5 mm, so the columns are 0.1 x, 0.2 x, 0.5 x the
    # integer vectors; IPP (10, -20, 30).
    "oblique": _case(
        [[0.2, 0.6, 3, 10], [0.3, -1.2, 1, -20], [0.6, 0.4, -1.5, 30], [0, 0, 0, 1]],
        [[-0.2, -0.6, -3, -10], [-0.3, 1.2, -1, 20], [0.6, 0.4, -1.5, 30], [0, 0, 0, 1]],
        "SAL",
        False,
    ),
    # The axial series with k reversed (slices stacked against the normal): a mirror.
    "mirrored": _case(
        [[0.5, 0, 0, -100], [0, 0.75, 0, -120], [0, 0, -2, 50], [0, 0, 0, 1]],
        [[-0.5, 0, 0, 100], [0, -0.75, 0, 120], [0, 0, -2, 50], [0, 0, 0, 1]],
        "LPI",
        True,
    ),
}
ORIENTATIONS = list(CASES)

HAND_SPACING = {
    "axial": [0.5, 0.75, 2],
    "sagittal": [0.9, 0.8, 3],
    "coronal": [0.6, 0.7, 4],
    "oblique": [0.7, 1.4, 3.5],
    "mirrored": [0.5, 0.75, 2],
}


def from_lps(name, dimensions=DIMENSIONS):
    return VolumeGeometry.from_ijk_to_lps(dimensions, CASES[name]["ijk_to_lps"])


def rigid_transform(angle_degrees=25.0, axis=(1.0, 2.0, 2.0), translation=(12.5, -7.0, 30.0)):
    """A rotation about ``axis`` (Rodrigues' formula) followed by a translation, as a 4x4 matrix."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    angle = np.radians(angle_degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    matrix = np.eye(4)
    matrix[:3, :3] = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    matrix[:3, 3] = translation
    return matrix
