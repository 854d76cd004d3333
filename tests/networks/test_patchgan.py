from __future__ import annotations

import pytest
import torch

from common.networks.patchgan import PatchDiscriminator


def patch_size(size: int, num_layers: int) -> int:
    """Output length of the 4x4/padding-1 convolution stack (strides 2 ... 2, 1, 1) along one axis."""
    for stride in [2] * (num_layers - 2) + [1, 1]:
        size = (size + 2 - 4) // stride + 1
    return size


@pytest.mark.parametrize(
    "dims,shape,expected",
    [(2, (64, 80), (2, 3)), (2, (256, 256), (14, 14)), (3, (48, 48, 64), (1, 1, 2))],
)
def test_conditional_patch_map_shape(dims, shape, expected):
    torch.manual_seed(0)
    net = PatchDiscriminator(dims, in_channels=2, channels=2)
    x, y = torch.randn(2, 1, *shape), torch.randn(2, 1, *shape)
    out = net(torch.cat([x, y], dim=1))
    assert out.shape == (2, 1, *expected)
    assert tuple(patch_size(s, 6) for s in shape) == expected


def test_layer_structure_matches_paper():
    net = PatchDiscriminator(2, in_channels=2, channels=64)
    convs = list(net.model.children())
    assert len(convs) == 6
    assert [c.conv.stride[0] for c in convs] == [2, 2, 2, 2, 1, 1]
    assert [c.conv.out_channels for c in convs] == [64, 128, 256, 512, 512, 1]
    assert all(c.conv.kernel_size == (4, 4) for c in convs)
    assert not hasattr(convs[0].adn, "N")  # first conv: no normalisation
    for c in convs[1:5]:
        assert isinstance(c.adn.N, torch.nn.InstanceNorm2d)
    for c in convs[:5]:
        assert isinstance(c.adn.A, torch.nn.LeakyReLU) and c.adn.A.negative_slope == 0.2
    assert not hasattr(convs[5], "adn")  # last conv outputs raw logits


@pytest.mark.parametrize("num_layers,rf,min_size", [(7, 286, 96), (6, 142, 48), (5, 70, 24), (3, 16, 6)])
def test_receptive_field_and_min_size(num_layers, rf, min_size):
    net = PatchDiscriminator(2, 1, channels=2, num_layers=num_layers)
    assert net.receptive_field == rf
    assert net.min_size == min_size
    assert patch_size(min_size, num_layers) == 1 and patch_size(min_size - 1, num_layers) == 0


@pytest.mark.parametrize("num_layers,size", [(6, 192), (5, 128)])
def test_receptive_field_by_gradient(num_layers, size):
    torch.manual_seed(0)
    net = PatchDiscriminator(2, 1, channels=2, num_layers=num_layers, norm=None)  # IN would couple all pixels
    x = torch.randn(1, 1, size, size, requires_grad=True)
    out = net(x)
    centre = out.shape[-1] // 2
    out[0, 0, centre, centre].backward()
    rows = (x.grad[0, 0].abs().sum(dim=1) > 0).nonzero().flatten()
    assert rows.min() > 0 and rows.max() < size - 1  # not clipped by the border
    assert int(rows.max() - rows.min() + 1) == net.receptive_field


def test_too_small_input_raises():
    net = PatchDiscriminator(3, 2, channels=2)
    with pytest.raises(ValueError, match="at least 48"):
        net(torch.randn(1, 2, 48, 40, 48))
    with pytest.raises(ValueError, match="5-D input"):
        net(torch.randn(2, 48, 48, 48))


@pytest.mark.parametrize(
    "kwargs,arg",
    [({"spatial_dims": 4}, "spatial_dims"), ({"num_layers": 2}, "num_layers"), ({"channels": 0}, "channels")],
)
def test_invalid_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        PatchDiscriminator(**{"spatial_dims": 2, "in_channels": 2, **kwargs})


def test_bias_dropped_only_before_batch_norm():
    bn = PatchDiscriminator(2, 2, channels=2, norm="batch")
    inorm = PatchDiscriminator(2, 2, channels=2, norm="instance")
    assert [c.conv.bias is not None for c in bn.model] == [True, False, False, False, False, True]
    assert all(c.conv.bias is not None for c in inorm.model)


def test_torchscript_matches_eager():
    torch.manual_seed(0)
    net = PatchDiscriminator(2, 2, channels=2).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(2, 2, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=1e-6)
