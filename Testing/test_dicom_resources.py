"""Bounded resources when reading DICOM: nothing hangs, nothing blows memory, nothing aborts without a word.

Each fault is injected in a fresh ``alignseries`` process (a FIFO in a DICOM folder, a deflated file that
inflates to gigabytes, an RLE file that decodes to 2 GiB, under ``ulimit -v`` where memory is the point),
with a timeout, and every input is hashed before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import MODULE_DIR
from dicom_fixtures import stack_positions, write_phantom_series
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info

from AlignSeriesLib.dicom.file_kinds import MAX_DECODED_ENVIRONMENT

TIMEOUT_SECONDS = 120
GIB = 2**30


def good_series(folder: Path, count: int = 3) -> list[Path]:
    files, _ = write_phantom_series(folder, stack_positions((0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0),
                                                            np.arange(count) * 2.0))
    return files


def fingerprints(folder: Path) -> dict:
    """sha256 of every regular file under ``folder``, the type of every other one, by relative path."""
    result = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        key = str(path.relative_to(folder))
        if stat.S_ISREG(mode):
            result[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif not stat.S_ISDIR(mode):
            result[key] = stat.filemode(mode)
    return result


def alignseries(*arguments, memory_kib: int | None = None, environment: dict | None = None):
    """Run ``alignseries ARGUMENTS`` in a new process (under ``ulimit -v memory_kib``), with a timeout."""
    command = [sys.executable, "-m", "AlignSeriesLib", *map(str, arguments)]
    if memory_kib is not None:
        command = ["bash", "-c", f'ulimit -v {memory_kib} && exec "$@"', "alignseries", *command]
    return subprocess.run(command, cwd=MODULE_DIR, capture_output=True, text=True, timeout=TIMEOUT_SECONDS,
                          env={**os.environ, **(environment or {})})


def assert_one_error_line(process, *mentions: str) -> str:
    assert process.returncode == 2, (process.returncode, process.stderr)
    errors = [line for line in process.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "internal error" not in errors[0] and "Traceback" not in process.stderr, process.stderr
    for mention in mentions:
        assert mention in errors[0], errors[0]
    return errors[0]


# -- a FIFO, a socket in a DICOM folder ----------------------------------------------------------------


def test_a_fifo_in_a_dicom_folder_is_skipped_unopened_and_named(tmp_path):
    folder = tmp_path / "in"
    good_series(folder)
    os.mkfifo(folder / "pipe.dcm")  # opening it for reading would block until a writer comes
    before = fingerprints(folder)

    info = alignseries("info", "--json", folder)
    resample = alignseries("resample", "--input", folder, "--reference", folder, "--output", tmp_path / "out.nrrd")

    assert info.returncode == 0, info.stderr
    document = json.loads(info.stdout)
    assert [v["dimensions"][2] for v in document["volumes"]] == [3]
    assert [(Path(s["path"]).name, s["kind"]) for s in document["skipped"]] == [("pipe.dcm", "FIFO (named pipe)")]
    assert "not a regular file: skipped without opening it" in document["skipped"][0]["reason"]
    assert resample.returncode == 0, resample.stderr
    assert "1 FIFO (named pipe)" in resample.stderr
    assert fingerprints(folder) == before


def test_a_fifo_given_by_name_is_refused_unopened(tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)

    process = alignseries("info", fifo)

    assert_one_error_line(process, "FIFO (named pipe), not a regular file")


# -- a deflate bomb ------------------------------------------------------------------------------------------


def deflate_bomb(path: Path, rows: int, columns: int) -> Path:
    """A Deflated Explicit VR Little Endian CT of ``rows`` x ``columns`` zero pixels (16-bit), written in a stream:
    a few kB of file that inflate to ``2 * rows * columns`` bytes. Made with pydicom, never held in memory."""
    (source,) = good_series(path.parent.parent / "source", 1)
    dataset = pydicom.dcmread(source)
    del dataset.PixelData
    dataset.Rows, dataset.Columns = rows, columns
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False
    write_dataset(header, dataset)
    pixel_length = 2 * rows * columns
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_length)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as file:
        file.write(b"\0" * 128 + b"DICM")
        meta = DicomBytesIO()
        meta.is_little_endian, meta.is_implicit_VR = True, False
        write_file_meta_info(meta, dataset.file_meta, enforce_standard=True)
        file.write(meta.getvalue())
        file.write(deflater.compress(header.getvalue() + element))
        zeros = bytes(2**24)
        for _ in range(pixel_length // len(zeros)):
            file.write(deflater.compress(zeros))
        file.write(deflater.compress(bytes(pixel_length % len(zeros))))
        file.write(deflater.flush())
    return path


@pytest.fixture(scope="module")
def bomb_folder(tmp_path_factory) -> Path:
    """A good series and a deflated file inflating to 1.5 GiB (about 1.5 MB on disk)."""
    folder = tmp_path_factory.mktemp("deflate") / "in"
    good_series(folder)
    deflate_bomb(folder / "bomb.dcm", 32768, 24576)
    return folder


def test_a_deflate_bomb_beyond_the_limit_is_refused_during_the_header_scan(bomb_folder):
    before = fingerprints(bomb_folder)
    assert (bomb_folder / "bomb.dcm").stat().st_size < 4 * 2**20

    process = alignseries("info", "--json", bomb_folder, environment={MAX_DECODED_ENVIRONMENT: "0.5"})

    assert process.returncode == 0, process.stderr
    (skipped,) = json.loads(process.stdout)["skipped"]
    assert skipped["kind"] == "too large"
    assert "inflates to more than 0.50 GiB (the limit)" in skipped["reason"]
    assert MAX_DECODED_ENVIRONMENT in skipped["reason"]
    assert fingerprints(bomb_folder) == before


def test_a_deflate_bomb_within_the_limit_but_beyond_memory_is_a_clean_error(bomb_folder):
    before = fingerprints(bomb_folder)

    process = alignseries("info", bomb_folder / "bomb.dcm", memory_kib=1_000_000)  # 1 GB: inflating needs 1.5 GiB

    assert_one_error_line(process, "bomb.dcm", "not enough memory")
    assert fingerprints(bomb_folder) == before


# -- an RLE file decoding to 2 GiB -----------------------------------------------------------------------


def rle_bomb(path: Path, rows: int, columns: int) -> Path:
    """An RLE Lossless 16-bit CT of ``rows`` x ``columns`` zeros: 2 segments of 128-byte runs (64x smaller)."""
    (source,) = good_series(path.parent.parent / "rle source", 1)
    dataset = pydicom.dcmread(source)
    dataset.Rows, dataset.Columns = rows, columns
    runs = rows * columns // 128
    segment = b"\x81\x00" * runs  # header -127: the next byte repeated 128 times
    offsets = [64, 64 + len(segment)]
    frame = struct.pack("<16I", 2, *offsets, *[0] * 13) + segment + segment
    dataset.PixelData = pydicom.encaps.encapsulate([frame])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def rle_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rle") / "in"
    folder.mkdir()
    rle_bomb(folder / "big.dcm", 32768, 32768)  # 2 GiB decoded, 32 MB on disk
    return folder


def test_an_rle_file_decoding_beyond_the_limit_is_refused_from_its_header(rle_folder, tmp_path):
    before = fingerprints(rle_folder)

    process = alignseries("resample", "--input", rle_folder, "--reference", rle_folder, "--output",
                          tmp_path / "out.nrrd", environment={MAX_DECODED_ENVIRONMENT: "1"})

    assert_one_error_line(process, "2.00 GiB exceeds the limit of 1.00 GiB", MAX_DECODED_ENVIRONMENT)
    assert not (tmp_path / "out.nrrd").exists()
    assert fingerprints(rle_folder) == before


def test_an_rle_file_decoding_beyond_the_memory_left_is_refused_not_aborted(rle_folder, tmp_path):
    before = fingerprints(rle_folder)

    process = alignseries("resample", "--input", rle_folder, "--reference", rle_folder, "--output",
                          tmp_path / "out.nrrd", memory_kib=3_000_000)

    assert process.returncode >= 0, f"killed by signal {-process.returncode}: {process.stderr[-500:]}"
    assert_one_error_line(process, "memory")
    assert not (tmp_path / "out.nrrd").exists()
    assert fingerprints(rle_folder) == before
