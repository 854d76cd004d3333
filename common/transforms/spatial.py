"""Small spatial helpers for slice-wise (2D-on-3D) bundles."""

from __future__ import annotations

__all__ = ["slice_divisor"]


def slice_divisor(slice_axis: int, value: int, spatial_dims: int = 3) -> list[int]:
    """Per-axis sizes that are ``1`` along ``slice_axis`` and ``value`` along the in-plane axes.

    ``slice_divisor(2, 4) == [4, 4, 1]`` is the ``k`` of ``DivisiblePadd`` for a 2D network applied to axial
    slices; ``slice_divisor(2, -1) == [-1, -1, 1]`` is the ``spatial_size`` of a one-slice crop.

    Args:
        slice_axis: the axis along which the volume is cut into slices, in ``[0, spatial_dims)``.
        value: the in-plane size or divisor.
        spatial_dims: number of spatial axes of the volume.
    """
    if not 0 <= slice_axis < spatial_dims:
        raise ValueError(f"slice_axis must be in [0, {spatial_dims}), got {slice_axis}.")
    return [1 if axis == slice_axis else int(value) for axis in range(spatial_dims)]
