"""Tests for common.losses.local: local loss, slice SSIM, generator objective (Chen et al., IEEE TBME 2023, Eq. 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from common.losses.adversarial import PairedGeneratorLoss
from common.losses.local import HRFCNLoss, LocalLoss, LocalLossTerm, SliceSSIMLoss


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


def _terms(loss, pred, target, batch) -> dict:
    return {k: v for k, v in loss(pred, target, {}, batch).items()}


def _config_loss(lam, delta=0.1, slice_axis=-1, key="t1", mask=False, win_size=11) -> PairedGeneratorLoss:
    """Eq. (1) spelled out as in bundles/hrfcn_contrast_t1/configs/train.json."""
    local = LocalLossTerm(**({"mask_key": key} if mask else {"reference_key": key}), delta=delta)
    return PairedGeneratorLoss(
        pixel_losses={
            "mae": torch.nn.L1Loss(),
            "ssim": SliceSSIMLoss(slice_axis=slice_axis, win_size=win_size),
            "local": local,
        },
        pixel_weights={"mae": lam[0], "ssim": lam[1], "local": lam[2]},
    )


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
    terms = _terms(_config_loss(lam, slice_axis=slice_axis), pred, target, {"t1": reference})
    convenience = _terms(HRFCNLoss(*lam, aux_key="t1", slice_axis=slice_axis), pred, target, {"t1": reference})
    assert terms.keys() == convenience.keys() == {"g_mae", "g_ssim", "g_local"}
    assert all(torch.equal(terms[k], convenience[k]) for k in terms)

    mae = torch.nn.functional.l1_loss(pred, target)
    if len(shape) == 5:
        ssim = ssim_slices_oracle(pred, target, slice_axis % 5)
    else:
        ssim = ssim_slices_oracle(pred.unsqueeze(-1), target.unsqueeze(-1), 4)
    mask = ((target - reference).abs() > 0.1).float()
    local = ((pred - target).abs() * mask).mean()
    assert terms["g_mae"].item() == pytest.approx(lam[0] * mae.item(), rel=1e-5)
    assert terms["g_ssim"].item() == pytest.approx(lam[1] * ssim, rel=1e-3)
    assert terms["g_local"].item() == pytest.approx(lam[2] * local.item(), rel=1e-5)
    total = sum(terms.values())
    assert total.item() == pytest.approx(lam[0] * mae.item() + lam[1] * ssim + lam[2] * local.item(), rel=1e-4)


@pytest.mark.parametrize("spatial", [(16, 16, 3), (16, 16)])
def test_reductions_are_consistent(spatial):
    torch.manual_seed(0)
    pred, target, ref = (torch.rand(3, 1, *spatial) for _ in range(3))
    batch = {"t1": ref}
    for make in (lambda r: SliceSSIMLoss(reduction=r), lambda r: LocalLossTerm(reference_key="t1", reduction=r)):

        def call(loss):
            if isinstance(loss, LocalLossTerm):
                return loss(pred, target, fake_outputs={}, batch=batch)
            return loss(pred, target)

        per_sample = call(make("none"))
        assert per_sample.shape == (3,)
        assert torch.isclose(call(make("mean")), per_sample.mean())
        assert torch.isclose(call(make("sum")), per_sample.sum())


def test_perfect_prediction_and_gradients():
    torch.manual_seed(0)
    target, ref = torch.rand(2, 1, 16, 16, 3), torch.rand(2, 1, 16, 16, 3)
    loss = _config_loss((1.0, 1.0, 1.0))
    assert sum(_terms(loss, target.clone(), target, {"t1": ref}).values()).item() == pytest.approx(0.0, abs=1e-5)
    pred = torch.rand(2, 1, 16, 16, 3, requires_grad=True)
    value = sum(_terms(loss, pred, target, {"t1": ref}).values())
    value.backward()
    assert value.item() > 0.1 and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize("mask_source", ["threshold", "label"])
def test_local_term_reads_its_batch_key(mask_source):
    """The T1 (threshold mask) or the mask itself comes from the batch key given to the constructor."""
    torch.manual_seed(0)
    pred, target, aux = torch.rand(2, 1, 16, 16, 3), torch.rand(2, 1, 16, 16, 3), torch.rand(2, 1, 16, 16, 3)
    if mask_source == "label":
        aux = (aux > 0.7).float()
    key = "t1" if mask_source == "threshold" else "tumor_mask"
    term = LocalLossTerm(**({"reference_key": key} if mask_source == "threshold" else {"mask_key": key}))
    batch = {key: aux.double(), "other": torch.zeros(1)}  # converted to pred's dtype
    value = term(pred, target, fake_outputs={}, batch=batch)
    explicit = LocalLoss()(pred, target, **({"reference": aux} if mask_source == "threshold" else {"mask": aux}))
    assert torch.allclose(value, explicit) and term.key == key
    if mask_source == "label":  # the mask really comes from the batch, not a threshold of it
        manual = ((pred - target).abs() * aux).mean()
        assert torch.isclose(value, manual)
    convenience = HRFCNLoss(0.0, 0.0, 10.0, aux_key=key, mask_source=mask_source)
    assert torch.isclose(convenience(pred, target, {}, batch)["g_local"], 10.0 * explicit)


def test_zero_weight_terms_are_skipped_and_local_needs_reference():
    pred, target = torch.rand(1, 1, 16, 16, 3), torch.rand(1, 1, 16, 16, 3)
    terms = HRFCNLoss(1.0, 0.0, 0.0)(pred, target, {}, {})  # no T1 in the batch: the local term is not computed
    assert set(terms) == {"g_mae"} and torch.isclose(terms["g_mae"], (pred - target).abs().mean())
    with pytest.raises(ValueError, match="'t1'.*\\['image'\\]"):
        HRFCNLoss()(pred, target, {}, {"image": pred})
    with pytest.raises(ValueError, match="'t1'"):
        LocalLossTerm(reference_key="t1")(pred, target, fake_outputs={}, batch=None)
    with pytest.raises(ValueError, match="channels"):
        LocalLossTerm(reference_key="t1")(pred, target, fake_outputs={}, batch={"t1": torch.rand(1, 3, 16, 16, 3)})


def test_ssim_window_validation():
    pred = torch.rand(1, 1, 8, 8, 3)
    with pytest.raises(ValueError, match=r"\[8, 8\].*win_size = 11"):
        SliceSSIMLoss()(pred, pred)
    with pytest.raises(ValueError, match=r"\[8, 3\]"):  # slicing a slab along H leaves 8 x 3 images
        SliceSSIMLoss(slice_axis=2, win_size=5)(pred, pred)
    assert SliceSSIMLoss(win_size=7)(pred, pred).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        SliceSSIMLoss(win_size=7)(pred, torch.rand(1, 1, 8, 8, 4))


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (HRFCNLoss, {"lambda_mae": -1.0}),
        (HRFCNLoss, {"lambda_mae": 0.0, "lambda_ssim": 0.0, "lambda_local": 0.0}),
        (HRFCNLoss, {"mask_source": "tumour"}),
        (SliceSSIMLoss, {"slice_axis": 1}),
        (SliceSSIMLoss, {"win_size": 4}),
        (SliceSSIMLoss, {"data_range": 0.0}),
        (SliceSSIMLoss, {"reduction": "max"}),
        (LocalLossTerm, {"reference_key": "t1", "normalization": "brain"}),
        (LocalLossTerm, {"reference_key": "t1", "delta": -0.1}),
        (LocalLossTerm, {"reference_key": "t1", "reduction": "max"}),
        (LocalLossTerm, {}),
        (LocalLossTerm, {"reference_key": "t1", "mask_key": "tumor_mask"}),
    ],
)
def test_invalid_arguments(cls, kwargs):
    with pytest.raises(ValueError):
        cls(**kwargs)
