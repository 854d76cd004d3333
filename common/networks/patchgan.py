"""Conditional PatchGAN discriminator (pix2pix; the AMCGAN discriminator of Pan et al.), and why MONAI's is not used.

MONAI 1.6.1's ``monai.networks.nets.PatchDiscriminator`` (``monai/networks/nets/patchgan_discriminator.py``,
after pix2pixHD) is a different network with a different output:

- ``forward`` returns the list of every layer's output with the logits last, not a logits tensor (the
  trainer and :class:`~common.losses.adversarial.DiscriminatorLoss` take the tensor);
- widths double at every layer without pix2pix's cap at ``8 * ndf``: ``num_layers_d=4`` (six convolutions,
  strides 2, 2, 2, 2, 1, 1 as here) gives ``64, 128, 256, 512, 1024, 1`` instead of ``64, 128, 256, 512, 512, 1``;
- the middle convolutions have ``bias=False`` whatever the norm (pix2pix keeps the bias before instance norm,
  drops it before batch norm), the default norm is batch norm (the AMCGAN paper uses instance norm), the
  last kernel defaults to ``kernel_size`` (``1`` in ``MultiScalePatchDiscriminator``), and the weights are
  re-initialised with ``normal_init`` (N(0, 0.02), pix2pix's ``init_type='normal'``; this class keeps
  PyTorch's default initialisation);
- ``MultiScalePatchDiscriminator`` feeds the *same* full-resolution input to ``num_d`` discriminators of
  ``num_layers_d * (i + 1)`` layers (deeper, not on pix2pixHD's average-pooled image pyramid) and returns
  ``(logits list, feature lists)``; its ``minimum_size_im`` (256) is a construction-time check of a declared
  size, the input itself is not checked.

Swapping it in changes the discriminator's capacity, receptive field and patch-map size, hence the adversarial
objective the generator is trained against.

References:
    P. Isola, J.-Y. Zhu, T. Zhou, A. A. Efros, "Image-to-Image Translation with Conditional Adversarial
    Networks", CVPR 2017 (PatchGAN, ``NLayerDiscriminator``).
    M. Pan, H. Zhang, Z. Tang, Y. Zhao, J. Tian, "Attention-Based Multi-Scale Generative Adversarial Network for
    synthesizing contrast-enhanced MRI": "The discriminator is built by six convolution layers. First
    five convolution layers are followed by ... instance-normalization (IN) and LeakyReLU."
"""

from __future__ import annotations

import torch
import torch.nn as nn

from monai.networks.blocks import Convolution
from monai.networks.layers.factories import split_args

from common.networks.utils import check_input_dims, check_spatial_dims

__all__ = ["PatchDiscriminator"]

_KERNEL_SIZE = 4
_PADDING = 1
_MAX_WIDTH_MULTIPLIER = 8


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: ``D(x, y)`` maps ``concat(x, y)`` to a map of real/fake logits, one per patch.

    ``num_layers`` 4x4 convolutions (padding 1), widths ``w, 2w, 4w, 8w, 8w, ..., 1`` (capped at ``8w``):

    * conv 1: stride 2, LeakyReLU, no normalisation (pix2pix practice);
    * convs 2 .. ``num_layers - 2``: stride 2, norm + LeakyReLU;
    * conv ``num_layers - 1``: stride 1, norm + LeakyReLU;
    * conv ``num_layers``: stride 1, 1 output channel, no norm / activation (logits, for a BCE-with-logits loss).

    The default ``num_layers=6`` is pix2pix's ``NLayerDiscriminator`` with ``n_layers=4`` (pix2pix's 70x70
    PatchGAN is ``num_layers=5``). Its receptive field, from ``r_{l-1} = (r_l - 1) * stride_l + 4``, is 142 pixels
    (voxels) per axis; every spatial size ``S`` (a multiple of 16) gives a patch map of ``S / 16 - 2`` per axis,
    e.g. 256x256 -> 14x14. Inputs must be at least ``min_size`` (48 for six layers) along each axis.

    Conditional use: ``in_channels`` = channels of the condition ``x`` + channels of the image ``y`` / ``G(x)``;
    the caller concatenates them along the channel axis.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of ``concat(x, y)``.
        channels: width ``w`` of the first convolution (pix2pix ``ndf``, 64).
        num_layers: number of convolutions (>= 3); 6 in the paper.
        norm: MONAI norm spec of convolutions 2 .. ``num_layers - 1`` (``"instance"`` in the paper, ``None``: none).
            Bias is dropped before batch norm, as pix2pix.
        negative_slope: LeakyReLU slope (0.2).

    Attributes:
        receptive_field: receptive field of one output logit along each axis, in input pixels.
        min_size: smallest spatial size along each axis that gives a non-empty patch map.

    Shapes:
        input (B, in_channels, *spatial) -> output (B, 1, *patch_spatial).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int = 64,
        num_layers: int = 6,
        norm: tuple | str | None = "instance",
        negative_slope: float = 0.2,
    ) -> None:
        check_spatial_dims(spatial_dims)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}.")
        if num_layers < 3:
            raise ValueError(f"num_layers must be >= 3, got {num_layers}.")
        if negative_slope < 0:
            raise ValueError(f"negative_slope must be >= 0, got {negative_slope}.")
        super().__init__()
        self.spatial_dims = spatial_dims
        act = ("leakyrelu", {"negative_slope": negative_slope})
        bias = True
        if norm is not None:
            name, _ = split_args(norm)
            bias = not (isinstance(name, str) and name.lower() == "batch")

        strides = [2] * (num_layers - 2) + [1, 1]
        widths = [channels * min(2**i, _MAX_WIDTH_MULTIPLIER) for i in range(num_layers - 1)] + [1]
        layers = nn.Sequential()
        c_in = in_channels
        for i, (stride, c_out) in enumerate(zip(strides, widths)):
            first, last = i == 0, i == num_layers - 1
            layers.add_module(
                f"conv{i + 1}",
                Convolution(
                    spatial_dims,
                    c_in,
                    c_out,
                    strides=stride,
                    kernel_size=_KERNEL_SIZE,
                    padding=_PADDING,
                    adn_ordering="NA",
                    norm=None if first else norm,
                    act=act,
                    bias=True if first or last else bias,
                    conv_only=last,
                ),
            )
            c_in = c_out
        self.model = layers

        receptive_field, min_size = 1, 1
        for stride in reversed(strides):
            receptive_field = (receptive_field - 1) * stride + _KERNEL_SIZE
            # smallest input size giving `min_size` outputs: floor((s + 2p - k) / stride) + 1 >= min_size
            min_size = (min_size - 1) * stride + _KERNEL_SIZE - 2 * _PADDING
        self.receptive_field = receptive_field
        self.min_size = min_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_dims(x, self.spatial_dims)
        sizes = list(x.shape[2:])
        for s in sizes:
            if s < self.min_size:
                raise ValueError(
                    f"input spatial size {sizes} is too small: every spatial size must be at least {self.min_size}."
                )
        return self.model(x)
