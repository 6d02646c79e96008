"""What a file in a DICOM folder is, before it is parsed as an image: the files to read, and why others are not.

Non-regular files (FIFOs, devices, sockets) are named from their status and never opened; a deflated file that
inflates beyond the decoded-size limit is refused after a bounded, streamed inflation; a non-image object is
named by its SOP class (pydicom's UID dictionary): DICOMDIR, RT Dose, SR, KOS, raw data, SEG, encapsulated PDF.
Each such file gives a :class:`FileNote` whose ``kind`` groups the reports ("4 files skipped: 2 DICOMDIR, …").
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from ..volume_headers import MAX_DECODED_BYTES, MAX_DECODED_ENVIRONMENT

READ_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, KeyError, IndexError, struct.error)
#: Errors of a call that does not fit the installed pydicom (or of an element pydicom cannot convert):
#: not evidence that the file is corrupt, so never reported as such.
API_ERRORS = (TypeError, AttributeError)


def limit_advice() -> str:
    """How to change :data:`MAX_DECODED_BYTES`, for messages."""
    return (f"to raise the limit, set the environment variable {MAX_DECODED_ENVIRONMENT} (GiB) "
            "before starting AlignSeries")



@dataclass(frozen=True)
class FileNote:
    """A file that gives no image: why, and its series when the header told it.

    ``kind`` names what the file is in a few words ("DICOMDIR", "RT Dose", "corrupt or truncated", …), for
    grouped reports such as "4 files skipped: 2 DICOMDIR, 2 raw data".
    """

    path: str
    reason: str
    series_instance_uid: str | None = None
    is_registration: bool = False
    kind: str = "unusable header"


#: What non-image objects are, by words of their SOP class name (pydicom's UID dictionary), in the order tried:
#: (words, kind, explanation).
NON_IMAGE_KINDS = (
    ("Media Storage Directory", "DICOMDIR", "a directory of other files"),
    ("RT Dose", "RT Dose", "dose grids are not image series"),
    ("RT Structure Set", "RT Struct", "contours drawn on other images, not an image"),
    ("RT Image", "RT Image", "a projection image without a patient plane, not a slice series"),
    ("RT ", "RT object", "radiotherapy data, not an image series"),
    ("Presentation State", "Presentation State", "display settings for other images, not an image"),
    ("Key Object Selection", "KOS", "a selection of other images, not an image"),
    ("SR Storage", "SR", "a structured report (text and measurements), not an image"),
    ("Raw Data", "raw data", "vendor data, not an image"),
    ("Segmentation", "SEG", "a segmentation of other images: give it as a DICOM SEG input, not as a series"),
    ("Encapsulated PDF", "encapsulated PDF", "a PDF document, not an image"),
    ("Encapsulated", "encapsulated document", "a document, not an image"),
    ("Waveform", "waveform", "signals, not an image"),
    ("Spectroscopy", "spectroscopy", "spectra, not an image"),
    ("Registration", "registration", "a registration AlignSeries does not read"),
)


def iter_files(paths) -> Iterator[Path]:
    """Yield the files under ``paths`` (files as given, folders recursively, sorted, no hidden files).

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    for path in map(Path, paths):
        if path.is_dir():
            yield from _files_in_folder(path)
        elif path.exists():
            yield path
        else:
            raise FileNotFoundError(f"DICOM input not found: {path}")


def _files_in_folder(folder: Path) -> Iterator[Path]:
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield Path(root) / name



def unreadable_note(path: str, *, opening: bool = True) -> FileNote | None:
    """Why a file cannot be read (not a regular file, empty, a broken link, no read permission), else None.

    A FIFO, device or socket is named from its status and never opened: opening a FIFO blocks until a writer comes.
    With ``opening`` False, only what the file's status tells (missing, broken link, not a regular file): for a
    caller that opens the file next and asks again when that fails.
    """
    try:
        status = os.stat(path)
    except OSError as error:
        return FileNote(path, f"{path}: cannot be read ({error.strerror or type(error).__name__})", kind="unreadable")
    if not stat.S_ISREG(status.st_mode):
        kind = _special_file_kind(status.st_mode)
        return FileNote(path, f"{path}: {kind}, not a regular file: skipped without opening it", kind=kind)
    if not opening:
        return None
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        return FileNote(path, f"{path}: cannot be read ({error.strerror or type(error).__name__})", kind="unreadable")
    return FileNote(path, f"{path}: empty file (0 bytes)", kind="empty") if status.st_size == 0 else None


def inflation_note(path: str, *, max_bytes: int | None = None) -> FileNote | None:
    """For a deflate-compressed file (Deflated Explicit VR Little Endian) inflating beyond the decoded-size
    limit, a note refusing it; else None.

    pydicom inflates the whole dataset in memory before parsing it: here the stream is inflated in bounded
    chunks, nothing kept, and counting stops at the limit (a few kB may inflate to many GB).
    """
    limit = MAX_DECODED_BYTES if max_bytes is None else max_bytes
    start = _deflated_dataset_offset(path)
    if start is None:
        return None
    inflater, inflated = zlib.decompressobj(-zlib.MAX_WBITS), 0
    with open(path, "rb") as file:
        file.seek(start)
        for chunk in iter(lambda: file.read(2**16), b""):
            while chunk and not inflater.eof:
                try:
                    inflated += len(inflater.decompress(chunk, 2**20))
                except zlib.error:
                    return None  # pydicom's read names the corruption
                if inflated > limit:
                    return FileNote(path, f"{path}: deflate-compressed dataset inflates to more than "
                                          f"{limit / 2**30:.2f} GiB (the limit) from {os.path.getsize(path)} bytes: "
                                          f"not read; {limit_advice()}", kind="too large")
                chunk = inflater.unconsumed_tail
    return None


def _deflated_dataset_offset(path: str) -> int | None:
    """Where the deflated dataset starts when the file's transfer syntax is deflated; None otherwise."""
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except READ_ERRORS + API_ERRORS:
        return None  # the full read reports what is wrong
    syntax = UID(str(meta.get("TransferSyntaxUID", "")))
    if not syntax.is_transfer_syntax or not syntax.is_deflated or "FileMetaInformationGroupLength" not in meta:
        return None
    return 128 + 4 + 12 + int(meta.FileMetaInformationGroupLength)  # preamble, DICM, group length element, group


def _special_file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"



def non_image_note(path: str, dataset: Dataset, sop_class: str, name: str, series_uid: str | None,
                    pixel_tag: int | None) -> FileNote | None:
    """A note naming what a non-image object is (by its SOP class), or a colour image; None for an image."""
    for words, kind, explanation in NON_IMAGE_KINDS:
        if words in name:
            return FileNote(path, f"{path}: {kind}: {explanation} (SOP class {name}), skipped", series_uid, kind=kind)
    if sop_class and name == sop_class and pixel_tag is None:  # not in pydicom's dictionary: a private class
        return FileNote(path, f"{path}: private object of SOP class {sop_class} without PixelData (7FE0,0010): "
                              "not an image, skipped", series_uid, kind="private object")
    samples = dataset.get("SamplesPerPixel")
    if pixel_tag is not None and samples not in (None, "", 1):
        colour = str(dataset.get("PhotometricInterpretation", "")) or "colour"
        kind = "RGB secondary capture" if "Secondary Capture" in name else "colour image"
        return FileNote(path, f"{path}: {kind}: SamplesPerPixel (0028,0002) {samples} ({colour}), a picture and not "
                              f"a scalar volume (SOP class {name}), skipped", series_uid, kind=kind)
    return None
