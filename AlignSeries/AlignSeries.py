"""AlignSeries: the Slicer module (descriptor, parameter node, panel, logic, self-test).

One rule for every computation and export: everything works in **world** coordinates. A volume's position
is its grid through its whole chain of parent transforms; geometry modes (frame of reference, centers,
moments), landmarks (points as displayed) and exports all follow that chain, and every transform is
applied exactly once. "Apply" puts the computed transform above the moving volume's current chain, never
in place of it, and an export passes the output transform only while the input is not already under it:
exporting before and after Apply gives the same voxels.
"""

import enum
import logging
import os
import sys
from typing import Annotated, Union

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLLinearTransformNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Minimum, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

# This file must stay importable on an older Slicer (Python 3.9) so that it can say which Slicer it
# needs: no syntax or annotations newer than Python 3.9 at import time (AlignSeriesLib is imported on use).

#: Oldest Slicer the module supports, and why: AlignSeriesLib needs Python >= 3.11 (Slicer 5.12 ships
#: 3.12), pydicom 3 (Slicer 5.10 ships 2.4, whose API differs) and numpy 2.
MINIMUM_SLICER_VERSION = (5, 12)
MINIMUM_PACKAGE_MAJOR_VERSIONS = {"pydicom": 3, "numpy": 2}


def requirementsProblem() -> str:
    """Why AlignSeries cannot run in this Slicer (one message for the user), or "" when it can."""
    from importlib import metadata

    found = []
    unsupported = False
    app = getattr(slicer, "app", None)
    if app is not None:
        version = (int(app.majorVersion), int(app.minorVersion))
        found.append("Slicer {}.{}".format(*version))
        unsupported = version < MINIMUM_SLICER_VERSION
    found.append("Python {}.{}".format(*sys.version_info[:2]))
    unsupported = unsupported or sys.version_info < (3, 11)
    for package, major in MINIMUM_PACKAGE_MAJOR_VERSIONS.items():
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            installed = "none"
        found.append(f"{package} {installed}")
        unsupported = unsupported or not installed.split(".")[0].isdigit() or int(installed.split(".")[0]) < major
    if not unsupported:
        return ""
    return _("AlignSeries needs 3D Slicer {version} or later, which provides Python 3.12, pydicom 3 and numpy 2; "
             "this application has {found}. Please install Slicer {version} or later.").format(
        version="{}.{}".format(*MINIMUM_SLICER_VERSION), found=", ".join(found))


class Method(enum.Enum):
    """How the transform is computed (panel choice)."""

    geometry = "geometry"
    landmarks = "landmarks"

    def label(self):
        return {"geometry": _("From geometry"), "landmarks": _("From landmarks")}[self.name]


class GeometryMode(enum.Enum):
    """Modes of ``AlignSeriesLogic.computeGeometryTransform``; the value is what the logic takes."""

    frameOfReference = "frameOfReference"
    centers = "centers"
    moments = "moments"

    def label(self):
        return {"frameOfReference": _("Frame of reference"), "centers": _("Centers"),
                "moments": _("Intensity moments")}[self.name]


class LandmarkMode(enum.Enum):
    """Modes of ``AlignSeriesLogic.computeLandmarkTransform``."""

    rigid = "rigid"
    similarity = "similarity"
    affine = "affine"

    def label(self):
        return {"rigid": _("Rigid"), "similarity": _("Similarity"), "affine": _("Affine")}[self.name]


class LandmarkMatch(enum.Enum):
    """How ``AlignSeriesLogic.computeLandmarkTransform`` pairs the two point lists."""

    order = "order"
    labels = "labels"
    auto = "auto"

    def label(self):
        return {"order": _("List order"), "labels": _("Labels"), "auto": _("Automatic")}[self.name]


class Interpolation(enum.Enum):
    """Interpolations of ``AlignSeriesLogic.exportResampledVolume``."""

    nearest = "nearest"
    linear = "linear"
    cubic = "cubic"

    def label(self):
        return {"nearest": _("Nearest neighbour"), "linear": _("Linear"), "cubic": _("Cubic")}[self.name]


#: What the library's messages (written for the command line) say, and what the panel calls it: a message shown
#: in the panel names the panel's own controls.
PANEL_WORDING = (
    ("(use --force)", '(tick "Replace existing outputs")'),
    ("use --force to", 'tick "Replace existing outputs" to'),
    ("even with --force", 'even with "Replace existing outputs"'),
    ("use --match labels", 'choose "Pair points by: Labels"'),
    ("drop --slab", 'untick "Slab of slices"'),
    ("--slab of", '"Slab of slices" of'),
    ("(alignseries landmarks)", '(Method: "From landmarks")'),
    ("(--registration REG)", "(a REG file among the series' DICOM files)"),
    ("(--mode centers)", '(Mode: "Centers")'),
    ("(--mode moments)", '(Mode: "Intensity moments")'),
)


def panelWording(message: str) -> str:
    """A library message as the panel shows it: command-line options replaced by the panel's controls."""
    for commandLine, panel in PANEL_WORDING:
        message = message.replace(commandLine, panel)
    return message


GEOMETRY_MODES = tuple(mode.value for mode in GeometryMode)
LANDMARK_MODES = tuple(mode.value for mode in LandmarkMode)
INTERPOLATIONS = tuple(mode.value for mode in Interpolation)


#
# AlignSeries
#


class AlignSeries(ScriptedLoadableModule):
    """Module descriptor, as in Slicer's Extension Wizard template."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Align Series")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["AlignSeries developers"]
        self.parent.helpText = _("""
Puts two image series of one patient in one space: reconstructs each DICOM series' true geometry
(slice order along the normal, gantry tilt, gaps, multi-frame), computes the transform between them
from their frames of reference, a DICOM registration object, volume centers, intensity moments or
corresponding landmarks, and resamples a volume, label map or segmentation onto the other's grid
(label-safe for masks), as a node, a file, a new DICOM series, PNGs or a fused preview.
<p>Conventions: world coordinates are RAS (DICOM and ITK files are LPS, converted on reading);
the computed transform maps the <b>moving</b> volume onto the <b>fixed</b> one and is stored as the
transform node's "to parent" matrix, so placing the moving volume under it aligns the two. Voxel
arrays are indexed [k, j, i]. Requires Slicer 5.12 or later. See the
<a href="https://github.com/alignseries/SlicerAlignSeries#readme">documentation</a>.</p>
""")
        problem = requirementsProblem()
        if problem:
            self.parent.helpText = f"<p><b>{problem}</b></p>" + self.parent.helpText
        self.parent.acknowledgementText = _("""
Built on 3D Slicer's MRML libraries, pydicom and VTK. The module structure follows Slicer's
Extension Wizard template by Jean-Christophe Fillion-Robin (Kitware), Andras Lasso (PerkLab) and
Steve Pieper (Isomics).
""")


#
# AlignSeriesParameterNode
#


@parameterNodeWrapper
class AlignSeriesParameterNode:
    """The parameters of the module panel, stored in the scene.

    fixedVolume, movingVolume - the reference volume and the volume to align to it.
    method - geometry (from headers) or landmarks (from point lists).
    geometryMode - frameOfReference, centers or moments.
    fixedPoints, movingPoints, landmarkMode, landmarkMatch - landmark registration inputs and their pairing.
    refineByIntensity - then refine the geometry transform rigidly by image intensity (mutual information).
    outputTransform - the moving-to-fixed transform (created when empty).
    exportInputVolume - volume, label map or segmentation to resample.
    exportReferenceVolume, interpolation, exportOutputVolume - resampling.
    exportFilePath - optional volume file or DICOM folder to write the resampled volume to ("" = none);
      exportToDicomFolder says which, from what the user picked (the folder button, or a path without suffix).
    cropToOverlap, slabEnabled, slabFirst, slabCount - the output grid: the reference's, its overlap with the
      input, or a slab of its slices.
    pngFolder, previewPath - optional PNG slices and fused preview ("" = none).
    segPath - optional DICOM SEG file of a label map or segmentation on a DICOM reference ("" = none).
    compressOutput - gzip a .nrrd/.mha volume file (raw by default; .nii.gz always compressed).
    replaceExisting - replace outputs written earlier (never an input).
    dicomSeriesUid - SeriesInstanceUID of the DICOM output, kept so that slabs exported into one folder make one
      series ("" = derived from the reference series and the input on the next DICOM export).
    """

    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    method: Method = Method.geometry
    geometryMode: GeometryMode = GeometryMode.frameOfReference
    refineByIntensity: bool = False
    fixedPoints: vtkMRMLMarkupsFiducialNode
    movingPoints: vtkMRMLMarkupsFiducialNode
    landmarkMode: LandmarkMode = LandmarkMode.rigid
    landmarkMatch: LandmarkMatch = LandmarkMatch.order
    outputTransform: vtkMRMLLinearTransformNode
    exportInputVolume: Union[vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, None]  # noqa: UP007 (Python 3.9)
    exportReferenceVolume: vtkMRMLScalarVolumeNode
    interpolation: Interpolation = Interpolation.linear
    exportOutputVolume: vtkMRMLScalarVolumeNode
    exportFilePath: str = ""
    exportToDicomFolder: bool = False
    cropToOverlap: bool = False
    slabEnabled: bool = False
    slabFirst: Annotated[int, Minimum(0)] = 0
    slabCount: Annotated[int, Minimum(1)] = 1
    pngFolder: str = ""
    previewPath: str = ""
    compressOutput: bool = False
    segPath: str = ""
    replaceExisting: bool = False
    dicomSeriesUid: str = ""


#
# AlignSeriesWidget
#


class AlignSeriesWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: binds the .ui to the parameter node and calls the logic; computes nothing."""

    #: Path parameters kept in step with their ctkPathLineEdit here rather than by the wrapper's connector,
    #: which stores a pathlib.Path (a trailing "/" dropped, "." for empty) and rewrites the field on every
    #: keystroke (the cursor jumps to the end). CTK's validator makes an empty field not acceptable: the field
    #: then emits validInputChanged(false) and no currentPathChanged, so both signals are followed, and an
    #: empty field means "no output".
    PATH_FIELDS = {"exportFilePath": "exportFilePathLineEdit", "pngFolder": "pngFolderPathLineEdit",
                   "previewPath": "previewPathLineEdit", "segPath": "segPathLineEdit"}
    #: Parameters the widget sets itself (no widget of their own).
    DERIVED_PARAMETERS = ("exportToDicomFolder",)

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cancelRequested = False
        self._busy = False
        self._summaryCache = {}
        self._derivedSeriesUid = ""  # the series UID the panel filled in itself (not typed by the user)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        problem = requirementsProblem()
        if problem:
            self.requirementsLabel = qt.QLabel(problem)
            self.requirementsLabel.wordWrap = True
            self.layout.addWidget(self.requirementsLabel)
            logging.error(problem)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AlignSeries.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = AlignSeriesLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.loadDicomButton.connect("clicked(bool)", self.onLoadDicomButton)
        self.ui.computeButton.connect("clicked(bool)", self.onComputeButton)
        self.ui.applyTransformButton.connect("clicked(bool)", self.onApplyTransformButton)
        self.ui.exportButton.connect("clicked(bool)", self.onExportButton)
        self.ui.exportFolderButton.connect("clicked(bool)", self.onExportFolderButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        for name, widgetName in self.PATH_FIELDS.items():
            field = getattr(self.ui, widgetName)
            field.connect("currentPathChanged(QString)", lambda path, name=name: self.onPathEdited(name, path))
            field.connect("validInputChanged(bool)",
                          lambda valid, name=name, field=field: self.onPathEdited(name, field.currentPath))
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()

        self.initializeParameterNode()

    def cleanup(self) -> None:
        """Called before the module is unloaded or reloaded: this panel stops reading and writing the parameters."""
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self._summaryCache.clear()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Forget AlignSeriesLib too, so that Reload imports its edited modules afresh (all of them, in order)."""
        for name in [name for name in sys.modules if name == "AlignSeriesLib" or name.startswith("AlignSeriesLib.")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def initializeParameterNode(self) -> None:
        """Bind the parameter node; by default the fixed volume is the first volume its selector lists.

        (``GetFirstNodeByClass`` would also match label maps, which the selector does not show.)
        """
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.fixedVolume:
            shown = self.ui.fixedVolumeSelector.nodes()
            if shown:
                self._parameterNode.fixedVolume = shown[0]

    def setParameterNode(self, inputParameterNode) -> None:
        """Bind the widgets to a parameter node (None unbinds them: after that no widget reads or writes it)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    # -- parameter node -> widgets

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        """Show the summaries and paths, and enable each button only when its inputs are valid and no job runs."""
        p = self._parameterNode
        if p is None:
            return
        self.ui.fixedSummaryLabel.text = self._summary(p.fixedVolume)
        self.ui.movingSummaryLabel.text = self._summary(p.movingVolume)
        for name, widgetName in self.PATH_FIELDS.items():
            field = getattr(self.ui, widgetName)
            if field.currentPath != getattr(p, name):  # rewriting an unchanged field would move its cursor
                field.setCurrentPath(getattr(p, name))
        self.ui.exportPathKindLabel.text = self._exportPathDescription(p)
        landmarks = p.method == Method.landmarks
        self.ui.geometryModeComboBox.enabled = not landmarks
        self.ui.refineCheckBox.enabled = not landmarks
        self.ui.landmarksGroupBox.enabled = landmarks
        busy = _("Wait for the running job to finish (or cancel it)") if self._busy else ""
        self.ui.loadDicomButton.enabled = not self._busy
        self._setButtonState(self.ui.computeButton, busy or self._missingForCompute(p),
                             _("Compute the moving-to-fixed transform"))
        missingApply = "" if p.movingVolume and p.outputTransform else _(
            "Select a moving volume and compute a transform first")
        self._setButtonState(self.ui.applyTransformButton, busy or missingApply,
                             _("Place the moving volume under the transform (not hardened)"))
        self._setButtonState(self.ui.exportButton, busy or self._missingForExport(p),
                             _("Resample the input onto the reference grid"))

    def _summary(self, volumeNode) -> str:
        """The volume's one-line summary, computed again only when the node or its voxels changed."""
        if volumeNode is None:
            return ""
        imageData = volumeNode.GetImageData()
        stamp = (volumeNode.GetMTime(), imageData.GetMTime() if imageData is not None else 0)
        cached = self._summaryCache.get(volumeNode.GetID())
        if cached is None or cached[0] != stamp:
            cached = (stamp, self.logic.describeVolume(volumeNode))
            self._summaryCache[volumeNode.GetID()] = cached
        return cached[1]

    @staticmethod
    def _exportPathDescription(p) -> str:
        """Every file or folder the next export writes, as absolute paths (relative ones resolve against Slicer's
        working directory, which the user does not see)."""
        lines = []
        if p.exportFilePath:
            where = os.path.abspath(p.exportFilePath)
            lines.append(_("Writes a DICOM series into the folder {path} (created if absent).").format(path=where)
                         if p.exportToDicomFolder else _("Writes the file {path}.").format(path=where))
        if p.pngFolder:
            lines.append(_("Writes PNG slices into the folder {path}.").format(path=os.path.abspath(p.pngFolder)))
        if p.previewPath:
            lines.append(_("Writes the preview {path}.").format(path=os.path.abspath(p.previewPath)))
        return "\n".join(lines)

    def _missingForCompute(self, p) -> str:
        if p.method == Method.landmarks:
            return "" if p.fixedPoints and p.movingPoints else _("Select fixed and moving point lists")
        return "" if p.fixedVolume and p.movingVolume else _("Select fixed and moving volumes")

    @staticmethod
    def _missingForExport(p) -> str:
        """Why Export cannot run as set (checked before any work), or ""."""
        if not (p.exportInputVolume and p.exportReferenceVolume):
            return _("Select input and reference volumes")
        output = p.exportOutputVolume
        if output is not None and output.GetID() in (p.exportInputVolume.GetID(), p.exportReferenceVolume.GetID()):
            return _("The output volume must be a new volume: never the input or the reference")
        if p.cropToOverlap and p.slabEnabled:
            return _('"Crop to overlap" and "Slab of slices" choose the output grid in two ways: untick one of them')
        slices = [name for name, wanted in ((_('a DICOM folder in "Also write to"'), p.exportFilePath
                                             and p.exportToDicomFolder), (_('"PNG folder"'), p.pngFolder)) if wanted]
        if p.cropToOverlap and slices:
            return _('"Crop to overlap" gives a grid smaller than the reference, which {outputs} cannot follow slice '
                     'for slice: untick "Crop to overlap", or write a volume file (.nrrd, .nii.gz, .mha)').format(
                outputs=_(" or ").join(slices))
        return ""

    @staticmethod
    def _setButtonState(button, missing: str, action: str) -> None:
        button.enabled = not missing
        button.toolTip = missing or action

    # -- widgets -> parameter node (what the connectors do not bind)

    def onPathEdited(self, name: str, path: str) -> None:
        """The user typed or browsed a path: store it as given; a typed export path without suffix is a folder."""
        p = self._parameterNode
        if p is None or getattr(p, name) == path:
            return
        with slicer.util.NodeModify(p):
            setattr(p, name, path)
            if name == "exportFilePath":
                p.exportToDicomFolder = bool(path) and not os.path.splitext(path.rstrip("/\\"))[1]

    def onExportFolderButton(self) -> None:
        """Choose (or create, in the dialog) the folder that receives the DICOM series."""
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Folder for the DICOM series"))
        if not folder:
            return
        with slicer.util.NodeModify(self._parameterNode):
            self._parameterNode.exportFilePath = folder
            self._parameterNode.exportToDicomFolder = True

    # -- jobs

    def _setStatus(self, message: str) -> None:
        self.ui.statusLabel.text = message
        slicer.util.showStatusMessage(message, 5000)

    def _progress(self, fraction: float) -> bool:
        """Progress callback for the logic: updates the bar, keeps the GUI alive, returns True to cancel."""
        self.ui.progressBar.value = int(100 * fraction)
        slicer.app.processEvents()
        return self._cancelRequested

    def _runJob(self, errorMessage: str, function, *args, withProgress: bool = False, **kwargs):
        """Run one job with the buttons disabled; a cancelled job ends quietly with a status message.

        :return: what ``function`` returned, or None when cancelled (or already running).
        """
        from AlignSeriesLib.errors import AlignSeriesError, OperationCancelledError

        if self._busy:
            return None
        self._busy, self._cancelRequested = True, False
        self.ui.statusLabel.text = ""
        if withProgress:
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()
            self.ui.cancelButton.show()
            kwargs["progressCallback"] = self._progress
        self.updateGUIFromParameterNode()
        try:
            with slicer.util.tryWithErrorDisplay(errorMessage, waitCursor=True):
                try:
                    return function(*args, **kwargs)
                except OperationCancelledError:
                    self._setStatus(_("Cancelled: nothing was written."))
                    return None
                except AlignSeriesError as error:
                    if panelWording(str(error)) == str(error):
                        raise
                    raise AlignSeriesError(panelWording(str(error))) from error
        finally:
            self._busy = False
            self.ui.progressBar.hide()
            self.ui.cancelButton.hide()
            self.updateGUIFromParameterNode()

    def onCancelButton(self) -> None:
        self._cancelRequested = True

    def onLoadDicomButton(self) -> None:
        """Load a DICOM folder; its first volume becomes the fixed volume if none is chosen, else the moving one."""
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("DICOM folder to load"))
        if not folder:
            return
        p = self._parameterNode
        loadingFixed = not p.fixedVolume  # decided before loading: the selectors pick the first new volume
        volumeNodes = self._runJob(_("Failed to load the DICOM folder."), self.logic.loadDicomSeries, folder,
                                   withProgress=True)
        if not volumeNodes:
            return
        with slicer.util.NodeModify(p):
            if loadingFixed:
                p.fixedVolume = p.exportReferenceVolume = volumeNodes[0]
            else:
                if p.exportInputVolume is None or p.exportInputVolume.GetID() in (
                        p.fixedVolume.GetID(), p.movingVolume.GetID() if p.movingVolume else None):
                    p.exportInputVolume = volumeNodes[0]
                p.movingVolume = volumeNodes[0]
        self._setStatus(_("Loaded {count} volume(s) from {folder}.").format(count=len(volumeNodes), folder=folder))
        slicer.util.setSliceViewerLayers(background=volumeNodes[0], fit=True)

    def onComputeButton(self) -> None:
        p = self._parameterNode
        if p.method == Method.landmarks:
            result = self._runJob(_("Failed to compute the transform."), self.logic.computeLandmarkTransform,
                                  p.fixedPoints, p.movingPoints, mode=p.landmarkMode.value,
                                  outputTransform=p.outputTransform, match=p.landmarkMatch.value,
                                  fixedVolume=p.fixedVolume)
        else:
            result = self._runJob(_("Failed to compute the transform."), self.logic.computeGeometryTransformResult,
                                  p.fixedVolume, p.movingVolume, mode=p.geometryMode.value,
                                  outputTransform=p.outputTransform, refine="rigid" if p.refineByIntensity else None,
                                  withProgress=p.refineByIntensity)
        if result is None:
            return
        p.outputTransform = result.transformNode
        self.showResult(result, p.movingPoints if p.method == Method.landmarks else None)

    def showResult(self, result, movingPoints=None) -> None:
        """Fill the results area: matrix, voxel mapping, errors and per-point residuals, warnings."""
        self.ui.matrixTextEdit.plainText = self.logic.formatMatrix(result.movingToFixedRas)
        self.ui.voxelMappingTextEdit.plainText = (
            self.logic.formatMatrix(result.movingIjkToFixedIjk) if result.movingIjkToFixedIjk is not None else "")
        self.ui.errorLabel.text = "" if result.rmsError is None else _(
            "RMS error: {rms:.3f} mm; estimated error at the fixed volume's center: {tre:.3f} mm").format(
            rms=result.rmsError, tre=result.targetRegistrationError)
        residuals = result.residuals if result.residuals is not None else []
        movingLabels = self.logic.pointLabels(movingPoints) if movingPoints is not None else []
        self.ui.residualsTableWidget.setRowCount(len(residuals))
        for row, (label, residual) in enumerate(zip(result.labels, residuals, strict=True)):
            movingLabel = movingLabels[row] if row < len(movingLabels) else ""
            self.ui.residualsTableWidget.setItem(row, 0, qt.QTableWidgetItem(label))
            self.ui.residualsTableWidget.setItem(row, 1, qt.QTableWidgetItem(movingLabel))
            self.ui.residualsTableWidget.setItem(row, 2, qt.QTableWidgetItem(f"{residual:.3f}"))
        self.ui.warningsLabel.text = "\n".join(panelWording(warning.message) for warning in result.warnings)
        if getattr(result, "refinement", None) is not None:  # the report first points to the fused views
            self.ui.warningsLabel.text = result.refinement.text() + "\n" + _(
                "Look first: Apply to moving volume, then compare it fused with the fixed volume in the slice views.")

    def onApplyTransformButton(self) -> None:
        """Place the output transform above the moving volume's chain (its own transforms are kept)."""
        p = self._parameterNode
        self._runJob(_("Failed to apply the transform."), self.logic.applyTransform, p.movingVolume, p.outputTransform)
        if self.logic.transformNotYetApplied(p.movingVolume, p.outputTransform) is None:
            self._setStatus(_("{volume} is now under {transform}: {chain}.").format(
                volume=p.movingVolume.GetName(), transform=p.outputTransform.GetName(),
                chain=" \u2192 ".join(self.logic.transformChainNames(p.movingVolume))))

    def onExportButton(self) -> None:
        p = self._parameterNode
        outcome = self._runJob(_("Failed to export the resampled volume."), self._export, withProgress=True)
        if outcome is None:
            return
        outputVolume, written = outcome
        p.exportOutputVolume = outputVolume
        self._setStatus(_("Exported {name}; {count} file(s) written.").format(name=outputVolume.GetName(),
                                                                            count=len(written)))
        slicer.util.setSliceViewerLayers(background=p.exportReferenceVolume, foreground=outputVolume,
                                         foregroundOpacity=0.5)

    def _export(self, progressCallback=None):
        """Resample and write the requested files in one logic call, all or nothing; returns (output node, files).

        The export job places the input where the views show it (its world chain) and applies the output
        transform only while the input is not under it yet: exactly once, before and after Apply.
        """
        p = self._parameterNode
        seriesUid = None
        if p.exportFilePath and p.exportToDicomFolder:  # a UID the panel filled in follows the input and reference
            derived = self.logic.dicomSeriesUid(p.exportInputVolume, p.exportReferenceVolume)
            typed = p.dicomSeriesUid and p.dicomSeriesUid != self._derivedSeriesUid
            seriesUid = p.dicomSeriesUid if typed else derived
        result = self.logic.exportResampledVolumeResult(
            p.exportInputVolume, p.exportReferenceVolume, transform=p.outputTransform,
            interpolation=p.interpolation.value, outputVolume=p.exportOutputVolume, progressCallback=progressCallback,
            cropToOverlap=p.cropToOverlap, slab=(p.slabFirst, p.slabCount) if p.slabEnabled else None,
            outputPath=p.exportFilePath, dicomFolder=p.exportToDicomFolder, pngFolder=p.pngFolder,
            previewPath=p.previewPath, compress=p.compressOutput, force=p.replaceExisting, seriesUid=seriesUid,
            segPath=p.segPath)
        if seriesUid:
            self._derivedSeriesUid = derived if seriesUid == derived else self._derivedSeriesUid
            p.dicomSeriesUid = seriesUid  # shown, and kept for the next slab into this folder
        return result.volumeNode, result.written


#
# AlignSeriesLogic
#


class AlignSeriesLogic(ScriptedLoadableModuleLogic):
    """Console and panel entry points. Each method delegates to AlignSeriesLib; all can be used without GUI widget."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        problem = requirementsProblem()
        if problem:
            raise RuntimeError(problem)

    def getParameterNode(self):
        return AlignSeriesParameterNode(super().getParameterNode())

    def loadDicomSeries(self, path, regularize: bool = True, progressCallback=None, regularizeSpacing=None) -> list:
        """Load every reconstructable volume of a DICOM folder or file list into the scene.

        Can be used without GUI widget. A Siemens MOSAIC needs nibabel: it is installed on first need
        (Slicer's ``slicer.pydeps.pip_ensure``, from ``Resources/requirements.txt``).
        :param path: DICOM folder, file, or list of them.
        :param regularize: resample irregular series (gantry tilt, uneven spacing) onto a regular grid;
          when False an irregular series is refused instead.
        :param progressCallback: ``progressCallback(fraction) -> bool``; returning True cancels.
        :param regularizeSpacing: spacing (mm) along the normal of a regularized grid; by default the
          smallest distance between acquired slices.
        :return: list of new volume nodes, one per volume found, with DICOM UIDs kept as node attributes, then
          one label map per DICOM SEG found (segment numbers as labels, segment names kept).
        """
        from AlignSeriesLib import operations
        from AlignSeriesLib.errors import MissingDependencyError

        def load():
            return operations.load_volumes(slicer.mrmlScene, path, regularize=regularize,
                                           regularize_spacing=regularizeSpacing, progress=progressCallback,
                                           include_segs=True)

        try:
            return load()
        except MissingDependencyError as error:
            _installRequirements(error)
            return load()

    def computeGeometryTransform(self, fixedVolume, movingVolume, mode: str = "frameOfReference",
                                 outputTransform=None, registration=None):
        """Compute the moving-to-fixed transform from the two volumes' geometry.

        Can be used without GUI widget.
        :param fixedVolume: reference volume node.
        :param movingVolume: volume node to align.
        :param mode: "frameOfReference" (identity when FrameOfReferenceUIDs match, or the matrix of a
          DICOM REG linking them), "centers" (align volume centers) or "moments" (align intensity centroids).
        :param outputTransform: linear transform node to update; a new one is created when None.
        :param registration: optional path of a DICOM Spatial Registration object.
        :return: the transform node; :func:`computeGeometryTransformResult` also gives the voxel mapping.
        """
        return self.computeGeometryTransformResult(fixedVolume, movingVolume, mode, outputTransform,
                                                   registration).transformNode

    def computeGeometryTransformResult(self, fixedVolume, movingVolume, mode: str = "frameOfReference",
                                       outputTransform=None, registration=None, refine=None, progressCallback=None):
        """As :func:`computeGeometryTransform`, returning the whole result (``transformNode``,
        ``movingToFixedRas``, ``movingIjkToFixedIjk``, ``warnings``, ``refinement``).

        Can be used without GUI widget.
        :param refine: None, or "rigid" / "affine": then refine the transform by image intensity (Mattes mutual
          information over the overlap); ``result.refinement`` reports how far it moved, whether it converged,
          the overlap and when to check by eye.
        :param progressCallback: ``progressCallback(fraction) -> bool`` during the refinement; returning True
          cancels (no transform is made or changed).
        """
        from AlignSeriesLib import operations
        from AlignSeriesLib.choices import REFINE_MODELS

        mode = _checkChoice("mode", mode, GEOMETRY_MODES)
        request = None if refine is None else operations.RefineRequest(_checkChoice("refine", refine, REFINE_MODELS),
                                                                       progress=progressCallback)
        return operations.compute_geometry_transform(
            slicer.mrmlScene, fixedVolume, movingVolume, mode, registrations=[registration] if registration else (),
            transform_node=outputTransform, refine=request)

    def computeLandmarkTransform(self, fixedPoints, movingPoints, mode: str = "rigid", outputTransform=None,
                                 match: str = "order", weights=None, fixedVolume=None):
        """Compute the moving-to-fixed transform from corresponding landmarks.

        Can be used without GUI widget.
        :param fixedPoints: markups node (or (N, 3) RAS array) of points in the fixed volume.
        :param movingPoints: markups node (or (N, 3) RAS array) of the same points in the moving volume.
        :param mode: "rigid", "similarity" or "affine".
        :param outputTransform: linear transform node to update; a new one is created when None.
        :param match: pair points by "order", "labels" or "auto" (unordered lists).
        :param weights: optional per-pair weights, in the fixed list's order.
        :param fixedVolume: optional fixed volume: the target registration error is estimated at its center.
        :return: result with ``transformNode``, ``rmsError`` (mm), ``residuals`` (mm, fixed order),
          ``leaveOneOutErrors`` (mm) and ``targetRegistrationError`` (mm, Fitzpatrick's estimate).
        """
        from AlignSeriesLib import operations

        mode = _checkChoice("mode", mode, LANDMARK_MODES)
        return operations.compute_landmark_transform(
            slicer.mrmlScene, fixedPoints, movingPoints, mode, match=match, weights=weights,
            transform_node=outputTransform, fixed_volume=fixedVolume)

    def exportResampledVolume(self, inputVolume, referenceVolume, transform=None, interpolation: str = "linear",
                              outputVolume=None, progressCallback=None, cropToOverlap: bool = False, slab=None):
        """Resample a volume, label map or segmentation onto a reference volume's grid, through a transform.

        Can be used without GUI widget. The input is never modified. Label maps and segmentations
        are always resampled label-safe, whatever ``interpolation`` says; a segmentation gives a label
        map in which each segment keeps its label value. :func:`exportResampledVolumeResult` also writes files.
        :param inputVolume: volume, label map or segmentation node to resample.
        :param referenceVolume: volume node whose grid the output takes (in world coordinates).
        :param transform: moving-to-fixed linear transform node (input to reference), applied once above the
          input's parent transforms (not again when it already is one of them, e.g. after Apply).
        :param interpolation: "nearest", "linear" or "cubic".
        :param outputVolume: volume node to fill; a new node is created when None. Never the input or the reference.
        :param progressCallback: ``progressCallback(fraction) -> bool``; returning True cancels.
        :param cropToOverlap: keep only the part of the reference grid that the input covers.
        :param slab: (first, count): only the reference slices first .. first + count - 1.
        :return: the output volume node.
        """
        return self.exportResampledVolumeResult(inputVolume, referenceVolume, transform, interpolation, outputVolume,
                                                progressCallback, cropToOverlap, slab).volumeNode

    def exportResampledVolumeResult(self, inputVolume, referenceVolume, transform=None, interpolation: str = "linear",
                                    outputVolume=None, progressCallback=None, cropToOverlap: bool = False, slab=None,
                                    outputPath: str = "", dicomFolder=None, pngFolder: str = "",
                                    previewPath: str = "", compress: bool = False, force: bool = False,
                                    seriesUid=None, segPath: str = "", segLabels=None, segType: str = "binary",
                                    algorithm=None):
        """Resample as :func:`exportResampledVolume` and write every requested file, in one job, all or nothing.

        Can be used without GUI widget. The same export job as the command line and the Python API.
        :param outputPath: a volume file (.nrrd, .nii.gz, .mha) or a folder for a DICOM series aligned with
          the reference's slices; empty for none.
        :param dicomFolder: True: ``outputPath`` is a folder for DICOM; False: a file; None: a folder when it ends
          with a separator or is an existing folder.
        :param pngFolder: folder for one PNG per reference DICOM slice; empty for none.
        :param previewPath: fused picture of reference and output; empty for none.
        :param compress: gzip a .nrrd/.mha file (raw by default, faster to write); .nii.gz is always compressed.
        :param force: replace existing outputs.
        :param seriesUid: SeriesInstanceUID of a DICOM output; by default derived from the reference series and
          the input, the same for every slab.
        :param segPath: a DICOM SEG file of the label map (or segmentation) referencing the reference's slices;
          empty for none. Segment names, colours and codes come from ``segLabels`` (a label table file), else
          from the segmentation or DICOM SEG the input is, else "Segment N".
        :param segType: "binary" or "labelmap".
        :param algorithm: (name, version) of the algorithm that made the labels; None: MANUAL segments.
        :return: the result: ``volumeNode``, ``written`` (files), ``warnings`` (the inputs' and the resampling's).
        """
        from AlignSeriesLib import export_job, mrml, operations
        from AlignSeriesLib.errors import MissingDependencyError

        interpolation = _checkChoice("interpolation", interpolation, INTERPOLATIONS)
        if seriesUid and not pydicomUidValid(seriesUid):
            raise ValueError(f"the DICOM series UID '{seriesUid}' is not a valid UID (digits and dots, at most 64 "
                             "characters): correct it, or clear it for a new one")
        targets = self._exportTargets(outputPath, dicomFolder, png_folder=pngFolder or None,
                                      preview=previewPath or None, compress=compress, force=force,
                                      series_uid=seriesUid or None, seg_file=segPath or None,
                                      labels=operations.as_label_table(segLabels) if segLabels else None,
                                      seg_type=segType, seg_algorithm=algorithm)
        options = export_job.ExportOptions(interpolation, slab=slab, crop_to_overlap=cropToOverlap)
        reference = operations.reference_of_node(referenceVolume)

        def run():
            with mrml.as_labelmap(slicer.mrmlScene, inputVolume) as inputLabelmapOrVolume:
                return export_job.resample_and_write(slicer.mrmlScene, inputLabelmapOrVolume, reference, targets,
                                                     options, progressCallback, transform_node=transform,
                                                     output_node=outputVolume)

        try:
            return run()
        except MissingDependencyError as error:  # highdicom for a DICOM SEG: installed on first need
            _installRequirements(error)
            return run()

    def applyTransform(self, movingVolume, transformNode) -> None:
        """Place the transform above the moving volume's current chain of parent transforms, without hardening.

        Can be used without GUI widget. The volume's own geometry and its transforms are kept (the topmost
        of them gets ``transformNode`` as parent); applying again changes nothing.
        """
        from AlignSeriesLib import operations

        if movingVolume is None or transformNode is None:
            raise ValueError("applyTransform needs a moving volume and a transform node")
        operations.apply_transform(movingVolume, transformNode)

    @staticmethod
    def transformNotYetApplied(node, transformNode):
        """``transformNode``, or None when ``node`` is already under it (so that it is applied exactly once)."""
        from AlignSeriesLib import mrml

        return None if transformNode is None or mrml.is_under(node, transformNode) else transformNode

    @staticmethod
    def transformChainNames(node) -> list:
        """Names of the transforms above a node, nearest first."""
        from AlignSeriesLib import mrml

        return [transform.GetName() for transform in mrml.transform_chain(node)]

    @staticmethod
    def dicomSeriesUid(inputVolume, referenceVolume) -> str:
        """The SeriesInstanceUID of a DICOM export of the input on the reference, whatever the output node's name.

        Derived from the reference's SeriesInstanceUID and the input's name: every slab of one input on one
        reference gets the same UID, so slabs exported into one folder make one series.
        """
        from AlignSeriesLib import mrml
        from AlignSeriesLib.dicom import export as dicom_export

        referenceUid = referenceVolume.GetAttribute(mrml.SERIES_UID_ATTRIBUTE) or referenceVolume.GetName()
        return dicom_export.derived_series_uid(referenceUid, inputVolume.GetName())

    def writeVolume(self, volumeNode, path: str, referenceVolume=None, dicomFolder=None,
                    compress: bool = False) -> list:
        """Write a volume node to a file (.nrrd, .nii.gz, .mha) or to a folder as DICOM aligned to the reference.

        Can be used without GUI widget. Existing files are not overwritten. The volume goes through the export
        job: onto its own grid for a file, onto the reference's slices for DICOM (its voxels copied where it lies
        on them).
        :param dicomFolder: True: ``path`` is a folder (created if absent) for a DICOM series; False: a file;
          None: a folder when ``path`` ends with a separator or is an existing folder.
        :param compress: gzip a .nrrd/.mha file (raw by default, faster to write); .nii.gz is always compressed.
        :return: the files written.
        """
        from AlignSeriesLib import export_job, mrml, operations

        targets = self._exportTargets(str(path), dicomFolder, compress=compress)
        if targets.slices and referenceVolume is None:
            raise ValueError("DICOM outputs are aligned with a reference volume: give one")
        reference = operations.reference_of_node(referenceVolume if targets.slices else volumeNode)
        result = export_job.resample_and_write(slicer.mrmlScene, volumeNode, reference, targets,
                                               export_job.ExportOptions("nearest"))
        mrml.remove_with_helpers(slicer.mrmlScene, result.volume_node)
        return result.written

    @staticmethod
    def _exportTargets(path: str, dicomFolder, **fields):
        """The export targets of a path field and its "DICOM folder" choice (None: decided by the path)."""
        from AlignSeriesLib import exports

        if path and dicomFolder is False and os.path.isdir(path):
            raise ValueError(f"{path} is a folder: give a file name (.nrrd, .nii.gz, .mha) or choose a DICOM folder")
        if not path or dicomFolder is None:
            return exports.ExportTargets.for_output(path or None, **fields)
        return exports.ExportTargets(volume_file=None if dicomFolder else path,
                                     dicom_folder=path if dicomFolder else None, **fields)

    def describeVolume(self, volumeNode) -> str:
        """One-line geometry summary: dimensions, spacing, orientation, frame of reference, warnings."""
        from AlignSeriesLib import operations

        return operations.describe_volume_node(volumeNode)

    @staticmethod
    def pointLabels(pointsNode) -> list:
        """The control point labels of a markups node, in order."""
        return [pointsNode.GetNthControlPointLabel(n) for n in range(pointsNode.GetNumberOfControlPoints())]

    @staticmethod
    def formatMatrix(matrix) -> str:
        """A 4x4 matrix as four tab-separated rows, easy to copy into a spreadsheet or numpy."""
        return "\n".join("\t".join(f"{value: .6f}" for value in row) for row in matrix)


def _installRequirements(error) -> None:
    """Install the module's optional Python requirements with Slicer's package manager, or re-raise ``error``."""
    pydeps = getattr(slicer, "pydeps", None)
    if pydeps is None or getattr(slicer, "app", None) is None:
        raise error
    requirements = os.path.join(os.path.dirname(__file__), "Resources", "requirements.txt")
    pydeps.pip_ensure(pydeps.load_requirements(requirements), requester="AlignSeries")


def pydicomUidValid(uid: str) -> bool:
    """True for a valid DICOM UID (pydicom's check: digits and dots, at most 64 characters)."""
    import pydicom.uid

    return pydicom.uid.UID(uid).is_valid


def _checkChoice(name: str, value, choices) -> str:
    """The choice as the logic's string (an enum member gives its value); ValueError when unknown."""
    value = value.value if isinstance(value, enum.Enum) else value
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


#
# AlignSeriesTest
#


class AlignSeriesTest(ScriptedLoadableModuleTest):
    """Self-test of the logic on synthetic volumes and markups built in the scene (no downloads)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for name in sorted(name for name in dir(self) if name.startswith("test_")):
            self.setUp()
            getattr(self, name)()

    # -- helpers --

    def _addVolume(self, array, ijkToRas, name, frameOfReferenceUid=None, labelmap=False):
        import numpy as np

        className = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        volumeNode = slicer.util.addVolumeFromArray(np.asarray(array), np.asarray(ijkToRas, dtype=float), name,
                                                    nodeClassName=className)
        if frameOfReferenceUid:
            volumeNode.SetAttribute("DICOM.FrameOfReferenceUID", frameOfReferenceUid)
        return volumeNode

    def _addPoints(self, name, points):
        pointsNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        for n, point in enumerate(points):
            pointsNode.AddControlPoint(vtk.vtkVector3d(*point), f"P{n + 1}")
        return pointsNode

    @staticmethod
    def _toParent(transformNode):
        return slicer.util.arrayFromTransformMatrix(transformNode)

    # -- tests --

    def test_computeGeometryTransform_frameOfReference(self):
        """Same FrameOfReferenceUID gives identity; different UIDs give an error naming the alternatives."""
        import numpy as np

        fixed = self._addVolume(np.zeros((4, 5, 6)), np.diag([1.0, 1.0, 2.0, 1.0]), "fixed", "1.2.3.4")
        moving = self._addVolume(np.zeros((3, 3, 3)), np.diag([0.5, 0.5, 3.0, 1.0]), "moving", "1.2.3.4")
        logic = AlignSeriesLogic()
        transformNode = logic.computeGeometryTransform(fixed, moving, mode="frameOfReference")
        np.testing.assert_allclose(self._toParent(transformNode), np.eye(4), atol=1e-12)
        self.assertEqual(transformNode.GetNodeReferenceID(transformNode.GetMovingNodeReferenceRole()), moving.GetID())
        self.assertEqual(transformNode.GetNodeReferenceID(transformNode.GetFixedNodeReferenceRole()), fixed.GetID())
        # moving voxel (2, 2, 2) lies at RAS (1, 1, 6): fixed voxel (1, 1, 3)
        result = logic.computeGeometryTransformResult(fixed, moving, mode="frameOfReference")
        np.testing.assert_allclose(result.movingIjkToFixedIjk @ [2, 2, 2, 1], [1, 1, 3, 1], atol=1e-12)
        moving.SetAttribute("DICOM.FrameOfReferenceUID", "9.8.7")
        with self.assertRaisesRegex(ValueError, "landmarks"):
            logic.computeGeometryTransform(fixed, moving, mode="frameOfReference")

    def test_computeGeometryTransform_centers(self):
        """Centers mode translates the moving volume's center onto the fixed volume's center."""
        import numpy as np

        fixedIjkToRas = np.array([[-1.0, 0, 0, 50], [0, -1.0, 0, 20], [0, 0, 2.0, -10], [0, 0, 0, 1]])
        fixed = self._addVolume(np.zeros((11, 21, 31)), fixedIjkToRas, "fixed")
        moving = self._addVolume(np.zeros((5, 5, 5)), np.diag([2.0, 2.0, 2.0, 1.0]), "moving")
        transformNode = AlignSeriesLogic().computeGeometryTransform(fixed, moving, mode="centers")
        # centers computed by hand from the voxel-center extents
        fixedCenter = np.array([50 - 15, 20 - 10, -10 + 10])
        movingCenter = np.array([4.0, 4.0, 4.0])
        np.testing.assert_allclose(self._toParent(transformNode)[:3, 3], fixedCenter - movingCenter, atol=1e-9)

    def test_computeGeometryTransform_centersWhereTheViewsShowThem(self):
        """Under a parent transform, centers are compared in world coordinates, and applying aligns them."""
        import numpy as np

        fixed = self._addVolume(np.zeros((11, 21, 31)), np.diag([1.0, 1.0, 2.0, 1.0]), "fixed")
        moving = self._addVolume(np.zeros((5, 5, 5)), np.diag([2.0, 2.0, 2.0, 1.0]), "moving")
        manual = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "manual")
        manualToParent = np.array([[0, -1.0, 0, -8], [1.0, 0, 0, 6], [0, 0, 1.0, -15], [0, 0, 0, 1]])  # 90 deg about S
        slicer.util.updateTransformMatrixFromArray(manual, manualToParent)
        moving.SetAndObserveTransformNodeID(manual.GetID())
        logic = AlignSeriesLogic()
        transformNode = logic.computeGeometryTransform(fixed, moving, mode="centers")
        logic.applyTransform(moving, transformNode)
        movingCenterWorld = slicer.util.arrayFromTransformMatrix(manual, toWorld=True) @ [4.0, 4.0, 4.0, 1.0]
        np.testing.assert_allclose(movingCenterWorld[:3], [15.0, 10.0, 10.0], atol=1e-9)  # the fixed center
        self.assertEqual(moving.GetParentTransformNode(), manual)

    def test_computeGeometryTransform_moments(self):
        """Moments mode moves the moving volume's bright blob onto the fixed volume's blob."""
        import numpy as np

        fixedArray = np.zeros((20, 20, 20), dtype=np.int16)
        fixedArray[4:7, 10:13, 5:8] = 1000  # blob centered at voxel (i, j, k) = (6, 11, 5)
        movingArray = np.zeros((20, 20, 20), dtype=np.int16)
        movingArray[12:15, 3:6, 8:11] = 1000  # blob centered at voxel (9, 4, 13)
        fixed = self._addVolume(fixedArray, np.diag([2.0, 2.0, 2.0, 1.0]), "fixed")
        moving = self._addVolume(movingArray, np.diag([2.0, 2.0, 2.0, 1.0]), "moving")
        transformNode = AlignSeriesLogic().computeGeometryTransform(fixed, moving, mode="moments")
        # blob centers in RAS: fixed (12, 22, 10), moving (18, 8, 26)
        np.testing.assert_allclose(self._toParent(transformNode)[:3, 3], [-6, 14, -16], atol=1e-9)

    def test_describeVolume_andWriteVolume(self):
        """The panel's one-line summary names the grid; a written file is never overwritten."""
        import tempfile
        from pathlib import Path

        import numpy as np

        volume = self._addVolume(np.zeros((3, 4, 5), dtype=np.int16), np.diag([-0.5, -0.5, 2.0, 1.0]), "v", "1.2.3")
        summary = AlignSeriesLogic().describeVolume(volume)
        self.assertIn("5x4x3 voxels", summary)
        self.assertIn("LPS", summary)
        self.assertIn("1.2.3", summary)
        with tempfile.TemporaryDirectory() as folder:
            path = str(Path(folder) / "v.nrrd")
            AlignSeriesLogic().writeVolume(volume, path)
            self.assertTrue(Path(path).is_file())
            with self.assertRaisesRegex(ValueError, "exists"):
                AlignSeriesLogic().writeVolume(volume, path)

    def test_computeLandmarkTransform_rigid(self):
        """Noise-free landmarks under a known rotation and shift give that transform and zero residuals."""
        import numpy as np

        angle = np.deg2rad(30)
        movingToFixed = np.eye(4)
        movingToFixed[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
        movingToFixed[:3, 3] = [5, -3, 12]
        movingPoints = np.array([[0, 0, 0], [40, 0, 0], [0, 30, 0], [0, 0, 20], [10, 20, 30]], dtype=float)
        fixedPoints = movingPoints @ movingToFixed[:3, :3].T + movingToFixed[:3, 3]
        result = AlignSeriesLogic().computeLandmarkTransform(
            self._addPoints("fixed", fixedPoints), self._addPoints("moving", movingPoints), mode="rigid")
        np.testing.assert_allclose(self._toParent(result.transformNode), movingToFixed, atol=1e-9)
        self.assertLess(result.rmsError, 1e-9)
        self.assertEqual(len(result.residuals), len(fixedPoints))
        self.assertLess(result.targetRegistrationError, 1e-6)  # exact landmarks: no localization error
        with self.assertRaisesRegex(ValueError, "collinear"):
            line = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2]], dtype=float)
            AlignSeriesLogic().computeLandmarkTransform(self._addPoints("a", line), self._addPoints("b", line))

    def test_exportResampledVolume_labelmapIsLabelSafe(self):
        """A label map resampled onto a shifted, finer grid keeps exactly its labels; the input is unchanged."""
        import numpy as np

        labels = np.zeros((10, 10, 10), dtype=np.uint8)
        labels[2:8, 2:8, 2:5] = 3
        labels[2:8, 2:8, 5:8] = 7
        labelmap = self._addVolume(labels, np.diag([2.0, 2.0, 2.0, 1.0]), "labels", labelmap=True)
        reference = self._addVolume(np.zeros((15, 15, 15), dtype=np.int16),
                                    [[1.3, 0, 0, 0.7], [0, 1.3, 0, 0.7], [0, 0, 1.3, 0.7], [0, 0, 0, 1]], "reference")
        output = AlignSeriesLogic().exportResampledVolume(labelmap, reference, interpolation="cubic")
        self.assertTrue(output.IsA("vtkMRMLLabelMapVolumeNode"))
        self.assertEqual(set(np.unique(slicer.util.arrayFromVolume(output))), {0, 3, 7})
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(labelmap), labels)
        # reference voxel (i, j, k) = (7, 7, 7) is RAS (9.8, 9.8, 9.8): label voxel (4.9, 4.9, 4.9) -> label 7
        self.assertEqual(slicer.util.arrayFromVolume(output)[7, 7, 7], 7)

    def test_loadDicomSeries_ordersSlicesByPosition(self):
        """A DICOM series written with shuffled file names loads in slice order, on the header geometry."""
        import tempfile
        from pathlib import Path

        import numpy as np

        from AlignSeriesLib import phantom
        from AlignSeriesLib.geometry import VolumeGeometry

        geometry = VolumeGeometry.from_spacing_origin_directions((24, 20, 12), (8.0, 9.0, 15.0), (80, 90, -80),
                                                                 np.diag([-1.0, -1.0, 1.0]))
        acquisition = phantom.Acquisition("CT", "CT", geometry, 1, "1.2.826.0.1.3680043.8.498.1", np.eye(4))
        voxels = phantom.acquire(acquisition)
        with tempfile.TemporaryDirectory() as folder:
            phantom.write_dicom_series(acquisition, voxels, Path(folder), study_uid="1.2.826.0.1.3680043.8.498.2")
            volumeNodes = AlignSeriesLogic().loadDicomSeries(folder)
        self.assertEqual(len(volumeNodes), 1)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volumeNodes[0]), voxels)
        ijkToRas = vtk.vtkMatrix4x4()
        volumeNodes[0].GetIJKToRASMatrix(ijkToRas)
        np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(ijkToRas), geometry.ijk_to_ras, atol=1e-3)
        self.assertEqual(volumeNodes[0].GetAttribute("DICOM.FrameOfReferenceUID"), "1.2.826.0.1.3680043.8.498.1")

    def test_applyTransform_keepsMovingGeometry(self):
        """Applying places the transform above the moving volume's own transforms, without hardening anything."""
        import numpy as np

        moving = self._addVolume(np.arange(27, dtype=np.int16).reshape(3, 3, 3), np.eye(4), "moving")
        transformNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        AlignSeriesLogic().applyTransform(moving, transformNode)
        self.assertEqual(moving.GetParentTransformNode(), transformNode)
        ijkToRas = vtk.vtkMatrix4x4()
        moving.GetIJKToRASMatrix(ijkToRas)
        np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(ijkToRas), np.eye(4))
        manual = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "manual")
        other = self._addVolume(np.zeros((3, 3, 3), dtype=np.int16), np.eye(4), "other")
        other.SetAndObserveTransformNodeID(manual.GetID())
        AlignSeriesLogic().applyTransform(other, transformNode)
        AlignSeriesLogic().applyTransform(other, transformNode)  # once is enough: nothing changes
        self.assertEqual(other.GetParentTransformNode(), manual)  # the user's transform is kept
        self.assertEqual(manual.GetParentTransformNode(), transformNode)
