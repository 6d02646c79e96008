"""Safe file handling: inputs are checked before use, outputs are written atomically.

Every writer in AlignSeriesLib goes through :func:`atomic_output`: the data is written to a
temporary file in the destination folder and renamed into place only when complete, so a failure
never leaves a partial file, and an existing file is never replaced unless ``force`` is given.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
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


# -- native libraries' messages ---------------------------------------------------------------


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
