"""FA-GAN: the fused attentive super-resolution generator and the spectral-normalised SRGAN discriminator.

Reference:
    Jiang M., Zhi M., Wei L., et al. "FA-GAN: Fused attentive generative adversarial networks for MRI image
    super-resolution." Computerized Medical Imaging and Graphics 92, 101969, 2021 (Figs. 1-5).
    Ledig C., et al. "Photo-realistic single image super-resolution using a generative adversarial network",
    CVPR 2017 (SRGAN: head, residual body, sub-pixel up-sampling, discriminator).
    Miyato T., et al. "Spectral normalization for generative adversarial networks", ICLR 2018.
    Shi W., et al. "Real-time single image and video super-resolution using an efficient sub-pixel
    convolutional neural network", CVPR 2016.

Ablations (Table 6) switch the LFFB (else SRGAN residual blocks), the channel attention (CA) and the
self-attention (SA): SRGAN = none, CA-SR-GAN = CA, SA-SR-GAN = SA, FA-GAN = all three.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai.networks.blocks import Convolution, SubpixelUpsample
from monai.networks.layers.factories import Act, Pool

from common.networks.attention import AttentionFusion, ChannelAttention, SelfAttention
from common.networks.lffb import LocalFusionFeatureBlock, SRResidualBlock
from common.networks.utils import check_spatial_dims

__all__ = ["SUPPORTED_SCALES", "GlobalFeatureFusion", "FAGANGenerator", "SRGANDiscriminator", "spectral_normalize"]

SUPPORTED_SCALES = (2, 4, 8)


class GlobalFeatureFusion(nn.Module):
    """Global feature fusion block (GFFB), FA-GAN Fig. 3: ``Z = Fusion(CA(x), SA(x))``.

    With one attention switched off the block is that attention alone; with both off it is the identity.

    Args:
        spatial_dims: 2 or 3.
        channels: feature width.
        use_ca, use_sa: channel attention / self-attention on or off.
        ca_reduction: ``r`` of the channel attention.
        sa_key_reduction: query/key width divisor of the self-attention.
        sa_kv_pool: key/value pooling of the self-attention (1 = full ``N x N`` map, see ``SelfAttention``).
        fusion: ``"weighted"`` (default, Table 7) or ``"direct"``; ``alpha``, ``beta``: its presets.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        use_ca: bool = True,
        use_sa: bool = True,
        ca_reduction: int = 16,
        sa_key_reduction: int = 8,
        fusion: str = "weighted",
        alpha: float = 0.5,
        beta: float = 0.5,
        sa_kv_pool: int = 1,
    ) -> None:
        super().__init__()
        self.ca = ChannelAttention(spatial_dims, channels, ca_reduction) if use_ca else None
        self.sa = SelfAttention(spatial_dims, channels, sa_key_reduction, sa_kv_pool) if use_sa else None
        self.fusion = AttentionFusion(fusion, alpha, beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial) -> (B, C, *spatial)``."""
        if self.ca is not None and self.sa is not None:
            return self.fusion(self.ca(x), self.sa(x))
        if self.ca is not None:
            return self.ca(x)
        if self.sa is not None:
            return self.sa(x)
        return x


class FAGANGenerator(nn.Module):
    """FA-GAN generator, Fig. 1: ``I_SR = Conv_out(GFFB(Conv(Up^n(Body(Head(I_LR)) + Head(I_LR)))))``.

    - Head: a ``head_kernel_size`` convolution + PReLU (SRGAN: 9).
    - Body: ``num_blocks`` LFFBs (or SRGAN residual blocks when ``use_lffb`` is False), a 3x3 convolution,
      and SRGAN's long skip from the head.
    - ``n = log2(scale)`` sub-pixel up-sampling stages (MONAI ``SubpixelUpsample``: convolution to
      ``2^d C`` channels + pixel shuffle, ICNR-initialised) each followed by PReLU; each doubles every spatial
      size, so the output is ``scale`` x the input along every spatial axis.
    - A 3x3 convolution, the GFFB (CA + SA + fusion) and the output convolution (``out_kernel_size``, linear).

    Args:
        spatial_dims: 2 or 3 (the bundle trains 2D on slices; 3D up-samples every axis).
        in_channels, out_channels: image channels.
        scale: 2, 4 or 8.
        channels: feature width ``C``.
        num_blocks: LFFBs (or residual blocks) in the body.
        use_lffb, use_ca, use_sa: the three components of Table 6.
        fusion, alpha, beta: the fusion of the GFFB (Table 7 / 8).
        ca_reduction, sa_key_reduction: attention widths.
        sa_kv_pool: key/value pooling of the self-attention (1: the paper's full map; 2: 4x cheaper).
        kernel_sizes: LFFB path kernels.
        res_norm: normalisation of the SRGAN residual blocks (``use_lffb=False``).
        head_kernel_size, out_kernel_size: odd kernel sizes of the first and last convolutions.
        interpolation_skip: add the bicubic (3D: trilinear) up-sampling of the input to the output, i.e. learn
            the residual to interpolation (VDSR's global residual learning; *not* in FA-GAN, off by default).
            It makes short CPU trainings start from the bicubic baseline instead of from zero.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int = 4,
        channels: int = 64,
        num_blocks: int = 8,
        use_lffb: bool = True,
        use_ca: bool = True,
        use_sa: bool = True,
        fusion: str = "weighted",
        alpha: float = 0.5,
        beta: float = 0.5,
        ca_reduction: int = 16,
        sa_key_reduction: int = 8,
        kernel_sizes: Sequence[int] = (3, 5, 7),
        res_norm: str | tuple | None = "batch",
        head_kernel_size: int = 9,
        out_kernel_size: int = 9,
        sa_kv_pool: int = 1,
        interpolation_skip: bool = False,
    ) -> None:
        check_spatial_dims(spatial_dims)
        if isinstance(scale, bool) or scale not in SUPPORTED_SCALES:
            raise ValueError(f"scale must be one of {SUPPORTED_SCALES} (one x2 sub-pixel stage each), got {scale!r}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("channels", channels)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}.")
        for name, value in (("head_kernel_size", head_kernel_size), ("out_kernel_size", out_kernel_size)):
            if value < 1 or value % 2 == 0:
                raise ValueError(f"{name} must be a positive odd size, got {value}.")
        super().__init__()
        self.scale, self.spatial_dims = int(scale), spatial_dims
        self.use_lffb, self.use_ca, self.use_sa = bool(use_lffb), bool(use_ca), bool(use_sa)
        self.interpolation_skip = bool(interpolation_skip)
        self.skip_mode = "bicubic" if spatial_dims == 2 else "trilinear"
        if interpolation_skip and in_channels != out_channels:
            raise ValueError(
                f"interpolation_skip needs in_channels == out_channels, got {in_channels}, {out_channels}."
            )
        self.head = Convolution(
            spatial_dims, in_channels, channels, kernel_size=head_kernel_size, act="prelu", norm=None
        )
        if use_lffb:
            blocks = [LocalFusionFeatureBlock(spatial_dims, channels, kernel_sizes) for _ in range(num_blocks)]
        else:
            blocks = [SRResidualBlock(spatial_dims, channels, res_norm) for _ in range(num_blocks)]
        self.body = nn.Sequential(*blocks)
        self.body_conv = Convolution(
            spatial_dims, channels, channels, kernel_size=3, act=None, norm=None, conv_only=True
        )
        stages = []
        for _ in range(self.scale.bit_length() - 1):
            up = SubpixelUpsample(spatial_dims, channels, channels, scale_factor=2, apply_pad_pool=False)
            stages += [up, Act[Act.PRELU]()]
        self.upsample = nn.Sequential(*stages)
        self.pre_fusion = Convolution(
            spatial_dims, channels, channels, kernel_size=3, act=None, norm=None, conv_only=True
        )
        self.gffb = GlobalFeatureFusion(
            spatial_dims, channels, use_ca, use_sa, ca_reduction, sa_key_reduction, fusion, alpha, beta, sa_kv_pool
        )
        self.out = Convolution(
            spatial_dims, channels, out_channels, kernel_size=out_kernel_size, act=None, norm=None, conv_only=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *spatial) -> (B, C_out, *[scale * s for s in spatial])``."""
        head = self.head(x)
        features = self.body_conv(self.body(head)) + head
        out = self.out(self.gffb(self.pre_fusion(self.upsample(features))))
        if self.interpolation_skip:
            out = out + F.interpolate(x, scale_factor=float(self.scale), mode=self.skip_mode, align_corners=False)
        return out


def spectral_normalize(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Put spectral normalisation (``W / sigma(W)``, Miyato et al. 2018) on every convolution and linear layer."""
    targets = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    for sub in list(module.modules()):
        if isinstance(sub, targets):
            nn.utils.parametrizations.spectral_norm(sub, n_power_iterations=n_power_iterations)
    return module


class SRGANDiscriminator(nn.Module):
    """SRGAN discriminator with spectral normalisation on every weight layer (FA-GAN Sec. 2.1).

    ``x -> Conv3x3(C) LReLU -> [Conv3x3 stride 2, Conv3x3 stride 1 doubling the width] ... -> Conv3x3 stride 2
    -> global average pooling -> Conv1x1(dense_channels) LReLU -> Conv1x1(1)``: one logit per image. SRGAN has eight 3x3
    convolutions (64, 64, 128, 128, 256, 256, 512, 512; stride 2 on every second) and two dense layers; the
    dense layers are 1x1 convolutions after global pooling here, so any input size (>= ``2^num_stages``) works.
    With spectral normalisation SRGAN's batch normalisation is dropped by default (``norm=None``), as SN-GAN does.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (unconditional: the HR or SR image only).
        channels: width of the first convolution (SRGAN: 64).
        num_stages: stride-2 stages (SRGAN: 4, i.e. 8 convolutions).
        dense_channels: width of the first dense layer (SRGAN: 1024).
        norm: normalisation after the strided convolutions (``None``, ``"batch"``, ...).
        spectral_norm: spectral normalisation on every convolution (the paper's choice).
        n_power_iterations: power iterations per forward pass of the spectral normalisation.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        channels: int = 64,
        num_stages: int = 4,
        dense_channels: int = 1024,
        norm: str | tuple | None = None,
        spectral_norm: bool = True,
        n_power_iterations: int = 1,
    ) -> None:
        check_spatial_dims(spatial_dims)
        for name, value in (
            ("in_channels", in_channels),
            ("channels", channels),
            ("num_stages", num_stages),
            ("dense_channels", dense_channels),
            ("n_power_iterations", n_power_iterations),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        super().__init__()
        act = ("leakyrelu", {"negative_slope": 0.2})
        layers = [Convolution(spatial_dims, in_channels, channels, kernel_size=3, act=act, norm=None)]
        width = channels
        for stage in range(num_stages):
            out = channels * 2 ** min(stage, 3)
            layers.append(Convolution(spatial_dims, width, out, strides=2, kernel_size=3, act=act, norm=norm))
            width = out
            if stage + 1 < num_stages:  # SRGAN: c64s1 c64s2 c128s1 c128s2 c256s1 c256s2 c512s1 c512s2
                width = channels * 2 ** min(stage + 1, 3)
                layers.append(Convolution(spatial_dims, out, width, kernel_size=3, act=act, norm=norm))
        self.features = nn.Sequential(*layers)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.classifier = nn.Sequential(
            Convolution(spatial_dims, width, dense_channels, kernel_size=1, act=act, norm=None),
            Convolution(spatial_dims, dense_channels, 1, kernel_size=1, act=None, norm=None, conv_only=True),
        )
        self.spectral_norm = bool(spectral_norm)
        if spectral_norm:
            spectral_normalize(self, n_power_iterations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial) -> (B, 1)`` logits (``D = sigmoid(logit)`` is the probability of "real")."""
        return self.classifier(self.pool(self.features(x))).flatten(1)
