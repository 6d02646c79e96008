"""A synthetic patient for the demo: an analytic phantom imaged as two DICOM series.

The phantom is defined in patient RAS millimetres, so any grid can sample it exactly and every
result can be compared with the truth. It is deliberately left-right asymmetric (a "liver" on the
patient's right, a "heart" and "spleen" on the left) so that a mirror image is visible at a glance.

Two acquisitions are simulated: an axial CT-like series of the whole trunk, and an oblique,
partial-field, differently spaced MR-like series of the upper abdomen, taken after the patient
moved (a known rigid ``mr_to_ct_ras`` transform) and in another frame of reference.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from .geometry import VolumeGeometry, apply_affine, ras_to_lps_points

#: Organs: (name, center RAS mm, semi-axes mm, CT value HU, MR value). Later entries overwrite earlier ones.
#: RAS: +x is the patient's right, so the liver sits at positive x, the spleen and heart at negative x.
ORGANS = (
    ("body", (0, 0, 0), (160, 110, 260), -60, 300),
    ("lung_right", (70, 5, 120), (55, 70, 90), -800, 20),
    ("lung_left", (-70, 5, 120), (50, 70, 90), -800, 20),
    ("heart", (-25, 30, 80), (45, 40, 45), 250, 500),
    ("liver", (60, 10, -10), (70, 60, 55), 90, 700),
    ("spleen", (-80, -25, 0), (25, 35, 40), 140, 900),
    ("kidney_right", (55, -45, -70), (22, 20, 40), 200, 650),
    ("kidney_left", (-55, -45, -60), (22, 20, 40), 200, 650),
    ("spine", (0, -70, 0), (18, 18, 250), 700, 150),
)

#: Landmarks a user could click in both series: organ centers and a few bony points (RAS mm).
LANDMARKS = {
    "liver": (60, 10, -10), "spleen": (-80, -25, 0), "kidney_R": (55, -45, -70), "kidney_L": (-55, -45, -60),
    "heart": (-25, 30, 80), "spine_T12": (0, -70, -20), "spine_L3": (0, -70, -90),
}


@dataclass(frozen=True)
class Acquisition:
    """One simulated series: its grid, modality and DICOM identity."""

    name: str
    modality: str
    geometry: VolumeGeometry
    series_number: int
    frame_of_reference_uid: str
    patient_to_scanner_ras: np.ndarray


def phantom_values(points_ras, modality: str) -> np.ndarray:
    """Phantom intensity at RAS points ``(..., 3)`` for ``modality`` ("CT" or "MR"); air outside."""
    points = np.asarray(points_ras, dtype=float)
    column = 3 if modality == "CT" else 4
    values = np.full(points.shape[:-1], -1000.0 if modality == "CT" else 0.0)
    for organ in ORGANS:
        center, semi_axes = np.asarray(organ[1], float), np.asarray(organ[2], float)
        inside = np.sum(((points - center) / semi_axes) ** 2, axis=-1) <= 1.0
        values[inside] = organ[column]
    return values


def ct_acquisition() -> Acquisition:
    """Axial whole-trunk CT: 192 x 192 x 90 voxels of 1.75 x 1.75 x 5 mm, LPS-ordered like a scanner's."""
    directions_ras = np.diag([-1.0, -1.0, 1.0])  # DICOM axial: i to patient left, j to posterior
    origin_ras = (167.125, 167.125, -222.5)
    geometry = VolumeGeometry.from_spacing_origin_directions((192, 192, 90), (1.75, 1.75, 5.0), origin_ras,
                                                             directions_ras)
    return Acquisition("CT", "CT", geometry, 2, generate_uid(), np.eye(4))


def mr_acquisition() -> Acquisition:
    """Oblique partial-field MR of the upper abdomen, after the patient moved (another frame of reference).

    ``patient_to_scanner_ras`` maps CT-frame RAS points to this MR frame's RAS points: the patient
    is rotated by 8 degrees about an oblique axis and shifted by (12, -9, 25) mm.
    """
    tilt = _rotation_matrix((1.0, 0.3, 0.2), np.deg2rad(20.0))
    directions_ras = tilt @ np.diag([-1.0, -1.0, 1.0])
    geometry = VolumeGeometry.from_spacing_origin_directions((96, 80, 28), (2.2, 2.2, 4.5), (0, 0, 0),
                                                             directions_ras)
    center_ras = np.array([0.0, -10.0, -30.0])
    geometry = geometry.transformed(_translation(center_ras - geometry.center_ras))
    patient_to_scanner_ras = _translation((12.0, -9.0, 25.0))
    patient_to_scanner_ras[:3, :3] = _rotation_matrix((0.2, 0.4, 1.0), np.deg2rad(8.0))
    return Acquisition("MR", "MR", geometry, 5, generate_uid(), patient_to_scanner_ras)


def acquire(acquisition: Acquisition) -> np.ndarray:
    """Image the phantom on an acquisition's grid: voxel array ``[k, j, i]`` (int16)."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in acquisition.geometry.shape], indexing="ij")
    scanner_points_ras = acquisition.geometry.ijk_to_world(np.stack([i, j, k], axis=-1))
    patient_points_ras = apply_affine(np.linalg.inv(acquisition.patient_to_scanner_ras), scanner_points_ras)
    return np.round(phantom_values(patient_points_ras, acquisition.modality)).astype(np.int16)


def write_dicom_series(acquisition: Acquisition, voxels_kji: np.ndarray, folder: Path, *, study_uid: str,
                       seed: int = 0) -> list[Path]:
    """Write one single-frame DICOM file per slice, with shuffled file names and InstanceNumbers.

    Real folders rarely list files in slice order; the shuffle makes the demo show that AlignSeries
    orders slices by position along the normal, not by file name or InstanceNumber.
    """
    folder.mkdir(parents=True, exist_ok=True)
    order = list(range(acquisition.geometry.dimensions[2]))
    random.Random(seed).shuffle(order)
    series_uid = generate_uid()
    paths = []
    for file_number, k in enumerate(order):
        dataset = _slice_dataset(acquisition, voxels_kji[k], k, study_uid, series_uid)
        dataset.InstanceNumber = file_number + 1
        path = folder / f"IM{file_number:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _slice_dataset(acquisition: Acquisition, pixels_ji: np.ndarray, k: int, study_uid: str,
                   series_uid: str) -> FileDataset:
    geometry = acquisition.geometry
    sop_class = CTImageStorage if acquisition.modality == "CT" else MRImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    dataset.PatientName, dataset.PatientID = "AlignSeries^Demo", "ALIGNSERIES-DEMO"
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, series_uid
    dataset.StudyDate = dataset.SeriesDate = datetime.date.today().strftime("%Y%m%d")
    dataset.Modality, dataset.SeriesNumber = acquisition.modality, acquisition.series_number
    dataset.SeriesDescription = f"AlignSeries demo {acquisition.name}"
    dataset.FrameOfReferenceUID = acquisition.frame_of_reference_uid
    dataset.PatientPosition = "HFS"
    ijk_to_lps = geometry.ijk_to_lps
    dataset.ImagePositionPatient = [f"{v:.4f}" for v in ras_to_lps_points(geometry.ijk_to_world([0, 0, k]))]
    dataset.ImageOrientationPatient = [f"{v:.6f}" for v in np.concatenate(
        [ijk_to_lps[:3, 0] / geometry.spacing[0], ijk_to_lps[:3, 1] / geometry.spacing[1]])]
    dataset.PixelSpacing = [f"{geometry.spacing[1]:.4f}", f"{geometry.spacing[0]:.4f}"]
    dataset.SliceThickness = f"{geometry.spacing[2]:.4f}"
    dataset.Rows, dataset.Columns = pixels_ji.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 1
    dataset.RescaleSlope, dataset.RescaleIntercept = 1, 0
    dataset.PixelData = np.ascontiguousarray(pixels_ji, dtype="<i2").tobytes()
    return dataset


def landmarks_in(acquisition: Acquisition) -> dict[str, np.ndarray]:
    """The phantom's landmarks in an acquisition's scanner RAS frame."""
    return {name: apply_affine(acquisition.patient_to_scanner_ras, point) for name, point in LANDMARKS.items()}


def _rotation_matrix(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _translation(offset) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix

