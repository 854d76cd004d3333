"""VGG19 feature stack: torchvision layer indices, loading a torchvision-format state dict, clear errors."""

from __future__ import annotations

import pytest
import torch

from common.networks.vgg import VGG19_LAYERS, VGG19Features

# torchvision.models.vgg19().features: the indices of the convolutions and max-poolings
TORCHVISION_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
TORCHVISION_POOLS = [4, 9, 18, 27, 36]


def _fake_torchvision_file(path, seed=0):
    """A state dict laid out like torchvision's vgg19 (features + classifier), random values."""
    g = torch.Generator().manual_seed(seed)
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    state = {}
    for n, index in enumerate(TORCHVISION_CONVS):
        state[f"features.{index}.weight"] = torch.randn(widths[n + 1], widths[n], 3, 3, generator=g) * 0.05
        state[f"features.{index}.bias"] = torch.randn(widths[n + 1], generator=g) * 0.01
    state["classifier.0.weight"] = torch.zeros(4, 4)  # ignored
    torch.save(state, path)
    return state


def test_layer_names_follow_torchvision_indices():
    assert len(VGG19_LAYERS) == 37
    assert [i for i, n in enumerate(VGG19_LAYERS) if n.startswith("conv")] == TORCHVISION_CONVS
    assert [i for i, n in enumerate(VGG19_LAYERS) if n.startswith("pool")] == TORCHVISION_POOLS
    assert VGG19_LAYERS.index("relu5_4") == 35 and VGG19_LAYERS.index("relu2_2") == 8


def test_loads_torchvision_state_dict(tmp_path):
    path = tmp_path / "vgg19.pth"
    state = _fake_torchvision_file(path)
    net = VGG19Features(2, 3, last_layer="relu3_1", weights_path=str(path))
    assert set(net.state_dict()) == {f"features.{i}.{p}" for i in (0, 2, 5, 7, 10) for p in ("weight", "bias")}
    torch.testing.assert_close(net.features[7].weight, state["features.7.weight"])
    assert not any(p.requires_grad for p in net.parameters())  # a frozen loss network
    y = net(torch.rand(2, 3, 32, 32))
    assert y.shape == (2, 256, 8, 8) and float(y.min()) >= 0.0  # after ReLU, two poolings


@pytest.mark.parametrize("dims", [2, 3])
def test_random_stack_shapes(dims):
    net = VGG19Features(dims, 1, last_layer="pool1")
    x = torch.rand(1, 1, *([8] * dims))
    assert net(x).shape == (1, 64, *([4] * dims))


def test_missing_or_wrong_weights_fail_clearly(tmp_path):
    missing = tmp_path / "nowhere" / "vgg19.pth"
    with pytest.raises(FileNotFoundError, match="vgg19-dcbb9e9d.pth") as info:
        VGG19Features(weights_path=str(missing))
    assert str(missing) in str(info.value)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="not a torchvision VGG19"):
        VGG19Features(weights_path=str(wrong))
    with pytest.raises(ValueError, match="last_layer"):
        VGG19Features(last_layer="relu6_1")
    with pytest.raises(ValueError, match="2D"):
        VGG19Features(3, weights_path=str(wrong))
