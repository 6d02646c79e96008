"""Point lists in CSV files: ``x,y,z[,label]`` per line, RAS millimetres unless declared LPS.

Format read by :func:`read_points_csv`:

* One point per line: three numbers and an optional label, separated by commas.
* An optional header line naming the columns (``x,y,z,label``, in any order; ``r,a,s`` or
  ``l,p,s`` also name the coordinate columns and declare the frame).
* Lines starting with ``#`` are comments; a comment ``# coordinateSystem = LPS`` (or ``RAS``) declares
  the frame, as in Slicer's ``.fcsv`` files. Without a declaration the points are RAS.

Slicer markups files (``.mrk.json``, ``.fcsv``) are read with Slicer's own markups storage nodes:
see ``mrml.load_points_file``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import LandmarkError
from .files import check_input_file, write_text_atomic
from .geometry import lps_to_ras_points
from .landmarks import MAX_COORDINATE_MM

logger = logging.getLogger(__name__)

_FRAME_DECLARATION = re.compile(r"coordinate\s*system\s*[:=]\s*(RAS|LPS)\b", re.IGNORECASE)
_HEADER_FRAMES = {("x", "y", "z"): None, ("r", "a", "s"): "RAS", ("l", "p", "s"): "LPS"}


@dataclass(frozen=True, eq=False)
class PointList:
    """Points read from a file.

    Attributes
    ----------
    points_ras : (N, 3) ndarray, mm, RAS
    labels : list of str
        One per point; empty strings where the file gave none.
    source_frame : str
        "RAS" or "LPS": the frame the file stored.
    """

    points_ras: np.ndarray
    labels: list = field(default_factory=list)
    source_frame: str = "RAS"


def read_points_csv(path) -> PointList:
    """Read a CSV point list (see the module docstring for the format).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    PointList

    Raises
    ------
    LandmarkError
        If a line does not hold three numbers, a value is not finite, the header is not understood,
        or the file has no points.
    FileNotFoundError
    """
    path = check_input_file(path, "points file")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    frame = _declared_frame(text)
    rows = [row for row in csv.reader(io.StringIO(text)) if row and not row[0].lstrip().startswith("#")]
    rows = [[cell.strip() for cell in row] for row in rows if any(cell.strip() for cell in row)]
    columns = (0, 1, 2)
    label_column: int | None = 3
    if rows and not _is_number(rows[0][0]):
        columns, label_column, header_frame = _parse_header(rows.pop(0), path)
        frame = header_frame or frame
    points, labels = [], []
    for number, row in enumerate(rows, start=1):
        points.append(_coordinates(row, columns, path, number))
        labels.append(row[label_column] if label_column is not None and label_column < len(row) else "")
    if not points:
        raise LandmarkError(f"{path}: no points found (expected lines of x,y,z[,label])")
    array = np.array(points)
    return PointList(lps_to_ras_points(array) if frame == "LPS" else array, labels, frame)


def write_points_csv(path, points_ras, labels=None, *, force: bool = False) -> Path:
    """Write points as ``x,y,z,label`` lines in RAS with a header and a frame declaration.

    Parameters
    ----------
    path : str or Path
    points_ras : (N, 3) array_like, mm, RAS
    labels : sequence of str, optional
    force : bool
        Overwrite an existing file.
    """
    points = np.asarray(points_ras, dtype=float)
    if points.ndim != 2 or points.shape[1] != 3:
        raise LandmarkError(f"points must be an (N, 3) array, got shape {points.shape}")
    labels = list(labels) if labels is not None else [""] * len(points)
    buffer = io.StringIO()
    buffer.write("# coordinateSystem = RAS\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["x", "y", "z", "label"])
    for point, label in zip(points, labels, strict=True):
        writer.writerow([f"{value:.17g}" for value in point] + [label])
    return write_text_atomic(path, buffer.getvalue(), force=force)


def _declared_frame(text: str) -> str:
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    declared = _FRAME_DECLARATION.search(comments)
    return declared.group(1).upper() if declared else "RAS"


def _parse_header(header: list, path: Path) -> tuple[tuple[int, int, int], int | None, str | None]:
    names = [cell.lower() for cell in header]
    for axes, frame in _HEADER_FRAMES.items():
        if all(axis in names for axis in axes):
            label_column = names.index("label") if "label" in names else None
            x, y, z = (names.index(axis) for axis in axes)
            return (x, y, z), label_column, frame
    raise LandmarkError(f"{path}: header {header} does not name x,y,z (or r,a,s / l,p,s) columns")


def _coordinates(row: list, columns, path: Path, number: int) -> list[float]:
    try:
        values = [float(row[column]) for column in columns]
    except (IndexError, ValueError):
        raise LandmarkError(f"{path}: point {number} ({','.join(row)!r}) does not hold three numbers x,y,z") from None
    if not np.all(np.isfinite(values)):
        raise LandmarkError(f"{path}: point {number} has a non-finite coordinate: {values}")
    if np.any(np.abs(values) > MAX_COORDINATE_MM):
        raise LandmarkError(f"{path}: point {number} has a coordinate beyond {MAX_COORDINATE_MM:g} mm: {values}")
    return values


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
