from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from common.networks.amcgan import AMCGANGenerator, ResnetBlock, ResnetEncoderDecoder
from common.networks.amcgan_blocks import FeatureAttention, MultiScaleFeatureCapture

SHAPES = {2: [(16, 20), (36, 44)], 3: [(8, 12, 16)]}
TINY = {"channels": 4, "num_res_blocks": 2, "msfc_channels": 2}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pix2pix_resnet_param_count(c_in: int, c_out: int, w: int, blocks: int, k: int) -> int:
    """Closed-form parameter count of pix2pix's ResNet generator with batch norm (no conv bias before BN)."""
    k7, k3 = 7**k, 3**k
    stem = c_in * w * k7 + 2 * w
    down = (w * 2 * w * k3 + 4 * w) + (2 * w * 4 * w * k3 + 8 * w)
    res = blocks * 2 * (4 * w * 4 * w * k3 + 8 * w)
    up = (4 * w * 2 * w * k3 + 4 * w) + (2 * w * w * k3 + 2 * w)
    head = w * c_out * k7 + c_out
    return stem + down + res + up + head


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("use_msfc,use_fam", [(False, False), (True, False), (True, True), (False, True)])
def test_generator_output_shape(dims, use_msfc, use_fam):
    torch.manual_seed(0)
    net = AMCGANGenerator(dims, 2, 3, use_msfc=use_msfc, use_fam=use_fam, **TINY)
    for shape in SHAPES[dims]:
        y = net(torch.randn(2, 2, *shape))
        assert y.shape == (2, 3, *shape)
        assert y.abs().max() <= 1.0  # tanh output


def test_output_activation_is_applied_last():
    torch.manual_seed(0)
    linear = AMCGANGenerator(2, 1, 1, out_activation=None, **TINY).eval()
    bounded = AMCGANGenerator(2, 1, 1, out_activation="tanh", **TINY).eval()
    bounded.load_state_dict(linear.state_dict())
    x = 10 * torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(bounded(x), torch.tanh(linear(x)))
    assert isinstance(linear.encoder_decoder.decoder[-1], torch.nn.Identity)


def test_pix2pix_configuration_parameter_count_matches_pix2pix_resnet_6blocks():
    # pix2pix's resnet_6blocks (ngf=64, 3 -> 3 channels, batch norm) has 7,841,411 parameters.
    net = AMCGANGenerator(2, 3, 3, use_msfc=False, use_fam=False)
    assert n_params(net) == 7_841_411 == pix2pix_resnet_param_count(3, 3, 64, 6, 2)


@pytest.mark.parametrize("dims", [2, 3])
def test_msfc_and_fam_parameter_counts(dims):
    c_in, c_out, w, m = 2, 1, 4, 3
    kw = {"channels": w, "num_res_blocks": 2, "msfc_channels": m}
    pix2pix = AMCGANGenerator(dims, c_in, c_out, use_msfc=False, use_fam=False, **kw)
    multi = AMCGANGenerator(dims, c_in, c_out, use_msfc=True, use_fam=False, **kw)
    amcgan = AMCGANGenerator(dims, c_in, c_out, use_msfc=True, use_fam=True, **kw)
    fam_only = AMCGANGenerator(dims, c_in, c_out, use_msfc=False, use_fam=True, **kw)
    assert n_params(pix2pix) == pix2pix_resnet_param_count(c_in, c_out, w, 2, dims)
    # MSFC: four bias-free convs (1, 3, 5, 3 kernels) + BN affine; the 7x7 stem then sees 4*m channels.
    msfc = sum(c_in * m * k**dims + 2 * m for k in (1, 3, 5, 3))
    stem_growth = (4 * m - c_in) * w * 7**dims
    assert n_params(multi) - n_params(pix2pix) == msfc + stem_growth
    assert n_params(amcgan) - n_params(multi) == 1
    assert n_params(fam_only) - n_params(pix2pix) == 1
    assert [name for name, _ in amcgan.fam.named_parameters()] == ["beta"]


def test_bias_follows_pix2pix_norm_convention():
    bn = ResnetEncoderDecoder(2, 1, 1, channels=4, num_res_blocks=1, norm="batch")
    inorm = ResnetEncoderDecoder(2, 1, 1, channels=4, num_res_blocks=1, norm="instance")
    assert bn.encoder[0].conv.bias is None and bn.encoder[1].conv.bias is None
    assert inorm.encoder[0].conv.bias is not None and inorm.encoder[1].conv.bias is not None
    assert bn.decoder[2].conv.bias is not None  # final 7x7 conv always has a bias
    assert bn.encoder[0].conv.padding_mode == "reflect" and bn.encoder[1].conv.padding_mode == "zeros"


@pytest.mark.parametrize("dims", [2, 3])
def test_fam_is_identity_at_init(dims):
    torch.manual_seed(0)
    fam = FeatureAttention(dims)
    z = torch.randn(2, 5, *SHAPES[dims][0])
    assert fam.beta.item() == 0.0
    assert torch.equal(fam(z), z)


@pytest.mark.parametrize("dims", [2, 3])
def test_fam_matches_paper_equations(dims):
    rng = np.random.default_rng(0)
    shape = (2, 3, 4) if dims == 3 else (3, 4)
    z = 0.3 * rng.standard_normal((2, 4, *shape))
    beta = 0.7
    # Eq. (1): X_ij = exp(Z_i . Z_j) / sum_i exp(Z_i . Z_j); Eq. (2): A_j = beta * sum_i X_ij Z_i + Z_j
    expected = np.empty_like(z)
    for b in range(z.shape[0]):
        flat = z[b].reshape(z.shape[1], -1)
        c = flat.shape[0]
        e = np.array([[flat[i] @ flat[j] for j in range(c)] for i in range(c)])
        x = np.exp(e) / np.exp(e).sum(axis=0, keepdims=True)
        for j in range(c):
            expected[b, j] = (beta * sum(x[i, j] * flat[i] for i in range(c)) + flat[j]).reshape(shape)
    fam = FeatureAttention(dims).double()
    with torch.no_grad():
        fam.beta.fill_(beta)
    out = fam(torch.from_numpy(z))
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_fam_saturated_energy_stays_finite():
    fam = FeatureAttention(2)
    with torch.no_grad():
        fam.beta.fill_(1.0)
    z = 100 * torch.randn(1, 3, 16, 16)
    assert torch.isfinite(fam(z)).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_gradient_reaches_beta(dims):
    torch.manual_seed(0)
    net = AMCGANGenerator(dims, 1, 1, **TINY)
    x = torch.randn(2, 1, *SHAPES[dims][0])
    loss = (net(x) - torch.rand_like(x)).abs().mean()
    loss.backward()
    assert net.fam.beta.grad is not None and net.fam.beta.grad.abs().item() > 0
    first_branch = net.msfc.branches[0].conv.weight.grad
    assert first_branch is not None and first_branch.abs().sum() > 0


@pytest.mark.parametrize("dims", [2, 3])
def test_msfc_branch_receptive_fields(dims):
    msfc = MultiScaleFeatureCapture(dims, 1, branch_channels=2, norm=None, act=None)
    assert msfc.out_channels == 8
    with torch.no_grad():
        for branch in msfc.branches:
            branch.conv.weight.fill_(1.0)
            branch.conv.bias.zero_()
    impulse = torch.zeros(1, 1, *([11] * dims))
    impulse[(0, 0, *([5] * dims))] = 1.0
    out = msfc(impulse)
    assert out.shape == (1, 8, *([11] * dims))
    support = [int((out[0, c] != 0).sum()) for c in range(8)]
    # 1x1 -> 1, 3x3 -> 3^d, 5x5 -> 5^d, 3x3 dilation 2 -> 3^d taps spread over a 5^d window
    assert support == [1, 1, 3**dims, 3**dims, 5**dims, 5**dims, 3**dims, 3**dims]
    dilated = (out[0, 6] != 0).nonzero()
    assert int(dilated.max() - dilated.min()) == 4


@pytest.mark.parametrize("dims", [2, 3])
def test_resnet_block_has_identity_skip(dims):
    torch.manual_seed(0)
    block = ResnetBlock(dims, 4, norm="batch", dropout=0.5)
    with torch.no_grad():
        block.block[1].adn.N.weight.zero_()
        block.block[1].adn.N.bias.zero_()
    x = torch.randn(2, 4, *SHAPES[dims][0])
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("dims", [2, 3])
def test_invalid_spatial_size_raises(dims):
    net = AMCGANGenerator(dims, 1, 1, **TINY)
    bad = (18, 20) if dims == 2 else (8, 12, 14)
    with pytest.raises(ValueError, match=r"multiple of 4.*got (18|14)"):
        net(torch.randn(1, 1, *bad))
    # reflection padding needs >= 8 per axis; zero padding accepts 4
    with pytest.raises(ValueError, match="at least 8"):
        net(torch.randn(2, 1, *([4] * dims)))
    zeros = AMCGANGenerator(dims, 1, 1, padding_mode="zeros", **TINY)
    assert zeros(torch.randn(2, 1, *([4] * dims))).shape == (2, 1, *([4] * dims))
    with pytest.raises(ValueError, match="4-D input|5-D input"):
        net(torch.randn(1, *([8] * dims)))


@pytest.mark.parametrize(
    "kwargs,arg",
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"in_channels": 0}, "in_channels"),
        ({"dropout": 1.0}, "dropout"),
        ({"padding_mode": "circular"}, "padding_mode"),
        ({"msfc_channels": 0}, "branch_channels"),
        ({"msfc_kernel_sizes": (1, 4, 5, 3)}, "kernel_sizes"),
        ({"msfc_dilations": (1, 1, 2)}, "dilations"),
        ({"num_res_blocks": -1}, "num_res_blocks"),
    ],
)
def test_invalid_arguments(kwargs, arg):
    base = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, **TINY}
    with pytest.raises(ValueError, match=arg):
        AMCGANGenerator(**{**base, **kwargs})


@pytest.mark.parametrize("dims", [2, 3])
def test_dropout_train_vs_eval(dims):
    torch.manual_seed(0)
    x = torch.randn(2, 1, *SHAPES[dims][0])
    net = AMCGANGenerator(dims, 1, 1, dropout=0.5, **TINY)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))
    no_dropout = AMCGANGenerator(dims, 1, 1, dropout=0.0, **TINY).train()
    assert torch.equal(no_dropout(x), no_dropout(x))
    assert not any(isinstance(m, torch.nn.Dropout) for m in no_dropout.modules())


@pytest.mark.parametrize("use_msfc,use_fam", [(False, False), (True, False), (True, True)])
def test_torchscript_matches_eager(use_msfc, use_fam):
    torch.manual_seed(0)
    net = AMCGANGenerator(2, 1, 1, use_msfc=use_msfc, use_fam=use_fam, **TINY).eval()
    if use_fam:
        with torch.no_grad():
            net.fam.beta.fill_(0.5)  # exercise the attention path
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    x = torch.randn(2, 1, 16, 20)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=1e-6)
    with pytest.raises(Exception, match="multiple of 4"):
        scripted(torch.randn(1, 1, 18, 20))
