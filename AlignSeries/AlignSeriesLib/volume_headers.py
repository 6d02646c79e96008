"""What a volume file's header claims, checked before any voxel is read: size, spacing, NIfTI scaling.

NRRD, NIfTI and MetaImage headers are read here with the standard library only (no pydicom, no VTK), so a
volume file is checked, and the decoded-size limit shared with the DICOM reader is known, without importing
either. Every check raises :class:`~AlignSeriesLib.errors.AlignSeriesError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path

from .errors import AlignSeriesError

#: Environment variable giving the decoded-size limit in GiB (see :data:`MAX_DECODED_BYTES`).
MAX_DECODED_ENVIRONMENT = "ALIGNSERIES_MAX_DECODED_GIB"


def decoded_limit_from_environment(default_gib: float = 4.0) -> int:
    """The limit the environment gives (a positive finite number of GiB), else ``default_gib``."""
    text = os.environ.get(MAX_DECODED_ENVIRONMENT, "")
    try:
        gib = float(text) if text.strip() else default_gib
    except ValueError:
        gib = default_gib
    return int((gib if math.isfinite(gib) and gib > 0 else default_gib) * 2**30)


#: Largest voxel array (bytes) read from a volume file or decoded from DICOM pixel data, checked from the header
#: before anything is allocated: 4 GiB unless :data:`MAX_DECODED_ENVIRONMENT` gives another number of GiB. Kept
#: here (no pydicom) so that reading a volume file imports no DICOM module.
MAX_DECODED_BYTES = decoded_limit_from_environment()

#: Bytes per sample of NRRD ``type:`` and MetaImage ``ElementType`` names (unknown types count as 8).
_SAMPLE_BYTES = {
    **dict.fromkeys(("char", "signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t",
                     "met_char", "met_uchar"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t", "met_short", "met_ushort"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float",
                     "met_int", "met_uint", "met_float"), 4),
}


#: Voxel spacings (mm) a volume file may give: outside them the header is corrupt (or not in mm), as DICOM's
#: PixelSpacing checks refuse (1e-9 mm or 1e9 mm voxels would make every distance meaningless).
MIN_SPACING_MM = 1e-6
MAX_SPACING_MM = 1e5


def check_voxel_spacing(path, spacing) -> None:
    """Refuse a volume file whose voxel spacing is not finite or lies outside [MIN_SPACING_MM, MAX_SPACING_MM].

    Raises
    ------
    AlignSeriesError
        Naming the file, the spacing and the accepted range.
    """
    spacing = [float(value) for value in spacing]
    if not all(MIN_SPACING_MM <= value <= MAX_SPACING_MM for value in spacing):  # NaN fails both comparisons
        raise AlignSeriesError(f"{path}: voxel spacing {spacing} mm is outside {MIN_SPACING_MM:g} .. "
                               f"{MAX_SPACING_MM:g} mm (a corrupt header, or not in mm): not read")


def nifti_scaling(path) -> tuple[float, float] | None:
    """``(scl_slope, scl_inter)`` of a NIfTI-1 file that stores integers and scales them; None otherwise.

    Such a file loads as floating point (the reader applies the scaling); see
    ``mrml_files.load_volume_file``, which keeps integer results integer.
    """
    header = _nifti_header(Path(path))
    if header is None:
        return None
    order, data = header
    datatype = struct.unpack_from(f"{order}h", data, 70)[0]
    slope, inter = struct.unpack_from(f"{order}2f", data, 112)
    integer_storage = datatype in _NIFTI_INTEGER_TYPES
    scaled = slope not in (0.0, 1.0) or inter != 0.0
    return (slope or 1.0, inter) if integer_storage and scaled and all(map(math.isfinite, (slope, inter))) else None


#: NIfTI-1 datatype codes of integer voxels (int8/16/32/64, uint8/16/32/64).
_NIFTI_INTEGER_TYPES = (2, 4, 8, 256, 512, 768, 1024, 1280)


def check_volume_file(path, *, max_bytes: int) -> None:
    """Check a volume file's header before a reader allocates what it claims.

    Reads only the header of NRRD (``.nrrd``, ``.nhdr``), NIfTI-1 (``.nii``, ``.nii.gz``) and
    MetaImage (``.mha``, ``.mhd``) files; other files pass unchecked.

    Parameters
    ----------
    path : str or Path
    max_bytes : int
        Largest voxel array accepted.

    Raises
    ------
    AlignSeriesError
        If the header claims no voxels or more than ``max_bytes``, a NIfTI header has a non-positive
        or non-finite voxel size, or an uncompressed file holds fewer bytes than its header claims.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nrrd", ".nhdr")):
        claim = _nrrd_claim(path)
    elif name.endswith((".nii", ".nii.gz")):
        claim = _nifti_claim(path)
    elif name.endswith((".mha", ".mhd")):
        claim = _metaimage_claim(path)
    else:
        return
    if claim is None:
        return  # not a header this check understands: the reader will say what is wrong
    sizes, sample_bytes, data_offset = claim
    if not sizes or min(sizes) <= 0:
        raise AlignSeriesError(f"{path}: the header claims sizes {sizes}: no voxels to read")
    needed = sample_bytes
    for size in sizes:
        needed *= size
    if needed > max_bytes:
        raise AlignSeriesError(
            f"{path}: the header claims {' x '.join(map(str, sizes))} samples x {sample_bytes} bytes = "
            f"{needed / 2**30:.2f} GiB, which exceeds the limit of {max_bytes / 2**30:.2f} GiB; not read")
    if data_offset is not None and path.stat().st_size - data_offset < needed:
        raise AlignSeriesError(
            f"{path}: truncated file: the header claims {needed} bytes of voxels from offset {data_offset}, "
            f"but only {max(path.stat().st_size - data_offset, 0)} bytes follow")


def _text_header(path: Path, end: bytes) -> tuple[list[str], int] | None:
    """The lines of a text header that ends at ``end`` (within the first 64 KiB) and the offset after it."""
    with open(path, "rb") as file:
        head = file.read(65536)
    stop = head.find(end)
    if stop < 0:
        return None
    return head[:stop].decode("latin-1").splitlines(), stop + len(end)


def _nrrd_claim(path: Path):
    header = _text_header(path, b"\n\n")
    if header is None or not header[0] or not header[0][0].startswith("NRRD"):
        return None
    lines, offset = header
    fields = {key.strip().lower(): value.strip() for key, _, value in (line.partition(":") for line in lines[1:])}
    try:
        sizes = [int(value) for value in fields.get("sizes", "").split()]
    except ValueError:
        raise AlignSeriesError(f"{path}: NRRD 'sizes' field is not a list of integers: {fields['sizes']!r}") from None
    sample_bytes = _SAMPLE_BYTES.get(fields.get("type", "").lower(), 8)
    attached = "data file" not in fields and "datafile" not in fields
    raw = fields.get("encoding", "raw").lower() == "raw"
    return sizes, sample_bytes, offset if attached and raw else None


def _nifti_header(path: Path) -> tuple[str, bytes] | None:
    """The byte order and the first 352 bytes of a NIfTI-1 file, or None when it is not one."""
    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as file:
            header = file.read(352)
    except (OSError, EOFError):  # not gzip after all: the reader decides (zlib reads plain files too)
        with open(path, "rb") as file:
            header = file.read(352)
    if len(header) < 348:
        return None
    for order in "<>":
        if struct.unpack_from(f"{order}i", header, 0)[0] == 348:
            return order, header
    return None


def _nifti_claim(path: Path):
    found = _nifti_header(path)
    if found is None:
        return None
    order, header = found
    dim = struct.unpack_from(f"{order}8h", header, 40)
    bitpix = struct.unpack_from(f"{order}h", header, 72)[0]
    pixdim = struct.unpack_from(f"{order}8f", header, 76)
    vox_offset = struct.unpack_from(f"{order}f", header, 108)[0]
    qform_code, sform_code = struct.unpack_from(f"{order}2h", header, 252)
    if not 1 <= dim[0] <= 7:
        raise AlignSeriesError(f"{path}: NIfTI dim[0] (number of dimensions) is {dim[0]}, expected 1 to 7")
    voxel_size = pixdim[1:min(dim[0], 3) + 1]
    uses_pixdim = sform_code == 0 or qform_code > 0  # the qform (and no transform at all) scales by pixdim
    if uses_pixdim and not all(size > 0 and size < float("inf") for size in voxel_size):
        raise AlignSeriesError(f"{path}: NIfTI pixdim (voxel size) {list(voxel_size)} must be positive and finite")
    plain = not path.name.lower().endswith(".gz")
    return list(dim[1:dim[0] + 1]), max(bitpix // 8, 1), int(vox_offset) if plain else None


def _metaimage_claim(path: Path):
    header = _text_header(path, b"ElementDataFile")
    if header is None:
        return None
    lines, offset = header
    fields = {key.strip().lower(): value.strip() for key, _, value in (line.partition("=") for line in lines)}
    try:
        sizes = [int(value) for value in fields.get("dimsize", "").split()]
        channels = int(fields.get("elementnumberofchannels", 1))
    except ValueError:
        raise AlignSeriesError(f"{path}: MetaImage DimSize is not a list of integers: {fields['dimsize']!r}") from None
    with open(path, "rb") as file:
        file.seek(offset)
        data_line = file.readline()
    local = data_line.split(b"=")[-1].strip() == b"LOCAL"
    compressed = fields.get("compresseddata", "false").lower() == "true"
    sample_bytes = _SAMPLE_BYTES.get(fields.get("elementtype", "").lower(), 8) * channels
    return sizes, sample_bytes, offset + len(data_line) if local and not compressed else None
