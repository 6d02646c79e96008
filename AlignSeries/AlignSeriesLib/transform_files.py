"""Plain-text transform files: 4x4 "to parent" matrices and FSL FLIRT matrices.

Every function here speaks ``moving_to_fixed_ras``: the matrix that maps moving RAS points onto fixed
RAS points (Slicer's "to parent" matrix of the moving volume). On disk:

``.json``
    ``{"moving_to_fixed_ras": [[4 numbers] x 4], "frame": "RAS", ...}``; the LPS variant stores
    ``"moving_to_fixed_lps"`` with ``"frame": "LPS"`` (the same transform expressed in LPS).
``.mat4``
    Four lines of four numbers, RAS. ``#`` starts a comment; a comment ``# frame: LPS`` declares an
    LPS matrix.
``.mat`` (FSL FLIRT)
    Four lines of four numbers mapping *scaled-voxel* coordinates of the ``-in`` (moving) image to
    those of the ``-ref`` (fixed) image; converting needs both images' geometries
    (:func:`flirt_to_ras`).

ITK files (``.h5``, ``.tfm``, ``.txt``) are "from parent" LPS transforms written and read by Slicer's
transform storage node: see ``mrml_files.read_transform_file`` / ``mrml_files.write_transform_file``.
All writers go through :func:`files.atomic_output` (no partial files, no overwrite without ``force``).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from .errors import GeometryError, TransformFileError
from .files import check_input_file, write_text_atomic
from .geometry import VolumeGeometry, as_matrix4, lps_to_ras_transform, ras_to_lps_transform

logger = logging.getLogger(__name__)

FRAMES = ("RAS", "LPS")
MATRIX_SUFFIXES = (".json", ".mat4")
FLIRT_SUFFIXES = (".mat",)
ITK_SUFFIXES = (".h5", ".hdf5", ".tfm", ".txt")
REG_SUFFIXES = (".dcm",)

_FRAME_DECLARATION = re.compile(r"frame\s*[:=]\s*(RAS|LPS)\b", re.IGNORECASE)


def transform_file_kind(path) -> str:
    """Classify a transform file name: "matrix" (.json/.mat4), "flirt" (.mat), "itk" (.h5/.tfm/.txt), "reg" (.dcm).

    "reg" is a DICOM Spatial Registration object (:mod:`AlignSeriesLib.dicom.reg`).

    Raises
    ------
    TransformFileError
        For any other suffix.
    """
    suffix = Path(path).suffix.lower()
    kinds = (("matrix", MATRIX_SUFFIXES), ("flirt", FLIRT_SUFFIXES), ("itk", ITK_SUFFIXES), ("reg", REG_SUFFIXES))
    for kind, suffixes in kinds:
        if suffix in suffixes:
            return kind
    known = ", ".join(MATRIX_SUFFIXES + FLIRT_SUFFIXES + ITK_SUFFIXES + REG_SUFFIXES)
    raise TransformFileError(f"{path}: unknown transform file type {suffix!r}; use one of {known}")


# -- 4x4 matrix files -------------------------------------------------------------------------------


def write_matrix_file(path, moving_to_fixed_ras, *, frame: str = "RAS", force: bool = False,
                      description: str | None = None) -> Path:
    """Write a moving-to-fixed matrix as ``.json`` or ``.mat4``, in RAS or (declared) LPS.

    Parameters
    ----------
    path : str or Path
        Ends in ``.json`` or ``.mat4``.
    moving_to_fixed_ras : (4, 4) array_like
    frame : {"RAS", "LPS"}
        Frame of the stored numbers; LPS stores ``ras_to_lps_transform(moving_to_fixed_ras)``.
    force : bool
        Overwrite an existing file.
    description : str, optional
        Free text kept in the file (JSON field or ``.mat4`` comment).

    Raises
    ------
    TransformFileError, GeometryError, OutputExistsError
    """
    path = Path(path)
    matrix = _stored_matrix(as_matrix4(moving_to_fixed_ras, "moving_to_fixed_ras"), frame)
    suffix = path.suffix.lower()
    if suffix == ".json":
        document = {
            f"moving_to_fixed_{frame.lower()}": matrix.tolist(),
            "frame": frame,
            "convention": "maps moving points to fixed points (Slicer 'to parent')",
        }
        if description:
            document["description"] = description
        text = json.dumps(document, indent=2) + "\n"
    elif suffix == ".mat4":
        header = [f"# moving_to_fixed, frame: {frame}"] + ([f"# {description}"] if description else [])
        text = "\n".join(header) + "\n" + _matrix_text(matrix)
    else:
        raise TransformFileError(f"{path}: a matrix file must end in .json or .mat4")
    return write_text_atomic(path, text, force=force)


def read_matrix_file(path) -> np.ndarray:
    """Read a ``.json`` or ``.mat4`` matrix file; returns ``moving_to_fixed_ras`` (4, 4).

    Raises
    ------
    TransformFileError
        If the file is not valid JSON / four rows of four numbers, declares an unknown frame, or the
        matrix is not an invertible affine.
    FileNotFoundError
    """
    path = check_input_file(path, "transform file")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".json":
        matrix, frame = _parse_json(text, path)
    elif path.suffix.lower() == ".mat4":
        frame = _declared_frame(text)
        matrix = _parse_matrix_text(text, path)
    else:
        raise TransformFileError(f"{path}: a matrix file must end in .json or .mat4")
    matrix = _validated(matrix, path)
    return lps_to_ras_transform(matrix) if frame == "LPS" else matrix


def _declared_frame(text: str) -> str:
    """The frame a ``# frame: LPS`` comment declares, RAS when none does."""
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    declared = _FRAME_DECLARATION.search(comments)
    return declared.group(1).upper() if declared else "RAS"


def _stored_matrix(moving_to_fixed_ras: np.ndarray, frame: str) -> np.ndarray:
    if frame not in FRAMES:
        raise TransformFileError(f"unknown frame {frame!r}; expected RAS or LPS")
    return ras_to_lps_transform(moving_to_fixed_ras) if frame == "LPS" else moving_to_fixed_ras


def _parse_json(text: str, path: Path) -> tuple[np.ndarray, str]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise TransformFileError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise TransformFileError(f"{path}: expected a JSON object with 'moving_to_fixed_ras'")
    frame = str(document.get("frame", "RAS")).upper()
    if frame not in FRAMES:
        raise TransformFileError(f"{path}: unknown frame {document.get('frame')!r}; expected RAS or LPS")
    key = f"moving_to_fixed_{frame.lower()}"
    if key not in document:
        raise TransformFileError(f"{path}: frame is {frame} but the key {key!r} is missing")
    return document[key], frame


def _parse_matrix_text(text: str, path: Path) -> np.ndarray:
    """Four rows of four numbers; ``#`` comments and blank lines ignored, commas allowed."""
    rows = []
    for line in text.splitlines():
        content = line.split("#", 1)[0].replace(",", " ").split()
        if content:
            try:
                rows.append([float(value) for value in content])
            except ValueError:
                raise TransformFileError(f"{path}: not a number in line {line.strip()!r}") from None
    if len(rows) != 4 or any(len(row) != 4 for row in rows):
        shape = [len(row) for row in rows]
        raise TransformFileError(f"{path}: expected 4 lines of 4 numbers, got lines of {shape} numbers")
    return np.array(rows)


def _validated(matrix, path: Path) -> np.ndarray:
    try:
        return as_matrix4(matrix, f"{path} matrix")
    except GeometryError as error:
        raise TransformFileError(str(error)) from None


def _matrix_text(matrix: np.ndarray) -> str:
    return "".join(" ".join(f"{value:.17g}" for value in row) + "\n" for row in matrix)


# -- FSL FLIRT --------------------------------------------------------------------------------------


def fsl_scaled_from_ijk(geometry: VolumeGeometry) -> np.ndarray:
    """4x4 matrix from voxel index ``(i, j, k)`` to FSL's scaled-voxel coordinates (mm).

    FSL scales each index by the voxel size and, when the image's voxel-to-world matrix has a
    positive determinant ("neurological" storage), first flips the i axis about the grid's center:

    ``x = s_i * (N_i - 1 - i)`` if ``det(ijk_to_ras[:3, :3]) > 0``, else ``x = s_i * i``;
    ``y = s_j * j``; ``z = s_k * k``.

    (``s`` are the voxel sizes, the column norms of ``ijk_to_ras``; the sform/qform determinant
    FSL checks has the sign of ``det(ijk_to_ras)``.)
    """
    matrix = np.diag([*geometry.spacing, 1.0])
    if np.linalg.det(geometry.ijk_to_ras[:3, :3]) > 0:
        flip = np.eye(4)
        flip[0, 0] = -1.0
        flip[0, 3] = geometry.dimensions[0] - 1
        matrix = matrix @ flip
    return matrix


def flirt_to_ras(flirt_matrix, moving_geometry: VolumeGeometry, fixed_geometry: VolumeGeometry) -> np.ndarray:
    """Convert a FLIRT matrix (``-in`` moving, ``-ref`` fixed) to ``moving_to_fixed_ras``.

    ``moving_to_fixed_ras = fixed.ijk_to_ras @ inv(S_fixed) @ flirt @ S_moving @ moving.ras_to_ijk``
    with ``S = fsl_scaled_from_ijk(geometry)``.

    Parameters
    ----------
    flirt_matrix : (4, 4) array_like
        Maps moving scaled-voxel mm to fixed scaled-voxel mm.
    moving_geometry, fixed_geometry : VolumeGeometry
        The images given to FLIRT as ``-in`` and ``-ref``.

    Returns
    -------
    (4, 4) ndarray
    """
    flirt = as_matrix4(flirt_matrix, "FLIRT matrix")
    fixed_ijk_from_scaled = np.linalg.inv(fsl_scaled_from_ijk(fixed_geometry))
    return (fixed_geometry.ijk_to_ras @ fixed_ijk_from_scaled @ flirt
            @ fsl_scaled_from_ijk(moving_geometry) @ moving_geometry.ras_to_ijk)


def ras_to_flirt(moving_to_fixed_ras, moving_geometry: VolumeGeometry, fixed_geometry: VolumeGeometry) -> np.ndarray:
    """Inverse of :func:`flirt_to_ras`: the FLIRT matrix for ``flirt -in moving -ref fixed -init``."""
    matrix = as_matrix4(moving_to_fixed_ras, "moving_to_fixed_ras")
    moving_ijk_from_scaled = np.linalg.inv(fsl_scaled_from_ijk(moving_geometry))
    return (fsl_scaled_from_ijk(fixed_geometry) @ fixed_geometry.ras_to_ijk @ matrix
            @ moving_geometry.ijk_to_ras @ moving_ijk_from_scaled)


def read_flirt_file(path, moving_geometry: VolumeGeometry, fixed_geometry: VolumeGeometry) -> np.ndarray:
    """Read a FLIRT ``.mat`` file; returns ``moving_to_fixed_ras`` (see :func:`flirt_to_ras`)."""
    path = check_input_file(path, "FLIRT matrix file")
    flirt = _validated(_parse_matrix_text(path.read_text(encoding="utf-8", errors="replace"), path), path)
    return flirt_to_ras(flirt, moving_geometry, fixed_geometry)


def write_flirt_file(path, moving_to_fixed_ras, moving_geometry: VolumeGeometry, fixed_geometry: VolumeGeometry, *,
                     force: bool = False) -> Path:
    """Write ``moving_to_fixed_ras`` as a FLIRT ``.mat`` file for ``-in moving -ref fixed``."""
    return write_text_atomic(path, _matrix_text(ras_to_flirt(moving_to_fixed_ras, moving_geometry, fixed_geometry)),
                             force=force)


# -- dispatch ---------------------------------------------------------------------------------------


def read_transform(path, *, moving_geometry: VolumeGeometry | None = None,
                   fixed_geometry: VolumeGeometry | None = None) -> np.ndarray:
    """Read any non-ITK transform file by suffix; returns ``moving_to_fixed_ras``.

    Parameters
    ----------
    path : str or Path
        ``.json``, ``.mat4`` or FLIRT ``.mat``.
    moving_geometry, fixed_geometry : VolumeGeometry, optional
        Required for FLIRT files.

    Raises
    ------
    TransformFileError
        For ITK files (read them with ``mrml_files.read_transform_file``), unknown suffixes, a FLIRT file
        without geometries, or unreadable content.
    """
    kind = transform_file_kind(path)
    if kind == "matrix":
        return read_matrix_file(path)
    if kind == "flirt":
        return read_flirt_file(path, *_flirt_geometries(path, moving_geometry, fixed_geometry))
    raise TransformFileError(f"{path}: {kind.upper()} transform files are read through Slicer "
                             "(mrml_files.read_transform_file; a DICOM REG relates frames: "
                             "use transform --registration)")


def write_transform(path, moving_to_fixed_ras, *, force: bool = False, frame: str = "RAS",
                    moving_geometry: VolumeGeometry | None = None,
                    fixed_geometry: VolumeGeometry | None = None) -> Path:
    """Write a non-ITK transform file chosen by suffix (see :func:`read_transform`)."""
    kind = transform_file_kind(path)
    if kind == "matrix":
        return write_matrix_file(path, moving_to_fixed_ras, frame=frame, force=force)
    if kind == "flirt":
        moving, fixed = _flirt_geometries(path, moving_geometry, fixed_geometry)
        return write_flirt_file(path, moving_to_fixed_ras, moving, fixed, force=force)
    raise TransformFileError(f"{path}: {kind.upper()} transform files are written through Slicer "
                             "(mrml.write_transform_file)")


def _flirt_geometries(path, moving_geometry, fixed_geometry) -> tuple[VolumeGeometry, VolumeGeometry]:
    if moving_geometry is None or fixed_geometry is None:
        raise TransformFileError(
            f"{path}: a FLIRT matrix is in scaled-voxel coordinates; converting it needs the geometries of "
            "both images (-in = moving, -ref = fixed)"
        )
    return moving_geometry, fixed_geometry

