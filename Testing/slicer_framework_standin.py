"""Stand-in for the parts of the Slicer *application framework* that slicer-core lacks.

``slicer-core`` (PyPI) provides Slicer's real MRML classes, storage nodes, module logics and
``slicer.util``, but not the application framework built on Qt: ``slicer.ScriptedLoadableModule``,
``slicer.i18n`` and ``slicer.parameterNodeWrapper``. This file provides just enough of those three
for ``AlignSeries.py`` to be imported and for its ``AlignSeriesLogic`` and ``AlignSeriesTest``
classes to run under pytest. Nothing of MRML is imitated here: parameter values are stored in a real
``vtkMRMLScriptedModuleNode`` (parameters and node references), exactly where Slicer's wrapper
stores them. Widgets (Qt) are not provided; the module widget is checked statically instead.

Call :func:`install` before ``import AlignSeries``; it does nothing inside the real application.
"""

from __future__ import annotations

import logging
import sys
import types
import typing
import unittest

import slicer


class WithinRange:
    """Validator: the value lies in [minimum, maximum]."""

    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value):
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"value {value} is not within [{self.minimum}, {self.maximum}]")


class Choice:
    """Validator: the value is one of ``choices``."""

    def __init__(self, choices):
        self.choices = tuple(choices)

    def validate(self, value):
        if value not in self.choices:
            raise ValueError(f"value {value!r} is not one of {self.choices}")


def _split_annotation(annotation):
    if typing.get_origin(annotation) is typing.Annotated:
        base, *validators = typing.get_args(annotation)
        return base, validators
    return annotation, []


def _is_node_type(datatype) -> bool:
    return isinstance(datatype, type) and issubclass(datatype, slicer.vtkMRMLNode)


def _parameter_property(name, datatype, validators):
    """A property stored in the wrapped vtkMRMLScriptedModuleNode (node reference or string parameter)."""

    def getter(self):
        if _is_node_type(datatype):
            return self.parameterNode.GetNodeReference(name)
        text = self.parameterNode.GetParameter(name)
        return text == "True" if datatype is bool else datatype(text)

    def setter(self, value):
        if _is_node_type(datatype):
            self.parameterNode.SetNodeReferenceID(name, value.GetID() if value is not None else None)
            return
        value = datatype(value)
        for validator in validators:
            validator.validate(value)
        self.parameterNode.SetParameter(name, str(value))

    return property(getter, setter)


def parameterNodeWrapper(cls):
    """Give ``cls`` typed properties backed by a ``vtkMRMLScriptedModuleNode`` (Slicer's decorator's model).

    Values are validated on assignment; parameters absent from the node get the class defaults.
    """
    annotations = typing.get_type_hints(cls, include_extras=True)
    defaults = {}
    namespace = {"__doc__": cls.__doc__, "allParameters": dict(annotations)}
    for name, annotation in annotations.items():
        datatype, validators = _split_annotation(annotation)
        if not _is_node_type(datatype):
            defaults[name] = cls.__dict__.get(name, datatype())
        namespace[name] = _parameter_property(name, datatype, validators)

    def initialize(self, parameterNode):
        self.parameterNode = parameterNode
        for name, default in defaults.items():
            if name not in parameterNode.GetParameterNames():
                setattr(self, name, default)

    namespace["__init__"] = initialize
    return type(cls.__name__, (), namespace)


class ScriptedLoadableModule:
    """Module descriptor: the application fills ``parent``; here a plain namespace stands in."""

    def __init__(self, parent):
        self.parent = parent
        self.moduleName = type(self).__name__


class ScriptedLoadableModuleWidget:
    """Base of the module widget; the widget needs Qt and is not instantiated outside Slicer."""


class ScriptedLoadableModuleLogic:
    """Base of the module logic: finds or creates the module's singleton parameter node in the scene."""

    def __init__(self, parent=None):
        self.moduleName = type(self).__name__.removesuffix("Logic")
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.AddNode(self.createParameterNode())
        return node

    def createParameterNode(self):
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    """Base of the module test case; ``delayDisplay`` logs instead of showing a message box."""

    def delayDisplay(self, message, requestedDelay=None, msec=None):
        logging.info(message)


class DicomDatabaseStandIn:
    """The two look-ups AlignSeries makes in Slicer's ``ctkDICOMDatabase`` (``slicer.dicomDatabase``).

    Built over real DICOM files: ``fileForInstance(SOPInstanceUID)`` gives the file, ``fileValue(file,
    "gggg,eeee")`` a tag's value as text, as the CTK database answers them.
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


def _translate(context, text):
    return text


def install() -> None:
    """Register the stand-ins as ``slicer.ScriptedLoadableModule``, ``slicer.i18n``, ``slicer.parameterNodeWrapper``."""
    if getattr(slicer, "app", None) is not None:
        return
    modules = {
        "ScriptedLoadableModule": {
            "ScriptedLoadableModule": ScriptedLoadableModule,
            "ScriptedLoadableModuleWidget": ScriptedLoadableModuleWidget,
            "ScriptedLoadableModuleLogic": ScriptedLoadableModuleLogic,
            "ScriptedLoadableModuleTest": ScriptedLoadableModuleTest,
        },
        "i18n": {"tr": lambda text: text, "translate": _translate},
        "parameterNodeWrapper": {"parameterNodeWrapper": parameterNodeWrapper, "WithinRange": WithinRange,
                                 "Choice": Choice},
    }
    for name, members in modules.items():
        module = types.ModuleType(f"slicer.{name}", __doc__)
        module.__dict__.update(members)
        module.__all__ = list(members)
        sys.modules[f"slicer.{name}"] = module
        setattr(slicer, name, module)
