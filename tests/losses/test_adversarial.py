from __future__ import annotations

import math

import pytest
import torch

from common.losses.adversarial import AdversarialLoss, DiscriminatorLoss, GradientPenalty, PairedGeneratorLoss
from common.losses.protocol import GeneratorTerm


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


@pytest.mark.parametrize("shape", [(2, 1, 4, 4), (2, 1, 2, 3, 4)])
def test_wasserstein_critic_and_generator_signs(shape):
    """Catches a flipped sign of the critic's fake term: L_D = w * (-mean D(real) + mean D(fake))."""
    real, fake = torch.full(shape, 2.0), torch.full(shape, -1.0)
    assert AdversarialLoss("wasserstein")(3 * torch.ones(shape), False).item() == pytest.approx(3.0)
    assert DiscriminatorLoss("wasserstein", 1.0)(real, fake).item() == pytest.approx(-2.0 + -1.0)
    assert DiscriminatorLoss("wasserstein", 0.5)(real, fake).item() == pytest.approx(0.5 * (-2.0 - 1.0))
    assert DiscriminatorLoss("wasserstein", 1.0)(fake, real).item() == pytest.approx(1.0 + 2.0)
    # the generator maximises D on its images: -mean(D)
    logits = torch.arange(float(math.prod(shape))).reshape(shape) - 5.0
    g = AdversarialLoss("wasserstein")(logits, True, for_discriminator=False)
    assert g.item() == pytest.approx(-logits.mean().item())
    terms = PairedGeneratorLoss({}, {}, {"critic": 2.0}, "wasserstein")(fake, real, {"critic": logits})
    assert terms["g_adv_critic"].item() == pytest.approx(-2.0 * logits.mean().item())


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


@pytest.mark.parametrize("spatial", [(3, 4), (2, 3, 4)])
def test_gradient_penalty_gradient_reaches_critic_parameters(spatial):
    """Catches a penalty computed without create_graph: for f(x) = w.x + c, GP = (||w|| - 1)^2 and
    dGP/dw = 2 (||w|| - 1) w / ||w||, which must reach the critic's parameters (and match finite differences)."""
    torch.manual_seed(1)
    n = math.prod(spatial)
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n, 1)).double()
    real, fake = torch.randn(3, 1, *spatial, dtype=torch.float64), torch.randn(3, 1, *spatial, dtype=torch.float64)
    loss = DiscriminatorLoss("wasserstein", 1.0, 10.0)
    loss.penalty(critic, real, fake).backward()
    w = critic[1].weight.detach()
    grad = critic[1].weight.grad
    analytic = 10.0 * 2.0 * (w.norm() - 1.0) * w / w.norm()
    assert grad is not None and grad.abs().max() > 1e-3
    assert torch.allclose(grad, analytic, rtol=1e-6, atol=1e-9)
    bias_grad = critic[1].bias.grad
    assert bias_grad is None or torch.equal(bias_grad, torch.zeros_like(bias_grad))  # GP does not depend on c
    h = 1e-6
    for idx in [0, n // 2, n - 1]:
        values = []
        for delta in (h, -2 * h, h):
            with torch.no_grad():
                critic[1].weight[0, idx] += delta
            values.append(loss.penalty(critic, real, fake).item())
        up, down = values[0], values[1]
        assert (up - down) / (2 * h) == pytest.approx(grad[0, idx].item(), rel=1e-4, abs=1e-7)


def test_generator_loss_terms():
    pred, target = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    modes = {"a": "lsgan", "b": "bce"}
    loss = PairedGeneratorLoss({"l1": torch.nn.L1Loss()}, {"l1": 100.0}, {"a": 2.0, "b": 0.0}, modes)
    terms = loss(pred, target, {"a": torch.zeros(2, 1), "b": torch.zeros(2, 1)})
    assert set(terms) == {"g_l1", "g_adv_a"}
    assert terms["g_l1"].item() == pytest.approx(100.0)
    assert terms["g_adv_a"].item() == pytest.approx(2.0)


@pytest.mark.parametrize("shape", [(2, 1, 4, 4), (2, 1, 2, 3, 4)])
def test_two_pixel_terms_are_both_present_and_weighted(shape):
    pred, target = torch.zeros(shape), torch.full(shape, 2.0)
    loss = PairedGeneratorLoss({"l1": torch.nn.L1Loss(), "l2": torch.nn.MSELoss()}, {"l1": 3.0, "l2": 0.5})
    terms = loss(pred, target, {})
    assert set(terms) == {"g_l1", "g_l2"}
    assert terms["g_l1"].item() == pytest.approx(3.0 * 2.0)
    assert terms["g_l2"].item() == pytest.approx(0.5 * 4.0)


class _RecordingTerm(GeneratorTerm):
    """Mean |pred - batch['reference']|, scaled by the mean of D_patch's output; records what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict = {}

    def forward(self, pred, target, *, fake_outputs, batch=None):
        self.seen = {"fake_outputs": fake_outputs, "batch": batch}
        return (pred - batch["reference"]).abs().mean() * fake_outputs["patch"].mean()


def test_generator_term_receives_batch_and_fake_outputs():
    pred, target = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    term = _RecordingTerm()
    batch = {"reference": torch.full((2, 1, 4, 4), 3.0)}
    fake = {"patch": torch.full((2, 1, 2, 2), 0.5)}
    loss = PairedGeneratorLoss({"ref": term, "l1": torch.nn.L1Loss()}, {"ref": 2.0, "l1": 1.0}, {"patch": 0.0})
    terms = loss(pred, target, fake, batch)
    assert term.seen["batch"] is batch and term.seen["fake_outputs"]["patch"] is fake["patch"]
    assert set(terms) == {"g_ref", "g_l1"}
    assert terms["g_ref"].item() == pytest.approx(2.0 * 3.0 * 0.5)
    assert terms["g_l1"].item() == pytest.approx(1.0)


def test_zero_weight_drops_a_term_without_computing_it():
    calls = []

    class Counting(torch.nn.L1Loss):
        def forward(self, pred, target):
            calls.append(1)
            return super().forward(pred, target)

    loss = PairedGeneratorLoss({"l1": torch.nn.L1Loss(), "extra": Counting()}, {"l1": 1.0, "extra": 0.0})
    terms = loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), {})
    assert set(terms) == {"g_l1"} and calls == []


def test_argument_validation():
    with pytest.raises(ValueError, match="mode"):
        AdversarialLoss("foo")
    with pytest.raises(ValueError, match="gradient_penalty_weight"):
        DiscriminatorLoss("wasserstein", 1.0, -1.0)
    with pytest.raises(ValueError, match="pixel_weight"):
        PairedGeneratorLoss({"l1": torch.nn.L1Loss()}, {"l1": -1.0})
    with pytest.raises(ValueError, match="adversarial_modes"):
        PairedGeneratorLoss({"l1": torch.nn.L1Loss()}, {"l1": 1.0}, adversarial_modes="bad")
    with pytest.raises(ValueError, match="pixel_weights"):
        PairedGeneratorLoss({"l1": torch.nn.L1Loss(), "ssim": torch.nn.MSELoss()}, {"l1": 1.0})
    with pytest.raises(ValueError, match="pixel_weights"):
        PairedGeneratorLoss({"l1": torch.nn.L1Loss()}, {"l2": 1.0})
