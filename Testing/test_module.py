"""The Slicer module file: its self-test on real MRML, its panel checked against the .ui, its packaging.

``AlignSeries.py`` needs Slicer's application framework, which slicer-core lacks; the small stand-in
in ``slicer_framework_standin.py`` supplies it (and nothing of MRML).
"""

from __future__ import annotations

import ast
import pathlib
import re
import xml.etree.ElementTree as ElementTree

import pytest
import slicer_framework_standin
from conftest import MODULE_DIR

slicer_framework_standin.install()

import AlignSeries  # noqa: E402  (needs the stand-in installed first)

UI_FILE = MODULE_DIR / "Resources" / "UI" / "AlignSeries.ui"
MODULE_FILE = MODULE_DIR / "AlignSeries.py"


def ui_widgets() -> dict[str, ElementTree.Element]:
    """Every named widget of the .ui file."""
    tree = ElementTree.parse(UI_FILE)
    return {w.get("name"): w for w in tree.iter("widget")}


def ui_parameter_names() -> dict[str, str]:
    """SlicerParameterName of each bound widget, by widget name."""
    names = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names[name] = prop.find("string").text
    return names


def widget_references() -> set[str]:
    """Every ``self.ui.X`` the module source uses."""
    return set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))


def parameter_fields() -> set[str]:
    return set(AlignSeries.AlignSeriesParameterNode.allParameters)


def test_every_ui_reference_exists_in_the_ui_file():
    missing = widget_references() - set(ui_widgets())
    assert not missing, f"AlignSeries.py uses widgets the .ui lacks: {sorted(missing)}"


def test_every_bound_widget_names_a_parameter():
    unknown = set(ui_parameter_names().values()) - parameter_fields()
    assert not unknown, f"SlicerParameterName values with no parameter: {sorted(unknown)}"


def test_every_parameter_is_bound_to_one_widget():
    bound = list(ui_parameter_names().values())
    assert sorted(bound) == sorted(parameter_fields()), "each parameter needs exactly one widget in the .ui"


def test_every_mrml_widget_gets_the_scene():
    tree = ElementTree.parse(UI_FILE)
    receivers = {c.findtext("receiver") for c in tree.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    combos = {name for name, w in ui_widgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    assert combos and combos <= receivers, f"node selectors without the scene: {sorted(combos - receivers)}"


def test_the_static_checks_can_fail(tmp_path, monkeypatch):
    """The reference check above would catch a widget missing from the .ui (negative test)."""
    source = MODULE_FILE.read_text() + "\nself.ui.noSuchWidget\n"
    assert "noSuchWidget" in set(re.findall(r"self\.ui\.(\w+)", source)) - set(ui_widgets())


def test_cmake_lists_every_library_script_and_resource():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = sorted(p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "AlignSeriesLib").glob("*.py"))
    missing = [s for s in scripts if s not in cmake]
    assert not missing, f"AlignSeries/CMakeLists.txt does not list {missing}: Slicer would not install them"
    listed = re.findall(r"AlignSeriesLib/\w+\.py", cmake)
    assert sorted(set(listed)) == scripts, "CMakeLists.txt lists library scripts that do not exist"
    for resource in ("Resources/Icons/AlignSeries.png", "Resources/UI/AlignSeries.ui"):
        assert resource.replace("AlignSeries", "${MODULE_NAME}", 1) in cmake or resource in cmake


def test_module_file_uses_slicer_camel_case_for_logic_methods():
    tree = ast.parse(MODULE_FILE.read_text())
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AlignSeriesLogic")
    public = [f.name for f in logic.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")]
    assert public and all("_" not in name for name in public), public


def test_parameter_node_round_trips_every_field_through_a_real_scripted_module_node(scene):
    logic = AlignSeries.AlignSeriesLogic()
    parameters = logic.getParameterNode()
    assert parameters.parameterNode.IsA("vtkMRMLScriptedModuleNode")
    assert parameters.method == "geometry" and parameters.interpolation == "linear"
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "p")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "t")
    values = {"fixedVolume": volume, "movingVolume": volume, "fixedPoints": points, "movingPoints": points,
              "outputTransform": transform, "exportInputVolume": volume, "exportReferenceVolume": volume,
              "exportOutputVolume": volume, "method": "landmarks", "geometryMode": "moments",
              "landmarkMode": "affine", "interpolation": "cubic", "exportFilePath": pathlib.Path("/data/out.nii.gz")}
    for name, value in values.items():
        setattr(parameters, name, value)
    again = logic.getParameterNode()  # a new wrapper on the same singleton node
    assert again.parameterNode.GetID() == parameters.parameterNode.GetID()
    for name, value in values.items():
        stored = getattr(again, name)
        assert stored.GetID() == value.GetID() if hasattr(value, "GetID") else stored == value
    with pytest.raises(ValueError, match="not one of"):
        again.interpolation = "sinc"


def _alignseries_test_names() -> list[str]:
    return sorted(name for name in dir(AlignSeries.AlignSeriesTest) if name.startswith("test_"))


@pytest.mark.parametrize("name", _alignseries_test_names())
def test_alignseries_self_test(scene, name):
    """Each ``AlignSeriesTest.test_*`` (the self-test Slicer's ctest runs) on real MRML."""
    case = AlignSeries.AlignSeriesTest()
    case.setUp()
    getattr(case, name)()


def test_alignseries_run_test_runs_every_test(scene, monkeypatch):
    called = []
    for name in _alignseries_test_names():
        monkeypatch.setattr(AlignSeries.AlignSeriesTest, name, lambda self, name=name: called.append(name))
    AlignSeries.AlignSeriesTest().runTest()
    assert called == _alignseries_test_names()


def test_extension_catalog_entry_matches_the_cmake_metadata():
    import json

    entry = json.loads((MODULE_DIR.parent / "AlignSeries.json").read_text())
    cmake = (MODULE_DIR.parent / "CMakeLists.txt").read_text()
    assert {"$schema", "category", "scm_url"} <= set(entry), "the catalog schema requires these keys"
    assert f'set(EXTENSION_CATEGORY "{entry["category"]}")' in cmake
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE "([^"#]+)', cmake).group(1)
    assert entry["scm_url"].removesuffix(".git") == homepage.rstrip("/")
    for url in re.findall(r'set\(EXTENSION_(?:ICONURL|SCREENSHOTURLS) "[^"]+/main/([^"]+)"\)', cmake):
        assert (MODULE_DIR.parent / url).is_file(), f"the extension metadata names {url}, absent from the repository"


def test_volumes_loaded_by_slicers_dicom_module_are_found_through_its_database(scene, tmp_path, monkeypatch):
    """Slicer's DICOM module keeps only the instance UIDs: the frame and files come from its database."""
    import numpy as np
    import slicer

    from AlignSeriesLib import mrml, operations, phantom

    acquisition = phantom.ct_acquisition()
    files = phantom.write_dicom_series(acquisition, np.zeros(acquisition.geometry.shape, np.int16), tmp_path,
                                       study_uid="1.2.826.0.1.3680043.8.498.7")
    loaded, = operations.load_volumes(scene, tmp_path)
    expected_files = mrml.dicom_series_of(loaded).files
    # what Slicer's own DICOM plugin leaves on its node: DICOM.instanceUIDs only
    uids = loaded.GetAttribute(mrml.INSTANCE_UIDS_ATTRIBUTE)
    volume = mrml.add_volume_node(scene, mrml.volume_array(loaded), mrml.volume_geometry(loaded), "bySlicer",
                                  attributes={mrml.INSTANCE_UIDS_ATTRIBUTE: uids})
    assert mrml.frame_of_reference_uid(volume) is None and mrml.dicom_series_of(volume) is None
    monkeypatch.setattr(slicer, "dicomDatabase", slicer_framework_standin.DicomDatabaseStandIn(files), raising=False)
    assert mrml.frame_of_reference_uid(volume) == acquisition.frame_of_reference_uid
    assert mrml.dicom_series_of(volume).files == expected_files
