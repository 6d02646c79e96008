"""Data safety under a hostile user and a faulty machine: inputs are never written, faults end in one line.

Every test hashes its inputs before and after. Faults are injected in subprocesses: a file-size limit
(``ulimit -f``, RLIMIT_FSIZE), SIGKILL in the middle of a write, and a read-only folder (for root, whom
permissions do not stop, the subprocess runs without CAP_DAC_OVERRIDE through ``setpriv``).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import MODULE_DIR, run
from hostile_corpus import good_series, write_good_points, write_good_volume

import alignseries
from AlignSeriesLib import cli, export_job, exports, files, operations

#: Bounded waits for a subprocess (seconds).
PROCESS_TIMEOUT = 240


def fingerprints(*roots: Path) -> dict:
    """sha256 of every file under (or at) ``roots``, by path."""
    found = {}
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    assert found, f"nothing to fingerprint under {roots}"
    return found


def leftovers(folder: Path) -> list[str]:
    """Temporaries of AlignSeries' writers under ``folder``."""
    return [str(path) for path in folder.rglob(f"*{files.TEMPORARY_MARKER}*")]


def alignseries_process(arguments, *, file_size_limit: int | None = None, read_only: bool = False,
                        **options) -> subprocess.Popen:
    """``python -m AlignSeriesLib ARGUMENTS`` in a subprocess, with a file-size limit or without root's override."""
    command = [sys.executable, "-m", "AlignSeriesLib", *map(str, arguments)]
    if read_only and os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.Popen(command, cwd=MODULE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit if file_size_limit is not None else None, **options)


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=PROCESS_TIMEOUT)
    return process.returncode, out, err


def assert_one_error_line(status: int, err: str, *mentions: str) -> str:
    """Exit status 2 (not a signal), no traceback, the last line ``error: …`` naming ``mentions``."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == cli.EXIT_BAD_INPUT, f"exit status {status}: {err[-2000:]}"
    assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err[-2000:]
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]], err
    for text in mentions:
        assert text in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture
def study(tmp_path) -> dict:
    """A DICOM series, a volume file, a points file and a transform file, all inputs."""
    root = tmp_path / "inputs"
    series = good_series(root / "series")[0].parent
    volume = write_good_volume(root)
    points = write_good_points(root)
    transform = root / "shift.json"
    transform.write_text(json.dumps({"moving_to_fixed_ras": np.eye(4).tolist(), "frame": "RAS"}))
    return {"root": root, "series": series, "volume": volume, "points": points, "transform": transform}


# -- inputs are sacred ----------------------------------------------------------------------------


def _output_cases(study: dict, tmp_path: Path) -> dict:
    """Output options of `resample` that would overwrite or write into an input, by case name."""
    link = tmp_path / "link.nrrd"
    link.symlink_to(study["volume"])
    folder_link = tmp_path / "series_link"
    folder_link.symlink_to(study["series"])
    hard_link = tmp_path / "hard.nrrd"
    os.link(study["volume"], hard_link)
    volume, series = study["volume"], study["series"]
    return {
        "output-is-the-input": ["--output", volume],
        "output-is-the-input-by-dot-dot": ["--output", series / ".." / volume.name],
        "output-is-a-symlink-to-the-input": ["--output", link],
        "output-is-a-hard-link-to-the-input": ["--output", hard_link],
        "output-inside-the-reference-dicom-folder": ["--output", series / "out.nrrd"],
        "output-inside-it-through-a-symlink": ["--output", folder_link / "out.nrrd"],
        "dicom-output-is-the-reference-folder": ["--output", f"{series}/"],
        "preview-is-the-input": ["--output", tmp_path / "out.nrrd", "--preview", volume],
        "png-folder-is-the-reference-folder": ["--output", tmp_path / "out.nrrd", "--png", series],
        "preview-is-the-transform": ["--output", tmp_path / "out.nrrd", "--preview", study["transform"]],
    }


CASE_NAMES = ["output-is-the-input", "output-is-the-input-by-dot-dot", "output-is-a-symlink-to-the-input",
              "output-is-a-hard-link-to-the-input", "output-inside-the-reference-dicom-folder",
              "output-inside-it-through-a-symlink", "dicom-output-is-the-reference-folder", "preview-is-the-input",
              "png-folder-is-the-reference-folder", "preview-is-the-transform"]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_resample_never_writes_an_input_even_with_force(name, study, tmp_path, capsys):
    outputs = _output_cases(study, tmp_path)[name]
    before = fingerprints(study["root"])

    status, _, err = run(capsys, "resample", "--input", study["volume"], "--reference", study["series"],
                         "--transform", study["transform"], *outputs, "--force")

    assert_one_error_line(status, err, "inputs are never written")
    assert fingerprints(study["root"]) == before
    assert not (tmp_path / "out.nrrd").exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("command", ["transform", "landmarks"])
def test_a_transform_output_never_replaces_an_input(command, study, capsys):
    before = fingerprints(study["root"])
    arguments = {"transform": ["--fixed", study["volume"], "--moving", study["series"], "--mode", "centers",
                               "--output", study["volume"]],
                 "landmarks": ["--fixed", study["points"], "--moving", study["points"], "--output", study["points"]]}

    status, _, err = run(capsys, command, *arguments[command], "--force")

    assert_one_error_line(status, err, "is the input")
    assert fingerprints(study["root"]) == before


def test_the_api_never_saves_over_the_files_a_volume_came_from(study):
    before = fingerprints(study["root"])
    volume = alignseries.load(study["volume"])
    resampled = alignseries.resample(alignseries.load(study["series"]), volume)

    with pytest.raises(ValueError, match="is the input"):
        volume.save(study["volume"], force=True)
    for inside in (study["series"] / "out.nrrd", study["series"] / "sub" / "out.nrrd"):
        with pytest.raises(ValueError, match="lies inside the input"):
            resampled.save(inside, force=True)
    assert fingerprints(study["root"]) == before


def test_the_panel_export_never_writes_its_inputs(study, scene):
    """The module logic's writeVolume runs the export job (``export_job.resample_and_write``) on nodes."""
    before = fingerprints(study["root"])
    volume_node = operations.load_one_volume(scene, study["volume"])
    series_node = operations.load_one_volume(scene, study["series"])
    nodes = scene.GetNumberOfNodes()
    for node, reference_node, targets in (
            (volume_node, volume_node, exports.ExportTargets(volume_file=study["volume"], force=True)),
            (series_node, volume_node, exports.ExportTargets(preview=study["series"] / "IM00001", force=True)),
            (series_node, series_node, exports.ExportTargets(dicom_folder=study["series"], force=True))):
        with pytest.raises(ValueError, match="inputs are never written"):
            export_job.resample_and_write(scene, node, operations.reference_of_node(reference_node), targets,
                                          export_job.ExportOptions("nearest"))
    assert fingerprints(study["root"]) == before
    assert scene.GetNumberOfNodes() == nodes  # a refused export leaves the scene as it was


def test_force_still_replaces_an_earlier_output(study, tmp_path, capsys):
    output = tmp_path / "out.nrrd"
    output.write_bytes(b"an earlier output")

    status, _, err = run(capsys, "resample", "--input", study["volume"], "--reference", study["volume"],
                         "--output", output, "--force")

    assert status == 0, err
    assert output.read_bytes() != b"an earlier output"


# -- writes that fail mid-way ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii", ".nii.gz", "/"])
def test_a_write_beyond_the_file_size_limit_is_one_error_line(suffix, study, tmp_path):
    source = study["root"] / "source.nii"
    nib.save(nib.Nifti1Image(np.random.default_rng(1).integers(0, 4000, (40, 64, 64)).astype(np.int16),
                             np.diag([0.5, 0.5, 1.0, 1.0])), source)
    before = fingerprints(study["root"])
    output = f"{tmp_path / 'result' / 'out'}{suffix}"

    process = alignseries_process(["resample", "--input", source, "--reference",
                                   study["series"] if suffix == "/" else source, "--output", output],
                                  file_size_limit=1024)
    status, _, err = finished(process)

    line = assert_one_error_line(status, err, "out")
    assert "ulimit -f" in line or "File too large" in line, line
    assert "** ERROR" not in err  # the NIfTI library's own line ("NWAD: wrote only 0 of … bytes") is held back
    assert "With tag" not in line  # pydicom's own wrapping, with its traceback, is not the user's message
    assert fingerprints(study["root"]) == before
    assert not (tmp_path / "result").exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("suffix", [".h5", ".tfm"])
def test_a_transform_write_beyond_the_file_size_limit_is_one_error_line(suffix, study, tmp_path):
    """.h5: HDF5 crashed the process at exit; .tfm: 200 bytes of a transform were kept as if whole."""
    before = fingerprints(study["root"])

    process = alignseries_process(["landmarks", "--fixed", study["points"], "--moving", study["points"],
                                   "--output", tmp_path / f"t{suffix}"], file_size_limit=200)
    status, _, err = finished(process)

    assert_one_error_line(status, err, f"t{suffix}", "ulimit -f")
    assert fingerprints(study["root"]) == before
    assert list(tmp_path.iterdir()) == [study["root"]]


def test_a_write_killed_midway_leaves_temporaries_that_the_next_run_removes(study, tmp_path):
    big = tmp_path / "big.nii"
    voxels = np.random.default_rng(2).random((160, 256, 256)).astype(np.float32)
    nib.save(nib.Nifti1Image(voxels, np.eye(4)), big)
    before = fingerprints(study["root"], big)
    output = tmp_path / "out" / "result.nii.gz"
    output.parent.mkdir()
    someone_elses = output.parent / ".result.nii.gz.mine.partial"  # like ours, without our marker: kept
    someone_elses.write_bytes(b"not AlignSeries'")
    arguments = ["resample", "--input", big, "--reference", big, "--interpolation", "nearest", "--output", output]

    process = alignseries_process(arguments)
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not leftovers(output.parent) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    status, _, _ = finished(process)
    stale = leftovers(output.parent)
    assert status == -signal.SIGKILL and stale, "the write ended before it could be killed"
    assert not output.exists()

    status, _, err = finished(alignseries_process(arguments))

    assert status == 0, err
    assert not leftovers(output.parent), "the stale temporaries of the killed run are still there"
    assert someone_elses.read_bytes() == b"not AlignSeries'"
    assert np.array_equal(np.asarray(nib.load(output).dataobj), voxels)
    assert fingerprints(study["root"], big) == before


# -- nothing partial ------------------------------------------------------------------------------


def test_with_json_a_failure_is_a_json_document_too(study, tmp_path, capsys):
    status, out, err = run(capsys, "resample", "--input", study["volume"], "--reference", tmp_path / "absent.nrrd",
                           "--output", tmp_path / "out.nrrd", "--json")

    line = assert_one_error_line(status, err, "absent.nrrd")
    assert json.loads(out) == {"error": line.removeprefix("error: ")}


@pytest.mark.parametrize("options, mentions", [
    (["--png-window", "nan", "inf"], "finite"),
    (["--png-window", "40", "inf"], "finite"),
    (["--series-uid", "not a uid!"], "not a valid DICOM UID"),
    (["--series-uid", "1.2." + "3" * 67], "71"),
    (["--series-uid", "1.02.3"], "leading zeros"),
])
def test_non_finite_windows_and_invalid_uids_are_refused_before_any_work(options, mentions, study, tmp_path,
                                                                         capsys):
    before = fingerprints(study["root"])

    status, _, err = run(capsys, "resample", "--input", study["volume"], "--reference", study["series"],
                         "--output", f"{tmp_path / 'dicom'}/", "--png", tmp_path / "png", *options)

    assert_one_error_line(status, err, options[0], mentions)
    assert fingerprints(study["root"]) == before and list(tmp_path.iterdir()) == [study["root"]]


def test_landmarks_whose_labels_pair_otherwise_warn_in_the_text_output_too(study, tmp_path):
    fixed = np.loadtxt(study["points"], delimiter=",", skiprows=1, usecols=(0, 1, 2))
    moving = tmp_path / "moving.csv"
    labels = "ABCDE"
    order = [1, 0, 2, 3, 4]  # the moving list names its first two points the other way round
    moving.write_text("x,y,z,label\n" + "".join(f"{x},{y},{z},{labels[order[n]]}\n"
                                                  for n, (x, y, z) in enumerate(fixed[order])))

    status, out, err = finished(alignseries_process(["landmarks", "--fixed", study["points"], "--moving", moving,
                                                     "--output", tmp_path / "t.json"]))

    assert status == 0, err
    assert "RMS error" in out
    assert "warning: points were paired by list order, but their labels pair 2 of 5 points differently" in err


def test_a_panel_point_list_with_an_unplaced_point_is_refused(study, scene):
    """Slicer's panel gives markups nodes; an unplaced control point reads as 0,0,0 and must not count."""
    points = np.loadtxt(study["points"], delimiter=",", skiprows=1, usecols=(0, 1, 2))
    fixed = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "F")
    for n, point in enumerate(points):
        fixed.AddControlPoint(*point, "ABCDE"[n])
    fixed.UnsetNthControlPointPosition(3)

    with pytest.raises(ValueError, match=r"F': control point\(s\) 4 \('D'\) without a position"):
        operations.compute_landmark_transform(scene, fixed, points, "rigid")


def test_scaled_integer_nifti_goes_to_dicom_exactly(study, tmp_path, capsys, scene):
    """A CT NIfTI of int16 with scl_slope 1, scl_inter -1024 (and a phase one, 2 and -4096) on the reference grid."""
    grid = operations.load_reference(scene, study["series"]).geometry
    stored = np.random.default_rng(3).integers(0, 3000, grid.dimensions[::-1]).astype(np.int16)  # [k, j, i]
    for name, slope, inter in (("ct", 1.0, -1024.0), ("phase", 2.0, -4096.0)):
        image = nib.Nifti1Image(stored.transpose(2, 1, 0), grid.ijk_to_ras)
        image.header.set_slope_inter(slope, inter)
        nib.save(image, tmp_path / f"{name}.nii.gz")
        truth = nib.load(tmp_path / f"{name}.nii.gz").get_fdata().transpose(2, 1, 0)  # nibabel's scaling

        status, _, err = run(capsys, "resample", "--input", tmp_path / f"{name}.nii.gz", "--reference",
                             study["series"], "--interpolation", "nearest", "--output", f"{tmp_path / name}/")

        assert status == 0, err
        written = [pydicom.dcmread(path) for path in (tmp_path / name).iterdir()]
        for dataset in written:
            k = int(round(grid.world_to_ijk(np.diag([-1, -1, 1]) @ np.array(dataset.ImagePositionPatient,
                                                                             dtype=float))[2]))
            assert float(dataset.get("RescaleSlope", 1)) == 1.0
            values = dataset.pixel_array * 1.0 + float(dataset.get("RescaleIntercept", 0))
            assert np.array_equal(values, truth[k]), f"{name} slice {k}: up to {np.abs(values - truth[k]).max()} off"
        assert len(written) == grid.dimensions[2]


# -- clean recovery -------------------------------------------------------------------------------


def test_the_stale_temporary_sweep_removes_only_dead_writers_temporaries_of_that_output(tmp_path):
    """The stale-temporary sweep touches only names with our marker, of this output, from a dead process."""
    output = tmp_path / "out.nrrd"
    dead = tmp_path / f".out.nrrd.{files.TEMPORARY_MARKER}99999999-0123456789ab.partial.nrrd"
    alive = files.temporary_beside(output, ".partial.nrrd")
    other_output = tmp_path / f".out.nrrd2.{files.TEMPORARY_MARKER}99999999-0123456789ab.partial.nrrd"
    unrelated = [tmp_path / ".out.nrrd.0123456789ab.partial.nrrd", tmp_path / "out.nrrd.bak", other_output]
    for path in (dead, alive, *unrelated):
        path.write_bytes(b"x")
    nested = tmp_path / f"..out.nrrd.{files.TEMPORARY_MARKER}99999999-0123456789ab.partial.nrrd.x.partial"
    nested.mkdir()

    removed = files.remove_stale_temporaries(output)

    assert sorted(removed) == sorted([dead, nested])
    assert alive.exists() and all(path.exists() for path in unrelated)
