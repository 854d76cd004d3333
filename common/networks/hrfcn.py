"""High-resolution fully convolutional network (HR-FCN) for contrast-enhanced T1 synthesis.

Reference:
    Chen C., Raymond C., Speier W., et al. "Synthesizing MR Image Contrast Enhancement Using 3D
    High-Resolution ConvNets." IEEE Transactions on Biomedical Engineering 70(2), 2023 (PMC author
    manuscript), Section III-B and the ablation study of Section IV-C.

The network is an HRNet-style generator: one stem per input modality, then three parallel branches at
full, 1/2 and 1/4 resolution that repeatedly exchange information, and a final concatenation of all
branches at full resolution followed by a residual block.  All tensors are MONAI channel-first,
``(B, C, H, W[, D])``.  For 3-slice slabs ``(B, 3, H, W, 3)`` use ``strides=(2, 2, 1)`` so that the
down-sampling is in-plane only; for cubic patches use ``strides=2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from monai.networks.layers.utils import get_act_layer

from common.networks.upsample import SliceUpsample, slice_axis_of
from common.networks.utils import check_at_least, check_spatial_dims

__all__ = ["BRANCH_NAMES", "FCNModule", "HRFCN"]

BRANCH_NAMES: tuple[str, str, str] = ("full", "half", "quarter")
"""Names of the three resolution levels (index 0, 1, 2 = scale 1, 1/2, 1/4)."""


class FCNModule(nn.Sequential):
    """The paper's FCN module phi: ``num_res_blocks`` residual blocks of two Conv-Norm-Act layers.

    Each block is a MONAI :class:`~monai.networks.blocks.ResidualUnit` with two 3x3(x3) subunits in
    Conv -> Norm -> Act order.  The first block maps ``in_channels`` to ``out_channels`` (its skip path is
    then a 1x1(x1) projection); the others keep ``out_channels`` with an identity skip.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the input ``(B, in_channels, *spatial)``.
        out_channels: channels of the output ``(B, out_channels, *spatial)`` (same spatial size).
        num_res_blocks: number of residual blocks (the paper uses 4).
        norm: MONAI normalisation spec.
        act: MONAI activation spec.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        num_res_blocks: int = 4,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
    ) -> None:
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}.")
        widths = [in_channels] + [out_channels] * (num_res_blocks - 1)
        blocks = [
            ResidualUnit(spatial_dims, c, out_channels, subunits=2, adn_ordering="NA", act=act, norm=norm)
            for c in widths
        ]
        super().__init__(*blocks)


def _down(
    spatial_dims: int, in_channels: int, out_channels: int, steps: int, strides: Sequence[int], norm, act
) -> nn.Sequential:
    """D2 (``steps=1``) or D4 (``steps=2``): ``steps`` strided 3x3(x3) Conv-Norm-Act layers.

    The first conv maps to ``out_channels`` (the target branch width); D4 is two stride-``strides``
    convs, not one stride-4 conv (a 3-wide kernel with stride 4 would skip voxels).
    """
    widths = [in_channels] + [out_channels] * (steps - 1)
    layers = [
        Convolution(spatial_dims, c, out_channels, strides=tuple(strides), adn_ordering="NA", act=act, norm=norm)
        for c in widths
    ]
    return nn.Sequential(*layers)


def _up(spatial_dims: int, channels: int, steps: int, strides: Sequence[int]) -> nn.Module:
    """U2 / U4: parameter-free (bi/tri)linear up-sampling by ``strides ** steps`` per dimension.

    For slabs (in-plane strides, 1 along the slice axis) the trilinear interpolation is computed as the equal,
    faster bilinear interpolation of every slice (:class:`~common.networks.upsample.SliceUpsample`).
    """
    factor = tuple(float(s**steps) for s in strides)
    axis = slice_axis_of(factor) if spatial_dims == 3 else None
    if axis is not None:
        return SliceUpsample(max(factor), axis)
    return UpSample(spatial_dims, channels, channels, factor, mode="nontrainable", pre_conv=None, align_corners=False)


def _resample(
    spatial_dims: int, src_level: int, dst_level: int, src_channels: int, dst_channels: int, strides, norm, act
) -> tuple[nn.Module, int]:
    """Operator bringing a branch at ``src_level`` to ``dst_level``; returns (module, output channels).

    Same level: identity.  Higher to lower resolution: D2/D4 (learned, output width = target branch
    width).  Lower to higher resolution: U2/U4 (interpolation, width unchanged).
    """
    if src_level == dst_level:
        return nn.Identity(), src_channels
    if src_level < dst_level:
        return _down(spatial_dims, src_channels, dst_channels, dst_level - src_level, strides, norm, act), dst_channels
    return _up(spatial_dims, src_channels, src_level - dst_level, strides), src_channels


class _Stems(nn.Module):
    """Stage 1: ``F11 = phi(T1) ⊕ phi(T2) ⊕ phi(ADC)`` (separate) or ``phi(X)`` (Model-A, one stem).

    Input ``(B, in_channels, *spatial)``; output ``(B, n_stems * stem_channels, *spatial)``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, stem_channels: int, separate: bool, n_blocks, norm, act):
        super().__init__()
        self.separate = separate
        n_stems, stem_in = (in_channels, 1) if separate else (1, in_channels)
        self.stems = nn.ModuleList(
            [FCNModule(spatial_dims, stem_in, stem_channels, n_blocks, norm, act) for _ in range(n_stems)]
        )
        self.out_channels = n_stems * stem_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.separate:
            return self.stems[0](x)
        feats: list[torch.Tensor] = []
        for i, stem in enumerate(self.stems):
            feats.append(stem(x[:, i : i + 1]))
        return torch.cat(feats, dim=1)


class _Stage2(nn.Module):
    """Stage 2: ``F21 = phi(F11)``, ``F22 = phi(D2(F11))`` and the 1/4 input ``F23 = D2(F22)``.

    Returns the list of active-branch features in level order (absent branches are skipped).
    """

    def __init__(self, spatial_dims: int, in_channels: int, levels, channels, strides, n_blocks, norm, act):
        super().__init__()
        self.to_full = self.to_half = self.to_quarter = None
        if 0 in levels:
            self.to_full = FCNModule(spatial_dims, in_channels, channels[0], n_blocks, norm, act)
        if 1 in levels:
            self.to_half = nn.Sequential(
                _down(spatial_dims, in_channels, channels[1], 1, strides, norm, act),
                FCNModule(spatial_dims, channels[1], channels[1], n_blocks, norm, act),
            )
        if 2 in levels:
            self.to_quarter = _down(spatial_dims, channels[1], channels[2], 1, strides, norm, act)

    def forward(self, f11: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        if self.to_full is not None:
            out.append(self.to_full(f11))  # F21 = phi(F11)
        if self.to_half is not None:
            f22 = self.to_half(f11)  # F22 = phi(F12), F12 = D2(F11)
            out.append(f22)
            if self.to_quarter is not None:
                out.append(self.to_quarter(f22))  # F23 = D2(F22)
        return out


class _FusionUnit(nn.Module):
    """One branch of a fusion stage: ``phi( ⊕_s R_{s->r}(x_s) )`` over the selected sources ``s``."""

    def __init__(self, spatial_dims: int, sources, dst_level: int, channels, strides, n_blocks, norm, act):
        super().__init__()
        self.indices = [int(index) for index, _ in sources]
        ops, width = [], 0
        for _, src_level in sources:
            op, c = _resample(
                spatial_dims, src_level, dst_level, channels[src_level], channels[dst_level], strides, norm, act
            )
            ops.append(op)
            width += c
        self.resample = nn.ModuleList(ops)
        self.phi = FCNModule(spatial_dims, width, channels[dst_level], n_blocks, norm, act)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        feats: list[torch.Tensor] = []
        for i, op in enumerate(self.resample):
            feats.append(op(xs[self.indices[i]]))
        return self.phi(torch.cat(feats, dim=1))


class _FusionStage(nn.Module):
    """A stage of parallel branches; ``plan`` lists ``(target level, source levels)`` per active branch.

    ``forward`` maps the list of branch features (active levels in order) to the next list.
    """

    def __init__(self, spatial_dims: int, plan, levels, channels, strides, n_blocks, norm, act):
        super().__init__()
        index = {lv: i for i, lv in enumerate(levels)}  # position of each level in the feature lists
        self.units = nn.ModuleList(
            [
                _FusionUnit(spatial_dims, [(index[s], s) for s in srcs], r, channels, strides, n_blocks, norm, act)
                for r, srcs in plan
            ]
        )

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for unit in self.units:
            out.append(unit(xs))
        return out


class _FinalFusion(nn.Module):
    """``F5 = F41 ⊕ U2(F42) ⊕ U4(F43)``: all active branches up-sampled to full resolution, concatenated."""

    def __init__(self, spatial_dims: int, levels, channels, strides):
        super().__init__()
        self.up = nn.ModuleList(
            [nn.Identity() if lv == 0 else _up(spatial_dims, channels[lv], lv, strides) for lv in levels]
        )
        self.out_channels = sum(channels[lv] for lv in levels)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        feats: list[torch.Tensor] = []
        for i, up in enumerate(self.up):
            feats.append(up(xs[i]))
        return torch.cat(feats, dim=1)


class HRFCN(nn.Module):
    """3D (or 2D) high-resolution FCN of Chen et al. (IEEE TBME 2023), Fig. 2 and Section III-B.

    With ⊕ channel concatenation, D2/D4 2x/4x down-sampling (strided 3x3x3 Conv-Norm-Act, D4 = two of
    them), U2/U4 2x/4x (tri)linear up-sampling and phi an FCN module of ``num_res_blocks`` residual
    blocks (:class:`FCNModule`)::

        F11 = phi(T1) ⊕ phi(T2) ⊕ phi(ADC);            F12 = D2(F11)
        F21 = phi(F11);  F22 = phi(F12);               F23 = D2(F22)
        F31 = phi(F21 ⊕ U2(F22));  F32 = phi(D2(F21) ⊕ F22);  F33 = phi(D4(F21) ⊕ F23)
        F41 = phi(F31 ⊕ U2(F32) ⊕ U4(F33));  F42 = phi(D2(F31) ⊕ F32 ⊕ U2(F33))
        F43 = phi(D4(F31) ⊕ D2(F32) ⊕ F33)
        F5  = F41 ⊕ U2(F42) ⊕ U4(F43)  ->  ResBlock  ->  1x1 conv  ->  output

    (Concatenations are in level order, full -> quarter; the paper's order differs for F32/F33, which only
    permutes input channels of phi.)  Stage 3 fuses the two stage-2 branches into every branch; the 1/4
    branch's own input F23 already is D2(F22), so D2(F22) is not added to F33 again, as in the paper.
    Following the paper (not the public Keras code, which keeps only two branches at the end), F5 fuses
    all three branches.

    Ablations (Section IV-C, Table V):

    - **Model-A** ``separate_stems=False``: one stem FCN module on the concatenated input (modalities
      fused in the input layer) instead of one per modality.  Its width is ``stem_channels``, so F11 has
      ``stem_channels`` channels instead of ``in_channels * stem_channels``; pass
      ``stem_channels=in_channels * s`` to compare at equal F11 width.
    - **Model-B** ``branches=("full",)``: only the high-resolution branch (F11 -> F21 -> F31 -> F41 ->
      head); no down-sampling at all, no fusion.
    - **Model-C** ``branches=("half", "quarter")``: no full-resolution branch.  The stems and the head
      still run at full resolution: F22 = phi(D2(F11)), F23 = D2(F22), F32 = phi(F22), F33 = phi(F23),
      F42 = phi(F32 ⊕ U2(F33)), F43 = phi(D2(F32) ⊕ F33), F5 = U2(F42) ⊕ U4(F43).
    - **Model-D** ``repeated_fusion=False``: no exchange in stages 3 and 4: F3r = phi(F2r) (F33 =
      phi(F23)), F4r = phi(F3r); the final fusion F5 is kept.

    Allowed ``branches``: ("full",), ("half",), ("full", "half"), ("half", "quarter"),
    ("full", "half", "quarter") — the 1/4 branch is derived from the 1/2 branch (F23 = D2(F22)).

    Output head: F5 -> ResidualUnit(-> ``channels[0]``) -> linear 1x1(x1) conv -> ``output_act``.  The
    authors' code ends with BN + ReLU (output in [0, inf)); here the default is the identity, which
    keeps gradients alive for every voxel under the L1/SSIM losses with [0, 1]-normalised targets (clip at
    inference if needed); ``output_act="relu"`` or ``"sigmoid"`` are available.

    Args:
        spatial_dims: 2 (the paper's 2D version) or 3.
        in_channels: number of input modalities (3 = T1, T2, ADC); one stem each when ``separate_stems``.
        out_channels: output channels (1 = CE-T1).
        stem_channels: width of each stem (the paper does not give it; the public code uses 128).
        channels: widths of the full, 1/2 and 1/4 resolution branches (paper: 64, 128, 256).
        strides: down-sampling factor of one level, an int or one value per spatial dim, e.g. ``(2, 2, 1)``
            for 3-slice slabs ``(B, C, H, W, 3)`` (in-plane only) or ``2`` for cubic patches.
        num_res_blocks: residual blocks per FCN module phi (paper: 4).
        separate_stems: False gives Model-A.
        branches: active resolution branches among ``BRANCH_NAMES``.
        repeated_fusion: False gives Model-D.
        norm: MONAI normalisation spec (paper: batch norm).
        act: MONAI activation spec (paper: ReLU).
        output_act: activation on the output, ``None`` for identity, or a MONAI activation spec.

    Shapes:
        input ``(B, in_channels, H, W[, D])`` with each spatial size divisible by
        ``strides[d] ** deepest_level``; output ``(B, out_channels, H, W[, D])``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int = 3,
        out_channels: int = 1,
        stem_channels: int = 32,
        channels: Sequence[int] = (64, 128, 256),
        strides: int | Sequence[int] = 2,
        num_res_blocks: int = 4,
        separate_stems: bool = True,
        branches: Sequence[str] = BRANCH_NAMES,
        repeated_fusion: bool = True,
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        output_act: str | tuple | None = None,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_at_least(1, in_channels=in_channels, out_channels=out_channels, stem_channels=stem_channels)
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"channels must be three positive widths (full, half, quarter), got {channels}.")
        strides = (strides,) * spatial_dims if isinstance(strides, int) else tuple(int(s) for s in strides)
        if len(strides) != spatial_dims or min(strides) < 1:
            raise ValueError(f"strides must be an int or {spatial_dims} positive ints, got {strides}.")
        if num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}.")
        if isinstance(branches, str) or any(b not in BRANCH_NAMES for b in branches):
            raise ValueError(f"branches must be a sequence of names from {BRANCH_NAMES}, got {branches!r}.")
        levels = tuple(sorted({BRANCH_NAMES.index(b) for b in branches}))
        if levels not in ((0,), (1,), (0, 1), (1, 2), (0, 1, 2)):
            raise ValueError(
                f"branches {tuple(branches)} is not allowed: at least one branch, and 'quarter' needs 'half' "
                "(F23 = D2(F22))."
            )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.levels = levels
        self.strides = strides
        self.divisor = [s ** levels[-1] for s in strides]

        # stage 1: F11 = phi(T1) ⊕ phi(T2) ⊕ phi(ADC)
        self.stem = _Stems(spatial_dims, in_channels, stem_channels, separate_stems, num_res_blocks, norm, act)
        # stage 2: F21 = phi(F11); F22 = phi(D2(F11)); F23 = D2(F22)
        f11_channels = self.stem.out_channels
        self.stage2 = _Stage2(spatial_dims, f11_channels, levels, channels, strides, num_res_blocks, norm, act)
        fusion = repeated_fusion  # Model-D: each branch only sees itself in stages 3 and 4
        own = {0: 0, 1: 1, 2: 1}  # the stage-2 branch each level's input comes from (F23 = D2(F22))
        # stage 3: own stage-2 feature plus the other processed stage-2 branches (full and half)
        plan3 = [(r, [s for s in levels if s == r or (fusion and s < 2 and s != own[r])]) for r in levels]
        # stage 4: every branch aggregates every branch of stage 3
        plan4 = [(r, [s for s in levels if fusion or s == r]) for r in levels]
        self.stage3 = _FusionStage(spatial_dims, plan3, levels, channels, strides, num_res_blocks, norm, act)
        self.stage4 = _FusionStage(spatial_dims, plan4, levels, channels, strides, num_res_blocks, norm, act)
        # final fusion F5 and residual head
        self.fuse = _FinalFusion(spatial_dims, levels, channels, strides)
        self.head = nn.Sequential(
            ResidualUnit(
                spatial_dims, self.fuse.out_channels, channels[0], subunits=2, adn_ordering="NA", act=act, norm=norm
            ),
            Convolution(spatial_dims, channels[0], out_channels, kernel_size=1, conv_only=True),
        )
        self.output_act = nn.Identity() if output_act is None else get_act_layer(output_act)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"HRFCN expects input (B, {self.in_channels}, <{self.spatial_dims} spatial dims>), got {list(x.shape)}."
            )
        for d in range(self.spatial_dims):
            if x.shape[d + 2] % self.divisor[d] != 0:
                raise ValueError(
                    f"HRFCN input spatial size {list(x.shape[2:])} must be divisible by the total down-sampling "
                    f"factor {self.divisor} (strides {list(self.strides)} per level); spatial dim {d} is not."
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, *spatial)`` pre-contrast inputs to ``(B, out_channels, *spatial)``."""
        self._check_input(x)
        f1 = self.stem(x)  # F11
        f2 = self.stage2(f1)  # [F21, F22, F23]
        f3 = self.stage3(f2)  # [F31, F32, F33]
        f4 = self.stage4(f3)  # [F41, F42, F43]
        f5 = self.fuse(f4)  # F5 = F41 ⊕ U2(F42) ⊕ U4(F43)
        return self.output_act(self.head(f5))
