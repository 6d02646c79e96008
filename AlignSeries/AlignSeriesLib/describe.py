"""What ``alignseries info`` and the panel tell a person about a volume: the report, in dicts and text.

Core module (no ``slicer``): it describes a :class:`~AlignSeriesLib.dicom.series.DicomVolume` or a
bare :class:`~AlignSeriesLib.geometry.VolumeGeometry` (a volume file). The dict fields are the
DESIGN.md ``info`` contract plus ``summary``, ``orientation``, ``mirrored`` and ``origin_lines``,
which explain where the first voxel lies in LPS and RAS and why viewers may show another origin.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import AlignSeriesWarning, ProgressCallback
from .geometry import VolumeGeometry

if TYPE_CHECKING:  # describing a volume file imports no DICOM module (nor pydicom)
    from .dicom.series import DicomVolume


def dicom_volume_info(volume: DicomVolume) -> dict:
    """The ``info`` description of one DICOM volume (headers only).

    Parameters
    ----------
    volume : DicomVolume

    Returns
    -------
    dict
        ``name``, UIDs, ``files``, ``frames``, ``sop_instance_uids`` (per slice, in k order),
        ``dimensions``, ``spacing``, ``ijk_to_ras``, ``ijk_to_lps``, ``regularized``, ``warnings``,
        and the explanations of :func:`explained`.
    """
    return explained(volume.to_info_dict(), volume.geometry, regularized=volume.regularized,
                     instance_numbers=volume.instance_numbers, positions_lps=volume.slice_positions_lps)


def volume_file_info(path: str | Path, name: str, geometry: VolumeGeometry) -> dict:
    """The ``info`` description of one volume file (``.nrrd``, ``.nii``, ``.mha``) on its own grid.

    As for DICOM, ``files``, ``frames`` and ``sop_instance_uids`` have one entry per slice: the file,
    the slice's 1-based number in it (like a multi-frame file's frame), and no UID.
    """
    slices = geometry.dimensions[2]
    info = {"name": name, "series_instance_uid": None, "frame_of_reference_uid": None,
            "files": [str(path)] * slices, "frames": list(range(1, slices + 1)),
            "sop_instance_uids": [None] * slices, "regularized": False, "warnings": [], **geometry.to_dict()}
    return explained(info, geometry)


def explained(info: dict, geometry: VolumeGeometry, *, regularized: bool = False,
              instance_numbers: Sequence[int | None] = (), positions_lps=()) -> dict:
    """``info`` with a summary, handedness and the explanation of the origin added.

    Parameters
    ----------
    info : dict
        The contract fields; returned with ``summary``, ``orientation``, ``mirrored``, ``origin_lines``.
    geometry : VolumeGeometry
    regularized : bool
        The grid was resampled from an irregular acquisition: its first voxel is no DICOM slice's
        ImagePositionPatient, and the text says so.
    instance_numbers, positions_lps : sequences, one per source slice in k order
        Say which image a viewer that lists images by InstanceNumber shows first, and where it lies.
    """
    origin_lps, origin_ras = geometry.origin_lps, geometry.origin_ras
    info["summary"] = geometry.summary()
    info.setdefault("orientation", geometry.orientation)
    info.setdefault("mirrored", geometry.is_mirrored)
    where = ("the regularized grid's first voxel, no acquired slice's ImagePositionPatient" if regularized
             else "DICOM ImagePositionPatient")
    info["origin_lines"] = [
        f"slices ordered along the normal {np.round(geometry.directions_ras[:, 2], 4).tolist()} (RAS), "
        f"first slice at k=0",
        f"first voxel center: LPS {np.round(origin_lps, 3).tolist()} ({where}) = "
        f"RAS {np.round(origin_ras, 3).tolist()} (Slicer): x and y change sign between the two conventions",
    ]
    info["origin_lines"] += _instance_number_lines(instance_numbers, positions_lps)
    if geometry.is_mirrored:
        info["origin_lines"].append(
            f"mirrored grid: determinant {geometry.determinant:+.0f} (left-handed index axes); no rotation "
            "turns it into a right-handed grid, so it is kept as stored")
    return info


def _instance_number_lines(instance_numbers: Sequence[int | None], positions_lps) -> list[str]:
    """Where the image with the lowest InstanceNumber lies, when it is not the first slice along the normal."""
    numbered = [(number, k) for k, number in enumerate(instance_numbers) if number is not None]
    if not numbered or len({number for number, _ in numbered}) != len(numbered):  # none, or multi-frame repeats
        return []
    lowest, k = min(numbered)
    if k == 0:
        return [f"InstanceNumber {lowest} is the first slice along the normal (k=0)"]
    return [f"k=0 is InstanceNumber {instance_numbers[0]}; InstanceNumber {lowest}, which a viewer listing images "
            f"by number shows first, is slice k={k} at LPS {np.round(positions_lps[k], 3).tolist()}: "
            "a viewer that shows that image's ImagePositionPatient gives another origin"]


def volume_text(number: int, info: dict) -> str:
    """The ``info`` text of one volume (``info`` as :func:`dicom_volume_info` makes it), numbered from 1."""
    lines = [f"[{number}] {info['name']}",
             f"    {info['summary']}",
             f"    series {info['series_instance_uid']}",
             f"    frame of reference {info['frame_of_reference_uid']}"]
    if info.get("mosaic"):
        mosaic = info["mosaic"]
        lines.append(f"    mosaic: {mosaic['tiles']} tiles of {mosaic['tile_columns']}x{mosaic['tile_rows']} "
                     f"(from {mosaic['mosaic_columns']}x{mosaic['mosaic_rows']} images)")
    lines += [f"    {line}" for line in info.get("origin_lines", [])]
    if info.get("segments"):  # a DICOM SEG
        lines.append(f"    {info['seg_frames']} frames referencing series {', '.join(info['referenced_series_uids'])}")
        lines += [f"    segment {s['number']}: {s['name']} ({s['type']['meaning']})" for s in info["segments"]]
    lines += [f"    warning [{w['code']}]: {w['message']}" for w in info["warnings"]]
    return "\n".join(lines)


def summary_line(geometry: VolumeGeometry, frame_of_reference_uid: str | None,
                 warnings: Sequence[AlignSeriesWarning]) -> str:
    """One line for the panel: dimensions, spacing, orientation, frame of reference, warnings."""
    parts = [geometry.summary(),
             f"frame of reference {frame_of_reference_uid}" if frame_of_reference_uid else "no frame of reference",
             "; ".join(w.message for w in warnings) if warnings else "regular grid"]
    return " | ".join(parts)


def describe_dicom(paths, *, regularize: bool = True, regularize_spacing: float | None = None,
                   progress: ProgressCallback | None = None) -> list[dict]:
    """The ``alignseries info`` description of every volume in DICOM files and folders (headers only).

    Needs no MRML scene, VTK or Slicer: ``info`` on DICOM pays only for pydicom. ``progress(fraction) -> bool``
    follows the header scan; True cancels.
    """
    return describe_dicom_scan(paths, regularize=regularize, regularize_spacing=regularize_spacing,
                               progress=progress)["volumes"]


def describe_dicom_scan(paths, *, regularize: bool = True, regularize_spacing: float | None = None,
                        progress: ProgressCallback | None = None) -> dict:
    """As :func:`describe_dicom`, with what the scan skipped, reported once for all volumes.

    Returns
    -------
    dict
        ``volumes`` (as :func:`describe_dicom`), ``skipped`` (``{"path", "kind", "reason"}`` per skipped file)
        and ``warnings`` (one grouped ``skipped_file`` warning, "4 files skipped: 2 DICOMDIR, 2 raw data").
    """
    from .dicom.series import scan_dicom

    scan = scan_dicom(paths, regularize=regularize, regularize_spacing=regularize_spacing, progress=progress)
    warning = scan.skipped_warning()
    return {"volumes": [dicom_volume_info(volume) for volume in scan.volumes], "skipped": scan.skipped_info(),
            "warnings": [warning.to_dict()] if warning else []}
