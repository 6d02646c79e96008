"""Tests of AlignSeriesLib.files: input checks and atomic, non-clobbering outputs."""

from __future__ import annotations

import os
import stat

import pytest

from AlignSeriesLib.errors import AlignSeriesError, OutputExistsError
from AlignSeriesLib.files import atomic_output, check_input_file, check_output_path, write_text_atomic


class WriterFailedError(RuntimeError):
    """Raised by the tests to simulate a writer that fails half-way."""


def leftovers(folder, keep=()):
    """Names in ``folder`` other than ``keep`` (e.g. temporary files a failed write left)."""
    return sorted(name for name in os.listdir(folder) if name not in keep)


# -- atomic_output ---------------------------------------------------------------------------------


def test_atomic_output_writes_file(tmp_path):
    target = tmp_path / "out.json"
    with atomic_output(target) as temporary:
        assert temporary != target
        assert temporary.parent == target.parent
        temporary.write_text("{}")
    assert target.read_text() == "{}"
    assert leftovers(tmp_path) == ["out.json"]


def test_atomic_output_target_absent_until_success(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_output(target) as temporary:
        temporary.write_text("data")
        assert not target.exists()
    assert target.exists()


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("volume.nii.gz", ".nii.gz"), ("volume.nrrd", ".nrrd"), ("transform.h5", ".h5"), ("a.b.c.tfm", ".tfm")],
)
def test_atomic_output_temporary_keeps_suffix(tmp_path, name, suffix):
    with atomic_output(tmp_path / name) as temporary:
        assert temporary.name.endswith(suffix)
        assert temporary.name.startswith(".")  # hidden while incomplete
        temporary.write_text("x")


def test_atomic_output_leaves_no_partial_file_on_exception(tmp_path):
    target = tmp_path / "out.nrrd"
    with pytest.raises(WriterFailedError), atomic_output(target) as temporary:
        temporary.write_bytes(b"half a header")
        raise WriterFailedError("disk full")
    assert leftovers(tmp_path) == []


def test_atomic_output_failed_overwrite_keeps_original(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("original")
    with pytest.raises(WriterFailedError), atomic_output(target, force=True) as temporary:
        temporary.write_text("new, incomplete")
        raise WriterFailedError("interrupted")
    assert target.read_text() == "original"
    assert leftovers(tmp_path) == ["out.txt"]


def test_atomic_output_refuses_existing_file_without_force(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("original")
    with pytest.raises(OutputExistsError, match="output exists, not overwritten") as raised, atomic_output(target):
        pytest.fail("the body must not run")
    assert str(target) in str(raised.value)
    assert target.read_text() == "original"
    assert leftovers(tmp_path) == ["out.txt"]


def test_output_exists_error_is_file_exists_and_value_error():
    assert issubclass(OutputExistsError, FileExistsError)
    assert issubclass(OutputExistsError, ValueError)


def test_atomic_output_overwrites_with_force(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("original")
    with atomic_output(target, force=True) as temporary:
        temporary.write_text("replacement")
    assert target.read_text() == "replacement"
    assert leftovers(tmp_path) == ["out.txt"]


@pytest.mark.parametrize("content", [None, ""], ids=["nothing", "empty"])
def test_atomic_output_refuses_empty_result(tmp_path, content):
    target = tmp_path / "out.txt"
    with pytest.raises(AlignSeriesError, match="nothing was written"), atomic_output(target) as temporary:
        if content is not None:
            temporary.write_text(content)
    assert leftovers(tmp_path) == []


def test_atomic_output_missing_folder(tmp_path):
    target = tmp_path / "no-such-folder" / "out.txt"
    with pytest.raises(AlignSeriesError, match="output folder does not exist") as raised, atomic_output(target):
        pytest.fail("the body must not run")
    assert "no-such-folder" in str(raised.value)
    assert not (tmp_path / "no-such-folder").exists()


def test_atomic_output_folder_is_a_file(tmp_path):
    (tmp_path / "plain-file").write_text("not a folder")
    with pytest.raises(AlignSeriesError, match="plain-file") as raised, atomic_output(tmp_path / "plain-file" / "out"):
        pytest.fail("the body must not run")
    assert "not a folder" in str(raised.value)
    assert (tmp_path / "plain-file").read_text() == "not a folder"


def test_atomic_output_refuses_folder_as_target(tmp_path):
    (tmp_path / "results").mkdir()
    with pytest.raises(AlignSeriesError, match="output is an existing folder"), atomic_output(tmp_path / "results"):
        pytest.fail("the body must not run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder; covered by the cases above")
def test_atomic_output_unwritable_folder(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(AlignSeriesError, match="output folder is not writable"), atomic_output(folder / "out"):
            pytest.fail("the body must not run")
    finally:
        folder.chmod(stat.S_IRWXU)


def test_check_output_path_accepts_new_file_in_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(check_output_path("out.txt")) == "out.txt"


def test_write_text_atomic_round_trip(tmp_path):
    target = write_text_atomic(tmp_path / "note.txt", "héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    with pytest.raises(OutputExistsError):
        write_text_atomic(target, "again")
    write_text_atomic(target, "again", force=True)
    assert target.read_text(encoding="utf-8") == "again"


# -- check_input_file -------------------------------------------------------------------------------


def test_check_input_file_returns_path(tmp_path):
    source = tmp_path / "in.nrrd"
    source.write_bytes(b"NRRD0004")
    assert check_input_file(str(source)) == source


def test_check_input_file_missing_names_file_and_role(tmp_path):
    with pytest.raises(FileNotFoundError, match="moving volume not found") as raised:
        check_input_file(tmp_path / "absent.nrrd", "moving volume")
    assert "absent.nrrd" in str(raised.value)


def test_check_input_file_refuses_folder(tmp_path):
    with pytest.raises(AlignSeriesError, match="is a folder, expected a file"):
        check_input_file(tmp_path, "transform file")


def test_check_input_file_under_a_file(tmp_path):
    (tmp_path / "plain-file").write_text("x")
    with pytest.raises(FileNotFoundError, match="not found"):
        check_input_file(tmp_path / "plain-file" / "in.nrrd")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file without read permission")
def test_check_input_file_unreadable(tmp_path):
    source = tmp_path / "secret.nrrd"
    source.write_text("x")
    source.chmod(0)
    try:
        with pytest.raises(AlignSeriesError, match="is not readable"):
            check_input_file(source)
    finally:
        source.chmod(stat.S_IRUSR | stat.S_IWUSR)
