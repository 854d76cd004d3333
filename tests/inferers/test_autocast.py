"""Tests of common.inferers.autocast.AutocastInferer on CPU (bfloat16)."""

from __future__ import annotations

import pytest
import torch

from monai.inferers import SimpleInferer, SliceInferer, SlidingWindowInferer
from monai.networks.blocks import Convolution

from common.inferers.autocast import AutocastInferer


def _net(spatial_dims: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        Convolution(spatial_dims, 2, 4, kernel_size=3, act="relu", norm=None),
        Convolution(spatial_dims, 4, 1, kernel_size=3, conv_only=True),
    ).eval()


def _input(spatial_dims: int) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 2, *([12] * spatial_dims))


def _cases(spatial_dims: int) -> list:
    """(inferer, network, input) triples; SliceInferer applies a 2D network to the slices of a 3D volume."""
    net, x = _net(spatial_dims), _input(spatial_dims)
    cases = [
        (SimpleInferer(), net, x),
        (SlidingWindowInferer(roi_size=[8] * spatial_dims, sw_batch_size=2, overlap=0.5), net, x),
    ]
    if spatial_dims == 3:
        cases.append((SliceInferer(roi_size=(8, 8), spatial_dim=2, sw_batch_size=4, overlap=0.25), _net(2), x))
    return cases


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_disabled_is_the_base_inferer(spatial_dims):
    for base, net, x in _cases(spatial_dims):
        with torch.no_grad():
            expected = base(x, net)
            out = AutocastInferer(base, enabled=False)(x, net)
        assert out.dtype == expected.dtype == torch.float32
        assert torch.equal(out, expected), type(base).__name__


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_enabled_float32_close_and_equal_to_manual_autocast(spatial_dims):
    for base, net, x in _cases(spatial_dims):
        with torch.no_grad():
            fp32 = base(x, net)
            out = AutocastInferer(base, device_type="cpu")(x, net)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                manual = base(x, net)
        assert out.dtype == torch.float32 and out.shape == fp32.shape
        assert torch.equal(out, manual.float()), type(base).__name__
        assert not torch.equal(out, fp32)  # bf16 really changed the numbers ...
        torch.testing.assert_close(out, fp32, rtol=2e-2, atol=2e-2)  # ... only by rounding


def test_conv_runs_in_bfloat16_and_default_dtypes():
    net, x = _net(2), _input(2)
    seen = []
    net[0].register_forward_hook(lambda module, inp, out: seen.append(out.dtype))
    with torch.no_grad():
        AutocastInferer(device_type=torch.device("cpu"))(x, net)
        AutocastInferer(enabled=False)(x, net)
    assert seen == [torch.bfloat16, torch.float32]
    assert AutocastInferer().dtype == torch.bfloat16
    assert AutocastInferer(device_type="cuda").dtype == torch.float16
    assert AutocastInferer(device_type=torch.device("cuda:0")).device_type == "cuda"


class _TupleDictNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = Convolution(2, 1, 1, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> dict:
        y = self.conv(x)
        return {"pred": y, "aux": (y * 2, torch.argmax(y, dim=1)), "list": [y]}


def test_nested_outputs_cast_to_float32():
    with torch.no_grad():
        out = AutocastInferer()(torch.randn(1, 1, 4, 4), _TupleDictNet())
    assert out["pred"].dtype == torch.float32 and out["aux"][0].dtype == torch.float32
    assert out["aux"][1].dtype == torch.int64 and out["list"][0].dtype == torch.float32
    torch.testing.assert_close(out["aux"][0], 2 * out["pred"])


def test_invalid_arguments():
    with pytest.raises(ValueError, match="device_type"):
        AutocastInferer(device_type="tpu")
    with pytest.raises(ValueError, match="dtype"):
        AutocastInferer(dtype=torch.int32)
    with pytest.raises(ValueError, match="inferer"):
        AutocastInferer(inferer=3)
