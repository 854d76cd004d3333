"""Tests for common.losses.local (local loss and composite loss of Chen et al., IEEE TBME 2023, Eq. 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from common.losses.local import HRFCNLoss, LocalLoss


def ssim_slices_oracle(pred: torch.Tensor, target: torch.Tensor, axis: int) -> float:
    """Mean over samples and 2D slices along ``axis`` of 1 - SSIM, by scikit-image (independent oracle)."""
    p, t = pred[:, 0].double().numpy(), target[:, 0].double().numpy()
    values = []
    for b in range(p.shape[0]):
        pb, tb = np.moveaxis(p[b], axis - 2, 0), np.moveaxis(t[b], axis - 2, 0)
        for s in range(pb.shape[0]):
            ssim = structural_similarity(
                tb[s], pb[s], data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
            values.append(1.0 - ssim)
    return float(np.mean(values))


def test_threshold_mask_equals_hand_mask():
    target = torch.tensor([[[0.50, 0.20, 0.90, 0.00, 0.10, 0.70]]])
    reference = torch.tensor([[[0.30, 0.15, 0.95, 0.00, 0.40, 0.62]]])
    # |Y - X_T1| = 0.20, 0.05, 0.05, 0.00, 0.30, 0.08
    expected = torch.tensor([[[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]]])
    assert torch.equal(LocalLoss.threshold_mask(target, reference, 0.1), expected)
    assert torch.equal(LocalLoss.threshold_mask(target, reference, 0.06), torch.tensor([[[1.0, 0, 0, 0, 1, 1]]]))


def test_local_loss_known_values():
    pred = torch.tensor([[[0.0, 0.5, 1.0, 0.2]], [[0.3, 0.3, 0.3, 0.3]]])
    target = torch.tensor([[[0.5, 0.5, 0.0, 0.0]], [[0.0, 0.3, 0.3, 0.1]]])
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]])
    # sample 0: masked |d| = 0.5 + 0 + 1.0 = 1.5 over 4 voxels / 3 mask voxels; sample 1: empty mask
    none_vox = LocalLoss(reduction="none")(pred, target, mask=mask)
    assert torch.allclose(none_vox, torch.tensor([1.5 / 4, 0.0]))
    assert torch.isclose(LocalLoss()(pred, target, mask=mask), torch.tensor(1.5 / 8))
    assert torch.isclose(LocalLoss(reduction="sum")(pred, target, mask=mask), torch.tensor(1.5 / 4))
    none_mask = LocalLoss(normalization="mask", reduction="none")(pred, target, mask=mask)
    assert torch.allclose(none_mask, torch.tensor([0.5, 0.0]))
    assert torch.isclose(LocalLoss(normalization="mask")(pred, target, mask=mask), torch.tensor(0.5))  # pooled


def test_local_loss_mask_from_reference_and_precedence():
    torch.manual_seed(0)
    pred, target, reference = torch.rand(2, 1, 8, 8, 3), torch.rand(2, 1, 8, 8, 3), torch.rand(2, 1, 8, 8, 3)
    hand = ((target - reference).abs() > 0.2).float()
    expected = ((pred - target).abs() * hand).sum() / hand.sum()
    loss = LocalLoss(delta=0.2, normalization="mask")
    assert torch.isclose(loss(pred, target, reference=reference), expected)
    ones = torch.ones_like(target)
    assert torch.isclose(loss(pred, target, reference=reference, mask=ones), (pred - target).abs().mean())


@pytest.mark.parametrize("normalization", ["voxels", "mask"])
def test_empty_mask_gives_zero_loss_and_finite_gradient(normalization):
    pred = torch.rand(2, 1, 8, 8, requires_grad=True)
    target = torch.rand(2, 1, 8, 8)
    loss = LocalLoss(normalization=normalization)(pred, target, reference=target)  # |Y - Y| = 0 -> M = 0
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() == 0


def test_one_channel_mask_broadcasts_over_channels():
    pred, target = torch.ones(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1.0  # half of the voxels
    assert torch.isclose(LocalLoss()(pred, target, mask=mask), torch.tensor(0.5))
    with pytest.raises(ValueError, match="channels"):
        LocalLoss()(pred, target, mask=torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize(
    "shape,slice_axis",
    [((2, 1, 16, 16, 3), -1), ((1, 1, 12, 16, 14), 2), ((2, 1, 16, 16), -1)],
)
def test_composite_is_weighted_sum_of_parts(shape, slice_axis):
    torch.manual_seed(0)
    target = torch.rand(shape)
    pred = (target + 0.1 * torch.randn(shape)).clamp(0, 1)
    reference = (target - 0.3 * torch.rand(shape)).clamp(0, 1)
    lam = (0.1, 0.1, 10.0)
    loss = HRFCNLoss(*lam, delta=0.1, slice_axis=slice_axis)
    total = loss(pred, target, reference=reference)

    mae = torch.nn.functional.l1_loss(pred, target)
    if len(shape) == 5:
        ssim = ssim_slices_oracle(pred, target, slice_axis % 5)
    else:
        ssim = ssim_slices_oracle(pred.unsqueeze(-1), target.unsqueeze(-1), 4)
    mask = ((target - reference).abs() > 0.1).float()
    local = ((pred - target).abs() * mask).mean()
    assert loss.last_terms["mae"].item() == pytest.approx(mae.item(), rel=1e-5)
    assert loss.last_terms["ssim"].item() == pytest.approx(ssim, rel=1e-3)
    assert loss.last_terms["local"].item() == pytest.approx(local.item(), rel=1e-5)
    assert total.item() == pytest.approx(lam[0] * mae.item() + lam[1] * ssim + lam[2] * local.item(), rel=1e-4)


def test_reductions_are_consistent():
    torch.manual_seed(0)
    pred, target, ref = torch.rand(3, 1, 16, 16, 3), torch.rand(3, 1, 16, 16, 3), torch.rand(3, 1, 16, 16, 3)
    per_sample = HRFCNLoss(reduction="none")(pred, target, reference=ref)
    assert per_sample.shape == (3,)
    assert torch.isclose(HRFCNLoss(reduction="mean")(pred, target, reference=ref), per_sample.mean())
    assert torch.isclose(HRFCNLoss(reduction="sum")(pred, target, reference=ref), per_sample.sum())


def test_perfect_prediction_and_gradients():
    torch.manual_seed(0)
    target, ref = torch.rand(2, 1, 16, 16, 3), torch.rand(2, 1, 16, 16, 3)
    loss = HRFCNLoss(1.0, 1.0, 1.0)
    assert loss(target.clone(), target, reference=ref).item() == pytest.approx(0.0, abs=1e-5)
    pred = torch.rand(2, 1, 16, 16, 3, requires_grad=True)
    value = loss(pred, target, reference=ref)
    value.backward()
    assert value.item() > 0.1 and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize("mask_source", ["threshold", "label"])
def test_packed_label_for_supervised_trainer(mask_source):
    torch.manual_seed(0)
    pred, target, aux = torch.rand(2, 1, 16, 16, 3), torch.rand(2, 1, 16, 16, 3), torch.rand(2, 1, 16, 16, 3)
    if mask_source == "label":
        aux = (aux > 0.7).float()
    loss = HRFCNLoss(1.0, 1.0, 10.0, mask_source=mask_source)
    packed = loss(pred, torch.cat([target, aux], dim=1))
    explicit = loss(pred, target, **({"reference": aux} if mask_source == "threshold" else {"mask": aux}))
    assert torch.equal(packed, explicit)
    if mask_source == "label":  # the mask really comes from the label, not a threshold of it
        manual = ((pred - target).abs() * aux).mean()
        assert torch.isclose(loss.last_terms["local"], manual)


def test_zero_weight_terms_are_skipped_and_local_needs_reference():
    pred, target = torch.rand(1, 1, 16, 16, 3), torch.rand(1, 1, 16, 16, 3)
    loss = HRFCNLoss(1.0, 0.0, 0.0)
    assert torch.isclose(loss(pred, target), (pred - target).abs().mean())
    assert set(loss.last_terms) == {"mae"}
    with pytest.raises(ValueError, match="reference or a mask"):
        HRFCNLoss()(pred, target)
    with pytest.raises(ValueError, match="channels"):
        HRFCNLoss()(pred, torch.rand(1, 3, 16, 16, 3))


def test_ssim_window_validation():
    pred = torch.rand(1, 1, 8, 8, 3)
    with pytest.raises(ValueError, match=r"\[8, 8\].*ssim_win_size = 11"):
        HRFCNLoss(1.0, 1.0, 0.0)(pred, pred)
    with pytest.raises(ValueError, match=r"\[8, 3\]"):  # slicing a slab along H leaves 8 x 3 images
        HRFCNLoss(1.0, 1.0, 0.0, slice_axis=2, ssim_win_size=5)(pred, pred)
    assert HRFCNLoss(1.0, 1.0, 0.0, ssim_win_size=7)(pred, pred).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lambda_mae": -1.0},
        {"lambda_mae": 0.0, "lambda_ssim": 0.0, "lambda_local": 0.0},
        {"mask_source": "tumour"},
        {"slice_axis": 1},
        {"ssim_win_size": 4},
        {"local_normalization": "brain"},
        {"delta": -0.1},
        {"reduction": "max"},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        HRFCNLoss(**kwargs)
