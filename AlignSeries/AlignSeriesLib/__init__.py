"""AlignSeriesLib: put two image series of one patient in one space.

The core modules (everything but :mod:`AlignSeriesLib.mrml` and :mod:`AlignSeriesLib.cli`) need
only numpy, pydicom and vtk and work in any Python. :mod:`AlignSeriesLib.mrml` bridges them to
Slicer's MRML scene; :mod:`AlignSeriesLib.cli` is the ``alignseries`` command line.
"""

__version__ = "0.1.0"
