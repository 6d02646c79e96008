"""``vtkImageReslice`` on numpy arrays in index space: the pipeline under :mod:`.resample`.

The input is wrapped without copying as a ``vtkImageData`` of spacing 1 and origin 0; the reslice axes are the
reference-index-to-input-index matrix and the output extent is a box of absolute reference indices, so that every
output voxel is computed from its own index alone, whatever box (or slab of it) is asked for. Threads come from
``vtkSMPTools`` (:data:`SMP_BACKEND`); integer outputs are rounded and clamped to their type by VTK.
"""

from __future__ import annotations

import math

import numpy as np
import vtk
from vtk.util import numpy_support

#: ``vtkSMPTools`` backend used for resampling; the default ``Sequential`` backend uses one core.
SMP_BACKEND = "STDThread"

VTK_INTERPOLATION_MODES = {"nearest": vtk.VTK_NEAREST_INTERPOLATION, "linear": vtk.VTK_LINEAR_INTERPOLATION,
                           "cubic": vtk.VTK_CUBIC_INTERPOLATION}


class Reslicer:
    """Resamples arrays of one input shape onto a box of one reference grid with ``vtkImageReslice``.

    Parameters
    ----------
    array : (K, J, I) C-contiguous ndarray
        The input, ``[k, j, i]``; wrapped without copying.
    reference_ijk_to_input_ijk : (4, 4) ndarray
    reference_shape : tuple of 3 int
        ``(K, J, I)`` of the output.
    box : (first, stop)
        Reference indices ``(i, j, k)`` of the part interpolated (:func:`.resample.footprint_box`); the rest
        is background.
    """

    def __init__(self, array: np.ndarray, reference_ijk_to_input_ijk: np.ndarray, reference_shape, box):
        vtk.vtkSMPTools.SetBackend(SMP_BACKEND)
        self.array = array
        self.reference_shape = tuple(reference_shape)
        self.axes = vtk.vtkMatrix4x4()
        self.axes.DeepCopy(reference_ijk_to_input_ijk.ravel().tolist())
        first, stop = box
        self.window = tuple(slice(first[axis], stop[axis]) for axis in (2, 1, 0))  # [k, j, i] of the box
        self.box_shape = tuple(max(0, stop[axis] - first[axis]) for axis in (2, 1, 0))
        self.whole = self.box_shape == self.reference_shape

    def slabs(self, steps: int) -> list[tuple[int, int]]:
        """The box's slices ``(first, stop)`` (k of the reference) in ``steps`` slabs or fewer."""
        first, stop = self.window[0].start, self.window[0].start + self.box_shape[0]
        step = max(1, math.ceil((stop - first) / steps))
        return [(k, min(k + step, stop)) for k in range(first, stop, step)]

    def reslice(self, array: np.ndarray, *, mode: str, background: float, output_dtype: np.dtype,
                slices: tuple[int, int], scale: float = 1.0) -> np.ndarray:
        """Resample ``array`` (same shape as the input) onto the box's part of reference slices ``slices``.

        Returns a ``(stop - first, box J, box I)`` array of ``output_dtype``, rounded and clamped to it.
        """
        first, stop = slices
        rows, columns = self.window[1], self.window[2]
        reslice = vtk.vtkImageReslice()
        reslice.SetEnableSMP(True)  # threads from vtkSMPTools (SMP_BACKEND) rather than vtkMultiThreader
        reslice.SetInputData(wrap(array))
        reslice.SetResliceAxes(self.axes)
        reslice.SetOutputSpacing(1.0, 1.0, 1.0)
        reslice.SetOutputOrigin(0.0, 0.0, 0.0)
        reslice.SetOutputExtent(columns.start, columns.stop - 1, rows.start, rows.stop - 1, first, stop - 1)
        reslice.SetOutputScalarType(numpy_support.get_vtk_array_type(vtk_dtype(output_dtype)))
        reslice.SetInterpolationMode(VTK_INTERPOLATION_MODES[mode])
        reslice.SetBackgroundLevel(float(background))
        reslice.SetScalarScale(scale)
        reslice.Update()
        scalars = numpy_support.vtk_to_numpy(reslice.GetOutput().GetPointData().GetScalars())
        return scalars.view(output_dtype).reshape((stop - first, *self.box_shape[1:]))


def vtk_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.uint8) if dtype.kind == "b" else np.dtype(dtype)


def wrap(array: np.ndarray) -> vtk.vtkImageData:
    """A ``vtkImageData`` (spacing 1, origin 0) sharing the memory of a C-contiguous [k, j, i] array."""
    flat = array.reshape(-1).view(vtk_dtype(array.dtype))
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=False))
    return image
