"""Argument and input checks shared by the networks, so every network words its errors the same way."""

from __future__ import annotations

import torch

__all__ = ["check_spatial_dims", "check_at_least", "check_input_dims"]


def check_spatial_dims(spatial_dims: int) -> None:
    """Raise ``ValueError`` unless ``spatial_dims`` is 2 or 3."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")


def check_at_least(minimum: int = 1, **values: int) -> None:
    """Raise ``ValueError`` naming the first keyword argument that is below ``minimum``.

    Example: ``check_at_least(in_channels=in_channels, channels=channels)``.
    """
    for name, value in values.items():
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}.")


def check_input_dims(x: torch.Tensor, spatial_dims: int) -> None:
    """Raise ``ValueError`` unless ``x`` is a (B, C, *spatial) tensor with ``spatial_dims`` spatial axes."""
    if x.dim() != spatial_dims + 2:
        raise ValueError(f"expected a {spatial_dims + 2}-D input (B, C, *spatial), got {x.dim()}-D.")
