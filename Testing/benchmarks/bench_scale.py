"""Benchmark at scale: a 2000-slice series and a 512 x 512 x 1000 int16 volume, end to end.

Two synthetic DICOM series are written to a temporary folder (removed afterwards; about 520 MB):

* ``long``: 2000 slices of 64 x 64 (0.8 mm pixels, 1 mm slices, shuffled file names);
* ``big``: 1000 slices of 512 x 512 int16 (500 MiB of voxels).

Each stage runs in its own process, so that its peak resident memory (``ru_maxrss``) is its own:

=================  ==========================================================================
scan long          header scan of the 2000 files (``dicom_series.scan_dicom``)
load long          scan + pixels into an MRML scene (``operations.load_volumes``)
SimpleITK long     the peer: ``ImageSeriesReader`` (GDCM file names + ``ReadImage``)
load big           scan + pixels of the 512 x 512 x 1000 series
SimpleITK big      the peer on the same files
transform          both volumes loaded; ``compute_geometry_transform(mode="centers")`` timed
export             big volume resampled (linear) onto a rotated 0.9 mm reference grid and
                   written as ``.nrrd`` (``operations.resample_volume`` + ``mrml_files.save_node``)
=================  ==========================================================================

Each stage must stay within :data:`BOUNDS` (seconds, MiB peak RSS; set for this project's 2-core,
24 GiB machines with about 2x headroom); the script exits 1 when one does not.

Run: ``.venv/bin/python Testing/benchmarks/bench_scale.py [--quick]`` (``--quick``: 400 slices of
64 x 64 and 256 x 256 x 200, bounds unchanged).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTING = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTING), str(TESTING.parent / "AlignSeries")]

from dicom_fixtures import ORIENTATIONS, stack_positions, write_series  # noqa: E402

#: Stage -> (seconds, peak RSS MiB) bounds for the full run.
BOUNDS = {
    "scan long": (20.0, 600),
    "load long": (30.0, 800),
    "SimpleITK long": (None, None),
    "load big": (30.0, 2600),
    "SimpleITK big": (None, None),
    "transform": (1.0, 3200),
    "export": (90.0, 4600),
}
FULL = {"long": (2000, 64), "big": (1000, 512)}
QUICK = {"long": (400, 64), "big": (200, 256)}


def write_benchmark_series(folder: Path, slices: int, size: int) -> None:
    """A smooth int16 series: ``slices`` axial slices of ``size`` x ``size``, shuffled file names."""
    positions = stack_positions((-100.0, -100.0, -500.0), ORIENTATIONS["axial"], np.arange(slices) * 1.0)
    ramp = (np.add.outer(np.arange(size), np.arange(size)) % 2048).astype(np.int16)
    write_series(folder, np.broadcast_to(ramp, (slices, size, size)), positions, ORIENTATIONS["axial"], (0.8, 0.8),
                 shuffle_seed=3)


# -- stages (each in its own process) ---------------------------------------------------------------


def stage_scan(folders: dict) -> float:
    from AlignSeriesLib.dicom import series as dicom_series

    start = time.perf_counter()
    dicom_series.scan_dicom(folders["long"])
    return time.perf_counter() - start


def _load(folder: Path) -> tuple[float, object, object]:
    from AlignSeriesLib import mrml, operations

    scene = mrml.new_scene()
    start = time.perf_counter()
    (node,) = operations.load_volumes(scene, folder)
    return time.perf_counter() - start, scene, node


def stage_load_long(folders: dict) -> float:
    return _load(folders["long"])[0]


def stage_load_big(folders: dict) -> float:
    return _load(folders["big"])[0]


def _simpleitk(folder: Path) -> float:
    import SimpleITK

    start = time.perf_counter()
    reader = SimpleITK.ImageSeriesReader()
    reader.SetFileNames(SimpleITK.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    reader.Execute()
    return time.perf_counter() - start


def stage_simpleitk_long(folders: dict) -> float:
    return _simpleitk(folders["long"])


def stage_simpleitk_big(folders: dict) -> float:
    return _simpleitk(folders["big"])


def stage_transform(folders: dict) -> float:
    from AlignSeriesLib import operations

    _, scene, fixed = _load(folders["big"])
    moving = operations.load_volumes(scene, folders["long"])[0]
    start = time.perf_counter()
    operations.compute_geometry_transform(scene, fixed, moving, "centers")
    return time.perf_counter() - start


def stage_export(folders: dict) -> float:
    from AlignSeriesLib import mrml, mrml_files, operations
    from AlignSeriesLib.geometry import VolumeGeometry

    _, scene, node = _load(folders["big"])
    source = mrml.volume_geometry(node)
    angle = np.radians(10.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = rotation * 0.9
    ijk_to_ras[:3, 3] = source.ijk_to_ras[:3, 3] + [5.0, -5.0, 2.0]
    reference = VolumeGeometry(tuple(int(n * 0.8 / 0.9) for n in source.dimensions[:2]) + (source.dimensions[2],),
                               ijk_to_ras)
    start = time.perf_counter()
    output = operations.resample_volume(scene, node, reference, interpolation="linear")
    mrml_files.save_node(output, folders["output"] / "export.nrrd")
    return time.perf_counter() - start


STAGES = {"scan long": stage_scan, "load long": stage_load_long, "SimpleITK long": stage_simpleitk_long,
          "load big": stage_load_big, "SimpleITK big": stage_simpleitk_big, "transform": stage_transform,
          "export": stage_export}


def run_stage(name: str, folders: dict) -> None:
    """Child process: run one stage and print ``{"seconds", "peak_rss_mib"}`` as JSON."""
    seconds = STAGES[name](folders)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_mib}))


# -- driver -----------------------------------------------------------------------------------------


def measure(name: str, root: Path) -> dict:
    """Run one stage in a child process and return its measurements."""
    process = subprocess.run([sys.executable, __file__, "--stage", name, "--root", str(root)],
                             capture_output=True, text=True, timeout=1800)
    if process.returncode != 0:
        raise RuntimeError(f"stage {name!r} failed: {process.stderr.strip()[-2000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="400 x 64^2 and 200 x 256^2 instead of full size")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        run_stage(args.stage, {"long": args.root / "long", "big": args.root / "big", "output": args.root / "output"})
        return 0
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="alignseries-bench-scale-") as temporary:
        root = Path(temporary)
        (root / "output").mkdir()
        for key, (slices, size) in sizes.items():
            start = time.perf_counter()
            write_benchmark_series(root / key, slices, size)
            print(f"wrote {key}: {slices} slices of {size} x {size} in {time.perf_counter() - start:.1f} s")
        results = {name: measure(name, root) for name in STAGES}
    return report(results, sizes)


def report(results: dict, sizes: dict) -> int:
    """Print the table (with the SimpleITK ratios) and return 1 when a bound is exceeded."""
    print(f"\n{'stage':<16} {'seconds':>8} {'peak RSS MiB':>13} {'bound s':>8} {'bound MiB':>10}")
    failures = []
    for name, result in results.items():
        seconds_bound, memory_bound = BOUNDS[name]
        print(f"{name:<16} {result['seconds']:8.2f} {result['peak_rss_mib']:13.0f} "
              f"{seconds_bound or '-':>8} {memory_bound or '-':>10}")
        if seconds_bound and (result["seconds"] > seconds_bound or result["peak_rss_mib"] > memory_bound):
            failures.append(name)
    for key in ("long", "big"):
        ratio = results[f"SimpleITK {key}"]["seconds"] / results[f"load {key}"]["seconds"]
        slices, size = sizes[key]
        print(f"{key} ({slices} x {size}^2): AlignSeries scan+load runs {ratio:.2f}x as fast as SimpleITK")
    if failures:
        print(f"over bounds: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
