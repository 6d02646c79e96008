"""The API's volume: voxels ``[k, j, i]`` placed in RAS, with their DICOM provenance and warnings.

A :class:`Volume` wraps one node of the API's private MRML scene, so every job runs through the same
use cases as the command line and the Slicer module (:mod:`AlignSeriesLib.operations`). Arrays come
in only together with their placement: :meth:`Volume.from_array` takes the ``ijk_to_ras`` matrix,
:meth:`Volume.from_nibabel` reads nibabel's ``[i, j, k]`` order and RAS affine itself, and
:meth:`Volume.from_sitk` SimpleITK's ``[k, j, i]`` array and LPS origin, spacing and direction.
nibabel and SimpleITK are imported only when their adapters are called.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from AlignSeriesLib import mrml, mrml_files, registration
from AlignSeriesLib.dicom.series import DicomVolume
from AlignSeriesLib.errors import AlignSeriesWarning, GeometryError
from AlignSeriesLib.geometry import VolumeGeometry, as_matrix4

from . import _scene

#: numpy kinds a volume can hold: signed and unsigned integers and floats (VTK's scalar types).
_VOXEL_KINDS = "iuf"


class Volume:
    """A scalar volume: voxels indexed ``[k, j, i]`` and the 4x4 matrix placing index ``(i, j, k)`` in RAS mm.

    Make one with :func:`alignseries.load`, :meth:`from_array`, :meth:`from_nibabel` or :meth:`from_sitk`;
    :func:`alignseries.resample` returns one. A volume never changes: :attr:`array` is read-only.

    Attributes
    ----------
    array : (K, J, I) ndarray, read-only
    ijk_to_ras, ijk_to_lps : (4, 4) ndarray
    geometry : AlignSeriesLib.geometry.VolumeGeometry
        Dimensions ``(I, J, K)``, spacing, orientation, corners, …
    labelmap : bool
        True for a label map (a segmentation mask): resampled label-safe.
    warnings : list of AlignSeriesWarning
        From the DICOM reconstruction or the resampling (``code``, ``message``).
    dicom : DicomVolume or None
        For a volume loaded from DICOM: its slices in k order, with ``files``, ``frames``,
        ``sop_instance_uids``, ``instance_numbers``, ``series_instance_uid``, ``frame_of_reference_uid``.
    name : str

    Examples
    --------
    >>> import numpy as np, alignseries
    >>> volume = alignseries.Volume.from_array(np.zeros((2, 3, 4), np.int16), ijk_to_ras=np.diag([0.5, 0.5, 2.0, 1]))
    >>> volume.geometry.dimensions, volume.geometry.spacing.tolist()
    ((4, 3, 2), [0.5, 0.5, 2.0])
    """

    def __init__(self, node, *, _token=None):
        if _token is not _PRIVATE:
            raise TypeError("make a Volume with alignseries.load(), Volume.from_array(), Volume.from_nibabel() "
                            "or Volume.from_sitk()")
        self._node = node
        self._job = None  # the export job that made this volume (alignseries.resample), to write its slices
        self._sources: tuple = ()  # what that job read from: kept alive as long as this volume
        _scene.own(self, node)

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def _of_node(cls, node) -> Volume:
        """Wrap (and own) a node of the API's scene."""
        return cls(node, _token=_PRIVATE)

    @classmethod
    def from_array(cls, array_kji, ijk_to_ras, *, labelmap: bool = False, name: str = "volume") -> Volume:
        """A volume from a numpy array indexed ``[k, j, i]`` and its voxel-to-RAS matrix.

        Parameters
        ----------
        array_kji : (K, J, I) array_like
            Voxel values, slices first: ``array_kji[k, j, i]`` is voxel ``(i, j, k)`` (as
            ``slicer.util.arrayFromVolume`` and SimpleITK's ``GetArrayFromImage``; nibabel's arrays are
            ``[i, j, k]``: use :meth:`from_nibabel`). Integers, floats or booleans (stored as uint8); copied.
        ijk_to_ras : (4, 4) array_like
            Maps voxel index ``(i, j, k, 1)`` to RAS mm. For an LPS (DICOM, ITK) matrix use
            ``AlignSeriesLib.geometry.lps_to_ras_matrix(ijk_to_lps)``.
        labelmap : bool
            The array is a label map (mask): it is resampled label-safe.
        name : str

        Raises
        ------
        GeometryError
            If the array is not 3-D, holds an unsupported type, or the matrix is not an invertible 4x4.
        """
        array = np.asarray(array_kji)
        if array.ndim != 3:
            raise GeometryError(f"array_kji must be 3-D, indexed [k, j, i]; got shape {array.shape}")
        if array.dtype == np.bool_:
            array = array.astype(np.uint8)
        if array.dtype.kind not in _VOXEL_KINDS or array.dtype == np.float16:
            raise GeometryError(f"array_kji has type {array.dtype}; use an integer, float32/float64 or bool array")
        geometry = VolumeGeometry(array.shape[::-1], as_matrix4(ijk_to_ras, "ijk_to_ras"))
        if abs(np.linalg.det(geometry.ijk_to_ras[:3, :3])) < 1e-12:
            raise GeometryError(f"ijk_to_ras is singular: {geometry.ijk_to_ras[:3, :3].tolist()}")
        return cls._of_node(mrml.add_volume_node(_scene.scene(), array, geometry, name, labelmap=labelmap))

    @classmethod
    def from_nibabel(cls, image, *, labelmap: bool = False, name: str | None = None) -> Volume:
        """A volume from a nibabel image (NIfTI, MGH, …): its data ``[i, j, k]`` and its RAS affine.

        Parameters
        ----------
        image : nibabel.spatialimages.SpatialImage
            ``image.affine`` maps ``(i, j, k)`` to RAS mm; the data (``image.dataobj``, scaled as
            nibabel scales it) is transposed here to ``[k, j, i]``. Trailing axes of length 1 are dropped.
        labelmap : bool
            The image is a mask: it is resampled label-safe.
        name : str, optional
            By default the image's file name without suffix, or "volume".

        Raises
        ------
        GeometryError
            If the image has more than three axes of length > 1 (a 4-D series or a vector image).
        """
        _require("nibabel")
        data = np.asanyarray(image.dataobj)
        data = _drop_trailing_unit_axes(data, "nibabel image")
        if data.ndim == 2:
            data = data[..., np.newaxis]
        if image.affine is None:
            raise GeometryError("the nibabel image has no affine: its voxels are not placed in space")
        if name is None:
            file_name = image.get_filename()
            name = Path(file_name).name.split(".")[0] if file_name else "volume"
        return cls.from_array(data.transpose(2, 1, 0), image.affine, labelmap=labelmap, name=name)

    @classmethod
    def from_sitk(cls, image, *, labelmap: bool = False, name: str = "volume") -> Volume:
        """A volume from a SimpleITK image: its ``[k, j, i]`` array and LPS origin, spacing and direction.

        Parameters
        ----------
        image : SimpleITK.Image
            A 3-D (or 2-D, one slice) scalar image.
        labelmap : bool
            The image is a mask: it is resampled label-safe.
        name : str

        Raises
        ------
        GeometryError
            If the image has several components per pixel or is not 2-D or 3-D.
        """
        sitk = _require("SimpleITK")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise GeometryError(f"the SimpleITK image has {image.GetNumberOfComponentsPerPixel()} components per "
                                "pixel; AlignSeries resamples scalar volumes only")
        dimension = image.GetDimension()
        if dimension not in (2, 3):
            raise GeometryError(f"the SimpleITK image is {dimension}-D; AlignSeries handles 3-D volumes")
        directions_lps = np.array(image.GetDirection(), dtype=float).reshape(dimension, dimension)
        ijk_to_lps = np.eye(4)
        ijk_to_lps[:dimension, :dimension] = directions_lps * np.array(image.GetSpacing())
        ijk_to_lps[:dimension, 3] = image.GetOrigin()
        array = sitk.GetArrayFromImage(image)
        if dimension == 2:
            array = array[np.newaxis]
        return cls.from_array(array, VolumeGeometry.from_ijk_to_lps(array.shape[::-1], ijk_to_lps).ijk_to_ras,
                              labelmap=labelmap, name=name)

    # -- what it holds ------------------------------------------------------------------------------

    @property
    def array(self) -> np.ndarray:
        """The voxels, indexed ``[k, j, i]`` (read-only; ``.copy()`` to change them)."""
        return mrml.volume_array(self._node, copy=False)

    @property
    def geometry(self) -> VolumeGeometry:
        """The grid: dimensions ``(I, J, K)`` and ``ijk_to_ras``, with spacing, orientation and corners."""
        return mrml.volume_geometry(self._node)

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix from voxel index ``(i, j, k, 1)`` to RAS mm."""
        return self.geometry.ijk_to_ras.copy()

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix from voxel index ``(i, j, k, 1)`` to LPS mm (DICOM's and ITK's patient frame)."""
        return self.geometry.ijk_to_lps

    @property
    def labelmap(self) -> bool:
        """True for a label map (resampled label-safe)."""
        return bool(self._node.IsA("vtkMRMLLabelMapVolumeNode"))

    @property
    def warnings(self) -> list[AlignSeriesWarning]:
        """What to know about this volume: its DICOM reconstruction's warnings; for a resampled volume, its input's
        and its reference's (skipped files, missing slices), then the resampling's."""
        return list(self._job.warnings) if self._job is not None else mrml.node_warnings(self._node)

    @property
    def dicom(self) -> DicomVolume | None:
        """The DICOM series this volume was loaded from (slices, files, UIDs in k order), or None."""
        return mrml.dicom_series_of(self._node)

    @property
    def name(self) -> str:
        return self._node.GetName()

    def __repr__(self) -> str:
        kind = "label map" if self.labelmap else self.array.dtype.name
        return f"<Volume '{self.name}': {self.geometry.summary()}, {kind}>"

    # -- out ----------------------------------------------------------------------------------------

    def save(self, path, *, force: bool = False, compress: bool = False) -> Path:
        """Write the volume to a file (``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``) with Slicer's writer.

        Parameters
        ----------
        compress : bool
            Gzip a ``.nrrd`` or ``.mha`` file (smaller, about ten times slower to write); raw by default, as
            the command line's ``--compress``. A ``.nii.gz`` file is always compressed.

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``force`` is False.
        """
        return mrml_files.save_node(self._node, path, force=force, compress=compress)

    def to_nibabel(self):
        """A ``nibabel.Nifti1Image``: data ``[i, j, k]``, affine = :attr:`ijk_to_ras` (sform and qform codes 1)."""
        nib = _require("nibabel")
        image = nib.Nifti1Image(np.ascontiguousarray(self.array.transpose(2, 1, 0)), self.ijk_to_ras)
        image.set_sform(self.ijk_to_ras, code=1)
        if self.geometry.is_orthogonal:  # a qform cannot hold a sheared grid
            image.set_qform(self.ijk_to_ras, code=1)
        image.header.set_xyzt_units("mm")
        return image

    def to_sitk(self):
        """A ``SimpleITK.Image``: array ``[k, j, i]``, origin, spacing and direction in LPS.

        Raises
        ------
        GeometryError
            For a sheared grid (e.g. gantry tilt), which an ITK image cannot hold.
        """
        return registration.to_sitk_image(_require("SimpleITK"), self.array, self.geometry, f"'{self.name}'")


_PRIVATE = object()


def _require(package: str):
    """Import an optional package, or say which one to install."""
    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise ImportError(f"this needs the Python package '{package}', which is not installed: "
                          f"pip install {package}") from error


def _drop_trailing_unit_axes(data: np.ndarray, what: str) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise GeometryError(f"the {what} has shape {data.shape}; AlignSeries handles 3-D scalar volumes "
                            "(choose one volume of a 4-D image first, e.g. image.slicer[..., 0])")
    return data
