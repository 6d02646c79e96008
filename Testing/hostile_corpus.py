"""A generated corpus of hostile inputs: malformed and edge-case DICOM, points, transform and volume files.

Nothing here is stored as data: every case is built by code into a temporary folder, from a seeded
phantom, when a test asks for it. Each :class:`HostileCase` says what AlignSeries must do with it:

``"error"``
    refuse it with one clear line that names the input (and, where it applies, the DICOM tag or
    the problem: :attr:`HostileCase.mentions`);
``"warning"``
    give the correct result and report what was odd (a ``{"code", "message"}`` warning or a logged
    warning);
``"ok"``
    odd but valid: the correct result, with nothing to report (a ``.gz`` name on plain data, two
    stacks sharing a SeriesInstanceUID; unreadable ``chmod 000`` files when running as root).

Kinds, and how the tests feed them to AlignSeries (see ``test_hostile_inputs.py``):

``dicom``
    a folder (or file) given as ``--input``/``--reference`` of ``alignseries resample``;
``volume``
    a volume file given as ``--input`` of ``alignseries resample`` onto a good reference;
``points``
    a points file given as ``--fixed`` of ``alignseries landmarks`` against good moving points;
``transform``
    a transform file given as ``--transform`` of ``alignseries resample`` of a good volume.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.config
from dicom_fixtures import ORIENTATIONS, stack_positions, write_multiframe, write_phantom_series
from pydicom.dataelem import DataElement
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000, JPEGBaseline8Bit, RLELossless, generate_uid

#: Seed of every random choice in the corpus (pixel noise, UIDs that must repeat).
SEED = 20240707

#: The good series every DICOM case starts from: slices, in-plane size, spacing (mm).
SLICES, ROWS, COLUMNS = 4, 16, 12
PIXEL_SPACING = (0.8, 0.7)
SLICE_SPACING = 2.0

#: A header that claims more voxels than any machine holds: 60000 x 60000 x 5000.
HUGE_SHAPE = (60000, 60000, 5000)

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class HostileCase:
    """One hostile input and the outcome AlignSeries owes it.

    Attributes
    ----------
    name : str
        Readable test id, ``<kind>-<what>``.
    kind : {"dicom", "volume", "points", "transform"}
    expected : {"error", "warning", "ok"}
    build : callable
        ``build(folder) -> Path``: writes the input inside ``folder`` (a new, empty folder) and
        returns the path to give AlignSeries.
    mentions : str
        Text the error message must contain besides the input's name (a tag keyword, a problem).
    """

    name: str
    kind: str
    expected: str
    build: Callable[[Path], Path]
    mentions: str = ""


# -- DICOM ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _invalid_values_allowed():
    """Let pydicom write values its validation would reject (NaN in DS, text in IS, ...)."""
    previous = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom.config.settings.writing_validation_mode = previous


def good_series(folder: Path, *, count: int = SLICES, description: str = "hostile", **attributes) -> list[Path]:
    """Write the good phantom series every DICOM case starts from.

    Parameters
    ----------
    folder : Path
        Created if needed; the files are named ``IM<n>``.
    count : int
        Number of slices, ``SLICE_SPACING`` mm apart along the axial normal.
    description : str
        SeriesDescription.
    **attributes
        Further DICOM keywords for every file (see ``dicom_fixtures.slice_dataset``).

    Returns
    -------
    list of Path
        The files in slice order.
    """
    positions = stack_positions((-10.0, -20.0, 30.0), ORIENTATIONS["axial"], np.arange(count) * SLICE_SPACING)
    files, _ = write_phantom_series(folder, positions, "axial", PIXEL_SPACING, rows=ROWS, columns=COLUMNS,
                                    description=description, **attributes)
    return files


def edit_dicom(path: Path, changes: dict) -> None:
    """Rewrite one DICOM file with elements changed.

    Parameters
    ----------
    path : Path
    changes : dict
        Keyword (or ``(group, element)`` tag) to new value; ``None`` deletes the element, a
        :class:`pydicom.dataelem.DataElement` replaces it as is (e.g. with the wrong VR).
    """
    dataset = pydicom.dcmread(path)
    with _invalid_values_allowed():
        for key, value in changes.items():
            tag = pydicom.datadict.tag_for_keyword(key) if isinstance(key, str) else pydicom.tag.Tag(key)
            if value is None:
                if tag in dataset:
                    del dataset[tag]
            elif isinstance(value, DataElement):
                dataset[tag] = value
            else:
                setattr(dataset, key, value)
        dataset.save_as(path, enforce_file_format=False)


def _dicom_edit_case(name: str, expected: str, mentions: str = "", *, which: str = "all", **changes) -> HostileCase:
    """A good series with ``changes`` applied to every file (``which="all"``) or to the first one only."""

    def build(folder: Path) -> Path:
        files = good_series(folder / "series")
        for path in files if which == "all" else files[:1]:
            edit_dicom(path, changes)
        return folder / "series"

    return HostileCase(f"dicom-{name}", "dicom", expected, build, mentions)


def _wrong_vr(keyword: str, vr: str, value) -> DataElement:
    return DataElement(pydicom.datadict.tag_for_keyword(keyword), vr, value)


def _dicom_edit_cases() -> list[HostileCase]:
    """Good series with one header element missing, non-finite, out of range or of the wrong VR."""
    missing = ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
               "Columns", "BitsAllocated", "PixelData"]
    cases = [_dicom_edit_case(f"missing-{keyword}", "error", keyword, **{keyword: None}) for keyword in missing]
    # anonymized files: identifiers are substituted (and named in a warning), never a reason to refuse a series
    cases += [_dicom_edit_case(f"missing-{keyword}", "warning", keyword, **{keyword: None})
              for keyword in ("SOPInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID")]
    cases += [_dicom_edit_case(f"blank-{keyword}", "warning", keyword, **{keyword: ""})
              for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")]
    cases += [_dicom_edit_case(f"missing-{keyword}-in-one-file", "warning", keyword, which="first",
                               **{keyword: None}) for keyword in missing[:3]]
    for value, label in (("nan", "nan"), ("inf", "inf"), ("-inf", "minus-inf"), ("1e308", "1e308")):
        cases += [_dicom_edit_case(f"ImagePositionPatient-{label}", "error", "ImagePositionPatient",
                                   ImagePositionPatient=[value, "0", "0"]),
                  _dicom_edit_case(f"ImageOrientationPatient-{label}", "error", "ImageOrientationPatient",
                                   ImageOrientationPatient=["1", "0", "0", "0", value, "0"]),
                  _dicom_edit_case(f"PixelSpacing-{label}", "error", "PixelSpacing", PixelSpacing=[value, "0.7"])]
    return cases + [
        _dicom_edit_case("PixelSpacing-zero", "error", "PixelSpacing", PixelSpacing=["0", "0.7"]),
        _dicom_edit_case("PixelSpacing-negative", "error", "PixelSpacing", PixelSpacing=["-0.8", "0.7"]),
        _dicom_edit_case("PixelSpacing-one-value", "error", "PixelSpacing", PixelSpacing=["0.8"]),
        _dicom_edit_case("PixelSpacing-text", "error", "PixelSpacing",
                         PixelSpacing=_wrong_vr("PixelSpacing", "LO", "wide\\tall")),
        _dicom_edit_case("ImagePositionPatient-two-values", "error", "ImagePositionPatient",
                         ImagePositionPatient=["1", "2"]),
        _dicom_edit_case("ImagePositionPatient-text", "error", "ImagePositionPatient",
                         ImagePositionPatient=_wrong_vr("ImagePositionPatient", "LO", "left\\back\\up")),
        _dicom_edit_case("ImageOrientationPatient-zero", "error", "ImageOrientationPatient",
                         ImageOrientationPatient=[0, 0, 0, 0, 0, 0]),
        _dicom_edit_case("ImageOrientationPatient-non-orthogonal", "error", "ImageOrientationPatient",
                         ImageOrientationPatient=[1, 0, 0, 0.5, 0.866, 0]),
        _dicom_edit_case("ImageOrientationPatient-parallel", "error", "ImageOrientationPatient",
                         ImageOrientationPatient=[1, 0, 0, 1, 0, 0]),
        _dicom_edit_case("ImageOrientationPatient-slightly-off", "warning", "ImageOrientationPatient",
                         ImageOrientationPatient=[1, 0, 0, 0.005, 0.99999, 0]),
        _dicom_edit_case("Rows-zero", "error", "Rows", Rows=0),
        _dicom_edit_case("Rows-as-text", "error", "Rows", Rows=_wrong_vr("Rows", "LO", "many")),
        _dicom_edit_case("Columns-as-text", "error", "Columns", Columns=_wrong_vr("Columns", "LO", "many")),
        _dicom_edit_case("Rows-Columns-larger-than-PixelData", "error", "PixelData", Rows=4096, Columns=4096),
        _dicom_edit_case("BitsAllocated-12", "error", "BitsAllocated", BitsAllocated=12),
        _dicom_edit_case("BitsAllocated-as-text", "error", "BitsAllocated",
                         BitsAllocated=_wrong_vr("BitsAllocated", "LO", "sixteen")),
        _dicom_edit_case("SamplesPerPixel-3", "error", "SamplesPerPixel", SamplesPerPixel=3),
        _dicom_edit_case("RescaleSlope-text", "error", "RescaleSlope",
                         RescaleSlope=_wrong_vr("RescaleSlope", "LO", "steep")),
        _dicom_edit_case("RescaleSlope-nan", "error", "RescaleSlope", RescaleSlope="nan"),
        _dicom_edit_case("RescaleIntercept-inf", "error", "RescaleIntercept", RescaleIntercept="inf"),
        _dicom_edit_case("NumberOfFrames-text", "error", "NumberOfFrames",
                         NumberOfFrames=_wrong_vr("NumberOfFrames", "LO", "several")),
        _dicom_edit_case("InstanceNumber-text", "ok", InstanceNumber=_wrong_vr("InstanceNumber", "LO", "first")),
        _dicom_edit_case("SeriesNumber-text", "ok", SeriesNumber=_wrong_vr("SeriesNumber", "LO", "two")),
        _dicom_edit_case("SeriesInstanceUID-missing", "warning", "SeriesInstanceUID", SeriesInstanceUID=None),
        _dicom_edit_case("FrameOfReferenceUID-mixed", "warning", "mixed_frame_of_reference", which="first",
                         FrameOfReferenceUID="1.2.826.0.1.3680043.8.498.999"),
    ]


def _geometry_case(name: str, distances_mm, expected: str, mentions: str, **kwargs) -> HostileCase:
    """A phantom series with slices at ``distances_mm`` along the normal (``tilt_deg`` for a gantry tilt)."""
    tilt = kwargs.pop("tilt_deg", 0.0)

    def build(folder: Path) -> Path:
        positions = stack_positions((0.0, 0.0, 0.0), ORIENTATIONS["axial"], distances_mm, tilt_deg=tilt)
        write_phantom_series(folder / "series", positions, "axial", PIXEL_SPACING, rows=ROWS, columns=COLUMNS,
                             **kwargs)
        return folder / "series"

    return HostileCase(f"dicom-{name}", "dicom", expected, build, mentions)


def _geometry_cases() -> list[HostileCase]:
    """Irregular stacks: each is regularized or split, and reported."""
    return [
        _geometry_case("single-slice", [0.0], "warning", "single_slice"),
        _geometry_case("single-slice-SliceThickness-inf", [0.0], "warning", "single_slice",
                       SliceThickness="inf", SpacingBetweenSlices="inf"),
        _geometry_case("missing-slice", [0, 2, 4, 8, 10], "warning", "missing_slices"),
        _geometry_case("nonuniform-spacing", [0, 2, 3.1, 6, 7.5], "warning", "nonuniform_spacing"),
        _geometry_case("gantry-tilt", [0, 2, 4, 6], "warning", "gantry_tilt", tilt_deg=15.0),
        _geometry_case("duplicate-positions", [0, 0, 2, 2, 4, 4], "warning", "duplicate_positions"),
        _geometry_case("all-slices-at-one-position", [5, 5, 5], "warning", "duplicate_positions"),
        _geometry_case("slices-1e-9-mm-apart", [0, 1e-9, 2e-9], "warning", "duplicate_positions"),
        _geometry_case("slice-1000-mm-beyond-the-stack", [0, 2, 4, 1000], "warning", "missing_slices"),
    ]


def _transfer_syntax_case(name: str, syntax: str, *, encapsulated: bool) -> HostileCase:
    """A series whose files declare a compressed transfer syntax over bytes that are not that codec's."""

    def build(folder: Path) -> Path:
        for path in good_series(folder / "series"):
            if encapsulated:
                dataset = pydicom.dcmread(path)
                dataset.file_meta.TransferSyntaxUID = syntax
                dataset.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(256)) * 3])
                dataset["PixelData"].VR = "OB"
                dataset.save_as(path, enforce_file_format=False)
            else:
                _declare_transfer_syntax(path, syntax)
        return folder / "series"

    return HostileCase(f"dicom-{name}", "dicom", "error", build, "PixelData")


def _declare_transfer_syntax(path: Path, syntax: str) -> None:
    """Rewrite only the file meta group so that it declares ``syntax``; the data set bytes stay as they are."""
    data = path.read_bytes()
    meta_start = 128 + 4
    group_length = struct.unpack_from("<I", data, meta_start + 8)[0]
    body = data[meta_start + 12 + group_length:]
    meta = pydicom.dcmread(path).file_meta
    meta.TransferSyntaxUID = syntax
    buffer = pydicom.filebase.DicomBytesIO()
    pydicom.filewriter.write_file_meta_info(buffer, meta, enforce_standard=True)
    path.write_bytes(data[:meta_start] + buffer.getvalue() + body)


def _file_case(name: str, expected: str, mentions: str, write: Callable[[Path], Path]) -> HostileCase:
    return HostileCase(f"dicom-{name}", "dicom", expected, write, mentions)


def _truncated(folder: Path) -> Path:
    path = good_series(folder / "series", count=1)[0]
    path.write_bytes(path.read_bytes()[:-300])
    return path


def _pixel_data_short(folder: Path) -> Path:
    path = good_series(folder / "series", count=1)[0]
    dataset = pydicom.dcmread(path)
    dataset.PixelData = dataset.PixelData[:100]
    dataset.save_as(path, enforce_file_format=True)
    return path


def _written(name: str, data: bytes) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / name

    return write


def _good_series_with(extra: Callable[[Path], None]) -> Callable[[Path], Path]:
    """A good series folder to which ``extra(folder)`` adds something hostile."""

    def build(folder: Path) -> Path:
        good_series(folder / "series")
        extra(folder / "series")
        return folder / "series"

    return build


def _symlink_loops(series: Path) -> None:
    (series / "loop").symlink_to(series, target_is_directory=True)
    (series / "self").symlink_to(series / "self")


def _self_symlink(folder: Path) -> Path:
    (folder / "self.dcm").symlink_to(folder / "self.dcm")
    return folder / "self.dcm"


def _unreadable_file(series: Path) -> None:
    sorted(series.iterdir())[0].chmod(0)


def _unreadable_series(folder: Path) -> Path:
    path = good_series(folder / "series", count=1)[0]
    path.chmod(0)
    return path


def _copied_file(series: Path) -> None:
    first = sorted(series.iterdir())[0]
    (series / "copy_of_first").write_bytes(first.read_bytes())


def _two_series_one_series_uid(folder: Path) -> Path:
    uid = generate_uid(entropy_srcs=[str(SEED), "shared series"])
    good_series(folder / "series" / "axial", series_uid=uid)
    positions = stack_positions((0.0, 0.0, 0.0), ORIENTATIONS["sagittal"], np.arange(3) * 2.0)
    write_phantom_series(folder / "series" / "sagittal", positions, "sagittal", PIXEL_SPACING, rows=ROWS,
                         columns=COLUMNS, series_uid=uid, description="other")
    return folder / "series"


def _two_series_same_sop_uids(folder: Path) -> Path:
    files = good_series(folder / "series" / "a")
    (folder / "series" / "b").mkdir()
    series_uid = generate_uid(entropy_srcs=[str(SEED), "second series"])
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = series_uid
        dataset.save_as(folder / "series" / "b" / path.name, enforce_file_format=True)
    return folder / "series"


def _different_rows_in_one_series(series: Path) -> None:
    first = sorted(series.iterdir())[0]
    dataset = pydicom.dcmread(first)
    dataset.Rows = ROWS // 2
    dataset.PixelData = dataset.PixelData[: len(dataset.PixelData) // 2]
    dataset.save_as(first, enforce_file_format=True)


def _huge_multiframe(folder: Path) -> Path:
    """An Enhanced MR object claiming 5000 frames of 60000 x 60000 over a few compressed bytes."""
    rows, columns, frames = HUGE_SHAPE
    path = folder / "huge.dcm"
    write_multiframe(path, np.zeros((2, 2, 2), np.int16), stack_positions((0, 0, 0), ORIENTATIONS["axial"], [0, 1]),
                     ORIENTATIONS["axial"], PIXEL_SPACING, shared_geometry=True)
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = JPEG2000
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = rows, columns, frames
    item = dataset.PerFrameFunctionalGroupsSequence[0]
    dataset.PerFrameFunctionalGroupsSequence = [_frame_item(item, k) for k in range(frames)]
    dataset.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)] * 1)
    dataset["PixelData"].VR = "OB"
    dataset.save_as(path, enforce_file_format=False)
    return path


def _frame_item(template, k: int):
    item = pydicom.dataset.Dataset()
    item.update(template)
    position = pydicom.dataset.Dataset()
    position.ImagePositionPatient = [0.0, 0.0, float(k)]
    item.PlanePositionSequence = [position]
    return item


def _dicom_file_cases() -> list[HostileCase]:
    """Files that are not (whole) DICOM, odd folders, compressed syntaxes without a decoder, huge claims."""
    rng = np.random.default_rng(SEED)
    preamble_only = bytes(128) + b"DICM"
    return [
        _file_case("truncated-file", "error", "truncated", _truncated),
        _file_case("PixelData-shorter-than-Rows-x-Columns", "error", "PixelData", _pixel_data_short),
        _file_case("text-file", "error", "not a DICOM file", _written("notes.dcm", b"patient notes\n" * 20)),
        _file_case("empty-file", "error", "empty.dcm", _written("empty.dcm", b"")),
        _file_case("random-bytes", "error", "noise.dcm", _written("noise.dcm", rng.bytes(4096))),
        _file_case("preamble-only", "error", "preamble.dcm", _written("preamble.dcm", preamble_only)),
        _file_case("preamble-then-noise", "error", "half.dcm", _written("half.dcm", preamble_only + rng.bytes(512))),
        _file_case("empty-folder", "error", "no files found", lambda folder: folder),
        _file_case("self-symlink-given", "error", "self.dcm", _self_symlink),
        _file_case("series-with-symlink-loops", "warning", "self", _good_series_with(_symlink_loops)),
        _file_case("series-with-text-file", "warning", "not DICOM",
                   _good_series_with(lambda series: (series / "README").write_text("hello"))),
        _file_case("series-with-empty-file", "warning", "empty",
                   _good_series_with(lambda series: (series / "empty").write_bytes(b""))),
        _file_case("series-with-copied-file", "warning", "duplicate", _good_series_with(_copied_file)),
        _file_case("series-with-one-smaller-image", "warning", "",
                   _good_series_with(_different_rows_in_one_series)),
        _file_case("series-with-unreadable-file", "ok" if RUNNING_AS_ROOT else "warning", "Permission",
                   _good_series_with(_unreadable_file)),
        _file_case("unreadable-file", "ok" if RUNNING_AS_ROOT else "error", "Permission", _unreadable_series),
        _file_case("two-series-one-SeriesInstanceUID", "ok", "", _two_series_one_series_uid),
        _file_case("two-series-same-SOPInstanceUIDs", "warning", "SOPInstanceUID", _two_series_same_sop_uids),
        _file_case("header-claims-60000x60000x5000", "error", "exceeds", _huge_multiframe),
        _transfer_syntax_case("JPEG2000-declared-on-raw-bytes", JPEG2000, encapsulated=False),
        _transfer_syntax_case("JPEG2000-encapsulated-garbage", JPEG2000, encapsulated=True),
        _transfer_syntax_case("JPEG-baseline-encapsulated-garbage", JPEGBaseline8Bit, encapsulated=True),
        _transfer_syntax_case("RLE-encapsulated-garbage", RLELossless, encapsulated=True),
    ]


# -- points files -----------------------------------------------------------------------------------

#: The good moving points every points case is registered against (RAS mm, labelled A..E).
GOOD_POINTS = np.array([[0, 0, 0], [40, 0, 0], [0, 30, 0], [0, 0, 20], [25, 25, 25]], dtype=float)


def write_good_points(folder: Path) -> Path:
    """Write :data:`GOOD_POINTS` as ``good_points.csv`` (``x,y,z,label``) and return its path."""
    lines = ["x,y,z,label"] + [f"{x},{y},{z},{'ABCDE'[n]}" for n, (x, y, z) in enumerate(GOOD_POINTS)]
    (folder / "good_points.csv").write_text("\n".join(lines) + "\n")
    return folder / "good_points.csv"


def _points_case(name: str, expected: str, mentions: str, file_name: str, text: str) -> HostileCase:
    return HostileCase(f"points-{name}", "points", expected, _written(file_name, text.encode()), mentions)


def _points_lines(points, labels="ABCDE") -> str:
    return "x,y,z,label\n" + "".join(f"{x},{y},{z},{labels[n]}\n" for n, (x, y, z) in enumerate(points))


def _points_cases() -> list[HostileCase]:
    """Point lists that are empty, too short, non-numeric, non-finite, or disagree with the moving list."""
    shifted = GOOD_POINTS + [3.0, -2.0, 1.0]
    markups = {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                          "Resources/Schema/markups-schema-v1.0.3.json#",
               "markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "controlPoints": []}]}
    return [
        _points_case("empty-csv", "error", "no points", "empty.csv", ""),
        _points_case("header-only", "error", "no points", "header.csv", "x,y,z,label\n"),
        _points_case("comments-only", "error", "no points", "comments.csv", "# nothing\n# here\n"),
        _points_case("one-point", "error", "1", "one.csv", _points_lines(shifted[:1])),
        _points_case("two-points", "error", "2", "two.csv", _points_lines(shifted[:2])),
        _points_case("nan-coordinate", "error", "non-finite", "nan.csv", _points_lines(shifted).replace("3.0", "nan")),
        _points_case("inf-coordinate", "error", "non-finite", "inf.csv", _points_lines(shifted).replace("3.0", "inf")),
        _points_case("1e306-coordinates", "error", "huge.csv", "huge.csv", _points_lines(shifted * 1e306)),
        _points_case("text-in-numbers", "error", "three numbers", "text.csv",
                     _points_lines(shifted).replace("3.0", "three")),
        _points_case("two-columns", "error", "three numbers", "narrow.csv", "1,2\n3,4\n5,6\n"),
        _points_case("unknown-header", "error", "header", "header2.csv", "a,b,c\n1,2,3\n"),
        _points_case("more-points-than-moving", "error", "6", "more.csv",
                     _points_lines(np.vstack([shifted, [[9, 9, 9]]]), "ABCDEF")),
        _points_case("fewer-points-than-moving", "error", "4", "fewer.csv", _points_lines(shifted[:4])),
        _points_case("all-points-identical", "error", "", "same.csv", _points_lines(np.zeros((5, 3)))),
        _points_case("collinear-points", "error", "collinear", "line.csv",
                     _points_lines(np.outer(np.arange(5.0), [1, 2, 3]))),
        _points_case("binary-garbage", "error", "garbage.csv", "garbage.csv",
                     np.random.default_rng(SEED).bytes(300).decode("latin-1")),
        _points_case("mrk-json-not-json", "error", "notjson.mrk.json", "notjson.mrk.json", "{not json"),
        _points_case("mrk-json-no-points", "error", "no control points", "none.mrk.json", json.dumps(markups)),
        _points_case("fcsv-empty", "error", "empty.fcsv", "empty.fcsv", ""),
        *(_points_case(f"mrk-json-{what}", "error", "3 ('C') without a position", f"{what}.mrk.json",
                       json.dumps(_markups_with_third_point(markups, shifted, third)))
          for what, third in (("null-position", {"position": None}), ("missing-position", {}),
                              ("undefined-position-status", {"position": [1.0, 2.0, 3.0],
                                                             "positionStatus": "undefined"}))),
    ]


def _markups_with_third_point(markups: dict, points_ras: np.ndarray, third: dict) -> dict:
    """``markups`` holding ``points_ras`` (as LPS) labelled A.., the third control point replaced by ``third``."""
    points = [{"id": str(n + 1), "label": "ABCDE"[n], "position": [-x, -y, z], "positionStatus": "defined"}
              for n, (x, y, z) in enumerate(points_ras.tolist())]
    points[2] = {"id": "3", "label": "C", **third}
    return {**markups, "markups": [{**markups["markups"][0], "controlPoints": points}]}


# -- transform files ------------------------------------------------------------------------------


def _matrix_json(matrix) -> str:
    return json.dumps({"moving_to_fixed_ras": np.asarray(matrix, dtype=float).tolist(), "frame": "RAS"})


def _itk_tfm(transform_type: str, parameters, fixed_parameters) -> str:
    return ("#Insight Transform File V1.0\n#Transform 0\n"
            f"Transform: {transform_type}\n"
            f"Parameters: {' '.join(str(p) for p in parameters)}\n"
            f"FixedParameters: {' '.join(str(p) for p in fixed_parameters)}\n")


def _transform_case(name: str, expected: str, mentions: str, file_name: str, data: bytes | str) -> HostileCase:
    data = data.encode() if isinstance(data, str) else data
    return HostileCase(f"transform-{name}", "transform", expected, _written(file_name, data), mentions)


def _transform_cases() -> list[HostileCase]:
    """Transform files that are singular, non-finite, not affine, of unsupported type, or not transforms."""
    shear = np.eye(4)
    shear[3] = [0, 0, 1, 1]
    nan = np.eye(4)
    nan[0, 3] = np.nan
    far = np.eye(4)
    far[:3, 3] = 1e5
    identity12 = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    bspline = _itk_tfm("BSplineTransform_double_3_3", [0.0] * 3 * 64, [4, 4, 4] + [0, 0, 0] + [1, 1, 1]
                       + [1, 0, 0, 0, 1, 0, 0, 0, 1])
    return [
        _transform_case("json-singular", "error", "not affine", "zeros.json", _matrix_json(np.zeros((4, 4)))),
        _transform_case("json-rank-2", "error", "singular", "flat.json", _matrix_json(np.diag([1, 1, 0, 1]))),
        _transform_case("json-nan", "error", "finite", "nan.json", _matrix_json(nan)),
        _transform_case("json-last-row-not-affine", "error", "not affine", "projective.json", _matrix_json(shear)),
        _transform_case("json-3x3", "error", "4x4", "small.json", _matrix_json(np.eye(3))),
        _transform_case("json-not-json", "error", "JSON", "broken.json", "{moving_to_fixed_ras: "),
        _transform_case("json-empty", "error", "empty.json", "empty.json", ""),
        _transform_case("json-text-in-matrix", "error", "numeric", "words.json",
                        json.dumps({"moving_to_fixed_ras": [["a"] * 4] * 4})),
        _transform_case("mat4-three-rows", "error", "4 lines of 4 numbers", "short.mat4",
                        "1 0 0 0\n0 1 0 0\n0 0 1 0\n"),
        _transform_case("mat4-inf", "error", "finite", "inf.mat4", "1 0 0 inf\n0 1 0 0\n0 0 1 0\n0 0 0 1\n"),
        _transform_case("mat4-far-away", "warning", "overlap", "far.mat4",
                        "\n".join(" ".join(str(v) for v in row) for row in far) + "\n"),
        _transform_case("tfm-bspline", "error", "linear", "bspline.tfm", bspline),
        _transform_case("tfm-singular", "error", "singular", "singular.tfm",
                        _itk_tfm("AffineTransform_double_3_3", [0] * 12, [0, 0, 0])),
        _transform_case("tfm-nan", "error", "Slicer can read", "nan.tfm",
                        _itk_tfm("AffineTransform_double_3_3", ["nan"] + identity12[1:], [0, 0, 0])),
        _transform_case("tfm-unknown-type", "error", "unknown.tfm", "unknown.tfm",
                        _itk_tfm("WarpDriveTransform_double_3_3", identity12, [0, 0, 0])),
        _transform_case("tfm-too-few-parameters", "error", "short.tfm", "short.tfm",
                        _itk_tfm("AffineTransform_double_3_3", [1, 0, 0], [0, 0, 0])),
        _transform_case("tfm-empty", "error", "empty.tfm", "empty.tfm", ""),
        _transform_case("h5-garbage", "error", "garbage.h5", "garbage.h5", np.random.default_rng(SEED).bytes(2048)),
        _transform_case("h5-empty", "error", "empty.h5", "empty.h5", b""),
        _transform_case("h5-signature-then-garbage", "error", "fake.h5", "fake.h5",
                        b"\x89HDF\r\n\x1a\n" + np.random.default_rng(SEED + 1).bytes(1024)),
        _transform_case("unknown-suffix", "error", "unknown transform file type", "matrix.xyz", "1 0 0 0"),
        _transform_case("flirt-identity", "ok", "", "flirt.mat",
                        "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n"),
    ]


# -- volume files ---------------------------------------------------------------------------------


def write_good_volume(folder: Path) -> Path:
    """Write a small good NRRD volume (``good.nrrd``, 12 x 16 x 4 int16) and return its path."""
    values = np.arange(COLUMNS * ROWS * SLICES, dtype="<i2").reshape(SLICES, ROWS, COLUMNS)
    return _write_nrrd(folder / "good.nrrd", values, sizes=(COLUMNS, ROWS, SLICES))


def _nrrd_header(sizes, *, type_name: str = "short", kinds: str | None = None, spacings=None,
                 encoding: str = "raw") -> str:
    dimension = len(sizes)
    spatial = dimension if kinds is None else 3
    directions = spacings or [1.0] * spatial
    vectors = " ".join("(" + ",".join(str(directions[a] if b == a else 0.0) for b in range(3)) + ")"
                       for a in range(spatial))
    if kinds is not None:
        vectors = "none " + vectors if kinds.startswith(("vector", "RGB", "list", "4-")) else vectors + " none"
    return ("NRRD0004\n"
            f"type: {type_name}\ndimension: {dimension}\nspace: left-posterior-superior\n"
            f"sizes: {' '.join(str(s) for s in sizes)}\nspace directions: {vectors}\n"
            + (f"kinds: {kinds}\n" if kinds else "")
            + f"endian: little\nencoding: {encoding}\nspace origin: (0,0,0)\n\n")


def _write_nrrd(path: Path, values: np.ndarray, *, sizes, **header) -> Path:
    path.write_bytes(_nrrd_header(sizes, **header).encode() + np.ascontiguousarray(values).tobytes())
    return path


def _nifti_header(dims, *, pixdim=(1.0, 1.0, 1.0), datatype: int = 4, bitpix: int = 16,
                  sform: bool = False) -> bytes:
    """A NIfTI-1 single-file header (348 bytes + 4 extension bytes) for ``dims`` voxels of int16.

    With ``sform`` the header also holds an sform (code 1) scaling the axes by ``pixdim``.
    """
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    dim = [len(dims)] + list(dims) + [1] * (7 - len(dims))
    struct.pack_into("<8h", header, 40, *dim)
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, 1.0, *pixdim, *([1.0] * (7 - len(pixdim))))
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<h", header, 252, 1)  # qform_code scanner
    if sform:
        struct.pack_into("<h", header, 254, 1)
        for axis, size in enumerate(pixdim):
            struct.pack_into("<4f", header, 280 + 16 * axis, *[size if n == axis else 0.0 for n in range(4)])
    struct.pack_into("<4s", header, 344, b"n+1\x00")
    return bytes(header)


def _volume_case(name: str, expected: str, mentions: str, file_name: str, data: bytes) -> HostileCase:
    return HostileCase(f"volume-{name}", "volume", expected, _written(file_name, data), mentions)


def _volume_cases() -> list[HostileCase]:
    """Volume files that are empty, zero-sized, 4D, vector, mislabelled, truncated or claim huge sizes."""
    rng = np.random.default_rng(SEED)
    small = rng.integers(0, 1000, size=4 * 4 * 3).astype("<i2").tobytes()
    huge_sizes = (HUGE_SHAPE[1], HUGE_SHAPE[0], HUGE_SHAPE[2])
    nifti = _nifti_header((4, 4, 3)) + small
    return [
        _volume_case("nrrd-empty-file", "error", "empty.nrrd", "empty.nrrd", b""),
        _volume_case("nrrd-zero-sized", "error", "zero.nrrd", "zero.nrrd", _nrrd_header((0, 0, 0)).encode()),
        _volume_case("nrrd-header-claims-60000x60000x5000", "error", "exceeds", "huge.nrrd",
                     _nrrd_header(huge_sizes).encode() + small),
        _volume_case("nrrd-4d", "error", "4", "four_d.nrrd",
                     _nrrd_header((4, 4, 3, 2), kinds="domain domain domain list").encode() + small * 2),
        _volume_case("nrrd-rgb", "error", "rgb.nrrd", "rgb.nrrd",
                     _nrrd_header((3, 4, 4, 3), type_name="uchar", kinds="RGB-color domain domain domain").encode()
                     + bytes(range(144))),
        _volume_case("nrrd-vector", "error", "vector.nrrd", "vector.nrrd",
                     _nrrd_header((3, 4, 4, 3), kinds="vector domain domain domain").encode() + small * 3),
        _volume_case("nrrd-truncated-data", "error", "short.nrrd", "short.nrrd",
                     _nrrd_header((4, 4, 3)).encode() + small[:20]),
        _volume_case("nrrd-zero-spacing", "error", "flat.nrrd", "flat.nrrd",
                     _nrrd_header((4, 4, 3), spacings=[1.0, 1.0, 0.0]).encode() + small),
        _volume_case("nrrd-nan-spacing", "error", "nan.nrrd", "nan.nrrd",
                     _nrrd_header((4, 4, 3), spacings=[1.0, float("nan"), 1.0]).encode() + small),
        _volume_case("nrrd-text-garbage", "error", "words.nrrd", "words.nrrd", b"this is not a volume\n" * 10),
        _volume_case("nrrd-gzip-encoding-not-gzip", "ok", "", "gz.nrrd",
                     _nrrd_header((4, 4, 3), encoding="gzip").encode() + small),
        _volume_case("nii-gz-not-gzip", "ok", "", "plain.nii.gz", nifti),
        _volume_case("nrrd-gzip-header-claims-60000x60000x5000", "error", "exceeds", "huge_gzip.nrrd",
                     _nrrd_header(huge_sizes, encoding="gzip").encode() + gzip.compress(small)),
        _volume_case("nii-gz-garbage", "error", "garbage.nii.gz", "garbage.nii.gz", rng.bytes(600)),
        _volume_case("nii-empty", "error", "empty.nii", "empty.nii", b""),
        _volume_case("nii-truncated", "error", "short.nii", "short.nii", nifti[:-40]),
        _volume_case("nii-header-claims-huge", "error", "exceeds", "huge.nii",
                     _nifti_header((30000, 30000, 30000)) + small),
        _volume_case("nii-gz-header-claims-huge", "error", "exceeds", "huge.nii.gz",
                     gzip.compress(_nifti_header((30000, 30000, 30000)) + small)),
        _volume_case("nii-zero-pixdim", "error", "zeropix.nii", "zeropix.nii",
                     _nifti_header((4, 4, 3), pixdim=(1.0, 0.0, 1.0)) + small),
        _volume_case("mha-header-claims-huge", "error", "exceeds", "huge.mha",
                     (b"ObjectType = Image\nNDims = 3\nDimSize = 60000 60000 5000\nElementType = MET_SHORT\n"
                      b"ElementDataFile = LOCAL\n") + small),
        _volume_case("mha-empty", "error", "empty.mha", "empty.mha", b""),
        *(_volume_case(f"nii-pixdim-{text}", "error", error, f"pixdim_{text}.nii",
                       _nifti_header((4, 4, 3), pixdim=(1.0, size, 1.0)) + small)
          for text, size, error in (("1e-9", 1e-9, "outside 1e-06 .. 100000 mm"),
                                    ("1e9", 1e9, "outside 1e-06 .. 100000 mm"))),
        _volume_case("nii-sform-and-pixdim-minus-1", "error", "pixdim", "sform_minus_1.nii",
                     _nifti_header((4, 4, 3), pixdim=(1.0, -1.0, 1.0), sform=True) + small),
        *(_volume_case(f"nrrd-spacing-{text}", "error", "outside 1e-06 .. 100000 mm", f"spacing_{text}.nrrd",
                       _nrrd_header((4, 4, 3), spacings=[1.0, 1.0, size]).encode() + small)
          for text, size in (("1e-9", 1e-9), ("1e9", 1e9))),
    ]


# -- the corpus -----------------------------------------------------------------------------------


def all_cases() -> list[HostileCase]:
    """Every hostile case, DICOM first, with unique names (used as test ids)."""
    cases = _dicom_edit_cases() + _geometry_cases() + _dicom_file_cases() + _points_cases() + _transform_cases() + (
        _volume_cases())
    names = [case.name for case in cases]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise ValueError(f"hostile corpus: duplicate case names {sorted(duplicates)}")
    return cases


def build_case(case: HostileCase, folder: Path) -> Path:
    """Build ``case`` into a new folder ``folder`` (created) and return the input path."""
    folder.mkdir(parents=True, exist_ok=True)
    return case.build(folder)
