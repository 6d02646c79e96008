"""Volume geometry: a voxel grid placed in patient space.

A geometry is the dimensions ``(i, j, k)`` of a grid and the 4x4 homogeneous matrix that maps a
voxel index ``(i, j, k, 1)`` to a point in patient space. The stored matrix is ``ijk_to_ras``
(Slicer's world frame); ``ijk_to_lps`` (DICOM's and ITK's frame) is derived from it.

Index conventions, fixed for the whole project:

* ``i`` runs along an image row (DICOM columns), ``j`` down an image column (DICOM rows), ``k``
  across slices.
* Voxel arrays are indexed ``[k, j, i]``, as ``slicer.util.arrayFromVolume`` returns them.
* Index ``(0, 0, 0)`` is the *center* of the first voxel.

This is the only module that converts between RAS and LPS: use :func:`lps_to_ras_matrix`,
:func:`lps_to_ras_points` and their inverses everywhere else.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from .errors import GeometryError

#: Flips the first two world axes: maps LPS coordinates to RAS and, being its own inverse, back.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Relative tolerance under which a matrix is called singular (smallest / largest singular value).
SINGULAR_RTOL = 1e-9

#: Absolute tolerance (cosine) under which two direction vectors count as orthogonal.
ORTHOGONAL_ATOL = 1e-4

_AXIS_LETTERS_RAS = (("L", "R"), ("P", "A"), ("I", "S"))


def as_matrix4(matrix, name: str = "matrix") -> np.ndarray:
    """Return ``matrix`` as a validated float 4x4 affine.

    Parameters
    ----------
    matrix : (4, 4) array_like
        Homogeneous affine matrix.
    name : str
        Name used in error messages.

    Returns
    -------
    (4, 4) ndarray of float64
        A new array; the input is never modified.

    Raises
    ------
    GeometryError
        If the shape is not 4x4, an element is not finite, the last row is not ``[0, 0, 0, 1]`` or
        the 3x3 part is singular.
    """
    try:
        matrix = np.array(matrix, dtype=float)
    except (TypeError, ValueError) as error:
        raise GeometryError(f"{name} is not a numeric 4x4 matrix: {error}") from None
    if matrix.shape != (4, 4):
        raise GeometryError(f"{name} must be 4x4, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise GeometryError(f"{name} has non-finite elements: {matrix.tolist()}")
    if not np.allclose(matrix[3], [0, 0, 0, 1], atol=1e-9):
        raise GeometryError(f"{name} is not affine: last row is {matrix[3].tolist()}, expected [0, 0, 0, 1]")
    singular_values = np.linalg.svd(matrix[:3, :3], compute_uv=False)
    if singular_values[0] == 0 or singular_values[-1] / singular_values[0] < SINGULAR_RTOL:
        raise GeometryError(
            f"{name} is singular: singular values {np.round(singular_values, 12).tolist()} "
            f"(ratio below {SINGULAR_RTOL})"
        )
    return matrix


def lps_to_ras_matrix(matrix_lps) -> np.ndarray:
    """Convert a 4x4 matrix whose *output* is LPS world coordinates to one whose output is RAS.

    Use it for index-to-world matrices (``ijk_to_lps`` -> ``ijk_to_ras``).
    For a world-to-world transform use :func:`lps_to_ras_transform`.
    """
    return LPS_TO_RAS @ np.asarray(matrix_lps, dtype=float)


def ras_to_lps_matrix(matrix_ras) -> np.ndarray:
    """Inverse of :func:`lps_to_ras_matrix` (``ijk_to_ras`` -> ``ijk_to_lps``)."""
    return LPS_TO_RAS @ np.asarray(matrix_ras, dtype=float)


def lps_to_ras_transform(transform_lps) -> np.ndarray:
    """Express a world-to-world 4x4 transform given in LPS in RAS (input and output flipped)."""
    return LPS_TO_RAS @ np.asarray(transform_lps, dtype=float) @ LPS_TO_RAS


def ras_to_lps_transform(transform_ras) -> np.ndarray:
    """Express a world-to-world 4x4 transform given in RAS in LPS (its own inverse operation)."""
    return lps_to_ras_transform(transform_ras)


def lps_to_ras_points(points_lps) -> np.ndarray:
    """Convert points ``(..., 3)`` from LPS to RAS (negate x and y); returns a new array."""
    points = np.array(points_lps, dtype=float)
    points[..., :2] *= -1
    return points


def ras_to_lps_points(points_ras) -> np.ndarray:
    """Convert points ``(..., 3)`` from RAS to LPS (negate x and y); returns a new array."""
    return lps_to_ras_points(points_ras)


def apply_affine(matrix, points) -> np.ndarray:
    """Apply a 4x4 affine to points.

    Parameters
    ----------
    matrix : (4, 4) array_like
    points : (..., 3) array_like

    Returns
    -------
    (..., 3) ndarray
    """
    matrix = np.asarray(matrix, dtype=float)
    points = np.asarray(points, dtype=float)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def orientation_letters(direction_columns) -> str:
    """Name each column of a 3x3 direction matrix by the RAS letter it points most towards.

    Parameters
    ----------
    direction_columns : (3, 3) array_like
        Column ``n`` is the RAS direction of index axis ``n``.

    Returns
    -------
    str
        Three letters such as ``"RAS"`` (i towards Right, j towards Anterior, k towards Superior) or
        ``"LPS"``; an oblique axis is named by its largest component.
    """
    columns = np.asarray(direction_columns, dtype=float)
    letters = []
    for axis in columns.T:
        dominant = int(np.argmax(np.abs(axis)))
        letters.append(_AXIS_LETTERS_RAS[dominant][int(axis[dominant] > 0)])
    return "".join(letters)


@dataclass(frozen=True, eq=False)
class VolumeGeometry:
    """A grid of ``dimensions`` voxels placed in RAS patient space by ``ijk_to_ras``.

    Parameters
    ----------
    dimensions : tuple of 3 int
        Number of voxels along i, j, k. The voxel array has shape ``(k, j, i)``.
    ijk_to_ras : (4, 4) array_like
        Maps voxel-center indices ``(i, j, k, 1)`` to RAS millimetres. Columns may be non-orthogonal
        (a sheared, e.g. gantry-tilted, grid) but never singular.

    Examples
    --------
    >>> g = VolumeGeometry.from_spacing_origin_directions((4, 3, 2), spacing=(1, 1, 2), origin_ras=(0, 0, 0))
    >>> g.ijk_to_world([[3, 2, 1]]).tolist()
    [[3.0, 2.0, 2.0]]
    """

    dimensions: tuple[int, int, int]
    ijk_to_ras: np.ndarray = field(repr=False)

    def __post_init__(self):
        dimensions = _validated_dimensions(self.dimensions)
        matrix = as_matrix4(self.ijk_to_ras, "ijk_to_ras")
        matrix.flags.writeable = False
        object.__setattr__(self, "dimensions", dimensions)
        object.__setattr__(self, "ijk_to_ras", matrix)

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def from_ijk_to_lps(cls, dimensions, ijk_to_lps) -> VolumeGeometry:
        """Build a geometry from an LPS index-to-world matrix (DICOM, ITK)."""
        return cls(dimensions, lps_to_ras_matrix(as_matrix4(ijk_to_lps, "ijk_to_lps")))

    @classmethod
    def from_spacing_origin_directions(
        cls, dimensions, spacing, origin_ras, directions_ras=None
    ) -> VolumeGeometry:
        """Build a geometry from spacing, the first voxel's RAS center and direction cosines.

        Parameters
        ----------
        dimensions : tuple of 3 int
        spacing : (3,) array_like, mm
            Spacing along i, j, k; must be positive.
        origin_ras : (3,) array_like, mm, RAS
            Center of voxel ``(0, 0, 0)``.
        directions_ras : (3, 3) array_like, optional
            Column ``n`` is the RAS unit direction of index axis ``n``; identity by default.
        """
        spacing = np.asarray(spacing, dtype=float)
        if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
            raise GeometryError(f"spacing must be three positive finite numbers, got {spacing.tolist()}")
        directions = np.eye(3) if directions_ras is None else np.asarray(directions_ras, dtype=float)
        if directions.shape != (3, 3):
            raise GeometryError(f"directions must be 3x3, got shape {directions.shape}")
        norms = np.linalg.norm(directions, axis=0)
        if not np.all(np.isfinite(norms)) or np.any(norms < 1e-6):
            raise GeometryError(f"direction vectors must be non-zero and finite, got {directions.T.tolist()}")
        matrix = np.eye(4)
        matrix[:3, :3] = directions / norms * spacing
        matrix[:3, 3] = np.asarray(origin_ras, dtype=float)
        return cls(dimensions, matrix)

    @classmethod
    def from_nifti_affine(cls, shape, affine) -> VolumeGeometry:
        """Build a geometry from a NIfTI voxel-to-RAS affine and the image's first three dimensions."""
        return cls(_validated_dimensions(shape[:3]), affine)

    # -- derived frames ---------------------------------------------------------------------------

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix from voxel index to LPS millimetres."""
        return ras_to_lps_matrix(self.ijk_to_ras)

    @property
    def ras_to_ijk(self) -> np.ndarray:
        """4x4 matrix from RAS millimetres to (fractional) voxel index."""
        return np.linalg.inv(self.ijk_to_ras)

    @property
    def lps_to_ijk(self) -> np.ndarray:
        """4x4 matrix from LPS millimetres to (fractional) voxel index."""
        return np.linalg.inv(self.ijk_to_lps)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of the voxel array, ``(k, j, i)``."""
        return self.dimensions[::-1]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel spacing along i, j, k in mm (norms of the matrix columns)."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def origin_ras(self) -> np.ndarray:
        """RAS center of voxel ``(0, 0, 0)``."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def origin_lps(self) -> np.ndarray:
        """LPS center of voxel ``(0, 0, 0)`` (DICOM's ImagePositionPatient of the first slice)."""
        return ras_to_lps_points(self.origin_ras)

    @property
    def directions_ras(self) -> np.ndarray:
        """3x3 matrix whose column ``n`` is the RAS unit direction of index axis ``n``."""
        return self.ijk_to_ras[:3, :3] / self.spacing

    @property
    def determinant(self) -> float:
        """Determinant of the direction matrix: +1 for a right-handed grid, -1 for a mirrored one."""
        return float(np.linalg.det(self.directions_ras))

    @property
    def is_mirrored(self) -> bool:
        """True when the index axes form a left-handed frame in RAS (a mirror, not a rotation)."""
        return self.determinant < 0

    @property
    def is_orthogonal(self) -> bool:
        """True when the index axes are mutually orthogonal (no shear, e.g. from gantry tilt)."""
        gram = self.directions_ras.T @ self.directions_ras
        return bool(np.allclose(gram, np.eye(3), atol=ORTHOGONAL_ATOL))

    @property
    def orientation(self) -> str:
        """Letters naming where i, j, k point, e.g. ``"LPS"`` for a DICOM axial series."""
        return orientation_letters(self.directions_ras)

    # -- points -----------------------------------------------------------------------------------

    def ijk_to_world(self, ijk) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` (i, j, k order) to RAS points ``(..., 3)``."""
        return apply_affine(self.ijk_to_ras, ijk)

    def world_to_ijk(self, points_ras) -> np.ndarray:
        """Map RAS points ``(..., 3)`` to fractional voxel indices ``(..., 3)`` in i, j, k order."""
        return apply_affine(self.ras_to_ijk, points_ras)

    @property
    def corner_indices(self) -> np.ndarray:
        """(8, 3) indices of the corner voxel centers, i fastest: (0,0,0), (I-1,0,0), (0,J-1,0), …"""
        last = np.array(self.dimensions) - 1
        return np.array([[i, j, k] for k in (0, last[2]) for j in (0, last[1]) for i in (0, last[0])], dtype=float)

    @property
    def corners_ras(self) -> np.ndarray:
        """(8, 3) RAS positions of the corner voxel centers, in :attr:`corner_indices` order."""
        return self.ijk_to_world(self.corner_indices)

    @property
    def corners_lps(self) -> np.ndarray:
        """(8, 3) LPS positions of the corner voxel centers, in :attr:`corner_indices` order."""
        return ras_to_lps_points(self.corners_ras)

    @property
    def center_ras(self) -> np.ndarray:
        """RAS position of the grid's center (the mean of the corner voxel centers)."""
        return self.ijk_to_world((np.array(self.dimensions) - 1) / 2.0)

    @property
    def volume_mm3(self) -> float:
        """Volume of the grid's voxel boxes (mm^3): voxel count times the volume of one voxel."""
        return float(abs(np.linalg.det(self.ijk_to_ras[:3, :3])) * np.prod(self.dimensions))

    @property
    def bounds_ras(self) -> np.ndarray:
        """(3, 2) min/max RAS extent of the voxel *boxes* (half a voxel beyond the centers)."""
        box_corners = np.array(list(itertools.product(*[(-0.5, n - 0.5) for n in self.dimensions])))
        points = self.ijk_to_world(box_corners)
        return np.stack([points.min(axis=0), points.max(axis=0)], axis=1)

    # -- other file conventions -------------------------------------------------------------------

    @property
    def nifti_affine(self) -> np.ndarray:
        """NIfTI sform: voxel ``(i, j, k)`` to RAS mm. Same as :attr:`ijk_to_ras` (NIfTI is RAS)."""
        return self.ijk_to_ras.copy()

    @property
    def nrrd_space_directions(self) -> np.ndarray:
        """NRRD ``space directions`` in ``left-posterior-superior`` space: row ``n`` is axis ``n``'s step."""
        return self.ijk_to_lps[:3, :3].T.copy()

    @property
    def nrrd_space_origin(self) -> np.ndarray:
        """NRRD ``space origin`` in ``left-posterior-superior`` space."""
        return self.origin_lps

    # -- relations --------------------------------------------------------------------------------

    def transformed(self, world_transform_ras) -> VolumeGeometry:
        """Return this grid moved by a world transform: ``ijk_to_ras' = T @ ijk_to_ras``."""
        transform = as_matrix4(world_transform_ras, "world transform")
        return VolumeGeometry(self.dimensions, transform @ self.ijk_to_ras)

    def is_close(self, other: VolumeGeometry, *, atol: float = 1e-6) -> bool:
        """True when both grids have the same dimensions and matrices equal within ``atol`` (absolute, mm)."""
        same_matrix = np.allclose(self.ijk_to_ras, other.ijk_to_ras, rtol=0, atol=atol)  # rtol would scale with mm
        return self.dimensions == other.dimensions and bool(same_matrix)

    def summary(self) -> str:
        """One line a person can read: dimensions, spacing, orientation, handedness."""
        dims = "x".join(str(n) for n in self.dimensions)
        spacing = "x".join(f"{s:.4g}" for s in self.spacing)
        notes = []
        if not self.is_orthogonal:
            notes.append("sheared")
        if self.is_mirrored:
            notes.append("mirrored")
        suffix = f" ({', '.join(notes)})" if notes else ""
        return f"{dims} voxels, {spacing} mm, {self.orientation}{suffix}"

    def to_dict(self) -> dict:
        """JSON-ready description (lists of floats)."""
        return {
            "dimensions": list(self.dimensions),
            "spacing": self.spacing.tolist(),
            "orientation": self.orientation,
            "mirrored": self.is_mirrored,
            "ijk_to_ras": self.ijk_to_ras.tolist(),
            "ijk_to_lps": self.ijk_to_lps.tolist(),
        }


def moving_ijk_to_fixed_ijk(moving: VolumeGeometry, fixed: VolumeGeometry, moving_to_fixed_ras=None) -> np.ndarray:
    """Voxel-to-voxel matrix: a moving-grid index to the fixed-grid index of the same world point.

    Parameters
    ----------
    moving, fixed : VolumeGeometry
    moving_to_fixed_ras : (4, 4) array_like, optional
        World transform that maps moving RAS points onto fixed RAS points (identity by default).

    Returns
    -------
    (4, 4) ndarray
        ``fixed.ras_to_ijk @ moving_to_fixed_ras @ moving.ijk_to_ras``.
    """
    transform = np.eye(4) if moving_to_fixed_ras is None else as_matrix4(moving_to_fixed_ras, "moving_to_fixed_ras")
    return fixed.ras_to_ijk @ transform @ moving.ijk_to_ras


def _validated_dimensions(dimensions) -> tuple[int, int, int]:
    try:
        values = tuple(int(n) for n in dimensions)
        exact = all(float(n) == int(n) for n in dimensions)
    except (TypeError, ValueError, OverflowError):
        raise GeometryError(f"dimensions must be three whole numbers, got {dimensions!r}") from None
    if len(values) != 3 or not exact or any(n <= 0 for n in values):
        raise GeometryError(f"dimensions must be three positive whole numbers (i, j, k), got {dimensions!r}")
    return values
