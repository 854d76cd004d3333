"""The discriminators of the dual-discriminator synthesis GAN, a global critic and a local FCN.

The global critic :class:`ConvPoolCritic` is also the discriminator of the context-aware GAN (Nie et al. 2018,
Fig. 3: the same conv-BN-ReLU-maxpool stages 32/64/128, conv 256, FC 512/128/1, on a fixed 16³ patch): one
class, parameterised by ``pooled_size`` (any size, adaptive pooling) or ``input_size`` (one fixed size).

References:
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

    D. Nie et al., "Medical image synthesis with deep convolutional adversarial networks", IEEE TBME 65(12),
    2018, Fig. 3 (the context-aware GAN's discriminator, the ``input_size`` parameterisation).

Both networks return **logits** (no sigmoid): the critic's score is used as is by the Wasserstein loss and
the local map goes to a BCE-with-logits loss; :meth:`LocalDiscriminator.confidence` gives ``M = sigmoid(.)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.networks.nets import FullyConnectedNet
from monai.utils import ensure_tuple_rep

from common.networks.utils import check_spatial_dims

__all__ = ["ConvNormPoolStage", "ConvPoolCritic", "LocalDiscriminator"]

_INTERP = {2: "bilinear", 3: "trilinear"}


def _check_widths(name: str, widths: Sequence[int], min_len: int = 1) -> tuple[int, ...]:
    if isinstance(widths, (int, str)) or len(widths) < min_len or any(int(w) < 1 for w in widths):
        raise ValueError(f"{name} must be a sequence of at least {min_len} positive ints, got {widths!r}.")
    return tuple(int(w) for w in widths)


class ConvNormPoolStage(nn.Sequential):
    """One stage of the critic: ``maxpool_2(act(norm(conv_k(x))))``.

    The max-pooling uses ``ceil_mode=True`` so that a spatial size of 1 stays 1 (an adaptively pooled critic then
    accepts any patch size); on even sizes it equals the floor pooling of Nie et al. 2018.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: filters of the convolution.
        kernel_size: convolution kernel size (3 in both papers).
        norm: MONAI norm spec (``"batch"`` in both papers; ``None`` for no normalisation, then the conv has a bias).
        act: MONAI activation spec (``"relu"``).

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
        act: str | tuple | None = "relu",
    ) -> None:
        check_spatial_dims(spatial_dims)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}.")
        super().__init__()
        self.conv = Convolution(
            spatial_dims, in_channels, out_channels, kernel_size=kernel_size, act=act, norm=norm, bias=norm is None
        )
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2, ceil_mode=True)


class ConvPoolCritic(nn.Module):
    """Image-level CNN critic shared by the dual-discriminator GAN (D1) and the context-aware GAN (D).

    ``D(y) = FC(pool(conv_c(S_cn(...S_c1(y)))))``: ``n`` :class:`ConvNormPoolStage` stages (conv-norm-act-maxpool),
    one conv-norm-act with ``conv_channels`` filters, a pooling to a fixed feature grid, then fully connected
    layers ``fc_channels`` -> 1 (MONAI ``FullyConnectedNet``, ``act`` after each hidden layer, linear output).
    The output is a logit / unbounded score (no sigmoid, no ReLU at the end). Both papers give the same layers:
    3 stages with 32, 64, 128 filters, a 256-filter conv, FC 512 - 128 - 1, kernel 3, batch norm, ReLU.

    The two parameterisations differ only in how the feature grid reaches the FC layers:

    - ``pooled_size`` (Xiao and Nie, D1): an adaptive average pooling to ``pooled_size`` per axis, so any input
      size works. Trained as a WGAN-GP critic (Eq. 2):
      ``L_D1 = E[D1(G(x))] - E[D1(y)] + lambda E[(||grad D1(x_hat)||_2 - 1)^2]``; generator term
      ``L_G_ADV1 = -E[D1(G(x))]`` (Eq. 3). Batch norm in a gradient-penalty critic makes the per-sample gradient
      depend on the batch (WGAN-GP recommends none); ``norm="instance"``/``"layer"``/``None`` are alternatives.
    - ``input_size`` (Nie et al. 2018, Fig. 3, 16³ patches): the critic accepts only that size (checked), and the
      FC layers see the whole ``input_size / 2^n`` grid (the pooling is then an identity). Trained with BCE,
      ``L_D = BCE(D(Y), 1) + BCE(D(G(X)), 0)``; the authors' ReLU before the sigmoid is not applied.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the judged image (1; 1 + source channels for a conditional critic).
        channels: filters of the conv-norm-act-maxpool stages (32, 64, 128).
        conv_channels: filters of the last convolution (256).
        fc_channels: widths of the hidden fully connected layers (512, 128); a last layer maps to 1.
        kernel_size: convolution kernel size (3).
        norm: MONAI norm spec of every convolution (``"batch"`` in both papers).
        act: MONAI activation of the convolutions and the hidden fully connected layers (``"relu"``).
        pooled_size: adaptive pooling grid per axis (any input size); exclusive with ``input_size``.
        input_size: the only accepted spatial size, each a multiple of ``2 ** len(channels)``; exclusive with
            ``pooled_size``.

    Attributes:
        input_size: the accepted size as a list, or None for any size.
        feature_grid: the grid per axis flattened into the FC layers.

    Shapes:
        (B, in_channels, *S) -> (B, 1), S any size >= 1 per axis (``pooled_size``) or ``input_size``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128),
        conv_channels: int = 256,
        fc_channels: Sequence[int] = (512, 128),
        kernel_size: int = 3,
        norm: str | tuple | None = "batch",
        act: str | tuple | None = "relu",
        pooled_size: Sequence[int] | int | None = None,
        input_size: Sequence[int] | int | None = None,
    ) -> None:
        check_spatial_dims(spatial_dims)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        channels = _check_widths("channels", channels)
        fc_channels = _check_widths("fc_channels", fc_channels, min_len=0)
        if conv_channels < 1:
            raise ValueError(f"conv_channels must be >= 1, got {conv_channels}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}.")
        if (pooled_size is None) == (input_size is None):
            raise ValueError(
                "give exactly one of pooled_size (any input size, adaptive pooling) and input_size (one fixed "
                f"patch size), got pooled_size={pooled_size!r}, input_size={input_size!r}."
            )
        factor = 2 ** len(channels)
        if input_size is not None:
            size = tuple(int(s) for s in ensure_tuple_rep(input_size, spatial_dims))
            if any(s < factor or s % factor for s in size):
                raise ValueError(f"input_size must be a multiple of {factor} (2 ** len(channels)), got {size}.")
            grid = tuple(s // factor for s in size)
        else:
            grid = tuple(int(s) for s in ensure_tuple_rep(pooled_size, spatial_dims))
            if any(s < 1 for s in grid):
                raise ValueError(f"pooled_size must be >= 1, got {pooled_size!r}.")
        super().__init__()
        self.spatial_dims = spatial_dims
        self.input_size: list[int] | None = None if input_size is None else list(size)
        self.feature_grid = list(grid)
        widths = (in_channels, *channels)
        self.stages = nn.Sequential(
            *(
                ConvNormPoolStage(spatial_dims, widths[i], widths[i + 1], kernel_size, norm, act)
                for i in range(len(channels))
            )
        )
        self.conv = Convolution(
            spatial_dims, channels[-1], conv_channels, kernel_size=kernel_size, act=act, norm=norm, bias=norm is None
        )
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](grid)
        self.head = FullyConnectedNet(conv_channels * math.prod(grid), 1, fc_channels, act=act)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Score ``y`` of shape (B, C, *S); returns (B, 1) logits."""
        size = self.input_size
        if size is not None:
            if list(y.shape[2:]) != size:
                raise ValueError("expected patches of size " + str(size) + ", got " + str(list(y.shape[2:])) + ".")
        return self.head(self.pool(self.conv(self.stages(y))))


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
