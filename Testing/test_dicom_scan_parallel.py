"""The header scan in a process pool gives exactly what the serial scan gives, and can be cancelled.

The pool is forced on small folders by lowering ``dicom_series.PARALLEL_MIN_FILES`` and the chunk size.
"""

from __future__ import annotations

import numpy as np
import pytest
from dicom_fixtures import ORIENTATIONS, stack_positions, write_phantom_series, write_series

from AlignSeriesLib.dicom import series as dicom_series
from AlignSeriesLib.errors import OperationCancelledError


@pytest.fixture
def mixed_folder(tmp_path):
    """Two series (one with a gap, one repeated at each position by echo), a non-DICOM file and an empty one."""
    write_phantom_series(tmp_path / "a", stack_positions((0.0, 0.0, 0.0), ORIENTATIONS["axial"],
                                                         [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]), rows=6, columns=5)
    positions = stack_positions((5.0, 1.0, -3.0), ORIENTATIONS["oblique"], np.arange(6) * 1.5)
    pixels = np.zeros((12, 4, 4), dtype=np.int16)
    write_series(tmp_path / "b", pixels, np.concatenate([positions, positions]), ORIENTATIONS["oblique"], (1.0, 1.0),
                 per_slice=[{"EchoNumbers": 1 + k // 6} for k in range(12)])
    (tmp_path / "b" / "notes.txt").write_text("not DICOM")
    (tmp_path / "b" / "empty").write_bytes(b"")
    return tmp_path


def scan_summary(result: dicom_series.ScanResult) -> list:
    """Everything a scan reports, in order, as plain values."""
    return [[volume.to_info_dict() for volume in result.volumes], result.skipped, result.registrations,
            [[s.sop_instance_uid for s in volume.slices] for volume in result.volumes]]


@pytest.fixture
def force_pool(monkeypatch):
    monkeypatch.setattr(dicom_series, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(dicom_series, "PARALLEL_CHUNK_FILES", 3)


def test_the_pool_is_used_only_from_the_threshold_on(monkeypatch):
    monkeypatch.setattr(dicom_series, "PARALLEL_MIN_FILES", 10)
    monkeypatch.setattr(dicom_series.os, "cpu_count", lambda: 4)
    assert dicom_series._pool_workers(9) == 1
    assert dicom_series._pool_workers(10) == 1  # one chunk of 64 files: no gain from a pool
    monkeypatch.setattr(dicom_series, "PARALLEL_CHUNK_FILES", 3)
    assert dicom_series._pool_workers(10) == 4
    assert dicom_series._pool_workers(6) == 1


def test_parallel_scan_gives_the_same_volumes_order_and_warnings_as_the_serial_one(mixed_folder, monkeypatch):
    serial = dicom_series.scan_dicom(mixed_folder)
    monkeypatch.setattr(dicom_series, "PARALLEL_MIN_FILES", 2)
    monkeypatch.setattr(dicom_series, "PARALLEL_CHUNK_FILES", 3)
    assert dicom_series._pool_workers(24) >= 2 or dicom_series.os.cpu_count() == 1
    parallel = dicom_series.scan_dicom(mixed_folder)

    assert scan_summary(parallel) == scan_summary(serial)
    assert len(serial.volumes) == 3 and len(serial.skipped) == 2
    assert {w.code for v in serial.volumes for w in v.warnings} >= {"missing_slices", "skipped_file"}
    for ours, theirs in zip(parallel.volumes, serial.volumes, strict=True):
        np.testing.assert_array_equal(ours.read_voxels(), theirs.read_voxels())


def test_parallel_scan_reports_progress_in_order_and_can_be_cancelled(mixed_folder, force_pool, monkeypatch):
    monkeypatch.setattr(dicom_series.os, "cpu_count", lambda: 2)
    fractions = []
    dicom_series.scan_dicom(mixed_folder, progress=lambda fraction: fractions.append(fraction) and False)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == -(-24 // 3)

    with pytest.raises(OperationCancelledError, match="cancelled after 6 of 24 files"):
        dicom_series.scan_dicom(mixed_folder, progress=lambda fraction: fraction >= 0.25)
