"""Tests for common.networks.residual: the residual-output wrapper (source + zero-initialised learned difference)."""

from __future__ import annotations

import functools

import pytest
import torch

from monai.networks.blocks import Convolution
from monai.networks.utils import normal_init

from common.networks.residual import ResidualOutput, zero_residual_heads

SIZES = {2: (12, 10), 3: (8, 6, 4)}


def _inner(dims: int, in_channels: int = 2) -> torch.nn.Module:
    return torch.nn.Sequential(Convolution(dims, in_channels, 4, act="relu"), Convolution(dims, 4, 1, conv_only=True))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("channel", [0, 1])
def test_output_is_the_source_channel_at_init(dims, channel):
    torch.manual_seed(0)
    net = ResidualOutput(dims, _inner(dims), out_channels=1, source_channel=channel)
    x = torch.randn(2, 2, *SIZES[dims])
    y = net(x)
    assert y.shape == (2, 1, *SIZES[dims])
    assert torch.equal(y, x[:, channel : channel + 1])


@pytest.mark.parametrize("dims", [2, 3])
def test_learns_the_difference_and_gradients_reach_the_network(dims):
    torch.manual_seed(1)
    net = ResidualOutput(dims, _inner(dims))
    x = torch.randn(2, 2, *SIZES[dims])
    target = x[:, :1] + 0.5  # a constant enhancement
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for step in range(60):
        opt.zero_grad()
        loss = (net(x) - target).abs().mean()
        loss.backward()
        if step == 1:  # after one update of the last layer the layers before it receive gradients
            assert any(float(p.grad.abs().sum()) > 0 for p in net.network.parameters())
        first = float(loss.detach()) if first is None else first
        opt.step()
    assert first == pytest.approx(0.5, abs=1e-6) and float(loss.detach()) < 0.1


def test_zero_residual_heads_after_normal_init_and_attribute_passthrough():
    torch.manual_seed(2)
    inner = _inner(2)
    inner.divisor = [4, 4]
    net = torch.nn.Sequential(ResidualOutput(2, inner))
    net.apply(functools.partial(normal_init, std=0.02))  # pix2pix init also draws the last layer
    x = torch.randn(1, 2, 8, 8)
    assert not torch.equal(net(x), x[:, :1])
    assert zero_residual_heads(net) == 1 and torch.equal(net(x), x[:, :1])
    assert zero_residual_heads(inner) == 0
    assert net[0].divisor == [4, 4]  # the wrapped network's attributes read through
    with pytest.raises(AttributeError):
        getattr(net[0], "not_an_attribute")  # noqa: B009


def test_state_dict_keys_and_invalid_arguments():
    net = ResidualOutput(3, _inner(3))
    assert {k.split(".")[0] for k in net.state_dict()} == {"network"}
    assert net.last_layer == "1.conv" and float(net.network[1].conv.weight.detach().abs().sum()) == 0.0
    named = ResidualOutput(3, _inner(3), last_layer="0.conv")  # an explicit name wins over the search
    assert (
        float(named.network[0].conv.weight.detach().abs().sum()) == 0.0
        and float(named.network[1].conv.weight.detach().abs().sum()) > 0
    )
    for kwargs, name in (
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"out_channels": 0}, "out_channels"),
        ({"source_channel": -1}, "source_channel"),
        ({"network": "conv"}, "network"),
        ({"out_channels": 3}, "out_channels=3"),
        ({"last_layer": "nope"}, "last_layer"),
    ):
        args = {"spatial_dims": 2, "network": _inner(2), **kwargs}
        with pytest.raises(ValueError, match=name):
            ResidualOutput(**args)
    net = ResidualOutput(2, _inner(2, 1), source_channel=1)
    with pytest.raises(ValueError, match="channels"):
        net(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="4-D"):
        net(torch.randn(1, 1, 8, 8, 8))
