"""Fakes of the Qt application that Slicer's real Python framework needs, and nothing else.

``slicer-core`` (PyPI) gives Slicer's real MRML, logics and ``slicer.util``; ``../shared/slicer-framework/``
gives Slicer v5.12.3's real ``ScriptedLoadableModule.py``, ``parameterNodeWrapper/``, ``i18n.py`` and
``testing.py``. What is left is what only exists inside the running Qt application: the ``qt`` and ``ctk``
modules, the ``qMRML…`` widgets, ``slicer.app`` and ``slicer.modules``. This file provides exactly that, so
that ``AlignSeries.py``'s panel runs under pytest on the real framework: the real ``slicer.util.loadUI``
reads the real ``.ui`` file through :class:`QUiLoader` (which parses the XML into fake widgets: objectName,
class, properties, dynamic properties such as ``SlicerParameterName``, and the ``.ui`` connections), and the
real ``parameterNodeWrapper`` GUI connectors bind to those widgets with ``connectGui``.

Each fake copies the C++ behaviour the panel relies on, from the source named in its docstring:

- signals call slots with as many arguments as the slot accepts (PythonQt's ``PythonQtSignalReceiver``);
- :class:`QComboBox`: the first item added to an empty box becomes current; ``clear`` makes the index -1;
  ``currentIndexChanged`` only fires on a change (Qt ``src/widgets/widgets/qcombobox.cpp``:
  ``QComboBoxPrivate::_q_rowsInserted``, ``_q_rowsRemoved``);
- :class:`QLineEdit`: ``setText`` moves the cursor to the end and emits ``textChanged`` only on a change;
  typing inserts at the cursor and emits ``textChanged`` and ``textEdited`` (Qt's ``QLineEdit::text``
  property documentation: "Setting this property ... moves the cursor to the end of the line");
- :class:`QAbstractButton`: ``click()`` does nothing on a disabled button (Qt ``qabstractbutton.cpp``);
- :class:`ctkPathLineEdit`: ``currentPath`` is the line edit's text; ``setCurrentPath`` sets that text;
  CTK's validator (pattern ``.+``) makes an empty field not acceptable: ``currentPathChanged`` is emitted only
  for acceptable text, ``validInputChanged`` when that changes (:class:`QRegularExpressionValidator` copies
  qtbase's verdicts); ``browse()`` opens a save-*file* dialog when the filters
  have ``Files`` and ``Writable``, an open-file dialog with ``Files`` only, else a directory dialog
  (CTK ``Libs/Widgets/ctkPathLineEdit.cpp``: ``browse``, ``setCurrentPath``, ``updateHasValidInput``);
- :class:`qMRMLNodeComboBox`: lists scene nodes that ``IsA`` one of ``nodeTypes``, only the exact class when
  ``showChildNodeTypes`` is false, never ``HideFromEditors`` nodes (Slicer
  ``Libs/MRML/Widgets/qMRMLSortFilterProxyModel.cxx``, ``filterAcceptNode``); ``setCurrentNode`` of a node it
  does not list selects nothing ("None") and emits ``currentNodeChanged(None)``; with ``noneEnabled`` false the
  first node added to an empty list becomes current; removing the current node selects the row now at its
  place, ``min(count - 1, row)``, as ``QComboBoxPrivate::_q_rowsRemoved`` does (Slicer
  ``Libs/MRML/Widgets/qMRMLNodeComboBox.cxx``: ``setCurrentNodeIDInternal``, ``emitCurrentNodeChanged``,
  ``refreshIfCurrentNodeHidden``);
- :class:`qMRMLWidget`: ``setMRMLScene`` emits ``mrmlSceneChanged`` (Slicer ``Libs/MRML/Widgets/qMRMLWidget.cxx``);
- :class:`ScriptedModuleWidget`: ``setPythonSource`` instantiates ``<Module>Widget`` from ``sys.modules`` and
  publishes it as ``slicer.modules.<Module>Widget``; ``reload`` does that again then ``setup``; ``enter``/``exit``
  call the Python methods (Slicer ``Base/QTGUI/qSlicerScriptedLoadableModuleWidget.cxx``);
- :class:`SlicerApplication`: ``processEvents`` delivers the user actions a test queued (what a real event
  loop does while a job calls it), message boxes are recorded instead of shown, the override cursor is a
  stack (``QApplication::setOverrideCursor``).

Modal dialogs (``QFileDialog``) answer from :attr:`QFileDialog.answers`, which a test fills as a user would.
Nothing of MRML is faked: nodes, scene and events are slicer-core's.
"""

from __future__ import annotations

import collections
import inspect
import sys
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import slicer
import vtk

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_FRAMEWORK = PROJECT_ROOT.parent / "shared" / "slicer-framework"
FRAMEWORK_MODULES = ("i18n", "parameterNodeWrapper", "ScriptedLoadableModule", "testing")


# -- signals (PythonQt) -------------------------------------------------------------------------


def _accepted_argument_count(slot) -> int | None:
    """How many positional arguments a slot takes (None: any), as PythonQt trims a signal's arguments."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


class Signal:
    """A bound Qt signal: ``connect``, ``disconnect`` (error when not connected, as Qt warns), ``emit``."""

    def __init__(self):
        self._slots = []

    def connect(self, slot):
        self._slots.append(slot)

    def disconnect(self, slot):
        self._slots.remove(slot)  # ValueError when not connected

    def emit(self, *args):
        for slot in list(self._slots):
            count = _accepted_argument_count(slot)
            slot(*(args if count is None else args[:count]))


class signal:  # noqa: N801  (reads like Qt's Signal declaration)
    """Class-level declaration; each object gets its own :class:`Signal`."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return obj.__dict__.setdefault("_signal_" + self.name, Signal())


# -- QtCore -------------------------------------------------------------------------------------


class QObject:
    destroyed = signal()

    def __init__(self, parent=None):
        self.objectName = ""
        self._parent = None
        self._children = []
        self._properties = {}
        if parent is not None:
            self.setParent(parent)

    @property
    def name(self):  # PythonQt exposes objectName as ``name`` too
        return self.objectName

    @name.setter
    def name(self, value):
        self.objectName = value

    def parent(self):
        return self._parent

    def setParent(self, parent):
        if self._parent is not None:
            self._parent._children.remove(self)
        self._parent = parent
        if parent is not None:
            parent._children.append(self)

    def children(self):
        return list(self._children)

    def findChildren(self, cls=None):
        found = []
        for child in self._children:
            if cls is None or isinstance(child, cls):
                found.append(child)
            found += child.findChildren(cls)
        return found

    def property(self, name):
        return self._properties.get(name)

    def setProperty(self, name, value):
        self._properties[name] = value

    def isWidgetType(self):
        return False

    def className(self):
        return type(self).__name__

    def connect(self, signature, slot):
        getattr(self, signature.split("(")[0]).connect(slot)

    def disconnect(self, signature, slot):
        getattr(self, signature.split("(")[0]).disconnect(slot)

    def deleteLater(self):
        pass


class Qt:
    WaitCursor = 16
    ShiftModifier = 0x02000000
    NoModifier = 0


class QSettings:
    """In-memory application settings shared by every instance, as QSettings' store is."""

    store = {}

    def value(self, key, default=None):
        return self.store.get(key, default)

    def setValue(self, key, value):
        self.store[key] = value

    def contains(self, key):
        return key in self.store


class QFile:
    ReadOnly = 1

    def __init__(self, path):
        self.path = str(path)

    def exists(self):
        return Path(self.path).is_file()

    def open(self, mode):
        return self.exists()


class QCursor:
    def __init__(self, shape=0):
        self._shape = shape

    def shape(self):
        return self._shape


class QApplication:
    _override_cursors = []

    @classmethod
    def setOverrideCursor(cls, cursor):
        cls._override_cursors.append(cursor)

    @classmethod
    def restoreOverrideCursor(cls):
        cls._override_cursors.pop()

    @classmethod
    def overrideCursor(cls):
        return QCursor(cls._override_cursors[-1]) if cls._override_cursors else None


# -- QtGui / QtWidgets --------------------------------------------------------------------------


class QColor:
    """Named by the parameter node serializers (``QColorSerializer``, ``ObservedQColor``); the panel has no colour."""

    def __init__(self, *args):
        self.args = args


class QIcon:
    def __init__(self, path=""):
        self.path = str(path)


class QLayout(QObject):
    """Widgets added to a layout become children of the widget that owns the layout."""

    def __init__(self, parent=None):
        super().__init__()
        self._items = []
        self._owner = None
        if parent is not None:
            parent.setLayout(self)

    def _adopt(self, item):
        self._items.append(item)
        if isinstance(item, QWidget) and self._owner is not None:
            item.setParent(self._owner)
        if isinstance(item, QLayout):
            item._owner = self._owner

    def addWidget(self, widget, *args):
        self._adopt(widget)

    def addLayout(self, layout, *args):
        self._adopt(layout)

    def count(self):
        return len(self._items)

    def itemAt(self, index):
        return self._items[index] if 0 <= index < len(self._items) else None

    def removeItem(self, item):
        self._items.remove(item)


class QVBoxLayout(QLayout):
    pass


class QHBoxLayout(QLayout):
    pass


class QFormLayout(QLayout):
    pass


class QGridLayout(QLayout):
    pass


class QWidget(QObject):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.enabled = True
        self.toolTip = ""
        self._hidden = False
        self._layout = None

    def isWidgetType(self):
        return True

    def layout(self):
        return self._layout

    def setLayout(self, layout):
        self._layout = layout
        layout._owner = self
        layout.setParent(self)

    def show(self):
        self._hidden = False

    def hide(self):
        self._hidden = True

    def isVisible(self):
        widget = self
        while widget is not None:
            if isinstance(widget, QWidget) and widget._hidden:
                return False
            widget = widget.parent()
        return True

    @property
    def visible(self):
        return self.isVisible()


class QStatusBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.messages = []

    def showMessage(self, message, timeout=0):
        self.messages.append(message)

    def currentMessage(self):
        return self.messages[-1] if self.messages else ""


class QMainWindow(QWidget):
    def __init__(self):
        super().__init__()
        self.objectName = "qSlicerMainWindow"
        self._status_bar = QStatusBar(self)

    def statusBar(self):
        return self._status_bar


class QLabel(QWidget):
    def __init__(self, text="", parent=None):
        super().__init__(parent)
        self.text = text
        self.wordWrap = False


class QAbstractButton(QWidget):
    """``click()`` emits ``clicked`` only on an enabled button (Qt ``QAbstractButton::click``)."""

    clicked = signal()
    toggled = signal()

    def __init__(self, text="", parent=None):
        super().__init__(parent)
        self.text = text
        self.checkable = False
        self._checked = False

    @property
    def checked(self):
        return self._checked

    @checked.setter
    def checked(self, value):
        value = bool(value)
        if self.checkable and value != self._checked:  # setChecked does nothing on a non-checkable button
            self._checked = value
            self.toggled.emit(value)
            self._state_changed(value)

    def _state_changed(self, value):
        pass

    def click(self):
        if not self.enabled:
            return
        if self.checkable:
            self.checked = not self._checked
        self.clicked.emit(self._checked)


class QPushButton(QAbstractButton):
    pass


class QToolButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    stateChanged = signal()

    def __init__(self, text="", parent=None):
        super().__init__(text, parent)
        self.checkable = True

    def _state_changed(self, value):
        self.stateChanged.emit(2 if value else 0)


class QComboBox(QWidget):
    """The first item added to an empty box becomes current; ``clear`` resets the index to -1 (Qt)."""

    currentIndexChanged = signal()
    currentTextChanged = signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items = []
        self._index = -1

    def addItem(self, text, userData=None):
        self._items.append(str(text))
        if self._index == -1:
            self.currentIndex = 0

    def clear(self):
        self._items = []
        self.currentIndex = -1

    def count(self):
        return len(self._items)

    def itemText(self, index):
        return self._items[index]

    @property
    def currentIndex(self):
        return self._index

    @currentIndex.setter
    def currentIndex(self, index):
        index = index if -1 <= index < len(self._items) else -1
        if index != self._index:
            self._index = index
            self.currentIndexChanged.emit(index)
            self.currentTextChanged.emit(self.currentText)

    @property
    def currentText(self):
        return self._items[self._index] if self._index >= 0 else ""


class QLineEdit(QWidget):
    """``setText`` puts the cursor at the end; typing inserts at the cursor (Qt ``QLineEdit``).

    With a validator, ``hasAcceptableInput`` is its verdict on the text (Qt ``qlineedit.cpp``
    ``QLineEdit::hasAcceptableInput``); ``setText`` is never validated (Qt's documentation of ``text``).
    """

    textChanged = signal()
    textEdited = signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._text = ""
        self.cursorPosition = 0
        self._validator = None

    def setValidator(self, validator):
        self._validator = validator

    def hasAcceptableInput(self):
        return self._validator is None or self._validator.validate(self._text) == QValidator.Acceptable

    @property
    def text(self):
        return self._text

    @text.setter
    def text(self, value):
        self.setText(value)

    def setText(self, value):
        value = str(value)
        self.cursorPosition = len(value)
        if value != self._text:
            self._text = value
            self.textChanged.emit(value)

    def setCursorPosition(self, position):
        self.cursorPosition = max(0, min(position, len(self._text)))

    def insert(self, typed):
        """What typing ``typed`` does: inserted at the cursor, which moves after it."""
        position = self.cursorPosition
        self._edit(self._text[:position] + typed + self._text[position:], position + len(typed))

    def backspace(self):
        """What the Backspace key does: the character before the cursor goes (Qt ``QLineEdit::backspace``)."""
        if self.cursorPosition > 0:
            self._edit(self._text[:self.cursorPosition - 1] + self._text[self.cursorPosition:], self.cursorPosition - 1)

    def _edit(self, text, cursor):
        """A user's edit: the validator never makes it Invalid here (see :class:`QRegularExpressionValidator`)."""
        self._text, self.cursorPosition = text, cursor
        self.textChanged.emit(self._text)
        self.textEdited.emit(self._text)


class QValidator:
    Invalid, Intermediate, Acceptable = 0, 1, 2


class QRegularExpressionValidator(QValidator):
    """Acceptable when the whole input matches; an empty input that does not is Intermediate (qtbase
    ``src/gui/util/qvalidator.cpp``, ``QRegularExpressionValidator::validate``: ``input.isEmpty() ||
    m.hasPartialMatch()``). The one pattern the panel meets is CTK's ``.+`` (see :class:`ctkPathLineEdit`),
    which every non-empty single-line text matches: no input is ever Invalid, which this fake relies on.
    """

    def __init__(self, pattern):
        self.pattern = pattern

    def validate(self, text):
        import re

        if re.fullmatch(self.pattern, text):
            return self.Acceptable
        if text == "":
            return self.Intermediate
        raise NotImplementedError(f"partial matching of {self.pattern!r} is not faked: the panel never needs it")


class QPlainTextEdit(QWidget):
    textChanged = signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.plainText = ""
        self.readOnly = False


class QTextEdit(QPlainTextEdit):
    pass


class QTableWidgetItem:
    def __init__(self, text=""):
        self._text = str(text)

    def text(self):
        return self._text


class QTableWidget(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self._rows = 0
        self.columnCount = 0
        self._items = {}
        self.horizontalHeaderLabels = []

    def rowCount(self):
        return self._rows

    def setRowCount(self, rows):
        self._rows = rows
        self._items = {key: item for key, item in self._items.items() if key[0] < rows}

    def setItem(self, row, column, item):
        self._items[(row, column)] = item

    def item(self, row, column):
        return self._items.get((row, column))


class QProgressBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.value = 0
        self.minimum = 0
        self.maximum = 100


class _SpinBox(QWidget):
    valueChanged = signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.minimum, self.maximum, self._value = 0, 99, 0
        self.singleStep = 1
        self.specialValueText = ""
        self.suffix = ""

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, value):
        value = min(max(value, self.minimum), self.maximum)
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    def setMinimum(self, value):
        self.minimum = value
        self.value = self._value

    def setMaximum(self, value):
        self.maximum = value
        self.value = self._value


class QSpinBox(_SpinBox):
    pass


class QDoubleSpinBox(_SpinBox):
    pass


class QSlider(_SpinBox):
    pass


class QGroupBox(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.title = ""
        self.checkable = False
        self.checked = True


class QFrame(QWidget):
    pass


class QMessageBox:
    Ok = 0x400
    Cancel = 0x400000
    Critical = 3
    Warning = 2
    Information = 1


class QFileDialog:
    """Modal file dialogs: each answers with the next of :attr:`answers` ("" = the user cancelled)."""

    answers = collections.deque()
    calls = []

    @classmethod
    def _answer(cls, kind, caption):
        cls.calls.append((kind, caption))
        return cls.answers.popleft() if cls.answers else ""

    @classmethod
    def getExistingDirectory(cls, parent=None, caption="", directory="", options=0):
        return cls._answer("getExistingDirectory", caption)

    @classmethod
    def getSaveFileName(cls, parent=None, caption="", directory="", filter="", *args):
        return cls._answer("getSaveFileName", caption)

    @classmethod
    def getOpenFileName(cls, parent=None, caption="", directory="", filter="", *args):
        return cls._answer("getOpenFileName", caption)


# -- CTK ----------------------------------------------------------------------------------------


class ctkCollapsibleButton(QAbstractButton):
    contentsCollapsed = signal()

    def __init__(self, text="", parent=None):
        super().__init__(text, parent)
        self._collapsed = False

    @property
    def collapsed(self):
        return self._collapsed

    @collapsed.setter
    def collapsed(self, value):
        if bool(value) != self._collapsed:
            self._collapsed = bool(value)
            self.contentsCollapsed.emit(self._collapsed)


class ctkCollapsibleGroupBox(QGroupBox):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.collapsed = False


class ctkPathLineEdit(QWidget):
    """A line edit whose text is the path, behind CTK's validator (CTK ``Libs/Widgets/ctkPathLineEdit.cpp``;
    line numbers at commontk/CTK 868d56c).

    - ``init`` (l. 224-235) and ``createPathLineEditWidget`` (l. 280, 296-298): the line edit gets a
      ``QRegularExpressionValidator`` whose pattern ``updateFilter`` (l. 388-394) takes from
      ``ctk::nameFiltersToRegularExpression`` (``Libs/Core/ctkUtils.cpp``, ``nameFiltersToRegExpPattern``,
      l. 153-184): ``.+`` when there are no name filters (the panel sets none);
    - ``updateHasValidInput`` (l. 730-757, on every ``textChanged``): emits ``currentPathChanged`` only when the text is
      acceptable, and ``validInputChanged`` when acceptability changes; so emptying the field emits
      ``validInputChanged(false)`` and no ``currentPathChanged``;
    - ``currentPath`` (l. 702-706) is the line edit's text, acceptable or not; ``setCurrentPath`` (l. 709-720)
      sets that text.
    """

    Dirs, Files, Drives, NoSymLinks, Readable, Writable, Executable = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40
    currentPathChanged = signal()
    validInputChanged = signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.filters = self.Files | self.Dirs | self.Drives | self.NoSymLinks | self.Readable  # CTK's default
        self.showBrowseButton = True
        self.label = ""
        self._hasValidInput = False  # ctkPathLineEditPrivate's constructor
        self._lineEdit = QLineEdit(self)
        self._lineEdit.setValidator(QRegularExpressionValidator(".+"))
        self._lineEdit.textChanged.connect(self._updateHasValidInput)

    @property
    def nameFilters(self):
        return []

    @nameFilters.setter
    def nameFilters(self, filters):
        if filters:
            raise NotImplementedError("name filters change CTK's validator pattern; the panel sets none")

    def lineEdit(self):
        return self._lineEdit

    @property
    def currentPath(self):
        return self._lineEdit.text

    def setCurrentPath(self, path):
        self._lineEdit.setText(path)

    def _updateHasValidInput(self, text):
        wasValid, self._hasValidInput = self._hasValidInput, self._lineEdit.hasAcceptableInput()
        if self._hasValidInput:
            self.currentPathChanged.emit(self.currentPath)
        if self._hasValidInput != wasValid:
            self.validInputChanged.emit(self._hasValidInput)

    def browse(self):
        if self.filters & self.Files:
            dialog = QFileDialog.getSaveFileName if self.filters & self.Writable else QFileDialog.getOpenFileName
            path = dialog(self, "Select a file to save " if self.filters & self.Writable else "Open a file")
        else:
            path = QFileDialog.getExistingDirectory(self, "Select a directory...")
        if path:
            self.setCurrentPath(path)


class ctkMessageBox(QWidget):
    """Records what would be shown; ``exec_`` returns Ok at once."""

    shown = []

    def __init__(self, parent=None):
        super().__init__(None)
        self.text = ""
        self.detailedText = ""

    def exec_(self):
        ctkMessageBox.shown.append(self.text)
        return QMessageBox.Ok


class _UnusedWidgetType(QWidget):
    """A widget class the GUI connectors name in their type checks; the panel has none."""


ctkCheckBox = type("ctkCheckBox", (QCheckBox,), {})
ctkComboBox = type("ctkComboBox", (QComboBox,), {})
ctkDirectoryButton = type("ctkDirectoryButton", (_UnusedWidgetType,), {})
ctkSliderWidget = type("ctkSliderWidget", (_UnusedWidgetType,), {})
ctkDoubleSlider = type("ctkDoubleSlider", (_UnusedWidgetType,), {})
ctkDoubleSpinBox = type("ctkDoubleSpinBox", (_UnusedWidgetType,), {})
ctkRangeWidget = type("ctkRangeWidget", (_UnusedWidgetType,), {})
ctkDoubleRangeSlider = type("ctkDoubleRangeSlider", (_UnusedWidgetType,), {})
ctkCheckablePushButton = type("ctkCheckablePushButton", (_UnusedWidgetType,), {})
ctkColorPickerButton = type("ctkColorPickerButton", (_UnusedWidgetType,), {})


# -- Slicer's MRML widgets ----------------------------------------------------------------------


class qMRMLWidget(QWidget):
    """``setMRMLScene`` emits ``mrmlSceneChanged`` when the scene changes (``qMRMLWidget.cxx``)."""

    mrmlSceneChanged = signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene):
        if scene is not self._scene:
            self._scene = scene
            self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


class qSlicerWidget(qMRMLWidget):
    pass


class qMRMLNodeComboBox(QWidget):
    """A node selector over the real scene (``qMRMLNodeComboBox.cxx``, ``qMRMLSortFilterProxyModel.cxx``)."""

    currentNodeChanged = signal()
    currentNodeIDChanged = signal()
    nodeAdded = signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._nodeTypes = []
        self._showChildNodeTypes = True
        self.noneEnabled = False
        self.addEnabled = True
        self.removeEnabled = True
        self.renameEnabled = False
        self.showHidden = False
        self.noneDisplay = "None"
        self._scene = None
        self._observations = []
        self._currentID = None

    # filtering (qMRMLSortFilterProxyModel::filterAcceptNode)
    @property
    def nodeTypes(self):
        return list(self._nodeTypes)

    @nodeTypes.setter
    def nodeTypes(self, types_):
        self._nodeTypes = list(types_)
        self._refreshIfCurrentNodeHidden()

    @property
    def showChildNodeTypes(self):
        return self._showChildNodeTypes

    @showChildNodeTypes.setter
    def showChildNodeTypes(self, value):
        self._showChildNodeTypes = bool(value)
        self._refreshIfCurrentNodeHidden()

    def _accepts(self, node) -> bool:
        if node is None or (not self.showHidden and node.GetHideFromEditors()):
            return False
        if not self._nodeTypes:
            return True
        return any(node.IsA(t) and (self._showChildNodeTypes or node.GetClassName() == t) for t in self._nodeTypes)

    def nodes(self):
        if self._scene is None:
            return []
        scene_nodes = self._scene.GetNodes()
        listed = (scene_nodes.GetItemAsObject(n) for n in range(scene_nodes.GetNumberOfItems()))
        return [node for node in listed if self._accepts(node)]

    # scene
    def setMRMLScene(self, scene):
        for observed, tag in self._observations:
            observed.RemoveObserver(tag)
        self._observations = []
        self._scene = scene
        if scene is not None:
            self._observations = [(scene, scene.AddObserver(scene.NodeAddedEvent, self._onNodeAdded)),
                                  (scene, scene.AddObserver(scene.NodeAboutToBeRemovedEvent, self._onNodeRemoved))]
        self._currentID = None
        if not self.noneEnabled and self.nodes():
            self._setCurrent(self.nodes()[0])

    def mrmlScene(self):
        return self._scene

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def _onNodeAdded(self, scene, event, node):
        if self._accepts(node):
            self.nodeAdded.emit(node)
            if self._currentID is None and not self.noneEnabled and self.nodes() == [node]:
                self._setCurrent(node)  # QComboBox makes the first item of an empty list current

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def _onNodeRemoved(self, scene, event, node):
        if node is None or node.GetID() != self._currentID:
            return
        rows = ([None] if self.noneEnabled else []) + self.nodes()
        row = next(n for n, listed in enumerate(rows) if listed is not None and listed.GetID() == self._currentID)
        remaining = rows[:row] + rows[row + 1:]
        self._setCurrent(remaining[min(row, len(remaining) - 1)] if remaining else None)

    # selection
    def currentNode(self):
        node = self._scene.GetNodeByID(self._currentID) if self._scene is not None and self._currentID else None
        return node if self._accepts(node) else None

    def setCurrentNode(self, node):
        self._setCurrent(node if self._accepts(node) and node in self.nodes() else None)

    def _setCurrent(self, node):
        newID = node.GetID() if node is not None else None
        if newID != self._currentID:
            self._currentID = newID
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(newID or "")

    def _refreshIfCurrentNodeHidden(self):
        if self._currentID is not None and self.currentNode() is None:
            self._setCurrent(None)


class _UnusedMRMLWidgetType(QWidget):
    """A qMRML widget class the GUI connectors name in their type checks; the panel has none."""


qMRMLSliderWidget = type("qMRMLSliderWidget", (_UnusedMRMLWidgetType,), {})
qMRMLSpinBox = type("qMRMLSpinBox", (_UnusedMRMLWidgetType,), {})
qMRMLRangeWidget = type("qMRMLRangeWidget", (_UnusedMRMLWidgetType,), {})


# -- Qt Designer files (QUiLoader) --------------------------------------------------------------


def _ui_value(element):
    """The Python value of a ``<property>``'s child element in a .ui file."""
    kind, text = element.tag, element.text or ""
    if kind == "bool":
        return text == "true"
    if kind == "number":
        return int(text)
    if kind == "double":
        return float(text)
    if kind == "stringlist":
        return [s.text or "" for s in element.findall("string")]
    if kind == "set":
        return sum(_flag_value(flag) for flag in text.split("|"))
    if kind in ("rect", "size"):
        return {child.tag: int(child.text) for child in element}
    return text


def _flag_value(flag):
    owner, _, name = flag.partition("::")
    return getattr(_WIDGET_CLASSES.get(owner), name, 0) if name else 0


class QUiLoader:
    """Builds the widget tree of a .ui file: classes, names, properties, dynamic properties, connections."""

    def load(self, qfile, parent=None):
        root = ElementTree.parse(qfile.path).getroot()
        self._named = {}
        widget = self._widget(root.find("widget"), parent)
        for connection in root.iter("connection"):
            sender = self._named[connection.findtext("sender")]
            receiver = self._named[connection.findtext("receiver")]
            sender.connect(connection.findtext("signal"), getattr(receiver, connection.findtext("slot").split("(")[0]))
        return widget

    def _widget(self, element, parent):
        cls = _WIDGET_CLASSES.get(element.get("class"))
        if cls is None:
            raise RuntimeError(f"no fake for widget class {element.get('class')}: add it to slicer_qt_fakes.py")
        widget = cls()
        widget.objectName = element.get("name")
        self._named[widget.objectName] = widget
        if parent is not None:
            widget.setParent(parent)
        for prop in element.findall("property"):
            value = _ui_value(prop[0])
            if prop.get("stdset") == "0":
                widget.setProperty(prop.get("name"), value)
            elif prop.get("name") != "geometry":
                setattr(widget, prop.get("name"), value)
        widget.columnCount = len(element.findall("column")) or getattr(widget, "columnCount", 0)
        for child in element:
            if child.tag == "widget":
                self._widget(child, widget)
            elif child.tag == "layout":
                widget.setLayout(self._layout(child, widget))
        return widget

    def _layout(self, element, owner):
        layout = _WIDGET_CLASSES[element.get("class")]()
        layout.objectName = element.get("name")
        layout._owner = owner
        for item in element.findall("item"):
            for child in item:
                if child.tag == "widget":
                    layout.addWidget(self._widget(child, owner))
                elif child.tag == "layout":
                    layout.addLayout(self._layout(child, owner))
        return layout


_WIDGET_CLASSES = {cls.__name__: cls for cls in (
    QWidget, QLabel, QPushButton, QToolButton, QCheckBox, QComboBox, QLineEdit, QPlainTextEdit, QTextEdit,
    QTableWidget, QProgressBar, QSpinBox, QDoubleSpinBox, QGroupBox, QFrame, QVBoxLayout, QHBoxLayout,
    QFormLayout, QGridLayout, ctkCollapsibleButton, ctkCollapsibleGroupBox, ctkPathLineEdit, qMRMLWidget,
    qMRMLNodeComboBox)}
_WIDGET_CLASSES["QAbstractItemView"] = type("QAbstractItemView", (), {"NoEditTriggers": 0})


# -- the Slicer application ---------------------------------------------------------------------


class ModuleManager(QObject):
    moduleAboutToBeUnloaded = signal()


class SlicerApplication(QApplication):
    """``slicer.app``: version, testing flag, event delivery, main window, module manager."""

    def __init__(self, version=(5, 12, 3)):
        self.majorVersion, self.minorVersion, self.patchVersion = version
        self.applicationVersion = ".".join(str(v) for v in version)
        self.applicationName = "Slicer"
        self.pendingUserActions = collections.deque()
        self.processEventsCalls = 0
        self._main_window = QMainWindow()
        self._module_manager = ModuleManager()
        self._settings = QSettings()

    def testingEnabled(self):
        return False  # message boxes go to ctkMessageBox.shown, where tests read them

    def processEvents(self, *args):
        """Deliver the user actions a test queued, as the event loop does while a job calls processEvents."""
        self.processEventsCalls += 1
        while self.pendingUserActions:
            self.pendingUserActions.popleft()()

    def topLevelWidgets(self):
        return [self._main_window]

    def moduleManager(self):
        return self._module_manager

    def translate(self, context, text):
        return text

    def layoutManager(self):
        return None


class LoadableModule:
    """``slicer.modules.<name>`` of a scripted module: its path and its (one) widget representation."""

    def __init__(self, path):
        self.path = str(path)
        self.title = ""
        self.categories = []
        self.dependencies = []
        self.contributors = []
        self.helpText = ""
        self.acknowledgementText = ""
        self.icon = None
        self._widget = None

    def widgetRepresentation(self):
        if self._widget is None:
            self._widget = ScriptedModuleWidget(self.path)
            self._widget.setPythonSource(self.path)
            self._widget.setup()
        return self._widget


class ScriptedModuleWidget(qSlicerWidget):
    """Hosts the Python ``<Module>Widget`` (``qSlicerScriptedLoadableModuleWidget.cxx``)."""

    def __init__(self, path):
        super().__init__()
        self.setLayout(QVBoxLayout())
        self.isEntered = False
        self.pythonSource = str(path)
        self.self = None

    def setPythonSource(self, path):
        module_name = Path(path).stem
        widget_class = getattr(sys.modules[module_name], module_name + "Widget")
        self.self = widget_class(self)
        setattr(slicer.modules, module_name + "Widget", self.self)

    def setup(self):
        self.self.setup()

    def reload(self):
        self.setPythonSource(self.pythonSource)
        self.setup()

    def enter(self):
        self.isEntered = True
        self.self.enter()

    def exit(self):
        self.isEntered = False
        self.self.exit()


# -- ctkDICOMDatabase -----------------------------------------------------------------------------


class DICOMDatabase:
    """``slicer.dicomDatabase``: the two look-ups AlignSeries makes, over real DICOM files.

    ``fileForInstance(SOPInstanceUID)`` gives the file ("" when unknown) and ``fileValue(file, "gggg,eeee")``
    a tag's value as text ("" when absent), as CTK ``Libs/DICOM/Core/ctkDICOMDatabase.cpp`` answers them.
    """

    isOpen = True

    def __init__(self, files):
        import pydicom

        self._files = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): str(f) for f in files}

    def fileForInstance(self, sopInstanceUid):
        return self._files.get(sopInstanceUid, "")

    def fileValue(self, fileName, tag):
        import pydicom

        group, element = (int(part, 16) for part in tag.split(","))
        element = pydicom.dcmread(fileName, stop_before_pixels=True).get((group, element))
        return "" if element is None else str(element.value)


# -- installation -------------------------------------------------------------------------------


def _module(name, members):
    module = types.ModuleType(name, f"Fake of the Qt application's {name} module (Testing/slicer_qt_fakes.py)")
    module.__dict__.update(members)
    return module


def install() -> bool:
    """Install ``qt``, ``ctk`` and the qMRML widget classes, then import Slicer's real framework.

    Returns False (and installs nothing) when ``../shared/slicer-framework`` is absent. ``slicer.app`` is not
    set here: :func:`start_application` sets it for one test, because ``AlignSeriesLib.mrml`` behaves as
    inside the application whenever ``slicer.app`` exists.
    """
    if not (SHARED_FRAMEWORK / "slicer" / "parameterNodeWrapper").is_dir():
        return False
    qt_members = {name: value for name, value in globals().items() if name.startswith("Q") or name == "Qt"}
    qt_members["QAbstractItemView"] = _WIDGET_CLASSES["QAbstractItemView"]
    sys.modules["qt"] = _module("qt", qt_members)
    sys.modules["ctk"] = _module("ctk", {name: value for name, value in globals().items() if name.startswith("ctk")})
    for name in ("qMRMLWidget", "qSlicerWidget", "qMRMLNodeComboBox", "qMRMLSliderWidget", "qMRMLSpinBox",
                 "qMRMLRangeWidget"):
        setattr(slicer, name, globals()[name])
    framework = str(SHARED_FRAMEWORK / "slicer")
    if framework not in slicer.__path__:
        slicer.__path__.append(framework)
    import importlib

    for name in FRAMEWORK_MODULES:
        setattr(slicer, name, importlib.import_module("slicer." + name))
    return True


def start_application(module_path, logics, version=(5, 12, 3)) -> SlicerApplication:
    """Set ``slicer.app`` and ``slicer.modules`` (the scripted module at ``module_path`` and the given
    module logics, e.g. ``{"volumes": vtkSlicerVolumesLogic}``), with no recorded dialogs or settings."""
    ctkMessageBox.shown.clear()
    QFileDialog.answers.clear()
    QFileDialog.calls.clear()
    QSettings.store.clear()
    QApplication._override_cursors.clear()
    slicer.app = SlicerApplication(version)
    slicer.modules = types.SimpleNamespace(**{name: types.SimpleNamespace(logic=lambda logic=logic: logic)
                                              for name, logic in logics.items()})
    slicer.modules.__dict__[Path(module_path).stem.lower()] = LoadableModule(module_path)
    return slicer.app


def stop_application() -> None:
    """Remove ``slicer.app``, ``slicer.modules`` and ``slicer.selfTests``: slicer-core is headless again."""
    for name in ("app", "modules", "selfTests"):
        if hasattr(slicer, name):
            delattr(slicer, name)
