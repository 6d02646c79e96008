"""Contract test of the export job: the same job through every door writes the same files.

The doors are the command line (``cli.main``), the batch runner's case runner (``batch.run_case``), the Python
API (``alignseries.resample`` + ``write_dicom``/``write_pngs``/``Volume.save``) and the Slicer module's logic
(``AlignSeriesLogic.exportResampledVolumeResult`` on Slicer's real framework), the last also after "Apply".
The job: a moving volume under a parent transform P, registered by T (moving to fixed), onto a regular, a
gantry-tilted and a Siemens MOSAIC reference; whole and slab; a 300-label map and a scalar volume. The
command line, the batch runner and the API are given the one composed transform file T @ P (their inputs come
from files, with no parent transform); the logic gets the input under P and T as a node, so a swapped
composition order writes other pixels. DICOM slices must be byte-identical once their timestamps are blanked,
PNGs and ``index.csv`` byte-identical, volume files equal. On the tilted reference the label map's pixels are
also checked against the input at each pixel's true position (no pixel may differ).
"""

from __future__ import annotations

import gzip
import io
import warnings
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
import slicer_qt_fakes
from dicom_fixtures import ORIENTATIONS, stack_positions, write_phantom_series
from test_export_slices import mismatches_on_true_positions

import alignseries
from AlignSeriesLib import batch, cli, mrml, mrml_files, operations
from AlignSeriesLib.geometry import VolumeGeometry

FRAMEWORK = slicer_qt_fakes.install()
if FRAMEWORK:
    import AlignSeries

LABELS = 300
NIBABEL_MOSAIC = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / "siemens_dwi_1000.dcm.gz"
#: DICOM elements that hold the time of writing: blanked before comparing files.
TIMESTAMPS = ("SeriesDate", "SeriesTime", "ContentDate", "ContentTime", "InstanceCreationDate",
              "InstanceCreationTime")
SLABS = {"regular": (2, 3), "tilted": (2, 3), "mosaic": (10, 5)}


def rotation(axis: int, degrees: float, shift) -> np.ndarray:
    """A 4x4 RAS rotation about one axis, then a shift (mm)."""
    angle = np.radians(degrees)
    a, b = [n for n in range(3) if n != axis]
    matrix = np.eye(4)
    matrix[a, a] = matrix[b, b] = np.cos(angle)
    matrix[a, b], matrix[b, a] = -np.sin(angle), np.sin(angle)
    matrix[:3, 3] = shift
    return matrix


#: The moving volume's parent transform and the registration: they do not commute.
PARENT_RAS = rotation(2, 6.0, (3.1, -2.2, 1.7))
MOVING_TO_FIXED_RAS = rotation(0, 4.0, (-1.3, 2.9, -0.8))


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict:
    """Three reference DICOM folders: regular axial, tilted 17 degrees (regularized), a real Siemens MOSAIC."""
    root = tmp_path_factory.mktemp("references")
    positions = stack_positions((-20.0, -15.0, 40.0), ORIENTATIONS["axial"], np.arange(8) * 2.5)
    write_phantom_series(root / "regular", positions, rows=30, columns=26)
    tilted = stack_positions((-20.0, -15.0, 40.0), ORIENTATIONS["axial"], np.arange(8) * 2.5, tilt_deg=17)
    write_phantom_series(root / "tilted", tilted, rows=30, columns=26)
    (root / "mosaic").mkdir()
    (root / "mosaic" / "dwi.dcm").write_bytes(gzip.open(NIBABEL_MOSAIC).read())
    return {name: root / name for name in ("regular", "tilted", "mosaic")}


def input_volume(scene, reference: Path, kind: str, path: Path):
    """A moving volume file around the reference: labels changing every voxel, or a scalar ramp (int16).

    Its grid is placed so that, once under P and registered by T, it covers the reference (and it is the
    placement in the moving's own space that the volume file keeps).
    """
    grid = operations.load_reference(scene, reference).geometry
    spacing = 3.5 if grid.dimensions[0] > 64 else 1.3
    world_to_moving = np.linalg.inv(MOVING_TO_FIXED_RAS @ PARENT_RAS)
    center = (world_to_moving @ np.append(grid.center_ras, 1))[:3]
    dimensions = tuple(int(n) for n in np.ceil((np.ptp(grid.bounds_ras, axis=1) + 30) / spacing))
    directions = rotation(2, 8.0, (0, 0, 0))[:3, :3]
    origin = center - directions @ (np.array(dimensions) - 1) * spacing / 2 + (0.37, 0.23, 0.41)
    geometry = VolumeGeometry.from_spacing_origin_directions(dimensions, (spacing,) * 3, origin, directions)
    k, j, i = np.indices(geometry.shape)
    if kind == "labels":
        values = ((7 * i + 13 * j + 3 * k) % (LABELS - 1) + 1).astype(np.uint16)
    else:
        values = (40 * i - 25 * j + 60 * k - 900 + (i * j) % 17).astype(np.int16)
    node = mrml.add_volume_node(scene, values, geometry, "moving", labelmap=kind == "labels")
    mrml_files.save_node(node, path)
    return values, geometry


# -- the doors -------------------------------------------------------------------------------------------


def through_cli(job, out: Path) -> None:
    arguments = ["resample", "--input", job["input"], "--reference", job["reference"], "--transform",
                 job["transform"], "--interpolation", job["interpolation"]]
    arguments += ["--labelmap"] if job["labelmap"] else []
    arguments += ["--slab", *job["slab"]] if job["slab"] else []
    slices = cli.main([str(a) for a in [*arguments, "--output", f"{out / 'dicom'}/", "--png", out / "png"]])
    assert slices == 0
    if job["volume_file"]:
        assert cli.main([str(a) for a in [*arguments, "--output", out / "volume.nrrd"]]) == 0


def through_batch(job, out: Path) -> None:
    assert job["slab"] is None, "a manifest has no slab column"
    for output, png in (("dicom/", "png"), ("volume.nrrd", None)):
        if png is None and not job["volume_file"]:
            continue
        case = batch.Case(2, str(job["input"]), str(job["reference"]), output, str(job["transform"]),
                          "yes" if job["labelmap"] else "", png, job["interpolation"])
        result = batch.run_case(case, out)
        assert result["status"] == "done", result["error"]


def through_api(job, out: Path) -> None:
    moving = alignseries.load(job["input"], labelmap=job["labelmap"] or None)
    reference = job["reference"]  # a path: read header-only
    resampled = alignseries.resample(moving, reference, transform=job["transform"],
                                     interpolation=job["interpolation"], slab=job["slab"])
    alignseries.write_dicom(resampled, reference, out / "dicom")
    alignseries.write_pngs(resampled, reference, out / "png")
    if job["volume_file"]:
        resampled.save(out / "volume.nrrd")


def through_logic(job, out: Path, *, applied: bool = False) -> None:
    scene = mrml.new_scene()
    import slicer

    slicer.mrmlScene = scene
    moving = operations.load_one_volume(scene, job["input"], labelmap=job["labelmap"] or None)
    parent = mrml.set_linear_transform(scene, PARENT_RAS, name="P")
    registration = mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS, name="T")
    moving.SetAndObserveTransformNodeID(parent.GetID())
    if applied:  # "Apply": the registration above the moving volume's chain, and still selected for the export
        parent.SetAndObserveTransformNodeID(registration.GetID())
    reference, = operations.load_volumes(scene, job["reference"])
    logic = AlignSeries.AlignSeriesLogic()
    common = {"transform": registration, "interpolation": job["interpolation"], "slab": job["slab"]}
    logic.exportResampledVolumeResult(moving, reference, outputPath=str(out / "dicom"), dicomFolder=True,
                                      pngFolder=str(out / "png"), **common)
    if job["volume_file"]:
        logic.exportResampledVolumeResult(moving, reference, outputPath=str(out / "volume.nrrd"), **common)
    scene.Clear(1)


DOORS = {"cli": through_cli, "batch": through_batch, "api": through_api, "logic": through_logic,
         "logic_after_apply": lambda job, out: through_logic(job, out, applied=True)}


# -- comparing what they wrote -------------------------------------------------------------------------------


def dicom_bytes(path: Path) -> bytes:
    dataset = pydicom.dcmread(path)
    for keyword in TIMESTAMPS:
        if keyword in dataset:
            dataset[keyword].value = ""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def written_files(out: Path) -> dict[str, bytes | np.ndarray]:
    """Every output file by its path under ``out``: DICOM without timestamps, PNG/CSV bytes, volume voxels."""
    found: dict[str, bytes | np.ndarray] = {}
    for path in sorted((out / "dicom").glob("*")):
        found[f"dicom/{path.name}"] = dicom_bytes(path)
    for path in sorted((out / "png").glob("*")):
        found[f"png/{path.name}"] = path.read_bytes()
    if (out / "volume.nrrd").exists():
        node = mrml_files.load_volume_file(mrml.new_scene(), out / "volume.nrrd")
        found["volume.nrrd"] = np.concatenate([mrml.volume_geometry(node).ijk_to_ras.ravel(),
                                               mrml.volume_array(node).ravel().astype(float)])
    return found


def same(first, second) -> bool:
    return first == second if isinstance(first, bytes) else np.array_equal(first, second)


CASES = [(reference, grid, kind) for reference in ("regular", "tilted", "mosaic") for grid in ("whole", "slab")
         for kind in ("labels", "scalar")]


@pytest.mark.parametrize("reference_kind, grid, kind", CASES, ids=["-".join(case) for case in CASES])
def test_every_door_writes_the_same_files(tmp_path, scene, references, reference_kind, grid, kind):
    reference = references[reference_kind]
    values, geometry = input_volume(scene, reference, kind, tmp_path / "moving.nrrd")
    transform_path = tmp_path / "moving_to_fixed.json"
    operations.write_transform(mrml.set_linear_transform(scene, MOVING_TO_FIXED_RAS @ PARENT_RAS), transform_path)
    regularized = operations.load_reference(scene, reference).series.regularized
    job = {"input": tmp_path / "moving.nrrd", "reference": reference, "transform": transform_path,
           "labelmap": kind == "labels", "interpolation": "nearest" if kind == "labels" else "linear",
           "slab": SLABS[reference_kind] if grid == "slab" else None,
           "volume_file": not (regularized and grid == "slab")}
    doors = [name for name in DOORS if not (name == "batch" and grid == "slab")
             and not (name.startswith("logic") and not FRAMEWORK)]
    written = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel: "The DICOM readers are highly experimental"
        for name in doors:
            DOORS[name](job, tmp_path / name)
            written[name] = written_files(tmp_path / name)
    expected = written["cli"]
    slices = len(operations.load_reference(scene, reference).series.slices)
    count = job["slab"][1] if job["slab"] else slices
    assert sum(key.startswith("dicom/") for key in expected) == count
    assert sum(key.endswith(".png") for key in expected) == count and "png/index.csv" in expected
    assert ("volume.nrrd" in expected) == job["volume_file"]
    for name in doors[1:]:
        assert sorted(written[name]) == sorted(expected), name
        differing = [key for key in expected if not same(written[name][key], expected[key])]
        assert differing == [], f"{name} wrote other files than the command line: {differing[:3]}"
    if reference_kind == "tilted" and kind == "labels" and grid == "whole":
        world = geometry.transformed(MOVING_TO_FIXED_RAS @ PARENT_RAS)
        files = sorted(str(path) for path in reference.glob("*"))
        counts = mismatches_on_true_positions(tmp_path / "logic" / "dicom", tmp_path / "logic" / "png", files,
                                              values, world) if FRAMEWORK else None
        assert counts is None or counts["dicom"] == counts["png"] == 0, counts
