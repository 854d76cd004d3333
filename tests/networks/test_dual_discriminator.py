"""The shared critic (Xiao and Nie D1, Nie et al. 2018 D), the local FCN discriminator and the FCN baseline."""

from __future__ import annotations

import pytest
import torch

from common.networks.dual_discriminator import ConvNormPoolStage, ConvPoolCritic, LocalDiscriminator
from common.networks.synthesis_fcn import SynthesisFCN

PAPER_LAYERS = {"convs": [32, 64, 128, 256], "linears": [512, 128, 1]}


def _layers(net: torch.nn.Module) -> dict:
    """The critic's layer list in build order: conv widths and kernels, norms, pools, linear widths, activations."""
    convs = [m for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    return {
        "convs": [c.out_channels for c in convs],
        "kernels": {c.kernel_size for c in convs},
        "bns": sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()),
        "maxpools": sum(isinstance(m, (torch.nn.MaxPool2d, torch.nn.MaxPool3d)) for m in net.modules()),
        "linears": [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)],
        "fc_in": next(m.in_features for m in net.modules() if isinstance(m, torch.nn.Linear)),
        "relus": sum(isinstance(m, torch.nn.ReLU) for m in net.modules()),
    }


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("size", [1, 5, 16, 23])
def test_pooled_critic_gives_one_score_per_image_for_any_size(spatial_dims, size):
    net = ConvPoolCritic(
        spatial_dims, in_channels=2, channels=(4, 8, 8), conv_channels=8, fc_channels=(16, 8), pooled_size=2
    )
    out = net(torch.randn(3, 2, *([size] * spatial_dims)))
    assert out.shape == (3, 1) and torch.isfinite(out).all()
    assert net.input_size is None and net.feature_grid == [2] * spatial_dims


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(
    "kwargs, grid",
    [({"pooled_size": 4}, 4), ({"input_size": 16}, 2), ({"input_size": 32}, 4)],
    ids=["xiao_nie_d1", "nie2018_16", "nie2018_32"],
)
def test_both_papers_build_the_same_layer_list(spatial_dims, kwargs, grid):
    """Xiao and Nie's D1 and Nie et al. 2018's D: 3 x conv-BN-ReLU-maxpool 32/64/128, conv 256, FC 512-128-1."""
    net = ConvPoolCritic(spatial_dims, **kwargs)
    layers = _layers(net)
    assert layers["convs"] == PAPER_LAYERS["convs"] and layers["linears"] == PAPER_LAYERS["linears"]
    assert layers["kernels"] == {(3,) * spatial_dims}
    assert layers["bns"] == 4 and layers["maxpools"] == 3  # BN after every convolution, 3 pooled stages
    assert layers["relus"] == 4 + 2  # after every conv and the two hidden FC layers, none after the output
    assert layers["fc_in"] == 256 * grid**spatial_dims and net.feature_grid == [grid] * spatial_dims
    assert isinstance(list(net.head.children())[-1], torch.nn.Linear)  # logits out
    assert all(c.bias is None for c in net.modules() if isinstance(c, torch.nn.modules.conv._ConvNd))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_fixed_size_critic_checks_its_patch(spatial_dims):
    net = ConvPoolCritic(spatial_dims, channels=(4, 8, 8), conv_channels=8, fc_channels=(16, 8), input_size=16)
    assert net.input_size == [16] * spatial_dims
    assert net(torch.rand(3, 1, *([16] * spatial_dims))).shape == (3, 1)
    with pytest.raises(ValueError, match="expected patches"):
        net(torch.rand(1, 1, *([8] * spatial_dims)))
    aniso = ConvPoolCritic(
        spatial_dims, channels=(4,), conv_channels=4, fc_channels=(), input_size=[8, 4, 6][:spatial_dims]
    )
    assert aniso.feature_grid == [4, 2, 3][:spatial_dims] and aniso(
        torch.rand(2, 1, *[8, 4, 6][:spatial_dims])
    ).shape == (2, 1)


def test_fixed_size_critic_equals_pooled_critic_on_its_patch():
    """On the fixed patch the adaptive pooling is an identity: the two parameterisations are one function."""
    torch.manual_seed(0)
    fixed = ConvPoolCritic(3, channels=(4, 8, 8), conv_channels=8, fc_channels=(16,), input_size=16).eval()
    pooled = ConvPoolCritic(3, channels=(4, 8, 8), conv_channels=8, fc_channels=(16,), pooled_size=2).eval()
    pooled.load_state_dict(fixed.state_dict())
    x = torch.rand(2, 1, 16, 16, 16)
    torch.testing.assert_close(pooled(x), fixed(x))
    torch.testing.assert_close(torch.jit.script(fixed)(x), fixed(x))
    torch.testing.assert_close(torch.jit.script(pooled)(x), pooled(x))


def test_critic_norm_and_act_are_configurable():
    net = ConvPoolCritic(2, norm=None, channels=(4, 4, 4), conv_channels=4, fc_channels=(8,), pooled_size=1)
    assert _layers(net)["bns"] == 0
    assert all(c.bias is not None for c in net.modules() if isinstance(c, torch.nn.Conv2d))
    inst = ConvPoolCritic(2, norm="instance", channels=(4, 4, 4), conv_channels=4, fc_channels=(8,), pooled_size=1)
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in inst.modules()) == 4
    assert _layers(inst)["linears"] == [8, 1]
    leaky = ConvPoolCritic(
        2, act=("leakyrelu", {"negative_slope": 0.2}), channels=(4,), conv_channels=4, fc_channels=(8,), pooled_size=1
    )
    assert sum(isinstance(m, torch.nn.LeakyReLU) for m in leaky.modules()) == 3 and _layers(leaky)["relus"] == 0


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
        ConvPoolCritic(**kwargs, pooled_size=2)
    with pytest.raises(ValueError):
        LocalDiscriminator(**kwargs)


def test_bad_specific_arguments_raise():
    with pytest.raises(ValueError, match="pooled_size"):
        ConvPoolCritic(2, pooled_size=0)
    with pytest.raises(ValueError, match="exactly one of pooled_size"):
        ConvPoolCritic(2)
    with pytest.raises(ValueError, match="exactly one of pooled_size"):
        ConvPoolCritic(2, pooled_size=2, input_size=16)
    with pytest.raises(ValueError, match="multiple of 8"):
        ConvPoolCritic(3, input_size=12)
    with pytest.raises(ValueError, match="kernel_size"):
        ConvPoolCritic(2, kernel_size=2, pooled_size=1)
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
