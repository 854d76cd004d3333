"""Perceptual (VGG19 feature) loss: values, 3D slices, missing weights stop with a message, the 'none' switch."""

from __future__ import annotations

import pytest
import torch

from common.losses.adversarial import PairedGeneratorLoss
from common.losses.perceptual import PerceptualLoss
from tests.networks.test_vgg import _fake_torchvision_file


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    _fake_torchvision_file(path)
    return str(path)


def test_value_is_feature_mse(weights):
    torch.manual_seed(0)
    loss = PerceptualLoss("vgg19", weights, layer="relu2_2", reduction="none")
    a, b = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    assert torch.equal(loss(a, a), torch.zeros(2))
    value = loss(a, b)
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    fa, fb = (
        loss.features((a.expand(-1, 3, -1, -1) - mean) / std),
        loss.features((b.expand(-1, 3, -1, -1) - mean) / std),
    )
    torch.testing.assert_close(value, ((fa - fb) ** 2).flatten(1).mean(1))
    assert value.shape == (2,) and bool((value > 0).all())


def test_input_range_and_3d_slices(weights):
    torch.manual_seed(0)
    loss = PerceptualLoss("vgg19", weights, layer="relu1_2", input_range=(-1.0, 1.0))
    unit = PerceptualLoss("vgg19", weights, layer="relu1_2")
    a, b = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(loss(a * 2 - 1, b * 2 - 1), unit(a, b))
    vol_a, vol_b = torch.rand(1, 1, 8, 8, 3), torch.rand(1, 1, 8, 8, 3)
    slices = torch.stack([unit(vol_a[..., k], vol_b[..., k]) for k in range(3)])
    torch.testing.assert_close(unit(vol_a, vol_b), slices.mean())


def test_gradient_reaches_prediction_only(weights):
    loss = PerceptualLoss("vgg19", weights, layer="relu1_2")
    pred = torch.rand(1, 1, 8, 8, requires_grad=True)
    loss(pred, torch.rand(1, 1, 8, 8)).backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0
    assert all(p.grad is None for p in loss.parameters())
    loss.train()
    assert not loss.features.training


def test_missing_weights_stop_with_where_to_put_them(tmp_path):
    path = tmp_path / "models" / "vgg19.pth"
    with pytest.raises(FileNotFoundError) as info:
        PerceptualLoss("vgg19", str(path))
    assert str(path) in str(info.value) and "vgg19-dcbb9e9d.pth" in str(info.value)
    with pytest.raises(FileNotFoundError, match="not found"):
        PerceptualLoss("vgg19", None)


def test_network_none_is_off_and_dropped_at_weight_zero():
    off = PerceptualLoss("none")
    assert off.features is None
    with pytest.raises(RuntimeError, match="weight 0"):
        off(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))
    g_loss = PairedGeneratorLoss(
        pixel_losses={"mse": torch.nn.MSELoss(), "perceptual": off},
        pixel_weights={"mse": 1.0, "perceptual": 0.0},
        adversarial_weights={"d": 1e-3},
    )
    pred, target = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    terms = g_loss(pred, target, {"d": torch.zeros(2, 1)})
    assert set(terms) == {"g_mse", "g_adv_d"}
    torch.testing.assert_close(terms["g_mse"], torch.mean((pred - target) ** 2))
    with pytest.raises(ValueError, match="network"):
        PerceptualLoss("inception")
