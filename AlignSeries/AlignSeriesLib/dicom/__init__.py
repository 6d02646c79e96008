"""DICOM in and out: the header scan, series reconstruction, pixel decoding, Siemens MOSAIC, REG and SEG objects.

Core modules (no ``slicer``), kept together as nibabel keeps its DICOM readers in ``nicom``:
:mod:`.file_kinds` says what a file is before it is parsed, :mod:`.headers` reads one file's slice headers
(:mod:`.identity` substitutes anonymized UIDs, :mod:`.mosaic` cuts MOSAIC tiles), :mod:`.stack` and
:mod:`.series` build volumes from them, :mod:`.pixels` decodes, :mod:`.export` writes derived series and
PNGs, :mod:`.reg` and :mod:`.seg` / :mod:`.seg_read` read and write REG and SEG objects.
"""
