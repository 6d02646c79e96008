"""Pixel data of DICOM slices, read in a given order and rescaled to modality values.

Uncompressed little-endian pixel data is read straight from each file at the offset the header
scan recorded (:class:`AlignSeriesLib.dicom_headers.PixelLayout`) into one preallocated array,
without pydicom parsing the file again. Other transfer syntaxes go through pydicom's decoders;
when none is installed for a syntax (e.g. JPEG Lossless without pylibjpeg or gdcm)
:class:`DicomDecodeError` is raised, so that the caller can use another reader (the MRML bridge
uses Slicer's ITK/GDCM reader).

Values are ``stored * RescaleSlope + RescaleIntercept`` per slice, as ``int16`` when that is exact
and fits, else ``float32``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.uid import UID

from .dicom_headers import SliceHeader
from .errors import DicomDecodeError, DicomError

logger = logging.getLogger(__name__)

#: Largest voxel array (bytes) a DICOM volume may need before anything is allocated: 4 GiB, a
#: 2000-slice 1024 x 1024 float16-sized series; larger inputs are almost always a wrong folder.
MAX_VOLUME_BYTES = 4 * 2**30

_INT16 = np.iinfo(np.int16)


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
            f"limit of {max_bytes / 2**30:.2f} GiB (AlignSeriesLib.dicom_pixels.MAX_VOLUME_BYTES); "
            "load fewer files or raise the limit"
        )


def output_dtype(headers: Sequence[SliceHeader]) -> np.dtype:
    """``int16`` when every slice's rescale is exact in int16 over its stored range, else ``float32``."""
    lowest, highest = np.inf, -np.inf
    for header in headers:
        slope, intercept = header.rescale
        if slope != 1 or intercept != int(intercept):
            return np.dtype(np.float32)
        low, high = _stored_range(header)
        lowest, highest = min(lowest, low + intercept), max(highest, high + intercept)
    return np.dtype(np.int16) if _INT16.min <= lowest and highest <= _INT16.max else np.dtype(np.float32)


def _stored_range(header: SliceHeader) -> tuple[int, int]:
    bits = header.pixels.bits_stored
    if header.pixels.pixel_representation == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def read_slices(headers: Sequence[SliceHeader], *, max_bytes: int = MAX_VOLUME_BYTES) -> np.ndarray:
    """Read and rescale the pixels of ``headers`` in the given order.

    Parameters
    ----------
    headers : sequence of SliceHeader
        One per slice, all with the same Rows and Columns; the output's k order.
    max_bytes : int
        Memory limit, see :func:`check_memory`.

    Returns
    -------
    (K, Rows, Columns) ndarray of int16 or float32
        Modality values indexed ``[k, j, i]``.

    Raises
    ------
    DicomDecodeError
        If a slice's transfer syntax has no pydicom decoder installed.
    DicomError
        If the volume is larger than ``max_bytes`` or a file cannot be read.
    """
    first = headers[0]
    shape = (len(headers), first.rows, first.columns)
    dtype = output_dtype(headers)
    check_memory(shape, dtype, f"{first.path} and {len(headers) - 1} more slices", max_bytes=max_bytes)
    if all(_is_direct(header, first) for header in headers):
        stored = _read_direct(headers, shape)
    else:
        stored = np.stack([_decode(header) for header in headers])
    return _rescaled(stored, headers, dtype)


def _is_direct(header: SliceHeader, first: SliceHeader) -> bool:
    """True when the slice can be read straight from its file into the common stored dtype."""
    layout = header.pixels
    return layout.is_native_little_endian and layout.stored_dtype == first.pixels.stored_dtype


def _read_direct(headers: Sequence[SliceHeader], shape) -> np.ndarray:
    stored = np.empty(shape, dtype=headers[0].pixels.stored_dtype)
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


def _decode(header: SliceHeader) -> np.ndarray:
    index = None if header.frame is None else header.frame - 1
    try:
        pixels = pydicom.pixels.pixel_array(header.path, index=index)
    except (NotImplementedError, RuntimeError, ImportError) as error:
        syntax = UID(header.pixels.transfer_syntax)
        raise DicomDecodeError(
            f"{header.where}: pydicom cannot decode TransferSyntaxUID (0002,0010) {syntax} ({syntax.name}): {error}"
        ) from None
    except (OSError, ValueError, EOFError) as error:
        raise DicomError(f"{header.where}: cannot decode PixelData (7FE0,0010): {error}") from None
    if pixels.shape != (header.rows, header.columns):
        raise DicomError(f"{header.where}: decoded pixels have shape {pixels.shape}, Rows x Columns say "
                         f"{(header.rows, header.columns)}")
    return pixels


def _fits_by_view(stored_dtype: np.dtype, dtype: np.dtype, headers: Sequence[SliceHeader]) -> bool:
    """True when stored integers keep their values reinterpreted as ``dtype`` (e.g. 12-bit uint16 as int16)."""
    if stored_dtype == dtype or stored_dtype.kind not in "iu" or dtype.kind != "i":
        return stored_dtype == dtype
    limits = np.iinfo(dtype)
    return stored_dtype.itemsize == dtype.itemsize and all(
        limits.min <= _stored_range(h)[0] and _stored_range(h)[1] <= limits.max for h in headers)


def _rescaled(stored: np.ndarray, headers: Sequence[SliceHeader], dtype: np.dtype) -> np.ndarray:
    """Apply each slice's slope and intercept in place where possible (``stored`` is consumed)."""
    slopes = np.array([header.rescale[0] for header in headers])
    intercepts = np.array([header.rescale[1] for header in headers])
    if _fits_by_view(stored.dtype, dtype, headers):
        values = stored.view(dtype)
    else:
        values = stored.astype(dtype, copy=stored.dtype != dtype)
    if np.any(slopes != 1):
        values *= slopes.astype(dtype)[:, None, None]
    if np.any(intercepts != 0):
        values += intercepts.astype(dtype)[:, None, None]
    return values
