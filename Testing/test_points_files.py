"""Point files: CSV in the core, Slicer markups through Slicer's storage nodes, frames honoured."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from AlignSeriesLib import mrml_files
from AlignSeriesLib.errors import LandmarkError, OutputExistsError
from AlignSeriesLib.points_files import read_points_csv, write_points_csv

POINTS_RAS = np.array([[10.5, -20.25, 30.0], [-1.0, 2.0, -3.0], [100.125, 0.0, 7.75]])
LABELS = ["nasion", "left ear", "right ear"]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- CSV -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected_labels", [
    ("10.5,-20.25,30\n-1,2,-3\n100.125,0,7.75\n", ["", "", ""]),
    ("x,y,z,label\n10.5,-20.25,30,nasion\n-1,2,-3,left ear\n100.125,0,7.75,right ear\n", LABELS),
    ("label,z,y,x\nnasion,30,-20.25,10.5\nleft ear,-3,2,-1\nright ear,7.75,0,100.125\n", LABELS),
    ("# exported by a tool\n\n10.5, -20.25, 30, nasion\n-1,2,-3,left ear\n100.125,0,7.75,right ear\n", LABELS),
])
def test_csv_points_are_ras_by_default(tmp_path, text, expected_labels):
    path = tmp_path / "points.csv"
    path.write_text(text)
    points = read_points_csv(path)
    np.testing.assert_array_equal(points.points_ras, POINTS_RAS)
    assert points.labels == expected_labels and points.source_frame == "RAS"


@pytest.mark.parametrize("text", [
    "# coordinateSystem = LPS\n-10.5,20.25,30\n1,-2,-3\n-100.125,0,7.75\n",
    "l,p,s\n-10.5,20.25,30\n1,-2,-3\n-100.125,0,7.75\n",
])
def test_csv_points_declared_lps_are_converted_to_ras(tmp_path, text):
    path = tmp_path / "points.csv"
    path.write_text(text)
    points = read_points_csv(path)
    np.testing.assert_array_equal(points.points_ras, POINTS_RAS)
    assert points.source_frame == "LPS"


def test_csv_round_trip(tmp_path):
    path = write_points_csv(tmp_path / "points.csv", POINTS_RAS, LABELS)
    points = read_points_csv(path)
    np.testing.assert_array_equal(points.points_ras, POINTS_RAS)
    assert points.labels == LABELS


@pytest.mark.parametrize("text, message", [
    ("", "no points"),
    ("# only a comment\n", "no points"),
    ("1,2\n", "does not hold three numbers"),
    ("1,2,three\n", "does not hold three numbers"),
    ("1,2,nan\n", "non-finite"),
    ("a,b,c\n1,2,3\n", "does not name x,y,z"),
])
def test_bad_csv_gives_a_clear_error_and_stays_unchanged(tmp_path, text, message):
    path = tmp_path / "points.csv"
    path.write_text(text)
    before = digest(path)
    with pytest.raises(LandmarkError, match=message):
        read_points_csv(path)
    assert digest(path) == before


def test_csv_is_not_overwritten_without_force(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("precious")
    with pytest.raises(OutputExistsError):
        write_points_csv(path, POINTS_RAS)
    assert path.read_text() == "precious"


# -- Slicer markups --------------------------------------------------------------------------------


@pytest.mark.parametrize("name, coordinate_system", [
    ("points.mrk.json", "LPS"), ("points.mrk.json", "RAS"), ("points.fcsv", "LPS"), ("points.csv", "RAS"),
])
def test_points_round_trip_through_slicer_storage_nodes(scene, tmp_path, name, coordinate_system):
    path = mrml_files.save_points_file(scene, tmp_path / name, POINTS_RAS, LABELS, coordinate_system=coordinate_system)
    points, labels = mrml_files.load_points_file(scene, path)
    np.testing.assert_allclose(points, POINTS_RAS, atol=1e-9)
    assert labels == LABELS
    assert scene.GetNodesByClass("vtkMRMLMarkupsFiducialNode").GetNumberOfItems() == 0


def test_markups_json_written_in_lps_holds_lps_numbers(scene, tmp_path):
    path = mrml_files.save_points_file(scene, tmp_path / "points.mrk.json", POINTS_RAS, LABELS)
    markups = json.loads(path.read_text())["markups"][0]
    assert markups["coordinateSystem"] == "LPS"
    np.testing.assert_allclose([p["position"] for p in markups["controlPoints"]], POINTS_RAS * [-1, -1, 1])


def hand_written_markups(positions, coordinate_system=None) -> dict:
    markup = {"type": "Fiducial", "controlPoints": [
        {"id": str(n + 1), "label": f"P{n + 1}", "position": list(map(float, p))} for n, p in enumerate(positions)]}
    if coordinate_system:
        markup["coordinateSystem"] = coordinate_system
    return {"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                       "Resources/Schema/markups-schema-v1.0.3.json#", "markups": [markup]}


@pytest.mark.parametrize("coordinate_system, stored", [
    ("LPS", POINTS_RAS * [-1, -1, 1]), ("RAS", POINTS_RAS), (None, POINTS_RAS * [-1, -1, 1]),
])
def test_hand_written_markups_json_honours_its_coordinate_system(scene, tmp_path, coordinate_system, stored):
    path = tmp_path / "hand.mrk.json"
    path.write_text(json.dumps(hand_written_markups(stored, coordinate_system)))
    points, labels = mrml_files.load_points_file(scene, path)
    np.testing.assert_allclose(points, POINTS_RAS, atol=1e-9)
    assert labels == ["P1", "P2", "P3"]


def test_bad_markups_files_give_clear_errors_and_stay_unchanged(scene, tmp_path):
    empty = tmp_path / "empty.mrk.json"
    empty.write_text(json.dumps(hand_written_markups([])))
    garbage = tmp_path / "garbage.mrk.json"
    garbage.write_text("{ not json")
    for path, message in ((empty, "no control points"), (garbage, "could not read")):
        before = digest(path)
        with pytest.raises(LandmarkError, match=message):
            mrml_files.load_points_file(scene, path)
        assert digest(path) == before
    with pytest.raises(FileNotFoundError):
        mrml_files.load_points_file(scene, tmp_path / "absent.fcsv")
