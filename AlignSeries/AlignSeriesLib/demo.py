"""``alignseries demo``: the whole job on a synthetic patient, with every result checked against the truth.

Steps: write an axial CT-like and an oblique, partial-field MR-like DICOM series of the phantom in
:mod:`AlignSeriesLib.phantom` (different frames of reference, shuffled files) and two landmark lists;
then ``info`` on both, the geometry transform (frame of reference: refused, as it must be; centers
and moments as pre-alignments, then the centers start refined by image intensity, as
``transform --mode centers --refine rigid`` does), the landmark transform, and the export of the MR onto the CT grid
as NRRD, as DICOM aligned slice for slice with the CT, and as a fused PNG. The report compares each
result with the ground truth in millimetres and states the tolerance it must meet.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from . import export_job, exports, mrml, mrml_files, operations, phantom
from .dicom import series as dicom_series
from .errors import AlignSeriesError, FrameOfReferenceError
from .files import write_text_atomic
from .geometry import apply_affine

#: Marks a folder as written by the demo, so ``--force`` may replace it (and nothing else).
MARKER = ".alignseries-demo"

#: Standard deviation (mm) of the simulated landmark clicking error.
LANDMARK_NOISE_MM = 0.5

#: What a translation-only pre-alignment of a partial field of view must achieve: close enough
#: (within the size of an organ) for landmarks or a local registration to take over.
PRE_ALIGNMENT_TOLERANCE_MM = 60.0


@dataclass
class Check:
    """One line of the report: a measured error and the tolerance it must meet."""

    what: str
    value: float
    tolerance: float
    unit: str = "mm"

    @property
    def passed(self) -> bool:
        return bool(self.value <= self.tolerance)

    def line(self) -> str:
        verdict = "ok  " if self.passed else "FAIL"
        return f"  [{verdict}] {self.what}: {self.value:.4g} {self.unit} (tolerance {self.tolerance:g} {self.unit})"


def run(output: Path, *, force: bool = False) -> dict:
    """Run the demo into ``output``; returns the report (``text`` for people, the rest for ``--json``).

    Raises
    ------
    AlignSeriesError
        If ``output`` exists and is not an earlier demo folder, or ``force`` is not given.
    """
    started = time.perf_counter()
    folder = _prepare_folder(Path(output), force=force)
    ct, mr = phantom.ct_acquisition(), phantom.mr_acquisition()
    ct_files, mr_files = _write_series(folder, ct, mr)
    scene = mrml.new_scene()
    fixed_points, moving_points = _write_landmarks(scene, folder, ct, mr)
    truth_mr_to_ct_ras = np.linalg.inv(mr.patient_to_scanner_ras)

    checks, notes = [], []
    ct_node, = operations.load_volumes(scene, folder / "dicom" / "CT")
    mr_node, = operations.load_volumes(scene, folder / "dicom" / "MR")
    checks += _check_reconstruction(ct, ct_node, ct_files) + _check_reconstruction(mr, mr_node, mr_files)

    try:
        operations.compute_geometry_transform(scene, ct_node, mr_node, "frameOfReference")
        notes.append("frameOfReference unexpectedly succeeded")
    except FrameOfReferenceError as error:
        notes.append(f"frameOfReference refused, as it must be: {error}")
    landmark_points = np.array(list(phantom.LANDMARKS.values()), dtype=float)
    mr_landmarks = apply_affine(mr.patient_to_scanner_ras, landmark_points)
    outputs: list[object] = []
    for mode in ("centers", "moments"):
        outcome = operations.compute_geometry_transform(scene, ct_node, mr_node, mode)
        checks.append(Check(f"{mode} pre-alignment (translation only, partial MR field), mean error at the landmarks",
                            _mean_distance(outcome.moving_to_fixed_ras, truth_mr_to_ct_ras, mr_landmarks),
                            PRE_ALIGNMENT_TOLERANCE_MM))
        outputs.append(outcome.save(folder / f"mr_to_ct_{mode}.h5", force=True))
    refined = operations.compute_geometry_transform(scene, ct_node, mr_node, "centers", refine="rigid")
    start_error = _max_distance(refined.refinement.initial_moving_to_fixed_ras if refined.refinement else np.eye(4),
                                truth_mr_to_ct_ras, mr_node_corners(mr_node))
    checks.append(Check(f"centers ({start_error:.0f} mm off) then intensity refinement (--refine rigid), max error "
                        "over the MR field of view",
                        _max_distance(refined.moving_to_fixed_ras, truth_mr_to_ct_ras, mr_node_corners(mr_node)),
                        2.0))
    notes.append("centers + --refine rigid: " + (refined.refinement.text() if refined.refinement else ""))
    outputs.append(refined.save(folder / "mr_to_ct_centers_refined.h5", force=True))

    landmark = operations.compute_landmark_transform(scene, str(fixed_points), str(moving_points), "rigid",
                                                     match="labels")
    for name in ("mr_to_ct_landmarks.h5", "mr_to_ct_landmarks.json"):
        outputs.append(landmark.save(folder / name, force=True))
    checks.append(Check("landmark rigid fit, RMS residual", float(landmark.rms_error or 0.0), 3 * LANDMARK_NOISE_MM))
    mr_grid_points = mr_node_corners(mr_node)
    checks.append(Check("landmark rigid transform, max error over the MR field of view",
                        _max_distance(landmark.moving_to_fixed_ras, truth_mr_to_ct_ras, mr_grid_points), 2.0))

    reference = operations.reference_of_node(ct_node)
    targets = exports.ExportTargets(volume_file=folder / "mr_on_ct.nrrd", dicom_folder=folder / "mr_on_ct_dicom",
                                    preview=folder / "fusion.png", force=True)
    job = export_job.resample_and_write(scene, mr_node, reference, targets, transform_node=landmark.transform_node)
    resampled, written = job.volume_node, job.written
    checks.append(_check_resampled_intensities(resampled, ct))
    dicom_files = [path for path in written if path.suffix == ".dcm"]
    outputs += [folder / "mr_on_ct.nrrd", f"{targets.dicom_folder}/ ({len(dicom_files)} DICOM files, one per CT slice)",
                folder / "fusion.png"]
    checks.append(_check_dicom_export(folder / "mr_on_ct_dicom", ct_node))

    report = _report(folder, checks, notes, outputs, time.perf_counter() - started)
    write_text_atomic(folder / "report.json", json.dumps({k: v for k, v in report.items() if k != "text"}, indent=1),
                      force=True)
    if not all(check.passed for check in checks):
        raise AlignSeriesError("demo: a result is outside its tolerance:\n" + report["text"])
    return report


def mr_node_corners(volume_node) -> np.ndarray:
    """RAS corners of a volume node's grid (its field of view)."""
    return mrml.volume_geometry(volume_node).corners_ras


def _prepare_folder(folder: Path, *, force: bool) -> Path:
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).exists():
            raise AlignSeriesError(f"{folder} exists and is not an AlignSeries demo folder: choose another --output")
        if not force:
            raise AlignSeriesError(f"{folder} holds an earlier demo run: use --force to replace it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("written by alignseries demo\n")
    return folder


def _write_series(folder: Path, ct, mr) -> tuple[list, list]:
    study_uid = generate_uid()
    ct_files = phantom.write_dicom_series(ct, phantom.acquire(ct), folder / "dicom" / "CT", study_uid=study_uid, seed=1)
    mr_files = phantom.write_dicom_series(mr, phantom.acquire(mr), folder / "dicom" / "MR", study_uid=study_uid, seed=2)
    return ct_files, mr_files


def _write_landmarks(scene, folder: Path, ct, mr) -> tuple[Path, Path]:
    """Fixed points as a Slicer markups file, moving points as CSV in another order, both with noise."""
    rng = np.random.default_rng(7)
    folder = folder / "landmarks"
    folder.mkdir()
    names = list(phantom.LANDMARKS)
    fixed = {name: point + rng.normal(0, LANDMARK_NOISE_MM, 3) for name, point in phantom.landmarks_in(ct).items()}
    moving = {name: point + rng.normal(0, LANDMARK_NOISE_MM, 3) for name, point in phantom.landmarks_in(mr).items()}
    fixed_path = mrml_files.save_points_file(scene, folder / "ct_points.mrk.json", np.array([fixed[n] for n in names]),
                                             names)
    shuffled = names[::-1]  # another order: the labels pair the points
    moving_path = mrml_files.save_points_file(scene, folder / "mr_points.csv",
                                              np.array([moving[n] for n in shuffled]), shuffled)
    return fixed_path, moving_path


def _check_reconstruction(acquisition, volume_node, files) -> list[Check]:
    truth = acquisition.geometry
    loaded = mrml.volume_geometry(volume_node)
    corner_error = float(np.max(np.linalg.norm(loaded.corners_ras - truth.corners_ras, axis=1)))
    values_equal = np.array_equal(mrml.volume_array(volume_node), phantom.acquire(acquisition))
    return [Check(f"{acquisition.name}: reconstructed grid corners vs truth ({len(files)} shuffled files)",
                  corner_error, 0.02),
            Check(f"{acquisition.name}: voxels differing from the acquired phantom", float(not values_equal), 0,
                  unit="volumes")]


def _check_resampled_intensities(resampled_node, ct) -> Check:
    """Fraction of CT-grid voxels (inside the MR field) whose resampled MR value is off the truth."""
    truth = np.round(phantom.phantom_values(
        mrml.volume_geometry(resampled_node).ijk_to_world(_grid_indices(ct.geometry)), "MR"))
    resampled = mrml.volume_array(resampled_node)
    inside = resampled != 0
    wrong = np.abs(resampled[inside].astype(float) - truth[inside]) > 50
    return Check("MR resampled onto the CT grid: voxels off the true MR value by > 50",
                 100.0 * float(wrong.mean()), 5.0, unit="%")


def _check_dicom_export(folder: Path, ct_node) -> Check:
    exported = dicom_series.scan_dicom([folder]).volumes
    if len(exported) != 1:
        return Check("DICOM export read back as one volume", float(len(exported)), 1, unit="volumes")
    difference = exported[0].geometry.corners_ras - mrml.volume_geometry(ct_node).corners_ras
    return Check("DICOM export aligned with the CT slices (max corner distance)",
                 float(np.max(np.linalg.norm(difference, axis=1))), 0.001)


def _grid_indices(geometry) -> np.ndarray:
    k, j, i = np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij")
    return np.stack([i, j, k], axis=-1)


def _mean_distance(estimate, truth, points) -> float:
    return float(np.mean(np.linalg.norm(apply_affine(estimate, points) - apply_affine(truth, points), axis=-1)))


def _max_distance(estimate, truth, points) -> float:
    return float(np.max(np.linalg.norm(apply_affine(estimate, points) - apply_affine(truth, points), axis=-1)))


def _report(folder: Path, checks: list[Check], notes: list[str], outputs: list, seconds: float) -> dict:
    lines = [f"AlignSeries demo: synthetic CT and MR of one patient, written to {folder}", "", "Results vs truth:"]
    lines += [check.line() for check in checks]
    lines += ["", "Notes:"] + [f"  {note}" for note in notes]
    lines += ["", "Outputs:"] + [f"  {path}" for path in outputs]
    lines.append(f"  DICOM series: {folder / 'dicom'}; landmarks: {folder / 'landmarks'}")
    lines.append(f"  report: {folder / 'report.json'}")
    lines.append(f"\n{sum(c.passed for c in checks)} of {len(checks)} checks within tolerance, {seconds:.1f} s")
    return {"checks": [{"what": c.what, "value": c.value, "tolerance": c.tolerance, "unit": c.unit,
                        "passed": c.passed} for c in checks],
            "notes": notes, "outputs": [str(p) for p in outputs], "seconds": seconds, "text": "\n".join(lines)}

