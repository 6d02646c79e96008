"""Label tables: the name, codes and colour of each value of a label map.

Two formats are read (:func:`read_label_table`):

* CSV or TSV (``.csv``, ``.tsv``; the separator is taken from the first data line): ``value,name``,
  optionally followed by ``category code,type code`` and/or ``colour``::

      value,name,category,type,colour
      1,liver,SCT:123037004:Anatomical Structure,SCT:10200004:Liver,#dd8265
      2,spleen,123037004,78961009,221 130 101

  A code is ``SCHEME:VALUE:MEANING``, ``SCHEME:VALUE``, or a SNOMED CT ``VALUE`` or ``VALUE:MEANING``;
  without a meaning the type code's meaning is the label's name and the category's comes from
  :data:`KNOWN_CATEGORY_MEANINGS` (else the code value). A colour is ``#rrggbb`` or three numbers 0..255
  separated by spaces or semicolons. A first line whose value is not a whole number is a header; lines
  starting with ``#`` are comments.
* A Slicer colour table (``.ctbl``, ``.txt``): ``value name r g b a`` per line, ``#`` comments.

Label values are whole numbers 1..65535 (0 is the background and is skipped when listed).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import AlignSeriesError
from .files import check_input_file

#: Largest label value a table may name (16-bit label maps and DICOM SEG segment numbers).
MAX_LABEL_VALUE = 65535

#: Meanings of the SNOMED CT segmented-property categories in common use, for codes given without one.
KNOWN_CATEGORY_MEANINGS = {
    "85756007": "Tissue",
    "123037004": "Anatomical Structure",
    "91723000": "Anatomical Structure",
    "49755003": "Morphologically Altered Structure",
    "260787004": "Physical object",
    "246464006": "Function",
}

#: Suffixes read as Slicer colour tables.
SLICER_COLOR_TABLE_SUFFIXES = (".ctbl", ".txt")


@dataclass(frozen=True)
class Code:
    """A coded concept: ``value`` in ``scheme`` (e.g. ``SCT``), with its ``meaning``."""

    value: str
    scheme: str
    meaning: str

    def to_dict(self) -> dict:
        """JSON-ready ``{"value", "scheme", "meaning"}``."""
        return {"value": self.value, "scheme": self.scheme, "meaning": self.meaning}


@dataclass(frozen=True)
class Label:
    """One label of a label map.

    Attributes
    ----------
    value : int
        The voxel value, 1..65535.
    name : str
    category, type : Code or None
        Segmented property category and type (SNOMED CT by default).
    color : (r, g, b) of int 0..255, or None
    """

    value: int
    name: str
    category: Code | None = None
    type: Code | None = None
    color: tuple[int, int, int] | None = None

    def to_dict(self) -> dict:
        """JSON-ready description (codes and colour only when known)."""
        entry: dict = {"value": self.value, "name": self.name}
        if self.category is not None:
            entry["category"] = self.category.to_dict()
        if self.type is not None:
            entry["type"] = self.type.to_dict()
        if self.color is not None:
            entry["color"] = list(self.color)
        return entry


class LabelTable:
    """The labels of a label map by value (see the module docstring for the file formats).

    Parameters
    ----------
    labels : iterable of Label
        Values must be unique.
    source : str
        Where the table came from, for messages.
    """

    def __init__(self, labels: Iterable[Label], source: str = "label table"):
        self.source = source
        self.labels: dict[int, Label] = {}
        for label in labels:
            if label.value in self.labels:
                raise AlignSeriesError(f"{source}: label value {label.value} is listed twice")
            self.labels[label.value] = label

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, value: object) -> bool:
        return value in self.labels

    def get(self, value: int) -> Label | None:
        """The label of ``value``, or None."""
        return self.labels.get(int(value))

    def name_of(self, value: int) -> str:
        """The label's name, or ``Segment <value>`` when the table does not list it."""
        label = self.get(value)
        return label.name if label is not None else f"Segment {int(value)}"

    def to_json(self) -> str:
        """The table as JSON: ``{"labels": [ {value, name, category, type, color}, … ]}``, by value."""
        return json.dumps({"labels": [self.labels[value].to_dict() for value in sorted(self.labels)]}, indent=2)


def label_table_from_json(text: str, source: str = "label table") -> LabelTable:
    """The table :meth:`LabelTable.to_json` wrote."""
    def code(entry: dict | None) -> Code | None:
        return None if entry is None else Code(entry["value"], entry["scheme"], entry["meaning"])

    try:
        entries = json.loads(text)["labels"]
        return LabelTable((Label(int(e["value"]), str(e["name"]), code(e.get("category")), code(e.get("type")),
                                 tuple(e["color"]) if e.get("color") else None) for e in entries), source)
    except (ValueError, KeyError, TypeError) as error:
        raise AlignSeriesError(f"{source}: not a label table in JSON ({error})") from None


def read_label_table(path) -> LabelTable:
    """Read a CSV/TSV label table or a Slicer colour table (``.ctbl``/``.txt``).

    Raises
    ------
    AlignSeriesError
        Naming the file and line: a value that is not a whole number in 1..65535, a missing name,
        a malformed code or colour, a value listed twice.
    """
    path = check_input_file(path, "label table")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise AlignSeriesError(f"cannot read label table {path}: {error}") from None
    if path.suffix.lower() in SLICER_COLOR_TABLE_SUFFIXES:
        return LabelTable(_slicer_labels(text, path), str(path))
    return LabelTable(_csv_labels(text, path), str(path))


def _slicer_labels(text: str, path: Path) -> list[Label]:
    labels = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path} line {number}"
        if len(fields) < 5:
            raise AlignSeriesError(f"{where}: expected 'value name r g b [a]' (Slicer colour table), got {line!r}")
        value = _label_value(fields[0], where)
        if value:
            labels.append(Label(value, fields[1], color=_rgb(fields[2:5], where)))
    return labels


def _csv_labels(text: str, path: Path) -> list[Label]:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise AlignSeriesError(f"label table {path} lists no labels")
    delimiter = "\t" if "\t" in lines[0] else ";" if ";" in lines[0] and "," not in lines[0] else ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    if rows and not re.fullmatch(r"\s*[-+.\deE]+\s*", rows[0][0]):
        rows = rows[1:]  # a header line
    labels = []
    for number, row in enumerate(rows, start=1):
        label = _csv_label([field.strip() for field in row], f"{path} data row {number}")
        if label is not None:
            labels.append(label)
    if not labels:
        raise AlignSeriesError(f"label table {path} lists no labels (only a header or the background 0)")
    return labels


def _csv_label(fields: list[str], where: str) -> Label | None:
    if len(fields) < 2 or not fields[1]:
        raise AlignSeriesError(f"{where}: expected 'value,name[,category code,type code][,colour]', got {fields}")
    value = _label_value(fields[0], where)
    if not value:
        return None
    name, rest = fields[1], list(fields[2:])
    color = _rgb(re.split(r"[\s;]+", rest.pop()), where) if rest and _looks_like_color(rest[-1]) else None
    if len(rest) not in (0, 2):
        raise AlignSeriesError(f"{where}: give both a category code and a type code (or neither), got {rest}")
    category = _code(rest[0], where, KNOWN_CATEGORY_MEANINGS.get(rest[0].split(":")[-1])) if rest else None
    kind = _code(rest[1], where, name) if rest else None
    return Label(value, name, category, kind, color)


def _label_value(text: str, where: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()) or int(text) > MAX_LABEL_VALUE:
        raise AlignSeriesError(f"{where}: label value {text!r} is not a whole number in 0..{MAX_LABEL_VALUE}")
    return int(text)


def _looks_like_color(text: str) -> bool:
    parts = re.split(r"[\s;]+", text.strip())
    return text.startswith("#") or (len(parts) == 3 and all(part.isdigit() for part in parts))


def _rgb(fields: list[str], where: str) -> tuple[int, int, int]:
    if len(fields) == 1 and re.fullmatch(r"#[0-9a-fA-F]{6}", fields[0]):
        return (int(fields[0][1:3], 16), int(fields[0][3:5], 16), int(fields[0][5:7], 16))
    if len(fields) != 3 or not all(re.fullmatch(r"\d+", field) and int(field) <= 255 for field in fields):
        raise AlignSeriesError(f"{where}: colour {' '.join(fields)!r} is not #rrggbb or three numbers 0..255")
    red, green, blue = (int(field) for field in fields)
    return red, green, blue


def _code(text: str, where: str, default_meaning: str | None) -> Code:
    """``SCHEME:VALUE:MEANING``, ``SCHEME:VALUE``, or a SNOMED CT ``VALUE`` or ``VALUE:MEANING``."""
    parts = text.split(":", 2)
    if len(parts) == 1 or (len(parts) == 2 and parts[0].strip().isdigit()):  # VALUE or VALUE:MEANING (SNOMED CT)
        parts = ["SCT", *parts]
    scheme, value = parts[0].strip(), parts[1].strip()
    meaning = parts[2].strip() if len(parts) == 3 else (default_meaning or value)
    if not scheme or not value or not meaning:
        raise AlignSeriesError(f"{where}: code {text!r} is not SCHEME:VALUE[:MEANING] or a SNOMED CT value")
    return Code(value, scheme, meaning)
