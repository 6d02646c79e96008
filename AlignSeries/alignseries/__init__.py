"""AlignSeries for notebooks and scripts: put two image series of one patient in one space.

The Python door to the jobs of the ``alignseries`` command line and the Slicer module, with the
same implementation behind all three (:mod:`AlignSeriesLib.operations`): load DICOM series and volume
files, compute the transform between two volumes (geometry or landmarks), resample a volume onto a
reference grid, and export it slice for slice with a DICOM reference, as DICOM or PNGs.

Frames and orders, as everywhere in AlignSeries: world coordinates are RAS (``ijk_to_lps`` gives
DICOM's LPS); arrays are indexed ``[k, j, i]``; a transform maps moving to fixed (``moving_to_fixed_ras``).

Examples
--------
An AI mask (NIfTI) on the slices of the CT it was made from, as PNGs and as a DICOM series:

>>> import alignseries                                                   # doctest: +SKIP
>>> ct = alignseries.load("CT_FOLDER")                                  # doctest: +SKIP
>>> mask = alignseries.load("mask.nii.gz", labelmap=True)               # doctest: +SKIP
>>> mask_on_ct = alignseries.resample(mask, ct)                         # doctest: +SKIP
>>> alignseries.write_pngs(mask_on_ct, ct, "mask_png")                  # doctest: +SKIP
>>> alignseries.write_dicom(mask_on_ct, ct, "mask_dicom")               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from AlignSeriesLib import __version__, export_job, exports, mrml, operations
from AlignSeriesLib.choices import GEOMETRY_MODES, INTERPOLATIONS, LANDMARK_MODES, MATCH_METHODS
from AlignSeriesLib.errors import AlignSeriesError, AlignSeriesWarning, ProgressCallback
from AlignSeriesLib.geometry import as_matrix4
from AlignSeriesLib.operations import TransformResult

from . import _scene
from .volume import Volume

__all__ = [
    "GEOMETRY_MODES", "INTERPOLATIONS", "LANDMARK_MODES", "MATCH_METHODS", "AlignSeriesError", "AlignSeriesWarning",
    "TransformResult", "Volume", "__version__", "landmarks", "load", "load_all", "resample", "transform",
    "write_dicom", "write_pngs",
]

PathLike = str | Path

#: Largest difference (mm) between a volume's grid and a reference's for the volume to lie on the reference.
GRID_ATOL_MM = 1e-4


# -- loading ------------------------------------------------------------------------------------------


def load_all(path: PathLike | Sequence[PathLike], *, labelmap: bool | None = None,
             regularize: bool = True) -> list[Volume]:
    """Every volume that a DICOM folder, DICOM files or a volume file holds.

    Parameters
    ----------
    path : str or Path, or a sequence of them
        A DICOM folder (searched recursively), DICOM files, or one volume file (``.nrrd``, ``.nii``,
        ``.nii.gz``, ``.mha``, ``.seg.nrrd``).
    labelmap : bool, optional
        Load a volume file as a label map (a mask, resampled label-safe); ``.seg.nrrd`` always is.
    regularize : bool
        Resample an irregular DICOM series (gantry tilt, gaps) exactly onto a regular grid and say so in
        its ``warnings``; if False, refuse it.

    Returns
    -------
    list of Volume
        DICOM volumes in the order ``alignseries info`` lists them, slices ordered along the normal.

    Raises
    ------
    AlignSeriesError
        If nothing readable is found; the message names the files and why.
    """
    nodes = operations.load_volumes(_scene.scene(), path, labelmap=labelmap, regularize=regularize)
    return [Volume._of_node(node) for node in nodes]


def load(path: PathLike | Sequence[PathLike], volume: int | None = None, *, labelmap: bool | None = None,
         regularize: bool = True) -> Volume:
    """The one volume that ``path`` holds, or volume number ``volume`` (1-based) of several.

    Parameters
    ----------
    path, labelmap, regularize
        As :func:`load_all`.
    volume : int, optional
        Which volume to return when ``path`` holds several (1-based, in :func:`load_all`'s order).

    Raises
    ------
    AlignSeriesError
        If ``path`` holds several volumes and ``volume`` is not given (the message lists them), or
        ``volume`` is out of range.

    Examples
    --------
    >>> ct = alignseries.load("CT_FOLDER")          # doctest: +SKIP
    >>> ct.array.shape, ct.dicom.instance_numbers   # doctest: +SKIP
    """
    volumes = load_all(path, labelmap=labelmap, regularize=regularize)
    if volume is not None:
        if not 1 <= volume <= len(volumes):
            raise AlignSeriesError(f"volume={volume} requested, but {_describe_path(path)} holds {len(volumes)}")
        return volumes[volume - 1]
    if len(volumes) != 1:
        listing = "; ".join(f"[{n}] {found.name}" for n, found in enumerate(volumes, start=1))
        raise AlignSeriesError(f"{_describe_path(path)} holds {len(volumes)} volumes ({listing}): choose one with "
                               "alignseries.load(path, volume=N), or take all with alignseries.load_all(path)")
    return volumes[0]


# -- transforms -----------------------------------------------------------------------------------------


def transform(fixed: Volume, moving: Volume, mode: str = "frameOfReference", *,
              registration: PathLike | None = None) -> TransformResult:
    """The moving-to-fixed transform from two volumes' geometry.

    Parameters
    ----------
    fixed, moving : Volume
    mode : {"frameOfReference", "centers", "moments"}
        ``frameOfReference``: identity when both DICOM series share a FrameOfReferenceUID, or the matrix
        of a DICOM Spatial Registration relating them; an error otherwise, naming the alternatives.
        ``centers`` / ``moments``: a translation pre-alignment (volume centers, intensity centroids).
    registration : str or Path, optional
        A DICOM REG file relating the two frames of reference (REG files among the series' files are
        found without it).

    Returns
    -------
    TransformResult
        ``moving_to_fixed_ras`` and ``moving_ijk_to_fixed_ijk`` (4x4 each), ``explanation``, ``warnings``;
        ``.save(path)`` writes ``.h5``/``.tfm``/``.txt`` (ITK), ``.json``/``.mat4``, ``.mat`` (FLIRT) or
        ``.dcm`` (DICOM REG).

    Raises
    ------
    FrameOfReferenceError
        In ``frameOfReference`` mode when nothing relates the two frames.
    """
    fixed_node, moving_node = _node_of(fixed, "fixed"), _node_of(moving, "moving")
    result = operations.compute_geometry_transform(_scene.scene(), fixed_node, moving_node, mode,
                                                   registrations=[registration] if registration else ())
    return _owned_result(result, fixed, moving)


def landmarks(fixed_points, moving_points, mode: str = "rigid", match: str = "order", *, weights=None,
              fixed_volume: Volume | None = None) -> TransformResult:
    """The moving-to-fixed transform that best maps corresponding points, with its errors.

    Parameters
    ----------
    fixed_points, moving_points : (N, 3) array_like (RAS mm), or a points file
        Files: Slicer markups (``.mrk.json``, ``.fcsv``) or CSV ``x,y,z[,label]`` in RAS.
    mode : {"rigid", "similarity", "affine"}
    match : {"order", "labels", "auto"}
        Pair the points by list order, by label (files), or automatically for unordered lists.
    weights : (N,) array_like, optional
        Per-pair weights, in the fixed list's order.
    fixed_volume : Volume, optional
        The target registration error is estimated at its center (else at the fixed points' centroid).

    Returns
    -------
    TransformResult
        ``moving_to_fixed_ras``, ``rms_error`` and ``residuals`` (mm, in the fixed list's order),
        ``leave_one_out_errors``, ``target_registration_error``, ``warnings``; ``moving_ijk_to_fixed_ijk``
        is None (no volumes); ``.save(path)``.

    Raises
    ------
    LandmarkError
        Too few, degenerate or unpaired points.
    """
    fixed_node = _node_of(fixed_volume, "fixed_volume") if fixed_volume is not None else None
    result = operations.compute_landmark_transform(_scene.scene(), fixed_points, moving_points, mode, match=match,
                                                   weights=weights, fixed_volume=fixed_node)
    return _owned_result(result, fixed_volume)


def _owned_result(result: TransformResult, *volumes) -> TransformResult:
    """Tie the result's transform node to the result's life, and keep the volumes it references alive."""
    _scene.own(result, result.transform_node, *volumes)  # the node references them (FLIRT .mat, DICOM REG)
    return result


# -- resampling and export --------------------------------------------------------------------------


def resample(volume: Volume, reference, transform=None, interpolation: str = "linear",
             labelmap: bool | None = None, *, background: float | None = None, crop_to_overlap: bool = False,
             slab: tuple[int, int] | None = None, progress: ProgressCallback | None = None) -> Volume:
    """``volume`` resampled onto ``reference``'s grid, through a moving-to-fixed transform.

    The export job of the command line and the Slicer module (:func:`AlignSeriesLib.export_job.resample_and_write`),
    with nothing written yet: the result remembers its reference, grid and source, so :func:`write_dicom` and
    :func:`write_pngs` write its slices as the command line would (an irregular reference's slices sampled
    from ``volume`` on each acquired plane, one DICOM encoding for every slab).

    Parameters
    ----------
    volume : Volume
        The moving volume (e.g. a mask, an MR). Never modified.
    reference : Volume, str or Path
        The fixed volume whose grid the output takes, or its path (a DICOM folder or files, or a volume
        file), read header-only.
    transform : TransformResult, (4, 4) array_like, str or Path, optional
        Maps ``volume``'s RAS to ``reference``'s (moving to fixed): a result of :func:`transform` or
        :func:`landmarks`, a 4x4 RAS matrix, or a transform file (``.h5``/``.tfm``/``.txt``, ``.json``/
        ``.mat4``, FLIRT ``.mat`` with ``volume`` as ``-in`` and ``reference`` as ``-ref``). None: the
        volumes are already in one space.
    interpolation : {"nearest", "linear", "cubic"}
    labelmap : bool, optional
        Resample label-safe (each label by itself); by default ``volume.labelmap``.
    background : float, optional
        Value outside ``volume``: its minimum by default (0 for labels).
    crop_to_overlap : bool
        Keep only the part of the reference grid that ``volume`` covers (same spacing, directions and
        voxel positions); such an output has no DICOM slices to export with.
    slab : (first, count), optional
        Only reference slices ``first .. first+count-1`` (k from 0 along the normal).
    progress : callable, optional
        ``progress(fraction) -> bool``; True cancels.

    Returns
    -------
    Volume
        On the reference grid, with ``warnings``: the input's and the reference's, then the resampling's
        (e.g. ``no_overlap``).
    """
    input_node = _node_of(volume, "volume")
    ref = _reference_of(reference)
    options = export_job.ExportOptions(interpolation, labelmap, background, slab, crop_to_overlap)
    transform_node, temporary = _transform_node(transform, volume, ref)
    try:  # the job keeps the transform as a matrix: a temporary node can go
        job = export_job.resample_and_write(_scene.scene(), input_node, ref, None, options, progress,
                                            transform_node=transform_node)
    finally:
        if temporary:
            _scene.remove(transform_node)
    output = Volume._of_node(job.volume_node)
    output._job, output._sources = job, (volume, reference)
    return output


def write_dicom(volume: Volume, reference, folder: PathLike, *, force: bool = False,
                series_uid: str | None = None) -> list[Path]:
    """Write a volume that lies on a DICOM reference's grid as a DICOM series, slice for slice with it.

    Each output slice copies its reference slice's position, orientation, spacing and FrameOfReferenceUID
    (a new series, same study) and InstanceNumber; files are named after the reference slices' SOPInstanceUIDs.
    Written atomically; an existing folder is refused unless ``force``, but a folder holding earlier slabs of
    the same series (same ``series_uid``) gets this slab's slices added.

    Parameters
    ----------
    volume : Volume
        As :func:`resample` made it onto ``reference`` (its grid, slab and source are remembered), or a volume
        that lies on the reference's whole grid (e.g. loaded from a file written earlier).
    reference : Volume, str or Path
        Loaded from DICOM, or its DICOM folder or files (its slices are what the output is aligned with).
    folder : str or Path
    series_uid : str, optional
        SeriesInstanceUID; by default derived from the reference's series UID and the volume's name.

    Returns
    -------
    list of Path
        The DICOM files written, in k order.

    Raises
    ------
    AlignSeriesError
        If ``reference`` is not a DICOM series, or ``volume`` was resampled onto another reference.
    """
    return _export(volume, reference, exports.ExportTargets(dicom_folder=folder, force=force,
                                                               series_uid=series_uid))


def write_pngs(volume: Volume, reference, folder: PathLike, *, force: bool = False,
               window: tuple[float, float] | None = None) -> list[Path]:
    """One PNG per reference DICOM slice, named ``<InstanceNumber>_<SOPInstanceUID>.png``, and ``index.csv``.

    A label map's PNGs hold the label values (one channel, 8-bit, or 16-bit for labels above 255);
    other volumes are 8-bit grey through ``window``. ``index.csv`` lists each PNG with its slice's
    SOPInstanceUID, InstanceNumber, k and ImagePositionPatient.

    Parameters
    ----------
    volume, reference, folder, force
        As :func:`write_dicom`.
    window : (center, width), optional
        Grey window of a scalar volume; default its 0.5th to 99.5th percentiles.

    Returns
    -------
    list of Path
        The PNG files written, in k order, then ``index.csv``.
    """
    return _export(volume, reference, exports.ExportTargets(png_folder=folder, force=force, png_window=window))


def _export(volume: Volume, reference, targets: exports.ExportTargets) -> list[Path]:
    """Write the slices of ``volume`` on ``reference``: through the job that made it, or a job made now."""
    node = _node_of(volume, "volume")
    job = volume._job
    if job is not None and reference is volume._sources[1]:
        return job.write(targets)
    ref = _reference_of(reference)
    if job is not None:
        if not _same_reference(job.reference, ref):
            raise AlignSeriesError(f"'{volume.name}' was resampled onto '{job.reference.name}' "
                                   f"({job.reference.geometry.summary()}), not onto '{ref.name}' "
                                   f"({ref.geometry.summary()}): give that reference, or resample onto this one")
        return job.write(targets)
    if not volume.geometry.is_close(ref.geometry, atol=GRID_ATOL_MM):
        raise AlignSeriesError(f"'{volume.name}' ({volume.geometry.summary()}) is not on the grid of the reference "
                               f"'{ref.name}' ({ref.geometry.summary()}): resample it first with "
                               "alignseries.resample(volume, reference)")
    made = export_job.resample_and_write(_scene.scene(), node, ref, targets)  # on the grid: voxels copied
    _scene.remove(made.volume_node)
    return made.written


def _same_reference(first: exports.Reference, second: exports.Reference) -> bool:
    """True when two references are one grid with the same DICOM slices (e.g. a folder given as a path and loaded)."""
    uids = [None if ref.series is None else ref.series.sop_instance_uids for ref in (first, second)]
    return uids[0] == uids[1] and first.geometry.is_close(second.geometry, atol=1e-6)


# -- arguments ------------------------------------------------------------------------------------------


def _node_of(volume, role: str):
    """The node of a :class:`Volume` argument, or an error saying how to make one."""
    if isinstance(volume, Volume):
        return volume._node
    hint = "load it with alignseries.load(path)"
    module = type(volume).__module__.split(".")[0]
    if isinstance(volume, np.ndarray):
        hint = "wrap an array with alignseries.Volume.from_array(array_kji, ijk_to_ras=...)"
    elif module == "nibabel":
        hint = "wrap it with alignseries.Volume.from_nibabel(image)"
    elif module == "SimpleITK":
        hint = "wrap it with alignseries.Volume.from_sitk(image)"
    raise AlignSeriesError(f"{role}: expected an alignseries.Volume, got {type(volume).__name__}: {hint}")


def _reference_of(reference) -> exports.Reference:
    """The grid (and DICOM series, if any) of a reference :class:`Volume`, or of a path read header-only."""
    if isinstance(reference, str | Path):
        return operations.load_reference(_scene.scene(), reference, role="reference")
    return operations.reference_of_node(_node_of(reference, "reference"))


def _transform_node(transform, volume: Volume, reference: exports.Reference):
    """(transform node, temporary?) for a :func:`resample` ``transform`` argument."""
    if transform is None:
        return None, False
    if isinstance(transform, TransformResult):
        return transform.transform_node, False
    if isinstance(transform, str | Path):
        return operations.read_transform(_scene.scene(), transform, moving_geometry=volume.geometry,
                                         fixed_geometry=reference.geometry), True
    try:
        matrix = as_matrix4(transform, "transform")
    except (ValueError, TypeError) as error:
        raise AlignSeriesError(f"transform: expected a TransformResult, a 4x4 moving-to-fixed RAS matrix or a "
                               f"transform file; got {type(transform).__name__} ({error})") from None
    return mrml.set_linear_transform(_scene.scene(), matrix, name="moving_to_fixed"), True


def _describe_path(path) -> str:
    return str(path) if isinstance(path, str | Path) else f"{len(path)} paths"
