"""Safe file handling: inputs are checked before use, outputs are written atomically.

Every writer in AlignSeriesLib goes through :func:`atomic_output`: the data is written to a
temporary file in the destination folder and renamed into place only when complete, so a failure
never leaves a partial file, and an existing file is never replaced unless ``force`` is given.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import AlignSeriesError, OutputExistsError, OutputWriteError, one_line

#: Volume files read with Slicer's volumes logic, by suffix (one list for the bridge, the CLI and the panel).
VOLUME_FILE_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd")
#: Single-file volume formats written atomically (detached headers such as .nhdr/.mhd would leave
#: their data file behind the atomic rename).
WRITABLE_VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha")
#: Point lists read and written with Slicer's markups storage nodes (anything else is CSV).
MARKUPS_FILE_SUFFIXES = (".mrk.json", ".fcsv")
#: Suffixes of two parts, which :func:`file_suffix` and :func:`file_stem` keep whole.
_COMPOUND_SUFFIXES = (".seg.nrrd", ".nii.gz", ".mrk.json")

#: Characters never kept in a name derived from input data (path separators, Windows-reserved ones).
_UNSAFE_NAME_CHARACTERS = frozenset('/\\:*?"<>|')


def safe_name(text: str) -> str:
    """``text`` fit for a node or file name: path separators, control characters and leading dots replaced.

    Examples
    --------
    >>> safe_name("../../etc/x")
    '_._.._etc_x'
    """
    cleaned = "".join("_" if character in _UNSAFE_NAME_CHARACTERS or not character.isprintable() else character
                      for character in str(text))
    cleaned = cleaned.strip()
    return "_" + cleaned[1:] if cleaned.startswith(".") else cleaned


def file_suffix(path) -> str:
    """The lower-case suffix that names a file's format, compound ones whole.

    Examples
    --------
    >>> file_suffix("mask.SEG.nrrd"), file_suffix("ct.nii.gz"), file_suffix("t.h5")
    ('.seg.nrrd', '.nii.gz', '.h5')
    """
    name = Path(path).name.lower()
    return next((suffix for suffix in _COMPOUND_SUFFIXES if name.endswith(suffix)), Path(name).suffix)


def file_stem(path) -> str:
    """A file's name without the suffix of :func:`file_suffix` (a node name for what it holds)."""
    name = Path(path).name
    return name[: len(name) - len(file_suffix(name))] if file_suffix(name) else name


def is_volume_file(path) -> bool:
    """True for a path Slicer reads as one volume file (by its suffix)."""
    return str(path).lower().endswith(VOLUME_FILE_SUFFIXES)


def check_input_file(path, what: str = "input file") -> Path:
    """Return ``path`` as a Path after checking that it is an existing, readable regular file.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    AlignSeriesError
        If it is a folder or cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.is_dir():
        raise AlignSeriesError(f"{what} is a folder, expected a file: {path}")
    if not os.access(path, os.R_OK):
        raise AlignSeriesError(f"{what} is not readable: {path}")
    return path


def check_outputs_spare_inputs(inputs, outputs) -> None:
    """Refuse, before any work, an output that would replace or write into an input.

    An output is refused when it is an input file, lies inside an input folder, or is a folder
    holding an input. Paths are compared by the file system objects they resolve to (device and
    inode, after symlinks), so a symlink, a hard link, ``..`` or another letter case on a
    case-insensitive file system does not hide an input. ``force`` never changes this: it replaces
    earlier outputs only.

    Parameters
    ----------
    inputs : iterable of path or None
        Input files and folders (DICOM folders protect everything inside them); None is skipped.
    outputs : iterable of path or None
        Output files and folders, existing or not; None is skipped.

    Raises
    ------
    AlignSeriesError
        Naming the output and the input it would touch.

    Examples
    --------
    >>> check_outputs_spare_inputs(["ct.nii"], ["ct.nii"])   # doctest: +SKIP
    Traceback (most recent call last):
    AlignSeriesError: output ct.nii is the input ct.nii: inputs are never written, with or without --force; ...
    """
    protected = [(Path(path), *_identities(path)) for path in inputs if path]
    for output in filter(None, outputs):
        output_itself, output_chain = _identities(output)
        for source, source_itself, source_chain in protected:
            if source_itself is None:
                continue
            if source_itself == output_itself:
                relation = "is"
            elif source_itself in output_chain:
                relation = "lies inside"
            elif output_itself is not None and output_itself in source_chain:
                relation = "is a folder holding"
            else:
                continue
            raise AlignSeriesError(f"output {output} {relation} the input {source}: inputs are never written, with "
                                   "or without --force (which replaces earlier outputs only); choose another output")


def protected_places(paths) -> list[Path]:
    """The places an output must never touch for these inputs (for :func:`check_outputs_spare_inputs`).

    A folder and any file Slicer reads whole (a volume, transform or points file) stand for themselves;
    a DICOM file (any other file) for its folder, the input DICOM folder. Duplicates are dropped.
    """
    places: dict[Path, None] = {}
    for path in filter(None, paths):
        path = Path(path)
        whole_file = path.is_dir() or is_volume_file(path) or file_suffix(path) in _WHOLE_INPUT_SUFFIXES
        places[path if whole_file else path.parent] = None
    return list(places)


#: Input files that are not DICOM slices: protected as files, not by their folder.
_WHOLE_INPUT_SUFFIXES = (".h5", ".tfm", ".txt", ".json", ".mat4", ".mat", ".mrk.json", ".fcsv", ".csv")


def _identities(path) -> tuple[tuple[int, int] | None, set[tuple[int, int]]]:
    """(device, inode) of ``path`` (None when it does not exist) and of it and every existing folder above it."""
    resolved = Path(path).resolve()
    chain = set()
    itself = None
    for place in (resolved, *resolved.parents):
        try:
            status = place.stat()
        except OSError:
            continue
        chain.add((status.st_dev, status.st_ino))
        if place == resolved:
            itself = (status.st_dev, status.st_ino)
    return itself, chain


def check_output_path(path, *, force: bool = False) -> Path:
    """Check that ``path`` may be written: its folder exists and is writable, and it is new or ``force``.

    Raises
    ------
    OutputExistsError
        If the file exists and ``force`` is False.
    AlignSeriesError
        If the folder does not exist or is not writable, or ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise AlignSeriesError(f"output is an existing folder, expected a file name: {path}")
    if path.exists() and not force:
        raise OutputExistsError(f"output exists, not overwritten (use --force): {path}")
    folder = path.parent if str(path.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise AlignSeriesError(f"output folder is a file, not a folder: {folder}")
    if not folder.is_dir():
        raise AlignSeriesError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise AlignSeriesError(f"output folder is not writable: {folder}")
    return path


@contextlib.contextmanager
def atomic_output(path, *, force: bool = False) -> Iterator[Path]:
    """Context manager yielding a temporary path that is renamed to ``path`` on success.

    The temporary file sits in the destination folder and keeps the destination's suffixes (so
    writers that choose a format by file name still work). On any exception it is removed.

    Examples
    --------
    >>> with atomic_output("out.json") as temporary:   # doctest: +SKIP
    ...     temporary.write_text("{}")
    """
    path = check_output_path(path, force=force)
    remove_stale_temporaries(path)
    temporary = temporary_beside(path, ".partial" + ("".join(path.suffixes[-2:]) or ".tmp"))
    try:
        yield temporary
        if not temporary.exists() or temporary.stat().st_size == 0:
            raise AlignSeriesError(f"nothing was written for {path}")
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def check_room_to_write(path, size: int) -> None:
    """Refuse a write of up to ``size`` bytes to ``path`` that the file-size limit or the free space cannot hold.

    Some of Slicer's writers (ITK's NRRD, MetaImage and HDF5 writers) crash the process on a short write
    instead of reporting it; this check turns the predictable cases into an error first.

    Raises
    ------
    OutputWriteError
        Naming the output, the size needed and the limit (``ulimit -f``) or the free space.
    """
    path = destination_of(path)
    limit = _file_size_limit()
    if limit is not None and size > limit:
        raise OutputWriteError(f"{path}: writing it needs up to {_size_text(size)}, but this process may write "
                               f"files of at most {_size_text(limit)} (ulimit -f): raise the limit")
    free = shutil.disk_usage(path.parent if str(path.parent) else ".").free
    if size > free:
        raise OutputWriteError(f"{path}: writing it needs up to {_size_text(size)}, but its file system has only "
                               f"{_size_text(free)} free: free some space or write elsewhere")


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else limit


def _size_text(size: int) -> str:
    return f"{size / 2**20:.2f} MiB ({size} bytes)"


#: Marker in the name of every temporary written beside an output: ``.NAME.alignseries-PID-RANDOM.partial…`` (being
#: written) or ``….old`` (an output being replaced), so that the next run of that output can tell what a run that
#: was killed left behind (:func:`remove_stale_temporaries`).
TEMPORARY_MARKER = "alignseries-"
_RANDOM_DIGITS = 12


def temporary_beside(path, ending: str) -> Path:
    """A new hidden name beside ``path`` for a temporary of it, marked with this process's id."""
    path = Path(path)
    return path.with_name(f".{path.name}.{TEMPORARY_MARKER}{os.getpid()}-{uuid.uuid4().hex[:_RANDOM_DIGITS]}{ending}")


def destination_of(path) -> Path:
    """The output a temporary of :func:`temporary_beside` stands for (nested ones too); other paths as they are."""
    path = Path(path)
    found = re.match(rf"\.+(.+?)\.{TEMPORARY_MARKER}\d+-[0-9a-f]{{{_RANDOM_DIGITS}}}\.partial", path.name)
    return path.with_name(found.group(1)) if found else path


def remove_stale_temporaries(path, *, writers_stopped: bool = False) -> list[Path]:
    """Remove the temporaries of ``path`` (see :data:`TEMPORARY_MARKER`) whose writing process is gone.

    Only names of that exact form are touched (nested ones included: a temporary of a temporary), and
    only when the process id in the name is not running here (a live writer keeps its files), or
    every such process is known to be stopped (``writers_stopped``).

    Returns
    -------
    list of Path
        What was removed.
    """
    path = Path(str(path).rstrip("/\\")).absolute()
    pattern = re.compile(rf"\.+{re.escape(path.name)}\.{TEMPORARY_MARKER}(\d+)-[0-9a-f]{{{_RANDOM_DIGITS}}}"
                         r"\.(partial|old)")
    try:
        entries = list(path.parent.iterdir())
    except OSError:  # no folder yet (or not readable): nothing of ours there
        return []
    removed = []
    for entry in entries:
        found = pattern.match(entry.name)
        if found and (writers_stopped or not _process_running(int(found.group(1)))):
            _remove(entry)
            removed.append(entry)
    return removed


def _process_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (unknown counts as running: its files are kept)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        try:
            import psutil  # a dependency of distributed; without it nothing is removed
        except ImportError:
            return True
        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_text_atomic(path, text: str, *, force: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, force=force) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


class StagedOutputs:
    """Outputs written to temporaries beside their destinations, then moved into place together.

    :meth:`file` and :meth:`folder` give a temporary to write to; :meth:`commit` renames them all
    into place (replacing what ``force`` allows) and, if one rename fails, undoes the earlier ones;
    :meth:`discard` removes them. So a command that fails midway leaves nothing new behind. Use it
    through :func:`staged_outputs`.

    Parameters
    ----------
    force : bool
        Replace existing destinations (the caller has checked that it may).
    create_folders : bool
        Create the missing folders that will hold the outputs (removed again, while empty, when the
        outputs are discarded); otherwise a missing folder is an error.
    """

    def __init__(self, *, force: bool = False, create_folders: bool = False):
        self.force = force
        self.create_folders = create_folders
        self._entries: list[tuple[Path, Path, str]] = []  # (temporary, destination, "file" | "folder" | "merge")
        self._created: list[Path] = []  # folders made for the outputs, parents first

    def file(self, path) -> Path:
        """A temporary file path beside ``path``, with its suffixes (for writers that choose a format by name)."""
        self._make_parents(path)
        path = check_output_path(path, force=self.force)
        remove_stale_temporaries(path)
        temporary = temporary_beside(path, ".partial" + ("".join(path.suffixes[-2:]) or ".tmp"))
        self._entries.append((temporary, path, "file"))
        return temporary

    def folder(self, path, *, merge: bool = False) -> Path:
        """A new empty temporary folder beside ``path``.

        With ``merge`` its files are added to an existing ``path`` (an existing file of the same name is
        replaced only with ``force``); otherwise it replaces ``path`` whole.
        """
        path = Path(path).absolute()
        self._make_parents(path)
        remove_stale_temporaries(path)
        temporary = temporary_beside(path, ".partial")
        try:
            temporary.mkdir(FOLDER_MODE)
        except OSError as error:
            raise AlignSeriesError(f"cannot write in the output folder's parent {path.parent}: {error}") from None
        self._entries.append((temporary, path, "merge" if merge else "folder"))
        return temporary

    @property
    def destinations(self) -> list[Path]:
        """Where the staged outputs go."""
        return [destination for _, destination, _ in self._entries]

    def final_path(self, temporary_file) -> Path:
        """Where a file written inside a staged temporary (or a staged file itself) will be after commit."""
        temporary_file = Path(temporary_file)
        for temporary, destination, _ in self._entries:
            if temporary_file == temporary:
                return destination
            if temporary_file.parent == temporary:
                return destination / temporary_file.name
        raise AlignSeriesError(f"{temporary_file} is not a staged output")

    def commit(self) -> None:
        """Move every temporary into place; on a failure, put back what was there and re-raise."""
        undo: list = []
        finish: list = []
        try:
            for temporary, destination, kind in self._entries:
                moves = _files_of(temporary, destination) if kind == "merge" else [(temporary, destination)]
                for source, target in moves:
                    backup = _set_aside(target, self.force)
                    undo.append((target, backup))  # before the move: a failed move puts back what was set aside
                    os.replace(source, target) if source.is_file() else os.rename(source, target)
                    finish.append(backup)
        except BaseException:
            for target, backup in reversed(undo):
                _remove(target)
                if backup is not None:
                    os.rename(backup, target)
            raise
        finally:
            self.discard()
        for backup in finish:
            _remove(backup)

    def discard(self) -> None:
        """Remove the temporaries that are still there."""
        for temporary, _, _ in self._entries:
            _remove(temporary)

    def remove_created_folders(self) -> None:
        """Remove the folders made for the outputs, deepest first, while they are empty (nothing else is lost)."""
        for folder in reversed(self._created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._created.clear()

    def _make_parents(self, path) -> None:
        if not self.create_folders:
            return
        missing = [folder for folder in Path(path).absolute().parents if not folder.exists()]
        for folder in reversed(missing):
            folder.mkdir()
            self._created.append(folder)


#: Permissions of a staged folder (before the umask).
FOLDER_MODE = 0o755


@contextlib.contextmanager
def staged_outputs(*, force: bool = False, create_folders: bool = False) -> Iterator[StagedOutputs]:
    """Yield a :class:`StagedOutputs`; commit it when the block succeeds, discard it when the block or the commit fails.

    On a failure the folders it created are removed again, so nothing new is left behind. A write that
    fails mid-way (an ``OSError`` without a file name, such as a full disk or the file-size limit) is
    reported as an :class:`OutputWriteError` naming the outputs.
    """
    staging = StagedOutputs(force=force, create_folders=create_folders)
    try:
        yield staging
        staging.commit()
    except BaseException as error:
        staging.discard()
        staging.remove_created_folders()
        if (isinstance(error, OSError) and not isinstance(error, AlignSeriesError) and error.filename is None
                and staging.destinations):
            outputs = ", ".join(map(str, staging.destinations))
            raise OutputWriteError(f"writing {outputs} failed, nothing was written: {one_line(error)}") from None
        raise


@contextlib.contextmanager
def native_stderr_held() -> Iterator[list[str]]:
    """Hold back what C and C++ libraries print on the process's standard error (descriptor 2) during the block.

    Yields a list that holds the text once the block has ended, for the caller to show or drop: a writer that
    prints its own "** ERROR" before AlignSeries names the failure in one ``error:`` line would make two.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    held: list[str] = []
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield held
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            held.append(capture.read().decode(errors="replace"))


def _files_of(temporary: Path, destination: Path) -> list[tuple[Path, Path]]:
    destination.mkdir(exist_ok=True)
    return [(source, destination / source.name) for source in sorted(temporary.iterdir())]


def _set_aside(target: Path, force: bool) -> Path | None:
    """Rename an existing ``target`` out of the way (it is removed after a successful commit)."""
    if not target.exists():
        return None
    if not force and not (target.is_dir() and not any(target.iterdir())):
        raise OutputExistsError(f"output exists, not overwritten (use --force): {target}")
    backup = temporary_beside(target, ".old")
    os.rename(target, backup)
    return backup


def _remove(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# -- volume file headers ------------------------------------------------------------------------

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
