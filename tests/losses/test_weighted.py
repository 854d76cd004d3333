"""Tests for common.losses.weighted: the lesion / difference-weighted L1 loss and its generator term."""

from __future__ import annotations

import pytest
import torch

from common.losses.adversarial import PairedGeneratorLoss
from common.losses.weighted import DifferenceWeightedL1Loss, DifferenceWeightedL1Term

SHAPES = {2: (2, 1, 6, 5), 3: (2, 1, 4, 5, 3)}


@pytest.mark.parametrize("dims", [2, 3])
def test_weight_zero_is_plain_l1(dims):
    torch.manual_seed(0)
    pred, target, source = (torch.rand(SHAPES[dims]) for _ in range(3))
    l1 = torch.nn.L1Loss()(pred, target)
    assert torch.equal(DifferenceWeightedL1Loss(0.0)(pred, target, source=source), l1)
    term = DifferenceWeightedL1Term(lesion_weight=0.0)
    assert torch.equal(term(pred, target, fake_outputs={}, batch=None), l1)  # the batch is not read


def test_known_values_threshold_and_mask():
    pred = torch.tensor([[[0.0, 0.5, 1.0, 0.2]], [[0.3, 0.3, 0.3, 0.3]]])
    target = torch.tensor([[[0.5, 0.5, 0.0, 0.0]], [[0.0, 0.3, 0.3, 0.1]]])
    source = torch.tensor([[[0.0, 0.5, 0.05, 0.0]], [[0.0, 0.3, 0.3, 0.1]]])
    # |target - source| > 0.2 only at sample 0 voxel 0 -> weights 1 + 9 = 10 there, 1 elsewhere
    # sample 0: (10 * 0.5 + 0 + 1.0 + 0.2) / 4 = 1.55; sample 1: (0.3 + 0 + 0 + 0.2) / 4 = 0.125
    loss = DifferenceWeightedL1Loss(lesion_weight=9.0, threshold=0.2, reduction="none")
    assert torch.allclose(loss(pred, target, source=source), torch.tensor([1.55, 0.125]))
    assert torch.isclose(DifferenceWeightedL1Loss(9.0, 0.2)(pred, target, source=source), torch.tensor(0.8375))
    assert torch.isclose(DifferenceWeightedL1Loss(9.0, 0.2, "sum")(pred, target, source=source), torch.tensor(1.675))
    mask = torch.tensor([[[0.0, 0.0, 1.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]])  # a given mask takes precedence
    assert torch.allclose(loss(pred, target, source=source, mask=mask), torch.tensor([(0.5 + 10.0 + 0.2) / 4, 0.125]))


@pytest.mark.parametrize("dims", [2, 3])
def test_weighting_moves_the_gradient_to_the_lesion(dims):
    torch.manual_seed(1)
    target, source = torch.zeros(SHAPES[dims]), torch.zeros(SHAPES[dims])
    lesion, other = (0, 0) + (1,) * dims, (0, 0) + (0,) * dims
    target[lesion] = 1.0  # the one voxel where target and source differ
    pred = torch.full(SHAPES[dims], 0.5, requires_grad=True)
    DifferenceWeightedL1Loss(lesion_weight=20.0, threshold=0.2)(pred, target, source=source).backward()
    grad = pred.grad.abs()
    assert float(grad[lesion]) == pytest.approx(21 * float(grad[other]))


def test_term_reads_source_channel_or_labelled_mask():
    torch.manual_seed(2)
    pred, target = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    image = torch.stack([torch.rand(2, 4, 4), target[:, 0] + 0.5], 1)  # channel 1 differs everywhere by 0.5
    term = DifferenceWeightedL1Term(lesion_weight=3.0, threshold=0.2, source_key="image", source_channel=1)
    expected = (4 * (pred - target).abs()).mean()
    assert torch.isclose(term(pred, target, fake_outputs={}, batch={"image": image}), expected)
    labels = torch.zeros(2, 1, 4, 4)
    labels[:, :, 0] = 3.0  # enhancing rim in the first row, edema (2) in the second
    labels[:, :, 1] = 2.0
    term = DifferenceWeightedL1Term(lesion_weight=3.0, source_key=None, mask_key="seg", mask_labels=[3])
    weights = torch.ones_like(pred)
    weights[:, :, 0] = 4.0
    got = term(pred, target, fake_outputs={}, batch={"seg": labels})
    assert torch.isclose(got, (weights * (pred - target).abs()).mean())
    anything = DifferenceWeightedL1Term(lesion_weight=3.0, source_key=None, mask_key="seg")
    weights[:, :, 1] = 4.0
    assert torch.isclose(
        anything(pred, target, fake_outputs={}, batch={"seg": labels}), (weights * (pred - target).abs()).mean()
    )


def test_inside_paired_generator_loss():
    torch.manual_seed(3)
    pred, target, source = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    g = PairedGeneratorLoss(pixel_losses={"l1": DifferenceWeightedL1Term(0.0)}, pixel_weights={"l1": 100.0})
    assert torch.isclose(g(pred, target, {}, {"image": source})["g_l1"], 100 * torch.nn.L1Loss()(pred, target))
    g = PairedGeneratorLoss(pixel_losses={"l1": DifferenceWeightedL1Term(5.0)}, pixel_weights={"l1": 100.0})
    assert float(g(pred, target, {}, {"image": source})["g_l1"]) > 100 * float(torch.nn.L1Loss()(pred, target))


def test_invalid_arguments_and_inputs():
    for kwargs, name in (({"lesion_weight": -1.0}, "lesion_weight"), ({"threshold": -0.1}, "threshold")):
        with pytest.raises(ValueError, match=name):
            DifferenceWeightedL1Loss(**kwargs)
    with pytest.raises(ValueError, match="exactly one"):
        DifferenceWeightedL1Term(source_key="image", mask_key="seg")
    with pytest.raises(ValueError, match="source_channel"):
        DifferenceWeightedL1Term(source_channel=-1)
    x = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="source or a mask"):
        DifferenceWeightedL1Loss(1.0)(x, x)
    with pytest.raises(ValueError, match="source must have shape"):
        DifferenceWeightedL1Loss(1.0)(x, x, source=torch.rand(1, 1, 4, 5))
    with pytest.raises(ValueError, match="'image'"):
        DifferenceWeightedL1Term(1.0)(x, x, fake_outputs={}, batch={"label": x})
    with pytest.raises(ValueError, match="source_channel 1"):
        DifferenceWeightedL1Term(1.0, source_channel=1)(x, x, fake_outputs={}, batch={"image": x})


def test_prediction_weight_costs_false_enhancement_like_missed_enhancement():
    pred = torch.tensor([[[0.0, 0.5, 1.0, 0.2]], [[0.3, 0.3, 0.3, 0.3]]])
    target = torch.tensor([[[0.5, 0.5, 0.0, 0.0]], [[0.0, 0.3, 0.3, 0.1]]])
    source = torch.tensor([[[0.0, 0.5, 0.05, 0.0]], [[0.0, 0.3, 0.3, 0.15]]])
    # M (|target - source| > 0.2): sample 0 voxel 0. P (|pred - source| > 0.2) outside M: sample 0 voxel 2
    # (1.0 vs 0.05) and sample 1 voxel 0 (0.3 vs 0.0); voxel 0 of sample 0 is in M and is not counted twice.
    # sample 0: (10 * 0.5 + 0 + 5 * 1.0 + 0.2) / 4 = 2.55; sample 1: (5 * 0.3 + 0 + 0 + 0.2) / 4 = 0.425
    loss = DifferenceWeightedL1Loss(lesion_weight=9.0, threshold=0.2, reduction="none", prediction_weight=4.0)
    assert torch.allclose(loss(pred, target, source=source), torch.tensor([2.55, 0.425]))
    # beta only (alpha 0) still weights the prediction's changes; beta 0 is the previous loss exactly
    only = DifferenceWeightedL1Loss(0.0, 0.2, "none", prediction_weight=4.0)
    assert torch.allclose(only(pred, target, source=source), torch.tensor([(0.5 + 5.0 + 0.2) / 4, (1.5 + 0.2) / 4]))
    plain = DifferenceWeightedL1Loss(9.0, 0.2, "none")
    assert torch.equal(
        DifferenceWeightedL1Loss(9.0, 0.2, "none", 0.0)(pred, target, source=source), plain(pred, target, source=source)
    )
    # the weights carry no gradient: d/dpred = weight * sign(pred - target) / N
    p = pred.clone().requires_grad_(True)
    DifferenceWeightedL1Loss(9.0, 0.2, "sum", prediction_weight=4.0)(p, target, source=source).backward()
    assert torch.allclose(p.grad[0, 0], torch.tensor([-10.0, 0.0, 5.0, 1.0]) / 4)
    term = DifferenceWeightedL1Term(lesion_weight=9.0, prediction_weight=4.0, reduction="none")
    batch = {"image": torch.cat([source, torch.zeros_like(source)], dim=1)}
    assert torch.allclose(term(pred, target, fake_outputs={}, batch=batch), torch.tensor([2.55, 0.425]))
    with pytest.raises(ValueError, match="prediction_weight"):
        DifferenceWeightedL1Loss(prediction_weight=-1.0)
    with pytest.raises(ValueError, match="source_key"):
        DifferenceWeightedL1Term(lesion_weight=1.0, prediction_weight=1.0, source_key=None, mask_key="tumor_mask")
    with pytest.raises(ValueError, match="needs the source"):
        DifferenceWeightedL1Loss(1.0, prediction_weight=1.0)(pred, target, mask=torch.zeros_like(pred))
