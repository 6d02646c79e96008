"""Tests of AlignSeriesLib.preview: PNG encoding orientation and the fused three-plane picture."""

from __future__ import annotations

import io

import numpy as np
import pytest

from AlignSeriesLib.errors import AlignSeriesError, OutputExistsError
from AlignSeriesLib.geometry import VolumeGeometry
from AlignSeriesLib.preview import PANEL_MAX_SIZE, png_bytes, window_of, windowed, write_fusion_png

Image = pytest.importorskip("PIL.Image")


def geometry(dimensions=(40, 30, 20), spacing=(1.0, 1.0, 2.0)) -> VolumeGeometry:
    return VolumeGeometry.from_spacing_origin_directions(dimensions, spacing, (0, 0, 0))


def ramp(geometry_: VolumeGeometry) -> np.ndarray:
    k, j, i = np.indices(geometry_.shape)
    return (i + 2 * j + 3 * k).astype(np.int16)


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_png_bytes_keeps_row_zero_at_the_top():
    picture = np.zeros((3, 4), np.uint8)
    picture[0, 1] = 200
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(picture))))
    np.testing.assert_array_equal(decoded, picture)
    rgb = np.zeros((2, 5, 3), np.uint8)
    rgb[1, 4] = (10, 20, 30)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(rgb)))), rgb)
    with pytest.raises(AlignSeriesError, match="uint8"):
        png_bytes(picture.astype(float))


def test_window_maps_percentiles_to_black_and_white():
    values = np.arange(1001, dtype=float)
    low, high = window_of(values, (10, 90))
    assert (low, high) == pytest.approx((100, 900))
    np.testing.assert_array_equal(windowed([100, 500, 900, 2000], (low, high)), [0, 128, 255, 255])


def test_identical_volumes_fuse_to_grey_with_physical_aspect(tmp_path):
    grid = geometry()
    volume = ramp(grid)
    path = write_fusion_png(volume, volume, grid, tmp_path / "fusion.png")
    picture = read_png(path)
    # panels: k plane 40x30 px, j plane 40 wide x 40 high (20 slices of 2 mm), i plane 30 x 40; gaps of 4 px
    assert picture.shape == (40, 40 + 4 + 40 + 4 + 30, 3)
    assert np.all(picture[..., 0] == picture[..., 1]) and np.all(picture[..., 1] == picture[..., 2])
    assert picture[:30, :40].max() > 0 and np.all(picture[30:, :40] == 0)  # first panel is only 30 px high


def test_misaligned_volume_shows_colour(tmp_path):
    grid = geometry()
    volume = ramp(grid)
    shifted = np.roll(volume, 5, axis=2)
    picture = read_png(write_fusion_png(volume, shifted, grid, tmp_path / "fusion.png"))
    assert np.any(picture[..., 0] != picture[..., 1])


def test_checkerboard_alternates_the_two_volumes(tmp_path):
    grid = geometry((60, 60, 4), (1.0, 1.0, 1.0))
    reference = np.random.default_rng(0).uniform(0, 1000, grid.shape).astype(np.float32)
    resampled = 1000 - reference
    picture = read_png(write_fusion_png(reference, resampled, grid, tmp_path / "c.png", style="checkerboard"))
    shown_reference = windowed(reference[2], window_of(reference))
    shown_resampled = windowed(resampled[2], window_of(resampled))
    first_panel = picture[:60, :60, 0]
    np.testing.assert_array_equal(first_panel[:24, :24], shown_reference[:24, :24])
    np.testing.assert_array_equal(first_panel[:24, 24:48], shown_resampled[:24, 24:48])
    np.testing.assert_array_equal(first_panel[24:48, 24:48], shown_reference[24:48, 24:48])


def test_large_planes_are_scaled_down(tmp_path):
    grid = geometry((1200, 20, 3), (0.5, 1.0, 1.0))
    volume = np.zeros(grid.shape, np.int16)
    picture = read_png(write_fusion_png(volume, volume, grid, tmp_path / "big.png"))
    assert picture.shape[1] <= 3 * PANEL_MAX_SIZE + 8


def test_bad_requests_are_refused(tmp_path):
    grid = geometry()
    volume = ramp(grid)
    path = write_fusion_png(volume, volume, grid, tmp_path / "f.png")
    before = path.read_bytes()
    with pytest.raises(OutputExistsError):
        write_fusion_png(volume, volume + 1, grid, path)
    assert path.read_bytes() == before
    write_fusion_png(volume, np.roll(volume, 3, axis=0), grid, path, force=True)
    assert path.read_bytes() != before
    with pytest.raises(AlignSeriesError, match="resampled_array has shape"):
        write_fusion_png(volume, volume[:-1], grid, tmp_path / "g.png")
    with pytest.raises(AlignSeriesError, match="style must be one of"):
        write_fusion_png(volume, volume, grid, tmp_path / "g.png", style="blend")
    with pytest.raises(AlignSeriesError, match="does not exist"):
        write_fusion_png(volume, volume, grid, tmp_path / "missing" / "g.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]
