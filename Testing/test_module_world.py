"""The panel exports what the views show: every transform applied exactly once, parent transforms kept.

Driven as a user drives the panel, on Slicer v5.12.3's real framework and real MRML (see ``test_module.py``):
a moving volume under a chain of linear transforms, computed from geometry or landmarks, exported before and
after "Apply", compared with an independent resampling (scipy) through the composed world transform; path
fields that can be emptied (the fake copies CTK's validator); slabs into one DICOM series; exports that leave
the scene as it was when they fail; defaults the selectors can show; messages that name the panel's controls.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import slicer
import slicer_qt_fakes
import vtk
from scipy import ndimage
from test_module import AlignSeries, app, enter_panel, loaded, panel, two_series  # noqa: F401  (fixtures)

#: T0 of the issue: a manual pre-alignment of the moving volume, 5 degrees about S and (-8, 6, -15) mm.
T0_DEGREES, T0_SHIFT = 5.0, (-8.0, 6.0, -15.0)


def rotation(axis: int, degrees: float, shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A 4x4 RAS rotation about axis 0 (R), 1 (A) or 2 (S), then a shift (mm)."""
    angle = np.deg2rad(degrees)
    first, second = [a for a in range(3) if a != axis]
    matrix = np.eye(4)
    matrix[[first, first, second, second], [first, second, first, second]] = [
        np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)]
    matrix[:3, 3] = shift
    return matrix


def add_transform(name, matrix, parent=None):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    slicer.util.updateTransformMatrixFromArray(node, matrix)
    if parent is not None:
        node.SetAndObserveTransformNodeID(parent.GetID())
    return node


def to_parent(transform_node) -> np.ndarray:
    return slicer.util.arrayFromTransformMatrix(transform_node)


def ijk_to_ras(volume) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def center_ras(volume, to_world=None) -> np.ndarray:
    to_world = np.eye(4) if to_world is None else to_world
    dimensions = np.array(volume.GetImageData().GetDimensions())
    return (to_world @ ijk_to_ras(volume) @ [*((dimensions - 1) / 2), 1])[:3]


def put_under_chain(volume):
    """The moving volume under T0, itself under a second manual transform: returns (T0, the upper one)."""
    upper = add_transform("T_upper", rotation(0, -3.0, (2.0, -1.0, 4.0)))
    t0 = add_transform("T0", rotation(2, T0_DEGREES, T0_SHIFT), parent=upper)
    volume.SetAndObserveTransformNodeID(t0.GetID())
    return t0, upper


def independent_resampling(moving, fixed, moving_to_fixed_world):
    """The moving voxels at each fixed voxel through a world transform (scipy, linear), and where all 8
    neighbours exist."""
    fixed_ijk_to_moving_ijk = np.linalg.inv(moving_to_fixed_world @ ijk_to_ras(moving)) @ ijk_to_ras(fixed)
    shape_kji = slicer.util.arrayFromVolume(fixed).shape
    k, j, i = np.indices(shape_kji).reshape(3, -1)
    mapped = (fixed_ijk_to_moving_ijk @ np.stack([i, j, k, np.ones_like(i)]))[:3]
    voxels = slicer.util.arrayFromVolume(moving).astype(float)
    values = ndimage.map_coordinates(voxels, mapped[::-1], order=1, mode="constant", cval=voxels.min())
    limits = np.array(voxels.shape[::-1])[:, None] - 1
    inside = np.all((mapped > 1e-6) & (mapped < limits - 1e-6), axis=0)
    return values.reshape(shape_kji), inside.reshape(shape_kji)


def export_new(ui):
    """Export into a new output volume (the earlier output is kept); returns the new output's voxels."""
    ui.exportOutputSelector.setCurrentNode(None)
    ui.exportButton.click()
    return slicer.util.arrayFromVolume(ui.exportOutputSelector.currentNode()).astype(float)


def add_points(name, points, labels):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for point, label in zip(points, labels, strict=True):
        node.AddControlPoint(vtk.vtkVector3d(*point), label)
    return node


#: Landmarks in the moving volume's own coordinates (RAS mm, inside its grid), and the fixed volume's
#: truth: the same anatomy, displayed (through the moving chain) then moved by this rigid transform.
MOVING_LOCAL_POINTS = np.array([[-90, -95, -60], [-150, -100, 30], [-100, -200, 60], [-170, -180, -40],
                                [-120, -130, 10]], dtype=float)
DISPLAYED_TO_FIXED = rotation(1, 10.0, (3.0, -4.0, 5.0))


def set_up_landmarks(ui, moving, labels=("a", "b", "c", "d", "e"), fixed_order=(0, 1, 2, 3, 4)):
    """Point lists clicked where the views show the anatomy (the fixed ones in ``fixed_order``, labels alike);
    returns the moving points as displayed and the fixed points in moving order."""
    to_world = slicer.util.arrayFromTransformMatrix(moving.GetParentTransformNode(), toWorld=True) \
        if moving.GetParentTransformNode() else np.eye(4)
    displayed = MOVING_LOCAL_POINTS @ to_world[:3, :3].T + to_world[:3, 3]
    fixed = displayed @ DISPLAYED_TO_FIXED[:3, :3].T + DISPLAYED_TO_FIXED[:3, 3]
    ui.methodComboBox.currentIndex = 1
    order = list(fixed_order)
    ui.fixedPointsSelector.setCurrentNode(add_points("fixed points", fixed[order], [labels[n] for n in order]))
    ui.movingPointsSelector.setCurrentNode(add_points("moving points", displayed, labels))
    return displayed, fixed


# -- finding 1: a transform applied twice after Apply ---------------------------------------------


def test_export_after_apply_applies_the_output_transform_once(loaded):
    ui = loaded.ui
    ui.geometryModeComboBox.currentIndex = 1  # Centers
    ui.computeButton.click()
    before = export_new(ui)
    ui.applyTransformButton.click()
    assert loaded.parameters.outputTransform is not None, "the output transform stays selected"
    after = export_new(ui)
    assert np.abs(after - before).max() == 0


# -- finding 2: a parent transform dropped or ignored ----------------------------------------------


def test_apply_keeps_the_moving_volumes_own_transforms_and_landmarks_land_on_the_fixed_points(loaded):
    p, ui = loaded.parameters, loaded.ui
    t0, upper = put_under_chain(p.movingVolume)
    displayed, fixed = set_up_landmarks(ui, p.movingVolume)
    ui.computeButton.click()
    np.testing.assert_allclose(to_parent(p.outputTransform), DISPLAYED_TO_FIXED, atol=1e-9)
    ui.applyTransformButton.click()
    assert p.movingVolume.GetParentTransformNode().GetID() == t0.GetID(), "T0 was replaced"
    assert t0.GetParentTransformNode().GetID() == upper.GetID()
    assert upper.GetParentTransformNode().GetID() == p.outputTransform.GetID()
    assert ui.statusLabel.text.endswith("T0 \u2192 T_upper \u2192 LandmarkTransform.")
    moving_to_world = slicer.util.arrayFromTransformMatrix(t0, toWorld=True)
    landed = MOVING_LOCAL_POINTS @ moving_to_world[:3, :3].T + moving_to_world[:3, 3]
    assert np.linalg.norm(landed - fixed, axis=1).max() < 1e-6  # the MR's landmarks on the CT's
    ui.applyTransformButton.click()  # applying again changes nothing
    assert upper.GetParentTransformNode().GetID() == p.outputTransform.GetID()
    assert p.outputTransform.GetParentTransformNode() is None


@pytest.mark.parametrize("mode", [1, 2])  # Centers, Intensity moments
def test_centers_and_moments_are_computed_where_the_views_show_the_volumes(loaded, mode):
    p, ui = loaded.parameters, loaded.ui
    t0, _ = put_under_chain(p.movingVolume)
    ui.geometryModeComboBox.currentIndex = mode
    ui.computeButton.click()
    moving_to_world = slicer.util.arrayFromTransformMatrix(t0, toWorld=True)
    matrix = to_parent(p.outputTransform)
    np.testing.assert_allclose(matrix[:3, :3], np.eye(3), atol=1e-12)  # a translation in world coordinates
    if mode == 1:  # the moving volume's displayed center goes onto the fixed volume's
        np.testing.assert_allclose((matrix @ [*center_ras(p.movingVolume, moving_to_world), 1])[:3],
                                   center_ras(p.fixedVolume), atol=1e-9)
    else:  # its displayed intensity centroid (numpy, above the background) goes onto the fixed volume's
        def centroid(volume, to_world):
            voxels = slicer.util.arrayFromVolume(volume).astype(float)
            low, high = np.percentile(voxels, [5, 99])  # background and foreground, as DESIGN's moments mode
            weights = np.clip(voxels - (low + 0.1 * (high - low)), 0.0, None)
            k, j, i = np.indices(voxels.shape)
            ijk = np.array([(axis * weights).sum() / weights.sum() for axis in (i, j, k)])
            return (to_world @ ijk_to_ras(volume) @ [*ijk, 1])[:3]
        np.testing.assert_allclose((matrix @ [*centroid(p.movingVolume, moving_to_world), 1])[:3],
                                   centroid(p.fixedVolume, np.eye(4)), atol=1e-6)


# -- the round trip: before Apply == after Apply == scipy through the composed world chain --------


@pytest.mark.parametrize("method", ["frameOfReference", "centers", "moments", "landmarks"])
def test_export_before_and_after_apply_equals_resampling_through_the_world_chain(loaded, method):
    p, ui = loaded.parameters, loaded.ui
    t0, _ = put_under_chain(p.movingVolume)
    if method == "landmarks":
        set_up_landmarks(ui, p.movingVolume)
    else:
        ui.geometryModeComboBox.currentIndex = ["frameOfReference", "centers", "moments"].index(method)
    ui.computeButton.click()
    before = export_new(ui)
    composed = to_parent(p.outputTransform) @ slicer.util.arrayFromTransformMatrix(t0, toWorld=True)
    truth, inside = independent_resampling(p.movingVolume, p.fixedVolume, composed)
    ui.applyTransformButton.click()
    after = export_new(ui)
    assert inside.sum() > 200, "the check must cover many voxels"
    assert np.abs(after - before).max() <= 1  # rounding of linear interpolation to integers
    assert np.abs(before - np.round(truth))[inside].max() <= 1
    if method == "frameOfReference":  # one frame: the moving volume goes back where its headers put it
        np.testing.assert_allclose(composed, np.eye(4), atol=1e-9)


# -- finding 3: path fields that can be emptied ----------------------------------------------------


def test_the_fake_path_field_copies_ctks_validator():
    field = slicer_qt_fakes.ctkPathLineEdit()
    changed, valid = [], []
    field.currentPathChanged.connect(changed.append)
    field.validInputChanged.connect(valid.append)
    field.lineEdit().insert("p")
    field.lineEdit().backspace()
    assert changed == ["p"] and valid == [True, False], "an empty field is Intermediate: no currentPathChanged"
    assert field.currentPath == "" and not field.lineEdit().hasAcceptableInput()


def test_emptied_path_fields_mean_no_output(loaded, tmp_path, monkeypatch):
    working = tmp_path / "working directory"
    working.mkdir()
    monkeypatch.chdir(working)
    ui, p = loaded.ui, loaded.parameters
    loaded.type_into(ui.pngFolderPathLineEdit, "png")
    assert ui.exportPathKindLabel.text == f"Writes PNG slices into the folder {working / 'png'}."
    for _ in "png":
        ui.pngFolderPathLineEdit.lineEdit().backspace()
    assert p.pngFolder == ""
    loaded.type_into(ui.exportFilePathLineEdit, str(tmp_path / "series") + "/")
    assert "DICOM series" in ui.exportPathKindLabel.text
    while ui.exportFilePathLineEdit.currentPath:
        ui.exportFilePathLineEdit.lineEdit().backspace()
    assert p.exportFilePath == "" and ui.exportPathKindLabel.text == ""
    ui.exportButton.click()
    assert ui.statusLabel.text.endswith("0 file(s) written.")
    assert list(working.iterdir()) == [] and not (tmp_path / "series").exists()


# -- finding 4: slabs into one DICOM folder make one series ----------------------------------------


def test_slabs_exported_into_one_dicom_folder_make_one_series(loaded, tmp_path):
    ui, p = loaded.ui, loaded.parameters
    folder = tmp_path / "chunks"
    loaded.type_into(ui.exportFilePathLineEdit, str(folder) + "/")
    ui.slabCheckBox.click()
    ui.slabCountSpinBox.value = 6
    export_new(ui)
    ui.slabFirstSpinBox.value = 6
    export_new(ui)  # a new output node, whose name differs: the series stays
    assert slicer_qt_fakes.ctkMessageBox.shown == []
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(folder.glob("*.dcm"))]
    assert len(headers) == 12 and len({str(h.SeriesInstanceUID) for h in headers}) == 1
    assert len({float(h.ImagePositionPatient[2]) for h in headers}) == 12
    uid = str(headers[0].SeriesInstanceUID)
    assert ui.seriesUidLineEdit.text == uid == p.dicomSeriesUid, "the panel shows the series UID it wrote"
    ui.exportInputSelector.setCurrentNode(p.fixedVolume)  # another input: another series
    ui.exportFilePathLineEdit.setCurrentPath(str(tmp_path / "other") + "/")
    export_new(ui)
    other = pydicom.dcmread(next((tmp_path / "other").glob("*.dcm")), stop_before_pixels=True)
    assert str(other.SeriesInstanceUID) == ui.seriesUidLineEdit.text != uid
    ui.seriesUidLineEdit.text = uid  # typed by the user: kept
    ui.exportFilePathLineEdit.setCurrentPath(str(tmp_path / "typed") + "/")
    export_new(ui)
    typed = pydicom.dcmread(next((tmp_path / "typed").glob("*.dcm")), stop_before_pixels=True)
    assert str(typed.SeriesInstanceUID) == uid
    ui.seriesUidLineEdit.text = "not a UID"
    with pytest.raises(ValueError, match="not a valid UID"):
        export_new(ui)


# -- finding 5: crop to overlap with a DICOM folder refused before any work --------------------------


def test_crop_to_overlap_with_a_dicom_folder_is_refused_before_any_work(loaded, tmp_path):
    ui = loaded.ui
    loaded.type_into(ui.exportFilePathLineEdit, str(tmp_path / "series") + "/")
    ui.cropToOverlapCheckBox.click()
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    assert not ui.exportButton.enabled
    tooltip = ui.exportButton.toolTip
    assert '"Crop to overlap"' in tooltip and 'DICOM folder in "Also write to"' in tooltip
    ui.exportButton.click()
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes and not (tmp_path / "series").exists()
    ui.cropToOverlapCheckBox.click()
    assert ui.exportButton.enabled


# -- finding 6: a failed export leaves the scene as it was -------------------------------------------


def test_a_failed_export_leaves_the_scene_as_it_was(loaded, tmp_path):
    ui, p = loaded.ui, loaded.parameters
    kept = export_new(ui)
    existing = tmp_path / "exists.nrrd"
    existing.write_bytes(b"not to be overwritten")
    loaded.type_into(ui.exportFilePathLineEdit, str(existing))
    for output in (None, p.exportOutputVolume):  # a new output node, and the earlier output refilled
        ui.exportOutputSelector.setCurrentNode(output)
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        with pytest.raises(ValueError, match="exists"):
            ui.exportButton.click()
        assert slicer.mrmlScene.GetNumberOfNodes() == nodes, "a resampled volume was left behind"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(p.exportOutputVolume), kept)
    assert existing.read_bytes() == b"not to be overwritten"


# -- finding 7: defaults the selectors can show --------------------------------------------------------


def test_the_default_fixed_volume_is_one_its_selector_shows(app):
    test = AlignSeries.AlignSeriesTest()
    test._addVolume(np.zeros((3, 3, 3), dtype=np.uint8), np.eye(4), "mask", labelmap=True)
    volume = test._addVolume(np.zeros((3, 4, 5), dtype=np.int16), np.eye(4), "ct")
    representation = enter_panel()
    try:
        p = representation.self._parameterNode
        assert p.fixedVolume.GetID() == volume.GetID(), "a label map the selector cannot show was chosen"
        assert "5x4x3 voxels" in representation.self.ui.fixedSummaryLabel.text
    finally:
        representation.exit()
        representation.self.cleanup()


# -- finding 8: messages name the panel's own controls ----------------------------------------------


def test_messages_name_the_panels_controls_which_do_what_they_say(loaded, tmp_path):
    ui, p = loaded.ui, loaded.parameters
    set_up_landmarks(ui, p.movingVolume, fixed_order=(1, 0, 2, 3, 4))  # the labels pair them, the order does not
    ui.landmarkModeComboBox.currentIndex = 2  # Affine: fits the wrong pairs too (a rigid fit calls them a mirror)
    ui.computeButton.click()
    assert '"Pair points by: Labels"' in ui.warningsLabel.text and "--" not in ui.warningsLabel.text
    assert not ui.errorLabel.text.startswith("RMS error: 0.000 mm")
    ui.landmarkMatchComboBox.currentIndex = 1  # Labels
    assert p.landmarkMatch == AlignSeries.LandmarkMatch.labels
    ui.computeButton.click()
    assert ui.errorLabel.text.startswith("RMS error: 0.000 mm") and ui.warningsLabel.text == ""

    existing = tmp_path / "exists.nrrd"
    existing.write_bytes(b"written earlier")
    loaded.type_into(ui.exportFilePathLineEdit, str(existing))
    with pytest.raises(ValueError, match="Replace existing outputs"):
        ui.exportButton.click()
    assert "--force" not in slicer_qt_fakes.ctkMessageBox.shown[-1]
    assert '"Replace existing outputs"' in slicer_qt_fakes.ctkMessageBox.shown[-1]
    ui.replaceExistingCheckBox.click()
    ui.exportButton.click()
    assert existing.read_bytes().startswith(b"NRRD")


# -- computing again after Apply: the transform is not counted in its own computation -----------------


@pytest.mark.parametrize("method", ["centers", "landmarks"])
def test_computing_again_after_apply_gives_the_same_transform(loaded, method):
    p, ui = loaded.parameters, loaded.ui
    t0, _ = put_under_chain(p.movingVolume)
    if method == "landmarks":  # the moving points hang from T0 too, so Apply moves them with the volume
        set_up_landmarks(ui, p.movingVolume)
        p.movingPoints.SetAndObserveTransformNodeID(t0.GetID())
        for n, point in enumerate(MOVING_LOCAL_POINTS):
            p.movingPoints.SetNthControlPointPosition(n, vtk.vtkVector3d(*point))
    else:
        ui.geometryModeComboBox.currentIndex = 1
    ui.computeButton.click()
    first = to_parent(p.outputTransform)
    ui.applyTransformButton.click()
    ui.computeButton.click()
    np.testing.assert_allclose(to_parent(p.outputTransform), first, atol=1e-9)
    if method == "landmarks":
        np.testing.assert_allclose(first, DISPLAYED_TO_FIXED, atol=1e-9)
