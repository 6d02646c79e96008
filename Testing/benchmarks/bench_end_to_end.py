"""End-to-end benchmark: the user's whole job, against a three-line SimpleITK script and dcm2niix.

Each job runs as its own process, start-up included, exactly as a user would run it:

==========  ===============================================================================================
resample    ``alignseries resample --input in.nrrd --reference ref.nrrd --transform t.tfm --output out.nrrd``:
            a 300 x 512^2 int16 NRRD onto a 200 x 512^2 reference grid through an ITK rigid transform
dicom big   ``alignseries.load(folder).save("out.nrrd")``: a 600 x 512^2 int16 DICOM series to NRRD
dicom long  the same for a 2000 x 64^2 int16 series (header parsing dominates)
==========  ===============================================================================================

Peers, in the same run: the three-line SimpleITK script doing the same job (``ReadImage``/``Resample``/
``WriteImage``, or ``ImageSeriesReader`` + ``WriteImage``; SimpleITK writes uncompressed by default), and
for the DICOM jobs ``dcm2niix -z n`` (uncompressed NIfTI; the ``dcm2niix`` wheel). The tools take turns
(alternating rounds) and the median of :data:`ROUNDS` runs is reported, with peak resident memory (GNU
``/usr/bin/time``) and the size of the job's input and output.

Inputs are smooth int16 images with a little noise (as CT), written once to a temporary folder (removed
afterwards; about 1.5 GB at full size). AlignSeries writes raw NRRD by default (``compress=False``).

Warm mode (``--mode warm``, and ``both``, the default): the same jobs where the imports are already paid, as
in the Slicer panel, the console, a notebook or a batch worker. Each tool runs in one long-lived process
(:func:`worker`) that imports its libraries once, then runs the jobs it is sent and times them itself. The
AlignSeries worker keeps one MRML scene (with its application and module logics) and removes the nodes a
job added after it; the resample job is the command line's (:func:`AlignSeriesLib.operations.resample_and_export`:
header-only reference, transform file, linear, raw NRRD out). Caches are dropped only as far as a second run
of the same job would see them: each tool runs each job once untimed first, so imports done on first use
(pydicom's pixel handlers, ITK's IO factories) are paid there, and the operating system's file cache holds
the inputs for both tools alike (they were just written). The rounds alternate between the tools; the
median of ``--rounds`` is reported. Warm mode has two more jobs, ``load big`` and ``load long``: scan + load
of a DICOM series in memory (``operations.load_volumes`` against ``ImageSeriesReader``), 1000 x 512^2 and
2000 x 64^2. Memory: each worker resets its peak (``/proc/self/clear_refs``) before a job and reports the
peak resident size minus its import footprint (resident size after its imports), against the job's input
and output sizes plus 10 %.

Start-up overhead = cold median - warm median of the same job and tool.

Run: ``.venv/bin/python Testing/benchmarks/bench_end_to_end.py [--quick] [--rounds N] [--mode cold|warm|both]
[--jobs resample,...]`` (``--quick``: 60 x 128^2 onto 40 x 128^2, 120 x 256^2, 400 x 64^2, 200 x 256^2, 400 x 64^2).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTING = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTING), str(TESTING.parent / "AlignSeries")]

ROUNDS = 3
#: Job -> sizes (slices, rows = columns); the resample job also has its reference's slice count.
FULL = {"resample": (300, 512, 200), "dicom big": (600, 512), "dicom long": (2000, 64),
        "load big": (1000, 512), "load long": (2000, 64)}
QUICK = {"resample": (60, 128, 40), "dicom big": (120, 256), "dicom long": (400, 64),
         "load big": (200, 256), "load long": (400, 64)}
#: Jobs measured only warm (scan + load in memory has no command of its own).
WARM_ONLY = ("load big", "load long")
#: AlignSeries at least this many times as fast as SimpleITK, per job (issue 24's goals; warm for the loads).
TARGET_RATIO = {"resample": 1.2, "dicom big": 1.2, "dicom long": 1.2, "load big": 1.5, "load long": 1.0}
#: Memory allowed above the import footprint: input + output + this fraction of them.
MEMORY_MARGIN = 0.1

BIN = Path(sys.executable).parent
TIME = "/usr/bin/time"  # GNU time (Debian package "time"): peak RSS of the command alone

SITK_RESAMPLE = (
    "import SimpleITK as sitk, sys\n"
    "moving, reference = sitk.ReadImage(sys.argv[1]), sitk.ReadImage(sys.argv[2])\n"
    "sitk.WriteImage(sitk.Resample(moving, reference, sitk.ReadTransform(sys.argv[3]), sitk.sitkLinear), sys.argv[4])\n"
)
SITK_DICOM = (
    "import SimpleITK as sitk, sys\n"
    "files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(sys.argv[1])\n"
    "sitk.WriteImage(sitk.ReadImage(files), sys.argv[2])\n"
)
ALIGNSERIES_DICOM = "import alignseries, sys\nalignseries.load(sys.argv[1]).save(sys.argv[2], force=True)\n"


# -- inputs -----------------------------------------------------------------------------------------------


def _ct_like(slices: int, size: int, seed: int) -> np.ndarray:
    """Smooth int16 volume with noise (values about -1000..1500), ``[k, j, i]``."""
    rng = np.random.default_rng(seed)
    j, i = np.mgrid[0:size, 0:size]
    disc = ((i - size / 2) ** 2 + (j - size / 2) ** 2 < (0.4 * size) ** 2) * 1000 - 1000
    plane = (disc + 300 * np.sin(i / 17.0) * np.cos(j / 23.0)).astype(np.int16)
    volume = np.empty((slices, size, size), dtype=np.int16)
    for k in range(slices):
        volume[k] = plane + (k % 50) + rng.integers(0, 20, size=(size, size), dtype=np.int16)
    return volume


def write_resample_inputs(folder: Path, slices: int, size: int, reference_slices: int) -> list[str]:
    import SimpleITK as sitk  # noqa: N813 (the name every SimpleITK script uses)

    moving = sitk.GetImageFromArray(_ct_like(slices, size, 1))
    moving.SetSpacing((0.7, 0.7, 1.0))
    moving.SetOrigin((-180.0, -180.0, -150.0))
    reference = sitk.GetImageFromArray(np.zeros((reference_slices, size, size), dtype=np.int16))
    reference.SetSpacing((0.75, 0.75, 1.2))
    reference.SetOrigin((-190.0, -185.0, -120.0))
    transform = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.02, -0.03, 0.1, (3.0, -4.0, 5.0))
    paths = [str(folder / name) for name in ("moving.nrrd", "reference.nrrd", "transform.tfm")]
    sitk.WriteImage(moving, paths[0])
    sitk.WriteImage(reference, paths[1])
    sitk.WriteTransform(transform, paths[2])
    return paths


def write_dicom_input(folder: Path, slices: int, size: int) -> str:
    from dicom_fixtures import ORIENTATIONS, stack_positions, write_series

    positions = stack_positions((-100.0, -100.0, -500.0), ORIENTATIONS["axial"], np.arange(slices) * 1.0)
    write_series(folder, _ct_like(slices, size, 2), positions, ORIENTATIONS["axial"], (0.8, 0.8), shuffle_seed=3)
    return str(folder)


# -- one run ----------------------------------------------------------------------------------------------


def run(command: list[str], output: Path) -> tuple[float, float, float]:
    """Run a command to completion; (seconds, peak RSS MiB, processor seconds). The output is removed first and
    checked after."""
    if output.is_dir():
        shutil.rmtree(output)
        output.mkdir()
    elif output.exists():
        output.unlink()
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        # GNU time reports the command's own peak RSS (a child forked from this process would count ours too)
        start = time.perf_counter()
        process = subprocess.run([TIME, "-f", "%M %U %S", "-o", rss.name, *command], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True, check=False)
        seconds = time.perf_counter() - start
        peak_kib, user, system = (float(word) for word in rss.read().split()[-3:])
    if process.returncode != 0 or not (output.is_file() or (output.is_dir() and any(output.iterdir()))):
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {process.stderr.strip()[-2000:]}")
    return seconds, peak_kib / 1024, user + system


def _size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def commands(job: str, inputs, output_folder: Path) -> dict[str, tuple[list[str], Path]]:
    """Tool -> (command, output path) for one job."""
    python = sys.executable
    if job == "resample":
        moving, reference, transform = inputs
        return {
            "AlignSeries": ([str(BIN / "alignseries"), "resample", "--input", moving, "--reference", reference,
                             "--transform", transform, "--output", str(output_folder / "as.nrrd"), "--force"],
                            output_folder / "as.nrrd"),
            "SimpleITK": ([python, "-c", SITK_RESAMPLE, moving, reference, transform,
                           str(output_folder / "sitk.nrrd")], output_folder / "sitk.nrrd"),
        }
    tools = {
        "AlignSeries": ([python, "-c", ALIGNSERIES_DICOM, inputs, str(output_folder / "as.nrrd")],
                        output_folder / "as.nrrd"),
        "SimpleITK": ([python, "-c", SITK_DICOM, inputs, str(output_folder / "sitk.nrrd")],
                      output_folder / "sitk.nrrd"),
    }
    dcm2niix = shutil.which("dcm2niix", path=str(BIN)) or shutil.which("dcm2niix")
    if dcm2niix:
        (output_folder / "dcm2niix").mkdir(exist_ok=True)
        tools["dcm2niix"] = ([dcm2niix, "-z", "n", "-b", "n", "-f", "out", "-o", str(output_folder / "dcm2niix"),
                              inputs], output_folder / "dcm2niix")
    return tools


def measure(job: str, inputs, output_folder: Path, rounds: int) -> dict[str, dict]:
    """Alternate the tools ``rounds`` times; per tool the median seconds and peak RSS, and the output size."""
    tools = commands(job, inputs, output_folder)
    runs: dict[str, list] = {tool: [] for tool in tools}
    for _ in range(rounds):
        for tool, (command, output) in tools.items():
            runs[tool].append(run(command, output))
    return {tool: {"seconds": statistics.median(s for s, _, _ in results),
                   "peak_rss_mib": max(m for _, m, _ in results),
                   "cpu_seconds": statistics.median(c for _, _, c in results),
                   "output_mib": _size_mib(tools[tool][1])} for tool, results in runs.items()}


# -- warm: one long-lived process per tool ------------------------------------------------------------------


def worker(tool: str) -> int:
    """Serve jobs in this process: import once, then per request line (JSON) run a job and reply with its figures.

    A request is ``{"job": ..., "inputs": ..., "output": ...}``; the reply ``{"seconds": ..., "cpu_seconds": ...,
    "extra_mib": ...}``: wall time, processor time of all the process's threads (what a shared machine's load does
    not inflate), and the peak resident size during the job minus the resident size right after the imports.
    """
    start = time.perf_counter()
    run_job = _alignseries_jobs() if tool == "AlignSeries" else _simpleitk_jobs()
    imported = _status_mib("VmRSS")
    print(json.dumps({"import_seconds": time.perf_counter() - start, "import_mib": imported}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current size
        start, cpu_start = time.perf_counter(), time.process_time()
        run_job(request["job"], request["inputs"], request["output"])
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds,
                          "extra_mib": _status_mib("VmHWM") - imported}), flush=True)
    return 0


def _alignseries_jobs():
    """The AlignSeries worker's jobs, on one scene kept between jobs (nodes a job adds are removed after it)."""
    import alignseries
    from AlignSeriesLib import mrml, operations
    from AlignSeriesLib.exports import ExportTargets

    scene = mrml.new_scene()

    def run_job(job: str, inputs, output: str) -> None:
        before = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
        if job == "resample":
            moving, reference, transform = inputs
            operations.resample_and_export(scene, moving, reference, ExportTargets.for_output(output, force=True),
                                           transform=transform)
        elif job.startswith("dicom"):
            alignseries.load(inputs).save(output, force=True)
        else:
            operations.load_volumes(scene, inputs)
        added = [scene.GetNthNode(n) for n in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in before:
                scene.RemoveNode(node)

    return run_job


def _simpleitk_jobs():
    """The SimpleITK worker's jobs: the three-line scripts of the cold mode, as functions."""
    import SimpleITK as sitk  # noqa: N813 (the name every SimpleITK script uses)

    def run_job(job: str, inputs, output: str) -> None:
        if job == "resample":
            moving, reference, transform = inputs
            sitk.WriteImage(sitk.Resample(sitk.ReadImage(moving), sitk.ReadImage(reference),
                                          sitk.ReadTransform(transform), sitk.sitkLinear), output)
        else:
            image = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(inputs))
            if job.startswith("dicom"):
                sitk.WriteImage(image, output)

    return run_job


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


class Worker:
    """A running :func:`worker` process of one tool."""

    def __init__(self, tool: str):
        self.tool = tool
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", tool], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.started = self._reply()

    def run(self, job: str, inputs, output: Path) -> dict:
        if output.exists():
            output.unlink()
        self.process.stdin.write(json.dumps({"job": job, "inputs": inputs, "output": str(output)}) + "\n")
        self.process.stdin.flush()
        reply = self._reply()
        if job not in WARM_ONLY and not output.is_file():
            raise RuntimeError(f"{self.tool} wrote no {output} for {job}")
        return reply

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.tool} worker stopped (exit status {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def measure_warm(workers: list[Worker], job: str, inputs, output_folder: Path, rounds: int) -> dict[str, dict]:
    """One untimed run per tool, then ``rounds`` alternating timed runs; per tool the median and the peak memory."""
    runs: dict[str, list] = {w.tool: [] for w in workers}
    for round_ in range(rounds + 1):
        for w in workers if round_ % 2 == 0 else workers[::-1]:
            reply = w.run(job, inputs, output_folder / f"{w.tool}-warm.nrrd")
            if round_:
                runs[w.tool].append(reply)
    return {tool: {"seconds": statistics.median(r["seconds"] for r in replies),
                   "cpu_seconds": statistics.median(r["cpu_seconds"] for r in replies),
                   "extra_mib": max(r["extra_mib"] for r in replies),
                   "output_mib": 0.0 if job in WARM_ONLY else _size_mib(output_folder / f"{tool}-warm.nrrd")}
            for tool, replies in runs.items()}


# -- driver -------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs (for development)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="runs per tool, alternating (median reported)")
    parser.add_argument("--jobs", default=",".join(FULL), help=f"comma-separated subset of {', '.join(FULL)}")
    parser.add_argument("--mode", choices=("cold", "warm", "both"), default="both",
                        help="one process per run (cold), one process per tool (warm), or both")
    parser.add_argument("--worker", choices=("AlignSeries", "SimpleITK"), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    sizes = QUICK if args.quick else FULL
    jobs = [job.strip() for job in args.jobs.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    cold, warm = [], []
    workers = [Worker("AlignSeries"), Worker("SimpleITK")] if args.mode != "cold" else []
    for w in workers:
        print(f"{w.tool} worker: imports {w.started['import_seconds']:.2f} s, {w.started['import_mib']:.0f} MiB")
    try:
        with tempfile.TemporaryDirectory(prefix="alignseries-bench-e2e-") as temporary:
            for job in jobs:
                folder = Path(temporary) / job.replace(" ", "_")
                (folder / "out").mkdir(parents=True)
                start = time.perf_counter()
                inputs, input_mib = _write_inputs(job, folder, sizes[job])
                print(f"wrote {job} inputs {sizes[job]} in {time.perf_counter() - start:.1f} s", flush=True)
                if args.mode != "warm" and job not in WARM_ONLY:
                    cold.append((job, input_mib, measure(job, inputs, folder / "out", args.rounds)))
                if workers:
                    warm.append((job, input_mib, measure_warm(workers, job, inputs, folder / "out", args.rounds)))
                shutil.rmtree(folder)
    finally:
        for w in workers:
            w.close()
    if cold:
        report(cold, sizes)
    if warm:
        report_warm(warm, sizes)
    if cold and warm:
        report_overhead(cold, warm)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


def _write_inputs(job: str, folder: Path, size) -> tuple:
    """Write a job's inputs; (inputs as the tools take them, MiB of the voxels the job must read)."""
    if job == "resample":
        inputs = write_resample_inputs(folder, *size)
        return inputs, _size_mib(Path(inputs[0]))  # the reference is a grid: its voxels are not the job's
    inputs = write_dicom_input(folder / "dicom", *size)
    return inputs, _size_mib(Path(inputs))


def report(rows, sizes) -> None:
    print(f"\ncold (one process per run)\n{'job':<11} {'size':<16} {'tool':<12} {'median s':>9} {'peak MiB':>9} "
          f"{'out MiB':>8} {'in MiB':>7} {'AS ratio':>9}")
    missed = []
    for job, input_mib, results in rows:
        ours = results["AlignSeries"]["seconds"]
        for tool, result in results.items():
            ratio = "" if tool == "AlignSeries" else f"{result['seconds'] / ours:8.2f}x"
            print(f"{job:<11} {'x'.join(map(str, sizes[job])):<16} {tool:<12} {result['seconds']:9.2f} "
                  f"{result['peak_rss_mib']:9.0f} {result['output_mib']:8.0f} {input_mib:7.0f} {ratio:>9}")
        if results["SimpleITK"]["seconds"] / ours < TARGET_RATIO[job]:
            missed.append(job)
    print("AS ratio = peer seconds / AlignSeries seconds (> 1: AlignSeries is faster); cold goals as warm"
          + (f"; not reached cold: {', '.join(missed)}" if missed else "; reached on every job"))


def report_warm(rows, sizes) -> None:
    print(f"\nwarm (one process per tool, imports done, median of the alternating rounds)\n"
          f"{'job':<11} {'size':<16} {'tool':<12} {'median s':>9} {'cpu s':>6} {'peak-imp':>9} {'budget':>7} "
          f"{'AS ratio':>9} {'cpu ratio':>9}")
    missed = []
    for job, input_mib, results in rows:
        ours = results["AlignSeries"]
        for tool, result in results.items():
            budget = (input_mib + result["output_mib"]) * (1 + MEMORY_MARGIN)
            ratios = ("", "") if tool == "AlignSeries" else (
                f"{result['seconds'] / ours['seconds']:8.2f}x", f"{result['cpu_seconds'] / ours['cpu_seconds']:8.2f}x")
            print(f"{job:<11} {'x'.join(map(str, sizes[job])):<16} {tool:<12} {result['seconds']:9.2f} "
                  f"{result['cpu_seconds']:6.2f} {result['extra_mib']:9.0f} {budget:7.0f} {ratios[0]:>9} "
                  f"{ratios[1]:>9}")
        ratio = results["SimpleITK"]["seconds"] / ours["seconds"]
        budget = (input_mib + ours["output_mib"]) * (1 + MEMORY_MARGIN)
        if ratio < TARGET_RATIO[job] or ours["extra_mib"] > budget:
            missed.append(job)
    print("peak-imp = peak resident MiB during the job minus the worker's resident MiB after its imports; "
          f"budget = (input + output) x {1 + MEMORY_MARGIN}; cpu = processor seconds of all the worker's threads "
          "(the ratio a loaded machine does not skew); goals (on wall time): "
          + ", ".join(f"{job} {ratio}x" for job, ratio in TARGET_RATIO.items())
          + (f"; not reached (speed or memory): {', '.join(missed)}" if missed else "; reached on every job"))


def report_overhead(cold, warm) -> None:
    print(f"\nstart-up overhead = cold median - warm median (wall; and in processor seconds, which load does not "
          f"inflate)\n{'job':<11} {'tool':<12} {'cold s':>7} {'warm s':>7} {'overhead':>9} {'cold cpu':>9} "
          f"{'warm cpu':>9} {'cpu overhead':>12}")
    warm_by_job = {job: results for job, _, results in warm}
    for job, _, results in cold:
        for tool, result in results.items():
            if job in warm_by_job and tool in warm_by_job[job]:
                warm_result = warm_by_job[job][tool]
                print(f"{job:<11} {tool:<12} {result['seconds']:7.2f} {warm_result['seconds']:7.2f} "
                      f"{result['seconds'] - warm_result['seconds']:9.2f} {result['cpu_seconds']:9.2f} "
                      f"{warm_result['cpu_seconds']:9.2f} {result['cpu_seconds'] - warm_result['cpu_seconds']:12.2f}")


if __name__ == "__main__":
    sys.exit(main())
