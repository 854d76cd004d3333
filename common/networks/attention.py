"""The global feature fusion block (GFFB) of FA-GAN: channel attention, self-attention and their fusion.

Reference:
    Jiang M., Zhi M., Wei L., et al. "FA-GAN: Fused attentive generative adversarial networks for MRI image
    super-resolution." Computerized Medical Imaging and Graphics 92, 101969, 2021 (Sec. 2.3, Figs. 3-5).
    Zhang H., Goodfellow I., Metaxas D., Odena A. "Self-attention generative adversarial networks", ICML 2019.
    Hu J., Shen L., Sun G. "Squeeze-and-excitation networks", CVPR 2018.

All blocks are generic over ``spatial_dims`` (2 or 3) and map ``(B, C, *spatial)`` to the same shape.

Cost of the self-attention: the attention map is ``N x M`` with ``N`` the number of feature positions
(``H * W`` in 2D, at the *high* resolution in FA-GAN) and ``M = N / kv_pool^d``. Queries are processed in
chunks of ``query_chunk`` so memory is ``4 * query_chunk * M`` bytes per sample (and ``N x M`` per sample
saved for the backward pass in training: 64 MiB for a 64 x 64 patch, 16 MiB for 48 x 48, 4 MiB for 32 x 32),
while compute grows with ``N * M``: on this project's shared 2-core CPU a 128 x 144 slice (``N = 18432``,
``C = 16``) took about 5 s with ``kv_pool = 1`` and 1.2 s with ``kv_pool = 2``. Training patches of 32 x 32 to
96 x 96 HR pixels fit a CPU; whole-slice inference at 256 x 256 (``N = 65536``) needs ``kv_pool = 2`` or a GPU.
"""

from __future__ import annotations

import torch
from torch import nn

from monai.networks.blocks import ChannelSELayer
from monai.networks.layers.factories import Conv, Pool

from common.networks.utils import check_spatial_dims

__all__ = ["ChannelAttention", "SelfAttention", "AttentionFusion", "FUSION_MODES"]

FUSION_MODES = ("direct", "weighted")


class ChannelAttention(nn.Module):
    """Channel attention (squeeze-and-excitation), FA-GAN Fig. 4.

    ``R = x * sigmoid(W_2 ReLU(W_1 GAP(x)))`` where ``GAP`` averages each channel over the spatial positions,
    ``W_1`` reduces ``C`` to ``C / r`` and ``W_2`` restores ``C`` (two fully connected layers). The scale is one
    value in (0, 1) per sample and channel, constant over space. Built on MONAI's ``ChannelSELayer``.

    Args:
        spatial_dims: 2 or 3.
        channels: ``C``.
        reduction: ``r`` (``C / r`` is rounded down, at least 1).
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16) -> None:
        check_spatial_dims(spatial_dims)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}.")
        if reduction < 1:
            raise ValueError(f"reduction must be >= 1, got {reduction}.")
        super().__init__()
        reduction = min(reduction, channels)  # ChannelSELayer needs C // r >= 1
        self.se = ChannelSELayer(spatial_dims, channels, r=reduction, acti_type_1="relu", acti_type_2="sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial) -> (B, C, *spatial)``, ``R`` above."""
        return self.se(x)


class SelfAttention(nn.Module):
    """SAGAN self-attention, FA-GAN Fig. 5 and Eqs. (5)-(7).

    With ``f(x) = W_f x``, ``g(x) = W_g x`` (``C -> C / k``), ``h(x) = W_h x`` (``C -> C``) 1x1 convolutions and
    ``s_ij = f(x_i)^T g(x_j)``::

        beta_{j,i} = exp(s_ij) / sum_i exp(s_ij)            (the N x N attention map)
        o_j = W_v ( sum_i beta_{j,i} h(x_i) )
        y_j = gamma * o_j + x_j,    gamma learnable, initialised to 0

    so the block is the identity at initialisation and learns to add non-local evidence. No ``1/sqrt(d)``
    temperature (SAGAN has none).

    Args:
        spatial_dims: 2 or 3.
        channels: ``C``.
        key_reduction: ``k``; the query/key width is ``max(C // k, 1)`` (SAGAN: 8).
        kv_pool: max-pooling of the keys ``f(x)`` and values ``h(x)`` before attending (1 = the paper's full
            ``N x N`` map; 2 = the BigGAN / official SAGAN PyTorch variant, ``N x N/4``: 4x less compute).
        query_chunk: queries processed at once (memory ``query_chunk x M`` per sample, the result is the same).
    """

    def __init__(
        self, spatial_dims: int, channels: int, key_reduction: int = 8, kv_pool: int = 1, query_chunk: int = 4096
    ) -> None:
        check_spatial_dims(spatial_dims)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}.")
        for name, value in (("key_reduction", key_reduction), ("kv_pool", kv_pool), ("query_chunk", query_chunk)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        super().__init__()
        self.kv_pool, self.query_chunk = int(kv_pool), int(query_chunk)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=kv_pool, ceil_mode=True) if kv_pool > 1 else nn.Identity()
        conv = Conv[Conv.CONV, spatial_dims]
        inner = max(channels // key_reduction, 1)
        self.f = conv(channels, inner, kernel_size=1)
        self.g = conv(channels, inner, kernel_size=1)
        self.h = conv(channels, channels, kernel_size=1)
        self.v = conv(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """``beta``, shape (B, N, M): row ``j`` is a distribution over the (pooled) positions ``i``."""
        keys, queries = self.pool(self.f(x)).flatten(2), self.g(x).flatten(2)  # (B, C', M), (B, C', N)
        return torch.softmax(torch.bmm(queries.transpose(1, 2), keys), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial) -> (B, C, *spatial)``, ``y`` above."""
        keys = self.pool(self.f(x)).flatten(2)  # (B, C', M)
        values = self.pool(self.h(x)).flatten(2).transpose(1, 2)  # (B, M, C)
        queries = self.g(x).flatten(2).transpose(1, 2)  # (B, N, C')
        parts = []
        for start in range(0, queries.shape[1], self.query_chunk):  # memory: query_chunk x M per sample
            beta = torch.softmax(torch.bmm(queries[:, start : start + self.query_chunk], keys), dim=-1)
            parts.append(torch.bmm(beta, values))  # sum_i beta_ji h(x_i)
        attended = torch.cat(parts, dim=1).transpose(1, 2).reshape(x.shape)
        return self.gamma * self.v(attended) + x


class AttentionFusion(nn.Module):
    """Fusion of the channel-attention output ``R`` and the self-attention output ``Y``, FA-GAN Sec. 2.3 (3).

    - ``"direct"`` (Eq. 8): ``Z_i = alpha R_i + beta Y_i``.
    - ``"weighted"`` (Eq. 9, the paper's choice, Table 7): the weights compete per feature element in a
      softmax computed from ``R`` and ``Y`` themselves, with ``alpha``, ``beta`` as priors and no extra
      parameters::

          w^R_i = alpha e^{R_i} / (alpha e^{R_i} + beta e^{Y_i}),  w^Y_i = 1 - w^R_i,  Z_i = w^R_i R_i + w^Y_i Y_i

      (evaluated as ``sigmoid(R_i - Y_i + log(alpha / beta))``). With ``alpha = beta`` it is the plain
      softmax over the two branches; where ``R = Y`` both modes give ``R`` when ``alpha + beta = 1``.

    Args:
        mode: ``"direct"`` or ``"weighted"``.
        alpha, beta: the paper's preset 0.5 and 0.5 (Table 8); positive.
    """

    def __init__(self, mode: str = "weighted", alpha: float = 0.5, beta: float = 0.5) -> None:
        if mode not in FUSION_MODES:
            raise ValueError(f"mode must be one of {FUSION_MODES}, got {mode!r}.")
        if not alpha > 0 or not beta > 0:
            raise ValueError(f"alpha and beta must be positive, got alpha={alpha}, beta={beta}.")
        super().__init__()
        self.mode = mode
        self.alpha, self.beta = float(alpha), float(beta)
        self.log_prior = float(torch.log(torch.tensor(self.alpha / self.beta)))

    def forward(self, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``R``, ``Y`` of shape (B, C, *spatial) -> ``Z`` of the same shape."""
        if r.shape != y.shape:
            raise ValueError("R and Y must have the same shape.")
        if self.mode == "direct":
            return self.alpha * r + self.beta * y
        w_r = torch.sigmoid(r - y + self.log_prior)
        return w_r * r + (1.0 - w_r) * y
