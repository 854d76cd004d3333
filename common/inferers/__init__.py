"""Inferers MONAI lacks: autocast around any inferer (bf16 on CPU), stitching for valid-convolution networks,
slice batches sized by pixels."""

from __future__ import annotations

from .autocast import AutocastInferer
from .center_crop import CenterCropStitchInferer
from .slice_budget import PixelBudgetSliceInferer, slices_per_batch

__all__ = ["AutocastInferer", "CenterCropStitchInferer", "PixelBudgetSliceInferer", "slices_per_batch"]
