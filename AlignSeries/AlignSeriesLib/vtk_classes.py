"""The VTK classes AlignSeries uses, each imported from its own VTK module instead of ``import vtk``.

``import vtk`` loads every VTK module (``vtkmodules.all``), most of which a command never uses: with it,
``import slicer`` took 8.7 s instead of 4.6 s on a loaded 2-core machine (twice the start-up of a command). The
modules that use VTK import this one as ``from . import vtk_classes as vtk`` and write ``vtk.vtkImageData`` as
before; ``numpy_support`` is ``vtkmodules.util.numpy_support``.
"""

import vtkmodules.vtkRenderingFreeType  # noqa: F401 (registers the FreeType text renderer behind vtkTextRenderer)
from vtkmodules.vtkCommonCore import (
    VTK_CUBIC_INTERPOLATION,
    VTK_LINEAR_INTERPOLATION,
    VTK_NEAREST_INTERPOLATION,
    reference,
    vtkDataArray,
    vtkLogger,
    vtkObject,
    vtkOutputWindow,
    vtkSMPTools,
    vtkStringArray,
    vtkStringOutputWindow,
)
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkVector3d
from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkImagingCore import vtkImageReslice
from vtkmodules.vtkIOImage import vtkPNGWriter
from vtkmodules.vtkRenderingCore import vtkTextProperty, vtkTextRenderer

__all__ = [
    "VTK_CUBIC_INTERPOLATION", "VTK_LINEAR_INTERPOLATION", "VTK_NEAREST_INTERPOLATION", "reference", "vtkDataArray",
    "vtkImageData", "vtkImageReslice", "vtkLogger", "vtkMatrix4x4", "vtkObject", "vtkOutputWindow", "vtkPNGWriter",
    "vtkSMPTools", "vtkStreamingDemandDrivenPipeline", "vtkStringArray", "vtkStringOutputWindow", "vtkTextProperty",
    "vtkTextRenderer", "vtkVector3d",
]
