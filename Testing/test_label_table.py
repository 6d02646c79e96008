"""Label tables (AlignSeriesLib.label_table): CSV/TSV and Slicer colour tables, and their refusals."""

from __future__ import annotations

import json

import pytest

from AlignSeriesLib.errors import AlignSeriesError
from AlignSeriesLib.label_table import Code, read_label_table


def test_csv_with_header_codes_and_colours(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("value,name,category,type,colour\n"
                    "# a comment line\n"
                    "1,liver,SCT:123037004:Anatomical Structure,SCT:10200004:Liver,#dd8265\n"
                    "2,spleen,123037004,78961009,221 130 101\n"
                    "3,lesion\n"
                    "4,mass,49755003,4147007:Mass\n"
                    "0,background\n", encoding="utf-8")
    table = read_label_table(path)
    assert sorted(table.labels) == [1, 2, 3, 4]  # 0 is the background
    assert table.get(4).type == Code("4147007", "SCT", "Mass")
    assert table.get(4).category == Code("49755003", "SCT", "Morphologically Altered Structure")
    liver, spleen, lesion = table.get(1), table.get(2), table.get(3)
    assert liver.type == Code("10200004", "SCT", "Liver") and liver.color == (0xDD, 0x82, 0x65)
    assert spleen.category == Code("123037004", "SCT", "Anatomical Structure")  # meaning of a known category
    assert spleen.type == Code("78961009", "SCT", "spleen")  # meaning: the label's name
    assert spleen.color == (221, 130, 101)
    assert lesion.category is None and lesion.color is None
    assert table.name_of(3) == "lesion" and table.name_of(9) == "Segment 9"
    assert json.loads(table.to_json())["labels"][0]["type"]["meaning"] == "Liver"


def test_tsv_with_colour_only(tmp_path):
    path = tmp_path / "labels.tsv"
    path.write_text("1\tleft kidney\t10;20;30\n65535\tlast\t#000000\n", encoding="utf-8")
    table = read_label_table(path)
    assert table.get(1).name == "left kidney" and table.get(1).color == (10, 20, 30)
    assert table.get(65535).color == (0, 0, 0)


def test_slicer_colour_table(tmp_path):
    path = tmp_path / "GenericAnatomyColors.ctbl"
    path.write_text("# Color table file\n# 3 values\n0 background 0 0 0 0\n1 tissue 128 174 128 255\n"
                    "2 bone 241 214 145 255\n", encoding="utf-8")
    table = read_label_table(path)
    assert [(label.value, label.name, label.color) for label in table.labels.values()] == [
        (1, "tissue", (128, 174, 128)), (2, "bone", (241, 214, 145))]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("a.csv", "1.5,half\n", "not a whole number"),
    ("b.csv", "70000,big\n", "not a whole number in 0..65535"),
    ("c.csv", "1,\n", "expected 'value,name"),
    ("d.csv", "1,a\n1,b\n", "listed twice"),
    ("e.csv", "1,a,123037004\n", "both a category code and a type code"),
    ("f.csv", "1,a,#12345\n", "not #rrggbb"),
    ("g.csv", "1,a,300 0 0\n", "not #rrggbb or three numbers 0..255"),
    ("h.ctbl", "1 tissue 128\n", "Slicer colour table"),
    ("i.csv", "# nothing\n", "lists no labels"),
])
def test_bad_tables_are_refused_naming_the_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AlignSeriesError, match=message):
        read_label_table(path)


def test_missing_table_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="label table not found"):
        read_label_table(tmp_path / "absent.csv")


def test_preview_legend_names_the_labels_it_shows_in_their_colours():
    import numpy as np

    from AlignSeriesLib import preview
    from AlignSeriesLib.geometry import VolumeGeometry

    geometry = VolumeGeometry.from_spacing_origin_directions((20, 20, 20), spacing=(1, 1, 1), origin_ras=(0, 0, 0))
    reference = np.arange(8000, dtype=np.float32).reshape(20, 20, 20)
    labels = np.zeros((20, 20, 20), dtype=np.uint16)
    labels[5:15, 5:15, 5:15] = 2
    labels[0:2, 0:2, 0:2] = 7  # not in any pane through the centre: not named
    table = read_label_table_text("2,spleen\n7,far away\n")
    plain, _ = preview.fusion_picture(reference, labels, geometry, labelmap=True)
    named, _ = preview.fusion_picture(reference, labels, geometry, labelmap=True, label_names=table.name_of)
    assert named.shape[0] > plain.shape[0]
    np.testing.assert_array_equal(named[:plain.shape[0]], plain)
    legend = named[plain.shape[0]:]
    spleen, far = (preview.label_colored(np.array([v]))[0].astype(int) for v in (2, 7))
    colours = np.unique(legend.reshape(-1, 3), axis=0).astype(int)
    assert legend.any(), "the legend line is empty"
    assert np.any(np.abs(colours - spleen).max(axis=1) <= 8)  # "2 spleen" drawn in label 2's colour (anti-aliased)
    assert far[2] > 200 and spleen[2] < 100
    assert not np.any(colours[:, 2] > 100)  # label 7's colour is nowhere: it is in no pane, so not named


def read_label_table_text(text: str):
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp())
    (folder / "t.csv").write_text(text, encoding="utf-8")
    return read_label_table(folder / "t.csv")
