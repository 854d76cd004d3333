from __future__ import annotations

import pytest
import torch

from monai.inferers import SliceInferer

from common.inferers import PixelBudgetSliceInferer, slices_per_batch


class _Recorder(torch.nn.Module):
    """2D network that records the batch size of every call and doubles its input."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return 2 * x


def test_slices_per_batch_known_answers():
    assert slices_per_batch(128 * 128, 16 * 128 * 128, 100) == 16
    assert slices_per_batch(256 * 256, 16 * 128 * 128, 100) == 4
    assert slices_per_batch(512 * 512, 16 * 128 * 128, 100) == 1  # never 0
    assert slices_per_batch(8 * 8, 16 * 128 * 128, 10) == 10  # never more than the slices there are
    with pytest.raises(ValueError, match="plane_pixels"):
        slices_per_batch(0, 10, 10)


@pytest.mark.parametrize(
    "spatial_dim, shape, expected_batch", [(2, (16, 12, 7), 3), (0, (5, 8, 8), 5), (1, (8, 9, 4), 9)]
)
def test_batch_from_the_inputs_plane_and_output_equals_slice_inferer(spatial_dim, shape, expected_batch):
    budget = 3 * 16 * 12  # three 16 x 12 planes
    x = torch.randn(1, 2, *shape)
    net = _Recorder()
    inferer = PixelBudgetSliceInferer(spatial_dim, budget, roi_size=[-1, -1], progress=False)
    plane = [s for a, s in enumerate(shape) if a != spatial_dim]
    assert inferer.batch_size_for(x) == max(1, min(shape[spatial_dim], budget // (plane[0] * plane[1])))
    out = inferer(x, net)
    assert inferer.sw_batch_size == expected_batch
    assert sum(net.batches) == shape[spatial_dim] and max(net.batches) == expected_batch
    reference = SliceInferer(roi_size=[-1, -1], sw_batch_size=1, spatial_dim=spatial_dim, progress=False)
    torch.testing.assert_close(out, reference(x, _Recorder()))
    torch.testing.assert_close(out, 2 * x)


def test_batch_follows_each_input_size():
    inferer = PixelBudgetSliceInferer(2, 16 * 32 * 32, roi_size=[-1, -1], progress=False)
    assert inferer.batch_size_for(torch.zeros(1, 1, 32, 32, 40)) == 16
    assert inferer.batch_size_for(torch.zeros(1, 1, 64, 64, 40)) == 4


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="pixels_per_batch"):
        PixelBudgetSliceInferer(2, 0, roi_size=[-1, -1])
    with pytest.raises(ValueError, match="sw_batch_size"):
        PixelBudgetSliceInferer(2, 100, roi_size=[-1, -1], sw_batch_size=4)
    with pytest.raises(ValueError, match="inputs"):
        PixelBudgetSliceInferer(2, 100, roi_size=[-1, -1]).batch_size_for(torch.zeros(1, 1, 8, 8))
