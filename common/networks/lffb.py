"""Feature-extraction blocks of the FA-GAN generator: the local fusion feature block and SRGAN's residual block.

References:
    Jiang M., Zhi M., Wei L., et al. "FA-GAN: Fused attentive generative adversarial networks for MRI image
    super-resolution." Computerized Medical Imaging and Graphics 92, 101969, 2021 (Sec. 2.2, Fig. 2, Eq. 3).
    Li J., Fang F., Mei K., Zhang G. "Multi-scale residual network for image super-resolution", ECCV 2018
    (the multi-scale residual block whose cross-path exchange the LFFB follows).
    Ledig C., et al. "Photo-realistic single image super-resolution using a generative adversarial network",
    CVPR 2017 (SRGAN's residual block, the ``use_lffb=False`` body).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai.networks.blocks import Convolution

from common.networks.utils import check_spatial_dims

__all__ = ["LocalFusionFeatureBlock", "SRResidualBlock"]


class LocalFusionFeatureBlock(nn.Module):
    """Local fusion feature block (LFFB), FA-GAN Fig. 2 / Eq. (3).

    Three paths ``C_{s x s}`` with kernel sizes ``s`` in ``kernel_sizes`` (3, 5, 7); each path is three
    convolutions of its kernel size, and after each of the first two the paths exchange features::

        P_s^1 = ReLU(C^1_s(x))
        P_s^2 = ReLU(C^2_s([P_3^1, P_5^1, P_7^1]))          ([.] = channel concatenation)
        P_s^3 = C^3_s([P_3^2, P_5^2, P_7^2])
        LFFB(x) = F[P_3^3, P_5^3, P_7^3] + x                 (F = concatenation + 1x1 convolution)

    Args:
        spatial_dims: 2 or 3.
        channels: feature width ``C`` of the input, of every path and of the output.
        kernel_sizes: odd kernel sizes of the paths.
    """

    def __init__(self, spatial_dims: int, channels: int, kernel_sizes: Sequence[int] = (3, 5, 7)) -> None:
        check_spatial_dims(spatial_dims)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}.")
        kernel_sizes = tuple(int(k) for k in kernel_sizes)
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be non-empty odd sizes, got {kernel_sizes}.")
        super().__init__()
        self.kernel_sizes = kernel_sizes
        n = len(kernel_sizes)

        def conv(cin: int, k: int, act: bool) -> Convolution:
            return Convolution(spatial_dims, cin, channels, kernel_size=k, act="relu" if act else None, norm=None)

        self.stage1 = nn.ModuleList([conv(channels, k, True) for k in kernel_sizes])
        self.stage2 = nn.ModuleList([conv(n * channels, k, True) for k in kernel_sizes])
        self.stage3 = nn.ModuleList([conv(n * channels, k, False) for k in kernel_sizes])
        self.fuse = Convolution(
            spatial_dims, n * channels, channels, kernel_size=1, act=None, norm=None, conv_only=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial) -> (B, C, *spatial)``."""
        p1 = torch.cat([path(x) for path in self.stage1], dim=1)
        p2 = torch.cat([path(p1) for path in self.stage2], dim=1)
        p3 = torch.cat([path(p2) for path in self.stage3], dim=1)
        return self.fuse(p3) + x


class SRResidualBlock(nn.Module):
    """SRGAN's residual block: ``x + BN(Conv(PReLU(BN(Conv(x)))))`` with 3x3 convolutions.

    Args:
        spatial_dims: 2 or 3.
        channels: feature width.
        norm: normalisation after each convolution (SRGAN: ``"batch"``; ``None`` drops it, as EDSR does).
    """

    def __init__(self, spatial_dims: int, channels: int, norm: str | tuple | None = "batch") -> None:
        check_spatial_dims(spatial_dims)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}.")
        super().__init__()
        self.body = nn.Sequential(
            Convolution(spatial_dims, channels, channels, kernel_size=3, act="prelu", norm=norm),
            Convolution(spatial_dims, channels, channels, kernel_size=3, act=None, norm=norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial) -> (B, C, *spatial)``."""
        return x + self.body(x)
