"""Tests for common.networks.hrfcn (Chen et al., IEEE TBME 2023 HR-FCN and its ablations Model-A..D)."""

from __future__ import annotations

import io

import pytest
import torch

from common.networks.hrfcn import HRFCN, FCNModule

TINY = {"stem_channels": 4, "channels": (4, 8, 16), "num_res_blocks": 1}
S, (C0, C1, C2), N = 4, (4, 8, 16), 1

MODELS = {
    "full": {},
    "A": {"separate_stems": False},
    "B": {"branches": ("full",)},
    "C": {"branches": ("half", "quarter")},
    "D": {"repeated_fusion": False},
}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- independent parameter oracle (conv weights + bias, batch norm weight + bias) ----
def conv(cin: int, cout: int, k: int, d: int) -> int:
    return k**d * cin * cout + cout


def conv_bn(cin: int, cout: int, d: int) -> int:
    return conv(cin, cout, 3, d) + 2 * cout


def resblock(cin: int, cout: int, d: int) -> int:
    return conv_bn(cin, cout, d) + conv_bn(cout, cout, d) + (conv(cin, cout, 1, d) if cin != cout else 0)


def phi(cin: int, cout: int, d: int) -> int:
    return resblock(cin, cout, d) + (N - 1) * resblock(cout, cout, d)


def down(cin: int, cout: int, d: int, steps: int = 1) -> int:
    return conv_bn(cin, cout, d) + (steps - 1) * conv_bn(cout, cout, d)


def head(cin: int, d: int) -> int:
    return resblock(cin, C0, d) + conv(C0, 1, 1, d)


def expected_params(model: str, d: int) -> int:
    """Parameter count written out from the paper's stage formulas, for in_channels=3, out_channels=1."""
    stems = phi(3, S, d) if model == "A" else 3 * phi(1, S, d)
    f11 = S if model == "A" else 3 * S
    if model == "B":  # F21, F31, F41 on the full-resolution branch only
        return stems + phi(f11, C0, d) + 2 * phi(C0, C0, d) + head(C0, d)
    if model == "C":  # no F2/3/4,1
        stage2 = down(f11, C1, d) + phi(C1, C1, d) + down(C1, C2, d)
        stage3 = phi(C1, C1, d) + phi(C2, C2, d)
        stage4 = phi(C1 + C2, C1, d) + down(C1, C2, d) + phi(2 * C2, C2, d)
        return stems + stage2 + stage3 + stage4 + head(C1 + C2, d)
    stage2 = phi(f11, C0, d) + down(f11, C1, d) + phi(C1, C1, d) + down(C1, C2, d)
    if model == "D":  # F3r = phi(F2r), F4r = phi(F3r)
        fusion = 2 * (phi(C0, C0, d) + phi(C1, C1, d) + phi(C2, C2, d))
    else:
        stage3 = phi(C0 + C1, C0, d) + down(C0, C1, d) + phi(2 * C1, C1, d) + down(C0, C2, d, 2) + phi(2 * C2, C2, d)
        stage4 = (
            phi(C0 + C1 + C2, C0, d)
            + down(C0, C1, d) + phi(2 * C1 + C2, C1, d)
            + down(C0, C2, d, 2) + down(C1, C2, d) + phi(3 * C2, C2, d)
        )  # fmt: skip
        fusion = stage3 + stage4
    return stems + stage2 + fusion + head(C0 + C1 + C2, d)


CASES = [  # (spatial_dims, strides, input shape)
    (3, (2, 2, 1), (2, 3, 32, 32, 3)),  # 3-slice slab, in-plane down-sampling only
    (3, 2, (1, 3, 16, 16, 16)),  # cubic patch, isotropic
    (2, 2, (2, 3, 32, 32)),  # the paper's 2D version
]


@pytest.mark.parametrize("spatial_dims,strides,shape", CASES)
def test_output_shape_and_branch_resolutions(spatial_dims, strides, shape):
    torch.manual_seed(0)
    net = HRFCN(spatial_dims, strides=strides, **TINY).eval()
    x = torch.rand(shape)
    with torch.no_grad():
        y = net(x)
        f2 = net.stage2(net.stem(x))
    assert y.shape == (shape[0], 1, *shape[2:])
    assert torch.isfinite(y).all()
    s = (strides,) * spatial_dims if isinstance(strides, int) else strides
    for level, (feat, width) in enumerate(zip(f2, (C0, C1, C2))):
        assert feat.shape == (shape[0], width, *(n // k**level for n, k in zip(shape[2:], s)))


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_parameter_count_matches_paper_formulas(model, spatial_dims):
    net = HRFCN(spatial_dims, **TINY, **MODELS[model])
    assert n_params(net) == expected_params(model, spatial_dims)


def test_ablation_parameter_relations():
    nets = {k: HRFCN(3, strides=(2, 2, 1), **TINY, **v) for k, v in MODELS.items()}
    full = nets["full"]
    # Model-A: one stem with in_channels=3 instead of three single-channel stems
    stem_diff = n_params(full.stem) - n_params(nets["A"].stem)
    assert stem_diff == 3 * n_params(FCNModule(3, 1, S, N)) - n_params(FCNModule(3, 3, S, N)) > 0
    for part in ("stage3", "stage4", "fuse", "head"):
        assert n_params(getattr(full, part)) == n_params(getattr(nets["A"], part))
    # Model-B: no half / quarter branch, a single branch in every stage
    assert nets["B"].stage2.to_half is None and nets["B"].stage2.to_quarter is None
    assert len(nets["B"].stage3.units) == len(nets["B"].stage4.units) == 1
    # Model-C: no full-resolution branch
    assert nets["C"].stage2.to_full is None and len(nets["C"].stage4.units) == 2

    # Model-D: no down-sampling convs in stages 3-4 (full model: D2 + D4 in stage 3, D2 + D4 + D2 in stage 4)
    def strided(m):
        return sum(1 for x in m.modules() if isinstance(x, torch.nn.Conv3d) and max(x.stride) > 1)

    assert strided(full.stage3) + strided(full.stage4) == 7
    assert strided(nets["D"].stage3) + strided(nets["D"].stage4) == 0
    counts = {k: n_params(v) for k, v in nets.items()}
    assert counts["B"] < counts["C"] < counts["full"] and counts["D"] < counts["full"] and counts["A"] < counts["full"]


def test_separate_stems_are_modality_specific():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16, 3)
    x2 = x.clone()
    x2[:, 1] += 1.0  # change only the T2 channel
    sep = HRFCN(3, strides=(2, 2, 1), **TINY).eval()
    one = HRFCN(3, strides=(2, 2, 1), separate_stems=False, **TINY).eval()
    with torch.no_grad():
        a, b = sep.stem(x), sep.stem(x2)
        assert torch.equal(a[:, :S], b[:, :S]) and torch.equal(a[:, 2 * S :], b[:, 2 * S :])
        assert not torch.allclose(a[:, S : 2 * S], b[:, S : 2 * S])
        assert not torch.allclose(one.stem(x), one.stem(x2))  # Model-A mixes the modalities


@pytest.mark.parametrize("fusion", [True, False])
def test_model_d_has_no_exchange_between_branches(fusion):
    torch.manual_seed(0)
    net = HRFCN(3, strides=(2, 2, 1), repeated_fusion=fusion, **TINY).eval()
    with torch.no_grad():
        f2 = net.stage2(net.stem(torch.rand(1, 3, 16, 16, 3)))
        g2 = [f2[0], torch.rand_like(f2[1]), torch.rand_like(f2[2])]  # perturb the low-resolution branches
        unchanged = torch.equal(net.stage4(net.stage3(f2))[0], net.stage4(net.stage3(g2))[0])
    assert unchanged is (not fusion)


def test_size_validation():
    net = HRFCN(3, strides=(2, 2, 1), **TINY)
    with pytest.raises(ValueError, match=r"\[30, 32, 3\].*divisible.*\[4, 4, 1\]"):
        net(torch.rand(1, 3, 30, 32, 3))
    with pytest.raises(ValueError, match="expects input"):
        net(torch.rand(1, 2, 32, 32, 3))
    # Model-B never down-samples: any size works; Model-C needs the same factor 4 as the full model
    assert HRFCN(3, branches=("full",), **TINY).eval()(torch.rand(1, 3, 6, 5, 3)).shape == (1, 1, 6, 5, 3)
    assert HRFCN(3, branches=("half", "quarter"), strides=(2, 2, 1), **TINY).divisor == [4, 4, 1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 4},
        {"channels": (4, 8)},
        {"strides": (2, 2)},
        {"strides": 0},
        {"num_res_blocks": 0},
        {"branches": ("full", "quarter")},
        {"branches": ("eighth",)},
        {"branches": "full"},
        {"stem_channels": 0},
    ],
)
def test_invalid_arguments(kwargs):
    args = {"spatial_dims": 3, **TINY, **kwargs}
    with pytest.raises(ValueError):
        HRFCN(**args)


@pytest.mark.parametrize("model", ["full", "B", "C"])
def test_torchscript_matches_eager(model):
    torch.manual_seed(0)
    net = HRFCN(3, strides=(2, 2, 1), output_act="relu", **TINY, **MODELS[model]).eval()
    x = torch.rand(1, 3, 16, 16, 3)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    scripted = torch.jit.load(buffer)
    with torch.no_grad():
        y, ys = net(x), scripted(x)
    assert torch.allclose(y, ys, atol=1e-6) and y.min() >= 0


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = HRFCN(2, **TINY)
    net(torch.rand(2, 3, 16, 16)).abs().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(int(g.abs().sum() > 0) for g in grads) == len(grads)
