"""``alignseries batch``: a manifest of small cases, broken ones included, on real Dask clusters.

Truth comes from outside the batch runner: exact labels built on the reference grid and read back
with nibabel, and the outputs of ``alignseries resample`` for the same case (PNG bytes, DICOM pixels
and positions read with pydicom). Clusters are real: a ``LocalCluster`` of two worker processes, and a
``dask scheduler`` and ``dask worker`` started here as subprocesses on 127.0.0.1 only.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK
from conftest import MODULE_DIR
from dicom_fixtures import stack_positions, write_phantom_series

from AlignSeriesLib import batch, cli, transform_files

PYTHON = sys.executable
#: Reference grid: axial DICOM, 1 mm pixels, 2 mm slices.
COLUMNS, ROWS, SLICES = 14, 16, 6
FIRST_LPS = (-20.0, -20.0, -10.0)
REFERENCE_IJK_TO_RAS = np.array([[-1.0, 0, 0, 20.0], [0, -1.0, 0, 20.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
#: Bounded waits for the subprocesses a test starts (seconds).
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def truth_labels() -> np.ndarray:
    """A label volume on the reference grid, [k, j, i]."""
    k, j, i = np.mgrid[0:SLICES, 0:ROWS, 0:COLUMNS]
    return (1 + (i + 2 * j + 3 * k) % 5).astype(np.uint8)


def write_study(root: Path) -> None:
    """The inputs of every case, and a manifest (paths relative to its folder) with three broken rows."""
    positions = stack_positions(FIRST_LPS, (1, 0, 0, 0, 1, 0), np.arange(SLICES) * 2.0)
    write_phantom_series(root / "ref", positions, "axial", (1.0, 1.0), rows=ROWS, columns=COLUMNS, shuffle_seed=4,
                         frame_of_reference_uid="1.2.826.0.1.3680043.8.498.4242")
    moving = stack_positions((-25.0, -22.0, -12.0), (1, 0, 0, 0, 1, 0), np.arange(5) * 2.5)
    write_phantom_series(root / "mr", moving, "axial", (1.3, 1.3), rows=18, columns=17, shuffle_seed=5,
                         frame_of_reference_uid="1.2.826.0.1.3680043.8.498.4243")
    # The labels stored with axes (k, i, j), the first one flipped: only the affine says where voxels are.
    stored = truth_labels().transpose(2, 1, 0).transpose(2, 0, 1)[::-1]
    stored_to_ijk = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [-1, 0, 0, SLICES - 1], [0, 0, 0, 1]], dtype=float)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), REFERENCE_IJK_TO_RAS @ stored_to_ijk),
             root / "mask.nii.gz")
    image = SimpleITK.GetImageFromArray(np.random.default_rng(7).normal(100, 20, (8, 20, 19)).astype(np.float32))
    image.SetSpacing((1.1, 1.2, 1.7))
    image.SetOrigin((-21.0, -22.0, -11.0))  # LPS
    SimpleITK.WriteImage(image, str(root / "ct.nrrd"))
    transform_files.write_matrix_file(root / "shift.json", np.array([[1, 0, 0, 1.5], [0, 1, 0, -0.5], [0, 0, 1, 0.7],
                                                                    [0, 0, 0, 1.0]]))
    (root / "garbage.nii.gz").write_bytes(b"this is not a NIfTI file")
    (root / "manifest.csv").write_text(
        "input,reference,output,transform,labelmap,png,interpolation\n"
        "mask.nii.gz,ref,masks/mask.nii.gz,,yes,png/mask,\n"
        "ct.nrrd,ref,dicom/ct/,,no,,cubic\n"
        "mr,ref,moved/mr.nrrd,shift.json,,,nearest\n"
        "absent.nii.gz,ref,absent.nrrd,,,,\n"
        "garbage.nii.gz,ref,garbage.nrrd,,,,\n"
        "ct.nrrd,ref,sinc.nrrd,,,,sinc\n")


#: Manifest line -> (status, what the error names) of :func:`write_study`'s manifest.
EXPECTED = {2: ("done", None), 3: ("done", None), 4: ("done", None), 5: ("failed", "absent.nii.gz"),
            6: ("failed", "garbage.nii.gz"), 7: ("failed", "sinc")}
#: The good cases as `alignseries resample` arguments (relative to the study folder).
RESAMPLE_ARGUMENTS = {
    2: ["--input", "mask.nii.gz", "--reference", "ref", "--labelmap", "--png", "{out}/png/mask",
        "--output", "{out}/masks/mask.nii.gz"],
    3: ["--input", "ct.nrrd", "--reference", "ref", "--interpolation", "cubic", "--output", "{out}/dicom/ct/"],
    4: ["--input", "mr", "--reference", "ref", "--transform", "shift.json", "--interpolation", "nearest",
        "--output", "{out}/moved/mr.nrrd"],
}


def run_cli(*args) -> tuple[int, str, str]:
    """``alignseries ARGS`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(arg) for arg in args])
    return status, out.getvalue(), err.getvalue()


def run_batch(study: Path, output: Path, *options) -> tuple[int, dict, str]:
    status, out, err = run_cli("batch", study / "manifest.csv", "--output-dir", output, "--json", *options)
    return status, json.loads(out), err


def by_line(summary: dict) -> dict[int, dict]:
    return {case["row"]: case for case in summary["cases"]}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    write_study(root)
    return root


@pytest.fixture(scope="module")
def first_run(study, tmp_path_factory):
    """The manifest run once on a local cluster of 2 workers: (exit status, summary, stderr, output folder)."""
    output = tmp_path_factory.mktemp("batch") / "out"
    status, summary, err = run_batch(study, output, "--workers", "2")
    return status, summary, err, output


@pytest.fixture(scope="module")
def resample_outputs(study, tmp_path_factory) -> Path:
    """What `alignseries resample` writes for each good case (run in the study folder, as the manifest reads)."""
    output = tmp_path_factory.mktemp("resample")
    for folder in ("masks", "png", "dicom", "moved"):  # `resample` writes into existing folders only
        (output / folder).mkdir()
    cwd = os.getcwd()
    os.chdir(study)
    try:
        for arguments in RESAMPLE_ARGUMENTS.values():
            status, _, err = run_cli("resample", *(a.format(out=output) for a in arguments))
            assert status == 0, err
    finally:
        os.chdir(cwd)
    return output


# -- a local cluster -------------------------------------------------------------------------------


def test_every_case_is_reported_and_broken_ones_do_not_stop_the_others(first_run):
    status, summary, err, _ = first_run
    assert status == cli.EXIT_CASES_FAILED
    assert err.splitlines() == [err.strip()] and err.startswith("error: 3 of 6 cases failed")
    assert "Traceback" not in err
    assert (summary["done"], summary["skipped"], summary["failed"]) == (3, 0, 3)
    assert summary["workers"] == 2 and summary["scheduler"].startswith("tcp://127.0.0.1:")
    cases = by_line(summary)
    assert sorted(cases) == sorted(EXPECTED)
    for line, (expected_status, named) in EXPECTED.items():
        case = cases[line]
        assert case["status"] == expected_status, case
        assert case["seconds"] is not None and case["seconds"] >= 0
        if named is None:
            assert case["error"] is None and case["outputs"]
        else:
            assert named in case["error"] and "\n" not in case["error"] and not case["outputs"]
    assert "neither" not in cases[7]["error"] and "nearest, linear, cubic" in cases[7]["error"]


def test_a_label_mask_comes_back_exactly_on_the_dicom_grid(first_run):
    _, summary, _, output = first_run
    case = by_line(summary)[2]
    assert case["outputs"] == [str(output / "masks" / "mask.nii.gz")]
    assert len(case["extras"]) == SLICES + 1  # the PNGs and index.csv
    assert all(Path(p).parent == output / "png" / "mask" for p in case["extras"])
    written = nib.load(output / "masks" / "mask.nii.gz")
    np.testing.assert_allclose(written.affine, REFERENCE_IJK_TO_RAS, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(written.dataobj), truth_labels().transpose(2, 1, 0))


def test_outputs_equal_what_resample_writes_for_the_same_case(first_run, resample_outputs):
    _, _, _, output = first_run
    for name in ("masks/mask.nii.gz",):
        np.testing.assert_array_equal(np.asarray(nib.load(output / name).dataobj),
                                      np.asarray(nib.load(resample_outputs / name).dataobj))
    for name in ("moved/mr.nrrd",):
        batch_image, resample_image = (SimpleITK.ReadImage(str(root / name)) for root in (output, resample_outputs))
        np.testing.assert_array_equal(SimpleITK.GetArrayFromImage(batch_image),
                                      SimpleITK.GetArrayFromImage(resample_image))
        np.testing.assert_allclose(batch_image.GetOrigin(), resample_image.GetOrigin(), atol=1e-6)
    pngs = sorted((output / "png" / "mask").iterdir())
    assert [p.name for p in pngs] == sorted(p.name for p in (resample_outputs / "png" / "mask").iterdir())
    assert all(p.read_bytes() == (resample_outputs / "png" / "mask" / p.name).read_bytes() for p in pngs)
    batch_slices, resample_slices = ([pydicom.dcmread(p) for p in sorted((root / "dicom" / "ct").iterdir())]
                                     for root in (output, resample_outputs))
    assert len(batch_slices) == len(resample_slices) == SLICES
    for ours, theirs in zip(batch_slices, resample_slices, strict=True):
        np.testing.assert_array_equal(ours.pixel_array, theirs.pixel_array)
        np.testing.assert_allclose([float(v) for v in ours.ImagePositionPatient],
                                   [float(v) for v in theirs.ImagePositionPatient], atol=1e-4)


def test_each_finished_case_leaves_a_completion_record_and_no_temporary_file(first_run):
    _, summary, _, output = first_run
    records = {json.loads(p.read_text())["row"]: json.loads(p.read_text())
               for p in (output / batch.RECORD_FOLDER).glob("*.json")}
    assert sorted(records) == sorted(EXPECTED)
    for line, record in records.items():
        assert record["status"] == EXPECTED[line][0]
        assert record["outputs"] == by_line(summary)[line]["outputs"]
    assert not [p for p in output.rglob("*") if ".partial" in p.name or p.name.endswith(".old")]


def test_workers_run_one_case_at_a_time_and_report_their_peak_memory(first_run):
    _, summary, _, _ = first_run
    workers = {case["worker"] for case in summary["cases"] if case["status"] == "done"}
    assert workers and all(worker.startswith("tcp://127.0.0.1:") for worker in workers)
    peaks = [case["peak_memory_mib"] for case in summary["cases"]]
    assert all(peak is None or 50 < peak < 4096 for peak in peaks)
    assert summary["peak_memory_mib"] == max(peak for peak in peaks if peak is not None)


# -- resuming ------------------------------------------------------------------------------------


def test_a_rerun_skips_finished_cases_and_retries_failed_ones(study, first_run, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(first_run[3], output)
    done_files = {p: p.stat().st_mtime_ns for p in (output / "masks").iterdir()}
    shutil.copy(study / "mask.nii.gz", study / "absent.nii.gz")  # line 5's input appears
    try:
        status, summary, _ = run_batch(study, output, "--workers", "2")
    finally:
        (study / "absent.nii.gz").unlink()
    cases = by_line(summary)
    assert [cases[line]["status"] for line in sorted(cases)] == ["skipped"] * 3 + ["done", "failed", "failed"]
    assert status == cli.EXIT_CASES_FAILED
    assert {p: p.stat().st_mtime_ns for p in (output / "masks").iterdir()} == done_files
    assert cases[2]["outputs"] == by_line(first_run[1])[2]["outputs"]

    status, summary, _ = run_batch(study, output, "--workers", "2", "--force")  # --force redoes them all
    assert [case["status"] for case in summary["cases"]] == ["done"] * 3 + ["failed"] * 3


def test_an_interrupted_case_is_redone_and_an_output_not_made_by_the_batch_is_kept(study, first_run, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(first_run[3], output)
    # line 4 was killed while writing: its record claims the outputs, a temporary file is left behind
    record = next(p for p in (output / batch.RECORD_FOLDER).glob("moved_mr*.json"))
    claim = {"status": "running", "claimed": True, "case": json.loads(record.read_text())["case"]}
    record.write_text(json.dumps(claim))
    leftover = output / "moved" / ".mr.nrrd.alignseries-99999999-0123456789ab.partial.nrrd"  # its writer is gone
    leftover.write_bytes(b"half a volume")
    # line 3's output was never finished by the batch (no record), and someone else's file sits there
    (output / batch.RECORD_FOLDER / next(p.name for p in (output / batch.RECORD_FOLDER).glob("dicom_ct*"))).unlink()
    shutil.rmtree(output / "dicom" / "ct")
    (output / "dicom" / "ct").mkdir()
    (output / "dicom" / "ct" / "theirs.dcm").write_bytes(b"keep")

    _, summary, _ = run_batch(study, output, "--workers", "2")

    cases = by_line(summary)
    assert cases[2]["status"] == "skipped" and cases[4]["status"] == "done"
    assert not leftover.exists()
    assert cases[3]["status"] == "failed" and "not written by this batch" in cases[3]["error"]
    assert (output / "dicom" / "ct" / "theirs.dcm").read_bytes() == b"keep"


def test_ctrl_c_stops_the_workers_leaves_no_partial_output_and_a_rerun_redoes_only_the_unfinished(tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole process group) in the middle of a run."""
    for n in range(8):
        volume = SimpleITK.GetImageFromArray(np.random.default_rng(n).random((60, 96, 96)).astype(np.float32))
        SimpleITK.WriteImage(volume, str(tmp_path / f"v{n}.nrrd"))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("input,reference,output,interpolation\n"
                        + "".join(f"v{n}.nrrd,v{(n + 1) % 8}.nrrd,out{n}.nii.gz,cubic\n" for n in range(8)))
    output = tmp_path / "out"
    command = [PYTHON, "-m", "AlignSeriesLib", "batch", str(manifest), "--output-dir", str(output), "--workers", "1",
               "--json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               env={**os.environ, "PYTHONPATH": str(MODULE_DIR)})
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not list(output.glob("*.nii.gz")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be interrupted"
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=STOP_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)
    assert process.returncode == 130 and err.decode().strip().endswith("error: interrupted"), err.decode()
    assert not [p for p in output.rglob("*") if ".partial" in p.name]
    finished = len(list(output.glob("*.nii.gz")))
    assert 1 <= finished < 8

    status, summary, _ = run_batch(manifest.parent, output, "--workers", "2")

    assert status == 0
    statuses = [case["status"] for case in summary["cases"]]
    assert statuses.count("done") + statuses.count("skipped") == 8
    assert statuses.count("skipped") >= finished - 1  # at most the case caught between its output and its record


# -- faults and hostile manifests (inputs hashed before and after) ----------------------------------


def small_study(root: Path, *, manifest: str, big_reference: bool = False) -> Path:
    """A private study: a raw NIfTI label mask on a small grid (and a big reference), and ``manifest``."""
    root.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(truth_labels().transpose(2, 1, 0), REFERENCE_IJK_TO_RAS), root / "mask.nii")
    if big_reference:
        nib.save(nib.Nifti1Image(np.zeros((64, 64, 40), np.int16), np.diag([0.5, 0.5, 0.5, 1.0])), root / "big.nii")
    (root / "manifest.csv").write_text(manifest)
    return root


def hashes(folder: Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_a_changed_input_redoes_its_case_though_its_size_and_time_are_the_same(tmp_path):
    study = small_study(tmp_path / "study", manifest="input,reference,output,labelmap\nmask.nii,mask.nii,m.nrrd,yes\n")
    mask = study / "mask.nii"
    assert [case["status"] for case in run_batch(study, tmp_path / "out", "--workers", "1")[1]["cases"]] == ["done"]
    assert [case["status"] for case in run_batch(study, tmp_path / "out", "--workers", "1")[1]["cases"]] == [
        "skipped"]
    times = mask.stat()
    changed = bytearray(mask.read_bytes())
    changed[-1] ^= 0x01  # one label of the last voxel: same size; the time is put back below
    mask.write_bytes(bytes(changed))
    os.utime(mask, ns=(times.st_atime_ns, times.st_mtime_ns))

    _, summary, _ = run_batch(study, tmp_path / "out", "--workers", "1")

    assert [case["status"] for case in summary["cases"]] == ["done"]
    written = SimpleITK.ReadImage(str(tmp_path / "out" / "m.nrrd"))
    assert SimpleITK.GetArrayFromImage(written)[-1, -1, -1] == truth_labels()[-1, -1, -1] ^ 0x01


def test_a_symbolic_link_in_the_output_dir_cannot_lead_a_case_outside_it(tmp_path):
    study = small_study(tmp_path / "study", manifest="input,reference,output,labelmap\n"
                                                     "mask.nii,mask.nii,escape/m.nrrd,yes\nmask.nii,mask.nii,m.nrrd,yes\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "escape").symlink_to(tmp_path / "elsewhere")

    status, summary, _ = run_batch(study, tmp_path / "out", "--workers", "1")

    escaped, inside = summary["cases"]
    assert status == cli.EXIT_CASES_FAILED and inside["status"] == "done"
    assert escaped["status"] == "failed" and "leads outside --output-dir" in escaped["error"]
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_an_output_that_is_its_own_input_is_refused_even_with_force(tmp_path):
    study = small_study(tmp_path / "study",
                        manifest="input,reference,output,labelmap\nmask.nii,mask.nii,mask.nii,yes\n")
    before = hashes(study)

    status, summary, _ = run_batch(study, study, "--workers", "1", "--force")

    (case,) = summary["cases"]
    assert status == cli.EXIT_CASES_FAILED and case["status"] == "failed" and "is the input" in case["error"]
    assert hashes(study) == before


def test_run_case_never_raises(tmp_path):
    """Not even when its completion record cannot be written (the output folder is a file)."""
    study = small_study(tmp_path / "study", manifest="input,reference,output\n")
    (tmp_path / "a_file").write_text("not a folder")

    result = batch.run_case(batch.Case(2, str(study / "mask.nii"), str(study / "mask.nii"), "m.nrrd"),
                            tmp_path / "a_file")

    assert result["status"] == "failed" and "a_file" in result["error"]


def batch_process(study: Path, output: Path, *, file_size_limit: int | None = None, read_only: bool = False):
    """``alignseries batch`` in a subprocess: (exit status, stdout, stderr)."""
    command = [PYTHON, "-m", "AlignSeriesLib", "batch", str(study / "manifest.csv"), "--output-dir", str(output),
               "--workers", "1", "--json"]
    if read_only and os.geteuid() == 0:  # root ignores permissions unless it lacks CAP_DAC_OVERRIDE
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    process = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=MODULE_DIR,
                             preexec_fn=limit if file_size_limit else None)
    return process.returncode, process.stdout, process.stderr


def test_a_read_only_output_dir_is_one_error_line(tmp_path):
    study = small_study(tmp_path / "study", manifest="input,reference,output,labelmap\nmask.nii,mask.nii,m.nrrd,yes\n")
    before = hashes(study)
    output = tmp_path / "out"
    output.mkdir()
    output.chmod(0o555)
    try:
        status, out, err = batch_process(study, output, read_only=True)
    finally:
        output.chmod(0o755)
    assert status == 2 and err.splitlines() == [err.strip()], err
    assert err.startswith(f"error: --output-dir {output} cannot be written: Permission denied")
    assert json.loads(out) == {"error": err.strip().removeprefix("error: ")}
    assert hashes(study) == before and list(output.iterdir()) == []


def test_a_write_beyond_the_file_size_limit_fails_its_case_with_the_reason(tmp_path):
    """The worker process survives the short write (no KilledWorker): the case says what went wrong."""
    study = small_study(tmp_path / "study", big_reference=True,
                        manifest="input,reference,output,labelmap\nmask.nii,big.nii,big.nrrd,yes\n"
                                 "mask.nii,mask.nii,small.nrrd,yes\n")
    before = hashes(study)

    status, out, err = batch_process(study, tmp_path / "out", file_size_limit=65536)

    assert status == cli.EXIT_CASES_FAILED, err
    assert "Traceback" not in err and "KilledWorker" not in out + err
    big, small = json.loads(out)["cases"]
    assert big["status"] == "failed" and "ulimit -f" in big["error"] and small["status"] == "done"
    assert hashes(study) == before and not (tmp_path / "out" / "big.nrrd").exists()


def test_a_case_whose_worker_dies_says_so_instead_of_killedworker():
    """A worker process that dies (here: exits at once) mid-case; the scheduler gives up on the first death."""
    import dask
    from distributed import Client, LocalCluster

    case = batch.Case(2, "in.nrrd", "ref", "out.nrrd")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
            silence_logs=50) as cluster, Client(cluster) as client:
        result = batch._gathered(client.submit(os._exit, 9, pure=False), case)
    assert result["status"] == "failed" and result["row"] == 2
    assert "the worker process running this case died" in result["error"] and "KilledWorker" not in result["error"]


def test_a_case_that_kills_its_local_worker_runs_once(tmp_path):
    """The local cluster does not retry a case whose worker died (Dask's default tries it 4 times)."""
    attempts = tmp_path / "attempts"

    def dies(path: str) -> None:
        with open(path, "a") as log:
            log.write("attempt\n")
        os._exit(9)

    case = batch.Case(2, "in.nrrd", "ref", "out.nrrd")
    with batch._dask_client(None, 1) as client:
        result = batch._gathered(client.submit(dies, str(attempts), pure=False), case)
    assert result["status"] == "failed" and "the worker process running this case died" in result["error"]
    assert attempts.read_text().splitlines() == ["attempt"]


# -- an existing cluster -------------------------------------------------------------------------


@contextlib.contextmanager
def started(command: list[str], log: Path):
    """A subprocess of this test, always stopped (terminate, then kill) with bounded waits."""
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


def test_a_run_on_a_scheduler_and_a_worker_started_as_commands(study, tmp_path):
    dask = [PYTHON, "-m", "dask"]
    scheduler_file = tmp_path / "scheduler.json"
    with started(dask + ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                         str(scheduler_file)], tmp_path / "scheduler.log") as scheduler:
        deadline = time.monotonic() + START_TIMEOUT
        while not scheduler_file.exists() and scheduler.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scheduler_file.exists(), (tmp_path / "scheduler.log").read_text()
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        with started(dask + ["worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--nworkers", "1",
                             "--host", "127.0.0.1", "--no-dashboard", "--name", "test-worker"],
                     tmp_path / "worker.log"):
            status, summary, err = run_batch(study, tmp_path / "out", "--scheduler", address)
    assert status == cli.EXIT_CASES_FAILED, err
    assert summary["scheduler"] == address and summary["workers"] == 1
    cases = by_line(summary)
    assert [cases[line]["status"] for line in sorted(cases)] == [status for status, _ in EXPECTED.values()]
    assert all(case["worker"].startswith("tcp://127.0.0.1:") for case in summary["cases"])
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "out" / "masks" / "mask.nii.gz").dataobj),
                                  truth_labels().transpose(2, 1, 0))


def test_a_scheduler_nobody_listens_on_is_one_error_line(study, tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "CONNECT_SECONDS", 2.0)
    status, out, err = run_cli("batch", study / "manifest.csv", "--output-dir", tmp_path, "--scheduler",
                               "tcp://127.0.0.1:9")  # the discard port: nothing listens there
    assert status == 2 and out == "" and err.startswith("error: cannot reach the Dask scheduler tcp://127.0.0.1:9")


# -- the manifest and the command line -----------------------------------------------------------


@pytest.mark.parametrize(("text", "named"), [
    ("", "is empty"),
    ("input,reference\n", "lacks the column(s) output"),
    ("input,reference,output,interpolaton\n", "unknown column(s) interpolaton"),
    ("input,reference,output\n", "no case"),
    ("input,reference,output\na,b,/abs/out.nrrd\n", "inside --output-dir"),
    ("input,reference,output\na,b,../out.nrrd\n", "inside --output-dir"),
    ("input,reference,output\na,b,x.nrrd\nc,d,x.nrrd\n", "also written by line 2"),
    ("input,reference,output,png\na,b,x.nrrd,p\nc,d,p/,\n", "also written by line 2"),
])
def test_a_broken_manifest_is_one_error_line_before_any_case_runs(tmp_path, text, named):
    (tmp_path / "manifest.csv").write_text(text)
    status, out, err = run_cli("batch", tmp_path / "manifest.csv", "--output-dir", tmp_path / "out")
    assert status == 2 and out == "" and len(err.splitlines()) == 1 and named in err, err
    assert not (tmp_path / "out").exists()


def test_manifest_paths_are_read_relative_to_the_manifest_folder(tmp_path):
    (tmp_path / "m.csv").write_text("input,reference,output,transform\nin/a.nrrd,/abs/ref,o.nrrd,t.json\n")
    (case,) = batch.read_manifest(tmp_path / "m.csv")
    assert (case.input, case.reference, case.transform) == (str(tmp_path / "in/a.nrrd"), "/abs/ref",
                                                             str(tmp_path / "t.json"))
    assert case.row == 2 and case.output == "o.nrrd"


def test_each_output_gets_its_own_record_name():
    cases = [batch.Case(2, "i", "r", "a/b.nrrd"), batch.Case(3, "i", "r", "a_b.nrrd"), batch.Case(4, "i", "r", "a/")]
    assert len({case.key for case in cases}) == 3
    assert batch.Case(9, "x", "y", "a/b.nrrd").key == cases[0].key  # the output names the record, not the row


@pytest.mark.parametrize("options", [["--workers", "0"], ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]])
def test_worker_options_are_checked(tmp_path, options):
    status, _, err = run_cli("batch", tmp_path / "m.csv", "--output-dir", tmp_path, *options)
    assert status == 2 and err.startswith("error: ")


def test_only_the_batch_runner_imports_dask():
    """distributed is a dependency of the command line's batch command, not of the core or the Slicer module."""
    importers = []
    for path in [MODULE_DIR / "AlignSeries.py", *sorted((MODULE_DIR / "AlignSeriesLib").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] in ("dask", "distributed") for name in names):
                importers.append(path.name)
    assert set(importers) == {"batch.py"}
    code = "import sys, AlignSeriesLib.cli, AlignSeriesLib.operations; sys.exit('distributed' in sys.modules)"
    assert subprocess.run([PYTHON, "-c", code], env={**os.environ, "PYTHONPATH": str(MODULE_DIR)},
                          timeout=120, check=False).returncode == 0
