"""The Slicer module file on Slicer v5.12.3's real Python framework: parameter node, logic, self-test, panel.

``AlignSeries.py`` runs here on the real ``ScriptedLoadableModule.py`` and ``parameterNodeWrapper`` from
``../shared/slicer-framework/`` (skipped, with the reason, when it is absent), on real MRML (slicer-core), with
only the Qt application faked (``slicer_qt_fakes.py``). The panel is built from the real ``.ui`` file and bound
by the real GUI connectors; the tests drive it as a user does: choose in the widgets, type, click.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pydicom
import pytest
import slicer
import slicer_qt_fakes
import vtk
from conftest import MODULE_DIR, PROJECT_ROOT

if not slicer_qt_fakes.install():
    pytest.skip(f"Slicer's Python framework is not available: {slicer_qt_fakes.SHARED_FRAMEWORK} is absent "
                "(see DESIGN.md, 'Real parts, not stand-ins')", allow_module_level=True)

import AlignSeries  # noqa: E402  (needs qt, ctk and Slicer's framework installed first)
from AlignSeriesLib.dicom import pixels as dicom_pixels  # noqa: E402
from AlignSeriesLib.dicom import seg as dicom_seg

UI_FILE = MODULE_DIR / "Resources" / "UI" / "AlignSeries.ui"
MODULE_FILE = MODULE_DIR / "AlignSeries.py"
FOR_UID = "1.2.826.0.1.3680043.8.498.91"


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def app(scene):
    """The Slicer application around the test's scene (``slicer.app``, ``slicer.modules``), then headless again."""
    from AlignSeriesLib import mrml

    logics = {"volumes": mrml.module_logic(scene, "Volumes"), "markups": mrml.module_logic(scene, "Markups")}
    application = slicer_qt_fakes.start_application(MODULE_FILE, logics)
    yield application
    slicer_qt_fakes.stop_application()


class Panel:
    """The module panel as a user sees it: ``ui`` widgets of the current widget (it changes on Reload)."""

    def __init__(self, representation):
        self.representation = representation

    @property
    def widget(self):
        return self.representation.self

    @property
    def ui(self):
        return self.widget.ui

    @property
    def parameters(self):
        return self.widget._parameterNode

    @staticmethod
    def type_into(pathLineEdit, text):
        for character in text:
            pathLineEdit.lineEdit().insert(character)

    def load_dicom(self, folder):
        slicer_qt_fakes.QFileDialog.answers.append(str(folder))
        self.ui.loadDicomButton.click()


def enter_panel():
    """The module entered in the running application: descriptor, widget representation (setup), enter()."""
    module = slicer.modules.alignseries
    AlignSeries.AlignSeries(module)
    representation = module.widgetRepresentation()
    representation.enter()
    return representation


@pytest.fixture
def panel(app):
    """The module entered in the application."""
    representation = enter_panel()
    yield Panel(representation)
    if representation.isEntered:
        representation.exit()
    representation.self.cleanup()


def write_series(folder, shape, spacing, origin, frame_uid=FOR_UID, seed=0):
    """A small pydicom-written axial CT series; returns (folder, voxels k, j, i)."""
    from AlignSeriesLib import phantom
    from AlignSeriesLib.geometry import VolumeGeometry

    geometry = VolumeGeometry.from_spacing_origin_directions(shape, spacing, origin, np.diag([-1.0, -1.0, 1.0]))
    acquisition = phantom.Acquisition("CT", "CT", geometry, seed + 1, frame_uid, np.eye(4))
    voxels = phantom.acquire(acquisition)
    folder.mkdir()
    phantom.write_dicom_series(acquisition, voxels, folder, study_uid="1.2.826.0.1.3680043.8.498.92")
    return folder, voxels


@pytest.fixture
def two_series(tmp_path):
    fixed = write_series(tmp_path / "fixed", (24, 20, 12), (8.0, 9.0, 15.0), (80, 90, -80))
    moving = write_series(tmp_path / "moving", (16, 16, 8), (10.0, 10.0, 20.0), (70, 80, -70), seed=1)
    return fixed[0], moving[0]


@pytest.fixture
def loaded(panel, two_series):
    """The panel after loading the two DICOM folders (fixed, then moving)."""
    panel.load_dicom(two_series[0])
    panel.load_dicom(two_series[1])
    return panel


def to_parent(transform_node):
    return slicer.util.arrayFromTransformMatrix(transform_node)


# -- static checks of the .ui and the module file ------------------------------------------------


def ui_widgets() -> dict[str, ElementTree.Element]:
    return {w.get("name"): w for w in ElementTree.parse(UI_FILE).iter("widget")}


def ui_parameter_names() -> dict[str, str]:
    names = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names[name] = prop.find("string").text
    return names


def test_every_ui_reference_exists_in_the_ui_file():
    references = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    references |= set(AlignSeries.AlignSeriesWidget.PATH_FIELDS.values())
    missing = references - set(ui_widgets())
    assert not missing, f"AlignSeries.py uses widgets the .ui lacks: {sorted(missing)}"
    assert "noSuchWidget" in (references | {"noSuchWidget"}) - set(ui_widgets())  # the check can fail


def test_every_parameter_has_exactly_one_widget():
    """Each parameter is bound by SlicerParameterName, or is a path field (or a flag) the widget keeps itself."""
    widget = AlignSeries.AlignSeriesWidget
    bound = list(ui_parameter_names().values())
    own = set(widget.PATH_FIELDS) | set(widget.DERIVED_PARAMETERS)
    assert sorted(bound + sorted(own)) == sorted(AlignSeries.AlignSeriesParameterNode.allParameters)
    widgets = ui_widgets()
    for name in widget.PATH_FIELDS.values():
        assert widgets[name].get("class") == "ctkPathLineEdit" and name not in ui_parameter_names()


def test_every_mrml_widget_gets_the_scene():
    tree = ElementTree.parse(UI_FILE)
    receivers = {c.findtext("receiver") for c in tree.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    combos = {name for name, w in ui_widgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    assert combos and combos <= receivers, f"node selectors without the scene: {sorted(combos - receivers)}"


def test_module_file_imports_on_the_python_of_an_older_slicer():
    """No syntax newer than Python 3.9 (Slicer 5.8), so that an old Slicer can show the requirements message."""
    source = MODULE_FILE.read_text()
    ast.parse(source, feature_version=(3, 9))
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 9))
    tree = ast.parse(source)
    evaluated = [node.annotation for node in ast.walk(tree) if isinstance(node, ast.AnnAssign)]
    assert not [ast.unparse(a) for a in evaluated if "|" in ast.unparse(a)], "X | Y annotations need Python 3.10"


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


# -- Slicer's ExtensionsIndex checks (scripts/check_description_files.py), offline ---------------


def test_extension_catalog_entry_passes_the_extensions_index_schema():
    import jsonschema

    path = PROJECT_ROOT / "AlignSeries.json"
    entry = json.loads(path.read_text())
    schema = json.loads((Path(__file__).parent / "data" / "slicer-extension-catalog-entry-schema-v1.0.2.json")
                        .read_text())
    assert entry["$schema"].split("#")[0] == schema["$id"].split("#")[0]
    jsonschema.validate(entry, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**entry, "slicer_version": "5.12"}, schema)  # no field for a Slicer version
    assert b"\r" not in path.read_bytes(), "the index requires LF line endings"
    assert entry["category"] == "Registration"  # one of the index's ACCEPTED_EXTENSION_CATEGORIES
    assert not path.stem.lower().startswith("slicer")
    repository = entry["scm_url"].rstrip("/").split("/")[-1].removesuffix(".git")
    assert repository.startswith("Slicer") and entry["scm_url"].startswith("https://")


def test_top_level_cmake_and_license_pass_the_extensions_index_checks():
    cmake = (PROJECT_ROOT / "CMakeLists.txt").read_text()
    assert re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", cmake, re.IGNORECASE)[0] == "AlignSeries"
    icon = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', cmake)
    screenshots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', cmake)
    assert icon and screenshots
    for url in [icon[0], *screenshots[0].split()]:
        assert url.startswith("https://") and url.endswith(".png")
        assert (PROJECT_ROOT / url.split("/main/")[1]).is_file(), f"{url} names a file absent from the repository"
    license_text = (PROJECT_ROOT / "LICENSE").read_text()
    assert "Redistribution and use in source and binary forms" in license_text
    assert "Neither the name of the copyright holder" in license_text  # BSD-3-Clause, as pyproject.toml says
    assert 'license = { text = "BSD-3-Clause" }' in (PROJECT_ROOT / "pyproject.toml").read_text()


def test_extension_metadata_declares_slicer_5_12():
    cmake = (PROJECT_ROOT / "CMakeLists.txt").read_text()
    assert re.search(r'Slicer_VERSION VERSION_LESS "5\.12"', cmake), "CMake must refuse to build for Slicer < 5.12"
    assert "Slicer 5.12" in (PROJECT_ROOT / "README.md").read_text()
    entry = json.loads((MODULE_DIR.parent / "AlignSeries.json").read_text())
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE "([^"#]+)', cmake).group(1)
    assert entry["scm_url"].removesuffix(".git") == homepage.rstrip("/")
    assert f'set(EXTENSION_CATEGORY "{entry["category"]}")' in cmake


# -- versions -----------------------------------------------------------------------------------


def test_an_older_slicer_gets_one_clear_message(scene):
    """On Slicer 5.10 the panel shows which Slicer it needs and why, and builds nothing that would fail later."""
    slicer_qt_fakes.start_application(MODULE_FILE, {}, version=(5, 10, 1))
    try:
        module = slicer.modules.alignseries
        AlignSeries.AlignSeries(module)
        assert module.helpText.startswith("<p><b>AlignSeries needs 3D Slicer 5.12 or later")
        widget = module.widgetRepresentation().self
        message = widget.requirementsLabel.text
        assert "5.12" in message and "Slicer 5.10" in message and "pydicom 3" in message
        assert not hasattr(widget, "ui")
        widget.enter()  # switching to the module does not fail either
        with pytest.raises(RuntimeError, match="needs 3D Slicer 5.12"):
            AlignSeries.AlignSeriesLogic()
    finally:
        slicer_qt_fakes.stop_application()


def test_an_old_pydicom_is_named_in_the_message(app, monkeypatch):
    from importlib import metadata

    real_version = metadata.version
    assert AlignSeries.requirementsProblem() == ""
    monkeypatch.setattr(metadata, "version", lambda name: "2.4.4" if name == "pydicom" else real_version(name))
    assert "pydicom 2.4.4" in AlignSeries.requirementsProblem()


# -- parameter node and logic --------------------------------------------------------------------


def test_parameter_node_round_trips_every_field_through_a_real_scripted_module_node(scene):
    logic = AlignSeries.AlignSeriesLogic()
    parameters = logic.getParameterNode()
    assert parameters.parameterNode.IsA("vtkMRMLScriptedModuleNode")
    assert parameters.method == AlignSeries.Method.geometry
    assert parameters.interpolation == AlignSeries.Interpolation.linear
    assert parameters.exportFilePath == "" and parameters.pngFolder == ""  # never "." (pathlib.Path())
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "s")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "p")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "t")
    values = {"fixedVolume": volume, "movingVolume": volume, "fixedPoints": points, "movingPoints": points,
              "outputTransform": transform, "exportInputVolume": segmentation, "exportReferenceVolume": volume,
              "exportOutputVolume": volume, "method": AlignSeries.Method.landmarks,
              "geometryMode": AlignSeries.GeometryMode.moments, "landmarkMode": AlignSeries.LandmarkMode.affine,
              "interpolation": AlignSeries.Interpolation.cubic, "exportFilePath": "/data/new series/",
              "exportToDicomFolder": True, "cropToOverlap": True, "slabEnabled": True, "slabFirst": 3,
              "slabCount": 4, "pngFolder": "/data/png", "previewPath": "/data/preview.png",
              "landmarkMatch": AlignSeries.LandmarkMatch.labels, "replaceExisting": True,
              "dicomSeriesUid": "1.2.826.0.1.3680043.8.498.5"}
    for name, value in values.items():
        setattr(parameters, name, value)
    again = logic.getParameterNode()  # a new wrapper on the same singleton node
    assert again.parameterNode.GetID() == parameters.parameterNode.GetID()
    for name, value in values.items():
        stored = getattr(again, name)
        assert stored.GetID() == value.GetID() if hasattr(value, "GetID") else stored == value
    assert again.parameterNode.GetParameter("geometryMode") == "moments"
    assert again.exportFilePath.endswith("/"), "the trailing separator the user typed is kept"
    with pytest.raises(ValueError):
        again.slabCount = 0
    with pytest.raises(TypeError):
        again.exportInputVolume = points  # not a volume or segmentation


def test_logic_accepts_the_panel_enums_and_refuses_unknown_choices(scene):
    volume = AlignSeries.AlignSeriesTest()._addVolume(np.zeros((3, 3, 3)), np.eye(4), "v")
    other = AlignSeries.AlignSeriesTest()._addVolume(np.zeros((3, 3, 3)), np.diag([2.0, 2, 2, 1]), "w")
    logic = AlignSeries.AlignSeriesLogic()
    node = logic.computeGeometryTransform(volume, other, mode=AlignSeries.GeometryMode.centers)
    assert node.IsA("vtkMRMLLinearTransformNode")
    with pytest.raises(ValueError, match="mode must be one of"):
        logic.computeGeometryTransform(volume, other, mode="centres")
    with pytest.raises(ValueError, match="interpolation must be one of"):
        logic.exportResampledVolume(volume, other, interpolation="sinc")


def test_logic_refuses_the_reference_or_the_input_as_output(scene):
    test = AlignSeries.AlignSeriesTest()
    reference = test._addVolume(np.arange(27, dtype=np.int16).reshape(3, 3, 3), np.eye(4), "reference")
    volume = test._addVolume(np.ones((3, 3, 3), dtype=np.int16), np.eye(4), "input")
    logic = AlignSeries.AlignSeriesLogic()
    with pytest.raises(ValueError, match="is the reference volume"):
        logic.exportResampledVolume(volume, reference, outputVolume=reference)
    with pytest.raises(ValueError, match="must differ from the input"):
        logic.exportResampledVolume(volume, reference, outputVolume=volume)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(reference), np.arange(27).reshape(3, 3, 3))


def segmentation_from_labels(scene, labels, ijk_to_ras, name="segmentation"):
    labelmap = slicer.util.addVolumeFromArray(labels, ijk_to_ras, name + "_source",
                                              nodeClassName="vtkMRMLLabelMapVolumeNode")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    scene.RemoveNode(labelmap)
    return segmentation


def test_a_segmentation_is_exported_label_safe_with_each_segment_label_value(scene):
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[2:8, 2:8, 2:5] = 3
    labels[2:8, 2:8, 5:8] = 7
    segmentation = segmentation_from_labels(scene, labels, np.diag([2.0, 2.0, 2.0, 1.0]))
    reference = AlignSeries.AlignSeriesTest()._addVolume(
        np.zeros((15, 15, 15), dtype=np.int16),
        [[1.3, 0, 0, 0.7], [0, 1.3, 0, 0.7], [0, 0, 1.3, 0.7], [0, 0, 0, 1]], "reference")
    nodes_before = scene.GetNumberOfNodes()
    output = AlignSeries.AlignSeriesLogic().exportResampledVolume(segmentation, reference, interpolation="cubic")
    assert output.IsA("vtkMRMLLabelMapVolumeNode")
    array = slicer.util.arrayFromVolume(output)
    assert set(np.unique(array)) == {0, 3, 7}
    assert array[7, 7, 7] == 7 and array[4, 4, 4] == 3  # RAS 9.8 -> label voxel 4.9; RAS 5.9 -> 2.95
    assert scene.GetNumberOfNodes() == nodes_before + 2, "only the output and its display node are added"
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 2


def test_volumes_loaded_by_slicers_dicom_module_are_found_through_its_database(scene, tmp_path, monkeypatch):
    """Slicer's DICOM module keeps only the instance UIDs: the frame and files come from its database."""
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
    monkeypatch.setattr(slicer, "dicomDatabase", slicer_qt_fakes.DICOMDatabase(files), raising=False)
    assert mrml.frame_of_reference_uid(volume) == acquisition.frame_of_reference_uid
    assert mrml.dicom_series_of(volume).files == expected_files


# -- the self-test Slicer's ctest runs -----------------------------------------------------------


def _alignseries_test_names() -> list[str]:
    return sorted(name for name in dir(AlignSeries.AlignSeriesTest) if name.startswith("test_"))


@pytest.mark.parametrize("name", _alignseries_test_names())
def test_alignseries_self_test(app, name):
    """Each ``AlignSeriesTest.test_*`` in the application, on real MRML."""
    case = AlignSeries.AlignSeriesTest()
    case.setUp()
    getattr(case, name)()


def test_self_test_is_registered_and_runs_every_test(app, monkeypatch):
    called = []
    for name in _alignseries_test_names():
        monkeypatch.setattr(AlignSeries.AlignSeriesTest, name, lambda self, name=name: called.append(name))
    AlignSeries.AlignSeries(slicer.modules.alignseries)
    slicer.selfTests["AlignSeries"](msec=0)  # what Slicer's SelfTests module and ctest call
    assert called == _alignseries_test_names()


# -- the panel: user flows through the real GUI connectors ---------------------------------------


def test_panel_combo_boxes_show_friendly_labels_and_store_the_logic_choice(panel):
    combo = panel.ui.geometryModeComboBox
    assert [combo.itemText(i) for i in range(combo.count())] == ["Frame of reference", "Centers", "Intensity moments"]
    assert combo.currentText == "Frame of reference"
    combo.currentIndex = 2
    assert panel.parameters.geometryMode == AlignSeries.GeometryMode.moments
    assert panel.parameters.parameterNode.GetParameter("geometryMode") == "moments"
    panel.parameters.interpolation = AlignSeries.Interpolation.nearest
    assert panel.ui.interpolationComboBox.currentText == "Nearest neighbour"
    assert panel.ui.methodComboBox.currentText == "From geometry"


def test_panel_loads_two_dicom_folders_and_computes_applies_the_geometry_transform(loaded):
    p, ui = loaded.parameters, loaded.ui
    assert slicer_qt_fakes.QFileDialog.calls[-1][0] == "getExistingDirectory"
    assert p.fixedVolume.GetAttribute("DICOM.FrameOfReferenceUID") == FOR_UID
    assert ui.fixedVolumeSelector.currentNode().GetID() == p.fixedVolume.GetID()
    assert ui.movingVolumeSelector.currentNode().GetID() == p.movingVolume.GetID() != p.fixedVolume.GetID()
    assert "24x20x12 voxels" in ui.fixedSummaryLabel.text and "16x16x8 voxels" in ui.movingSummaryLabel.text
    assert p.exportReferenceVolume.GetID() == p.fixedVolume.GetID()
    assert p.exportInputVolume.GetID() == p.movingVolume.GetID()
    assert ui.statusLabel.text.startswith("Loaded 1 volume(s)")
    assert ui.computeButton.enabled
    ui.computeButton.click()
    transform = p.outputTransform
    np.testing.assert_allclose(to_parent(transform), np.eye(4), atol=1e-9)  # one frame of reference
    assert ui.outputTransformSelector.currentNode().GetID() == transform.GetID()
    assert ui.matrixTextEdit.plainText.splitlines()[0].split() == ["1.000000", "0.000000", "0.000000", "0.000000"]
    assert len(ui.voxelMappingTextEdit.plainText.splitlines()) == 4
    ui.geometryModeComboBox.currentIndex = 1  # Centers
    ui.computeButton.click()
    assert p.outputTransform.GetID() == transform.GetID(), "the selected transform is updated, not replaced"
    assert np.abs(to_parent(transform)[:3, 3]).max() > 1  # the two centers differ
    ui.applyTransformButton.click()
    assert p.movingVolume.GetParentTransformNode().GetID() == transform.GetID()


def test_panel_computes_landmarks_and_lists_residuals_with_both_labels(panel):
    scene = slicer.mrmlScene
    moving_points = np.array([[0, 0, 0], [40, 0, 0], [0, 30, 0], [0, 0, 20]], dtype=float)
    fixed_points = moving_points + [5.0, -3.0, 12.0]
    fixed = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "fixed points")
    moving = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "moving points")
    for n in range(4):
        fixed.AddControlPoint(vtk.vtkVector3d(*fixed_points[n]), f"F-{n + 1}")
        moving.AddControlPoint(vtk.vtkVector3d(*moving_points[n]), f"M-{n + 1}")
    ui = panel.ui
    ui.methodComboBox.currentIndex = 1
    assert ui.landmarksGroupBox.enabled and not ui.geometryModeComboBox.enabled
    ui.fixedPointsSelector.setCurrentNode(fixed)
    ui.movingPointsSelector.setCurrentNode(moving)
    assert ui.computeButton.enabled, ui.computeButton.toolTip
    ui.computeButton.click()
    np.testing.assert_allclose(to_parent(panel.parameters.outputTransform)[:3, 3], [5, -3, 12], atol=1e-9)
    table = ui.residualsTableWidget
    assert table.rowCount() == 4
    assert [(table.item(r, 0).text(), table.item(r, 1).text(), table.item(r, 2).text()) for r in (0, 3)] == [
        ("F-1", "M-1", "0.000"), ("F-4", "M-4", "0.000")]
    assert ui.errorLabel.text.startswith("RMS error: 0.000 mm")


def test_panel_path_field_starts_empty_and_typing_keeps_the_cursor_and_the_text(loaded, tmp_path):
    field = loaded.ui.exportFilePathLineEdit
    assert field.currentPath == "" and loaded.parameters.exportFilePath == ""
    typed = str(tmp_path / "out.nrrd")
    loaded.type_into(field, typed)
    assert loaded.parameters.exportFilePath == typed
    assert field.lineEdit().cursorPosition == len(typed)
    field.lineEdit().setCursorPosition(len(typed) - len("out.nrrd"))
    loaded.type_into(field, "ct_")  # an edit in the middle: the cursor stays where the user types
    assert field.currentPath == str(tmp_path / "ct_out.nrrd")
    assert field.lineEdit().cursorPosition == len(typed) - len("out.nrrd") + 3
    assert loaded.parameters.exportFilePath == str(tmp_path / "ct_out.nrrd")
    assert not loaded.parameters.exportToDicomFolder
    assert loaded.ui.exportPathKindLabel.text.startswith("Writes the file")


def test_panel_summaries_are_computed_once_per_node_version(loaded, monkeypatch, tmp_path):
    calls = []
    describe = loaded.widget.logic.describeVolume
    monkeypatch.setattr(loaded.widget.logic, "describeVolume", lambda node: calls.append(node) or describe(node))
    loaded.type_into(loaded.ui.exportFilePathLineEdit, str(tmp_path / "a_28_character_name.nii.gz"))
    assert calls == [], "typing re-described the volumes"
    loaded.parameters.fixedVolume.SetAttribute("DICOM.FrameOfReferenceUID", "1.2.3.4.5")
    loaded.parameters.Modified()
    assert len(calls) == 1 and "1.2.3.4.5" in loaded.ui.fixedSummaryLabel.text


def test_panel_exports_to_a_file(loaded, tmp_path):
    path = tmp_path / "moving_on_fixed.nrrd"
    loaded.type_into(loaded.ui.exportFilePathLineEdit, str(path))
    loaded.ui.exportButton.click()
    output = loaded.parameters.exportOutputVolume
    assert output is not None and loaded.ui.exportOutputSelector.currentNode().GetID() == output.GetID()
    assert path.is_file()
    assert loaded.ui.statusLabel.text == f"Exported {output.GetName()}; 1 file(s) written."
    assert slicer_qt_fakes.ctkMessageBox.shown == []
    assert slicer.app.overrideCursor() is None
    assert not loaded.ui.progressBar.visible and not loaded.ui.cancelButton.visible


@pytest.mark.parametrize("compress", [False, True])
def test_panel_export_compresses_the_file_only_when_ticked(loaded, tmp_path, compress):
    path = tmp_path / "moving_on_fixed.nrrd"
    loaded.type_into(loaded.ui.exportFilePathLineEdit, str(path))
    if compress:
        loaded.ui.compressOutputCheckBox.click()
    assert loaded.parameters.compressOutput is compress
    loaded.ui.exportButton.click()
    assert f"\nencoding: {'gzip' if compress else 'raw'}\n".encode() in path.read_bytes()[:1000]


@pytest.mark.parametrize("how", ["typed", "typed with separator", "folder button"])
def test_panel_exports_to_a_new_dicom_folder(loaded, tmp_path, how):
    folder = tmp_path / "new series.v2" if how == "folder button" else tmp_path / "new series"
    if how == "folder button":
        folder.mkdir()  # the folder dialog creates it; its name has a suffix, the button says it is a folder
        slicer_qt_fakes.QFileDialog.answers.append(str(folder))
        loaded.ui.exportFolderButton.click()
    else:
        loaded.type_into(loaded.ui.exportFilePathLineEdit, str(folder) + ("/" if how == "typed with separator" else ""))
    assert loaded.parameters.exportToDicomFolder
    assert "DICOM series into the folder" in loaded.ui.exportPathKindLabel.text
    loaded.ui.exportButton.click()
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 12, "one DICOM file per slice of the fixed (reference) series"
    first = pydicom.dcmread(files[0])
    assert str(first.FrameOfReferenceUID) == FOR_UID
    assert first.Rows == 20 and first.Columns == 24


def test_panel_browse_of_the_file_field_asks_for_a_file(loaded, tmp_path):
    slicer_qt_fakes.QFileDialog.answers.append(str(tmp_path / "chosen.nii.gz"))
    loaded.ui.exportFilePathLineEdit.browse()
    assert slicer_qt_fakes.QFileDialog.calls[-1][0] == "getSaveFileName"
    assert loaded.parameters.exportFilePath == str(tmp_path / "chosen.nii.gz")
    assert not loaded.parameters.exportToDicomFolder


def test_panel_exports_a_label_map_label_safe(loaded):
    p, ui = loaded.parameters, loaded.ui
    labels = np.zeros((8, 16, 16), dtype=np.uint8)
    labels[2:6, 4:12, 4:12] = 5
    moving_ijk_to_ras = vtk.vtkMatrix4x4()
    p.movingVolume.GetIJKToRASMatrix(moving_ijk_to_ras)
    labelmap = slicer.util.addVolumeFromArray(labels, slicer.util.arrayFromVTKMatrix(moving_ijk_to_ras), "mask",
                                              nodeClassName="vtkMRMLLabelMapVolumeNode")
    assert labelmap.GetID() in [n.GetID() for n in ui.exportInputSelector.nodes()]
    assert labelmap.GetID() not in [n.GetID() for n in ui.fixedVolumeSelector.nodes()]  # exact class only there
    ui.exportInputSelector.setCurrentNode(labelmap)
    assert p.exportInputVolume.GetID() == labelmap.GetID()
    ui.interpolationComboBox.currentIndex = 2  # Cubic: still label-safe
    ui.exportButton.click()
    output = p.exportOutputVolume
    assert output.IsA("vtkMRMLLabelMapVolumeNode")
    assert ui.exportOutputSelector.currentNode().GetID() == output.GetID(), "the label map output stays selected"
    assert set(np.unique(slicer.util.arrayFromVolume(output))) == {0, 5}


def test_panel_exports_a_segmentation(loaded):
    labels = np.zeros((8, 16, 16), dtype=np.uint8)
    labels[2:6, 4:8, 4:12] = 2
    labels[2:6, 8:12, 4:12] = 9
    ijk_to_ras = vtk.vtkMatrix4x4()
    loaded.parameters.movingVolume.GetIJKToRASMatrix(ijk_to_ras)
    segmentation = segmentation_from_labels(slicer.mrmlScene, labels, slicer.util.arrayFromVTKMatrix(ijk_to_ras))
    loaded.ui.exportInputSelector.setCurrentNode(segmentation)
    assert loaded.parameters.exportInputVolume.GetID() == segmentation.GetID()
    loaded.ui.exportButton.click()
    output = loaded.parameters.exportOutputVolume
    assert output.IsA("vtkMRMLLabelMapVolumeNode") and output.GetName() == "segmentation_resampled"
    assert set(np.unique(slicer.util.arrayFromVolume(output))) == {0, 2, 9}


def test_panel_writes_a_dicom_seg_of_a_segmentation_with_its_segment_names(loaded, tmp_path):
    from AlignSeriesLib import mrml, resample

    highdicom = pytest.importorskip("highdicom")
    p, ui = loaded.parameters, loaded.ui
    labels = np.zeros((8, 16, 16), dtype=np.uint8)
    labels[2:6, 4:8, 4:12] = 2
    labels[2:6, 8:12, 4:12] = 9
    ijk_to_ras = vtk.vtkMatrix4x4()
    p.movingVolume.GetIJKToRASMatrix(ijk_to_ras)
    segmentation = segmentation_from_labels(slicer.mrmlScene, labels, slicer.util.arrayFromVTKMatrix(ijk_to_ras))
    for index, name in enumerate(("kidney", "cyst")):
        segmentation.GetSegmentation().GetNthSegment(index).SetName(name)
    ui.exportInputSelector.setCurrentNode(segmentation)
    loaded.type_into(ui.segPathLineEdit, str(tmp_path / "panel.seg.dcm"))
    assert p.segPath == str(tmp_path / "panel.seg.dcm")
    ui.exportButton.click()
    assert ui.statusLabel.text.endswith("1 file(s) written."), ui.statusLabel.text
    seg = highdicom.seg.segread(tmp_path / "panel.seg.dcm")
    assert [item.SegmentLabel for item in seg.SegmentSequence] == ["kidney", "cyst"]
    output = slicer.util.arrayFromVolume(p.exportOutputVolume)
    series = mrml.dicom_series_of(p.exportReferenceVolume)
    planes = [seg.get_pixels_by_source_instance([uid], combine_segments=True, assert_missing_frames_are_empty=True)[0]
              for uid in series.sop_instance_uids]
    numbers = {1: 2, 2: 9}  # segments 1..N in BINARY, label values 2 and 9
    np.testing.assert_array_equal(np.vectorize(lambda n: numbers.get(int(n), 0))(np.stack(planes)), output)
    # the DICOM folder load brings the SEG found among the reference's files back as a label map, names kept
    folder = Path(series.files[0]).parent
    (tmp_path / "panel.seg.dcm").rename(folder / "panel.seg.dcm")
    nodes = loaded.widget.logic.loadDicomSeries(str(folder))
    assert [node.IsA("vtkMRMLLabelMapVolumeNode") for node in nodes] == [False, True]
    grid = mrml.volume_geometry(nodes[1])  # the SEG's frames span only the slices that hold a segment
    reference_grid = mrml.volume_geometry(p.exportReferenceVolume)
    first, count = int(round(reference_grid.world_to_ijk(grid.origin_ras)[2])), grid.dimensions[2]
    assert resample.slab(reference_grid, first, count).is_close(grid, atol=1e-4)
    segment_numbers = np.vectorize(lambda n: {2: 1, 9: 2}.get(int(n), 0))(output)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(nodes[1]), segment_numbers[first:first + count])
    assert np.count_nonzero(np.delete(segment_numbers, range(first, first + count), axis=0)) == 0
    names = json.loads(nodes[1].GetAttribute(mrml.LABEL_TABLE_ATTRIBUTE))["labels"]
    assert [entry["name"] for entry in names] == ["kidney", "cyst"]


def test_panel_refuses_the_reference_or_the_input_as_output(loaded):
    ui, p = loaded.ui, loaded.parameters
    assert ui.exportButton.enabled
    for node in (p.exportReferenceVolume, p.exportInputVolume):
        ui.exportOutputSelector.setCurrentNode(node)
        assert not ui.exportButton.enabled
        assert ui.exportButton.toolTip == "The output volume must be a new volume: never the input or the reference"
    ui.exportOutputSelector.setCurrentNode(None)
    assert ui.exportButton.enabled


def test_panel_export_advanced_options_slab_png_and_preview(loaded, tmp_path):
    ui, p = loaded.ui, loaded.parameters
    ui.slabCheckBox.click()
    ui.slabFirstSpinBox.value = 4
    ui.slabCountSpinBox.value = 3
    assert (p.slabEnabled, p.slabFirst, p.slabCount) == (True, 4, 3)
    loaded.type_into(ui.pngFolderPathLineEdit, str(tmp_path / "png"))
    loaded.type_into(ui.previewPathLineEdit, str(tmp_path / "preview.png"))
    loaded.type_into(ui.exportFilePathLineEdit, str(tmp_path / "slab"))
    ui.exportButton.click()
    assert slicer.util.arrayFromVolume(p.exportOutputVolume).shape == (3, 20, 24)
    assert len(list((tmp_path / "slab").glob("*.dcm"))) == 3
    assert len(list((tmp_path / "png").glob("*.png"))) == 3
    assert (tmp_path / "preview.png").is_file()
    assert ui.statusLabel.text.endswith("8 file(s) written.")  # 3 DICOM, 3 PNG, index.csv, preview


def test_panel_crop_to_overlap(loaded):
    loaded.ui.cropToOverlapCheckBox.click()
    assert loaded.parameters.cropToOverlap
    loaded.ui.exportButton.click()
    shape = slicer.util.arrayFromVolume(loaded.parameters.exportOutputVolume).shape
    assert shape != (12, 20, 24) and all(n >= 1 for n in shape)


def test_panel_cancel_ends_quietly_with_a_status_message(loaded, tmp_path):
    path = tmp_path / "cancelled.nrrd"
    loaded.type_into(loaded.ui.exportFilePathLineEdit, str(path))
    volumes_before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    slicer.app.pendingUserActions.append(loaded.ui.cancelButton.click)
    loaded.ui.exportButton.click()
    assert loaded.ui.statusLabel.text == "Cancelled: nothing was written."
    assert slicer.util.mainWindow().statusBar().currentMessage() == "Cancelled: nothing was written."
    assert slicer_qt_fakes.ctkMessageBox.shown == []
    assert not path.exists() and loaded.parameters.exportOutputVolume is None
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes_before
    assert loaded.ui.exportButton.enabled and slicer.app.overrideCursor() is None


def test_panel_buttons_are_disabled_while_a_job_runs_and_a_double_click_exports_once(loaded, monkeypatch):
    calls, states = [], []
    export = loaded.widget.logic.exportResampledVolumeResult
    monkeypatch.setattr(loaded.widget.logic, "exportResampledVolumeResult",
                        lambda *args, **kwargs: calls.append(args) or export(*args, **kwargs))
    ui = loaded.ui

    def second_click():
        states.append((ui.exportButton.enabled, ui.computeButton.enabled, ui.loadDicomButton.enabled,
                       ui.cancelButton.visible))
        ui.exportButton.click()

    slicer.app.pendingUserActions.append(second_click)
    ui.exportButton.click()
    assert states == [(False, False, False, True)]
    assert len(calls) == 1, "the second click started a nested export"
    assert ui.exportButton.enabled and slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 3


def test_panel_error_is_shown_once_and_the_panel_recovers(loaded, tmp_path):
    existing = tmp_path / "exists.nrrd"
    existing.write_bytes(b"not to be overwritten")
    loaded.type_into(loaded.ui.exportFilePathLineEdit, str(existing))
    with pytest.raises(ValueError, match="exists"):
        loaded.ui.exportButton.click()  # PythonQt prints what a slot raises; the user sees the message box
    assert len(slicer_qt_fakes.ctkMessageBox.shown) == 1
    assert slicer_qt_fakes.ctkMessageBox.shown[0].startswith("Failed to export the resampled volume.")
    assert existing.read_bytes() == b"not to be overwritten"
    assert loaded.ui.exportButton.enabled and slicer.app.overrideCursor() is None


def test_panel_follows_a_scene_close(loaded):
    old = loaded.parameters
    slicer.mrmlScene.Clear(0)
    p = loaded.parameters
    assert p is not None and p is not old, "a new wrapper after the close"
    assert p.fixedVolume is None and loaded.ui.fixedVolumeSelector.currentNode() is None
    assert loaded.ui.fixedSummaryLabel.text == "" and not loaded.ui.computeButton.enabled
    loaded.ui.geometryModeComboBox.currentIndex = 1
    assert p.geometryMode == AlignSeries.GeometryMode.centers, "the panel is bound to the new parameter node"


def test_panel_module_switch_leaves_no_observer_warning_and_unbinds_while_away(panel):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        panel.representation.exit()
        panel.ui.geometryModeComboBox.currentIndex = 2  # while the module is not shown
        panel.representation.enter()
        panel.representation.exit()
        panel.representation.enter()
    assert [str(w.message) for w in caught] == []
    assert panel.parameters.geometryMode == AlignSeries.GeometryMode.frameOfReference
    assert panel.ui.geometryModeComboBox.currentIndex == 0, "entering shows the parameter node's value"


@pytest.fixture
def restore_reloaded_modules():
    """Reload replaces AlignSeries and AlignSeriesLib in sys.modules: put the test session's back afterwards."""
    saved = {name: module for name, module in sys.modules.items()
             if name == "AlignSeries" or name.split(".")[0] == "AlignSeriesLib"}
    yield
    for name in [name for name in sys.modules if name == "AlignSeries" or name.split(".")[0] == "AlignSeriesLib"]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_panel_reload_disconnects_the_old_panel(loaded, restore_reloaded_modules):
    old_widget, old_ui = loaded.widget, loaded.ui
    parameters = old_widget._parameterNode
    old_ui.geometryModeComboBox.currentIndex = 1
    old_widget.onReload()
    new_widget = loaded.widget
    assert new_widget is not old_widget and slicer.modules.AlignSeriesWidget is new_widget
    assert type(new_widget).__module__ == "AlignSeries" and sys.modules["AlignSeries"] is not AlignSeries
    assert old_widget._parameterNode is None
    new_parameters = new_widget._parameterNode
    assert new_parameters.parameterNode.GetID() == parameters.parameterNode.GetID()
    assert new_widget.ui.geometryModeComboBox.currentText == "Centers"
    old_ui.geometryModeComboBox.currentIndex = 2  # the hidden old panel writes nothing
    assert new_parameters.parameterNode.GetParameter("geometryMode") == "centers"
    new_widget.ui.geometryModeComboBox.currentIndex = 0
    assert old_ui.geometryModeComboBox.currentIndex == 2, "the parameter node no longer writes the old widgets"
    assert os.path.samefile(sys.modules["AlignSeries"].__file__, MODULE_FILE)


# -- optional packages installed on first need -----------------------------------------------------


class _PackageManager:
    """Records what the module asks of Slicer's ``slicer.pydeps`` (5.11+: ``load_requirements``, ``pip_ensure``)."""

    def __init__(self, install):
        self.install, self.ensured = install, []

    @staticmethod
    def load_requirements(path):
        lines = Path(path).read_text().splitlines()
        return [line.strip() for line in lines if line.strip() and not line.startswith("#")]

    def pip_ensure(self, requirements, requester=None):
        self.ensured.append((list(requirements), requester))
        self.install()


def _write_real_mosaic(path: Path) -> None:
    """A real Siemens MOSAIC (48 tiles of 128x128), one of the two nibabel ships."""
    import gzip

    import nibabel

    source = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / "siemens_dwi_0.dcm.gz"
    path.write_bytes(gzip.decompress(source.read_bytes()))


def test_a_mosaic_without_nibabel_installs_it_from_the_module_requirements_then_loads(app, tmp_path, monkeypatch):
    from AlignSeriesLib.dicom import mosaic as dicom_mosaic

    _write_real_mosaic(tmp_path / "mosaic.dcm")
    available = {"nibabel": False}
    monkeypatch.setattr(dicom_mosaic, "nibabel_available", lambda: available["nibabel"])
    manager = _PackageManager(lambda: available.update(nibabel=True))
    monkeypatch.setattr(slicer, "pydeps", manager, raising=False)
    nodes = AlignSeries.AlignSeriesLogic().loadDicomSeries(str(tmp_path))
    assert manager.ensured == [(["nibabel>=5.4", *dicom_pixels.DECODER_REQUIREMENTS, dicom_seg.HIGHDICOM_REQUIREMENT],
                                "AlignSeries")]
    assert [node.GetImageData().GetDimensions() for node in nodes] == [(128, 128, 48)]


def test_a_compressed_mosaic_without_decoders_installs_them_from_the_module_requirements_then_loads(
        app, tmp_path, monkeypatch):
    _write_real_mosaic(tmp_path / "plain.dcm")
    dataset = pydicom.dcmread(tmp_path / "plain.dcm")
    dataset.PixelData = (np.frombuffer(dataset.PixelData, "<u2") & 0x0FFF).tobytes()  # within BitsStored
    dataset.compress(pydicom.uid.JPEGLSLossless)  # Slicer's own reader cannot cut MOSAIC tiles
    (tmp_path / "plain.dcm").unlink()
    dataset.save_as(tmp_path / "mosaic.dcm", enforce_file_format=True)
    decoder = pydicom.pixels.get_decoder(pydicom.uid.JPEGLSLossless)
    plugins = dict(decoder._available)
    monkeypatch.setattr(decoder, "_available", {})  # as in a Slicer without pydicom's decoder plugins
    manager = _PackageManager(lambda: decoder._available.update(plugins))
    monkeypatch.setattr(slicer, "pydeps", manager, raising=False)

    nodes = AlignSeries.AlignSeriesLogic().loadDicomSeries(str(tmp_path))

    assert manager.ensured == [(["nibabel>=5.4", *dicom_pixels.DECODER_REQUIREMENTS, dicom_seg.HIGHDICOM_REQUIREMENT],
                                "AlignSeries")]
    assert [node.GetImageData().GetDimensions() for node in nodes] == [(128, 128, 48)]


def test_without_slicer_package_manager_the_missing_package_is_named(scene, tmp_path, monkeypatch):
    from AlignSeriesLib.dicom import mosaic as dicom_mosaic
    from AlignSeriesLib.errors import MissingDependencyError

    _write_real_mosaic(tmp_path / "mosaic.dcm")
    monkeypatch.setattr(dicom_mosaic, "nibabel_available", lambda: False)
    with pytest.raises(MissingDependencyError, match="nibabel"):
        AlignSeries.AlignSeriesLogic().loadDicomSeries(str(tmp_path))


def test_panel_refine_checkbox_refines_with_progress_and_cancel_leaves_no_transform(loaded):
    """"Refine by image intensity": the compute runs with the progress bar; Cancel leaves no transform behind."""
    ui, p = loaded.ui, loaded.parameters
    ui.geometryModeComboBox.currentIndex = 1  # Centers
    ui.refineCheckBox.click()
    assert p.refineByIntensity
    transforms_before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLLinearTransformNode")
    slicer.app.pendingUserActions.append(ui.cancelButton.click)
    ui.computeButton.click()
    assert ui.statusLabel.text == "Cancelled: nothing was written."
    assert p.outputTransform is None
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLLinearTransformNode") == transforms_before
    assert slicer_qt_fakes.ctkMessageBox.shown == []
