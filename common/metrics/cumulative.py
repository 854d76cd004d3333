"""Cumulative MONAI metrics (``CumulativeIterationMetric``) of the per-case regression metrics.

:class:`MaskedRegressionMetric` runs :func:`common.metrics.regression.compute_regression_metrics` on every
batch item (optionally inside a mask) and accumulates the values like MONAI's regression metrics, so
``aggregate()`` reduces them and ignores the NaNs of empty-mask items. :class:`MaskedMAEMetric`,
:class:`MaskedMSEMetric`, :class:`MaskedPSNRMetric` and :class:`MaskedSSIMMetric` (Wang et al., IEEE TIP 2004)
fix the metric; see :mod:`common.metrics.regression` for the definitions and options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai.metrics.regression import RegressionMetric
from monai.utils import MetricReduction

from common.metrics.regression import METRIC_NAMES, _check_options, compute_regression_metrics

__all__ = ["MaskedRegressionMetric", "MaskedMAEMetric", "MaskedMSEMetric", "MaskedPSNRMetric", "MaskedSSIMMetric"]


class MaskedRegressionMetric(RegressionMetric):
    """Cumulative MONAI metric computing one of :data:`METRIC_NAMES` per batch item, optionally in a mask.

    ``metric(y_pred, y, mask=None)`` takes batch-first ``(B, C, *spatial)`` tensors (or lists of
    channel-first ones) and a mask ``(B, 1, *spatial)``; each item goes through
    :func:`compute_regression_metrics`, so empty-mask items are NaN and ignored by ``aggregate()``.

    Args:
        metric_name: one of :data:`METRIC_NAMES`; ``reduction``, ``get_not_nans``: as MONAI's metrics.
        options: keyword arguments of :func:`compute_regression_metrics` (``data_range``, ``normalize``, ...).
    """

    def __init__(self, metric_name: str, reduction: str = "mean", get_not_nans: bool = False, **options) -> None:
        if metric_name not in METRIC_NAMES:
            raise ValueError(f"metric_name must be one of {METRIC_NAMES}, got {metric_name!r}.")
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        _check_options(**options)
        self.metric_name = metric_name
        self.options = options

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None):  # type: ignore
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError("y_pred and y must be PyTorch Tensor.")
        self._check_shape(y_pred, y)
        return self._compute_metric(y_pred, y, mask)

    def _compute_metric(self, y_pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Return the ``(B, 1)`` per-item values of ``(B, C, *spatial)`` inputs and a ``(B, 1, *spatial)`` mask."""
        if mask is not None and (mask.ndim != y.ndim or mask.shape[0] != y.shape[0]):
            raise ValueError(f"mask must be (B, 1, *spatial) for y of shape {tuple(y.shape)}, got {tuple(mask.shape)}.")
        values = [
            compute_regression_metrics(
                y_pred[b], y[b], None if mask is None else mask[b], metrics=(self.metric_name,), **self.options
            )[self.metric_name]
            for b in range(y.shape[0])
        ]
        return torch.tensor(values, dtype=torch.float32, device=y_pred.device)[:, None]

    def _compute_list(self, y_pred, y=None, mask=None, **kwargs):  # type: ignore[override]
        masks = [None] * len(y_pred) if mask is None else list(mask)
        rows = [
            self._compute_tensor(p.detach()[None], t.detach()[None], None if m is None else torch.as_tensor(m)[None])
            for p, t, m in zip(y_pred, y, masks)
        ]
        return torch.cat(rows, dim=0)


class MaskedMAEMetric(MaskedRegressionMetric):
    """Cumulative (masked) mean absolute error; ``options`` as :func:`compute_regression_metrics`."""

    def __init__(self, reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False, **options):
        super().__init__("mae", reduction=reduction, get_not_nans=get_not_nans, **options)


class MaskedMSEMetric(MaskedRegressionMetric):
    """Cumulative (masked) mean squared error; ``options`` as :func:`compute_regression_metrics`."""

    def __init__(self, reduction: MetricReduction | str = MetricReduction.MEAN, get_not_nans: bool = False, **options):
        super().__init__("mse", reduction=reduction, get_not_nans=get_not_nans, **options)


class MaskedPSNRMetric(MaskedRegressionMetric):
    """Cumulative (masked) PSNR ``10 log10(MAX^2 / MSE)``; ``data_range`` gives ``MAX`` (float or mode)."""

    def __init__(self, data_range: float | str | None = None, reduction: str = "mean", get_not_nans=False, **options):
        super().__init__("psnr", reduction=reduction, get_not_nans=get_not_nans, data_range=data_range, **options)


class MaskedSSIMMetric(MaskedRegressionMetric):
    """Cumulative (masked) SSIM (Wang et al. 2004) on MONAI's valid-convolution SSIM map.

    ``SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))``,
    ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2`` with ``L`` from ``data_range``; the map is averaged over the mask.
    """

    def __init__(
        self,
        data_range: float | str | None = None,
        kernel_type: str = "gaussian",
        win_size: int | Sequence[int] = 11,
        kernel_sigma: float | Sequence[float] = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        ssim_slice_axis: int | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
        **options,
    ):
        super().__init__(
            "ssim",
            reduction=reduction,
            get_not_nans=get_not_nans,
            data_range=data_range,
            kernel_type=kernel_type,
            win_size=win_size,
            kernel_sigma=kernel_sigma,
            k1=k1,
            k2=k2,
            ssim_slice_axis=ssim_slice_axis,
            **options,
        )
