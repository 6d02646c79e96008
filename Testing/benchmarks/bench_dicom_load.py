"""Benchmark: DICOM header scan and full load into MRML, against SimpleITK and naive pydicom.

A synthetic 400-slice 512 x 512 int16 CT series (12 bits stored, RescaleIntercept -1024, shuffled
file names) is written to a temporary folder. Each reader runs a few times in this one process;
the table gives the median seconds and the ratio against SimpleITK's series reader
(``GetGDCMSeriesFileNames`` + ``ReadImage``) and against a naive pydicom read (``dcmread`` of every
file, sort by position, ``np.stack``). The last line gives the header reading's CPU time per file on
the scan's plain path (:mod:`AlignSeriesLib.dicom.plain`) and through pydicom's ``dcmread``, the scan's
other path (one process, no pool), which is what a scan of many small files costs.

Run: ``.venv/bin/python Testing/benchmarks/bench_dicom_load.py [--repeats N] [--slices K] [--size N]``
(``--slices 2000 --size 64`` for a long series of small images, where header reading dominates).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTING = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTING), str(TESTING.parent / "AlignSeries")]

from dicom_fixtures import ORIENTATIONS, stack_positions, write_series  # noqa: E402

from AlignSeriesLib import mrml, operations  # noqa: E402
from AlignSeriesLib.dicom import headers as dicom_headers  # noqa: E402
from AlignSeriesLib.dicom import series as dicom_series  # noqa: E402

TARGET_SPEEDUP_VS_SIMPLEITK = 2.0


def write_benchmark_series(folder: Path, slices: int, size: int = 512) -> None:
    """The benchmark series: smooth int16 slices, 0.7 mm pixels, 1.25 mm slices, shuffled names."""
    positions = stack_positions((-179.0, -179.0, -250.0), ORIENTATIONS["axial"], np.arange(slices) * 1.25)
    ramp = (np.add.outer(np.arange(size), np.arange(size)) % 2048).astype(np.int16)
    pixels = np.stack([ramp + np.int16(k % 7) for k in range(slices)])
    write_series(folder, pixels, positions, ORIENTATIONS["axial"], (0.7, 0.7), shuffle_seed=11,
                 BitsStored=12, HighBit=11, RescaleIntercept=-1024)


def scan_only(folder: Path):
    return dicom_series.scan_dicom(folder)


def scan_and_load(folder: Path):
    scene = mrml.new_scene()
    nodes = operations.load_volumes(scene, folder)
    shape = nodes[0].GetImageData().GetDimensions()
    scene.Clear(1)
    return shape


def simpleitk_series(folder: Path):
    import SimpleITK

    names = SimpleITK.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    return SimpleITK.ReadImage(names).GetSize()


def naive_pydicom(folder: Path):
    import pydicom

    datasets = [pydicom.dcmread(path) for path in sorted(folder.iterdir())]
    normal = np.cross(*np.reshape(np.array(datasets[0].ImageOrientationPatient, float), (2, 3)))
    datasets.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    return np.stack([d.pixel_array * float(d.get("RescaleSlope", 1)) + float(d.get("RescaleIntercept", 0))
                     for d in datasets]).shape


def header_cpu_per_file(folder: Path, repeats: int) -> dict[str, float]:
    """CPU seconds per file of reading every file's headers, on the plain path and through pydicom (best run)."""
    files = sorted(folder.iterdir())
    plain = dicom_headers._plain_headers
    seconds = {}
    try:
        for name in ("plain", "pydicom"):
            if name == "pydicom":
                dicom_headers._plain_headers = lambda path: None
            runs = []
            for _ in range(repeats):
                start = time.process_time()
                for path in files:
                    dicom_headers.read_headers(path)
                runs.append(time.process_time() - start)
            seconds[name] = min(runs) / len(files)
    finally:
        dicom_headers._plain_headers = plain
    return seconds


def median_seconds(function, folder: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(folder)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slices", type=int, default=400)
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each slice")
    args = parser.parse_args()
    mrml.capture_vtk_messages()
    with tempfile.TemporaryDirectory(prefix="alignseries-bench-") as temporary:
        folder = Path(temporary)
        write_benchmark_series(folder, args.slices, args.size)
        candidates = {"AlignSeries header scan": scan_only, "AlignSeries scan + load into MRML": scan_and_load,
                      "SimpleITK GetGDCMSeriesFileNames + ReadImage": simpleitk_series,
                      "naive pydicom dcmread + np.stack": naive_pydicom}
        seconds = {name: median_seconds(function, folder, args.repeats) for name, function in candidates.items()}
        per_file = header_cpu_per_file(folder, args.repeats)
    reference = seconds["SimpleITK GetGDCMSeriesFileNames + ReadImage"]
    naive = seconds["naive pydicom dcmread + np.stack"]
    print(f"{args.slices} slices of {args.size} x {args.size} int16, median of {args.repeats} runs")
    print(f"{'reader':<48} {'seconds':>8} {'x faster than SimpleITK':>24} {'x faster than naive':>20}")
    for name, value in seconds.items():
        print(f"{name:<48} {value:8.3f} {reference / value:24.2f} {naive / value:20.2f}")
    print(f"header reading, CPU per file: plain path {per_file['plain'] * 1e6:.0f} us, pydicom dcmread "
          f"{per_file['pydicom'] * 1e6:.0f} us ({per_file['pydicom'] / per_file['plain']:.1f}x)")
    speedup = reference / seconds["AlignSeries scan + load into MRML"]
    verdict = "met" if speedup >= TARGET_SPEEDUP_VS_SIMPLEITK else "NOT met"
    print(f"target scan + load >= {TARGET_SPEEDUP_VS_SIMPLEITK:g}x faster than SimpleITK: {verdict} ({speedup:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
