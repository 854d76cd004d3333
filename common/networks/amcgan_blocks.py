"""AMCGAN front modules: multi-scale feature capture (MSFC) and feature attention (FAM).

Reference:
    M. Pan, H. Zhang, Z. Tang, Y. Zhao, J. Tian, "Attention-Based Multi-Scale Generative Adversarial Network for
    synthesizing contrast-enhanced MRI".

In the generator of Fig. 1 (:class:`common.networks.amcgan.AMCGANGenerator`) the input passes the MSFC (Fig. 2)
and then the FAM (Fig. 3, Eqs. 1-2; the channel attention module of DANet, J. Fu et al., CVPR 2019) before
the pix2pix ResNet encoder-decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from monai.networks.blocks import Convolution
from monai.networks.layers.factories import split_args

from common.networks.utils import check_at_least, check_input_dims, check_spatial_dims

__all__ = ["MultiScaleFeatureCapture", "FeatureAttention"]


def _check_args(spatial_dims: int, **positive: int) -> None:
    """Validate ``spatial_dims`` (2 or 3) and that every keyword argument is >= 1."""
    check_spatial_dims(spatial_dims)
    check_at_least(1, **positive)


def _uses_bias(norm: tuple | str | None) -> bool:
    """pix2pix convention: convolutions followed by batch norm have no bias (BN's shift replaces it)."""
    if norm is None:
        return True
    name, _ = split_args(norm)
    return not (isinstance(name, str) and name.lower() == "batch")


class MultiScaleFeatureCapture(nn.Module):
    """Multi-scale feature capture (MSFC, Fig. 2 of Pan et al.).

    Parallel convolutions over the same input with different receptive fields (default: 1x1, 3x3, 5x5 and a
    3x3 with dilation 2), each ``conv -> norm -> act`` (MONAI ``Convolution``, "same" zero padding), and the
    branch outputs ``f^1 .. f^K`` concatenated along channels:

        Z = concat(f^1, ..., f^K),   f^k = act(norm(conv_k(x)))

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the input image.
        branch_channels: output channels of every branch; ``Z`` has ``len(kernel_sizes) * branch_channels``.
        kernel_sizes: kernel size of each branch (odd).
        dilations: dilation of each branch (same length as ``kernel_sizes``).
        norm: MONAI norm spec after each convolution (``None`` for none). Default batch norm, as the other
            convolution blocks of the generator (the paper does not specify it for the MSFC).
        act: MONAI activation spec after each convolution (``None`` for none).

    Shapes:
        input (B, in_channels, *spatial) -> output (B, out_channels, *spatial).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        branch_channels: int = 16,
        kernel_sizes: Sequence[int] = (1, 3, 5, 3),
        dilations: Sequence[int] = (1, 1, 1, 2),
        norm: tuple | str | None = "batch",
        act: tuple | str | None = "relu",
    ) -> None:
        _check_args(spatial_dims, in_channels=in_channels, branch_channels=branch_channels)
        if len(kernel_sizes) < 1 or len(kernel_sizes) != len(dilations):
            raise ValueError(
                f"kernel_sizes and dilations must be non-empty and of equal length, got {kernel_sizes} / {dilations}."
            )
        if any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be positive odd integers, got {kernel_sizes}.")
        if any(d < 1 for d in dilations):
            raise ValueError(f"dilations must be >= 1, got {dilations}.")
        super().__init__()
        self.out_channels = len(kernel_sizes) * branch_channels
        self.branches = nn.ModuleList(
            [
                Convolution(
                    spatial_dims,
                    in_channels,
                    branch_channels,
                    kernel_size=k,
                    dilation=d,
                    adn_ordering="NA",
                    norm=norm,
                    act=act,
                    bias=_uses_bias(norm),
                )
                for k, d in zip(kernel_sizes, dilations)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class FeatureAttention(nn.Module):
    """Feature attention module (FAM, Fig. 3 and Eqs. 1-2 of Pan et al.) = DANet channel attention.

    ``Z`` (C x H x W, or C x D x H x W) is reshaped to C x N. With the Gram matrix ``E = Z Z^T`` (C x C):

        X_ij = exp(Z_i . Z_j) / sum_{i=1..C} exp(Z_i . Z_j)                (1)
        A_j  = beta * sum_{i=1..C} X_ij Z_i + Z_j,   i.e.  A = beta * reshape(X^T Z) + Z      (2)

    (Eq. 1 is garbled in the paper's text; this is its intended softmax.) ``X`` is normalised over ``i`` for each
    ``j``; as ``E`` is symmetric, ``X^T = softmax(E)`` taken along the last axis, so every output channel is ``Z_j``
    plus ``beta`` times a convex combination of the input channels. This is the softmax of the Gram matrix as
    stated by the paper, not the ``softmax(max(E) - E)`` variant of DANet's public code.

    ``beta`` is a learnable scalar initialised to 0, so at initialisation the module is exactly the identity.

    Args:
        spatial_dims: 2 or 3 (the input must be (B, C, *spatial) with that many spatial axes).

    Shapes:
        input (B, C, *spatial) -> output (B, C, *spatial).
    """

    def __init__(self, spatial_dims: int) -> None:
        _check_args(spatial_dims)
        super().__init__()
        self.spatial_dims = spatial_dims
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_input_dims(z, self.spatial_dims)
        flat = z.flatten(2)  # (B, C, N)
        energy = torch.bmm(flat, flat.transpose(1, 2))  # (B, C, C) = Z Z^T
        x_t = torch.softmax(energy, dim=-1)  # X^T (Eq. 1), rows sum to one
        attended = torch.bmm(x_t, flat).view(z.shape)  # reshape(X^T Z)
        return self.beta * attended + z
