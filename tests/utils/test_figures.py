"""Tests of common.utils.figures: slices, windowing and the PNG figure grid."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from common.utils.figures import middle_slice, save_figure_grid, window_to_uint8


def _rows(n: int, shape=(16, 20, 12), identical: bool = False) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        target = rng.random(shape) * 100.0
        pred = target.copy() if identical else target + rng.standard_normal(shape)
        inputs = {"t1": rng.random(shape), "t2": rng.random(shape) * 5}
        rows.append({"name": f"case-{i}", "inputs": inputs, "pred": pred, "target": target})
    return rows


def _tile(img: np.ndarray, row: int, col: int, tile_h: int, tile_w: int, pad: int, title: int) -> np.ndarray:
    top = title + row * (title + tile_h + pad) + title
    left = pad + col * (tile_w + pad)
    return img[top : top + tile_h, left : left + tile_w]


def test_middle_slice_and_window_known_answers():
    volume = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    np.testing.assert_array_equal(middle_slice(volume, axis=2), volume[:, :, 2])
    np.testing.assert_array_equal(middle_slice(volume, axis=0), volume[1])
    np.testing.assert_array_equal(middle_slice(volume[None], axis=1), volume[:, 1])  # leading channel dropped
    np.testing.assert_array_equal(middle_slice(volume[0]), volume[0])  # 2D unchanged
    values = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    np.testing.assert_array_equal(window_to_uint8(values, 0.0, 1.0), [0, 0, 128, 255, 255])
    np.testing.assert_array_equal(window_to_uint8(np.ones(3), 1.0, 1.0), [0, 0, 0])
    with pytest.raises(ValueError, match="axis"):
        middle_slice(volume, axis=3)


@pytest.mark.parametrize("shape, slice_axis", [((16, 20, 12), 2), ((16, 20), 2), ((12, 16, 20), 0)])
def test_grid_size_and_identical_pred_target(tmp_path, shape, slice_axis):
    zoom, pad, title = 2, 3, 14
    rows = _rows(2, shape, identical=True)
    path = save_figure_grid(rows, tmp_path / "grid.png", slice_axis=slice_axis, zoom=zoom, pad=pad, title_height=title)
    sl = middle_slice(np.zeros(shape), slice_axis).shape
    tile_h, tile_w = sl[1] * zoom, sl[0] * zoom  # rot90 = 1 swaps the axes
    with Image.open(path) as im:
        assert im.size == (pad + 5 * (tile_w + pad), title + 2 * (title + tile_h + pad))  # t1 t2 synth target err
        img = np.asarray(im)
    assert os.listdir(tmp_path) == ["grid.png"]  # no temporary file left
    for r in range(2):
        error = _tile(img, r, 4, tile_h, tile_w, pad, title)
        assert error.min() == error.max() == 0  # identical pred and target -> a uniform error tile
        pred, target = (_tile(img, r, c, tile_h, tile_w, pad, title) for c in (2, 3))
        np.testing.assert_array_equal(pred, target)  # one shared window
        assert target.min() == 0 and target.max() == 255
        t1 = _tile(img, r, 0, tile_h, tile_w, pad, title)
        assert t1.min() == 0 and t1.max() == 255  # each input windowed on its own range


def test_error_column_shows_the_error(tmp_path):
    rows = _rows(1)
    rows[0]["pred"] = rows[0]["target"].copy()
    rows[0]["pred"][4:8, 4:8, :] += 50.0  # a bright error square in every slice
    with Image.open(save_figure_grid(rows, tmp_path / "g.png", rot90=0, pad=2, title_height=10)) as im:
        img = np.asarray(im)
    error = _tile(img, 0, 4, 16, 20, 2, 10)
    assert error[4:8, 4:8].min() == 255 and error[:4].max() == 0 and error[8:].max() == 0


def test_invalid_rows(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        save_figure_grid([], tmp_path / "g.png")
    rows = _rows(2)
    rows[1]["inputs"] = {"t1": rows[1]["inputs"]["t1"]}
    with pytest.raises(ValueError, match="inputs"):
        save_figure_grid(rows, tmp_path / "g.png")
    with pytest.raises(ValueError, match="zoom"):
        save_figure_grid(_rows(1), tmp_path / "g.png", zoom=0)
    assert not (tmp_path / "g.png").exists()
