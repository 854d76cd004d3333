"""Figure grid of synthesis results: inputs | synthesized | target | absolute error, one row per case.

Drawn with Pillow only (no matplotlib) so evaluation runs on a bare CPU install; people look at the grid
before they read the metric tables (bundle contract, section 5).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["middle_slice", "window_to_uint8", "save_figure_grid"]


def middle_slice(image, axis: int = 2) -> np.ndarray:
    """Return the middle slice of a 3D spatial array along ``axis``; a 2D array is returned unchanged.

    Args:
        image: ``(H, W)`` or ``(H, W, D)`` array or tensor (a leading singleton channel is dropped).
        axis: spatial axis (0, 1 or 2) of the slice of a 3D array.
    """
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise ValueError(f"image must be a 2D or 3D spatial array, got shape {arr.shape}.")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}.")
    return np.take(arr, arr.shape[axis] // 2, axis=axis)


def window_to_uint8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly to ``[0, 255]`` (clipped); an empty window maps everything to 0."""
    image = np.asarray(image, dtype=np.float64)
    if not high > low:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.round(np.clip((image - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.uint8)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-1]
    return text


def save_figure_grid(
    rows: Sequence[Mapping],
    path: str | os.PathLike,
    slice_axis: int = 2,
    percentiles: Sequence[float] = (0.5, 99.5),
    zoom: int = 1,
    rot90: int = 1,
    pad: int = 4,
    title_height: int = 14,
) -> Path:
    """Write a PNG grid with one row per case: inputs | synthesized | target | absolute error.

    Each image is the middle slice along ``slice_axis`` of a 3D volume (2D images are used as they are),
    turned by ``rot90`` quarter turns for display (1 puts the anterior of a RAS axial slice at the top).
    Synthesized and target share one display window per row, the target's ``percentiles``, so intensity
    errors show; each input has its own window; the error ``|synthesized - target|`` is shown on
    ``[0, its high percentile]`` (all black when the two are identical). Column titles use the inputs'
    names then ``synthesized``, ``target``, ``|error|``; each row has its ``name`` above it.

    Layout (pixels): tiles of the largest slice times ``zoom``, ``pad`` between tiles, a title band of
    ``title_height`` above the grid and above each row:
    width ``= pad + n_cols (tile_w + pad)``, height ``= title_height + n_rows (title_height + tile_h + pad)``.

    Args:
        rows: one mapping per case with ``"inputs"`` (mapping name -> spatial array), ``"pred"``,
            ``"target"`` (spatial arrays of the same shape) and optionally ``"name"``.
        path: output PNG path (written atomically: temporary file, then ``os.replace``).
        slice_axis: spatial axis of the middle slice of 3D arrays.
        percentiles: (low, high) percentiles of the display windows.
        zoom: integer upscaling of the tiles (nearest neighbour).
        rot90: quarter turns (``numpy.rot90``) applied to every slice.
        pad: gap between tiles in pixels.
        title_height: height of the column-title band and of each row's caption band.

    Returns:
        the path written.
    """
    if not rows:
        raise ValueError("rows must hold at least one case.")
    if zoom < 1 or pad < 0 or title_height < 0:
        raise ValueError(f"zoom must be >= 1 and pad, title_height >= 0, got {zoom}, {pad}, {title_height}.")
    if len(percentiles) != 2 or not 0.0 <= percentiles[0] < percentiles[1] <= 100.0:
        raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles!r}.")
    input_names = list(rows[0]["inputs"])
    tiles: list[list[np.ndarray]] = []
    for i, row in enumerate(rows):
        if list(row["inputs"]) != input_names:
            raise ValueError(f"rows[{i}] inputs {list(row['inputs'])} differ from rows[0] inputs {input_names}.")
        pred, target = middle_slice(row["pred"], slice_axis), middle_slice(row["target"], slice_axis)
        if pred.shape != target.shape:
            raise ValueError(f"rows[{i}]: pred {pred.shape} and target {target.shape} slices differ in shape.")
        error = np.abs(pred - target)
        low, high = np.percentile(target, percentiles)
        images = []
        for name in input_names:
            arr = middle_slice(row["inputs"][name], slice_axis)
            images.append(window_to_uint8(arr, *np.percentile(arr, percentiles)))
        images += [window_to_uint8(pred, low, high), window_to_uint8(target, low, high)]
        images.append(window_to_uint8(error, 0.0, float(np.percentile(error, percentiles[1]))))
        tiles.append([np.rot90(t, rot90) for t in images])
    tile_h = max(t.shape[0] for r in tiles for t in r) * zoom
    tile_w = max(t.shape[1] for r in tiles for t in r) * zoom
    titles = [*input_names, "synthesized", "target", "|error|"]
    width = pad + len(titles) * (tile_w + pad)
    height = title_height + len(rows) * (title_height + tile_h + pad)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title_height:
        for c, title in enumerate(titles):
            draw.text((pad + c * (tile_w + pad), 1), _fit_text(draw, title, tile_w, font), fill=255, font=font)
    for r, row_tiles in enumerate(tiles):
        top = title_height + r * (title_height + tile_h + pad)
        if title_height:
            name = _fit_text(draw, str(rows[r].get("name", f"case {r}")), width - 2 * pad, font)
            draw.text((pad, top + 1), name, fill=200, font=font)
        for c, tile in enumerate(row_tiles):
            img = Image.fromarray(np.ascontiguousarray(tile))
            img = img.resize((img.width * zoom, img.height * zoom), Image.NEAREST)
            x = pad + c * (tile_w + pad) + (tile_w - img.width) // 2
            y = top + title_height + (tile_h - img.height) // 2
            canvas.paste(img, (x, y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            canvas.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
