"""ContextFCNGenerator (32³ -> 16³ FCN) of Nie et al.'s context-aware GAN and its discriminator (the shared critic)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.networks.context_gan import CentreCropResidual, ContextFCNGenerator
from common.networks.dual_discriminator import ConvPoolCritic

TINY = (4, 4, 4, 8, 8, 8, 4, 4)


@pytest.mark.parametrize("dims", [2, 3])
def test_generator_maps_32_to_centre_16(dims):
    net = ContextFCNGenerator(dims, channels=TINY)
    out = net(torch.rand(2, 1, *([32] * dims)))
    assert out.shape == (2, 1, *([16] * dims))
    assert (net.shrink, net.margin, net.min_input_size) == (16, 8, 17)
    # fully convolutional: a larger input gives the larger centre
    assert net(torch.rand(1, 1, *([40] * dims))).shape[2:] == (24,) * dims


def test_generator_paper_layers_and_dilation():
    net = ContextFCNGenerator(3, dilation=2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert [c.out_channels for c in convs] == [32, 32, 32, 64, 64, 64, 32, 32, 1]
    assert [c.kernel_size[0] for c in convs] == [9, 3, 3, 3, 9, 3, 3, 3, 3]
    assert [c.dilation[0] for c in convs] == [1, 2, 2, 2, 1, 2, 2, 2, 1]  # inner 3³ layers only
    assert [c.padding[0] for c in convs] == [0, 2, 2, 2, 0, 2, 2, 2, 1]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(bns) == 8  # the last layer is a plain convolution
    assert net(torch.rand(1, 1, 32, 32, 32)).shape == (1, 1, 16, 16, 16)


@pytest.mark.parametrize("dims", [2, 3])
def test_input_too_small_is_a_clear_error(dims):
    net = ContextFCNGenerator(dims, channels=TINY).eval()
    assert net(torch.rand(1, 1, *([17] * dims))).shape[2:] == (1,) * dims
    with pytest.raises(ValueError, match="too small.*>= 17"):
        net(torch.rand(1, 1, *([16] + [32] * (dims - 1))))
    with pytest.raises(ValueError, match="expected input"):
        net(torch.rand(1, 2, *([32] * dims)))


def test_residual_adds_centre_crop_of_the_chosen_channel():
    torch.manual_seed(0)
    x = torch.rand(2, 2, 32, 32, 32)
    plain = ContextFCNGenerator(3, in_channels=2, channels=TINY).eval()
    res = ContextFCNGenerator(3, in_channels=2, channels=TINY, residual=True, residual_channel=1).eval()
    res.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.allclose(res(x) - plain(x), x[:, 1:2, 8:24, 8:24, 8:24], atol=1e-6)
    assert torch.equal(
        CentreCropResidual(0)(torch.zeros(1, 1, 2, 2), torch.arange(16.0).reshape(1, 1, 4, 4)),
        torch.tensor([[[[5.0, 6.0], [9.0, 10.0]]]]),
    )


def test_generator_validates_arguments():
    with pytest.raises(ValueError, match="kernel_sizes"):
        ContextFCNGenerator(3, kernel_sizes=(9, 3, 3))
    with pytest.raises(ValueError, match="dilation"):
        ContextFCNGenerator(3, dilation=0)
    with pytest.raises(ValueError, match="residual_channel"):
        ContextFCNGenerator(3, residual=True, residual_channel=1)
    with pytest.raises(ValueError, match="spatial_dims"):
        ContextFCNGenerator(1)


@pytest.mark.parametrize("dims", [2, 3])
def test_discriminator_config_gives_one_logit_per_patch(dims):
    """The bundle's discriminator: the shared critic on the generator's fixed 16³ output patch."""
    net = ConvPoolCritic(dims, in_channels=1, input_size=16, channels=(4, 8, 8), conv_channels=8, fc_channels=(16, 8))
    out = net(torch.rand(3, 1, *([16] * dims)))
    assert out.shape == (3, 1)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [16, 8, 1] and linears[0].in_features == 8 * 2**dims
    # logits, not probabilities: no ReLU after the last linear layer, so negative outputs occur
    assert isinstance(list(net.head.children())[-1], torch.nn.Linear)
    with pytest.raises(ValueError, match="expected patches"):
        net(torch.rand(1, 1, *([8] * dims)))


def test_discriminator_paper_widths_and_torchscript():
    net = ConvPoolCritic(3, input_size=16).eval()
    convs = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs == [32, 64, 128, 256]
    assert [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)] == [512, 128, 1]
    x = torch.rand(2, 1, 16, 16, 16)
    assert torch.allclose(torch.jit.script(net)(x), net(x))
    gen = ContextFCNGenerator(3, channels=TINY, residual=True).eval()
    y = torch.rand(1, 1, 32, 32, 32)
    assert torch.allclose(torch.jit.script(gen)(y), gen(y))


def test_auto_context_cascade_feeds_each_stage_the_previous_whole_volume(tmp_path):
    from common.inferers import CenterCropStitchInferer
    from common.networks.context_gan import AutoContextCascade, stage_checkpoints

    kwargs = {"spatial_dims": 3, "channels": TINY, "kernel_sizes": (5, 3, 3, 3, 5, 3, 3, 3, 3)}
    inferer = CenterCropStitchInferer(24, 16, overlap=0.25)
    torch.manual_seed(0)
    stages = [ContextFCNGenerator(in_channels=1 + (k > 0), **kwargs).eval() for k in range(3)]
    paths = stage_checkpoints(str(tmp_path), 3)
    assert paths == [
        str(tmp_path / "model.pt"),
        str(tmp_path / "stage2" / "model.pt"),
        str(tmp_path / "stage3" / "model.pt"),
    ]
    for net, path in zip(stages, paths):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": net.state_dict()} if path.endswith("stage3/model.pt") else net.state_dict(), path)
    cascade = AutoContextCascade(3, 1, inferer, kwargs, weights=paths, return_all=True).eval()
    x = torch.rand(1, 1, 20, 22, 18)
    with torch.no_grad():
        out = cascade(x)
        y1 = inferer(x, stages[0])
        y2 = inferer(torch.cat([x, y1], 1), stages[1])
        y3 = inferer(torch.cat([x, y2], 1), stages[2])
    assert out.shape == (1, 3, 20, 22, 18)
    assert torch.allclose(out, torch.cat([y1, y2, y3], 1), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="stage 2"):
        AutoContextCascade(2, 1, inferer, kwargs, weights=[paths[0], str(tmp_path / "none.pt")])
    with pytest.raises(ValueError, match="in_channels"):
        AutoContextCascade(2, 1, inferer, dict(kwargs, in_channels=2))
