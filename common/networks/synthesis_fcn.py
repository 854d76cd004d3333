"""A plain fully convolutional encoder-decoder without skip connections: the "FCN" baseline of Table 1.

Reference:
    Q. Xiao, D. Nie, "Fine-grained Medical Image Synthesis with Dual-Attention Adversarial Learning", Sec. 2.1
    and Tables 1-2 (FCN row). The paper gives no details of its FCN; this is the U-Net of the bundle without
    its skip connections ("UNet [9], an evolutionary version of FCN, incorporates both high-resolution and
    rich-semantic feature maps"), so the comparison isolates the skips.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from monai.networks.blocks import Convolution

from common.networks.utils import check_spatial_dims

__all__ = ["SynthesisFCN"]


class SynthesisFCN(nn.Module):
    """Encoder-decoder FCN: ``y = conv_1(up_{c1}(... up_{cn-1}(down_{cn}(... down_{c1}(x)))))``, no skips.

    Encoder: for each width ``c_i`` a stride-``s_i`` conv-norm-act (``s_0 = 1``, then 2), decoder: transposed
    stride-2 conv-norm-act back through the widths, then a 1x1 convolution to ``out_channels`` (linear output).
    Every spatial size must be divisible by ``2 ** (len(channels) - 1)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: source channels.
        out_channels: target channels.
        channels: encoder widths; ``len(channels) - 1`` down-samplings.
        norm: MONAI norm spec.
        act: MONAI activation spec.

    Shapes:
        (B, in_channels, *S) -> (B, out_channels, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (32, 64, 128, 256),
        norm: str | tuple | None = "batch",
        act: str | tuple = "relu",
    ) -> None:
        check_spatial_dims(spatial_dims)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}.")
        if isinstance(channels, (int, str)) or len(channels) < 2 or any(int(c) < 1 for c in channels):
            raise ValueError(f"channels must be a sequence of at least 2 positive ints, got {channels!r}.")
        super().__init__()
        channels = [int(c) for c in channels]
        self.divisor = 2 ** (len(channels) - 1)
        widths = [in_channels, *channels]
        self.encoder = nn.Sequential(
            *(
                Convolution(spatial_dims, widths[i], widths[i + 1], strides=1 if i == 0 else 2, act=act, norm=norm)
                for i in range(len(channels))
            )
        )
        rev = channels[::-1]
        self.decoder = nn.Sequential(
            *(
                Convolution(
                    spatial_dims, rev[i], rev[i + 1], strides=2, kernel_size=3, act=act, norm=norm, is_transposed=True
                )
                for i in range(len(rev) - 1)
            )
        )
        self.head = Convolution(spatial_dims, channels[0], out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map the source (B, C_in, *S) to the synthetic target (B, C_out, *S)."""
        return self.head(self.decoder(self.encoder(x)))
