"""Start-up of each ``alignseries`` command: cold (a new process) against warm (imports done), and its imports.

For each command, on small inputs (a 20-slice 64 x 64 DICOM series, two 20 x 64^2 NRRD files, an ITK transform):

* **cold**: ``alignseries ARGS`` as a new process, median of :data:`ROUNDS` runs;
* **warm**: the same ``cli.main(ARGS)`` in one process that has run it once already (imports done, and the
  operating system's file cache as warm as for the cold runs), median of :data:`ROUNDS`;
* **start-up overhead** = cold - warm, against the budgets of issue 24 (:data:`BUDGETS`); also in processor
  seconds (user + system of the cold process, against the warm run's), which a loaded machine does not inflate;
* the heaviest imports of a cold run (``python -X importtime``: top-level packages by cumulative time), and
  whether a module the command does not use is among them (:data:`NOT_USED`).

Run: ``.venv/bin/python Testing/benchmarks/bench_startup.py [--rounds N]``
"""

from __future__ import annotations

import argparse
import json
import resource
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
#: Our own packages (their imports are what the table shows).
OURS = ("AlignSeriesLib", "alignseries", "site", "__editable___alignseries_0_1_0_finder")
BIN = Path(sys.executable).parent
#: Command -> start-up overhead budget in seconds (issue 24); commands without one are reported only.
BUDGETS = {"--help": 0.3, "info dicom": 0.3, "resample nrrd": 1.0}
#: Command -> top-level packages it has no use for (their import is a defect).
NOT_USED = {"--help": ("numpy", "vtk", "slicer", "pydicom"), "info dicom": ("vtk", "slicer", "dask", "SimpleITK"),
            "info nrrd": ("vtk", "dask", "SimpleITK"),
            "resample nrrd": ("vtk", "dask", "SimpleITK", "nibabel", "highdicom"),
            "resample dicom": ("vtk", "dask", "SimpleITK", "highdicom")}


def write_inputs(folder: Path) -> dict[str, list[str]]:
    """The small inputs; returns command name -> its arguments."""
    import SimpleITK as sitk  # noqa: N813
    from dicom_fixtures import ORIENTATIONS, stack_positions, write_series

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 1000, (20, 64, 64)).astype(np.int16)
    positions = stack_positions((-25.0, -25.0, -10.0), ORIENTATIONS["axial"], np.arange(20) * 1.0)
    write_series(folder / "dicom", pixels, positions, ORIENTATIONS["axial"], (0.8, 0.8))
    for name in ("moving", "reference"):
        image = sitk.GetImageFromArray(pixels)
        image.SetSpacing((0.8, 0.8, 1.0))
        sitk.WriteImage(image, str(folder / f"{name}.nrrd"))
    sitk.WriteTransform(sitk.Euler3DTransform((0, 0, 0), 0.02, 0.0, 0.1, (1.0, 2.0, 0.0)), str(folder / "t.tfm"))
    dicom, moving, reference = str(folder / "dicom"), str(folder / "moving.nrrd"), str(folder / "reference.nrrd")
    return {
        "--help": ["--help"],
        "info dicom": ["info", dicom],
        "info nrrd": ["info", moving],
        "transform": ["transform", "--fixed", dicom, "--moving", moving, "--mode", "centers", "--output",
                      str(folder / "t.json"), "--force"],
        "resample nrrd": ["resample", "--input", moving, "--reference", reference, "--transform",
                          str(folder / "t.tfm"), "--output", str(folder / "out.nrrd"), "--force"],
        "resample dicom": ["resample", "--input", moving, "--reference", dicom, "--output",
                           str(folder / "out2.nrrd"), "--force"],
    }


def cold_seconds(arguments: list[str], rounds: int) -> tuple[float, float]:
    """Median (wall seconds, processor seconds) of ``alignseries ARGUMENTS`` as a new process."""
    times = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([str(BIN / "alignseries"), *arguments], stdout=subprocess.DEVNULL, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        times.append((time.perf_counter() - start, cpu))
    return statistics.median(t for t, _ in times), statistics.median(c for _, c in times)


def warm_seconds(arguments: list[str], rounds: int) -> tuple[float, float]:
    """Median (wall, processor) seconds of ``cli.main(arguments)`` in a process that ran it once before
    (see :func:`warm_worker`)."""
    completed = subprocess.run([sys.executable, __file__, "--warm", json.dumps(arguments), "--rounds", str(rounds)],
                               capture_output=True, text=True, check=True)
    wall, cpu = completed.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def warm_worker(arguments: list[str], rounds: int) -> None:
    import contextlib
    import io

    from AlignSeriesLib import cli

    def once() -> tuple[float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            cli.main(arguments)
        return time.perf_counter() - start, time.process_time() - cpu_start

    once()
    runs = [once() for _ in range(rounds)]
    print(statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))


def heaviest_imports(arguments: list[str], count: int = 6) -> list[tuple[str, float]]:
    """Other packages imported by a cold run, by cumulative import seconds (``python -X importtime``)."""
    completed = subprocess.run([sys.executable, "-X", "importtime", "-m", "AlignSeriesLib", *arguments],
                               capture_output=True, text=True, check=False)
    packages: dict[str, float] = {}
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        top = name.strip().split(".")[0]
        if top not in OURS:  # a package's first import (at any depth) counts its whole cost
            packages[top] = max(packages.get(top, 0.0), int(cumulative) / 1e6)
    return sorted(packages.items(), key=lambda item: -item[1])[:count]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--warm", help=argparse.SUPPRESS)  # internal: JSON arguments of one warm run
    args = parser.parse_args(argv)
    if args.warm:
        warm_worker(json.loads(args.warm), args.rounds)
        return 0
    with tempfile.TemporaryDirectory(prefix="alignseries-bench-startup-") as temporary:
        commands = write_inputs(Path(temporary))
        print(f"{'command':<15} {'cold s':>7} {'warm s':>7} {'start-up':>9} {'cpu s':>6} {'budget':>7}  "
              "heaviest imports (s)")
        missed = []
        for name, arguments in commands.items():
            (cold, cold_cpu), (warm, warm_cpu) = cold_seconds(arguments, args.rounds), warm_seconds(arguments,
                                                                                                    args.rounds)
            imports = heaviest_imports(arguments)
            budget = BUDGETS.get(name)
            unused = [package for package, _ in imports if package in NOT_USED.get(name, ())]
            if (budget is not None and cold - warm > budget) or unused:
                missed.append(name)
            print(f"{name:<15} {cold:7.2f} {warm:7.2f} {cold - warm:9.2f} {cold_cpu - warm_cpu:6.2f} "
                  f"{budget or '':>7}  "
                  + ", ".join(f"{package} {seconds:.2f}" for package, seconds in imports)
                  + (f"  UNUSED: {', '.join(unused)}" if unused else ""))
    print("start-up = cold - warm (wall); cpu s = the same in processor seconds; "
          + (f"over budget or importing what it does not use: {', '.join(missed)}" if missed
             else "every command within its budget"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
