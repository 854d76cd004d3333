"""Helpers shared by the losses."""

from __future__ import annotations

import torch

from monai.utils import LossReduction

__all__ = ["apply_reduction"]


def apply_reduction(value: torch.Tensor, reduction: str) -> torch.Tensor:
    """``value.mean()`` for ``"mean"``, ``value.sum()`` for ``"sum"``, ``value`` itself for ``"none"``."""
    if reduction == LossReduction.MEAN.value:
        return value.mean()
    if reduction == LossReduction.SUM.value:
        return value.sum()
    return value
