"""``vtkImageReslice`` on numpy arrays in index space: the pipeline under :mod:`.resample`.

The input is wrapped without copying as a ``vtkImageData`` of spacing 1 and origin 0; the reslice axes are the
reference-index-to-input-index matrix and the output extent is a box of absolute reference indices, so that every
output voxel is computed from its own index alone, whatever box (or slab of it) is asked for. Threads come from
``vtkSMPTools`` (:data:`SMP_BACKEND`); integer outputs are rounded and clamped to their type by VTK.
"""

from __future__ import annotations

import numpy as np
from vtkmodules.util import numpy_support

from . import vtk_classes as vtk

#: ``vtkSMPTools`` backend used for resampling; the default ``Sequential`` backend uses one core.
SMP_BACKEND = "STDThread"

VTK_INTERPOLATION_MODES = {"nearest": vtk.VTK_NEAREST_INTERPOLATION, "linear": vtk.VTK_LINEAR_INTERPOLATION,
                           "cubic": vtk.VTK_CUBIC_INTERPOLATION}


Box = tuple[tuple[int, int, int], tuple[int, int, int]]  # reference indices (i, j, k): first <= index < stop


class Reslicer:
    """Resamples arrays of one input shape onto boxes of one reference grid with ``vtkImageReslice``.

    Parameters
    ----------
    array : (K, J, I) C-contiguous ndarray
        The input, ``[k, j, i]``; wrapped without copying.
    reference_ijk_to_input_ijk : (4, 4) ndarray
    reference_shape : tuple of 3 int
        ``(K, J, I)`` of the output.
    box : Box
        The part of the grid interpolated (:func:`.resample.footprint_box`); the rest is background.
    """

    def __init__(self, array: np.ndarray, reference_ijk_to_input_ijk: np.ndarray, reference_shape, box: Box):
        vtk.vtkSMPTools.SetBackend(SMP_BACKEND)
        self.array = array
        self.reference_shape = tuple(reference_shape)
        self.axes = vtk.vtkMatrix4x4()
        self.axes.DeepCopy(reference_ijk_to_input_ijk.ravel().tolist())
        self.box = box
        self.whole = box_shape(box) == self.reference_shape

    def slabs(self, slices: int) -> list[Box]:
        """The box in slabs of ``slices`` reference slices or fewer."""
        (i0, j0, first), (i1, j1, stop) = self.box
        return [((i0, j0, k), (i1, j1, min(k + slices, stop))) for k in range(first, stop, max(1, slices))]

    def reslice(self, array: np.ndarray, *, box: Box, mode: str, background: float, output_dtype: np.dtype,
                scale: float = 1.0) -> np.ndarray:
        """Resample ``array`` (same shape as the input) onto ``box`` of the reference grid.

        Returns an array of ``box_shape(box)`` and ``output_dtype``, rounded and clamped to it.
        """
        (i0, j0, k0), (i1, j1, k1) = box
        reslice = vtk.vtkImageReslice()
        reslice.SetEnableSMP(True)  # threads from vtkSMPTools (SMP_BACKEND) rather than vtkMultiThreader
        reslice.SetInputData(wrap(array))
        reslice.SetResliceAxes(self.axes)
        reslice.SetOutputSpacing(1.0, 1.0, 1.0)
        reslice.SetOutputOrigin(0.0, 0.0, 0.0)
        reslice.SetOutputExtent(i0, i1 - 1, j0, j1 - 1, k0, k1 - 1)
        reslice.SetOutputScalarType(numpy_support.get_vtk_array_type(vtk_dtype(output_dtype)))
        reslice.SetInterpolationMode(VTK_INTERPOLATION_MODES[mode])
        reslice.SetBackgroundLevel(float(background))
        reslice.SetScalarScale(scale)
        reslice.Update()
        scalars = numpy_support.vtk_to_numpy(reslice.GetOutput().GetPointData().GetScalars())
        return scalars.view(output_dtype).reshape(box_shape(box))


def box_shape(box: Box) -> tuple[int, int, int]:
    """``(K, J, I)`` of a box (0 along an axis where it is empty)."""
    (i0, j0, k0), (i1, j1, k1) = box
    return max(0, k1 - k0), max(0, j1 - j0), max(0, i1 - i0)


def window(box: Box) -> tuple[slice, slice, slice]:
    """The ``[k, j, i]`` slices of an array on the reference grid that a box covers."""
    (i0, j0, k0), (i1, j1, k1) = box
    return slice(k0, max(k0, k1)), slice(j0, max(j0, j1)), slice(i0, max(i0, i1))


def filled_array(shape, dtype, value) -> np.ndarray:
    """A C-contiguous array of ``shape`` x ``dtype`` filled with ``value``, whose memory a VTK array owns.

    A volume node then takes it without a copy (:func:`AlignSeriesLib.mrml.add_volume_node` with ``copy=False``);
    ``value=None`` leaves it uninitialised.
    """
    dtype = np.dtype(dtype)
    array = numpy_support.create_vtk_array(numpy_support.get_vtk_array_type(vtk_dtype(dtype)))
    array.SetNumberOfValues(int(np.prod(shape, dtype=np.int64)))
    voxels = numpy_support.vtk_to_numpy(array).view(dtype).reshape(shape)
    if value is not None:
        voxels.fill(value)
    return voxels


def vtk_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.uint8) if dtype.kind == "b" else np.dtype(dtype)


def wrap(array: np.ndarray) -> vtk.vtkImageData:
    """A ``vtkImageData`` (spacing 1, origin 0) sharing the memory of a C-contiguous [k, j, i] array."""
    flat = array.reshape(-1).view(vtk_dtype(array.dtype))
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=False))
    return image
