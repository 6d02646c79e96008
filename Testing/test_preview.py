"""Tests of AlignSeriesLib.preview: PNG encoding orientation and the fused three-plane picture."""

from __future__ import annotations

import io

import numpy as np
import pytest

from AlignSeriesLib import preview
from AlignSeriesLib.errors import AlignSeriesError, OutputExistsError
from AlignSeriesLib.geometry import VolumeGeometry
from AlignSeriesLib.preview import (
    LABEL_COLORS,
    PANEL_MAX_SIZE,
    fusion_picture,
    png_bytes,
    window_of,
    windowed,
    write_fusion_png,
)

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


def pane_pixels(picture: np.ndarray, pane) -> np.ndarray:
    top, left, rows, columns = pane.box
    return picture[top:top + rows, left:left + columns]


def test_identical_volumes_fuse_to_grey_with_physical_aspect(tmp_path):
    grid = geometry()  # 40 x 30 x 20 voxels of 1 x 1 x 2 mm: 40 mm (R-L) x 30 mm (A-P) x 40 mm (S-I)
    volume = ramp(grid)
    picture, panes = fusion_picture(volume, volume, grid)
    assert [pane.name for pane in panes] == ["axial", "coronal", "sagittal"]
    assert [pane.box[2:] for pane in panes] == [(30, 40), (40, 40), (40, 30)]  # rows x columns = mm (1 mm pixels)
    for pane in panes:
        shown = pane_pixels(picture, pane)
        assert np.all(shown[..., 0] == shown[..., 1]) and np.all(shown[..., 1] == shown[..., 2])
    path = write_fusion_png(volume, volume, grid, tmp_path / "fusion.png")
    np.testing.assert_array_equal(read_png(path), picture)


def test_misaligned_volume_shows_colour(tmp_path):
    grid = geometry()
    volume = ramp(grid)
    shifted = np.roll(volume, 5, axis=2)
    picture, panes = fusion_picture(volume, shifted, grid)
    shown = pane_pixels(picture, panes[0])
    assert np.any(shown[..., 0] != shown[..., 1])


@pytest.mark.parametrize("directions", ["identity", "lps", "sagittal_acquired"])
def test_a_marker_on_the_patients_right_appears_on_the_panes_r_side(directions):
    matrices = {"identity": np.eye(3), "lps": np.diag([-1.0, -1.0, 1.0]),
                "sagittal_acquired": np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float)}
    grid = VolumeGeometry.from_spacing_origin_directions((40, 40, 40), (1, 1, 1), (0, 0, 0), matrices[directions])
    volume = np.zeros(grid.shape, np.int16)
    k, j, i = np.indices(grid.shape)
    points = grid.ijk_to_world(np.stack([i, j, k], axis=-1).astype(float))
    centre = grid.center_ras
    marker = np.linalg.norm(points - (centre + [12.0, 0.0, 0.0]), axis=-1) < 4  # 12 mm to the patient's right
    volume[marker] = 1000
    picture, panes = fusion_picture(volume, volume, grid, at_ras=centre)
    for pane in panes[:2]:  # axial and coronal show right-left across
        shown = pane_pixels(picture, pane)[..., 1]
        columns = np.flatnonzero(shown.max(axis=0) > 128)
        r_side_is_left = pane.letters[0] == "R"
        assert r_side_is_left and pane.letters[1] == "L"
        assert columns.size and columns.mean() < shown.shape[1] / 2 - 6, (pane.name, columns)
        top, left, rows, _ = pane.box
        letter_area = picture[top + rows // 2 - 8: top + rows // 2 + 10, left - 14: left - 1]
        glyph_r, glyph_l = (preview._text_alpha(letter).astype(int).sum() for letter in "RL")
        assert letter_area[..., 1].astype(int).sum() == pytest.approx(glyph_r, rel=0.02)  # an R is drawn there
        assert abs(glyph_r - glyph_l) > 0.05 * glyph_r  # (and R and L differ enough to tell)
    sagittal = pane_pixels(picture, panes[2])[..., 1]
    assert sagittal.max() < 128  # the marker is off the mid-sagittal plane


def test_preview_at_a_point_cuts_through_it():
    grid = geometry((40, 40, 40), (1.0, 1.0, 1.0))
    volume = np.zeros(grid.shape, np.int16)
    volume[30, :, :] = 500  # one axial slab at k = 30 (S = 30 mm)
    through, _ = fusion_picture(volume, volume, grid, at_ras=(20, 20, 30))
    beside, panes = fusion_picture(volume, volume, grid, at_ras=(20, 20, 10))
    assert pane_pixels(through, panes[0])[..., 1].min() > 200 and pane_pixels(beside, panes[0])[..., 1].max() < 50


def test_label_map_is_drawn_as_coloured_outlines_over_the_reference():
    grid = geometry((40, 40, 10), (1.0, 1.0, 1.0))
    reference = np.full(grid.shape, 100, np.int16)
    reference[:, :, :20] = 0
    labels = np.zeros(grid.shape, np.uint8)
    labels[:, 10:30, 10:30] = 3
    picture, panes = fusion_picture(reference, labels, grid, labelmap=True)
    shown = pane_pixels(picture, panes[0])
    coloured = np.any(shown != shown[..., :1], axis=-1)
    assert coloured.sum() > 0 and np.all(shown[coloured] == LABEL_COLORS[3])
    rows, columns = np.nonzero(coloured)
    assert coloured[15:25, 15:25].sum() == 0  # inside the label: the reference shows through, grey
    assert rows.min() >= 9 and rows.max() <= 30 and columns.min() >= 9 and columns.max() <= 30


def test_checkerboard_alternates_the_two_volumes(tmp_path):
    grid = geometry((60, 60, 4), (1.0, 1.0, 1.0))
    reference = np.random.default_rng(0).uniform(0, 1000, grid.shape).astype(np.float32)
    resampled = 1000 - reference
    picture, panes = fusion_picture(reference, resampled, grid, style="checkerboard")
    shown = pane_pixels(picture, panes[0])[..., 0]
    assert np.any(shown[:24, :24] != shown[:24, 24:48])
    bright = windowed(resampled, window_of(resampled)).mean()
    assert shown[:24, :24].mean() != pytest.approx(shown[:24, 24:48].mean(), abs=1) or bright


def test_large_planes_are_scaled_down(tmp_path):
    grid = geometry((1200, 20, 3), (0.5, 1.0, 1.0))
    volume = np.zeros(grid.shape, np.int16)
    picture = read_png(write_fusion_png(volume, volume, grid, tmp_path / "big.png"))
    assert picture.shape[1] <= 3 * PANEL_MAX_SIZE + 6 * 18


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
