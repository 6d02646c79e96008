"""Synthetic DICOM series made with pydicom, for the DICOM reconstruction tests and benchmark.

Every writer takes the geometry explicitly (ImagePositionPatient per slice, ImageOrientationPatient,
PixelSpacing, all LPS mm), so a test can check what the reader reconstructs against the very
numbers the files were made from. Pixel values come from :func:`phantom_value`, a smooth function
of the LPS position, so a resampled volume can be checked against the truth anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

#: ImageOrientationPatient (row direction, column direction; LPS) of the standard planes and an
#: oblique one (rotated about two axes).
ORIENTATIONS = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
}


def oblique_orientation(angle_a_deg: float = 20.0, angle_b_deg: float = 35.0) -> tuple[float, ...]:
    """ImageOrientationPatient of an axial plane rotated about x then about z."""
    a, b = np.radians(angle_a_deg), np.radians(angle_b_deg)
    rotation_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rotation_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    rotation = rotation_z @ rotation_x
    return tuple(float(v) for v in np.concatenate([rotation[:, 0], rotation[:, 1]]))


ORIENTATIONS["oblique"] = oblique_orientation()


def normal_of(orientation) -> np.ndarray:
    """Unit slice normal ``row x column`` of an ImageOrientationPatient."""
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / np.linalg.norm(normal)


def stack_positions(first_lps, orientation, distances_mm, *, tilt_deg: float = 0.0) -> np.ndarray:
    """(K, 3) ImagePositionPatient of slices at ``distances_mm`` along the normal.

    With ``tilt_deg`` the slices also shift along the column direction by ``d * tan(tilt)``, as a
    gantry-tilted CT does (positions advance at ``tilt_deg`` to the normal).
    """
    orientation = np.asarray(orientation, dtype=float)
    distances = np.asarray(distances_mm, dtype=float)[:, None]
    shift = np.tan(np.radians(tilt_deg)) * distances * orientation[3:]
    return np.asarray(first_lps, dtype=float) + distances * normal_of(orientation) + shift


def phantom_value(points_lps) -> np.ndarray:
    """Smooth test intensity at LPS points ``(..., 3)`` (mm): values within about 300..1900."""
    points = np.asarray(points_lps, dtype=float)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return 1100 + 300 * np.sin(x / 23.0) + 300 * np.cos(y / 29.0) + 200 * np.sin(z / 17.0 + 0.3)


def pixel_centers_lps(position_lps, orientation, pixel_spacing, rows: int, columns: int) -> np.ndarray:
    """(Rows, Columns, 3) LPS centers of one slice's pixels, from its own header values."""
    orientation = np.asarray(orientation, dtype=float)
    j, i = np.mgrid[0:rows, 0:columns]
    return (np.asarray(position_lps, dtype=float) + i[..., None] * pixel_spacing[1] * orientation[:3]
            + j[..., None] * pixel_spacing[0] * orientation[3:])


def phantom_slices(positions_lps, orientation, pixel_spacing, rows: int, columns: int) -> np.ndarray:
    """(K, Rows, Columns) int16 phantom values at every slice's pixel centers."""
    return np.stack([np.rint(phantom_value(pixel_centers_lps(p, orientation, pixel_spacing, rows, columns)))
                     for p in positions_lps]).astype(np.int16)


def slice_dataset(pixels_ji: np.ndarray, position_lps, orientation, pixel_spacing, *, series_uid: str,
                  instance_number: int, study_uid: str = "1.2.826.0.1.3680043.8.498.1",
                  frame_of_reference_uid: str = "1.2.826.0.1.3680043.8.498.2", series_number: int = 1,
                  description: str = "synthetic", modality: str = "CT", **attributes) -> Dataset:
    """A classic single-frame image dataset (int16, Explicit VR Little Endian) with the given geometry.

    ``attributes`` are set as DICOM keywords (e.g. ``TemporalPositionIdentifier=2``,
    ``ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]``, ``RescaleIntercept=-1024``).
    """
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    dataset = _file_dataset(sop_class)
    dataset.update({"Modality": modality, "SeriesInstanceUID": series_uid, "StudyInstanceUID": study_uid,
                    "FrameOfReferenceUID": frame_of_reference_uid, "SeriesNumber": series_number,
                    "SeriesDescription": description, "InstanceNumber": instance_number,
                    "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"], "SliceThickness": 1.0,
                    "ImagePositionPatient": [f"{v:.6f}" for v in position_lps],
                    "ImageOrientationPatient": [f"{v:.8f}" for v in orientation],
                    "PixelSpacing": [float(v) for v in pixel_spacing]})
    _set_pixels(dataset, pixels_ji[None])
    dataset.update(attributes)
    return dataset


def write_series(folder: Path, pixels_kji: np.ndarray, positions_lps, orientation, pixel_spacing, *,
                 series_uid: str | None = None, shuffle_seed: int | None = 0, name_prefix: str = "",
                 per_slice: Sequence[dict] | None = None, **attributes) -> list[Path]:
    """Write one file per slice; file names and InstanceNumbers are shuffled unless ``shuffle_seed`` is None.

    Returns
    -------
    list of Path
        The files, in slice order (index k of ``pixels_kji``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    count = len(pixels_kji)
    labels = np.arange(count) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(count)
    paths = []
    for k in range(count):
        extra = dict(attributes, **(per_slice[k] if per_slice else {}))
        dataset = slice_dataset(pixels_kji[k], positions_lps[k], orientation, pixel_spacing, series_uid=series_uid,
                                instance_number=int(labels[k]) + 1, **extra)
        path = folder / f"{name_prefix}IM{labels[k]:05d}"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_phantom_series(folder: Path, positions_lps, orientation="axial", pixel_spacing=(0.8, 0.7), *,
                         rows: int = 24, columns: int = 20, **kwargs) -> tuple[list[Path], np.ndarray]:
    """Write a phantom series (values from :func:`phantom_value`); returns (files in slice order, pixels)."""
    orientation = ORIENTATIONS[orientation] if isinstance(orientation, str) else orientation
    pixels = phantom_slices(positions_lps, orientation, pixel_spacing, rows, columns)
    return write_series(folder, pixels, positions_lps, orientation, pixel_spacing, **kwargs), pixels


def write_multiframe(path: Path, pixels_kji: np.ndarray, positions_lps, orientations, pixel_spacing, *,
                     shared_geometry: bool, frame_types: Sequence[str] | None = None,
                     stack_ids: Sequence[str] | None = None, series_uid: str | None = None) -> Path:
    """Write an Enhanced MR Image (one file, one frame per slice) with functional-group geometry.

    Parameters
    ----------
    orientations : (6,) or (K, 6) array_like
        One ImageOrientationPatient for all frames, or one per frame.
    shared_geometry : bool
        Put PlaneOrientation and PixelMeasures in the shared functional groups (positions stay per
        frame); otherwise every frame carries all three.
    frame_types : sequence of str, optional
        Last value of each frame's FrameType (e.g. "M", "P"); default "M".
    stack_ids : sequence of str, optional
        StackID of each frame.
    """
    count = len(pixels_kji)
    orientations = np.broadcast_to(np.asarray(orientations, dtype=float), (count, 6))
    dataset = _file_dataset(EnhancedMRImageStorage)
    dataset.update({"Modality": "MR", "SeriesInstanceUID": series_uid or generate_uid(),
                    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1", "SeriesNumber": 7,
                    "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.2", "SeriesDescription": "enhanced",
                    "InstanceNumber": 1, "ImageType": ["ORIGINAL", "PRIMARY", "M", "NONE"]})
    _set_pixels(dataset, pixels_kji)
    shared = Dataset()
    if shared_geometry:
        shared.PlaneOrientationSequence = DicomSequence([_item(ImageOrientationPatient=list(orientations[0]))])
        shared.PixelMeasuresSequence = DicomSequence([_item(PixelSpacing=list(pixel_spacing), SliceThickness=1.0)])
    dataset.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for k in range(count):
        frame = Dataset()
        frame.PlanePositionSequence = DicomSequence([_item(ImagePositionPatient=list(positions_lps[k]))])
        if not shared_geometry:
            frame.PlaneOrientationSequence = DicomSequence([_item(ImageOrientationPatient=list(orientations[k]))])
            frame.PixelMeasuresSequence = DicomSequence([_item(PixelSpacing=list(pixel_spacing))])
        frame_type = frame_types[k] if frame_types else "M"
        frame.MRImageFrameTypeSequence = DicomSequence([_item(FrameType=["ORIGINAL", "PRIMARY", frame_type, "NONE"])])
        content = _item(FrameAcquisitionNumber=1)
        if stack_ids:
            content.StackID = stack_ids[k]
        frame.FrameContentSequence = DicomSequence([content])
        frames.append(frame)
    dataset.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _item(**elements) -> Dataset:
    item = Dataset()
    item.update(elements)
    return item


def _file_dataset(sop_class: str) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    dataset.PatientName = "Synthetic^Phantom"
    dataset.PatientID = "ALIGNSERIES-TEST"
    return dataset


def _set_pixels(dataset: Dataset, pixels_kji: np.ndarray) -> None:
    pixels = np.ascontiguousarray(pixels_kji, dtype="<i2")
    dataset.update({"Rows": pixels.shape[1], "Columns": pixels.shape[2], "SamplesPerPixel": 1,
                    "PhotometricInterpretation": "MONOCHROME2", "BitsAllocated": 16, "BitsStored": 16,
                    "HighBit": 15, "PixelRepresentation": 1})
    if len(pixels) > 1:
        dataset.NumberOfFrames = len(pixels)
    dataset.PixelData = pixels.tobytes()
