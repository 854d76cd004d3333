"""Difficulty-aware pixel loss, WGAN-GP critic objective and the total generator loss (Xiao and Nie, Eq. 1-7)."""

from __future__ import annotations

import pytest
import torch

from common.losses.adversarial import DiscriminatorLoss, PairedGeneratorLoss
from common.losses.difficulty import (
    DifficultyAwarePixelLoss,
    PixelPowerLoss,
    difficulty_attention,
    dual_discriminator_generator_loss,
)
from common.networks.dual_discriminator import ConvPoolCritic, LocalDiscriminator

DIMS = [2, 3]


def _pair(spatial_dims, b=2, c=1, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (b, c, *([size] * spatial_dims))
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


class _LinearCritic(torch.nn.Module):
    """``D(x) = scale * <w, x>`` with ``||w||_2 = 1``: its input gradient has norm ``|scale|`` everywhere."""

    def __init__(self, numel: int, scale: float) -> None:
        super().__init__()
        w = torch.randn(numel, generator=torch.Generator().manual_seed(1))
        self.register_buffer("w", w / w.norm())
        self.scale = scale

    def forward(self, x):
        return self.scale * (x.flatten(1) @ self.w)[:, None]


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_gradient_penalty_zero_for_unit_gradient_and_positive_otherwise(spatial_dims):
    real, fake = _pair(spatial_dims, b=3)
    loss = DiscriminatorLoss("wasserstein", real_fake_weight=1.0, gradient_penalty_weight=10.0)
    numel = real[0].numel()
    assert float(loss.penalty(_LinearCritic(numel, 1.0), real, fake)) == pytest.approx(0.0, abs=1e-10)
    # gradient norm 3 everywhere: lambda * (3 - 1)^2 = 40 whatever the interpolation
    assert float(loss.penalty(_LinearCritic(numel, 3.0), real, fake)) == pytest.approx(40.0, rel=1e-5)
    assert (
        float(
            loss.penalty(
                ConvPoolCritic(spatial_dims, channels=(2, 2, 2), conv_channels=2, fc_channels=(4,), pooled_size=4),
                real,
                fake,
            )
        )
        > 0
    )


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_wgan_critic_loss_and_generator_term(spatial_dims):
    real_scores, fake_scores = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.5], [-1.5]])
    d_loss = DiscriminatorLoss("wasserstein", real_fake_weight=1.0, gradient_penalty_weight=10.0)
    # Eq. 2 without the penalty: E[D1(G(x))] - E[D1(y)] = -0.5 - 2 = -2.5
    assert float(d_loss(real_scores, fake_scores)) == pytest.approx(-2.5)
    g_loss = dual_discriminator_generator_loss(lambda1=0.1, lambda2=0.2, attention=False)
    pred, target = _pair(spatial_dims)
    terms = g_loss(pred, target, {"global": fake_scores}, None)
    assert set(terms) == {"g_pixel", "g_adv_global"}
    assert float(terms["g_adv_global"]) == pytest.approx(0.1 * 0.5)  # Eq. 3: -lambda1 * E[D1(G(x))]


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_attention_weights_are_one_minus_m_to_the_beta(spatial_dims):
    m = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0]).reshape(1, 1, 5, *([1] * (spatial_dims - 1)))
    expected = torch.tensor([1.0, 0.75**2, 0.25, 0.01, 0.0]).reshape(m.shape)
    torch.testing.assert_close(difficulty_attention(m, 2.0), expected)
    torch.testing.assert_close(difficulty_attention(m, 0.0), torch.ones_like(m))  # 0^0 = 1

    pred = torch.zeros(1, 1, 5, *([1] * (spatial_dims - 1)))
    target = torch.tensor([1.0, 2.0, -1.0, 4.0, 3.0]).reshape(pred.shape)
    logits = torch.logit(m.clamp(1e-7, 1 - 1e-7))
    term = DifficultyAwarePixelLoss("local", beta=2.0, p=1)
    value = term(pred, target, fake_outputs={"local": logits})
    weights = (1 - m.clamp(1e-7, 1 - 1e-7)) ** 2
    assert float(value) == pytest.approx(float((weights * target.abs()).mean()), rel=1e-5)
    probs = DifficultyAwarePixelLoss("local", beta=2.0, p=2, from_logits=False)
    assert float(probs(pred, target, fake_outputs={"local": m})) == pytest.approx(float((expected * target**2).mean()))


@pytest.mark.parametrize("spatial_dims", DIMS)
@pytest.mark.parametrize("p", [1, 2])
def test_beta_zero_is_the_plain_pixel_loss(spatial_dims, p):
    pred, target = _pair(spatial_dims, c=2)
    logits = torch.randn(2, 1, *pred.shape[2:])
    att = DifficultyAwarePixelLoss(beta=0.0, p=p)(pred, target, fake_outputs={"local": logits})
    plain = PixelPowerLoss(p)(pred, target)
    reference = torch.nn.L1Loss() if p == 1 else torch.nn.MSELoss()
    torch.testing.assert_close(att, plain)
    torch.testing.assert_close(plain, reference(pred, target))


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_confidence_carries_no_gradient_into_the_pixel_term(spatial_dims):
    pred0, target = _pair(spatial_dims, size=6)
    d2 = LocalDiscriminator(spatial_dims, channels=(2, 2, 2))
    pred = pred0.clone().requires_grad_(True)
    logits = d2(pred)  # depends on pred: a non-detached M would add a path through D2
    term = DifficultyAwarePixelLoss(beta=2.0, p=1)
    term(pred, target, fake_outputs={"local": logits}).backward()
    weights = (1 - torch.sigmoid(logits.detach())) ** 2
    expected = weights * torch.sign(pred0 - target) / pred0[0].numel() / pred0.shape[0]
    torch.testing.assert_close(pred.grad, expected)
    assert all(p.grad is None for p in d2.parameters())


def test_per_voxel_weighting_differs_from_weighting_the_average():
    # the authors' segmentation code multiplies the averaged loss by the averaged weight: not the same
    pred, target = torch.zeros(1, 1, 2, 1), torch.tensor([[[[1.0], [0.0]]]])
    m = torch.tensor([[[[0.0], [1.0]]]])
    value = DifficultyAwarePixelLoss(beta=1.0, from_logits=False)(pred, target, fake_outputs={"local": m})
    assert float(value) == pytest.approx(0.5)  # mean(F * |e|) = (1 * 1 + 0 * 0) / 2
    assert float(value) != pytest.approx(float(target.abs().mean() * (1 - m).mean()))  # 0.25


def test_reductions_and_bad_inputs():
    pred, target = _pair(2, b=3)
    logits = torch.zeros(3, 1, 4, 4)
    per_sample = DifficultyAwarePixelLoss(reduction="none")(pred, target, fake_outputs={"local": logits})
    assert per_sample.shape == (3,)
    total = DifficultyAwarePixelLoss(reduction="sum")(pred, target, fake_outputs={"local": logits})
    torch.testing.assert_close(total, per_sample.sum())
    with pytest.raises(ValueError, match="'local'"):
        DifficultyAwarePixelLoss()(pred, target, fake_outputs={"global": torch.zeros(3, 1)})
    with pytest.raises(ValueError, match="dense map"):
        DifficultyAwarePixelLoss()(pred, target, fake_outputs={"local": torch.zeros(3, 1)})
    for kwargs, name in (({"beta": -1.0}, "beta"), ({"p": 3}, "p"), ({"discriminator": ""}, "discriminator")):
        with pytest.raises(ValueError, match=name):
            DifficultyAwarePixelLoss(**kwargs)
    with pytest.raises(ValueError, match="lambda1"):
        dual_discriminator_generator_loss(lambda1=-1.0)


@pytest.mark.parametrize("spatial_dims", DIMS)
def test_total_generator_loss_eq7(spatial_dims):
    pred, target = _pair(spatial_dims)
    local_logits = torch.randn(2, 1, *pred.shape[2:])
    global_scores = torch.tensor([[2.0], [-1.0]])
    loss = dual_discriminator_generator_loss(lambda1=0.1, lambda2=0.3, beta=2.0, p=1)
    assert isinstance(loss, PairedGeneratorLoss)
    terms = loss(pred, target, {"global": global_scores, "local": local_logits}, None)
    assert set(terms) == {"g_pixel", "g_adv_global", "g_adv_local"}
    att = DifficultyAwarePixelLoss(beta=2.0)(pred, target, fake_outputs={"local": local_logits})
    torch.testing.assert_close(terms["g_pixel"], att)
    assert float(terms["g_adv_global"]) == pytest.approx(-0.1 * 0.5)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(local_logits, torch.ones_like(local_logits))
    assert float(terms["g_adv_local"]) == pytest.approx(0.3 * float(bce), rel=1e-5)
    # without the local discriminator the generator loss has no local term
    plain = dual_discriminator_generator_loss(attention=False)
    assert set(plain(pred, target, {}, None)) == {"g_pixel"}
