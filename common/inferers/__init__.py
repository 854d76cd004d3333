"""Inferers MONAI lacks: autocast around any inferer (bf16 on CPU), stitching for valid-convolution networks."""

from __future__ import annotations

from .autocast import AutocastInferer
from .center_crop import CenterCropStitchInferer

__all__ = ["AutocastInferer", "CenterCropStitchInferer"]
