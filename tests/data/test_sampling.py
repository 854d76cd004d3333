from __future__ import annotations

import pytest
import torch

from common.data import SliceWeightMapd, slice_lesion_indicator


def test_slice_weight_map_values():
    mask = torch.zeros(1, 4, 5, 6)
    mask[0, 1, 2, 1] = 2  # one lesion voxel in slice 1 (off-centre)
    mask[0, :, :, 4] = 1
    d = SliceWeightMapd("tumor_mask", axis=2, lesion_weight=3.0)({"tumor_mask": mask})
    w = d["slice_weight"]
    assert w.shape == (1, 4, 5, 6)
    assert torch.equal(w[0, 2, 2], torch.tensor([1.0, 4.0, 1.0, 1.0, 4.0, 1.0]))
    assert torch.equal(w.amin(dim=(1, 2)), w.amax(dim=(1, 2)))  # constant over each slice
    # no mask: lesions are where the target differs from the source by more than the threshold
    source = torch.zeros(1, 4, 5, 6)
    target = source.clone()
    target[0, 0, 0, 2] = 0.5
    target[0, 1, 1, 3] = 0.1
    d = SliceWeightMapd("tumor_mask", "image", "label", axis=2, lesion_weight=1.0, difference_threshold=0.2)(
        {"image": source, "label": target}
    )
    assert torch.equal(d["slice_weight"][0, 0, 0], torch.tensor([1.0, 1.0, 2.0, 1.0, 1.0, 1.0]))
    assert torch.equal(slice_lesion_indicator(mask > 0, axis=0, min_voxels=6), torch.tensor([0.0, 1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="lesion_weight"):
        SliceWeightMapd("m", lesion_weight=-1)
