"""Hostile inputs (``hostile_corpus``) through the command line and the MRML bridge: data safety guarantees.

For every case: a clear one-line ``error: …`` naming the input (exit status 2), or the result with a
warning; never a traceback, an internal error (status 3), a crash or a hang; the inputs byte-identical
afterwards; no output (and no ``.partial`` file) left behind on failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import MODULE_DIR
from hostile_corpus import all_cases, build_case, good_series, write_good_points, write_good_volume

from AlignSeriesLib import cli, mrml, mrml_files, operations
from AlignSeriesLib.dicom import pixels as dicom_pixels
from AlignSeriesLib.errors import AlignSeriesError, DicomError
from AlignSeriesLib.volume_headers import check_volume_file

CASES = all_cases()
#: Cases also run in a subprocess (crash = negative return code): one or more of each kind and outcome.
SUBPROCESS_SAMPLE = ("dicom-header-claims-60000x60000x5000", "dicom-JPEG2000-declared-on-raw-bytes",
                     "dicom-JPEG2000-encapsulated-garbage", "dicom-series-with-symlink-loops", "dicom-gantry-tilt",
                     "volume-nrrd-header-claims-60000x60000x5000", "volume-nrrd-gzip-header-claims-60000x60000x5000",
                     "volume-nrrd-rgb", "volume-nii-truncated", "points-nan-coordinate", "transform-h5-garbage",
                     "transform-tfm-bspline")
#: Seconds one in-process command may take before it counts as a hang.
TIMEOUT_SECONDS = 60


@pytest.fixture(scope="module")
def support(tmp_path_factory) -> dict:
    """The good counterparts the cases are combined with: a volume file and a points file."""
    folder = tmp_path_factory.mktemp("support")
    return {"volume": write_good_volume(folder), "points": write_good_points(folder)}


def cli_arguments(case, path: Path, support: dict, output_folder: Path) -> list[str]:
    """The ``alignseries`` command that feeds ``path`` to AlignSeries as the case's kind says."""
    if case.kind == "dicom":
        return ["resample", "--input", str(path), "--input-volume", "1", "--reference", str(path),
                "--reference-volume", "1", "--output", str(output_folder / "out.nrrd")]
    if case.kind == "volume":
        return ["resample", "--input", str(path), "--reference", str(support["volume"]),
                "--output", str(output_folder / "out.nrrd")]
    if case.kind == "points":
        return ["landmarks", "--fixed", str(path), "--moving", str(support["points"]),
                "--output", str(output_folder / "out.json")]
    return ["resample", "--input", str(support["volume"]), "--reference", str(support["volume"]),
            "--transform", str(path), "--output", str(output_folder / "out.nrrd")]


def fingerprints(folder: Path) -> dict:
    """sha256 of every file under ``folder`` (symlinks by their target text), by relative path."""
    result = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            result[str(path.relative_to(folder))] = f"-> {path.readlink()}"
        elif path.is_file():
            result[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail (instead of hanging) when the block runs longer than ``seconds``."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def built(case, tmp_path: Path) -> tuple[Path, Path]:
    """Build ``case`` under ``tmp_path``; returns (input path, empty output folder)."""
    path = build_case(case, tmp_path / "in")
    output_folder = tmp_path / "out"
    output_folder.mkdir()
    return path, output_folder


def check_error_line(stderr: str, case, path: Path) -> None:
    """One ``error:`` line, the last one, naming the input (or what was refused) and the problem."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert "Traceback" not in stderr and len(errors) == 1 and lines[-1] == errors[0], stderr
    assert "internal error" not in errors[0]
    assert path.name in errors[0] or case.mentions in errors[0], errors[0]
    assert case.mentions in errors[0], errors[0]


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_command_line_gives_one_clear_line_or_a_warned_result(case, tmp_path, support, capsys, caplog):
    path, output_folder = built(case, tmp_path)
    inputs = fingerprints(tmp_path / "in")

    with caplog.at_level(logging.WARNING), time_limit(TIMEOUT_SECONDS):
        status = cli.main(cli_arguments(case, path, support, output_folder))

    stderr = capsys.readouterr().err
    if case.expected == "error":
        assert status == cli.EXIT_BAD_INPUT, stderr
        check_error_line(stderr, case, path)
        assert list(output_folder.iterdir()) == [], "a failed command left output behind"
    else:
        assert status == 0, stderr
        assert [p.name for p in output_folder.iterdir()] == [next(iter(output_folder.iterdir())).name]
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        if case.expected == "warning":
            assert warnings and case.mentions in " ".join(warnings) + stderr, warnings
    assert fingerprints(tmp_path / "in") == inputs, "an input file changed"


@pytest.mark.parametrize("case", [c for c in CASES if c.kind in ("dicom", "volume")], ids=lambda case: case.name)
def test_info_describes_or_refuses_without_crashing(case, tmp_path, capsys):
    path, _ = built(case, tmp_path)

    with time_limit(TIMEOUT_SECONDS):
        status = cli.main(["info", "--json", str(path)])

    stderr = capsys.readouterr().err
    assert status in (0, cli.EXIT_BAD_INPUT), stderr
    if status:
        check_error_line(stderr, case, path)


@pytest.mark.parametrize("name", SUBPROCESS_SAMPLE)
def test_command_line_process_never_crashes(name, tmp_path, support):
    (case,) = [c for c in CASES if c.name == name]
    path, output_folder = built(case, tmp_path)

    arguments = cli_arguments(case, path, support, output_folder)
    process = subprocess.run([sys.executable, "-m", "AlignSeriesLib", *arguments], cwd=MODULE_DIR,
                             capture_output=True, text=True, timeout=120)

    assert process.returncode >= 0, f"crashed with signal {-process.returncode}"
    assert process.returncode == (cli.EXIT_BAD_INPUT if case.expected == "error" else 0), process.stderr
    if case.expected == "error":
        check_error_line(process.stderr, case, path)
        assert list(output_folder.iterdir()) == []
    elif case.expected == "warning":
        assert "warning: " in process.stderr


# -- the MRML bridge ------------------------------------------------------------------------------


def run_bridge(scene, case, path: Path, support: dict):
    """Feed ``path`` to the bridge function the case's kind goes through; returns what it made."""
    if case.kind == "dicom":
        return operations.load_volumes(scene, [path])
    if case.kind == "volume":
        return [mrml_files.load_volume_file(scene, path)]
    if case.kind == "points":
        return operations.compute_landmark_transform(scene, path, support["points"], "rigid")
    volume = mrml_files.load_volume_file(scene, support["volume"])
    transform = mrml_files.read_transform_file(scene, path, moving_geometry=mrml.volume_geometry(volume),
                                               fixed_geometry=mrml.volume_geometry(volume))
    return [operations.resample_volume(scene, volume, mrml.volume_geometry(volume), transform_node=transform)]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bridge_raises_a_clear_error_or_warns(case, tmp_path, support, scene, caplog):
    path, _ = built(case, tmp_path)
    inputs = fingerprints(tmp_path / "in")

    with caplog.at_level(logging.WARNING), time_limit(TIMEOUT_SECONDS):
        if case.expected == "error":
            with pytest.raises((AlignSeriesError, OSError)) as raised:
                run_bridge(scene, case, path, support)
            assert case.mentions in str(raised.value) and "\n" not in str(raised.value).strip()
        else:
            result = run_bridge(scene, case, path, support)
            assert result
    if case.expected == "warning":
        assert [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert fingerprints(tmp_path / "in") == inputs


# -- outputs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["transform", "landmarks", "resample"])
def test_an_existing_output_is_refused_without_force(command, tmp_path, support, capsys):
    series = good_series(tmp_path / "series")[0].parent
    output = tmp_path / ("out.json" if command != "resample" else "out.nrrd")
    output.write_text("precious")
    arguments = {
        "transform": ["transform", "--fixed", str(series), "--moving", str(series), "--mode", "centers"],
        "landmarks": ["landmarks", "--fixed", str(support["points"]), "--moving", str(support["points"])],
        "resample": ["resample", "--input", str(series), "--reference", str(series)],
    }[command] + ["--output", str(output)]

    refused = cli.main(arguments)
    error = capsys.readouterr().err

    assert refused == cli.EXIT_BAD_INPUT and "exists" in error and str(output) in error
    assert output.read_text() == "precious"
    assert cli.main(arguments + ["--force"]) == 0 and output.read_bytes() != b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["series", output.name])


def test_an_existing_dicom_output_folder_is_refused_without_force(tmp_path, capsys):
    series = good_series(tmp_path / "series")[0].parent
    output = tmp_path / "exported"
    output.mkdir()
    (output / "slice_0001.dcm").write_bytes(b"precious")
    arguments = ["resample", "--input", str(series), "--reference", str(series), "--output", f"{output}/"]

    assert cli.main(arguments) == cli.EXIT_BAD_INPUT and "not empty" in capsys.readouterr().err
    assert [p.name for p in output.iterdir()] == ["slice_0001.dcm"]
    assert cli.main(arguments + ["--force"]) == 0 and len(list(output.iterdir())) == 4
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name or p.name.endswith(".old")]


# -- names derived from DICOM fields ----------------------------------------------------------------

HOSTILE_TEXT = ["../../etc/x", "a/b\\c", "tab\there\nnewline\x00nul", "..", "C:\\Windows"]


def hostile_named_series(folder: Path) -> Path:
    """A good series whose SeriesDescription, PatientName and SOPInstanceUIDs hold path syntax and controls."""
    files = good_series(folder, description=HOSTILE_TEXT[0], PatientName=HOSTILE_TEXT[1])
    for number, path in enumerate(files):
        dataset = pydicom.dcmread(path)
        dataset.SeriesDescription = HOSTILE_TEXT[number % len(HOSTILE_TEXT)]
        dataset.SOPInstanceUID = f"../../{number}/{HOSTILE_TEXT[number % len(HOSTILE_TEXT)]}"
        dataset.save_as(path, enforce_file_format=False)
    return folder


def assert_safe_name(name: str) -> None:
    assert not {"/", "\\"} & set(name) and name.isprintable() and not name.startswith("."), repr(name)


def test_names_derived_from_dicom_fields_hold_no_path_syntax(tmp_path, scene, capsys):
    series = hostile_named_series(tmp_path / "series")
    output = tmp_path / "out"
    output.mkdir()

    nodes = operations.load_volumes(scene, [series])
    status = cli.main(["resample", "--input", str(series), "--reference", str(series), "--output",
                       str(output / "dicom") + "/", "--png", str(output / "png")])

    assert status == 0, capsys.readouterr().err
    for node in nodes:
        assert_safe_name(node.GetName())
    written = list(output.rglob("*"))
    assert len(written) == 2 + 2 * 4 + 1  # two folders, 4 DICOM files, 4 PNGs and index.csv
    for path in written:
        assert path.resolve().is_relative_to(output.resolve())
        assert_safe_name(path.name)


# -- memory ---------------------------------------------------------------------------------------


def test_a_volume_header_claiming_60000x60000x5000_is_refused_before_reading(tmp_path):
    (case,) = [c for c in CASES if c.name == "volume-nrrd-gzip-header-claims-60000x60000x5000"]
    path = build_case(case, tmp_path)

    claim = r"60000 x 60000 x 5000 samples x 2 bytes = 33527\.61 GiB, which exceeds"
    with pytest.raises(AlignSeriesError, match=claim):
        check_volume_file(path, max_bytes=dicom_pixels.MAX_VOLUME_BYTES)


def test_a_dicom_header_claiming_60000x60000x5000_is_refused_before_reading(tmp_path):
    with pytest.raises(DicomError, match=r"5000 x 60000 x 60000 voxels x 2 bytes = 33527\.61 GiB exceeds"):
        dicom_pixels.check_memory((5000, 60000, 60000), np.int16, "claimed")


def test_the_corpus_has_over_100_named_cases_with_known_outcomes():
    assert len(CASES) >= 100 and len({case.name for case in CASES}) == len(CASES)
    assert {case.expected for case in CASES} <= {"error", "warning", "ok"}
