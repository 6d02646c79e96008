"""A seeded header fuzzer over the real DICOM series in ../shared/data/dicom.

A few files of each series are copied to a temporary folder; each case mutates one copy (bytes
flipped inside one element's value, or the element deleted; pixel data left alone), writes it back
with pydicom and runs the scanner and the MRML loader on the copies. Every case must end in a
result or in one clear line (an ``AlignSeriesError`` or ``OSError``), never another exception or a
hang, and must leave the files unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED_DICOM, real_series_names
from test_hostile_inputs import time_limit

from AlignSeriesLib import operations
from AlignSeriesLib.dicom import series as dicom_series
from AlignSeriesLib.errors import AlignSeriesError

SEED = 1618
#: Cases in all, spread over the real series; files copied from each series.
TOTAL_CASES = 150
FILES_PER_SERIES = 3
#: Largest file copied (bytes): keeps the fuzzer within its time budget.
MAX_FILE_BYTES = 2_000_000
TIMEOUT_SECONDS = 30

#: Elements the reconstruction depends on: half the mutations hit one of these.
GEOMETRY_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
                     "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel", "RescaleSlope",
                     "RescaleIntercept", "NumberOfFrames", "SeriesInstanceUID", "SOPInstanceUID",
                     "FrameOfReferenceUID", "SliceThickness", "SpacingBetweenSlices", "InstanceNumber",
                     "ImageType", "SeriesDescription", "SOPClassUID", "PerFrameFunctionalGroupsSequence",
                     "SharedFunctionalGroupsSequence")


def series_files(name: str) -> list[Path]:
    """Up to FILES_PER_SERIES files of a real series, evenly spread, small enough for the budget."""
    files = sorted(p for p in (SHARED_DICOM / name / "dicom").rglob("*")
                   if p.is_file() and p.stat().st_size <= MAX_FILE_BYTES)
    picks = np.linspace(0, len(files) - 1, min(FILES_PER_SERIES, len(files))).round().astype(int) if files else []
    return [files[i] for i in sorted(set(picks))]


def fuzz_cases() -> list[tuple[str, int]]:
    """(series name, case seed) pairs, TOTAL_CASES spread evenly over the real series."""
    names = real_series_names()
    if not names:
        return []
    return [(names[n % len(names)], SEED + n) for n in range(TOTAL_CASES)]


def mutate(path: Path, rng: np.random.Generator) -> str:
    """Flip bytes inside one element's value in the file, or delete the element; returns what was done.

    Flipped bytes stay inside the value (its length is kept), so the file stays parseable and the
    damage is exactly one value. Deletions are written by pydicom. Pixel data is never touched.
    """
    dataset = pydicom.dcmread(path)
    raw = [(d, e) for d, e in _raw_elements(dataset) if e.tag != 0x7FE00010 and e.length not in (0, 0xFFFFFFFF)]
    geometry = [(d, e) for d, e in raw if pydicom.datadict.keyword_for_tag(e.tag) in GEOMETRY_KEYWORDS]
    pool = geometry if geometry and rng.random() < 0.5 else raw
    owner, element = pool[rng.integers(len(pool))]
    name = pydicom.datadict.keyword_for_tag(element.tag) or str(element.tag)
    if rng.random() < 0.3:
        del owner[element.tag]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset.save_as(path, enforce_file_format=False)
        return f"deleted {name}"
    data = bytearray(path.read_bytes())
    for offset in rng.integers(0, element.length, size=rng.integers(1, 4)):
        data[element.value_tell + offset] = int(rng.integers(0, 256))
    path.write_bytes(bytes(data))
    return f"flipped bytes of {name} {element.value[:40]!r}"


def _raw_elements(dataset: pydicom.Dataset):
    """(owning dataset, RawDataElement) of every not yet decoded element, sequence items included."""
    for tag in list(dataset.keys()):
        element = dataset.get_item(tag)
        if isinstance(element, pydicom.dataelem.RawDataElement) and element.VR != "SQ" and element.value_tell:
            yield dataset, element
        elif dataset[tag].VR == "SQ":
            for item in dataset[tag].value:
                yield from _raw_elements(item)


def fingerprints(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize("series_name, seed", fuzz_cases() or [pytest.param(None, None, marks=pytest.mark.skip(
    reason=f"real DICOM data not available: {SHARED_DICOM} is absent"))], ids=str)
def test_scanner_and_loader_survive_a_mutated_header(series_name, seed, tmp_path, scene, caplog):
    folder = tmp_path / "series"
    folder.mkdir()
    for path in series_files(series_name):
        shutil.copy(path, folder / path.name)
    rng = np.random.default_rng(seed)
    target = sorted(folder.iterdir())[rng.integers(len(list(folder.iterdir())))]
    what = mutate(target, rng)
    before = fingerprints(folder)

    with time_limit(TIMEOUT_SECONDS), caplog.at_level(logging.ERROR), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dicom_series.scan_dicom(folder)
            operations.load_volumes(scene, folder)
        except (AlignSeriesError, OSError) as error:
            message = str(error)
            assert message.strip() and "\n" not in message.strip(), f"{what}: {message!r}"
        except Exception as error:  # noqa: BLE001 - the point: anything else is a bug
            pytest.fail(f"{target.name} {what}: {type(error).__name__}: {error}")

    assert fingerprints(folder) == before
