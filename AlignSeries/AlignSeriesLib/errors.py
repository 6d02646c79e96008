"""Exceptions raised by AlignSeriesLib.

Every error is a ``ValueError`` (or ``OSError`` for file problems) so that callers that do not
know this module can still catch it; the message names the input and the bad value.
"""


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
