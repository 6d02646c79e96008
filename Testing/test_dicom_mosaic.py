"""Siemens MOSAIC files: tile arithmetic, the CSA header, and real files checked against nibabel's MosaicWrapper."""

from __future__ import annotations

import gzip
import io
import pathlib
import warnings

import nibabel
import numpy as np
import pydicom
import pytest
from nibabel.nicom import csareader
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from AlignSeriesLib.dicom import headers as dicom_headers
from AlignSeriesLib.dicom import mosaic as dicom_mosaic
from AlignSeriesLib.dicom import series as dicom_series
from AlignSeriesLib.dicom.headers import FileNote
from AlignSeriesLib.dicom.mosaic import MosaicTile, tile_origin_lps, tile_size, tiles_per_side
from AlignSeriesLib.errors import DicomError, MissingDependencyError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # nibabel: "The DICOM readers are highly experimental"
    from nibabel.nicom import dicomwrappers

NIBABEL_DATA = pathlib.Path(nibabel.__file__).parent / "nicom" / "tests" / "data"

#: The corner tolerance of the issue: every tile's four corners within 0.02 mm of nibabel's geometry.
CORNER_ATOL_MM = 0.02


# -- tile arithmetic on exact small cases ---------------------------------------------------------


@pytest.mark.parametrize("count, side", [(1, 1), (2, 2), (4, 2), (5, 3), (9, 3), (36, 6), (37, 7), (48, 7), (64, 8)])
def test_tiles_per_side_is_the_ceiling_of_the_square_root(count, side):
    assert tiles_per_side(count) == side


def test_tile_size_divides_the_mosaic_and_refuses_an_unknown_packing():
    assert tile_size(384, 384, 36) == (64, 64)
    assert tile_size(896, 896, 48) == (128, 128)
    assert tile_size(12, 9, 7) == (4, 3)
    with pytest.raises(DicomError, match="does not divide by 7: unknown packing"):
        tile_size(256, 256, 48)
    with pytest.raises(DicomError, match="NumberOfImagesInMosaic .* is 0"):
        tile_size(64, 64, 0)


def test_tiles_are_cut_row_major_and_only_the_first_count_are_slices():
    mosaic_ji = np.arange(12 * 9).reshape(12, 9)  # 3 x 3 tiles of 4 rows x 3 columns, 7 acquired
    tiles = [MosaicTile(index, 7, 4, 3, 12, 9) for index in range(7)]

    assert [tile.corner_ji for tile in tiles] == [(0, 0), (0, 3), (0, 6), (4, 0), (4, 3), (4, 6), (8, 0)]
    np.testing.assert_array_equal(tiles[5].cut(mosaic_ji), mosaic_ji[4:8, 6:9])
    assert tiles[0].to_info_dict() == {"tiles": 7, "tile_rows": 4, "tile_columns": 3, "mosaic_rows": 12,
                                       "mosaic_columns": 9}


def test_tile_origin_moves_the_mosaic_position_to_the_tile_corner():
    # Axial: row direction +x (i, 2 mm per column), column direction +y (j, 3 mm per row).
    # Mosaic 12 x 9 pixels of tiles 4 x 3: half the difference is 4 rows and 3 columns.
    origin = tile_origin_lps((10.0, 20.0, 30.0), (1, 0, 0, 0, 1, 0), (3.0, 2.0), (12, 9), (4, 3))
    np.testing.assert_allclose(origin, (10.0 + 3 * 2.0, 20.0 + 4 * 3.0, 30.0))


def test_slice_direction_may_point_against_row_cross_column_but_not_elsewhere():
    np.testing.assert_allclose(dicom_mosaic.slice_direction((0, 0, -2.0), (1, 0, 0, 0, 1, 0)), (0, 0, -1))
    with pytest.raises(DicomError, match="is 0.5.* from the slice normal"):
        dicom_mosaic.slice_direction((0.5, 0, np.sqrt(0.75)), (1, 0, 0, 0, 1, 0))
    with pytest.raises(DicomError, match="without SliceNormalVector"):
        dicom_mosaic.slice_direction(None, (1, 0, 0, 0, 1, 0))


# -- the CSA header ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["csa2_b0.bin", "csa2_b1000.bin"])
def test_csa_values_are_read_from_real_csa_headers(name):
    header = csareader.read((NIBABEL_DATA / name).read_bytes())

    assert dicom_mosaic.csa_mosaic_count(header) == 48
    np.testing.assert_allclose(dicom_mosaic.csa_slice_normal(header), (0.0, 0.00523632, 0.99998629))
    assert dicom_mosaic.csa_mosaic_count({"tags": {}}) is None and dicom_mosaic.csa_slice_normal({"tags": {}}) is None


def test_csa_header_found_in_a_dataset_by_its_private_creator():
    dataset = pydicom.Dataset()
    block = dataset.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", (NIBABEL_DATA / "csa2_b0.bin").read_bytes())

    assert dicom_mosaic.has_csa_image_header(dataset)
    assert dicom_mosaic.csa_mosaic_count(dicom_mosaic.read_csa_image_header(dataset, where="x")) == 48
    with pytest.raises(DicomError, match="x: no Siemens CSA image header"):
        dicom_mosaic.read_csa_image_header(pydicom.Dataset(), where="x")


# -- real MOSAIC files against nibabel's MosaicWrapper ----------------------------------------------


def real_mosaic(name: str) -> pydicom.Dataset:
    path = NIBABEL_DATA / name
    data = gzip.open(path).read() if name.endswith(".gz") else path.read_bytes()
    return pydicom.dcmread(io.BytesIO(data))


def with_pattern(dataset: pydicom.Dataset, seed: int = 0) -> pydicom.Dataset:
    """The real header with 12-bit pixels of a seeded pattern (stray bits above HighBit set at random)."""
    rng = np.random.default_rng(seed)
    stored = rng.integers(0, 2**12, (dataset.Rows, dataset.Columns), dtype=np.uint16)
    stray = rng.integers(0, 16, stored.shape, dtype=np.uint16) << 12
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    dataset.PixelData = (stored | stray).astype("<u2").tobytes()
    dataset["PixelData"].VR = "OW"
    return dataset


def save(dataset: pydicom.Dataset, path: pathlib.Path) -> pathlib.Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def nibabel_truth(path: pathlib.Path):
    """(affine voxel (row, column, slice) -> LPS, data [row, column, slice]) from nibabel's MosaicWrapper."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel: "The DICOM readers are highly experimental"
        wrapper = dicomwrappers.wrapper_from_file(str(path))
        assert isinstance(wrapper, dicomwrappers.MosaicWrapper)
        return wrapper.affine, wrapper.get_unscaled_data()


def assert_tiles_match_nibabel(path: pathlib.Path) -> dict:
    """Every tile's four corners within 0.02 mm of nibabel's, and its pixels equal; returns measured figures."""
    affine, data = nibabel_truth(path)
    volume, = dicom_series.scan_dicom(path).volumes
    voxels = volume.read_voxels()
    columns, rows, _ = volume.geometry.dimensions
    corners_ij = np.array([[0, 0], [columns - 1, 0], [0, rows - 1], [columns - 1, rows - 1]], dtype=float)
    worst = 0.0
    for k, header in enumerate(volume.slices):
        tile = header.tile.index
        ours = volume.geometry.ijk_to_lps @ np.c_[corners_ij, np.full(4, k), np.ones(4)].T
        theirs = affine @ np.c_[corners_ij[:, ::-1], np.full(4, tile), np.ones(4)].T  # nibabel: (row, column)
        worst = max(worst, float(np.abs(ours - theirs)[:3].max()))
        np.testing.assert_array_equal(voxels[k], data[:, :, tile], err_msg=f"tile {tile}")
    assert worst <= CORNER_ATOL_MM, f"corner error {worst:.4g} mm above {CORNER_ATOL_MM} mm"
    return {"volume": volume, "corner_error_mm": worst}


@pytest.mark.parametrize("name", ["siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"])
def test_nibabel_real_mosaic_files_give_their_tiles_where_nibabel_puts_them(tmp_path, name):
    path = save(with_pattern(real_mosaic(name)), tmp_path / "mosaic.dcm")

    volume = assert_tiles_match_nibabel(path)["volume"]

    assert volume.geometry.dimensions == (128, 128, 48)
    assert volume.to_info_dict()["mosaic"] == {"tiles": 48, "tile_rows": 128, "tile_columns": 128,
                                               "mosaic_rows": 896, "mosaic_columns": 896}
    assert not any(w.code == "single_slice" for w in volume.warnings)
    assert [h.tile.index for h in volume.slices] == list(range(48))  # SliceNormalVector along row x column


def test_oblique_real_header_with_its_own_slice_normal(tmp_path):
    dataset = real_mosaic("csa_slice_norm.dcm")  # shipped without pixels: 384 x 384, 32 tiles of 64 x 64
    dataset.Rows, dataset.Columns = 384, 384
    path = save(with_pattern(dataset, seed=3), tmp_path / "oblique.dcm")

    volume = assert_tiles_match_nibabel(path)["volume"]

    assert volume.geometry.dimensions == (64, 64, 32)


@pytest.mark.parametrize("name", ["siemens_dwi_0.dcm.gz", "csa_slice_norm.dcm"])
def test_slice_normal_vector_against_row_cross_column_orders_tiles_backwards(tmp_path, name):
    dataset = with_pattern(real_mosaic(name), seed=5)
    iop = [float(v) for v in dataset.ImageOrientationPatient]
    dataset.ImageOrientationPatient = iop[:3] + [-v for v in iop[3:]]  # row x column now opposes SliceNormalVector
    path = save(dataset, tmp_path / "descending.dcm")

    volume = assert_tiles_match_nibabel(path)["volume"]

    count = volume.slices[0].tile.count
    assert [h.tile.index for h in volume.slices] == list(range(count - 1, -1, -1))
    assert not volume.regularized and volume.geometry.is_orthogonal


def test_several_mosaic_files_of_one_series_are_one_volume_each(tmp_path):
    for number in (1, 2, 3):
        dataset = with_pattern(real_mosaic("siemens_dwi_0.dcm.gz"), seed=number)
        dataset.SOPInstanceUID, dataset.InstanceNumber = generate_uid(), number
        save(dataset, tmp_path / f"t{number}.dcm")

    volumes = dicom_series.scan_dicom(tmp_path).volumes

    assert [v.name.split(" ", 2)[-1] for v in volumes] == [f"MOSAIC file {n} of 3" for n in (1, 2, 3)]
    assert all(v.geometry.dimensions == (128, 128, 48) and v.warnings == [] for v in volumes)
    assert [set(v.files) for v in volumes] == [{str(tmp_path / f"t{n}.dcm")} for n in (1, 2, 3)]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, "big_endian", JPEGLSLossless,
                                    JPEG2000Lossless, DeflatedExplicitVRLittleEndian])
def test_mosaic_pixels_are_the_same_in_other_transfer_syntaxes(tmp_path, syntax):
    dataset = with_pattern(real_mosaic("siemens_dwi_0.dcm.gz"), seed=7)
    reference, = dicom_series.scan_dicom(save(dataset, tmp_path / "le.dcm")).volumes
    dataset = with_pattern(real_mosaic("siemens_dwi_0.dcm.gz"), seed=7)
    if syntax == "big_endian":
        dataset.PixelData = np.frombuffer(dataset.PixelData, "<u2").astype(">u2").tobytes()  # written as is
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns that Big Endian is retired
            pydicom.dcmwrite(tmp_path / "other.dcm", dataset, implicit_vr=False, little_endian=False,
                             force_encoding=True)
    elif syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):  # encoded by pydicom's plugins
        stored = np.frombuffer(dataset.PixelData, "<u2") & 0x0FFF  # encoders refuse bits above HighBit
        dataset.PixelData = stored.tobytes()
        dataset.compress(syntax)
        save(dataset, tmp_path / "other.dcm")
    else:
        dataset.file_meta.TransferSyntaxUID = syntax
        save(dataset, tmp_path / "other.dcm")

    other, = dicom_series.scan_dicom(tmp_path / "other.dcm").volumes

    np.testing.assert_array_equal(other.read_voxels(), reference.read_voxels())
    np.testing.assert_allclose(other.geometry.ijk_to_lps, reference.geometry.ijk_to_lps, atol=1e-9)


# -- refusals -----------------------------------------------------------------------------------------


def test_mosaic_without_a_csa_header_is_refused_naming_the_file(tmp_path):
    dataset = with_pattern(real_mosaic("siemens_dwi_0.dcm.gz"))
    for tag in [t for t in dataset.keys() if t.group == 0x0029]:
        del dataset[tag]
    path = save(dataset, tmp_path / "no_csa.dcm")

    note = dicom_headers.read_headers(path)

    assert isinstance(note, FileNote) and note.reason.startswith(str(path))
    assert "no Siemens CSA image header (0029,1010)" in note.reason
    with pytest.raises(DicomError, match="no_csa.dcm: no Siemens CSA image header"):
        dicom_series.scan_dicom(tmp_path)


def test_mosaic_whose_size_does_not_divide_into_tiles_is_refused(tmp_path):
    dataset = real_mosaic("siemens_dwi_0.dcm.gz")
    dataset.Rows = dataset.Columns = 256  # nibabel's 0.dcm: 48 tiles claimed in 256 x 256
    path = save(with_pattern(dataset), tmp_path / "odd.dcm")

    note = dicom_headers.read_headers(path)

    assert "does not divide by 7: unknown packing" in note.reason and str(path) in note.reason


def test_mosaic_without_nibabel_says_what_to_install(tmp_path, monkeypatch):
    path = save(with_pattern(real_mosaic("siemens_dwi_0.dcm.gz")), tmp_path / "mosaic.dcm")
    monkeypatch.setattr(dicom_mosaic, "nibabel_available", lambda: False)

    with pytest.raises(MissingDependencyError, match="nibabel is needed to read a Siemens MOSAIC") as error:
        dicom_series.scan_dicom(path)

    assert error.value.package == dicom_mosaic.NIBABEL_REQUIREMENT


def test_a_siemens_image_that_is_not_a_mosaic_is_one_slice(tmp_path):
    dataset = with_pattern(real_mosaic("siemens_dwi_0.dcm.gz"))
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    block = dataset.private_block(0x0029, "SIEMENS CSA HEADER")
    block[0x10].value = (NIBABEL_DATA / "csa2_b0.bin").read_bytes()  # NumberOfImagesInMosaic 48: still a MOSAIC
    path = save(dataset, tmp_path / "no_image_type.dcm")
    assert len(dicom_headers.read_headers(path)) == 48

    dataset.PrivateCreator = None
    del dataset[0x00290010]  # no CSA block at all: an ordinary image
    for tag in [t for t in dataset.keys() if t.group == 0x0029]:
        del dataset[tag]
    plain = save(dataset, tmp_path / "plain.dcm")
    assert len(dicom_headers.read_headers(plain)) == 1


# -- through the command line and the Slicer logic ------------------------------------------------


def test_info_and_the_loader_show_the_tiles_and_place_them_like_nibabel(tmp_path, capsys, scene):
    from conftest import run, run_json

    from AlignSeriesLib import mrml, operations

    path = save(with_pattern(real_mosaic("siemens_dwi_0.dcm.gz")), tmp_path / "mosaic.dcm")
    status, out, _ = run(capsys, "info", path)
    assert status == 0 and "mosaic: 48 tiles of 128x128 (from 896x896 images)" in out
    volume, = run_json(capsys, "info", path)["volumes"]
    assert volume["dimensions"] == [128, 128, 48] and volume["mosaic"]["tiles"] == 48
    scanned = assert_tiles_match_nibabel(path)["volume"]  # the scan agrees with nibabel, tile by tile
    node, = operations.load_volumes(scene, path)
    np.testing.assert_allclose(mrml.volume_geometry(node).ijk_to_ras, scanned.geometry.ijk_to_ras, atol=1e-9)
    _, data = nibabel_truth(path)
    tiles = [header.tile.index for header in scanned.slices]
    np.testing.assert_array_equal(mrml.volume_array(node), np.moveaxis(data[:, :, tiles], 2, 0))
