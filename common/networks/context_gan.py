"""The context-aware GAN of Nie et al.: a 3D FCN generator (32³ -> centre 16³) and its auto-context cascade.

The CNN discriminator (Fig. 3) is :class:`common.networks.dual_discriminator.ConvPoolCritic` with
``input_size=16``: the same layers as the dual-discriminator GAN's global critic.

References:
    D. Nie, R. Trullo, J. Lian, L. Wang, C. Petitjean, S. Ruan, Q. Wang, D. Shen, "Medical image synthesis
    with deep convolutional adversarial networks", IEEE TBME 65(12):2720-2730, 2018 (Fig. 3-5).
    A. Bellia, A. Carotenuto, V. Romano, "A great and important challenge: the synthesis of the medical
    images", 2020 (the seed re-implementation, Sec. 3.1.4: "The network has 9 layers that contain
    convolution, batch normalization (BN) and ReLU operations ... the filter numbers are 32, 32, 32, 64, 64,
    64, 32, 32, and 1 ... dilated convolution ... equal to one [for the first and last layer] and two for all
    the other ones").

Only the two 9³ layers are unpadded ("valid"), so a 32³ input gives a 24³ then a 16³ map: the output is the
target at the centre 16³ of the input patch (margin 8 per side). The dilation of the seed applies to the inner
3³ layers only: a dilated 9³ valid layer would shrink 24 -> 8 and break the paper's 32³ -> 16³ mapping.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from monai.networks.blocks import Convolution

from common.networks.utils import check_spatial_dims

__all__ = [
    "CentreCropResidual",
    "ContextFCNGenerator",
    "AutoContextCascade",
    "stage_checkpoints",
]

PAPER_CHANNELS = (32, 32, 32, 64, 64, 64, 32, 32)
PAPER_KERNELS = (9, 3, 3, 3, 9, 3, 3, 3, 3)


class CentreCropResidual(nn.Module):
    """Long-term residual unit (Nie et al. 2018, Fig. 7; seed Eq. 7): ``y = F(x) + crop_c(x_k)``.

    ``crop_c(x_k)`` is channel ``k`` of the input cropped to the centre of the spatial size of ``F(x)`` (the
    16³ centre of a 32³ patch), so the network learns the residual ``Y - X`` for similar contrasts.

    Args:
        channel: input channel added (0: the source; in an auto-context stage 1: the previous synthesis).

    Shapes:
        residual (B, C_out, *out_spatial), inputs (B, C_in, *in_spatial) -> (B, C_out, *out_spatial).
    """

    def __init__(self, channel: int = 0) -> None:
        super().__init__()
        if channel < 0:
            raise ValueError(f"channel must be >= 0, got {channel}.")
        self.channel = int(channel)

    def forward(self, residual: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs[:, self.channel : self.channel + 1]
        for axis in range(2, inputs.ndim):
            start = (inputs.shape[axis] - residual.shape[axis]) // 2
            x = x.narrow(axis, start, residual.shape[axis])
        return residual + x


class ContextFCNGenerator(nn.Module):
    """3D FCN generator of the context-aware GAN (Nie et al. 2018, Fig. 4): ``G: 32³ source -> 16³ target``.

    Nine layers ``l = 1..9``: Conv(k_l, dilation d_l) - BN - ReLU for ``l < 9``, a plain convolution to
    ``out_channels`` for ``l = 9``; filters 32, 32, 32, 64, 64, 64, 32, 32, 1 and kernels 9, 3, 3, 3, 9, 3, 3, 3, 3.
    The layers with a kernel above 3 are unpadded, each shrinking every axis by ``k - 1`` (32 -> 24 -> 16); the
    3³ layers keep the size with padding ``d_l``; ``d_l = dilation`` on the inner 3³ layers (2 in the seed), 1 on
    the first and the last layer. With ``residual``, ``G(x) = F(x) + crop_c(x)`` (:class:`CentreCropResidual`).

    Args:
        spatial_dims: 2 or 3.
        in_channels: 1 (stage 1: the source) or 2 (auto-context stage k >= 2: source ⊕ stage k-1 synthesis);
            any number of sources is allowed.
        out_channels: output channels (the last layer's filters, 1).
        channels: filters of the first eight layers.
        kernel_sizes: kernels of the nine layers; a kernel above 3 makes an unpadded layer.
        dilation: dilation of the inner 3³ layers (1: none).
        residual: add the centre crop of input channel ``residual_channel`` to the output.
        residual_channel: which input channel the residual adds.
        norm: MONAI norm of the first eight layers.
        act: MONAI activation of the first eight layers.
        zero_init_last: start the last convolution at zero (weights and bias), so the untrained generator is
            ``G(x) = crop_c(x)`` with ``residual`` (0 without): it then learns the residual ``Y - X`` from the
            identity instead of from a random offset. Not in the paper; a short-training switch (the CPU demo).

    Attributes:
        shrink: ``in_size - out_size`` per axis (16 for the paper); ``margin = shrink // 2``.
        min_input_size: smallest input size per axis (``shrink + 1``, giving a 1-voxel output).

    Shapes:
        (B, in_channels, *S) -> (B, out_channels, *(S - shrink)), e.g. (B, 1, 32, 32, 32) -> (B, 1, 16, 16, 16).
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = PAPER_CHANNELS,
        kernel_sizes: Sequence[int] = PAPER_KERNELS,
        dilation: int = 1,
        residual: bool = False,
        residual_channel: int = 0,
        norm: str | tuple | None = "batch",
        act: str | tuple | None = "relu",
        zero_init_last: bool = False,
    ) -> None:
        check_spatial_dims(spatial_dims)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}.")
        channels, kernel_sizes = [int(c) for c in channels], [int(k) for k in kernel_sizes]
        if len(kernel_sizes) != len(channels) + 1:
            raise ValueError(
                f"kernel_sizes must have one entry per layer (len(channels) + 1 = {len(channels) + 1}), "
                f"got {kernel_sizes}."
            )
        if any(c < 1 for c in channels):
            raise ValueError(f"channels must be >= 1, got {channels}.")
        if any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd and >= 1, got {kernel_sizes}.")
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}.")
        if residual and not 0 <= residual_channel < in_channels:
            raise ValueError(f"residual_channel must be in [0, {in_channels}), got {residual_channel}.")
        if residual and out_channels != 1:
            raise ValueError(f"residual needs out_channels == 1, got {out_channels}.")
        super().__init__()
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.use_residual = bool(residual)
        widths = [in_channels, *channels, out_channels]
        last = len(kernel_sizes) - 1
        layers = []
        shrink = 0
        for i, k in enumerate(kernel_sizes):
            valid = k > 3
            d = dilation if (0 < i < last and not valid) else 1
            shrink += (k - 1) if valid else 0
            layers.append(
                Convolution(
                    spatial_dims,
                    widths[i],
                    widths[i + 1],
                    kernel_size=k,
                    dilation=d,
                    padding=0 if valid else d * (k - 1) // 2,
                    act=act,
                    norm=norm,
                    conv_only=i == last,
                )
            )
        self.layers = nn.Sequential(*layers)
        if zero_init_last:
            nn.init.zeros_(layers[-1].conv.weight)
            if layers[-1].conv.bias is not None:
                nn.init.zeros_(layers[-1].conv.bias)
        self.residual = CentreCropResidual(residual_channel)
        self.shrink = shrink
        self.margin = shrink // 2
        self.min_input_size = shrink + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, *S) -> (B, out_channels, *(S - shrink)); a clear error when ``S <= shrink``."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                "expected input (B, "
                + str(self.in_channels)
                + ", "
                + str(self.spatial_dims)
                + " spatial dims), got "
                + str(list(x.shape))
                + "."
            )
        for size in x.shape[2:]:
            if size < self.min_input_size:
                raise ValueError(
                    "input spatial size "
                    + str(list(x.shape[2:]))
                    + " is too small: the unpadded layers remove "
                    + str(self.shrink)
                    + " voxels per axis, so every axis needs >= "
                    + str(self.min_input_size)
                    + " (the paper's patch: 32 -> 16)."
                )
        out = self.layers(x)
        if self.use_residual:
            out = self.residual(out, x)
        return out


def stage_checkpoints(ckpt_dir: str, num_stages: int) -> list[str]:
    """Best-model files of a cascade: ``<ckpt_dir>/model.pt`` (stage 1), ``<ckpt_dir>/stage<k>/model.pt`` (k >= 2)."""
    if num_stages < 1:
        raise ValueError(f"num_stages must be >= 1, got {num_stages}.")
    return [os.path.join(ckpt_dir, "model.pt")] + [
        os.path.join(ckpt_dir, f"stage{k}", "model.pt") for k in range(2, num_stages + 1)
    ]


class AutoContextCascade(nn.Module):
    """Auto-context model (ACM) of Nie et al. 2018 (Sec. 3.2 of the seed, Fig. 5) run on whole volumes.

    ``Ŷ_1 = S(G_1, X)`` and ``Ŷ_k = S(G_k, X ⊕ Ŷ_{k-1})`` for ``k = 2..K``, where ``S`` stitches the patch network
    over the whole volume (``inferer``, e.g. :class:`~common.inferers.CenterCropStitchInferer`):
    each stage sees the previous stage's *whole* stitched synthesis, so its input patch carries context from
    beyond the patch. Stage 1 takes ``in_channels`` source channels, every later stage ``in_channels + 1``.

    Args:
        num_stages: K (>= 1).
        in_channels: source channels.
        inferer: ``inferer(volume, network) -> synthesis`` over a whole volume.
        generator_kwargs: keyword arguments of every stage's :class:`ContextFCNGenerator` except ``in_channels``.
        weights: optional checkpoint file per stage (a state dict, or a dict holding one under ``"model"``),
            e.g. :func:`stage_checkpoints`; a missing file is an error naming it and its stage.
        return_all: return every stage's synthesis as channels (B, K, *spatial) instead of the last one.

    Shapes:
        (B, in_channels, *spatial) -> (B, 1, *spatial), or (B, K, *spatial) with ``return_all``.
    """

    def __init__(
        self,
        num_stages: int,
        in_channels: int,
        inferer: Callable[..., torch.Tensor],
        generator_kwargs: Mapping[str, Any] | None = None,
        weights: Sequence[str] | None = None,
        return_all: bool = False,
    ) -> None:
        if num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {num_stages}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        if not callable(inferer):
            raise ValueError("inferer must be callable as inferer(volume, network).")
        kwargs = dict(generator_kwargs or {})
        if "in_channels" in kwargs:
            raise ValueError("generator_kwargs must not set in_channels: stage k >= 2 gets one more channel.")
        if weights is not None and len(weights) != num_stages:
            raise ValueError(f"weights must name one file per stage ({num_stages}), got {len(weights)}.")
        super().__init__()
        self.in_channels = int(in_channels)
        self.inferer = inferer
        self.return_all = bool(return_all)
        self.stages = nn.ModuleList(
            [ContextFCNGenerator(in_channels=in_channels + (k > 0), **kwargs) for k in range(num_stages)]
        )
        for k, path in enumerate(weights or []):
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"checkpoint '{path}' of auto-context stage {k + 1} does not exist; train it first."
                )
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
                state = state["model"]
            self.stages[k].load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the stages one after another, each on the previous stage's whole stitched volume."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} source channels, got input of shape {tuple(x.shape)}.")
        outputs: list[torch.Tensor] = []
        for k, stage in enumerate(self.stages):
            inputs = x if k == 0 else torch.cat([x, outputs[-1].to(x.dtype)], dim=1)
            outputs.append(self.inferer(inputs, stage))
        return torch.cat(outputs, dim=1) if self.return_all else outputs[-1]
