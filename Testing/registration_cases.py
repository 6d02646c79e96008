"""Registration cases with known truth, shared by test_registration.py and benchmarks/bench_register.py.

Every case is a fixed and a moving image (:class:`AlignSeriesLib.registration.ImageOnGrid`, world RAS) and the
true moving-to-fixed transform; the refinement starts from the identity (the images as they lie), which is
off the truth by a known displacement. Error = the largest distance, over the 8 corners of the fixed
volume's overlap with the moving one (under the truth), between where the estimate and the truth send them.

* ``phantom``: the demo's analytic phantom, CT values on an axial grid, MR values on an oblique partial grid
  (two modalities, piecewise-constant organs).
* ``same_frame_mr``: two real MR series of one session that share a FrameOfReferenceUID (a sagittal T1 and an
  oblique axial field map, both Siemens, ../shared/data/dicom): the truth is the identity; the moving one is
  displaced by a known rigid transform.
* ``multimodal``: a real CT and a copy of it remapped non-monotonically (an MR-like contrast), with a bias field
  and noise, on an oblique partial field of view, displaced by a known rigid or affine transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from AlignSeriesLib import phantom
from AlignSeriesLib.dicom.series import scan_dicom
from AlignSeriesLib.geometry import VolumeGeometry, apply_affine
from AlignSeriesLib.registration import ImageOnGrid
from AlignSeriesLib.resample import crop_to_overlap

SHARED_DICOM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom"
#: A pair sharing FrameOfReferenceUID (F6 in the data's README): fixed, moving.
SAME_FRAME_PAIR = ("mr_siemens_sag_t1_jpegll", "mr_siemens_obl_fmap")
#: The CT of the multimodal stand-in.
CT_SERIES = "ct_philips_axial"


@dataclass
class Case:
    """A fixed and a moving image and the true moving-to-fixed transform (world RAS)."""

    name: str
    kind: str
    fixed: ImageOnGrid
    moving: ImageOnGrid
    truth_moving_to_fixed_ras: np.ndarray
    model: str = "rigid"

    def error_mm(self, estimate_moving_to_fixed_ras) -> float:
        """Largest distance at the 8 corners of the fixed overlap between the estimate and the truth (mm)."""
        overlap = crop_to_overlap(self.fixed.geometry, self.moving.geometry, self.truth_moving_to_fixed_ras)
        corners = overlap.corners_ras
        estimate = apply_affine(np.linalg.inv(estimate_moving_to_fixed_ras), corners)
        truth = apply_affine(np.linalg.inv(self.truth_moving_to_fixed_ras), corners)
        return float(np.max(np.linalg.norm(estimate - truth, axis=1)))


# -- displacements ----------------------------------------------------------------------------------


def rotation_matrix(axis, degrees: float) -> np.ndarray:
    """3x3 rotation by ``degrees`` about a unit ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def rigid_about(centre_ras, axis, degrees: float, translation_mm) -> np.ndarray:
    """4x4 RAS: rotation about ``centre_ras``, then a translation."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_matrix(axis, degrees)
    matrix[:3, 3] = np.asarray(centre_ras) - matrix[:3, :3] @ np.asarray(centre_ras) + np.asarray(translation_mm)
    return matrix


def random_displacement(rng: np.random.Generator, centre_ras, max_mm: float, max_degrees: float,
                        *, affine: bool = False) -> np.ndarray:
    """A random rigid (or mildly affine: scales 0.93..1.07, shears up to 0.04) displacement about a centre."""
    direction = rng.normal(size=3)
    translation = direction / np.linalg.norm(direction) * rng.uniform(0.3, 1.0) * max_mm
    displacement = rigid_about(centre_ras, rng.normal(size=3), rng.uniform(0.3, 1.0) * max_degrees, translation)
    if affine:
        linear = np.diag(rng.uniform(0.93, 1.07, 3)) + np.triu(rng.uniform(-0.04, 0.04, (3, 3)), 1)
        scaling = np.eye(4)
        scaling[:3, :3] = linear
        scaling[:3, 3] = np.asarray(centre_ras) - linear @ np.asarray(centre_ras)
        displacement = displacement @ scaling
    return displacement


def displaced(case_name: str, kind: str, fixed: ImageOnGrid, moving: ImageOnGrid, displacement_ras,
              truth_moving_to_fixed_ras=None, model: str = "rigid") -> Case:
    """The moving image moved by ``displacement_ras`` in world space; the truth follows it."""
    truth = np.eye(4) if truth_moving_to_fixed_ras is None else truth_moving_to_fixed_ras
    moved = ImageOnGrid(moving.array, moving.geometry.transformed(displacement_ras))
    return Case(case_name, kind, fixed, moved, truth @ np.linalg.inv(displacement_ras), model)


# -- images -----------------------------------------------------------------------------------------


def downsampled(image: ImageOnGrid, factors=(2, 2, 2)) -> ImageOnGrid:
    """Every ``factor``-th voxel along i, j, k, at its exact position (averaged over the block first)."""
    fi, fj, fk = factors
    array = ndimage.uniform_filter(np.asarray(image.array, dtype=np.float32), size=(fk, fj, fi))[::fk, ::fj, ::fi]
    ijk_to_ras = image.geometry.ijk_to_ras @ np.diag([fi, fj, fk, 1.0])
    return ImageOnGrid(np.ascontiguousarray(array), VolumeGeometry(array.shape[::-1], ijk_to_ras))


def sampled(image: ImageOnGrid, geometry: VolumeGeometry, moving_to_image_ras=None) -> ImageOnGrid:
    """``image`` sampled (linear) at the voxel centres of ``geometry``, optionally through a transform.

    Points beyond the image take its nearest edge voxel (no artificial air planes where a partial field of view
    reaches past a thin CT slab).
    """
    transform = np.eye(4) if moving_to_image_ras is None else moving_to_image_ras
    k, j, i = np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3)
    source = apply_affine(image.geometry.ras_to_ijk @ transform @ geometry.ijk_to_ras, ijk)
    values = ndimage.map_coordinates(np.asarray(image.array, dtype=np.float32), source[:, ::-1].T, order=1,
                                     mode="nearest")
    return ImageOnGrid(values.reshape(geometry.shape).astype(np.float32), geometry)


def real_volume(name: str) -> ImageOnGrid:
    """The first volume of a real series in ../shared/data/dicom: the core's geometry, SimpleITK's (GDCM) pixels.

    GDCM decodes the JPEG Lossless series, which pydicom cannot without a plugin.
    """
    import SimpleITK as sitk  # noqa: N813 - the name SimpleITK documents

    volume = scan_dicom([SHARED_DICOM / name / "dicom"]).volumes[0]

    def read_slices(dicom_volume):
        return np.stack([sitk.GetArrayFromImage(sitk.ReadImage(path))[0] for path in dicom_volume.files])

    return ImageOnGrid(volume.read_voxels(read_slices=read_slices).astype(np.float32), volume.geometry)


def mr_like(ct_values: np.ndarray, geometry: VolumeGeometry, rng: np.random.Generator) -> np.ndarray:
    """A non-monotonic remap of CT numbers (an MR-like contrast) with a smooth bias field and noise."""
    knots_hu = [-1100, -900, -500, -120, -60, 0, 40, 80, 200, 600, 1500, 3000]
    values = [0, 10, 120, 900, 850, 300, 550, 420, 250, 120, 60, 40]  # fat bright, bone dark, soft tissue mixed
    remapped = np.interp(ct_values, knots_hu, values)
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in geometry.shape], indexing="ij")
    bias = 1.0 + 0.25 * i - 0.15 * j + 0.1 * k * k
    return (remapped * bias + rng.normal(0, 25, remapped.shape)).astype(np.float32)


def partial_oblique_grid(fixed_geometry: VolumeGeometry, *, fraction=(0.6, 0.6, 0.8), spacing=(1.3, 1.3, None),
                         degrees: float = 12.0) -> VolumeGeometry:
    """A grid over the middle of the fixed one (a partial field of view), tilted about the R axis."""
    spacing = [s if s is not None else fixed_geometry.spacing[n] for n, s in enumerate(spacing)]
    extent = (np.array(fixed_geometry.dimensions) - 1) * fixed_geometry.spacing * np.array(fraction)
    dimensions = tuple(int(n) for n in np.maximum(np.round(extent / np.array(spacing)) + 1, 8))
    directions = rotation_matrix((1, 0, 0), degrees) @ (fixed_geometry.directions_ras)
    centre = fixed_geometry.center_ras
    origin = centre - directions @ ((np.array(dimensions) - 1) / 2.0 * np.array(spacing))
    return VolumeGeometry.from_spacing_origin_directions(dimensions, spacing, origin, directions)


def phantom_pair() -> tuple[ImageOnGrid, ImageOnGrid]:
    """The demo phantom: CT values on a coarse axial grid of the trunk, MR values on an oblique partial grid."""
    fixed_geometry = VolumeGeometry.from_spacing_origin_directions((96, 80, 90), (3.5, 3.5, 5.0),
                                                                   (-166.25, -138.25, -222.5))
    moving_geometry = partial_oblique_grid(fixed_geometry, fraction=(0.8, 0.8, 0.45), spacing=(3.0, 3.0, 4.0),
                                           degrees=20.0)
    rng = np.random.default_rng(3)
    images = []
    for geometry, modality in ((fixed_geometry, "CT"), (moving_geometry, "MR")):
        k, j, i = np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij")
        points = geometry.ijk_to_world(np.stack([i, j, k], axis=-1))
        values = phantom.phantom_values(points, modality)
        values = ndimage.gaussian_filter(values, 1.0) + rng.normal(0, 10, values.shape)
        images.append(ImageOnGrid(values.astype(np.float32), geometry))
    return images[0], images[1]


def multimodal_pair(seed: int = 0) -> tuple[ImageOnGrid, ImageOnGrid]:
    """A real CT (in-plane downsampled by 2) and its MR-like copy on a partial, oblique, 1.3 mm grid."""
    ct = downsampled(real_volume(CT_SERIES), (2, 2, 1))
    rng = np.random.default_rng(seed)
    moving_geometry = partial_oblique_grid(ct.geometry, fraction=(0.65, 0.6, 0.6), spacing=(1.6, 1.6, None),
                                           degrees=8.0)
    on_grid = sampled(ct, moving_geometry)
    return ct, ImageOnGrid(mr_like(on_grid.array, moving_geometry, rng), moving_geometry)


def same_frame_pair() -> tuple[ImageOnGrid, ImageOnGrid]:
    """The sagittal T1 and the oblique axial field map that share its frame of reference."""
    fixed_name, moving_name = SAME_FRAME_PAIR
    return real_volume(fixed_name), real_volume(moving_name)


def real_data_available() -> bool:
    return all((SHARED_DICOM / name / "dicom").is_dir() for name in (*SAME_FRAME_PAIR, CT_SERIES))


def cases(count_per_kind: int, *, seed: int = 0, kinds=("phantom", "same_frame_mr", "multimodal_rigid",
                                                         "multimodal_affine"),
          max_mm: float = 20.0, max_degrees: float = 15.0) -> list[Case]:
    """``count_per_kind`` random displacements (up to ``max_mm`` and ``max_degrees``) of each kind of pair."""
    rng = np.random.default_rng(seed)
    pairs = {"phantom": phantom_pair, "same_frame_mr": same_frame_pair, "multimodal_rigid": multimodal_pair,
             "multimodal_affine": multimodal_pair}
    made = []
    for kind in kinds:
        fixed, moving = pairs[kind]()
        affine = kind.endswith("affine")
        for number in range(count_per_kind):
            displacement = random_displacement(rng, moving.geometry.center_ras, max_mm, max_degrees, affine=affine)
            name, model = f"{kind} {number + 1}", "affine" if affine else "rigid"
            if affine:  # an affinely moved grid would be sheared: move the content instead
                made.append(multimodal_affine_case(name, fixed, moving.geometry, displacement, rng))
            else:
                made.append(displaced(name, kind, fixed, moving, displacement, model=model))
    return made


def multimodal_affine_case(name: str, ct: ImageOnGrid, moving_geometry: VolumeGeometry, displacement_ras,
                           rng: np.random.Generator) -> Case:
    """The MR-like copy sampled through an affine displacement on the (orthogonal) partial grid."""
    truth = np.linalg.inv(displacement_ras)  # moving world -> fixed world
    on_grid = sampled(ct, moving_geometry, truth)
    moving = ImageOnGrid(mr_like(on_grid.array, moving_geometry, rng), moving_geometry)
    return Case(name, "multimodal_affine", ct, moving, truth, "affine")
