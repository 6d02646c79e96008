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


# -- inputs are never outputs ----------------------------------------------------------------------


def test_an_output_touching_an_input_is_refused_however_it_is_spelled(tmp_path):
    from AlignSeriesLib.files import check_outputs_spare_inputs

    series = tmp_path / "series"
    series.mkdir()
    (series / "IM1").write_bytes(b"slice")
    volume = tmp_path / "ct.nrrd"
    volume.write_bytes(b"voxels")
    os.link(volume, tmp_path / "hard.nrrd")
    (tmp_path / "soft").symlink_to(series)
    refused = {tmp_path / "ct.nrrd": "is the input", tmp_path / "hard.nrrd": "is the input",
               tmp_path / "series" / ".." / "ct.nrrd": "is the input", series / "new" / "out.nrrd": "lies inside",
               tmp_path / "soft" / "out.nrrd": "lies inside", tmp_path: "is a folder holding"}

    for output, relation in refused.items():
        with pytest.raises(AlignSeriesError, match=f"output .* {relation} "):
            check_outputs_spare_inputs([volume, series], [None, output])
    check_outputs_spare_inputs([volume, series], [tmp_path / "ct2.nrrd", tmp_path / "series2" / "x", None])


def test_a_dicom_file_protects_its_folder_and_other_inputs_themselves(tmp_path):
    from AlignSeriesLib.files import protected_places

    (tmp_path / "series").mkdir()
    assert protected_places([tmp_path / "series" / "IM1", tmp_path / "series" / "IM2", tmp_path / "ct.nii.gz",
                             tmp_path / "t.h5", tmp_path / "p.mrk.json", None, tmp_path / "series"]) == [
        tmp_path / "series", tmp_path / "ct.nii.gz", tmp_path / "t.h5", tmp_path / "p.mrk.json"]


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 0.0), (1.0, 1e-9, 1.0), (1e9, 1.0, 1.0), (1.0, float("nan"), 1.0),
                                     (-1.0, 1.0, 1.0), (1.0, float("inf"), 1.0)])
def test_absurd_voxel_spacings_are_refused_with_the_range(spacing):
    from AlignSeriesLib.volume_headers import check_voxel_spacing

    with pytest.raises(AlignSeriesError, match=r"v.nrrd: voxel spacing .* is outside 1e-06 \.\. 100000 mm"):
        check_voxel_spacing("v.nrrd", spacing)
    check_voxel_spacing("v.nrrd", (1e-6, 0.5, 1e5))


def test_a_temporary_names_its_output(tmp_path):
    from AlignSeriesLib.files import destination_of, temporary_beside

    once = temporary_beside(tmp_path / "out.nii.gz", ".partial.nii.gz")
    twice = temporary_beside(once, ".partial")
    assert once.name.startswith(".out.nii.gz.alignseries-") and once.parent == tmp_path
    assert destination_of(once) == destination_of(twice) == tmp_path / "out.nii.gz"
    assert destination_of(tmp_path / "plain.nrrd") == tmp_path / "plain.nrrd"
