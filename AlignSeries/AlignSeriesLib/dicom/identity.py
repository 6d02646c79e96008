"""The identifiers of a DICOM file as AlignSeries uses them, with deterministic substitutes for anonymized files.

Anonymizers and AI pipelines blank or remove Type 1 UIDs. A geometrically valid series must still load: an
empty SOPInstanceUID falls back to the file meta's MediaStorageSOPInstanceUID, then to a UID derived from the
file's bytes; an empty SeriesInstanceUID or StudyInstanceUID to a UID derived from the other series or study
elements; an empty FrameOfReferenceUID is unknown, never equal to another. Each substitution is recorded
(:class:`Substitution`) so that the series reports it in one warning per kind.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset

if TYPE_CHECKING:
    from .headers import SliceHeader

#: Namespace of the UIDs derived for files whose own are empty or missing (anonymized data): RFC 4122
#: name-based UUIDs under the 2.25 root, so that the same file gives the same UID on every run.
DERIVED_UID_NAMESPACE = uuid.UUID("6f1c1c1e-4c55-4b8e-9a8e-2f3a5d0b7c19")

_SOP_INSTANCE_UID = "SOPInstanceUID (0008,0018)"
_SERIES_INSTANCE_UID = "SeriesInstanceUID (0020,000E)"
_STUDY_INSTANCE_UID = "StudyInstanceUID (0020,000D)"
_FRAME_OF_REFERENCE_UID = "FrameOfReferenceUID (0020,0052)"
#: Header elements that identify one series when its SeriesInstanceUID is empty (with the study's).
_SERIES_KEYWORDS = ("SeriesNumber", "SeriesDescription", "Modality", "SeriesDate", "SeriesTime", "FrameOfReferenceUID")
#: Header elements that identify one study when its StudyInstanceUID is empty.
_STUDY_KEYWORDS = ("PatientID", "PatientName", "StudyDate", "StudyTime", "AccessionNumber", "StudyID")


@dataclass(frozen=True)
class Substitution:
    """An empty or missing identifier of a file, and what was used instead (reported in one warning per kind).

    Attributes
    ----------
    element : str
        The DICOM element, e.g. ``"SOPInstanceUID (0008,0018)"``.
    used : str
        What stands for it, e.g. ``"the file meta's MediaStorageSOPInstanceUID (0002,0003)"``.
    """

    element: str
    used: str


@dataclass(frozen=True)
class Identity:
    """The UIDs of one file as AlignSeries uses them, with the substitutions made for empty or missing ones.

    ``frame_of_reference_uid`` is None when unknown: never equal to another unknown frame.
    """

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str | None
    substitutions: tuple[Substitution, ...] = ()


def derived_uid(*parts: str) -> str:
    """A DICOM UID derived from ``parts`` alone: ``2.25.`` and a name-based UUID, the same on every run."""
    return f"2.25.{uuid.uuid5(DERIVED_UID_NAMESPACE, chr(0).join(parts)).int}"


def file_identity(path: str, dataset: Dataset) -> Identity:
    """The UIDs of a file, each empty or missing one replaced deterministically.

    SOPInstanceUID falls back to the file meta's MediaStorageSOPInstanceUID, then to a UID derived from the
    file's bytes; an empty SeriesInstanceUID (StudyInstanceUID) to a UID derived from the other series (study)
    elements, so that the files of one series still group together; an empty FrameOfReferenceUID is unknown.
    """
    substitutions = []
    sop_uid = uid_value(dataset, "SOPInstanceUID")
    if not sop_uid:
        sop_uid = uid_value(getattr(dataset, "file_meta", Dataset()), "MediaStorageSOPInstanceUID")
        used = "the file meta's MediaStorageSOPInstanceUID (0002,0003)"
        if not sop_uid:
            sop_uid = derived_uid("SOPInstanceUID", _content_digest(path))
            used = "a UID derived from the file's bytes (2.25.…, the same on every run)"
        substitutions.append(Substitution(_SOP_INSTANCE_UID, used))
    study_uid = uid_value(dataset, "StudyInstanceUID")
    if not study_uid:
        study_uid = derived_uid("StudyInstanceUID", *_element_texts(dataset, _STUDY_KEYWORDS))
        substitutions.append(Substitution(_STUDY_INSTANCE_UID,
                                          f"{study_uid}, derived from {', '.join(_STUDY_KEYWORDS)}"))
    series_uid = uid_value(dataset, "SeriesInstanceUID")
    if not series_uid:
        series_uid = derived_uid("SeriesInstanceUID", study_uid, *_element_texts(dataset, _SERIES_KEYWORDS))
        substitutions.append(Substitution(
            _SERIES_INSTANCE_UID, f"{series_uid}, derived from StudyInstanceUID and {', '.join(_SERIES_KEYWORDS)} "
                                  "(files that agree on them form one series)"))
    frame_uid = uid_value(dataset, "FrameOfReferenceUID") or None
    if frame_uid is None:
        substitutions.append(Substitution(
            _FRAME_OF_REFERENCE_UID, "none: the frame of reference is unknown, the same as no other series' "
                                     "(align with landmarks, a REG or a centers/moments pre-alignment)"))
    return Identity(sop_uid, series_uid, study_uid, frame_uid, tuple(substitutions))


def used_uids(header: SliceHeader) -> dict[str, str]:
    """The identifiers a slice is known by, for writers that copy them from its file (anonymized files' are empty).

    An unknown frame of reference gets a UID derived from the series, so that every export of the series
    names one frame, and never the frame of another series.
    """
    frame_uid = header.frame_of_reference_uid or derived_uid("FrameOfReferenceUID", header.series_instance_uid)
    return {"SOPInstanceUID": header.sop_instance_uid, "SeriesInstanceUID": header.series_instance_uid,
            "StudyInstanceUID": header.study_instance_uid, "FrameOfReferenceUID": frame_uid}


def uid_value(dataset: Dataset, keyword: str) -> str:
    return str(dataset.get(keyword, "") or "").strip().rstrip(chr(0))


def _element_texts(dataset: Dataset, keywords: tuple[str, ...]) -> list[str]:
    return [str(dataset.get(keyword, "") or "").strip() for keyword in keywords]


def _content_digest(path: str) -> str:
    """SHA-256 of a file's bytes, read in chunks (bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()
