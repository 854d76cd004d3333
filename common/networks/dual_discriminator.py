"""The two discriminators of the dual-discriminator synthesis GAN: a global WGAN-GP critic and a local FCN.

Reference:
    Q. Xiao, D. Nie, "Fine-grained Medical Image Synthesis with Dual-Attention Adversarial Learning" (after
    Nie et al., arXiv:1907.03297), Sec. 2.2 and 2.4, Fig. 2:

    - D1 (global): "a typical CNN including three stages of convolution, BN, ReLU and max pooling, followed by
      one convolutional layer and three fully connected layers (where the first two use ReLU as activation
      functions). The filter size is 3x3, the numbers of the filters are 32, 64, 128, respectively, and 256 for
      the convolutional layers, and the numbers of the output nodes in the fully connected layers are 512, 128
      and 1." Trained as a WGAN-GP critic (Eq. 2), so its output is an unbounded score.
    - D2 (local): "a typical FCN with three down-sampling" whose dense output, passed through a sigmoid, is the
      confidence map ``M`` (Eq. 4, 6). The authors' segmentation code (ginobilinie/confidentGAN) upsamples the
      map bilinearly to the image size before the sigmoid; this network does the same (linear interpolation).

Both networks return **logits** (no sigmoid): the critic's score is used as is by the Wasserstein loss and
the local map goes to a BCE-with-logits loss; :meth:`LocalDiscriminator.confidence` gives ``M = sigmoid(.)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, Pool

from common.networks.utils import check_spatial_dims

__all__ = ["ConvNormPoolStage", "GlobalCritic", "LocalDiscriminator"]

_INTERP = {2: "bilinear", 3: "trilinear"}


def _check_widths(name: str, widths: Sequence[int], min_len: int = 1) -> tuple[int, ...]:
    if isinstance(widths, (int, str)) or len(widths) < min_len or any(int(w) < 1 for w in widths):
        raise ValueError(f"{name} must be a sequence of at least {min_len} positive ints, got {widths!r}.")
    return tuple(int(w) for w in widths)


class ConvNormPoolStage(nn.Sequential):
    """One stage of the global critic: ``maxpool_2(ReLU(norm(conv_3(x))))``.

    The max-pooling uses ``ceil_mode=True`` so that a spatial size of 1 stays 1: the critic accepts any patch
    size (the fully connected head sees an adaptively pooled grid).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: filters of the convolution.
        kernel_size: convolution kernel size (3 in the paper).
        norm: MONAI norm spec (``"batch"`` in the paper; ``None`` for no normalisation).

    Shapes:
        (B, in_channels, *S) -> (B, out_channels, *ceil(S / 2)).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        norm: str | tuple | None = "batch",
    ) -> None:
        check_spatial_dims(spatial_dims)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}.")
        super().__init__()
        self.conv = Convolution(
            spatial_dims, in_channels, out_channels, kernel_size=kernel_size, act="relu", norm=norm, bias=norm is None
        )
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2, ceil_mode=True)


class GlobalCritic(nn.Module):
    """Global discriminator D1 of Xiao and Nie (Sec. 2.4): one unbounded realism score per image.

    ``D1(y) = FC_1(ReLU(FC_128(ReLU(FC_512(flatten(pool_a(conv_256(S_128(S_64(S_32(y)))))))))))`` where ``S_c`` is a
    :class:`ConvNormPoolStage` with ``c`` filters and ``pool_a`` an adaptive average pooling to ``pooled_size``
    per axis, so any input size gives the same number of features. It is trained as a WGAN-GP critic (Eq. 2):
    ``L_D1 = E[D1(G(x))] - E[D1(y)] + lambda E[(||grad D1(x_hat)||_2 - 1)^2]``; the generator term is
    ``L_G_ADV1 = -E[D1(G(x))]`` (Eq. 3).

    Note: batch norm in a gradient-penalty critic makes the per-sample gradient depend on the batch (WGAN-GP
    recommends no BN); BN is the paper's default, ``norm="instance"``/``"layer"``/``None`` are alternatives.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (target channels: the critic is unconditional in the paper).
        channels: filters of the conv-norm-ReLU-maxpool stages (32, 64, 128).
        conv_channels: filters of the last convolution (256).
        fc_channels: widths of the hidden fully connected layers (512, 128); a last layer maps to 1.
        pooled_size: adaptive pooling grid per axis before flattening.
        kernel_size: convolution kernel size (3).
        norm: MONAI norm spec of the stages (``"batch"`` in the paper).

    Shapes:
        (B, in_channels, *S) for any S >= 1 per axis -> (B, 1) logits (unbounded critic scores).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128),
        conv_channels: int = 256,
        fc_channels: Sequence[int] = (512, 128),
        pooled_size: int = 4,
        kernel_size: int = 3,
        norm: str | tuple | None = "batch",
    ) -> None:
        check_spatial_dims(spatial_dims)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        channels = _check_widths("channels", channels)
        fc_channels = _check_widths("fc_channels", fc_channels, min_len=0)
        if conv_channels < 1:
            raise ValueError(f"conv_channels must be >= 1, got {conv_channels}.")
        if pooled_size < 1:
            raise ValueError(f"pooled_size must be >= 1, got {pooled_size}.")
        super().__init__()
        self.spatial_dims = spatial_dims
        widths = (in_channels, *channels)
        self.stages = nn.Sequential(
            *(
                ConvNormPoolStage(spatial_dims, widths[i], widths[i + 1], kernel_size, norm)
                for i in range(len(channels))
            )
        )
        self.conv = Convolution(
            spatial_dims, channels[-1], conv_channels, kernel_size=kernel_size, act="relu", norm=norm, bias=norm is None
        )
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](pooled_size)
        features = [conv_channels * pooled_size**spatial_dims, *fc_channels]
        layers: list[nn.Module] = []
        for i in range(len(fc_channels)):
            layers += [nn.Linear(features[i], features[i + 1]), Act[Act.RELU]()]
        layers.append(nn.Linear(features[-1], 1))
        self.head = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Score ``y`` of shape (B, C, *S); returns (B, 1)."""
        features = self.pool(self.conv(self.stages(y)))
        return self.head(torch.flatten(features, 1))


class LocalDiscriminator(nn.Module):
    """Local (dense) discriminator D2 of Xiao and Nie (Sec. 2.2, 2.4): a logit per voxel, on the input grid.

    An FCN with ``len(channels)`` stride-2 convolutions (three down-samplings in the paper), a 3x3 convolution
    to one channel, and linear interpolation back to the input size:
    ``D2(y) = up(conv_1(down_c3(down_c2(down_c1(y)))))``. ``M = sigmoid(D2(y))`` is the confidence that the
    region around each voxel is real (:meth:`confidence`). Trained with dense BCE (Eq. 4):
    ``L_D2 = BCE(D2(y), 1) + BCE(D2(G(x)), 0)``; the generator term is ``L_ADV2 = BCE(D2(G(x)), 1)`` (Eq. 5).

    Layers follow the authors' confidence FCN (ginobilinie/confidentGAN): LeakyReLU(0.2), no normalisation by
    default. ``kernel_size=3`` with padding 1 halves every size with rounding up, so any size >= 1 works.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (target channels; unconditional as in the paper).
        channels: widths of the down-sampling convolutions (64, 128, 256).
        kernel_size: kernel of the down-sampling convolutions (3).
        norm: MONAI norm spec of the down-sampling convolutions after the first (``None``: none).
        negative_slope: LeakyReLU slope.

    Shapes:
        (B, in_channels, *S) -> (B, 1, *S) logits.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256),
        kernel_size: int = 3,
        norm: str | tuple | None = None,
        negative_slope: float = 0.2,
    ) -> None:
        check_spatial_dims(spatial_dims)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        channels = _check_widths("channels", channels)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}.")
        if negative_slope < 0:
            raise ValueError(f"negative_slope must be >= 0, got {negative_slope}.")
        super().__init__()
        self.spatial_dims = spatial_dims
        act = ("leakyrelu", {"negative_slope": negative_slope})
        widths = (in_channels, *channels)
        self.down = nn.Sequential(
            *(
                Convolution(
                    spatial_dims,
                    widths[i],
                    widths[i + 1],
                    strides=2,
                    kernel_size=kernel_size,
                    act=act,
                    norm=None if i == 0 else norm,
                    bias=i == 0 or norm is None,
                )
                for i in range(len(channels))
            )
        )
        self.out = Convolution(spatial_dims, channels[-1], 1, kernel_size=3, conv_only=True)
        self.num_downsamplings = len(channels)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Dense logits of ``y`` (B, C, *S), returned on the input grid: (B, 1, *S)."""
        logits = self.out(self.down(y))
        return F.interpolate(logits, size=y.shape[2:], mode=_INTERP[self.spatial_dims], align_corners=False)

    def confidence(self, y: torch.Tensor) -> torch.Tensor:
        """The confidence map ``M = sigmoid(D2(y))`` in [0, 1], shape (B, 1, *S)."""
        return torch.sigmoid(self.forward(y))
