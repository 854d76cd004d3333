"""Global critic and local FCN discriminator of the dual-discriminator GAN (Xiao and Nie), and the FCN baseline."""

from __future__ import annotations

import pytest
import torch

from common.networks.dual_discriminator import ConvNormPoolStage, GlobalCritic, LocalDiscriminator
from common.networks.synthesis_fcn import SynthesisFCN


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("size", [1, 5, 16, 23])
def test_critic_gives_one_score_per_image_for_any_size(spatial_dims, size):
    net = GlobalCritic(
        spatial_dims, in_channels=2, channels=(4, 8, 8), conv_channels=8, fc_channels=(16, 8), pooled_size=2
    )
    out = net(torch.randn(3, 2, *([size] * spatial_dims)))
    assert out.shape == (3, 1) and torch.isfinite(out).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_critic_has_the_papers_layers(spatial_dims):
    net = GlobalCritic(spatial_dims)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert all(c.kernel_size == (3,) * spatial_dims for c in convs)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(bns) == 4  # BN after every convolution (the paper's default)
    pools = [m for m in net.modules() if isinstance(m, (torch.nn.MaxPool2d, torch.nn.MaxPool3d))]
    assert len(pools) == 3
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [lin.out_features for lin in linears] == [512, 128, 1]
    assert linears[0].in_features == 256 * 4**spatial_dims
    relus = [m for m in net.head if isinstance(m, torch.nn.ReLU)]
    assert len(relus) == 2 and not isinstance(net.head[-1], torch.nn.ReLU)  # logits out


def test_critic_norm_is_configurable():
    net = GlobalCritic(2, norm=None, channels=(4, 4, 4), conv_channels=4, fc_channels=(8,))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    inst = GlobalCritic(2, norm="instance", channels=(4, 4, 4), conv_channels=4, fc_channels=(8,))
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in inst.modules()) == 4
    assert [m.out_features for m in inst.head if isinstance(m, torch.nn.Linear)] == [8, 1]


def test_stage_halves_rounding_up():
    stage = ConvNormPoolStage(3, 1, 4)
    assert stage(torch.randn(2, 1, 5, 4, 1)).shape == (2, 4, 3, 2, 1)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("size", [1, 7, 16, 21])
def test_local_discriminator_dense_map_on_input_grid(spatial_dims, size):
    net = LocalDiscriminator(spatial_dims, in_channels=1, channels=(4, 8, 8))
    shape = [size + i for i in range(spatial_dims)]  # anisotropic shapes too
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        logits = net(x)
        conf = net.confidence(x)
    assert logits.shape == (2, 1, *shape)
    assert conf.shape == logits.shape and float(conf.min()) >= 0.0 and float(conf.max()) <= 1.0
    torch.testing.assert_close(conf, torch.sigmoid(logits))


def test_local_discriminator_has_three_downsamplings():
    net = LocalDiscriminator(3)
    strides = [m.stride for m in net.down.modules() if isinstance(m, torch.nn.Conv3d)]
    assert strides == [(2, 2, 2)] * 3 and net.num_downsamplings == 3
    x = torch.randn(1, 1, 16, 16, 16)
    assert net.out(net.down(x)).shape[2:] == (2, 2, 2)  # 16 / 2^3 before interpolation


@pytest.mark.parametrize(
    "kwargs", [{"spatial_dims": 1}, {"spatial_dims": 2, "channels": ()}, {"spatial_dims": 2, "in_channels": 0}]
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        GlobalCritic(**kwargs)
    with pytest.raises(ValueError):
        LocalDiscriminator(**kwargs)


def test_bad_specific_arguments_raise():
    with pytest.raises(ValueError, match="pooled_size"):
        GlobalCritic(2, pooled_size=0)
    with pytest.raises(ValueError, match="kernel_size"):
        LocalDiscriminator(2, kernel_size=4)
    with pytest.raises(ValueError, match="channels"):
        SynthesisFCN(2, 1, 1, channels=(4,))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_fcn_baseline_shape_and_no_skips(spatial_dims):
    net = SynthesisFCN(spatial_dims, 2, 1, channels=(4, 8, 16))
    x = torch.randn(2, 2, *([8] * spatial_dims))
    assert net(x).shape == (2, 1, *([8] * spatial_dims)) and net.divisor == 4
    assert not any(isinstance(m, torch.nn.ModuleList) for m in net.modules())  # a plain chain, no skip paths
    scripted = torch.jit.script(net.eval())
    torch.testing.assert_close(scripted(x), net(x))
