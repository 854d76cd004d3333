"""FA-GAN networks: LFFB, channel / self-attention, fusion, generator scales and switches, SN discriminator."""

from __future__ import annotations

import pytest
import torch

from common.networks.attention import AttentionFusion, ChannelAttention, SelfAttention
from common.networks.fagan import FAGANGenerator, GlobalFeatureFusion, SRGANDiscriminator
from common.networks.lffb import LocalFusionFeatureBlock, SRResidualBlock

DIMS = [2, 3]


def _shape(dims: int, size: int = 6) -> tuple[int, ...]:
    return (size, size + 2) if dims == 2 else (size, size + 2, size - 2)


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_generator_output_is_scale_times_input(dims, scale):
    torch.manual_seed(0)
    size = 4 if dims == 3 else 6
    net = FAGANGenerator(
        dims,
        in_channels=1,
        out_channels=1,
        scale=scale,
        channels=8,
        num_blocks=1,
        ca_reduction=4,
        head_kernel_size=3,
        out_kernel_size=3,
    )
    x = torch.rand(2, 1, *_shape(dims, size))
    y = net(x)
    assert y.shape == (2, 1, *[scale * s for s in x.shape[2:]])
    assert torch.isfinite(y).all()
    ups = [m for m in net.upsample if m.__class__.__name__ == "SubpixelUpsample"]
    assert len(ups) == {2: 1, 4: 2, 8: 3}[scale]


@pytest.mark.parametrize("scale", [1, 3, 6, 16, True])
def test_generator_rejects_other_scales(scale):
    with pytest.raises(ValueError, match="scale must be one of"):
        FAGANGenerator(2, scale=scale)


@pytest.mark.parametrize("dims", DIMS)
def test_self_attention_is_identity_at_init_and_matches_the_equation(dims):
    torch.manual_seed(0)
    sa = SelfAttention(dims, channels=16, key_reduction=8)
    x = torch.randn(2, 16, *_shape(dims, 4))
    assert float(sa.gamma.detach()) == 0.0
    assert torch.equal(sa(x), x)  # y = 0 * o + x
    with torch.no_grad():
        sa.gamma.fill_(0.7)
    beta = sa.attention_map(x)  # (B, N, N), rows are distributions
    n = x[0, 0].numel()
    assert beta.shape == (2, n, n)
    torch.testing.assert_close(beta.sum(-1), torch.ones(2, n))
    h = sa.h(x).flatten(2)  # (B, C, N)
    o = torch.bmm(h, beta.transpose(1, 2)).reshape(x.shape)  # o_j = sum_i beta_ji h(x_i)
    expected = 0.7 * sa.v(o) + x
    torch.testing.assert_close(sa(x), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(sa(x), x)


@pytest.mark.parametrize("dims", DIMS)
def test_channel_attention_rescales_channels_and_can_be_identity(dims):
    torch.manual_seed(0)
    ca = ChannelAttention(dims, channels=8, reduction=4)
    x = torch.rand(3, 8, *_shape(dims, 4)) + 0.5
    ratio = (ca(x) / x).detach()
    flat = ratio.flatten(2)
    torch.testing.assert_close(flat, flat[..., :1].expand_as(flat))  # one scale per sample and channel
    assert float(flat.min()) > 0.0 and float(flat.max()) < 1.0  # sigmoid
    fc2 = [m for m in ca.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # sigmoid(+40) = 1: the excitation passes everything
        fc2.weight.zero_()
        fc2.bias.fill_(40.0)
    torch.testing.assert_close(ca(x), x)
    assert [m.out_features for m in ca.modules() if isinstance(m, torch.nn.Linear)] == [2, 8]  # C / r, C


def test_fusion_modes_known_answers():
    r = torch.tensor([[1.0, 2.0, -1.0]])
    y = torch.tensor([[0.0, 2.0, 3.0]])
    torch.testing.assert_close(AttentionFusion("direct")(r, y), 0.5 * r + 0.5 * y)
    w = torch.sigmoid(r - y)  # e^R / (e^R + e^Y)
    torch.testing.assert_close(AttentionFusion("weighted")(r, y), w * r + (1 - w) * y)
    assert float(AttentionFusion("weighted")(r, y)[0, 1]) == pytest.approx(2.0)  # R = Y -> R
    prior = AttentionFusion("weighted", alpha=0.75, beta=0.25)(r, y)
    w = 0.75 * torch.exp(r) / (0.75 * torch.exp(r) + 0.25 * torch.exp(y))
    torch.testing.assert_close(prior, w * r + (1 - w) * y)
    with pytest.raises(ValueError, match="mode"):
        AttentionFusion("sum")
    with pytest.raises(ValueError, match="alpha"):
        AttentionFusion("direct", alpha=0.0)


@pytest.mark.parametrize("dims", DIMS)
def test_lffb_paths_exchange_and_residual(dims):
    torch.manual_seed(0)
    block = LocalFusionFeatureBlock(dims, channels=4)
    x = torch.randn(2, 4, *_shape(dims, 8))
    assert block(x).shape == x.shape
    kernels = [m.conv.kernel_size[0] for m in block.stage1]
    assert kernels == [3, 5, 7]
    assert all(m.conv.in_channels == 12 for m in [*block.stage2, *block.stage3])  # concatenated paths
    assert [len(block.stage1), len(block.stage2), len(block.stage3)] == [3, 3, 3]  # three convs per path
    with torch.no_grad():  # with the 1x1 fusion zeroed the block is its residual connection
        block.fuse.conv.weight.zero_()
        block.fuse.conv.bias.zero_()
    torch.testing.assert_close(block(x), x)
    with pytest.raises(ValueError, match="kernel_sizes"):
        LocalFusionFeatureBlock(dims, 4, kernel_sizes=(3, 4))


@pytest.mark.parametrize(
    "lffb,ca,sa",
    [
        (False, False, False),
        (False, True, False),
        (False, False, True),
        (True, True, True),
        (True, False, False),
        (True, True, False),
        (True, False, True),
        (False, True, True),
    ],
)
def test_generator_switches(lffb, ca, sa):
    net = FAGANGenerator(2, scale=2, channels=16, num_blocks=2, use_lffb=lffb, use_ca=ca, use_sa=sa)
    block = LocalFusionFeatureBlock if lffb else SRResidualBlock
    assert all(isinstance(b, block) for b in net.body) and len(net.body) == 2
    assert (net.gffb.ca is not None, net.gffb.sa is not None) == (ca, sa)
    x = torch.rand(1, 1, 6, 6)
    assert net(x).shape == (1, 1, 12, 12)
    if not ca and not sa:
        z = torch.randn(1, 16, 4, 4)
        assert torch.equal(net.gffb(z), z)


def test_gffb_with_both_attentions_fuses_them():
    torch.manual_seed(0)
    g = GlobalFeatureFusion(2, 16, fusion="direct")
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(g(x), 0.5 * g.ca(x) + 0.5 * g.sa(x))
    torch.testing.assert_close(g(x), 0.5 * g.ca(x) + 0.5 * x)  # SA = identity at init


def test_generator_torchscript_equals_eager():
    torch.manual_seed(0)
    net = FAGANGenerator(2, scale=4, channels=16, num_blocks=1).eval()
    x = torch.rand(1, 1, 6, 7)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))


def _convs(net):
    return [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear))]


@pytest.mark.parametrize("dims", DIMS)
def test_discriminator_has_spectral_norm_on_every_weight_layer(dims):
    torch.manual_seed(0)
    net = SRGANDiscriminator(dims, in_channels=1, channels=4, num_stages=3, dense_channels=16)
    convs = _convs(net)
    assert len(convs) == 1 + 2 * 3 - 1 + 2  # SRGAN pattern c s1, (s2, s1) ..., s2, then two dense layers
    assert all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    strides = [m.stride[0] for m in convs[:-2]]
    assert strides == [1, 2, 1, 2, 1, 2]
    x = torch.randn(2, 1, *([16] * dims))
    net.train()
    for _ in range(30):  # power iterations run in training-mode forward passes
        net(x)
    assert net(x).shape == (2, 1)
    for m in convs:
        w = m.weight.detach().reshape(m.weight.shape[0], -1)
        assert float(torch.linalg.matrix_norm(w, ord=2)) == pytest.approx(1.0, abs=0.02)


def test_discriminator_without_spectral_norm():
    net = SRGANDiscriminator(2, channels=4, num_stages=2, dense_channels=8, spectral_norm=False)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in _convs(net))
    assert SRGANDiscriminator(2, channels=64).features[-1].conv.out_channels == 512  # SRGAN's widths
    with pytest.raises(ValueError, match="num_stages"):
        SRGANDiscriminator(2, num_stages=0)


@pytest.mark.parametrize("dims", DIMS)
def test_self_attention_chunking_and_key_value_pooling(dims):
    torch.manual_seed(0)
    x = torch.randn(2, 8, *_shape(dims, 4))
    whole = SelfAttention(dims, 8, key_reduction=4, query_chunk=10**6)
    chunked = SelfAttention(dims, 8, key_reduction=4, query_chunk=5)
    chunked.load_state_dict(whole.state_dict())
    with torch.no_grad():
        whole.gamma.fill_(1.0)
        chunked.gamma.fill_(1.0)
    torch.testing.assert_close(chunked(x), whole(x))  # chunks of queries: same result, bounded memory
    pooled = SelfAttention(dims, 8, key_reduction=4, kv_pool=2)
    assert torch.equal(pooled(x), x)  # identity at init too
    n = x[0, 0].numel()
    assert pooled.attention_map(x).shape == (2, n, n // 2**dims)


@pytest.mark.parametrize("dims", DIMS)
def test_interpolation_skip_learns_the_residual_to_interpolation(dims):
    torch.manual_seed(0)
    net = FAGANGenerator(
        dims,
        scale=2,
        channels=4,
        num_blocks=1,
        ca_reduction=2,
        interpolation_skip=True,
        head_kernel_size=3,
        out_kernel_size=3,
    )
    plain = FAGANGenerator(
        dims, scale=2, channels=4, num_blocks=1, ca_reduction=2, head_kernel_size=3, out_kernel_size=3
    )
    plain.load_state_dict(net.state_dict())
    x = torch.rand(1, 1, *_shape(dims, 4))
    mode = "bicubic" if dims == 2 else "trilinear"
    skip = torch.nn.functional.interpolate(x, scale_factor=2.0, mode=mode, align_corners=False)
    torch.testing.assert_close(net(x), plain(x) + skip)
    scripted = torch.jit.script(net.eval())
    torch.testing.assert_close(scripted(x), net(x))
