from __future__ import annotations

import math

import pytest
import torch

from common.losses import AdversarialLoss, DiscriminatorLoss, GradientPenalty, PairedGeneratorLoss


@pytest.mark.parametrize("shape", [(2, 1, 4, 4), (2, 1, 2, 3, 4)])
def test_modes_known_values(shape):
    zeros = torch.zeros(shape)
    assert AdversarialLoss("bce")(zeros, True).item() == pytest.approx(math.log(2))
    assert AdversarialLoss("lsgan")(zeros, True).item() == pytest.approx(1.0)
    assert AdversarialLoss("lsgan")(zeros, False).item() == pytest.approx(0.0)
    ones = torch.ones(shape)
    assert AdversarialLoss("hinge")(ones, True).item() == pytest.approx(0.0)
    assert AdversarialLoss("hinge")(ones, False).item() == pytest.approx(2.0)
    assert AdversarialLoss("wasserstein")(ones, True).item() == pytest.approx(-1.0)
    assert AdversarialLoss("hinge")(3 * ones, True, for_discriminator=False).item() == pytest.approx(-3.0)
    assert AdversarialLoss("bce", reduction="none")(zeros, True).shape == shape


def test_discriminator_loss_weights():
    real, fake = torch.full((2, 1), 2.0), torch.full((2, 1), -1.0)
    crit = AdversarialLoss("bce")
    expected = 0.5 * (crit(real, True) + crit(fake, False))
    assert DiscriminatorLoss("bce", real_fake_weight=0.5)(real, fake).item() == pytest.approx(expected.item())
    assert DiscriminatorLoss("bce", 0.5)(real, fake) < DiscriminatorLoss("bce", 0.5)(fake, real)


@pytest.mark.parametrize("spatial", [(3, 4), (2, 3, 4)])
def test_gradient_penalty_of_linear_critic_is_analytic(spatial):
    torch.manual_seed(0)
    w = torch.randn(1, *spatial)

    def critic(x):
        return (x * w).flatten(1).sum(1) + 0.3

    real, fake = torch.randn(4, 1, *spatial), torch.randn(4, 1, *spatial)
    expected = (w.norm() - 1.0) ** 2
    assert GradientPenalty()(critic, real, fake).item() == pytest.approx(expected.item(), rel=1e-5)
    assert DiscriminatorLoss("wasserstein", 1.0, 10.0).penalty(critic, real, fake).item() == pytest.approx(
        10 * expected.item(), rel=1e-5
    )
    assert DiscriminatorLoss("wasserstein", 1.0, 0.0).penalty(critic, real, fake) is None


def test_generator_loss_terms():
    pred, target = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    loss = PairedGeneratorLoss(torch.nn.L1Loss(), 100.0, {"a": 2.0, "b": 0.0}, {"a": "lsgan", "b": "bce"})
    terms = loss(pred, target, {"a": torch.zeros(2, 1), "b": torch.zeros(2, 1)})
    assert set(terms) == {"g_pixel", "g_adv_a"}
    assert terms["g_pixel"].item() == pytest.approx(100.0)
    assert terms["g_adv_a"].item() == pytest.approx(2.0)


def test_argument_validation():
    with pytest.raises(ValueError, match="mode"):
        AdversarialLoss("foo")
    with pytest.raises(ValueError, match="gradient_penalty_weight"):
        DiscriminatorLoss("wasserstein", 1.0, -1.0)
    with pytest.raises(ValueError, match="pixel_weight"):
        PairedGeneratorLoss(None, -1.0)
    with pytest.raises(ValueError, match="adversarial_modes"):
        PairedGeneratorLoss(None, 1.0, adversarial_modes="bad")
