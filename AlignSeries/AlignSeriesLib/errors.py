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
