"""DICOM Spatial Registration objects (REG, SOP Class 1.2.840.10008.5.1.4.1.1.66.1).

Direction, as the standard defines it (PS3.3 C.20.2 and C.20.2.1.1): a REG instance has its own
FrameOfReferenceUID, the *registration* frame. Each item of its RegistrationSequence names a
*registered* frame (the item's FrameOfReferenceUID) and holds a FrameOfReferenceTransformationMatrix
that maps **coordinates in the item's frame into the REG's own frame**. Matrices are 4x4, row-major,
in DICOM patient coordinates (LPS, mm). An item whose frame is the REG's own carries the identity.

AlignSeries writes a REG the way SlicerRT (via Plastimatch) and most planning systems do: the REG
belongs to the fixed series' study and frame; item 1 references the fixed series with the identity,
item 2 references the moving series with ``moving_to_fixed_lps``. Reading such a REG therefore gives
back ``moving_to_fixed_ras``, never its inverse.

A MatrixSequence with more than one matrix (a composed registration) is refused: the standard's
multiplication order for it is not handled here.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from ..errors import AlignSeriesWarning, DicomError
from ..files import atomic_output, check_input_file
from ..geometry import as_matrix4, lps_to_ras_transform, ras_to_lps_transform

logger = logging.getLogger(__name__)

SPATIAL_REGISTRATION_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.1"
MATRIX_TYPES = ("RIGID", "RIGID_SCALE", "AFFINE")

#: Tolerance for classifying a matrix as RIGID (orthonormal) or RIGID_SCALE (orthogonal columns).
MATRIX_TYPE_ATOL = 1e-4

#: Patient and study attributes copied from a reference image into an exported REG.
PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
    "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
)


@dataclass(frozen=True)
class SeriesReference:
    """What an exported REG says about one registered series.

    Parameters
    ----------
    series_instance_uid, frame_of_reference_uid : str
    sop_instance_uids : sequence of str
        The series' images (may be empty: the REG then relates frames only).
    sop_class_uid : str, optional
        SOP Class of those images; required when ``sop_instance_uids`` is given.
    study_instance_uid : str, optional
    """

    series_instance_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: Sequence[str] = ()
    sop_class_uid: str | None = None
    study_instance_uid: str | None = None


@dataclass(frozen=True, eq=False)
class SpatialRegistration:
    """The rigid/affine content of one REG object.

    Attributes
    ----------
    registration_frame_uid : str
        The REG's own FrameOfReferenceUID.
    frame_to_registration_lps : dict of str to (4, 4) ndarray
        For each registered frame, the matrix mapping its LPS coordinates into the registration
        frame (the REG's own frame maps with the identity).
    referenced_series_uids : list of str
    sop_instance_uid : str
    source : str
        File name (or "dataset").
    warnings : list of AlignSeriesWarning
    """

    registration_frame_uid: str
    frame_to_registration_lps: dict
    referenced_series_uids: list = field(default_factory=list)
    sop_instance_uid: str = ""
    source: str = "dataset"
    warnings: list = field(default_factory=list)

    def moving_to_fixed_ras(self, moving_frame_uid: str, fixed_frame_uid: str) -> np.ndarray | None:
        """The RAS matrix mapping the moving frame into the fixed frame, or None if not related here.

        ``fixed <- registration <- moving``: ``inv(fixed_to_reg) @ moving_to_reg``, in LPS, then
        expressed in RAS.
        """
        frames = {self.registration_frame_uid: np.eye(4), **self.frame_to_registration_lps}
        if moving_frame_uid not in frames or fixed_frame_uid not in frames:
            return None
        moving_to_fixed_lps = np.linalg.inv(frames[fixed_frame_uid]) @ frames[moving_frame_uid]
        return lps_to_ras_transform(moving_to_fixed_lps)


# -- import -----------------------------------------------------------------------------------------


def read_registration(source) -> SpatialRegistration:
    """Read the matrix registrations of a DICOM Spatial Registration object.

    Parameters
    ----------
    source : str, Path or pydicom.Dataset

    Returns
    -------
    SpatialRegistration

    Raises
    ------
    DicomError
        If the file is not DICOM or not a Spatial Registration, or a registration item lacks a frame
        of reference, holds a composed or unknown-type matrix, or conflicts with another item.
    FileNotFoundError
    """
    dataset, name = _open_dataset(source)
    if dataset.get("SOPClassUID") != SPATIAL_REGISTRATION_SOP_CLASS_UID:
        raise DicomError(
            f"{name}: not a DICOM Spatial Registration (SOP Class UID {dataset.get('SOPClassUID')!s}, "
            f"expected {SPATIAL_REGISTRATION_SOP_CLASS_UID})"
        )
    registration_frame = str(dataset.get("FrameOfReferenceUID") or "")
    if not registration_frame:
        raise DicomError(f"{name}: the REG has no FrameOfReferenceUID (0020,0052)")
    items = dataset.get("RegistrationSequence") or []
    if not items:
        raise DicomError(f"{name}: RegistrationSequence (0070,0308) is missing or empty")
    warnings: list[AlignSeriesWarning] = []
    frames: dict[str, np.ndarray] = {}
    for number, item in enumerate(items, start=1):
        frame, matrix_lps = _read_item(item, f"{name}: RegistrationSequence item {number}", warnings)
        if frame in frames and not np.allclose(frames[frame], matrix_lps, atol=MATRIX_TYPE_ATOL):
            raise DicomError(f"{name}: two registration items give different matrices for frame {frame}")
        frames[frame] = matrix_lps
    if registration_frame in frames and not np.allclose(frames[registration_frame], np.eye(4), atol=MATRIX_TYPE_ATOL):
        raise DicomError(f"{name}: the item for the REG's own frame {registration_frame} is not the identity")
    for warning in warnings:
        logger.warning(warning.message)
    return SpatialRegistration(
        registration_frame_uid=registration_frame,
        frame_to_registration_lps=frames,
        referenced_series_uids=[str(s.SeriesInstanceUID) for s in dataset.get("ReferencedSeriesSequence", [])],
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")),
        source=name,
        warnings=warnings,
    )


def _open_dataset(source) -> tuple[Dataset, str]:
    if isinstance(source, Dataset):
        return source, "dataset"
    path = check_input_file(source, "registration file")
    try:
        return pydicom.dcmread(path, stop_before_pixels=True), str(path)
    except (InvalidDicomError, OSError, ValueError) as error:
        raise DicomError(f"{path}: not a readable DICOM file ({error})") from None


def _read_item(item: Dataset, where: str, warnings: list) -> tuple[str, np.ndarray]:
    frame = str(item.get("FrameOfReferenceUID") or "")
    if not frame:
        raise DicomError(f"{where} has no FrameOfReferenceUID: AlignSeries relates frames, not single images")
    matrix_registrations = item.get("MatrixRegistrationSequence") or []
    if len(matrix_registrations) != 1:
        raise DicomError(
            f"{where}: MatrixRegistrationSequence must hold exactly one item, has {len(matrix_registrations)}"
        )
    matrices = matrix_registrations[0].get("MatrixSequence") or []
    if len(matrices) != 1:
        raise DicomError(
            f"{where}: MatrixSequence holds {len(matrices)} matrices; only a single matrix is supported "
            "(composed registrations are not)"
        )
    matrix_type = str(matrices[0].get("FrameOfReferenceTransformationMatrixType", ""))
    if matrix_type not in MATRIX_TYPES:
        raise DicomError(
            f"{where}: FrameOfReferenceTransformationMatrixType is {matrix_type!r}, expected one of {MATRIX_TYPES}"
        )
    values = matrices[0].get("FrameOfReferenceTransformationMatrix")
    if values is None or len(values) != 16:
        raise DicomError(f"{where}: FrameOfReferenceTransformationMatrix must have 16 values")
    try:
        matrix_lps = as_matrix4(np.array([float(v) for v in values]).reshape(4, 4), "the matrix")
    except ValueError as error:
        raise DicomError(f"{where}: {error}") from None
    declared = classify_matrix(matrix_lps)
    if MATRIX_TYPES.index(declared) > MATRIX_TYPES.index(matrix_type):
        warnings.append(AlignSeriesWarning(
            "registration_matrix_type",
            f"{where}: the matrix is declared {matrix_type} but is {declared} (tolerance {MATRIX_TYPE_ATOL})"))
    return frame, matrix_lps


def classify_matrix(matrix, *, atol: float = MATRIX_TYPE_ATOL) -> str:
    """Name a 4x4 matrix's DICOM type: "RIGID", "RIGID_SCALE" or "AFFINE".

    RIGID: orthonormal linear part with determinant +1. RIGID_SCALE: orthogonal columns, positive
    determinant. AFFINE: anything else (including every reflection).
    """
    linear = np.asarray(matrix, dtype=float)[:3, :3]
    if np.linalg.det(linear) <= 0:
        return "AFFINE"
    gram = linear.T @ linear
    if np.allclose(gram, np.eye(3), atol=atol):
        return "RIGID"
    off_diagonal = gram - np.diag(np.diag(gram))
    if np.all(np.abs(off_diagonal) <= atol * np.max(np.diag(gram))):
        return "RIGID_SCALE"
    return "AFFINE"


# -- export -----------------------------------------------------------------------------------------


def build_registration_dataset(moving_to_fixed_ras, fixed: SeriesReference, moving: SeriesReference, *,
                               reference_dataset: Dataset | None = None,
                               series_description: str = "AlignSeries registration") -> Dataset:
    """Build a Spatial Registration dataset that maps the moving frame into the fixed frame.

    Parameters
    ----------
    moving_to_fixed_ras : (4, 4) array_like
        Maps moving RAS points onto fixed RAS points (stored as LPS in the REG).
    fixed, moving : SeriesReference
    reference_dataset : pydicom.Dataset, optional
        An image of the fixed series: patient and study attributes are copied from it.
    series_description : str

    Returns
    -------
    pydicom.Dataset
        With file meta information, ready for ``save_as(..., enforce_file_format=True)``.
    """
    matrix_ras = as_matrix4(moving_to_fixed_ras, "moving_to_fixed_ras")
    for reference, role in ((fixed, "fixed"), (moving, "moving")):
        if not reference.frame_of_reference_uid or not reference.series_instance_uid:
            raise DicomError(f"the {role} series needs a SeriesInstanceUID and a FrameOfReferenceUID for a REG")
        if reference.sop_instance_uids and not reference.sop_class_uid:
            raise DicomError(f"the {role} series lists images but no SOP Class UID for them")
    dataset = _registration_header(fixed, reference_dataset, series_description)
    dataset.RegistrationSequence = DicomSequence([
        _registration_item(fixed, np.eye(4)),
        _registration_item(moving, ras_to_lps_transform(matrix_ras)),
    ])
    dataset.ReferencedSeriesSequence = DicomSequence([_series_item(fixed)])
    if moving.study_instance_uid and moving.study_instance_uid != dataset.StudyInstanceUID:
        other_study = Dataset()
        other_study.StudyInstanceUID = moving.study_instance_uid
        other_study.ReferencedSeriesSequence = DicomSequence([_series_item(moving)])
        dataset.StudiesContainingOtherReferencedInstancesSequence = DicomSequence([other_study])
    else:
        dataset.ReferencedSeriesSequence.append(_series_item(moving))
    return dataset


def write_registration(path, moving_to_fixed_ras, fixed: SeriesReference, moving: SeriesReference, *,
                       reference_dataset: Dataset | None = None, force: bool = False,
                       series_description: str = "AlignSeries registration") -> Path:
    """Write a Spatial Registration file atomically (see :func:`build_registration_dataset`).

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``force`` is False.
    """
    dataset = build_registration_dataset(moving_to_fixed_ras, fixed, moving, reference_dataset=reference_dataset,
                                         series_description=series_description)
    with atomic_output(path, force=force) as temporary:
        dataset.save_as(temporary, enforce_file_format=True)
    return Path(path)


def _registration_header(fixed: SeriesReference, reference_dataset, series_description: str) -> Dataset:
    now = datetime.datetime.now()
    instance_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SPATIAL_REGISTRATION_SOP_CLASS_UID)
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    for keyword in PATIENT_STUDY_KEYWORDS:
        setattr(dataset, keyword, reference_dataset.get(keyword, "") if reference_dataset is not None else "")
    dataset.StudyInstanceUID = dataset.StudyInstanceUID or fixed.study_instance_uid or generate_uid()
    dataset.SOPClassUID = SPATIAL_REGISTRATION_SOP_CLASS_UID
    dataset.SOPInstanceUID = instance_uid
    dataset.Modality = "REG"
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SeriesNumber = 999
    dataset.SeriesDescription = series_description
    dataset.FrameOfReferenceUID = fixed.frame_of_reference_uid
    dataset.PositionReferenceIndicator = ""
    dataset.Manufacturer = "AlignSeries"
    dataset.InstanceNumber = 1
    dataset.ContentDate = dataset.InstanceCreationDate = now.strftime("%Y%m%d")
    dataset.ContentTime = dataset.InstanceCreationTime = now.strftime("%H%M%S")
    dataset.ContentLabel = "ALIGNSERIES"
    dataset.ContentDescription = series_description[:64]
    dataset.ContentCreatorName = ""
    return dataset


def _registration_item(reference: SeriesReference, frame_to_registration_lps: np.ndarray) -> Dataset:
    matrix = Dataset()
    matrix.FrameOfReferenceTransformationMatrixType = classify_matrix(frame_to_registration_lps)
    # auto_format keeps each value within DS's 16 characters (about 1e-11 mm for patient coordinates)
    matrix.FrameOfReferenceTransformationMatrix = [
        DSfloat(float(v), auto_format=True) for v in frame_to_registration_lps.reshape(-1)
    ]
    matrix_registration = Dataset()
    matrix_registration.RegistrationTypeCodeSequence = DicomSequence([])
    matrix_registration.MatrixSequence = DicomSequence([matrix])
    item = Dataset()
    item.FrameOfReferenceUID = reference.frame_of_reference_uid
    if reference.sop_instance_uids:
        item.ReferencedImageSequence = DicomSequence(_instance_items(reference))
    item.MatrixRegistrationSequence = DicomSequence([matrix_registration])
    return item


def _series_item(reference: SeriesReference) -> Dataset:
    item = Dataset()
    item.SeriesInstanceUID = reference.series_instance_uid
    item.ReferencedInstanceSequence = DicomSequence(_instance_items(reference))
    return item


def _instance_items(reference: SeriesReference) -> list[Dataset]:
    items = []
    for instance_uid in reference.sop_instance_uids:
        item = Dataset()
        item.ReferencedSOPClassUID = reference.sop_class_uid
        item.ReferencedSOPInstanceUID = instance_uid
        items.append(item)
    return items
