"""GradientDifferenceLoss (Nie et al. 2018, Eq. 6; Mathieu et al. 2016)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.losses.gradient_difference import GradientDifferenceLoss, finite_differences


def _image(dims: int) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.zeros(2, 1, *([12] * dims))
    x[(slice(None), slice(None)) + (slice(3, 9),) * dims] = 1.0  # a cube (square) with sharp edges
    return x


@pytest.mark.parametrize("dims", [2, 3])
def test_zero_for_identical_and_constant_offset(dims):
    y = _image(dims)
    loss = GradientDifferenceLoss()
    assert float(loss(y, y)) == 0.0
    assert float(loss(y + 3.5, y)) == pytest.approx(0.0, abs=1e-10)
    noisy = y + 0.05 * torch.rand_like(y)
    assert float(loss(noisy - 2.0, noisy)) == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("dims", [2, 3])
def test_positive_for_blurred_copy(dims):
    y = _image(dims)
    pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
    blurred = pool(y, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    loss = GradientDifferenceLoss()
    assert float(loss(blurred, y)) > 1e-2
    assert float(loss(y, blurred)) == pytest.approx(float(loss(blurred, y)))  # symmetric


def test_known_value_and_exponent():
    # 1D ramp along the last axis: |∇Y| = 1 everywhere there, |∇Ŷ| = 0 (constant prediction)
    y = torch.arange(4.0).reshape(1, 1, 1, 1, 4).expand(1, 1, 2, 2, 4).contiguous()
    pred = torch.zeros_like(y)
    # axes x, y: no gradient anywhere; axis z: mean over 2*2*3 differences of |1 - 0|^a = 1
    assert float(GradientDifferenceLoss(exponent=2)(pred, y)) == pytest.approx(1.0)
    assert float(GradientDifferenceLoss(exponent=1)(2 * y, y)) == pytest.approx(1.0)
    assert float(GradientDifferenceLoss(exponent=2)(3 * y, y)) == pytest.approx(4.0)
    assert torch.equal(finite_differences(y, 4)[0, 0, 0, 0], torch.ones(3))


def test_reduction_and_validation():
    y = _image(3)
    blurred = F.avg_pool3d(y, 3, 1, 1)
    per_sample = GradientDifferenceLoss(reduction="none")(blurred, y)
    assert per_sample.shape == (2,)
    assert float(GradientDifferenceLoss(reduction="sum")(blurred, y)) == pytest.approx(float(per_sample.sum()))
    assert float(GradientDifferenceLoss()(blurred, y)) == pytest.approx(float(per_sample.mean()))
    with pytest.raises(ValueError, match="exponent"):
        GradientDifferenceLoss(exponent=0)
    with pytest.raises(ValueError, match="same shape"):
        GradientDifferenceLoss()(y, y[..., :-1])


def test_gradients_flow_to_the_prediction():
    y = _image(3)
    pred = F.avg_pool3d(y, 3, 1, 1).requires_grad_(True)
    GradientDifferenceLoss()(pred, y).backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0
