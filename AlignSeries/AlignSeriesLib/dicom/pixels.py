"""Pixel data of DICOM slices, read in a given order and rescaled to modality values.

Uncompressed little-endian pixel data is read straight from each file at the offset the header
scan recorded (:class:`AlignSeriesLib.dicom.headers.PixelLayout`) into one preallocated array,
without pydicom parsing the file again. Other transfer syntaxes go through pydicom's decoders;
when none is installed for a syntax (e.g. JPEG Lossless without pylibjpeg or gdcm)
:class:`DicomDecodeError` is raised, so that the caller can use another reader (the MRML bridge
uses Slicer's ITK/GDCM reader).

Stored values are exact for every bit depth: only the low BitsStored bits of each sample count
(bits above HighBit are cleared) and, for PixelRepresentation 1, the sign is extended from bit
BitsStored - 1, as pydicom's ``pixel_array`` does. Slices of a Siemens MOSAIC are cut from their
file's image (:class:`AlignSeriesLib.dicom.mosaic.MosaicTile`), the image read once per file.

Values are ``stored * RescaleSlope + RescaleIntercept`` per slice, as ``int16`` when that is exact
and fits, else ``float32`` when exact (stored values within 2**24), else ``int32`` or ``float64``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np
import pydicom
from pydicom.uid import UID

from ..errors import DicomDecodeError, DicomError
from .file_kinds import MAX_DECODED_BYTES, limit_advice
from .headers import SliceHeader

logger = logging.getLogger(__name__)

#: Largest voxel array (bytes) a DICOM volume may need before anything is allocated: by default 4 GiB, a
#: 2000-slice 1024 x 1024 float16-sized series; larger inputs are almost always a wrong folder. Set from
#: the environment variable ``ALIGNSERIES_MAX_DECODED_GIB`` (see :data:`.file_kinds.MAX_DECODED_BYTES`).
MAX_VOLUME_BYTES = MAX_DECODED_BYTES

#: pip requirements of pydicom's pixel-data decoders (JPEG baseline/extended/lossless and JPEG-LS, JPEG 2000,
#: RLE, and JPEG-LS through CharLS): pinned in requirements.txt, installed in Slicer on first need from the
#: module's Resources/requirements.txt.
DECODER_REQUIREMENTS = ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1", "pylibjpeg-openjpeg>=2.0", "pylibjpeg-rle>=2.0",
                        "pyjpegls>=1.2")

_INT16 = np.iinfo(np.int16)
_INT32 = np.iinfo(np.int32)

#: Integers up to this magnitude are exact in float32 (24-bit significand).
_FLOAT32_EXACT = 2**24

#: ``allocate(shape, dtype) -> ndarray``: where the voxels are read to (default ``np.empty``); the MRML
#: bridge gives memory that its volume node then takes without a copy.
Allocator = Callable[[tuple, np.dtype], np.ndarray]


def check_memory(shape, dtype, what: str, *, max_bytes: int = MAX_VOLUME_BYTES) -> None:
    """Refuse an allocation of ``shape`` x ``dtype`` larger than ``max_bytes``.

    Raises
    ------
    DicomError
        Naming ``what``, the sizes and the limit.
    """
    needed = int(np.prod([int(n) for n in shape], dtype=np.int64)) * np.dtype(dtype).itemsize
    if needed > max_bytes:
        dims = " x ".join(str(int(n)) for n in shape)
        raise DicomError(
            f"{what}: {dims} voxels x {np.dtype(dtype).itemsize} bytes = {needed / 2**30:.2f} GiB exceeds the "
            f"limit of {max_bytes / 2**30:.2f} GiB; load fewer files, or {limit_advice()}"
        )
    available = available_memory_bytes()
    if available is not None and needed > available:
        dims = " x ".join(str(int(n)) for n in shape)
        raise DicomError(f"{what}: {dims} voxels x {np.dtype(dtype).itemsize} bytes = {needed / 2**30:.2f} GiB, but "
                         f"only {available / 2**30:.2f} GiB of memory is available to this process; not read")


def available_memory_bytes() -> int | None:
    """Memory this process may still allocate: the address-space limit (``ulimit -v``) left and the system's
    available memory, whichever is smaller; None where neither is known (not Linux)."""
    limits = []
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            limits.append(soft - _proc_kib("/proc/self/status", "VmSize:") * 1024)
    except (ImportError, OSError, ValueError):
        pass
    try:
        limits.append(_proc_kib("/proc/meminfo", "MemAvailable:") * 1024)
    except (OSError, ValueError):
        pass
    return max(min(limits), 0) if limits else None


def _proc_kib(path: str, key: str) -> int:
    """A ``key: N kB`` line of a Linux /proc file, in KiB (ValueError when absent)."""
    with open(path) as file:
        for line in file:
            if line.startswith(key):
                return int(line.split()[1])
    raise ValueError(f"{key} not in {path}")


def output_dtype(headers: Sequence[SliceHeader]) -> np.dtype:
    """The smallest dtype holding every slice's modality values exactly (over its stored range).

    ``int16`` when the rescale is integral and the values fit; else ``float32`` when the stored
    values are within 2**24 (exact in float32); else ``int32`` when integral and fitting, else ``float64``.
    Float pixel data (FloatPixelData, DoubleFloatPixelData) gives ``float32`` or ``float64``.
    """
    floats = [header.pixels.bits_allocated for header in headers if header.pixels.is_float]
    if floats:  # FloatPixelData / DoubleFloatPixelData (Parametric Maps): as stored
        return np.dtype(np.float64 if max(floats) == 64 or len(floats) < len(headers) else np.float32)
    lowest, highest = np.inf, -np.inf
    integral = True
    widest = 0
    for header in headers:
        slope, intercept = header.rescale
        integral = integral and slope == int(slope) and intercept == int(intercept)
        low, high = _stored_range(header)
        widest = max(widest, -low, high)
        values = (low * slope + intercept, high * slope + intercept)
        lowest, highest = min(lowest, *values), max(highest, *values)
    if integral and _INT16.min <= lowest and highest <= _INT16.max:
        return np.dtype(np.int16)
    if widest <= _FLOAT32_EXACT:
        return np.dtype(np.float32)
    if integral and _INT32.min <= lowest and highest <= _INT32.max:
        return np.dtype(np.int32)
    return np.dtype(np.float64)


def _stored_range(header: SliceHeader) -> tuple[int, int]:
    bits = header.pixels.bits_stored
    if header.pixels.pixel_representation == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def read_slices(headers: Sequence[SliceHeader], *, max_bytes: int = MAX_VOLUME_BYTES,
                allocate: Allocator = np.empty) -> np.ndarray:
    """Read and rescale the pixels of ``headers`` in the given order.

    Parameters
    ----------
    headers : sequence of SliceHeader
        One per slice, all with the same Rows and Columns; the output's k order.
    max_bytes : int
        Memory limit, see :func:`check_memory`.
    allocate : callable
        ``allocate(shape, dtype)`` gives the result's memory (``np.empty`` by default): the pixels are read into
        it when the rescale can be done in place (stored and output types of one size), else read into a
        temporary array and converted into it.

    Returns
    -------
    (K, Rows, Columns) ndarray
        Modality values indexed ``[k, j, i]``, in :func:`output_dtype`.

    Raises
    ------
    DicomDecodeError
        If a slice's transfer syntax has no pydicom decoder installed.
    DicomError
        If the volume is larger than ``max_bytes`` or a file cannot be read.
    """
    first = headers[0]
    dtype = output_dtype(headers)
    check_memory((len(headers), first.rows, first.columns), dtype, f"{first.path} and {len(headers) - 1} more slices",
                 max_bytes=max_bytes)
    in_place = _fits_by_view(first.pixels.stored_dtype, dtype, headers)
    stored = read_stored_slices(headers, max_bytes=max_bytes,
                                allocate=(lambda shape, _: allocate(shape, dtype)) if in_place else np.empty)
    return _rescaled(stored, headers, dtype, allocate)


def read_stored_slices(headers: Sequence[SliceHeader], *, max_bytes: int = MAX_VOLUME_BYTES,
                       allocate: Allocator = np.empty) -> np.ndarray:
    """The stored values of ``headers`` in the given order, before RescaleSlope and RescaleIntercept.

    Only the low BitsStored bits of each sample are kept, sign-extended when PixelRepresentation
    is 1 (the values pydicom's ``pixel_array`` gives).

    Every slice is read (or decoded) straight into one ``allocate(shape, stored dtype)`` array, viewed as
    the stored integer type: no per-slice list, no stacking.

    Returns
    -------
    (K, Rows, Columns) ndarray of the stored integer type, ``[k, j, i]``.

    Raises
    ------
    DicomDecodeError, DicomError
        As :func:`read_slices`.
    """
    first = headers[0]
    shape = (len(headers), first.rows, first.columns)
    check_memory(shape, first.pixels.stored_dtype, f"{first.path} and {len(headers) - 1} more slices",
                 max_bytes=max_bytes)
    if any(header.tile is not None for header in headers):
        stored = _read_tiles(headers, shape)
    elif all(_is_direct(header, first) for header in headers):
        stored = _read_direct(headers, shape, allocate)
    else:
        stored = _read_decoded(headers, shape, allocate)
    if not stored.dtype.isnative:  # pydicom may decode big endian data into a big endian array
        stored = stored.astype(stored.dtype.newbyteorder("="))
    _keep_stored_bits(stored, headers)
    return stored


def _keep_stored_bits(stored: np.ndarray, headers: Sequence[SliceHeader]) -> None:
    """In place: clear the bits above HighBit and extend the sign of signed samples, slice by slice."""
    for k, header in enumerate(headers):
        unused = stored.dtype.itemsize * 8 - header.pixels.bits_stored
        if unused > 0 and stored.dtype.kind in "iu":
            kind = "i" if header.pixels.pixel_representation == 1 else "u"
            plane = stored[k].view(f"{kind}{stored.dtype.itemsize}")
            np.left_shift(plane, unused, out=plane)
            np.right_shift(plane, unused, out=plane)  # arithmetic for signed: sign extension


def _is_direct(header: SliceHeader, first: SliceHeader) -> bool:
    """True when the slice can be read straight from its file into the common stored dtype."""
    layout = header.pixels
    return layout.is_native_little_endian and layout.stored_dtype == first.pixels.stored_dtype


def _allocated(allocate: Allocator, shape, dtype: np.dtype) -> np.ndarray:
    """``allocate(shape, dtype)`` viewed as ``dtype`` (an allocator may give a same-size type: int16 for uint16)."""
    array = allocate(tuple(shape), np.dtype(dtype))
    return array.view(np.dtype(dtype)) if array.dtype != dtype else array


def _read_direct(headers: Sequence[SliceHeader], shape, allocate: Allocator = np.empty) -> np.ndarray:
    stored = _allocated(allocate, shape, headers[0].pixels.stored_dtype)
    frame_bytes = stored[0].nbytes
    for k, header in enumerate(headers):
        offset = header.pixels.offset + frame_bytes * ((header.frame or 1) - 1)
        try:
            with open(header.path, "rb") as file:
                file.seek(offset)
                count = file.readinto(stored[k])
        except OSError as error:
            raise DicomError(f"{header.where}: cannot read PixelData (7FE0,0010): {error}") from None
        if count != frame_bytes:
            raise DicomError(f"{header.where}: PixelData (7FE0,0010) ends after {count} of {frame_bytes} bytes")
    return stored


def _read_decoded(headers: Sequence[SliceHeader], shape, allocate: Allocator) -> np.ndarray:
    """Slices decoded by pydicom, each written into one array allocated on the first (its type is pydicom's)."""
    stored = None
    for k, header in enumerate(headers):
        plane = _decode(header)
        if stored is None:  # the type np.stack would give: pydicom's, widened to hold every slice's stored type
            dtype = np.result_type(plane.dtype, *{h.pixels.stored_dtype for h in headers}).newbyteorder("=")
            same_size = np.dtype(headers[0].pixels.stored_dtype).itemsize == dtype.itemsize
            stored = _allocated(allocate, shape, dtype) if same_size else np.empty(shape, dtype)
        stored[k] = plane
    if stored is None:
        raise DicomError("no slices to read")
    return stored


def _read_tiles(headers: Sequence[SliceHeader], shape) -> np.ndarray:
    """Slices cut from MOSAIC images (or read whole when not tiles), each file's image read once."""
    images: dict = {}
    stored = None
    for k, header in enumerate(headers):
        key = (header.path, header.frame)
        if key not in images:
            images = {key: _whole_image(header)}  # tiles of one file are adjacent in k order: keep one image
        image = images[key]
        plane = image if header.tile is None else header.tile.cut(image)
        if plane.shape != shape[1:]:
            raise DicomError(f"{header.where}: pixels of shape {plane.shape}, expected {shape[1:]}")
        if stored is None:
            stored = np.empty(shape, dtype=image.dtype)
        stored[k] = plane
    if stored is None:
        raise DicomError("no slices to read")
    return stored


def _whole_image(header: SliceHeader) -> np.ndarray:
    """The stored image of a slice's file (the whole mosaic for a MOSAIC tile), ``[j, i]``."""
    if header.tile is None:
        return _decode(header)
    whole = dataclasses.replace(header, rows=header.tile.mosaic_rows, columns=header.tile.mosaic_columns, tile=None)
    if whole.pixels.is_native_little_endian:
        return _read_direct([whole], (1, whole.rows, whole.columns))[0]
    return _decode(whole)


def _decode(header: SliceHeader) -> np.ndarray:
    index = None if header.frame is None else header.frame - 1
    _check_decode_memory(header)
    try:
        pixels = _pixel_array(header.path, index, UID(header.pixels.transfer_syntax))
    except MemoryError:
        raise DicomError(f"{header.where}: not enough memory to decode PixelData (7FE0,0010) of "
                         f"{header.rows} x {header.columns} pixels") from None
    except (NotImplementedError, RuntimeError, ImportError) as error:
        syntax = UID(header.pixels.transfer_syntax)
        raise DicomDecodeError(f"{header.where}: pydicom cannot decode TransferSyntaxUID (0002,0010) {syntax} "
                               f"({syntax.name}): {_decoder_advice(syntax, error)}") from None
    except (OSError, ValueError, EOFError, AttributeError) as error:
        raise DicomError(f"{header.where}: cannot decode PixelData (7FE0,0010): {error}") from None
    if pixels.shape != (header.rows, header.columns):
        raise DicomError(f"{header.where}: decoded pixels have shape {pixels.shape}, Rows x Columns say "
                         f"{(header.rows, header.columns)}")
    return pixels


def _pixel_array(path: str, index: int | None, syntax: UID) -> np.ndarray:
    """pydicom's decoding of one frame (``index``, 0-based) or of the only image of a file.

    pydicom decodes straight from the file, one frame at a time, except for a deflated file, whose dataset
    must be inflated first (its inflated size was bounded by the header scan).
    """
    if syntax.is_transfer_syntax and syntax.is_deflated:
        pixels = pydicom.dcmread(path).pixel_array
        return pixels if index is None else pixels[index]
    return pydicom.pixels.pixel_array(path, index=index)


def _decoder_advice(syntax: UID, error: Exception) -> str:
    """Why pydicom could not decode: no decoder installed (and what to install), or the installed ones failed."""
    try:
        installed = pydicom.pixels.get_decoder(syntax).is_available
    except NotImplementedError:  # a syntax pydicom knows no decoder for
        installed = False
    reason = " ".join(str(error).split())
    if installed:
        return f"its installed decoders failed on this file ({reason})"
    return f"no decoder installed ({reason}); install them: pip install {' '.join(DECODER_REQUIREMENTS)}"


def _check_decode_memory(header: SliceHeader) -> None:
    """Refuse, before decoding, an image whose decoded size exceeds the limit or twice the memory left (the
    decoder's buffer and its copy): a decoder in C or Rust may abort the process instead of raising."""
    decoded = header.rows * header.columns * header.pixels.samples_per_pixel * header.pixels.bits_allocated // 8
    if decoded > MAX_VOLUME_BYTES:
        raise DicomError(f"{header.where}: PixelData (7FE0,0010) decodes to {header.rows} x {header.columns} pixels "
                         f"= {decoded / 2**30:.2f} GiB, above the limit of {MAX_VOLUME_BYTES / 2**30:.2f} GiB; not "
                         f"decoded; {limit_advice()}")
    available = available_memory_bytes()
    if available is not None and 2 * decoded > available:
        raise DicomError(f"{header.where}: decoding PixelData (7FE0,0010) needs 2 x {decoded / 2**30:.2f} GiB, but "
                         f"only {available / 2**30:.2f} GiB of memory is available to this process; not decoded")


def _fits_by_view(stored_dtype: np.dtype, dtype: np.dtype, headers: Sequence[SliceHeader]) -> bool:
    """True when stored integers keep their values reinterpreted as ``dtype`` (e.g. 12-bit uint16 as int16)."""
    if stored_dtype == dtype or stored_dtype.kind not in "iu" or dtype.kind != "i":
        return stored_dtype == dtype
    limits = np.iinfo(dtype)
    return stored_dtype.itemsize == dtype.itemsize and all(
        limits.min <= _stored_range(h)[0] and _stored_range(h)[1] <= limits.max for h in headers)


def _rescaled(stored: np.ndarray, headers: Sequence[SliceHeader], dtype: np.dtype,
              allocate: Allocator = np.empty) -> np.ndarray:
    """Apply each slice's slope and intercept in place where possible (``stored`` is consumed); a conversion to
    another type is written into ``allocate(shape, dtype)`` (a node then takes it without a further copy)."""
    slopes = np.array([header.rescale[0] for header in headers])
    intercepts = np.array([header.rescale[1] for header in headers])
    if _fits_by_view(stored.dtype, dtype, headers):
        values = stored.view(dtype)
    else:
        values = _allocated(allocate, stored.shape, dtype)
        np.copyto(values, stored, casting="unsafe")  # astype's conversion
    if np.any(slopes != 1):
        values *= slopes.astype(dtype)[:, None, None]
    if np.any(intercepts != 0):
        values += intercepts.astype(dtype)[:, None, None]
    return values
