"""Exceptions raised by AlignSeriesLib, and the one model of a warning it reports.

Every error is a ``ValueError`` (or ``OSError`` for file problems) so that callers that do not
know this module can still catch it; the message names the input and the bad value.

A warning is something the caller should know about a result that was still produced: an
:class:`AlignSeriesWarning` with a stable ``code`` and a ``message`` stating the measured value and
the threshold. Every layer reports warnings in this one form (``{"code", "message"}`` in JSON).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: The one progress model of AlignSeriesLib: ``progress(fraction) -> bool`` is called with the
#: fraction of the work done (0..1); returning True cancels, and the operation raises
#: :class:`OperationCancelledError`.
ProgressCallback = Callable[[float], bool | None]


@dataclass(frozen=True)
class AlignSeriesWarning:
    """Something a result's user should know: a stable ``code`` and a sentence with value and threshold.

    Codes in use: ``gantry_tilt``, ``nonuniform_spacing``, ``missing_slices``, ``duplicate_positions``,
    ``single_slice``, ``skipped_file``, ``regularized``, ``duplicate_sop_instance_uid``, ``no_overlap``,
    ``dtype_widened``, ``labels_nearest``, ``reflection``, ``leave_one_out``, ``ambiguous_match``,
    ``registration_matrix_type``, ``vtk``, ``frame_of_reference_mismatch``, ``labels_disagree_with_order``,
    ``pre_alignment``, ``substituted_uid``, ``unknown_frame_of_reference``.
    """

    code: str
    message: str

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        """JSON-ready ``{"code", "message"}``."""
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, document: dict) -> AlignSeriesWarning:
        """The warning of a ``{"code", "message"}`` mapping (e.g. read back from a node attribute)."""
        return cls(str(document["code"]), str(document["message"]))


class AlignSeriesError(ValueError):
    """Base class of every error AlignSeries raises on bad input."""


class GeometryError(AlignSeriesError):
    """A volume geometry or transform matrix is invalid (singular, non-finite, wrong shape)."""


class DicomError(AlignSeriesError):
    """A DICOM file or series cannot be used; the message names the file and the tag."""


class FrameOfReferenceError(AlignSeriesError):
    """Two volumes cannot be related through their frames of reference."""


class LandmarkError(AlignSeriesError):
    """Landmark lists are unusable for the requested registration."""


class TransformFileError(AlignSeriesError):
    """A transform file cannot be read or written in the requested form."""


class OutputExistsError(AlignSeriesError, FileExistsError):
    """An output file exists and overwriting it was not requested."""


class OutputWriteError(AlignSeriesError, OSError):
    """An output could not be written whole (a full disk, the file-size limit): nothing of it was kept."""


class OperationCancelledError(AlignSeriesError):
    """The user cancelled a long operation through its progress callback."""


class ResampleError(AlignSeriesError):
    """A resampling request is unusable: array and geometry disagree, unknown interpolation or type."""


class DicomDecodeError(DicomError):
    """pydicom has no decoder for a file's transfer syntax (another reader may still read it)."""


class IrregularSeriesError(DicomError):
    """An irregular DICOM series was refused because regularization was switched off."""


class MissingDependencyError(AlignSeriesError, ImportError):
    """An optional package needed for this input is not installed (e.g. nibabel for Siemens MOSAIC files).

    Attributes
    ----------
    package : str
        The pip requirement to install (e.g. ``"nibabel>=5"``).
    """

    def __init__(self, message: str, *, package: str):
        super().__init__(message)
        self.package = package


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` on one line, without the traceback some libraries put in it.

    pydicom's writer re-raises an ``OSError`` (a full disk, ``ulimit -f``) with the traceback in its
    message; the reason is then the original error's (``File too large``).
    """
    cause = getattr(error, "__cause__", None)
    if isinstance(error, OSError) and not error.strerror and isinstance(cause, OSError) and cause.strerror:
        error = cause.strerror
    message = str(error).split("Traceback (most recent call last)")[0].replace("\n", " ").strip()
    return message or type(error).__name__
