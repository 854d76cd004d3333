"""Tests of common.metrics.regression against scikit-image (an independent oracle) and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from common.metrics.cumulative import MaskedMAEMetric, MaskedMSEMetric, MaskedPSNRMetric, MaskedSSIMMetric
from common.metrics.regression import (
    compute_regression_metrics,
    compute_slice_psnr,
    percentile_normalize,
    resolve_data_range,
)

SHAPES = {2: (32, 36), 3: (16, 18, 20)}
SK_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, K1=0.01, K2=0.03)


def _pair(dims: int, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.random(SHAPES[dims])
    return target + noise * rng.standard_normal(target.shape), target


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a)[None]  # add the channel axis


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("data_range", [1.0, "target_range"])
def test_agrees_with_skimage(dims, data_range):
    pred, target = _pair(dims)
    dr = 1.0 if data_range == 1.0 else float(target.max() - target.min())
    out = compute_regression_metrics(_t(pred), _t(target), data_range=data_range)
    assert _rel(out["mse"], mean_squared_error(target, pred)) <= 1e-10
    assert _rel(out["mae"], float(np.abs(pred - target).mean())) <= 1e-10
    assert _rel(out["psnr"], peak_signal_noise_ratio(target, pred, data_range=dr)) <= 1e-10
    assert _rel(out["ssim"], structural_similarity(target, pred, data_range=dr, **SK_SSIM)) <= 1e-4


def test_uniform_window_ssim_agrees_with_skimage():
    pred, target = _pair(2)
    out = compute_regression_metrics(_t(pred), _t(target), data_range=1.0, kernel_type="uniform", win_size=7)
    ref = structural_similarity(target, pred, data_range=1.0, win_size=7, use_sample_covariance=False)
    assert _rel(out["ssim"], ref) <= 1e-4


def test_slice_wise_ssim_is_the_mean_of_2d_ssims():
    pred, target = _pair(3)
    out = compute_regression_metrics(_t(pred), _t(target), data_range=1.0, metrics=("ssim",), ssim_slice_axis=1)
    ref = np.mean([structural_similarity(target[:, k], pred[:, k], data_range=1.0, **SK_SSIM) for k in range(18)])
    assert _rel(out["ssim"], ref) <= 1e-4


@pytest.mark.parametrize("dims", [2, 3])
def test_box_mask_equals_cropped_metrics(dims):
    pred, target = _pair(dims)
    box = tuple(slice(3, 12) for _ in range(dims))
    mask = np.zeros(target.shape)
    mask[box] = 1
    masked = compute_regression_metrics(_t(pred), _t(target), _t(mask), data_range=1.0, metrics=("mae", "mse", "psnr"))
    cropped = compute_regression_metrics(_t(pred[box]), _t(target[box]), data_range=1.0, metrics=("mae", "mse", "psnr"))
    for name in ("mae", "mse", "psnr"):
        assert _rel(masked[name], cropped[name]) <= 1e-12


@pytest.mark.parametrize("dims", [2, 3])
def test_masked_ssim_is_the_map_mean_over_the_mask(dims):
    pred, target = _pair(dims)
    mask = np.zeros(target.shape, dtype=bool)
    mask[tuple(slice(4, 14) for _ in range(dims))] = True
    out = compute_regression_metrics(_t(pred), _t(target), _t(mask), data_range=1.0, metrics=("ssim",))
    _, full = structural_similarity(target, pred, data_range=1.0, full=True, **SK_SSIM)
    interior = tuple(slice(5, s - 5) for s in target.shape)  # skimage keeps the map 5 voxels from the border
    assert _rel(out["ssim"], float(full[interior][mask[interior]].mean())) <= 1e-4


@pytest.mark.parametrize("dims", [2, 3])
def test_identical_images(dims):
    _, target = _pair(dims)
    out = compute_regression_metrics(_t(target), _t(target))
    assert out["mae"] == 0.0 and out["mse"] == 0.0 and out["psnr"] == math.inf
    assert out["ssim"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_more_noise_is_worse(dims):
    results = [compute_regression_metrics(*map(_t, _pair(dims, noise)), data_range=1.0) for noise in (0.02, 0.1, 0.3)]
    psnr, mae, ssim = ([r[k] for r in results] for k in ("psnr", "mae", "ssim"))
    assert psnr[0] > psnr[1] > psnr[2] and mae[0] < mae[1] < mae[2] and ssim[0] > ssim[1] > ssim[2]


def test_data_range_modes_by_hand():
    target = torch.tensor([[[-1.0, 0.0], [1.0, 3.0]]])
    pred = target + torch.tensor([[[0.5, 0.0], [0.0, -0.5]]])
    mse = 0.125
    assert resolve_data_range(target, "target_max") == 3.0 and resolve_data_range(target, "target_range") == 4.0
    out_max = compute_regression_metrics(pred, target, data_range="target_max", metrics=("psnr",))
    out_rng = compute_regression_metrics(pred, target, metrics=("psnr",))  # default: target_range
    assert out_max["psnr"] == pytest.approx(10 * math.log10(9 / mse), rel=1e-12)
    assert out_rng["psnr"] == pytest.approx(10 * math.log10(16 / mse), rel=1e-12)


def test_empty_mask_gives_nan():
    pred, target = _pair(2)
    out = compute_regression_metrics(_t(pred), _t(target), _t(np.zeros_like(target)))
    assert set(out) == {"mae", "mse", "psnr", "ssim"} and all(math.isnan(v) for v in out.values())


def test_percentile_normalize_known_answer():
    image = torch.arange(101.0).reshape(1, 101, 1)
    out = percentile_normalize(image, percentiles=(10, 90))
    expected = np.clip((np.arange(101.0) - 10.0) / 80.0, 0, 1)
    np.testing.assert_allclose(out.flatten().numpy(), expected, atol=1e-12)
    mask = torch.zeros_like(image)
    mask[:, 50:] = 1  # values 50..100 -> percentiles (0, 100) = (50, 100)
    np.testing.assert_allclose(percentile_normalize(image, mask=mask, percentiles=(0, 100)).flatten()[75], 0.5)


def test_percentile_normalised_metrics_known_answer():
    target = torch.arange(101.0).reshape(1, 101, 1).repeat(1, 1, 11)
    pred = target + 8.0
    out = compute_regression_metrics(
        pred, target, normalize="percentile", percentiles=(10, 90), metrics=("mae", "psnr")
    )
    t = np.clip((np.arange(101.0) - 10) / 80, 0, 1)
    p = np.clip((np.arange(101.0) - 2) / 80, 0, 1)  # the prediction in the target's window
    assert out["mae"] == pytest.approx(np.abs(p - t).mean(), rel=1e-12)
    assert out["psnr"] == pytest.approx(10 * math.log10(1.0 / ((p - t) ** 2).mean()), rel=1e-12)  # data range 1
    # BraSyn-style: each image by its own percentiles -> a global affine intensity error disappears
    own = compute_regression_metrics(2 * target + 5, target, normalize="percentile", percentile_reference="self")
    assert own["mae"] == pytest.approx(0.0, abs=1e-12) and own["psnr"] > 200


def test_slice_psnr_by_hand():
    rng = np.random.default_rng(1)
    target = rng.random((1, 8, 9, 10))
    pred = target + 0.1 * rng.standard_normal(target.shape)
    mask = np.zeros((1, 8, 9, 10))
    mask[0, 2, 3, 4] = mask[0, 5, 5, 7] = 1  # slices 4 and 7 along the last spatial axis
    p, t, m = torch.tensor(pred), torch.tensor(target), torch.tensor(mask)
    got = compute_slice_psnr(p, t, m, axis=2, data_range="target_max")
    hand = [10 * np.log10(target[..., k].max() ** 2 / ((pred[..., k] - target[..., k]) ** 2).mean()) for k in (4, 7)]
    assert got == pytest.approx(np.mean(hand), rel=1e-12)
    assert math.isnan(compute_slice_psnr(torch.tensor(pred), torch.tensor(target), torch.zeros(1, 8, 9, 10)))
    # a 2D case is one slice: its whole-image PSNR when the mask is non-empty
    p2, t2, m2 = (torch.tensor(a[..., 4]) for a in (pred, target, mask))
    assert compute_slice_psnr(p2, t2, m2, data_range=1.0) == pytest.approx(
        compute_regression_metrics(p2, t2, data_range=1.0, metrics=("psnr",))["psnr"], rel=1e-12
    )


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"data_range": "max"}, "data_range"),
        ({"data_range": -1.0}, "data_range"),
        ({"normalize": "zscore"}, "normalize"),
        ({"percentiles": (90, 10)}, "percentiles"),
        ({"percentile_reference": "pred"}, "percentile_reference"),
        ({"metrics": ("dice",)}, "metrics"),
        ({"win_size": 4}, "win_size"),
        ({"kernel_type": "box"}, "kernel_type"),
        ({"ssim_slice_axis": 3}, "ssim_slice_axis"),
        ({"mask": torch.ones(1, 5, 5)}, "mask"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, arg):
    pred, target = _pair(2)
    with pytest.raises(ValueError, match=arg):
        compute_regression_metrics(_t(pred), _t(target), **kwargs)
    with pytest.raises(ValueError, match="target"):
        compute_regression_metrics(_t(pred), _t(target[:-1]))


@pytest.mark.parametrize("dims", [2, 3])
def test_cumulative_metrics_match_per_case_function(dims):
    g = torch.Generator().manual_seed(0)
    y = torch.rand((4, 1, *SHAPES[dims]), generator=g)
    y_pred = y + 0.1 * torch.randn(y.shape, generator=g)
    mask = torch.zeros_like(y)
    mask[:3, :, 2:12, 2:12] = 1  # item 3 has an empty mask -> NaN, ignored by aggregate()
    per_case = [compute_regression_metrics(y_pred[b], y[b], mask[b], data_range=1.0) for b in range(4)]
    metrics = {
        "mae": MaskedMAEMetric(),
        "mse": MaskedMSEMetric(),
        "psnr": MaskedPSNRMetric(data_range=1.0),
        "ssim": MaskedSSIMMetric(data_range=1.0),
    }
    for name, metric in metrics.items():
        metric(y_pred[:2], y[:2], mask=mask[:2])
        metric(list(y_pred[2:]), list(y[2:]), mask=list(mask[2:]))  # list of channel-first items
        buffer = metric.get_buffer().flatten().double().numpy()
        np.testing.assert_allclose(buffer[:3], [c[name] for c in per_case[:3]], rtol=1e-6)
        assert math.isnan(buffer[3])
        assert float(metric.aggregate()) == pytest.approx(np.mean([c[name] for c in per_case[:3]]), rel=1e-6)
        metric.reset()
        metric(y_pred, y)
        assert metric.get_buffer().shape == (4, 1) and not torch.isnan(metric.get_buffer()).any()
    with pytest.raises(ValueError, match="data_range"):
        MaskedPSNRMetric(data_range="peak")


@pytest.mark.parametrize("dims", [2, 3])
def test_region_metrics_take_the_peak_from_the_whole_target(dims):
    """Region PSNR/SSIM take their peak from the whole target, not from the values inside the region.

    Known answer: target 0 outside a cube and 100 inside except one voxel at 0, so the whole target spans
    [0, 100] while the region (outside the cube, values 0) has range 0 inside itself; pred = target + 1 in the
    region. PSNR over the region must be 10 log10(100^2 / 1) = 40 dB (peak from the target), not NaN or inf
    (peak from the region's own range).
    """
    shape = (1,) + (24,) * dims  # larger than the 11-voxel SSIM window
    target = torch.zeros(shape)
    inner = (slice(None),) + (slice(3, 9),) * dims
    target[inner] = 100.0
    mask = torch.ones(shape)
    mask[inner] = 0.0
    pred = target + mask  # error 1 everywhere in the region, 0 in the cube
    out = compute_regression_metrics(pred, target, mask, data_range="target_range", metrics=("psnr", "ssim"))
    assert out["psnr"] == pytest.approx(40.0, abs=1e-6)
    # SSIM's constants use L = 100 too: with L = the region's range (0) the value would be NaN
    assert math.isfinite(out["ssim"]) and 0.0 < out["ssim"] <= 1.0
    ratio = compute_regression_metrics(pred, target, mask, data_range="target_max", metrics=("psnr",))["psnr"]
    assert ratio == pytest.approx(40.0, abs=1e-6)
