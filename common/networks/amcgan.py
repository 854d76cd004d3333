"""AMCGAN generator: multi-scale feature capture + feature attention + pix2pix ResNet encoder-decoder.

Reference:
    M. Pan, H. Zhang, Z. Tang, Y. Zhao, J. Tian, "Attention-Based Multi-Scale Generative Adversarial Network for
    synthesizing contrast-enhanced MRI".

The generator of Fig. 1 reads ``x -> MSFC -> FAM -> encoder-decoder``. The encoder-decoder is the ResNet generator
of pix2pix (P. Isola et al., CVPR 2017; ``resnet_6blocks``) and the FAM is the channel attention module of DANet
(J. Fu et al., CVPR 2019). Switching both front modules off gives exactly the pix2pix ResNet generator, so the three
rows of the paper's Table I (Pix2Pix, Multi-scale, AMCGAN) are configurations of :class:`AMCGANGenerator`.
The MSFC and FAM blocks are in :mod:`common.networks.amcgan_blocks` (still importable from here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from monai.networks.blocks import ADN, Convolution
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer

from common.networks.amcgan_blocks import FeatureAttention, MultiScaleFeatureCapture, _check_args, _uses_bias
from common.networks.utils import check_input_dims

__all__ = ["MultiScaleFeatureCapture", "FeatureAttention", "ResnetBlock", "ResnetEncoderDecoder", "AMCGANGenerator"]

PADDING_MODES = ("reflect", "replicate", "zeros")


def _check_spatial_size(x: torch.Tensor, spatial_dims: int, multiple: int, min_size: int) -> None:
    """Raise ``ValueError`` unless ``x`` is (B, C, *spatial) with every spatial size a multiple of ``multiple``
    and at least ``min_size`` (TorchScript compatible)."""
    check_input_dims(x, spatial_dims)
    sizes = list(x.shape[2:])
    for s in sizes:
        if s % multiple != 0 or s < min_size:
            raise ValueError(
                f"input spatial size {sizes} is invalid: every spatial size must be a multiple of {multiple} "
                f"(two stride-2 down-samplings) and at least {min_size}; got {s}."
            )


def _padded_conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    padding_mode: str,
    norm: tuple | str | None = None,
    act: tuple | str | None = None,
    dropout: float = 0.0,
    bias: bool = True,
) -> nn.Sequential:
    """Stride-1 "same" convolution with a chosen padding mode, then MONAI ``ADN`` (norm -> act -> dropout).

    MONAI's ``Convolution`` only zero-pads; pix2pix reflection-pads its 7x7 and residual convolutions, so the
    convolution is built from MONAI's ``Conv`` factory with ``padding_mode`` and followed by MONAI's ``ADN``.
    The submodule names (``conv``, ``adn``) mirror ``Convolution``.
    """
    layers = nn.Sequential()
    conv_type = Conv[Conv.CONV, spatial_dims]
    layers.add_module(
        "conv",
        conv_type(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, padding_mode=padding_mode, bias=bias
        ),
    )
    if norm is not None or act is not None or dropout > 0:
        layers.add_module(
            "adn",
            ADN(
                ordering="NAD",
                in_channels=out_channels,
                act=act,
                norm=norm,
                norm_dim=spatial_dims,
                dropout=dropout if dropout > 0 else None,
                dropout_dim=1,  # element-wise dropout (nn.Dropout), as pix2pix, for 2D and 3D alike
            ),
        )
    return layers


class ResnetBlock(nn.Module):
    """pix2pix residual block: ``y = x + norm(conv(dropout(relu(norm(conv(x))))))`` with 3x3 convolutions.

    Args:
        spatial_dims: 2 or 3.
        channels: input = output channels.
        norm: MONAI norm spec (bias is dropped for batch norm, as pix2pix).
        dropout: dropout probability between the two convolutions (0 disables it).
        padding_mode: ``"reflect"`` (pix2pix), ``"replicate"`` or ``"zeros"``.

    Shapes:
        input (B, channels, *spatial) -> output (B, channels, *spatial).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        norm: tuple | str | None = "batch",
        dropout: float = 0.5,
        padding_mode: str = "reflect",
    ) -> None:
        _check_args(spatial_dims, channels=channels)
        super().__init__()
        bias = _uses_bias(norm)
        self.block = nn.Sequential(
            _padded_conv(spatial_dims, channels, channels, 3, padding_mode, norm, "relu", dropout, bias),
            _padded_conv(spatial_dims, channels, channels, 3, padding_mode, norm, None, 0.0, bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetEncoderDecoder(nn.Module):
    """The pix2pix ResNet generator (``resnet_6blocks``), the encoder-decoder of AMCGAN (Fig. 1).

    ``c7s1-w, d2w, d4w, R4w x num_res_blocks, u2w, uw, c7s1-out, out_activation`` with ``w = channels``:
    a 7x7 conv-norm-ReLU, two stride-2 3x3 conv-norm-ReLU down-samplings (w -> 2w -> 4w), residual blocks
    (:class:`ResnetBlock`, with dropout), two stride-2 3x3 transposed conv-norm-ReLU up-samplings (4w -> 2w -> w)
    and a 7x7 convolution followed by the output activation. The 7x7 and residual convolutions use
    ``padding_mode`` (pix2pix: reflection), the strided (transposed) convolutions zero padding, as pix2pix.

    Every spatial size of the input must be a multiple of 4; with reflection padding it must also be at least 8
    (the 3x3 reflection pad at the 1/4-resolution bottleneck needs 2 pixels). Checked in ``forward``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        channels: base width ``w`` (pix2pix ``ngf``, 64).
        num_res_blocks: number of residual blocks (6 for ``resnet_6blocks``).
        dropout: dropout probability inside the residual blocks (pix2pix: 0.5 when enabled, 0 disables).
        norm: MONAI norm spec, e.g. ``"batch"`` (pix2pix default) or ``"instance"``.
        out_activation: MONAI activation spec of the output (``"tanh"`` for data in [-1, 1]; ``None``: identity).
        padding_mode: ``"reflect"`` (pix2pix), ``"replicate"`` or ``"zeros"``.

    Shapes:
        input (B, in_channels, *spatial) -> output (B, out_channels, *spatial).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: int = 64,
        num_res_blocks: int = 6,
        dropout: float = 0.5,
        norm: tuple | str | None = "batch",
        out_activation: tuple | str | None = "tanh",
        padding_mode: str = "reflect",
    ) -> None:
        _check_args(spatial_dims, in_channels=in_channels, out_channels=out_channels, channels=channels)
        if num_res_blocks < 0:
            raise ValueError(f"num_res_blocks must be >= 0, got {num_res_blocks}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}.")
        super().__init__()
        self.spatial_dims = spatial_dims
        self.size_multiple = 4  # two stride-2 down-samplings
        self.min_size = 8 if padding_mode == "reflect" else 4
        bias, w = _uses_bias(norm), channels

        def strided(c_in: int, c_out: int, up: bool) -> Convolution:
            """3x3 stride-2 conv-norm-ReLU (zero padding 1); ``up``: transposed, output padding 1 (x2 size)."""
            return Convolution(
                spatial_dims,
                c_in,
                c_out,
                strides=2,
                kernel_size=3,
                adn_ordering="NA",
                act="relu",
                norm=norm,
                bias=bias,
                is_transposed=up,
                padding=1,
                output_padding=1,
            )

        self.encoder = nn.Sequential(
            _padded_conv(spatial_dims, in_channels, w, 7, padding_mode, norm, "relu", 0.0, bias),
            strided(w, 2 * w, up=False),
            strided(2 * w, 4 * w, up=False),
        )
        self.res_blocks = nn.Sequential(
            *[ResnetBlock(spatial_dims, 4 * w, norm, dropout, padding_mode) for _ in range(num_res_blocks)]
        )
        self.decoder = nn.Sequential(
            strided(4 * w, 2 * w, up=True),
            strided(2 * w, w, up=True),
            _padded_conv(spatial_dims, w, out_channels, 7, padding_mode),
            get_act_layer(out_activation) if out_activation is not None else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_spatial_size(x, self.spatial_dims, self.size_multiple, self.min_size)
        return self.decoder(self.res_blocks(self.encoder(x)))


class AMCGANGenerator(nn.Module):
    """AMCGAN generator (Fig. 1 of Pan et al.): ``x -> MSFC -> FAM -> pix2pix ResNet encoder-decoder``.

    Table I configurations:

    ============  ============  ===========
    row           ``use_msfc``  ``use_fam``
    ============  ============  ===========
    Pix2Pix       False         False
    Multi-scale   True          False
    AMCGAN        True          True
    ============  ============  ===========

    With both off the network is exactly the pix2pix ResNet generator (same layers and parameter count).
    ``use_fam=True`` with ``use_msfc=False`` is allowed (FAM then attends over the raw input channels; for a
    single-channel image it reduces to the scaling ``(1 + beta) x``); it is not a configuration of the paper.
    FAM adds exactly one parameter (``beta``).

    Args:
        spatial_dims: 2 (the paper) or 3.
        in_channels: channels of the non-contrast image(s).
        out_channels: channels of the synthesised contrast-enhanced image.
        channels: base width of the encoder-decoder (pix2pix ``ngf``).
        num_res_blocks: residual blocks of the encoder-decoder (6).
        use_msfc: insert the multi-scale feature capture module.
        use_fam: insert the feature attention module.
        msfc_channels: output channels of each MSFC branch (the encoder then sees
            ``len(msfc_kernel_sizes) * msfc_channels`` channels; default 4 x 16 = 64).
        msfc_kernel_sizes: kernel size of each MSFC branch.
        msfc_dilations: dilation of each MSFC branch.
        msfc_act: activation after each MSFC convolution (``None`` for none).
        dropout: dropout probability in the residual blocks.
        norm: MONAI norm spec of the whole generator (``"batch"`` as the paper / pix2pix, or ``"instance"``).
        out_activation: output activation (``"tanh"`` or ``None``).
        padding_mode: padding of the encoder-decoder's 7x7 and residual convolutions (``"reflect"`` as pix2pix).

    Shapes:
        input (B, in_channels, *spatial) -> output (B, out_channels, *spatial); every spatial size a multiple
        of 4 (and >= 8 with reflection padding), otherwise ``forward`` raises ``ValueError``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: int = 64,
        num_res_blocks: int = 6,
        use_msfc: bool = True,
        use_fam: bool = True,
        msfc_channels: int = 16,
        msfc_kernel_sizes: Sequence[int] = (1, 3, 5, 3),
        msfc_dilations: Sequence[int] = (1, 1, 1, 2),
        msfc_act: tuple | str | None = "relu",
        dropout: float = 0.5,
        norm: tuple | str | None = "batch",
        out_activation: tuple | str | None = "tanh",
        padding_mode: str = "reflect",
    ) -> None:
        _check_args(spatial_dims, in_channels=in_channels)
        super().__init__()
        self.spatial_dims = spatial_dims
        self.use_msfc = use_msfc
        self.use_fam = use_fam
        features = in_channels
        self.msfc: nn.Module = nn.Identity()
        if use_msfc:
            msfc = MultiScaleFeatureCapture(
                spatial_dims, in_channels, msfc_channels, msfc_kernel_sizes, msfc_dilations, norm, msfc_act
            )
            features = msfc.out_channels
            self.msfc = msfc
        self.fam: nn.Module = FeatureAttention(spatial_dims) if use_fam else nn.Identity()
        self.encoder_decoder = ResnetEncoderDecoder(
            spatial_dims, features, out_channels, channels, num_res_blocks, dropout, norm, out_activation, padding_mode
        )
        self.size_multiple = self.encoder_decoder.size_multiple
        self.min_size = self.encoder_decoder.min_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_spatial_size(x, self.spatial_dims, self.size_multiple, self.min_size)
        z = self.msfc(x)  # multi-scale features Z = concat(f^1..f^4)
        a = self.fam(z)  # A = beta * reshape(X^T Z) + Z
        return self.encoder_decoder(a)
