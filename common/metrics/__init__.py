"""Image-regression metrics (MAE, MSE, PSNR, SSIM) for 2D and 3D, optionally inside a mask; enhancement metrics."""

from __future__ import annotations

from .cumulative import MaskedMAEMetric, MaskedMSEMetric, MaskedPSNRMetric, MaskedRegressionMetric, MaskedSSIMMetric
from .enhancement import (
    ENHANCEMENT_METRIC_NAMES,
    ENHANCING_RIM_LABEL,
    EnhancementRecoveryMetric,
    FalseEnhancementMetric,
    compute_enhancement_metrics,
    enhancing_region,
)
from .regression import (
    DATA_RANGE_MODES,
    METRIC_NAMES,
    compute_regression_metrics,
    compute_slice_psnr,
    percentile_normalize,
    resolve_data_range,
)

__all__ = [
    "DATA_RANGE_MODES",
    "ENHANCEMENT_METRIC_NAMES",
    "ENHANCING_RIM_LABEL",
    "EnhancementRecoveryMetric",
    "FalseEnhancementMetric",
    "compute_enhancement_metrics",
    "enhancing_region",
    "METRIC_NAMES",
    "MaskedMAEMetric",
    "MaskedMSEMetric",
    "MaskedPSNRMetric",
    "MaskedRegressionMetric",
    "MaskedSSIMMetric",
    "compute_regression_metrics",
    "compute_slice_psnr",
    "percentile_normalize",
    "resolve_data_range",
]
