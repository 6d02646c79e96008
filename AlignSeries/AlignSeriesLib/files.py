"""Safe file handling: inputs are checked before use, outputs are written atomically.

Every writer in AlignSeriesLib goes through :func:`atomic_output`: the data is written to a
temporary file in the destination folder and renamed into place only when complete, so a failure
never leaves a partial file, and an existing file is never replaced unless ``force`` is given.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import AlignSeriesError, OutputExistsError


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
        raise OutputExistsError(f"output exists, not overwritten (use --force / force=True): {path}")
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
    suffix = "".join(path.suffixes[-2:]) or ".tmp"
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial{suffix}")
    try:
        yield temporary
        if not temporary.exists() or temporary.stat().st_size == 0:
            raise AlignSeriesError(f"nothing was written for {path}")
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_text_atomic(path, text: str, *, force: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, force=force) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)
