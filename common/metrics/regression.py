"""Image-regression metrics (MAE, MSE, PSNR, SSIM) of synthesized images, whole-image or inside a mask.

One case is channel-first ``(C, H, W)`` or ``(C, H, W, D)``; a mask is ``(1, *spatial)``, voxels > 0 in it.

- **MAE / MSE** average ``|pred - target|`` / ``(pred - target)^2`` over the mask voxels (all without one).
- **PSNR** ``= 10 log10(MAX^2 / MSE)``, MSE over the mask voxels; ``MAX`` from ``data_range``: a float (a
  fixed range, e.g. 1.0 as in the HR-FCN authors' code), ``"target_max"`` (the ground truth's maximum,
  HR-FCN's ``MAX_Y``) or ``"target_range"`` (ground-truth ``max - min``). The string modes use the *whole*
  target (after normalisation), not the mask, so region PSNRs share one peak and differ by their MSE only.
  Identical images: ``MSE = 0`` and PSNR ``= inf`` (as scikit-image).
- **SSIM** (Wang et al., IEEE TIP 2004) via MONAI's ``compute_ssim_and_cs`` (``valid`` convolution): the
  map covers the voxels at least ``(win_size - 1) // 2`` from the border, the region scikit-image keeps
  after its padded filtering, so ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)`` gives the same value. ``data_range`` is ``L`` in ``C1 = (k1 L)^2``,
  ``C2 = (k2 L)^2``. Masked SSIM: the map of the whole image averaged over the mask voxels inside the valid
  region. ``ssim_slice_axis``: 2D SSIM of every slice of a volume, maps averaged (HR-FCN's protocol).
- **Percentile normalisation** (``normalize="percentile"``) as in the BraTS 2023 synthesis challenge
  (BraSyn, Li et al., arXiv:2305.09011): intensities clipped to the (0.5, 99.5) ``percentiles`` and mapped
  to [0, 1] before computing. BraSyn's evaluation script normalises the real and the synthesized image each
  by *its own* percentiles (lower bound floored at 0), then computes SSIM in the tumour and the non-tumour
  region. ``percentile_reference="self"`` does that (without the floor, a no-op for non-negative MR with a
  zero background); the default ``"target"`` maps both by the target's window, so a global intensity error
  of the prediction still counts. Percentiles come from ``percentile_mask``, else the evaluation mask, else
  the whole image; afterwards the default ``data_range`` is 1.0.
- An empty mask gives NaN for every metric (callers skip the case); a degenerate normalisation window or a
  non-positive data range gives NaN with a warning.

This module holds the per-case functions; the cumulative MONAI metrics built on them (``MaskedMAEMetric``,
``MaskedMSEMetric``, ``MaskedPSNRMetric``, ``MaskedSSIMMetric``) are in :mod:`common.metrics.cumulative`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from monai.metrics.regression import KernelType, compute_ssim_and_cs

__all__ = [
    "METRIC_NAMES",
    "DATA_RANGE_MODES",
    "resolve_data_range",
    "percentile_normalize",
    "compute_regression_metrics",
    "compute_slice_psnr",
]  # the cumulative ``Masked*Metric`` classes moved to common.metrics.cumulative (still importable here)

METRIC_NAMES = ("mae", "mse", "psnr", "ssim")
DATA_RANGE_MODES = ("target_max", "target_range")


def _check_options(
    data_range=None,
    normalize=None,
    percentiles=(0.5, 99.5),
    percentile_reference="target",
    kernel_type="gaussian",
    win_size=11,
    kernel_sigma=1.5,
    k1=0.01,
    k2=0.03,
    ssim_slice_axis=None,
) -> None:
    """Raise ``ValueError`` naming the first invalid option of :func:`compute_regression_metrics`."""
    modes = DATA_RANGE_MODES
    if (isinstance(data_range, str) and data_range not in modes) or (
        data_range is not None
        and not isinstance(data_range, str)
        and (isinstance(data_range, bool) or not float(data_range) > 0)
    ):
        raise ValueError(f"data_range must be None, a positive float or one of {modes}, got {data_range!r}.")
    if normalize not in (None, "percentile"):
        raise ValueError(f"normalize must be None or 'percentile', got {normalize!r}.")
    if len(percentiles) != 2 or not 0.0 <= percentiles[0] < percentiles[1] <= 100.0:
        raise ValueError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles!r}.")
    if percentile_reference not in ("target", "self"):
        raise ValueError(f"percentile_reference must be 'target' or 'self', got {percentile_reference!r}.")
    if kernel_type not in (KernelType.GAUSSIAN, KernelType.UNIFORM):
        raise ValueError(f"kernel_type must be 'gaussian' or 'uniform', got {kernel_type!r}.")
    if any(int(w) < 1 or int(w) % 2 == 0 for w in ((win_size,) if isinstance(win_size, int) else win_size)):
        raise ValueError(f"win_size must be odd and positive, got {win_size!r}.")
    if any(float(s) <= 0 for s in ((kernel_sigma,) if isinstance(kernel_sigma, (int, float)) else kernel_sigma)):
        raise ValueError(f"kernel_sigma must be positive, got {kernel_sigma!r}.")
    if not (k1 > 0 and k2 > 0):
        raise ValueError(f"k1 and k2 must be positive, got k1={k1!r}, k2={k2!r}.")
    if ssim_slice_axis is not None and ssim_slice_axis not in (0, 1, 2):
        raise ValueError(f"ssim_slice_axis must be None or a spatial axis 0, 1, 2, got {ssim_slice_axis!r}.")


def _prepare(pred, target, mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate one channel-first case and return float64 pred/target and a boolean mask."""
    pred = torch.as_tensor(pred).detach().to(torch.float64)
    target = torch.as_tensor(target).detach().to(device=pred.device, dtype=torch.float64)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have one shape, got {tuple(pred.shape)} and {tuple(target.shape)}.")
    if pred.ndim not in (3, 4):
        raise ValueError(f"pred must be channel-first (C, H, W) or (C, H, W, D), got shape {tuple(pred.shape)}.")
    if mask is None:
        return pred, target, None
    mask = torch.as_tensor(mask).detach().to(pred.device) > 0
    if mask.ndim != pred.ndim or mask.shape[0] not in (1, pred.shape[0]) or mask.shape[1:] != pred.shape[1:]:
        raise ValueError(f"mask must be (1, *spatial) matching pred {tuple(pred.shape)}, got {tuple(mask.shape)}.")
    return pred, target, mask


def resolve_data_range(target: torch.Tensor, data_range: float | str) -> float:
    """Return the PSNR peak / SSIM range ``L``: a fixed float, ``target.max()`` or ``target.max() - target.min()``."""
    if data_range == "target_max":
        return float(target.max())
    if data_range == "target_range":
        return float(target.max() - target.min())
    _check_options(data_range=data_range)
    return float(data_range)


def _percentile_window(reference: torch.Tensor, percentiles: Sequence[float], mask: torch.Tensor | None):
    values = reference if mask is None else reference[mask.expand_as(reference)]
    lo, hi = np.percentile(values.cpu().numpy().ravel(), list(percentiles))
    return float(lo), float(hi)


def percentile_normalize(
    image: torch.Tensor,
    reference: torch.Tensor | None = None,
    percentiles: Sequence[float] = (0.5, 99.5),
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Clip ``image`` to the ``percentiles`` of ``reference`` (default ``image``) and map them to [0, 1].

    Args:
        image: ``(C, *spatial)`` tensor.
        reference: tensor whose percentiles define the window (same shape); ``None`` uses ``image``.
        percentiles: (low, high) percentiles in [0, 100].
        mask: optional ``(1, *spatial)`` mask; percentiles are taken over its voxels only.

    Raises:
        ValueError: if the window is empty (``high <= low``) or the mask is empty.
    """
    _check_options(percentiles=percentiles)
    image = torch.as_tensor(image).to(torch.float64)
    reference = image if reference is None else torch.as_tensor(reference).to(image)
    if mask is not None:
        mask = torch.as_tensor(mask, device=image.device) > 0
        if not mask.any():
            raise ValueError("mask is empty: no voxels to take percentiles from.")
    lo, hi = _percentile_window(reference, percentiles, mask)
    if not hi > lo:
        raise ValueError(f"reference has an empty percentile window [{lo}, {hi}].")
    return ((image - lo) / (hi - lo)).clamp(0.0, 1.0)


def _normalize_pair(pred, target, percentiles, reference, pmask):
    """Percentile-normalise pred and target; ``None`` if a window is degenerate."""
    windows = [_percentile_window(target, percentiles, pmask)]
    windows.append(_percentile_window(pred, percentiles, pmask) if reference == "self" else windows[0])
    if any(not hi > lo for lo, hi in windows):
        warnings.warn(f"percentile normalisation window {windows} is empty; metrics set to NaN.", stacklevel=3)
        return None
    (tl, th), (pl, ph) = windows
    return ((pred - pl) / (ph - pl)).clamp(0, 1), ((target - tl) / (th - tl)).clamp(0, 1)


def _ssim_value(pred, target, mask, data_range, kernel_type, win_size, kernel_sigma, k1, k2, slice_axis) -> float:
    """Mean of the SSIM map (over the mask voxels inside the valid region if a mask is given)."""
    if slice_axis is not None and pred.ndim != 4:
        raise ValueError(f"ssim_slice_axis needs a 3D case (C, H, W, D), got shape {tuple(pred.shape)}.")
    if slice_axis is None:  # one image: batch of 1
        x, y, m = pred[None], target[None], None if mask is None else mask[None]
    else:  # every slice along the axis becomes one 2D image of the batch
        x, y = pred.movedim(slice_axis + 1, 0), target.movedim(slice_axis + 1, 0)
        m = None if mask is None else mask.movedim(slice_axis + 1, 0)
    nd = x.ndim - 2
    wins = (win_size,) * nd if isinstance(win_size, int) else tuple(win_size)
    sigmas = (kernel_sigma,) * nd if isinstance(kernel_sigma, (int, float)) else tuple(kernel_sigma)
    if len(wins) != nd or len(sigmas) != nd:
        raise ValueError(f"win_size and kernel_sigma need {nd} values, got {win_size!r} and {kernel_sigma!r}.")
    if any(w > s for w, s in zip(wins, x.shape[2:])):
        raise ValueError(f"win_size {wins} is larger than the image {tuple(x.shape[2:])}.")
    ssim_map, _ = compute_ssim_and_cs(
        x,
        y,
        spatial_dims=nd,
        kernel_size=wins,
        kernel_sigma=sigmas,
        data_range=data_range,
        kernel_type=kernel_type,
        k1=k1,
        k2=k2,
    )
    if m is None:
        return float(ssim_map.double().mean())
    crop = (slice(None), slice(None)) + tuple(slice((w - 1) // 2, s - (w - 1) // 2) for w, s in zip(wins, x.shape[2:]))
    m = m[crop].expand_as(ssim_map)
    return float(ssim_map.double()[m].mean()) if m.any() else math.nan


def compute_regression_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    data_range: float | str | None = None,
    metrics: Sequence[str] = METRIC_NAMES,
    normalize: str | None = None,
    percentiles: Sequence[float] = (0.5, 99.5),
    percentile_reference: str = "target",
    percentile_mask: torch.Tensor | None = None,
    kernel_type: str = "gaussian",
    win_size: int | Sequence[int] = 11,
    kernel_sigma: float | Sequence[float] = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    ssim_slice_axis: int | None = None,
) -> dict[str, float]:
    """Per-case MAE / MSE / PSNR / SSIM of ``pred`` against ``target`` (see the module docstring).

    Args:
        pred: synthesized image ``(C, H, W)`` or ``(C, H, W, D)``.
        target: reference image, same shape.
        mask: optional region ``(1, *spatial)``; voxels > 0 are evaluated. Empty: every value is NaN.
        data_range: float, ``"target_max"`` or ``"target_range"``; ``None`` is 1.0 after percentile
            normalisation and ``"target_range"`` otherwise.
        metrics: subset of ``("mae", "mse", "psnr", "ssim")`` to compute.
        normalize: ``None`` or ``"percentile"`` (BraSyn-style clip-and-scale to [0, 1]).
        percentiles: (low, high) percentiles of the normalisation.
        percentile_reference: ``"target"`` (both images by the target's window) or ``"self"`` (each its own).
        percentile_mask: region the percentiles are taken from; default ``mask``, else the whole image.
        kernel_type: SSIM window ``"gaussian"`` or ``"uniform"``.
        win_size: odd SSIM window size (per spatial dim or one int).
        kernel_sigma: Gaussian SSIM window sigma.
        k1: SSIM luminance constant.
        k2: SSIM contrast constant.
        ssim_slice_axis: ``None`` for a 2D/3D SSIM, or a spatial axis (0-2) of a 3D case for slice-wise 2D SSIM.

    Returns:
        ``{name: value}`` for each requested metric, as Python floats (PSNR ``inf`` for identical images).
    """
    _check_options(
        data_range,
        normalize,
        percentiles,
        percentile_reference,
        kernel_type,
        win_size,
        kernel_sigma,
        k1,
        k2,
        ssim_slice_axis,
    )
    if isinstance(metrics, str) or not metrics or any(m not in METRIC_NAMES for m in metrics):
        raise ValueError(f"metrics must be a non-empty subset of {METRIC_NAMES}, got {metrics!r}.")
    pred, target, mask = _prepare(pred, target, mask)
    nan = {m: math.nan for m in metrics}
    if mask is not None and not mask.any():
        return nan
    if normalize == "percentile":
        pmask = _prepare(pred, target, percentile_mask)[2] if percentile_mask is not None else mask
        if pmask is not None and not pmask.any():
            return nan
        pair = _normalize_pair(pred, target, percentiles, percentile_reference, pmask)
        if pair is None:
            return nan
        pred, target = pair
    dr = resolve_data_range(target, data_range if data_range is not None else (1.0 if normalize else "target_range"))
    diff = pred - target
    if mask is not None:
        diff = diff[mask.expand_as(diff)]
    out: dict[str, float] = {}
    if "mae" in metrics:
        out["mae"] = float(diff.abs().mean())
    mse = float((diff * diff).mean())
    if "mse" in metrics:
        out["mse"] = mse
    if ("psnr" in metrics or "ssim" in metrics) and not dr > 0:
        warnings.warn(f"data range resolved to {dr} (<= 0); PSNR and SSIM set to NaN.", stacklevel=2)
    if "psnr" in metrics:
        out["psnr"] = math.nan if not dr > 0 else (math.inf if mse == 0 else 10.0 * math.log10(dr * dr / mse))
    if "ssim" in metrics:
        out["ssim"] = (
            math.nan
            if not dr > 0
            else _ssim_value(pred, target, mask, dr, kernel_type, win_size, kernel_sigma, k1, k2, ssim_slice_axis)
        )
    return {m: out[m] for m in metrics}


def compute_slice_psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    axis: int = 2,
    data_range: float | str | None = None,
    normalize: str | None = None,
    percentiles: Sequence[float] = (0.5, 99.5),
    percentile_reference: str = "target",
    percentile_mask: torch.Tensor | None = None,
) -> float:
    """Mean PSNR over the slices along spatial ``axis`` whose ``mask`` is non-empty (AMCGAN's protocol).

    AMCGAN (a 2D method) reports "the PSNR value of the slice containing the tumour": each such slice is
    one image, so its PSNR uses the whole slice's MSE and a ``data_range`` string is resolved on that
    slice's target. Normalisation (if any) is applied to the volume first.

    Args:
        pred: ``(C, H, W, D)`` synthesized volume (a 2D case ``(C, H, W)`` is one slice); ``target`` the
            reference, same shape.
        mask: ``(1, *spatial)`` region (e.g. tumour) selecting the slices.
        axis: spatial axis (0, 1 or 2) the slices are taken along (ignored for a 2D case).
        data_range, normalize, percentiles, percentile_reference, percentile_mask: as in
            :func:`compute_regression_metrics` (a ``data_range`` string is resolved per slice; the
            percentiles come from ``percentile_mask`` or the whole volume).

    Returns:
        the mean PSNR of the selected slices (``inf`` if they are all identical), NaN if the mask is empty.
    """
    _check_options(data_range, normalize, percentiles, percentile_reference)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be a spatial axis 0, 1 or 2, got {axis!r}.")
    if mask is None:
        raise ValueError("mask is required for the slice PSNR.")
    pred, target, mask = _prepare(pred, target, mask)
    pmask = None if percentile_mask is None else _prepare(pred, target, percentile_mask)[2]
    if pred.ndim == 3:  # a 2D case is one slice
        pred, target, mask, axis = pred[..., None], target[..., None], mask[..., None], 2
        pmask = None if pmask is None else pmask[..., None]
    if normalize == "percentile":
        pair = _normalize_pair(pred, target, percentiles, percentile_reference, pmask)
        if pair is None:
            return math.nan
        pred, target = pair
    keep = mask.movedim(axis + 1, 0).flatten(1).any(dim=1)
    if not keep.any():
        return math.nan
    p, t = pred.movedim(axis + 1, 0)[keep].flatten(1), target.movedim(axis + 1, 0)[keep].flatten(1)
    mode = data_range if data_range is not None else (1.0 if normalize else "target_range")
    if mode == "target_max":
        dr = t.max(dim=1).values
    elif mode == "target_range":
        dr = t.max(dim=1).values - t.min(dim=1).values
    else:
        dr = torch.full((t.shape[0],), float(mode), dtype=t.dtype, device=t.device)
    mse = ((p - t) ** 2).mean(dim=1)
    psnr = 10.0 * torch.log10(dr * dr / mse)  # mse = 0 -> inf
    valid = dr > 0
    if not valid.all():
        warnings.warn(f"{int((~valid).sum())} slice(s) with a data range <= 0 left out of slice PSNR.", stacklevel=2)
    return float(psnr[valid].mean()) if valid.any() else math.nan


_CUMULATIVE = ("MaskedRegressionMetric", "MaskedMAEMetric", "MaskedMSEMetric", "MaskedPSNRMetric", "MaskedSSIMMetric")


def __getattr__(name: str):
    """Keep the cumulative metric classes (now in :mod:`common.metrics.cumulative`) importable from here.

    Resolved lazily (PEP 562) because :mod:`common.metrics.cumulative` imports this module.
    """
    if name in _CUMULATIVE:
        from common.metrics import cumulative

        return getattr(cumulative, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
