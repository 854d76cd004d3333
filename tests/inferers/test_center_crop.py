from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai.networks.layers.factories import Conv

from common.inferers import CenterCropStitchInferer


def _valid_net(spatial_dims):
    """Translation-equivariant: two unpadded convolutions (kernel 9 and 9) -> 16 in -> centre (16-16) ..."""
    torch.manual_seed(0)
    conv = Conv[Conv.CONV, spatial_dims]
    return torch.nn.Sequential(conv(1, 2, 5, padding=0), torch.nn.ReLU(), conv(2, 1, 5, padding=0)).eval()


@pytest.mark.parametrize(
    "spatial_dims,shape,roi,out,overlap",
    [
        (2, (23, 30), (16, 16), (8, 8), 0.5),
        (3, (13, 17, 11), (12, 12, 12), (4, 4, 4), 0.25),
        (3, (20, 9, 16), (16, 16, 16), (8, 8, 8), 0.0),
    ],
)
def test_stitched_equals_whole_volume(spatial_dims, shape, roi, out, overlap):
    net = _valid_net(spatial_dims)
    x = torch.randn(2, 1, *shape)
    margin = (roi[0] - out[0]) // 2
    with torch.no_grad():
        whole = net(F.pad(x, [margin] * (2 * spatial_dims), mode="replicate"))
        stitched = CenterCropStitchInferer(roi, out, overlap=overlap, sw_batch_size=3)(x, net)
    assert stitched.shape == (2, 1, *shape)
    assert (stitched - whole).abs().max().item() < 1e-5


def test_gaussian_blend_of_constant_network_is_constant():
    def net(w):
        return torch.full((w.shape[0], 1, 4, 4, 4), 7.0)

    y = CenterCropStitchInferer(8, 4, overlap=0.5, blend_mode="gaussian")(torch.zeros(1, 1, 10, 11, 9), net)
    assert torch.allclose(y, torch.full_like(y, 7.0))


def test_validation():
    with pytest.raises(ValueError, match="even"):
        CenterCropStitchInferer((32, 32, 32), (15, 15, 15))
    with pytest.raises(ValueError, match="overlap"):
        CenterCropStitchInferer(32, 16, overlap=1.0)
    inferer = CenterCropStitchInferer((8, 8), (4, 4))
    with pytest.raises(ValueError, match="output_size"):
        inferer(torch.zeros(1, 1, 10, 10), lambda w: w)
