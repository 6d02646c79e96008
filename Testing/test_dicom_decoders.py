"""Every transfer syntax of the bundled and real DICOM files decodes in the core, pixel-equal to GDCM.

The second decoder is GDCM through SimpleITK (its own C++ JPEG, JPEG-LS, JPEG 2000 and RLE codecs). SimpleITK
gives modality values (stored x RescaleSlope + RescaleIntercept, one rescale for the whole file even where
an enhanced object's frames have their own): the stored values are recovered exactly by inverting that
rescale, and compared with the core's stored values, frame by frame and tile by tile.
"""

from __future__ import annotations

import collections
import gzip
import io
import logging
import pathlib
import re
import subprocess
import sys
import warnings

import nibabel
import numpy as np
import pydicom
import pytest
from conftest import MODULE_DIR, PROJECT_ROOT, SHARED_DICOM

from AlignSeriesLib.dicom import headers as dicom_headers
from AlignSeriesLib.dicom import pixels as dicom_pixels
from AlignSeriesLib.dicom.file_kinds import FileNote

sitk = pytest.importorskip("SimpleITK")

PYDICOM_FILES = pathlib.Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_FILES = pathlib.Path(nibabel.__file__).parent / "nicom" / "tests" / "data"

#: Transfer syntaxes that must each decode, pixel-equal to GDCM, in at least one bundled or real file.
COMMON_SYNTAXES = {
    pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRBigEndian,
    pydicom.uid.JPEGLosslessSV1, pydicom.uid.JPEGLSLossless, pydicom.uid.JPEG2000Lossless, pydicom.uid.JPEG2000,
    pydicom.uid.RLELossless, pydicom.uid.JPEGBaseline8Bit, pydicom.uid.JPEGExtended12Bit,
    pydicom.uid.JPEGLSNearLossless, pydicom.uid.DeflatedExplicitVRLittleEndian,
}


#: Files of pydicom's test set that no pydicom plugin decodes (pydicom's own tests expect them to fail):
#: the core says so (DicomDecodeError, so that Slicer's reader is tried), never that a decoder is missing.
DECODERS_FAIL = {
    "JPEG-lossy.dcm": "12-bit JPEG Extended whose scan has a misplaced marker (GDCM's own decoder reads it)",
    "JPEG2000-embedded-sequence-delimiter.dcm": "a J2K header claiming 14,540,801 tiles (GDCM refuses it too)",
}

#: Lossy JPEG: two conforming decoders may round the inverse DCT differently (ITU-T T.81 allows it): at most
#: this many stored units apart.
LOSSY_ATOL = 1
LOSSY_JPEG = {pydicom.uid.JPEGBaseline8Bit, pydicom.uid.JPEGExtended12Bit}


def corpus() -> list[pathlib.Path]:
    folders = [PYDICOM_FILES, NIBABEL_FILES] + ([SHARED_DICOM] if SHARED_DICOM.is_dir() else [])
    return sorted(p for folder in folders for p in folder.rglob("*") if p.is_file() and "ref" not in p.parts)


def gdcm_values(path) -> np.ndarray | None:
    """(frames, rows, columns) modality values by GDCM, or None when GDCM cannot read the file."""
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        return None
    if image.GetNumberOfComponentsPerPixel() != 1:
        return None
    values = sitk.GetArrayFromImage(image).astype(np.float64)
    return values[None] if values.ndim == 2 else values


def equal_to_gdcm(headers, stored: np.ndarray, modality: np.ndarray) -> bool:
    """True when GDCM's values are the stored values under one of the file's rescales (GDCM applies one)."""
    if headers[0].tile is not None:  # GDCM reads the whole mosaic: cut the same tiles from it
        modality = np.stack([header.tile.cut(modality[0]) for header in headers])
    if modality.shape != stored.shape:
        return False
    syntax = pydicom.uid.UID(headers[0].pixels.transfer_syntax)
    tolerance = LOSSY_ATOL if syntax in LOSSY_JPEG else 0
    for slope, intercept in {header.rescale for header in headers}:
        if np.abs(np.rint((modality - intercept) / slope) - stored).max() <= tolerance:
            return True
    return False


def headers_without_geometry(path, folder: pathlib.Path) -> list | None:
    """The slice headers of a single-sample image refused only for its missing plane geometry (a secondary
    capture, a JPEG sample file): a copy in ``folder`` given a made-up plane, its pixel data unchanged, so that
    its pixels go through the core's decoding."""
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    if dataset.get("SamplesPerPixel", 1) != 1 or "PerFrameFunctionalGroupsSequence" in dataset:
        return None
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        return None  # GDCM inverts MONOCHROME1 values, pydicom and the core keep them as stored
    full = pydicom.dcmread(path)
    full.ImagePositionPatient, full.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    full.PixelSpacing = full.get("PixelSpacing") or [1, 1]
    copy = folder / f"{len(list(folder.iterdir()))}.dcm"
    full.save_as(copy)
    headers = dicom_headers.read_headers(copy)
    return None if isinstance(headers, FileNote) else headers


def jpeg_baseline_file(folder: pathlib.Path) -> pathlib.Path:
    """A greyscale JPEG Baseline image (none is bundled: pydicom's are colour), encoded by Pillow's libjpeg."""
    from PIL import Image

    dataset = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    pixels = (dataset.pixel_array.astype(np.float64) / dataset.pixel_array.max() * 255).astype(np.uint8)
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="JPEG", quality=90)
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    dataset.RescaleSlope, dataset.RescaleIntercept = 1, 0
    dataset.PixelData = pydicom.encaps.encapsulate([stream.getvalue()])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    dataset.LossyImageCompression = "01"
    path = folder / "jpeg_baseline.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """Per transfer syntax: files equal to GDCM, files GDCM could not read, files that differ (with names)."""
    counts: dict = collections.defaultdict(collections.Counter)
    differ, undecoded = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            copies = tmp_path_factory.mktemp("with a plane")
            for path in corpus() + [jpeg_baseline_file(tmp_path_factory.mktemp("baseline"))]:
                headers = dicom_headers.read_headers(path)
                if isinstance(headers, FileNote) and headers.kind == "unusable header":
                    headers = headers_without_geometry(path, copies)  # the pixels still decode
                if isinstance(headers, FileNote) or headers is None:
                    continue
                syntax = headers[0].pixels.transfer_syntax
                try:
                    stored = dicom_pixels.read_stored_slices(headers)
                except dicom_pixels.DicomDecodeError as error:
                    undecoded.append(f"{path.name}: {error}")
                    continue
                theirs = gdcm_values(path)
                if theirs is None:
                    counts[syntax]["gdcm_unreadable"] += 1
                elif equal_to_gdcm(headers, stored, theirs):
                    counts[syntax]["equal"] += 1
                else:
                    differ.append(str(path))
        finally:
            logging.disable(logging.NOTSET)
    return counts, differ, undecoded


def test_every_image_in_every_transfer_syntax_decodes_in_the_core(decoded):
    _, _, undecoded = decoded
    failed = {message.split(":")[0]: message for message in undecoded}
    assert set(failed) <= set(DECODERS_FAIL), failed
    assert all("its installed decoders failed on this file" in message for message in failed.values()), failed


def test_every_decoded_image_equals_gdcm_and_every_common_syntax_is_covered(decoded):
    counts, differ, _ = decoded
    assert differ == []
    equal = {syntax for syntax, count in counts.items() if count["equal"]}
    assert COMMON_SYNTAXES <= equal, sorted(str(pydicom.uid.UID(s).name) for s in COMMON_SYNTAXES - equal)
    assert sum(count["equal"] for count in counts.values()) >= 100 if SHARED_DICOM.is_dir() else 20


@pytest.mark.skipif(not (SHARED_DICOM / "mr_siemens_sag_t1_jpegll").is_dir(), reason="../shared/data/dicom absent")
def test_the_jpeg_lossless_series_reads_in_the_core_without_slicer(tmp_path):
    from AlignSeriesLib.dicom import series as dicom_series

    (volume,) = dicom_series.scan_dicom(SHARED_DICOM / "mr_siemens_sag_t1_jpegll" / "dicom").volumes
    voxels = volume.read_voxels()  # would raise DicomDecodeError without a JPEG Lossless plugin

    first = gdcm_values(volume.files[0])[0]
    np.testing.assert_array_equal(voxels[0], first)


# -- shipped and installed on first need ------------------------------------------------------------


def requirement_names(path: pathlib.Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {re.split(r"[=<>!~]", line)[0].lower(): line for line in lines if line}


def test_the_decoders_are_pinned_and_in_the_slicer_requirements():
    pinned = requirement_names(PROJECT_ROOT / "requirements.txt")
    in_slicer = requirement_names(MODULE_DIR / "Resources" / "requirements.txt")
    for requirement in dicom_pixels.DECODER_REQUIREMENTS:
        name = re.split(r"[=<>!~]", requirement)[0].lower()
        assert "==" in pinned[name], pinned.get(name)
        assert in_slicer[name] == requirement


def test_without_decoders_a_compressed_mosaic_names_what_to_install(tmp_path):
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "mosaic.dcm"
    dataset = pydicom.dcmread(io.BytesIO(gzip.open(NIBABEL_FILES / "siemens_dwi_0.dcm.gz").read()))
    dataset.PixelData = (np.frombuffer(dataset.PixelData, "<u2") & 0x0FFF).tobytes()  # within BitsStored
    dataset.compress(pydicom.uid.JPEGLSLossless)
    dataset.save_as(source, enforce_file_format=True)
    blocked = "import sys\nfor name in ('pylibjpeg', 'libjpeg', 'openjpeg', 'rle', 'jpeg_ls', 'gdcm'):\n" \
              "    sys.modules[name] = None\n"
    script = blocked + "from AlignSeriesLib.cli import main\nsys.exit(main(sys.argv[1:]))\n"

    process = subprocess.run([sys.executable, "-c", script, "resample", "--input", str(source), "--reference",
                              str(source), "--output", str(tmp_path / "out.nrrd")],
                             cwd=MODULE_DIR, capture_output=True, text=True, timeout=120)

    assert process.returncode == 2, process.stderr
    assert "pylibjpeg-libjpeg" in process.stderr and "pyjpegls" in process.stderr, process.stderr
    assert not (tmp_path / "out.nrrd").exists()

