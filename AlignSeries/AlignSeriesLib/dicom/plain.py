"""Plain DICOM files read without building a pydicom Dataset: the header scan's fast path.

Most series are stored as they are written: a 128-byte preamble and ``DICM``, an explicit VR little-endian
file meta group, then a little-endian dataset (explicit or implicit VR) ending with its pixel data. For such a
file :func:`read_plain` walks the element headers with :mod:`struct` (skipping sequences and long values
unread) and returns a :class:`PlainDataset`: the few element values the header scan asks for, decoded as
pydicom decodes them, behind the part of pydicom's ``Dataset`` interface that
:mod:`AlignSeriesLib.dicom.headers` uses. pydicom spends most of a scan parsing, converting and looking up
elements: 2.5 ms of CPU a file on the 2-core test machine, where the plain path takes 0.4 ms
(``Testing/benchmarks/bench_dicom_load.py``).

Anything else raises :class:`NotPlainError` and the caller reads the file with pydicom, as before: no preamble, big
endian or deflated syntaxes, values of a kind not decoded here (sequences, person names, non-ASCII text, a
value that is not a plain number), private elements asked for (Siemens CSA, GE), elements out of order, or
any element running past the end of the file. Decoded values are pydicom's for every value decoded here;
``Testing/test_dicom_plain.py`` compares the headers of both readers.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from typing import NamedTuple

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.uid import UID

#: Bytes read at a time while walking element headers (most headers fit in the first read).
READ_BYTES = 16384

#: Values up to this many bytes are kept while walking; longer ones only by offset (never decoded here).
KEPT_VALUE_BYTES = 1024

#: Undefined length (sequences, items, encapsulated pixel data).
UNDEFINED = 0xFFFFFFFF

_PREAMBLE = 128
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = {vr.encode(): vr for vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT",
                                         "UV")}
_SHORT_VRS = {vr.encode(): vr for vr in ("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT",
                                          "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US")}
_EXPLICIT_HEADER = struct.Struct("<HH2sH")  # group, element, VR, 2-byte length (explicit VR, short VRs)
_ITEM_HEADER = struct.Struct("<HHL")  # group, element, 4-byte length (items, delimiters)
_LENGTH = struct.Struct("<L")
#: VRs decoded as strings: multi-valued by backslash, trailing spaces and NULs not significant.
_STRING_VRS = frozenset(("AE", "AS", "CS", "DA", "DT", "LO", "SH", "TM", "UC", "UI"))
_BINARY_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
_INTEGER = re.compile(r"[+-]?[0-9]+")
_STRING_STRIP = {"LO": "\0 ", "SH": "\0 ", "UC": "\0 "}  # per value, as pydicom's text VRs; others as a whole


class NotPlainError(Exception):
    """The file (or a value asked for) is not one this reader decodes; read it with pydicom instead."""


class PlainElement(NamedTuple):
    """Where one element's value lies: ``value_tell`` and ``length`` as pydicom's raw elements have them."""

    vr: str
    value_tell: int | None
    length: int
    value: bytes | None


class PlainDataset:
    """The elements of one plain file, decoded on request as pydicom decodes them.

    Offers what :mod:`AlignSeriesLib.dicom.headers` asks of a pydicom ``Dataset``: ``get(keyword, default)``,
    ``in`` (keyword or tag), ``keys()``, ``get_item(tag, keep_deferred=True)`` and ``file_meta``. Values
    are ``str`` (string VRs), ``float`` (DS, FL, FD), ``int`` (IS, US, UL, SS, SL), or a ``list`` of them
    when the element holds several; an empty value is ``""`` for string VRs and None for the others.
    Anything else raises :class:`NotPlainError`.
    """

    def __init__(self, elements: dict[int, PlainElement], file_meta: PlainDataset | None = None):
        self._elements = elements
        self._file_meta = file_meta
        self._values: dict[int, object] = {}

    @property
    def file_meta(self) -> PlainDataset:
        if self._file_meta is None:
            raise NotPlainError("no file meta")
        return self._file_meta

    def keys(self) -> list[int]:
        return list(self._elements)

    def __contains__(self, key) -> bool:
        tag = _tag_of(key)
        if tag >> 16 & 1 and tag & 0xFFFF and tag in self._elements:
            raise NotPlainError("private element asked for")  # private blocks (Siemens CSA, GE) are pydicom's
        return tag in self._elements

    def __getitem__(self, key):
        raise NotPlainError(f"element {key} asked for as a DataElement")

    def __getattr__(self, keyword: str):
        if keyword.startswith("_"):
            raise AttributeError(keyword)
        raise NotPlainError(f"{keyword} asked for as an attribute")

    def private_block(self, *_):
        raise NotPlainError("private block asked for")

    def get_item(self, key, *, keep_deferred: bool = False) -> PlainElement:
        return self._elements[_tag_of(key)]

    def get(self, key, default=None):
        tag = _KEYWORD_TAGS.get(key) if isinstance(key, str) else None
        if tag is None:
            tag = _tag_of(key)
        if tag in self._values:
            return self._values[tag]
        element = self._elements.get(tag)
        if element is None:
            return default
        value = self._values[tag] = _decode(tag, element)
        return value


def _tag_of(key) -> int:
    if isinstance(key, str):
        tag = _keyword_tag(key)
        if tag is None:
            raise NotPlainError(f"unknown keyword {key}")
        return tag
    if isinstance(key, tuple):
        return key[0] << 16 | key[1]
    return int(key)


#: Tags of the keywords asked for so far.
_KEYWORD_TAGS: dict[str, int] = {}


def _keyword_tag(keyword: str) -> int | None:
    tag = tag_for_keyword(keyword)
    if tag is not None:
        _KEYWORD_TAGS[keyword] = tag
    return tag


@functools.lru_cache(maxsize=1024)
def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


@functools.lru_cache(maxsize=64)
def _implicit_vr(syntax: str) -> bool | None:
    """Whether a little-endian, non-deflated transfer syntax has implicit VRs; None for any other syntax."""
    uid = UID(syntax)
    if not uid.is_transfer_syntax or uid.is_deflated or not uid.is_little_endian:
        return None
    return uid.is_implicit_VR


def _decode(tag: int, element: PlainElement):
    """An element's value as pydicom gives it (see :class:`PlainDataset`), or NotPlainError."""
    if element.length == 0:
        return _decoded(tag, element.vr, b"")
    if element.value is None:
        raise NotPlainError(f"element {tag:08X} not kept")
    value = _decoded(tag, element.vr, element.value)
    return list(value) if isinstance(value, tuple) else value


@functools.lru_cache(maxsize=4096)
def _decoded(tag: int, vr: str, raw: bytes):
    """:func:`_decode` of a value, made once per distinct value (a series repeats most of them in every file);
    several values come as a tuple."""
    if vr != _dictionary_vr(tag):
        raise NotPlainError(f"element {tag:08X} has VR {vr}, not its dictionary's")
    if not raw:
        return "" if vr in _STRING_VRS else None
    if vr in _BINARY_FORMATS:
        size = struct.calcsize(_BINARY_FORMATS[vr])
        if len(raw) % size:
            raise NotPlainError(f"element {tag:08X}: {len(raw)} bytes of {vr}")
        numbers = struct.unpack(f"<{len(raw) // size}{_BINARY_FORMATS[vr]}", raw)
        return numbers[0] if len(numbers) == 1 else numbers
    if not raw.isascii() or b"\x1b" in raw:
        raise NotPlainError(f"element {tag:08X}: not plain ASCII text")
    text = raw.decode("ascii")
    if vr in ("DS", "IS"):
        return _number_string(tag, vr, text)
    if vr not in _STRING_VRS:
        raise NotPlainError(f"element {tag:08X}: VR {vr} not decoded here")
    strip = _STRING_STRIP.get(vr)
    values = [value.rstrip(strip) for value in text.split("\\")] if strip else text.rstrip(" \0").split("\\")
    return values[0] if len(values) == 1 else tuple(values)


def _number_string(tag: int, vr: str, text: str):
    """A DS (float) or IS (int) value, or a list of them; NotPlainError where pydicom would give a string."""
    parts = (text.strip() if vr == "DS" else text).rstrip(" \0").split("\\")
    try:
        if vr == "IS" and not all(_INTEGER.fullmatch(part.strip()) for part in parts):
            raise ValueError(text)
        numbers = tuple(float(part) if vr == "DS" else int(part) for part in parts)
    except ValueError:
        raise NotPlainError(f"element {tag:08X}: {vr} {text!r}") from None
    return numbers[0] if len(numbers) == 1 else numbers


class _Reader:
    """Bytes of an open file by absolute offset, read in windows of :data:`READ_BYTES`."""

    def __init__(self, file, size: int):
        self.file, self.size = file, size
        self.start, self.data = 0, b""

    def window(self, offset: int, count: int) -> tuple[bytes, int]:
        """A buffer holding ``count`` bytes from file offset ``offset``, and where they start in it."""
        if offset + count > self.size:
            raise NotPlainError("an element runs past the end of the file")
        if offset < self.start or offset + count > self.start + len(self.data):
            self.file.seek(offset)
            self.data, self.start = self.file.read(max(count, READ_BYTES)), offset
        return self.data, offset - self.start

    def bytes(self, offset: int, count: int) -> bytes:
        data, at = self.window(offset, count)
        return data[at:at + count]


def read_plain(path: str) -> PlainDataset:
    """The elements of a plain DICOM file (see the module docstring).

    Raises
    ------
    NotPlainError
        If the file is anything else (including unreadable): read it with pydicom.
    """
    try:
        with open(path, "rb") as file:
            reader = _Reader(file, os.fstat(file.fileno()).st_size)
            if reader.bytes(_PREAMBLE, 4) != b"DICM":
                raise NotPlainError("no DICM marker")
            meta, position = _walk(reader, _PREAMBLE + 4, implicit=False, group=0x0002)
            file_meta = PlainDataset(meta)
            syntax = file_meta.get("TransferSyntaxUID")
            implicit = _implicit_vr(syntax) if isinstance(syntax, str) and syntax else None
            if implicit is None:
                raise NotPlainError(f"transfer syntax {syntax!r}")
            elements, position = _walk(reader, position, implicit=implicit)
    except (OSError, struct.error, UnicodeDecodeError) as error:
        raise NotPlainError(str(error)) from None
    if position != reader.size:
        raise NotPlainError("bytes after the last element")
    return PlainDataset(elements, file_meta)


def _walk(reader: _Reader, position: int, *, implicit: bool, group: int | None = None,
          end: int | None = None) -> tuple[dict[int, PlainElement], int]:
    """Elements from ``position`` until ``end``, the end of the file, an item delimiter, or (``group``) the
    first element of another group; returns them and where the walk stopped."""
    elements: dict[int, PlainElement] = {}
    stop = reader.size if end is None else end
    previous = -1
    unpack_header, unpack_length, short_vrs = _EXPLICIT_HEADER.unpack_from, _LENGTH.unpack_from, _SHORT_VRS
    data, start = reader.data, reader.start  # the reader's window, refreshed whenever the reader moves it
    while position < stop:
        at = position - start
        if at < 0 or at + 12 > len(data):  # near the window's end (or a short final element): ask the reader
            data, at = reader.window(position, 8)
            start = reader.start
        tag_group, tag_element, vr_bytes, short_length = unpack_header(data, at)
        tag = tag_group << 16 | tag_element
        if group is not None and tag_group != group:
            break
        if tag == _ITEM_END:
            return elements, position + 8
        if tag <= previous or tag_group == 0xFFFE:
            raise NotPlainError(f"element {tag:08X} out of order")
        previous = tag
        if implicit:
            vr, length, value_tell = _dictionary_vr(tag) or "UN", unpack_length(data, at + 4)[0], position + 8
        elif vr_bytes in short_vrs:
            vr, length, value_tell = short_vrs[vr_bytes], short_length, position + 8
        elif vr_bytes in _LONG_VRS:
            data, at = reader.window(position, 12)
            start = reader.start
            vr, length, value_tell = _LONG_VRS[vr_bytes], unpack_length(data, at + 8)[0], position + 12
        else:
            raise NotPlainError(f"element {tag:08X}: VR {vr_bytes!r}")
        if length == UNDEFINED:
            position = _skip_undefined(reader, value_tell, implicit)
            data, start = reader.data, reader.start
            elements[tag] = PlainElement(vr, None, length, None)
            continue
        position = value_tell + length
        kept = None
        if length <= KEPT_VALUE_BYTES:
            if position - start <= len(data):
                kept = data[value_tell - start:position - start]
            else:
                kept = reader.bytes(value_tell, length)
                data, start = reader.data, reader.start
        elements[tag] = PlainElement(vr, value_tell, length, kept)
    if position > stop:
        raise NotPlainError("an element runs past its end")
    return elements, position


def _skip_undefined(reader: _Reader, position: int, implicit: bool) -> int:
    """Where an undefined-length value (a sequence, or encapsulated pixel data) ends: after its delimiter."""
    while True:
        data, at = reader.window(position, 8)
        tag_group, tag_element, length = _ITEM_HEADER.unpack_from(data, at)
        tag = tag_group << 16 | tag_element
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise NotPlainError(f"element {tag:08X} inside a sequence")
        if length == UNDEFINED:
            _, position = _walk(reader, position, implicit=implicit, end=reader.size)
        else:
            position += length
