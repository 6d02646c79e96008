"""Benchmark of the intensity refinement against two peers, on the same cases with known truth, in one run.

Cases (Testing/registration_cases.py): the analytic CT/MR phantom; two real MR series sharing a frame of
reference (truth: identity) with the moving one displaced; a real CT and a remapped, biased, noisy, partial,
oblique copy under rigid and affine displacements. Displacements up to 20 mm and 15 degrees (``--max-mm``,
``--max-degrees``); every method starts from the identity (the images as they lie). The exit status is 1 when an
AlignSeries result is more than 2 mm off with no warning in its report (a silent failure).

Methods:

* ``alignseries``: :func:`AlignSeriesLib.registration.register` (its preset).
* ``sitk-tutorial``: SimpleITK as its registration tutorial teaches ("Registration Introduction": Euler3D,
  Mattes MI with 50 bins, 1 % random sampling, gradient descent with learning rate 1, 100 iterations,
  convergence window 10, physical-shift scales, shrink 4/2/1, smoothing 2/1/0 mm), an affine stage after the
  rigid one for affine cases.
* ``elastix``: itk-elastix with elastix's default "rigid" (and then "affine") parameter maps, but
  ``RequiredRatioOfValidSamples`` 0.05 (the default 0.25 stops it at once on a partial field of view: "Too many
  samples map outside moving image buffer"); skipped, with the reason, when itk-elastix is not installed.

Printed per case class and method: median and 95th percentile of the corner error (mm; the largest distance
at the 8 corners of the fixed overlap between the estimate and the truth; ``inf`` when a method raised), median
time, both medians as ratios to the more accurate peer of the same run, and the cases above 2 mm with the warnings
the AlignSeries report gave for each.

Usage::

    .venv/bin/python Testing/benchmarks/bench_register.py --cases 2    # 2 displacements per case class
    .venv/bin/python Testing/benchmarks/bench_register.py --max-mm 40 --max-degrees 30   # beyond the promised range
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "AlignSeries"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import registration_cases  # noqa: E402
import SimpleITK as sitk  # noqa: E402, N813 - the name SimpleITK documents

from AlignSeriesLib import registration  # noqa: E402
from AlignSeriesLib.errors import AlignSeriesError  # noqa: E402

FAILURE_MM = 2.0


def alignseries_method(case) -> tuple[np.ndarray, list[str]]:
    report = registration.register(case.fixed, case.moving, model=case.model)
    return report.moving_to_fixed_ras, [warning.code for warning in report.warnings]


def tutorial_method(case) -> tuple[np.ndarray, list[str]]:
    """SimpleITK's registration tutorial settings, from the identity; affine after rigid for affine cases."""
    fixed = registration.to_sitk_image(sitk, case.fixed.array.astype(np.float32), case.fixed.geometry, "fixed")
    moving = registration.to_sitk_image(sitk, case.moving.array.astype(np.float32), case.moving.geometry, "moving")
    transform = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                  sitk.CenteredTransformInitializerFilter.GEOMETRY)
    transform.SetTranslation((0.0, 0.0, 0.0))  # the case's start is the identity: keep only the centre
    for stage in ["rigid"] + (["affine"] if case.model == "affine" else []):
        if stage == "affine":
            affine = sitk.AffineTransform(3)
            affine.SetCenter(transform.GetCenter())
            affine.SetMatrix(transform.GetMatrix())
            affine.SetTranslation(transform.GetTranslation())
            transform = affine
        method = sitk.ImageRegistrationMethod()
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(0.01)
        method.SetInterpolator(sitk.sitkLinear)
        method.SetOptimizerAsGradientDescent(learningRate=1.0, numberOfIterations=100, convergenceMinimumValue=1e-6,
                                             convergenceWindowSize=10)
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetShrinkFactorsPerLevel(shrinkFactors=[4, 2, 1])
        method.SetSmoothingSigmasPerLevel(smoothingSigmas=[2, 1, 0])
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        method.SetInitialTransform(transform, inPlace=False)
        transform = method.Execute(fixed, moving)
        transform = transform.GetNthTransform(0) if hasattr(transform, "GetNthTransform") else transform
        transform = sitk.Euler3DTransform(transform) if stage == "rigid" else sitk.AffineTransform(transform)
    return registration.moving_to_fixed_ras_of(_matrix(transform.GetMatrix(), transform.GetTranslation(),
                                                       transform.GetCenter())), []


def elastix_method(case) -> tuple[np.ndarray, list[str]]:
    """itk-elastix with elastix's default rigid (then affine) parameter maps."""
    import itk

    fixed = _itk_image(itk, case.fixed)
    moving = _itk_image(itk, case.moving)
    parameters = itk.ParameterObject.New()
    for name in ["rigid"] + (["affine"] if case.model == "affine" else []):
        parameter_map = parameters.GetDefaultParameterMap(name)
        parameter_map["RequiredRatioOfValidSamples"] = ["0.05"]  # else a partial field of view stops it at once
        parameters.AddParameterMap(parameter_map)
    _, result = itk.elastix_registration_method(fixed, moving, parameter_object=parameters, log_to_console=False)
    fixed_to_moving_lps = np.eye(4)
    for index in range(result.GetNumberOfParameterMaps()):  # applied last map first, from the fixed side
        fixed_to_moving_lps = fixed_to_moving_lps @ _elastix_matrix(result.GetParameterMap(index))
    return registration.moving_to_fixed_ras_of(fixed_to_moving_lps), []


def _elastix_matrix(parameter_map) -> np.ndarray:
    kind = parameter_map["Transform"][0]
    values = [float(v) for v in parameter_map["TransformParameters"]]
    centre = [float(v) for v in parameter_map["CenterOfRotationPoint"]]
    if kind == "EulerTransform":
        euler = sitk.Euler3DTransform()
        euler.SetCenter(centre)
        euler.SetComputeZYX(parameter_map.get("ComputeZYX", ["false"])[0] == "true")
        euler.SetParameters(values)
        return _matrix(euler.GetMatrix(), euler.GetTranslation(), centre)
    if kind == "AffineTransform":
        return _matrix(values[:9], values[9:], centre)
    raise ValueError(f"unexpected elastix transform {kind}")


def _matrix(linear, translation, centre) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.reshape(linear, (3, 3))
    matrix[:3, 3] = np.asarray(translation) + np.asarray(centre) - matrix[:3, :3] @ np.asarray(centre)
    return matrix


def _itk_image(itk, image):
    geometry = image.geometry
    result = itk.image_from_array(np.ascontiguousarray(image.array, dtype=np.float32))
    result.SetOrigin(geometry.origin_lps.tolist())
    result.SetSpacing(geometry.spacing.tolist())
    direction = geometry.ijk_to_lps[:3, :3] / geometry.spacing
    result.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))
    return result


def elastix_available() -> str | None:
    """None when itk-elastix can be imported, else the reason it cannot."""
    try:
        import itk

        itk.ParameterObject.New()
    except (ImportError, AttributeError) as error:
        return f"itk-elastix not installed ({error}); pip install itk-elastix"
    return None


def run(count: int, seed: int, max_mm: float, max_degrees: float) -> dict:
    methods = {"alignseries": alignseries_method, "sitk-tutorial": tutorial_method}
    skipped = elastix_available()
    if skipped is None:
        methods["elastix"] = elastix_method
    else:
        print(f"elastix skipped: {skipped}")
    kinds = ["phantom"] + (["same_frame_mr", "multimodal_rigid", "multimodal_affine"]
                           if registration_cases.real_data_available() else [])
    results: dict = {}
    for case in registration_cases.cases(count, seed=seed, kinds=kinds, max_mm=max_mm, max_degrees=max_degrees):
        for name, method in methods.items():
            started = time.perf_counter()
            try:
                estimate, warnings = method(case)
                error = case.error_mm(estimate)
            except (RuntimeError, AlignSeriesError) as failure:  # a method that gives up (loudly) fails the case
                error, warnings = float("inf"), [f"raised: {str(failure).strip().splitlines()[-1][:80]}"]
            seconds = time.perf_counter() - started
            results.setdefault((case.kind, name), []).append((error, seconds, case.name, warnings))
            print(f"  {case.name:22s} {name:14s} error {error:7.2f} mm  {seconds:6.2f} s"
                  + (f"  warnings: {', '.join(warnings)}" if warnings else ""), flush=True)
    return results


def table(results: dict) -> str:
    """Per case class and method: errors, time, and both as ratios to the more accurate peer of the same run."""
    lines = [f"{'case class':20s} {'method':14s} {'n':>3s} {'median mm':>10s} {'p95 mm':>8s} {'median s':>9s} "
             f"{'> 2 mm':>7s}  {'mm / peer':>9s} {'s / peer':>8s}"]
    summary = {key: (np.array([r[0] for r in rows]), np.array([r[1] for r in rows])) for key, rows in results.items()}
    for (kind, name), (errors, seconds) in summary.items():
        peers = [key for key in summary if key[0] == kind and key[1] != "alignseries"]
        best = min(peers, key=lambda key: np.median(summary[key][0]))
        lines.append(f"{kind:20s} {name:14s} {len(errors):3d} {np.median(errors):10.2f} "
                     f"{np.percentile(errors, 95):8.2f} {np.median(seconds):9.2f} {int(np.sum(errors > FAILURE_MM)):7d}"
                     f"  {np.median(errors) / np.median(summary[best][0]):9.2f} "
                     f"{np.median(seconds) / np.median(summary[best][1]):8.2f}")
    lines.append("peer: the other method with the lower median error in the class (ratios below 1 favour the row)")
    failures = [row for (kind, name), rows in results.items() if name == "alignseries" for row in rows
                if row[0] > FAILURE_MM]
    lines += [f"alignseries above {FAILURE_MM:g} mm: {row[2]} {row[0]:.2f} mm, report warnings: "
              f"{', '.join(row[3]) or 'NONE (silent)'}" for row in failures]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3, help="displacements per case class (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-mm", type=float, default=20.0, help="largest start translation (default 20 mm)")
    parser.add_argument("--max-degrees", type=float, default=15.0, help="largest start rotation (default 15)")
    args = parser.parse_args()
    results = run(args.cases, args.seed, args.max_mm, args.max_degrees)
    print(table(results))
    silent = [row[2] for (_, name), rows in results.items() if name == "alignseries" for row in rows
              if row[0] > FAILURE_MM and not row[3]]
    if silent:
        print(f"silent failures (above {FAILURE_MM:g} mm with no warning): {', '.join(silent)}")
    return 1 if silent else 0


if __name__ == "__main__":
    sys.exit(main())
