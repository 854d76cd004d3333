"""Inferers MONAI lacks: stitching for networks whose output is the centre of their input."""

from __future__ import annotations

from .center_crop import CenterCropStitchInferer

__all__ = ["CenterCropStitchInferer"]
