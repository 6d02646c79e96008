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
afterwards; about 1 GB at full size). AlignSeries writes raw NRRD by default (``compress=False``).

Run: ``.venv/bin/python Testing/benchmarks/bench_end_to_end.py [--quick] [--rounds N] [--jobs resample,...]``
(``--quick``: 60 x 128^2 onto 40 x 128^2, 120 x 256^2 and 400 x 64^2).
"""

from __future__ import annotations

import argparse
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

from dicom_fixtures import ORIENTATIONS, stack_positions, write_series  # noqa: E402

ROUNDS = 3
#: Job -> sizes (slices, rows = columns); the resample job also has its reference's slice count.
FULL = {"resample": (300, 512, 200), "dicom big": (600, 512), "dicom long": (2000, 64)}
QUICK = {"resample": (60, 128, 40), "dicom big": (120, 256), "dicom long": (400, 64)}
#: The goal of issue 14: AlignSeries at least this many times as fast as the SimpleITK script.
TARGET_RATIO = 1.2

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
    positions = stack_positions((-100.0, -100.0, -500.0), ORIENTATIONS["axial"], np.arange(slices) * 1.0)
    write_series(folder, _ct_like(slices, size, 2), positions, ORIENTATIONS["axial"], (0.8, 0.8), shuffle_seed=3)
    return str(folder)


# -- one run ----------------------------------------------------------------------------------------------


def run(command: list[str], output: Path) -> tuple[float, float]:
    """Run a command to completion; (seconds, peak RSS MiB). The output is removed first and checked after."""
    if output.is_dir():
        shutil.rmtree(output)
        output.mkdir()
    elif output.exists():
        output.unlink()
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        # GNU time reports the command's own peak RSS (a child forked from this process would count ours too)
        start = time.perf_counter()
        process = subprocess.run([TIME, "-f", "%M", "-o", rss.name, *command], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True, check=False)
        seconds = time.perf_counter() - start
        peak_kib = float(rss.read().split()[-1])
    if process.returncode != 0 or not (output.is_file() or (output.is_dir() and any(output.iterdir()))):
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {process.stderr.strip()[-2000:]}")
    return seconds, peak_kib / 1024


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
    return {tool: {"seconds": statistics.median(s for s, _ in results),
                   "peak_rss_mib": max(m for _, m in results),
                   "output_mib": _size_mib(tools[tool][1])} for tool, results in runs.items()}


# -- driver -------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs (for development)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="runs per tool, alternating (median reported)")
    parser.add_argument("--jobs", default=",".join(FULL), help=f"comma-separated subset of {', '.join(FULL)}")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    jobs = [job.strip() for job in args.jobs.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory(prefix="alignseries-bench-e2e-") as temporary:
        root = Path(temporary)
        for job in jobs:
            folder = root / job.replace(" ", "_")
            (folder / "out").mkdir(parents=True)
            start = time.perf_counter()
            if job == "resample":
                inputs = write_resample_inputs(folder, *sizes[job])
                input_mib = _size_mib(Path(inputs[0])) + _size_mib(Path(inputs[1]))
            else:
                inputs = write_dicom_input(folder / "dicom", *sizes[job])
                input_mib = _size_mib(Path(inputs))
            print(f"wrote {job} inputs {sizes[job]} in {time.perf_counter() - start:.1f} s", flush=True)
            rows.append((job, input_mib, measure(job, inputs, folder / "out", args.rounds)))
    return report(rows, sizes)


def report(rows, sizes) -> int:
    print(f"\n{'job':<11} {'size':<16} {'tool':<12} {'median s':>9} {'peak MiB':>9} {'out MiB':>8} "
          f"{'in MiB':>7} {'AS ratio':>9}")
    missed = []
    for job, input_mib, results in rows:
        ours = results["AlignSeries"]["seconds"]
        for tool, result in results.items():
            ratio = "" if tool == "AlignSeries" else f"{result['seconds'] / ours:8.2f}x"
            print(f"{job:<11} {'x'.join(map(str, sizes[job])):<16} {tool:<12} {result['seconds']:9.2f} "
                  f"{result['peak_rss_mib']:9.0f} {result['output_mib']:8.0f} {input_mib:7.0f} {ratio:>9}")
        if results["SimpleITK"]["seconds"] / ours < TARGET_RATIO:
            missed.append(job)
    print(f"AS ratio = peer seconds / AlignSeries seconds (> 1: AlignSeries is faster); goal {TARGET_RATIO}x "
          "against SimpleITK" + (f"; not reached: {', '.join(missed)}" if missed else "; reached on every job"))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
