from __future__ import annotations

import pytest
import torch

from monai.networks.blocks import UpSample

from common.networks import HRFCN
from common.networks.upsample import SliceUpsample, slice_axis_of


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("factor", [2, 4])
def test_equals_trilinear_with_factor_one_along_the_slice_axis(axis, factor):
    torch.manual_seed(0)
    shape = [5, 6, 7]
    shape[axis] = 3
    x = torch.randn(2, 4, *shape)
    scale = [float(factor)] * 3
    scale[axis] = 1.0
    expected = UpSample(3, 4, 4, scale, mode="nontrainable", pre_conv=None, align_corners=False)(x)
    out = SliceUpsample(factor, axis)(x)
    assert out.shape == expected.shape and out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_slice_axis_of_and_arguments():
    assert slice_axis_of((4.0, 4.0, 1.0)) == 2 and slice_axis_of((1, 2, 2)) == 0
    assert slice_axis_of((2, 2, 2)) is None and slice_axis_of((2, 4, 1)) is None and slice_axis_of((2, 1)) is None
    with pytest.raises(ValueError, match="scale_factor"):
        SliceUpsample(1.0)
    with pytest.raises(ValueError, match="slice_axis"):
        SliceUpsample(2, 3)
    with pytest.raises(ValueError, match="5-D"):
        SliceUpsample(2)(torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("strides, slab", [((2, 2, 1), True), ((2, 2, 2), False)])
def test_hrfcn_uses_it_for_slabs_only(strides, slab):
    net = HRFCN(3, 1, 1, stem_channels=2, channels=[2, 4, 4], strides=strides, num_res_blocks=1)
    kinds = {type(m) for m in net.modules()}
    assert (SliceUpsample in kinds) == slab and (UpSample in kinds) == (not slab)
