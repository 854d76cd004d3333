"""Contrast-enhancement metrics: how much of the enhancement a synthesis recovers, and how much it invents.

A contrast-enhanced image (CE-T1) differs from its pre-contrast source (T1) almost only where contrast agent
accumulates (the enhancing tumour rim), a few percent of the brain. Whole-image PSNR/SSIM barely see it: copying
the source scores well while recovering nothing. These metrics measure the enhancement itself (bundle contract,
section 9; issue #12), on one channel-first case ``(C, H, W)`` or ``(C, H, W, D)`` with synthesis ``pred``, the
real ``target`` and the ``source``, all in the same units (the phantom's T1 and T1ce share one scale):

- **Enhancement recovery** ``R = mean_E(pred - source) / mean_E(target - source)`` over the enhancing region
  ``E``: 1 for a perfect synthesis, 0 for the source copied, 0.5 for half the contrast. ``E`` is the voxels of
  ``region`` equal to ``region_label`` (the phantom's ``tumor_mask`` label 3, the enhancing rim;
  ``common.data.phantom_anatomy.TUMOR_LABELS``), or ``region > 0`` without a label; without a region map, the
  voxels (inside ``brain`` if given) where ``|target - source| > threshold``.
- **False enhancement** ``F = mean_B\\E(max(pred - source, 0))`` over the brain ``B`` outside ``E`` (the whole
  image outside ``E`` without a brain mask), in the images' units: signal added where the target has none.

An empty ``E`` or a zero denominator gives ``R = NaN`` (callers skip the case; MONAI's reductions ignore NaNs);
an empty ``B \\ E`` gives ``F = NaN``.
"""

from __future__ import annotations

import math

import torch

from monai.metrics.regression import RegressionMetric
from monai.utils import MetricReduction

__all__ = [
    "ENHANCEMENT_METRIC_NAMES",
    "ENHANCING_RIM_LABEL",
    "enhancing_region",
    "compute_enhancement_metrics",
    "EnhancementRecoveryMetric",
    "FalseEnhancementMetric",
]

ENHANCEMENT_METRIC_NAMES = ("enhancement_recovery", "false_enhancement")
ENHANCING_RIM_LABEL = 3  # tumor_mask label of the phantom's enhancing rim (1 necrotic core, 2 edema)


def _as_case(x, like: torch.Tensor | None = None, name: str = "image") -> torch.Tensor:
    x = torch.as_tensor(x).detach()
    x = x.to(torch.float64) if like is None else x.to(device=like.device, dtype=torch.float64)
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must be channel-first (C, H, W) or (C, H, W, D), got shape {tuple(x.shape)}.")
    return x


def _spatial_mask(x, pred: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x).detach().to(pred.device)
    if x.ndim != pred.ndim or x.shape[0] != 1 or x.shape[1:] != pred.shape[1:]:
        raise ValueError(f"{name} must be (1, *spatial) matching pred {tuple(pred.shape)}, got {tuple(x.shape)}.")
    return x


def enhancing_region(
    target: torch.Tensor,
    source: torch.Tensor,
    region: torch.Tensor | None = None,
    region_label: int | None = ENHANCING_RIM_LABEL,
    threshold: float | None = None,
    brain: torch.Tensor | None = None,
) -> torch.Tensor:
    """The enhancing region ``E`` as a boolean ``(1, *spatial)`` mask (see the module docstring).

    Args:
        target: ``(C, *spatial)`` contrast-enhanced reference.
        source: ``(C, *spatial)`` pre-contrast source, same units.
        region: optional ``(1, *spatial)`` label map (e.g. ``tumor_mask``).
        region_label: label of ``E`` in ``region``; ``None`` takes every voxel ``> 0``.
        threshold: without ``region``: ``E = |target - source| > threshold`` (channel mean), required then.
        brain: optional ``(1, *spatial)`` brain mask restricting a threshold-defined ``E``.
    """
    if region is not None:
        region = _spatial_mask(region, target, "region")
        return region == region_label if region_label is not None else region > 0
    if threshold is None or not float(threshold) >= 0:
        raise ValueError(f"threshold must be a non-negative float when no region is given, got {threshold!r}.")
    found = (target - source).abs().mean(dim=0, keepdim=True) > float(threshold)
    return found & (_spatial_mask(brain, target, "brain") > 0) if brain is not None else found


def compute_enhancement_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    source: torch.Tensor,
    region: torch.Tensor | None = None,
    region_label: int | None = ENHANCING_RIM_LABEL,
    threshold: float | None = None,
    brain: torch.Tensor | None = None,
) -> dict[str, float]:
    """Per-case enhancement recovery and false enhancement of ``pred`` (see the module docstring).

    Args:
        pred: synthesized image ``(C, H, W)`` or ``(C, H, W, D)``.
        target: real contrast-enhanced image, same shape and units.
        source: the pre-contrast source, same shape and units.
        region, region_label, threshold, brain: define ``E`` and ``B`` as :func:`enhancing_region`.

    Returns:
        ``{"enhancement_recovery": R, "false_enhancement": F}`` as floats (NaN where undefined).
    """
    pred = _as_case(pred, name="pred")
    target, source = _as_case(target, pred, "target"), _as_case(source, pred, "source")
    if target.shape != pred.shape or source.shape != pred.shape:
        raise ValueError(
            f"pred, target and source must have one shape, got {tuple(pred.shape)}, {tuple(target.shape)}, "
            f"{tuple(source.shape)}."
        )
    enh = enhancing_region(target, source, region, region_label, threshold, brain)
    gain, wanted = pred - source, target - source
    recovery = math.nan
    if enh.any():
        e = enh.expand_as(gain)
        denominator = float(wanted[e].mean())
        recovery = float(gain[e].mean()) / denominator if denominator != 0 else math.nan
    outside = ~enh if brain is None else (_spatial_mask(brain, pred, "brain") > 0) & ~enh
    false = float(gain.clamp_min(0)[outside.expand_as(gain)].mean()) if outside.any() else math.nan
    return {"enhancement_recovery": recovery, "false_enhancement": false}


class _EnhancementMetric(RegressionMetric):
    """Cumulative per-case enhancement metric; ``metric(y_pred, y, source=, region=, brain=)``, batch-first."""

    metric_name = ""

    def __init__(
        self,
        region_label: int | None = ENHANCING_RIM_LABEL,
        threshold: float | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        if threshold is not None and not float(threshold) >= 0:
            raise ValueError(f"threshold must be None or a non-negative float, got {threshold!r}.")
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.region_label, self.threshold = region_label, threshold

    def _compute_tensor(self, y_pred, y, source=None, region=None, brain=None):  # type: ignore[override]
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor) or source is None:
            raise ValueError("y_pred, y and source must be PyTorch Tensors (source is a keyword argument).")
        self._check_shape(y_pred, y)
        return self._compute_metric(y_pred, y, source, region, brain)

    def _compute_metric(self, y_pred, y, source=None, region=None, brain=None) -> torch.Tensor:  # type: ignore
        """``(B, 1)`` per-case values of ``(B, C, *spatial)`` inputs and ``(B, 1, *spatial)`` masks."""
        values = [
            compute_enhancement_metrics(
                y_pred[b],
                y[b],
                source[b],
                None if region is None else region[b],
                self.region_label,
                self.threshold,
                None if brain is None else brain[b],
            )[self.metric_name]
            for b in range(y.shape[0])
        ]
        return torch.tensor(values, dtype=torch.float32, device=y_pred.device)[:, None]

    def _compute_list(self, y_pred, y=None, source=None, region=None, brain=None, **kwargs):  # type: ignore
        n = len(y_pred)
        sources, regions, brains = list(source or [None] * n), list(region or [None] * n), list(brain or [None] * n)
        rows = [
            self._compute_tensor(
                p[None],
                t[None],
                s[None],
                None if r is None else torch.as_tensor(r)[None],
                None if m is None else m[None],
            )
            for p, t, s, r, m in zip(y_pred, y, sources, regions, brains)
        ]
        return torch.cat(rows, dim=0)


class EnhancementRecoveryMetric(_EnhancementMetric):
    """Cumulative enhancement recovery ``mean_E(pred - source) / mean_E(target - source)`` per case.

    ``metric(y_pred, y, source=src, region=tumor_mask, brain=brain_mask)`` on ``(B, C, *spatial)`` tensors
    (masks ``(B, 1, *spatial)``) or lists of channel-first ones; ``aggregate()`` reduces the per-case values
    with ``reduction``, ignoring NaNs (no enhancing voxels). ``region_label`` / ``threshold``: as
    :func:`enhancing_region`.
    """

    metric_name = "enhancement_recovery"


class FalseEnhancementMetric(_EnhancementMetric):
    """Cumulative false enhancement ``mean_{B \\ E}(max(pred - source, 0))`` per case, in the images' units.

    Called and reduced as :class:`EnhancementRecoveryMetric`.
    """

    metric_name = "false_enhancement"
