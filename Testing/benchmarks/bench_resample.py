"""Benchmark of resample_to_geometry against SimpleITK, scipy.ndimage and a memory-bandwidth floor.

A 512x512x300 int16 phantom (an analytic field of RAS millimetres) is resampled onto a
512x512x200 reference through a rigid transform (10 degrees about an oblique axis, 12 mm shift).
Each case runs in its own subprocess so that its peak resident memory (``VmHWM``, which sees VTK's
and ITK's allocations, unlike tracemalloc) is its own; the high-water mark is reset after the
phantom is built (``/proc/self/clear_refs``), so the figure is the resampling's.

Printed per case: median time, ratio to our method of the same order, mean bias of the integer
output against the analytic phantom (truncation shows as about -0.5), and memory above the
baseline (libraries + input) compared with the output's size.

Footprint case (``--footprint``): a mask (uint8 labels) of 120 slices, turned by the same rigid transform, onto
a 600-slice 512 x 512 reference grid, i.e. covering a fifth of it; label-safe nearest neighbour. AlignSeries
interpolates only the mask's footprint (:func:`AlignSeriesLib.resample.footprint_box`) and is timed against
its own full-grid resampling (``footprint=False``) and SimpleITK's full ``Resample``, alternating, in one process,
median of ``--repeats``; the footprint and full-grid outputs must be identical voxel for voxel. Memory: peak
resident size during the case minus the size before it.

Usage::

    .venv/bin/python Testing/benchmarks/bench_resample.py            # full size
    .venv/bin/python Testing/benchmarks/bench_resample.py --small    # 1/8 of the voxels
    .venv/bin/python Testing/benchmarks/bench_resample.py --footprint [--small]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "AlignSeries"))

from AlignSeriesLib.geometry import VolumeGeometry, apply_affine  # noqa: E402
from AlignSeriesLib.resample import (  # noqa: E402
    footprint_box,
    reference_ijk_to_input_ijk_matrix,
    resample_to_geometry,
)

CASES = {
    "alignseries nearest": ("ours", "nearest"), "alignseries linear": ("ours", "linear"),
    "alignseries cubic": ("ours", "cubic"),
    "simpleitk nearest": ("sitk", "nearest"), "simpleitk linear": ("sitk", "linear"),
    "simpleitk bspline": ("sitk", "cubic"),
    "scipy order 0": ("scipy", "nearest"), "scipy order 1": ("scipy", "linear"), "scipy order 3": ("scipy", "cubic"),
    "numpy copy (floor)": ("copy", None),
}
TARGETS = {"nearest": ("simpleitk nearest", 1.6), "linear": ("simpleitk linear", 1.1),
           "cubic": ("simpleitk bspline", 5.0)}
#: Footprint case: AlignSeries at least this many times as fast as SimpleITK's full-grid Resample.
FOOTPRINT_TARGET = 3.0
MAX_SECONDS_PER_CASE = 25.0  # stop repeating a case once it has taken this long in total
BIAS_SLICE_STEP = 10  # bias is measured on every n-th output slice
BIAS_MARGIN = 2.0  # voxels kept away from the input's faces when measuring bias


def sizes(small: bool):
    """(input dimensions, input spacing mm, reference dimensions, reference spacing mm), (i, j, k)."""
    if small:
        return (256, 256, 150), (1.4, 1.4, 1.8), (256, 256, 100), (1.4, 1.4, 2.4)
    return (512, 512, 300), (0.7, 0.7, 0.9), (512, 512, 200), (0.7, 0.7, 1.2)


def field(points_ras: np.ndarray) -> np.ndarray:
    """The analytic phantom at RAS points (..., 3): about 100..1900."""
    x, y, z = np.moveaxis(points_ras, -1, 0)
    return 1000 + 400 * np.sin(x / 23.0) + 300 * np.cos(y / 31.0) + 200 * np.sin(z / 17.0)


def centred(dimensions, spacing) -> VolumeGeometry:
    """DICOM-like axial grid (i towards L, j towards P) centred on the RAS origin."""
    directions = np.diag([-1.0, -1.0, 1.0])
    origin = -directions @ ((np.asarray(dimensions) - 1) / 2 * np.asarray(spacing))
    return VolumeGeometry.from_spacing_origin_directions(dimensions, spacing, origin, directions)


def moving_to_fixed_ras() -> np.ndarray:
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    angle = np.radians(10.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    matrix = np.eye(4)
    matrix[:3, :3] = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    matrix[:3, 3] = (8.0, -8.0, 4.0)  # 12 mm
    return matrix


def phantom(geometry: VolumeGeometry) -> np.ndarray:
    """int16 [k, j, i] phantom built slice by slice (rounded), with no full-size float temporary."""
    array = np.empty(geometry.shape, dtype=np.int16)
    j, i = np.indices(geometry.shape[1:])
    for k in range(geometry.shape[0]):
        points = geometry.ijk_to_world(np.stack([i, j, np.full_like(i, k)], axis=-1).astype(float))
        array[k] = np.rint(field(points))
    return array


def run_case(name: str, small: bool, repeats: int) -> dict:
    """Time one case in this process; memory figures from /proc/self/status."""
    input_dims, input_spacing, reference_dims, reference_spacing = sizes(small)
    input_geometry, reference = centred(input_dims, input_spacing), centred(reference_dims, reference_spacing)
    array = phantom(input_geometry)
    method = _method(name, array, input_geometry, reference)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    baseline = _status_kib("VmRSS")
    times, output = [], None
    while len(times) < repeats and sum(times) < MAX_SECONDS_PER_CASE:
        output = None
        start = time.perf_counter()
        output = method()
        times.append(time.perf_counter() - start)
    peak = _status_kib("VmHWM")
    bias = None if CASES[name][0] == "copy" else _bias(_as_array(output), input_geometry, reference)
    return {"name": name, "times": times, "baseline_mib": baseline / 1024, "peak_mib": peak / 1024,
            "input_mib": array.nbytes / 2**20, "output_mib": np.prod(reference.shape) * 2 / 2**20, "bias": bias}


def _method(name: str, array, input_geometry: VolumeGeometry, reference: VolumeGeometry):
    library, order = CASES[name]
    transform = moving_to_fixed_ras()
    if library == "ours":
        return lambda: resample_to_geometry(array, input_geometry, reference, transform, interpolation=order).array
    if library == "sitk":
        return _sitk_method(array, input_geometry, reference, transform, order)
    if library == "scipy":
        return _scipy_method(array, input_geometry, reference, transform, order)
    return lambda: array[: reference.shape[0], : reference.shape[1], : reference.shape[2]].copy()


def _sitk_method(array, input_geometry, reference, transform, order, pixel_type=np.int16):
    import SimpleITK as sitk  # noqa: N813

    image = sitk.GetImageFromArray(array, isVector=False)
    image.SetSpacing(input_geometry.spacing.tolist())
    image.SetOrigin(input_geometry.origin_lps.tolist())
    image.SetDirection((input_geometry.ijk_to_lps[:3, :3] / input_geometry.spacing).ravel().tolist())
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    fixed_to_moving_lps = flip @ np.linalg.inv(transform) @ flip
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(fixed_to_moving_lps[:3, :3].ravel().tolist())
    affine.SetTranslation(fixed_to_moving_lps[:3, 3].tolist())
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize(list(reference.dimensions))
    resampler.SetOutputSpacing(reference.spacing.tolist())
    resampler.SetOutputOrigin(reference.origin_lps.tolist())
    resampler.SetOutputDirection((reference.ijk_to_lps[:3, :3] / reference.spacing).ravel().tolist())
    resampler.SetTransform(affine)
    resampler.SetDefaultPixelValue(float(array.min()))
    resampler.SetOutputPixelType(sitk.sitkUInt8 if pixel_type == np.uint8 else sitk.sitkInt16)
    resampler.SetInterpolator({"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear,
                               "cubic": sitk.sitkBSpline}[order])
    return lambda: resampler.Execute(image)  # converted to an array after timing (see _as_array)


def _as_array(output) -> np.ndarray:
    """A [k, j, i] array of a method's output (SimpleITK returns an image)."""
    if isinstance(output, np.ndarray):
        return output
    import SimpleITK as sitk  # noqa: N813

    return sitk.GetArrayFromImage(output)


def _scipy_method(array, input_geometry, reference, transform, order):
    from scipy import ndimage

    matrix = reference_ijk_to_input_ijk_matrix(reference, input_geometry, transform)
    flip = np.eye(4)[[2, 1, 0, 3]]  # (i, j, k) <-> (k, j, i)
    matrix_kji = flip @ matrix @ flip
    spline_order = {"nearest": 0, "linear": 1, "cubic": 3}[order]
    return lambda: ndimage.affine_transform(array, matrix_kji[:3, :3], matrix_kji[:3, 3], reference.shape,
                                            output=np.int16, order=spline_order, cval=float(array.min()))


def _bias(output: np.ndarray, input_geometry: VolumeGeometry, reference: VolumeGeometry) -> float:
    """Mean (output - analytic field) over every BIAS_SLICE_STEP-th slice, inside the input."""
    matrix = reference_ijk_to_input_ijk_matrix(reference, input_geometry, moving_to_fixed_ras())
    fixed_to_moving = np.linalg.inv(moving_to_fixed_ras())
    j, i = np.indices(reference.shape[1:])
    differences = []
    for k in range(0, reference.shape[0], BIAS_SLICE_STEP):
        indices = np.stack([i, j, np.full_like(i, k)], axis=-1).astype(float)
        sampled = apply_affine(matrix, indices)
        inside = np.all((sampled >= BIAS_MARGIN) & (sampled <= np.array(input_geometry.dimensions) - 1 - BIAS_MARGIN),
                        axis=-1)
        truth = field(apply_affine(fixed_to_moving, reference.ijk_to_world(indices[inside])))
        differences.append(np.asarray(output[k])[inside] - truth)
    return float(np.mean(np.concatenate(differences)))


def footprint_benchmark(small: bool, repeats: int) -> None:
    """Time the footprint case (see the module notes) and check its voxels against the full grid's."""
    size, slices = (256, 300) if small else (512, 600)
    spacing = (0.7, 0.7, 1.0) if not small else (1.4, 1.4, 2.0)
    reference = centred((size, size, slices), spacing)
    mask_geometry = centred((size, size, slices // 5), spacing).transformed(_shift(0.0, 0.0, slices * spacing[2] / 6))
    mask = (phantom(mask_geometry) > 1200).astype(np.uint8)
    transform = moving_to_fixed_ras()
    methods = {
        "alignseries footprint": lambda: resample_to_geometry(mask, mask_geometry, reference, transform,
                                                              interpolation="nearest", labelmap=True).array,
        "simpleitk full grid": _sitk_method(mask, mask_geometry, reference, transform, "nearest", np.uint8),
        "alignseries full grid": lambda: resample_to_geometry(mask, mask_geometry, reference, transform,
                                                              interpolation="nearest", labelmap=True,
                                                              footprint=False).array,
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    extra: dict[str, float] = dict.fromkeys(methods, 0.0)
    outputs = {}
    for _ in range(repeats):
        for name, method in methods.items():
            outputs.pop(name, None)
            Path("/proc/self/clear_refs").write_text("5")
            before = _status_kib("VmRSS")
            start = time.perf_counter()
            outputs[name] = method()
            times[name].append(time.perf_counter() - start)
            extra[name] = max(extra[name], (_status_kib("VmHWM") - before) / 1024)
    matrix = reference_ijk_to_input_ijk_matrix(reference, mask_geometry, transform)
    first, stop = footprint_box(matrix, mask_geometry.dimensions, reference.dimensions, "nearest")
    box = np.prod(np.subtract(stop, first)) / np.prod(reference.dimensions)
    same = np.array_equal(outputs["alignseries footprint"], outputs["alignseries full grid"])
    print(f"mask {mask_geometry.dimensions} ({mask_geometry.shape[0] / slices:.0%} of the slices) onto "
          f"{reference.dimensions}, rigid 10 deg; footprint box {box:.0%} of the grid; median of {repeats}, "
          "alternating")
    ours = float(np.median(times["alignseries footprint"]))
    for name in methods:
        median = float(np.median(times[name]))
        print(f"  {name:24s} {median:7.3f} s  ratio {median / ours:5.2f}x  extra memory {extra[name]:6.0f} MiB")
    ratio = float(np.median(times["simpleitk full grid"])) / ours
    output_mib = outputs["alignseries full grid"].nbytes / 2**20
    print(f"footprint voxels identical to the full grid's: {same}; {ratio:.2f}x SimpleITK (target {FOOTPRINT_TARGET}x:"
          f" {'met' if ratio >= FOOTPRINT_TARGET and same else 'NOT met'}); output {output_mib:.0f} MiB, input "
          f"{mask.nbytes / 2**20:.0f} MiB")


def _shift(*mm) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = mm
    return matrix


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="1/8 of the voxels (256x256x150 onto 256x256x100)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--cases", nargs="*", default=list(CASES), help="subset of cases to run")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case and print JSON
    parser.add_argument("--footprint", action="store_true", help="the footprint case only (a mask on a wide grid)")
    args = parser.parse_args()
    if args.footprint:
        footprint_benchmark(args.small, args.repeats)
        return
    if args.case:
        print(json.dumps(run_case(args.case, args.small, args.repeats)))
        return
    input_dims, _, reference_dims, _ = sizes(args.small)
    print(f"int16 {'x'.join(map(str, input_dims))} -> {'x'.join(map(str, reference_dims))}, rigid 10 deg + 12 mm; "
          f"median of up to {args.repeats} runs, one subprocess per case")
    results = {}
    for name in args.cases:
        command = [sys.executable, __file__, "--case", name, "--repeats", str(args.repeats)]
        command += ["--small"] * args.small
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            print(f"{name:22s} failed: {completed.stderr.strip().splitlines()[-1:]}")
            continue
        results[name] = json.loads(completed.stdout.strip().splitlines()[-1])
        _print_case(results[name])
    _print_summary(results)


def _print_case(case: dict) -> None:
    median = float(np.median(case["times"]))
    extra = case["peak_mib"] - case["baseline_mib"]
    bias = "" if case["bias"] is None else f"bias {case['bias']:+.3f}"
    print(f"{case['name']:22s} {median:7.3f} s ({len(case['times'])} runs)  {bias:12s}"
          f"  peak {case['peak_mib']:7.0f} MiB = baseline {case['baseline_mib']:6.0f} + {extra:6.0f}"
          f" (output {case['output_mib']:.0f} MiB)")


def _print_summary(results: dict) -> None:
    print("\nspeed-up of alignseries over SimpleITK (target) and scipy; memory above input+output:")
    for order, (rival, target) in TARGETS.items():
        ours = results.get(f"alignseries {order}")
        if ours is None:
            continue
        ours_time = float(np.median(ours["times"]))
        ratios = []
        for name in (rival, f"scipy order {dict(nearest=0, linear=1, cubic=3)[order]}", "numpy copy (floor)"):
            if name in results:
                ratios.append(f"{name} {float(np.median(results[name]['times'])) / ours_time:5.2f}x")
        passed = rival in results and float(np.median(results[rival]["times"])) / ours_time >= target
        memory = ours["peak_mib"] - ours["baseline_mib"]
        budget = ours["output_mib"] + 0.1 * (ours["input_mib"] + ours["output_mib"])
        print(f"  {order:8s} {', '.join(ratios)}  (target {target}x vs {rival}: {'met' if passed else 'NOT met'});"
              f" extra memory {memory:.0f} MiB, budget output + 10% = {budget:.0f} MiB"
              f" ({'met' if memory <= budget else 'NOT met'})")


if __name__ == "__main__":
    main()
