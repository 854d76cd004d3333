"""Parameter-free in-plane up-sampling of 3D slabs, computed slice by slice.

HR-FCN (Chen et al., IEEE TBME 70(2), 2023, Section III-B) up-samples its lower-resolution branches in-plane
only when it runs on 3-slice slabs (strides ``(2, 2, 1)``). A trilinear interpolation whose factor along the
slice axis is 1 is exactly a bilinear interpolation of every slice, but PyTorch's CPU trilinear kernel
vectorises along the last (3-voxel) axis of a channel-first slab; interpolating the slices as a 2D batch is
the same result about 20 % faster for the whole network at paper width (``scripts/benchmark.py``, HR-FCN README).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SliceUpsample", "slice_axis_of"]


def slice_axis_of(scale_factor: Sequence[float]) -> int | None:
    """The spatial axis whose factor is 1 while the other two are equal and > 1, or ``None``."""
    factors = [float(f) for f in scale_factor]
    if len(factors) != 3 or factors.count(1.0) != 1:
        return None
    axis = factors.index(1.0)
    others = [f for i, f in enumerate(factors) if i != axis]
    return axis if others[0] == others[1] > 1.0 else None


class SliceUpsample(nn.Module):
    """Bilinear up-sampling of each 2D slice of a 3D tensor: ``Y[..., k] = bilinear_s(X[..., k])`` along ``slice_axis``.

    Equals ``torch.nn.Upsample(scale_factor=s at the in-plane axes and 1 at slice_axis, mode="trilinear",
    align_corners=False)`` (the trilinear weights along a factor-1 axis are exactly 0/1), computed on a
    ``(B * D, C, H, W)`` batch of slices.

    Args:
        scale_factor: in-plane factor ``s`` (> 1), the same for both in-plane axes.
        slice_axis: spatial axis (0, 1 or 2) that is not up-sampled.

    Input ``(B, C, *spatial)`` with 3 spatial axes; output with the two in-plane sizes times ``s``.
    """

    def __init__(self, scale_factor: float, slice_axis: int = 2) -> None:
        super().__init__()
        if not float(scale_factor) > 1.0:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor}.")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}.")
        self.scale_factor = float(scale_factor)
        self.slice_axis = int(slice_axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected a 5-D input (B, C, *spatial), got {x.dim()}-D.")
        slices = x.movedim(self.slice_axis + 2, 1)  # (B, D, C, H, W)
        b, depth, c, h, w = slices.shape
        y = F.interpolate(
            slices.reshape(b * depth, c, h, w), scale_factor=self.scale_factor, mode="bilinear", align_corners=False
        )
        return y.reshape(b, depth, c, y.shape[-2], y.shape[-1]).movedim(1, self.slice_axis + 2).contiguous()

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}, slice_axis={self.slice_axis}"
