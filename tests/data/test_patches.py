"""PatchWeightMapd and RandContextPatchd: 32³ source windows with their 16³ target centres."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.patches import PatchWeightMapd, RandContextPatchd, gradient_magnitude, window_mean

SHAPE = (20, 24, 18)


def _volume() -> dict:
    idx = torch.arange(int(np.prod(SHAPE)), dtype=torch.float32).reshape(1, *SHAPE)
    return {"image": idx.clone(), "label": 2 * idx}


def _start(label: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(v) for v in np.unravel_index(int(label[0, 0, 0, 0]) // 2, SHAPE))


def test_target_is_the_centre_of_the_source_window():
    sampler = RandContextPatchd(["image", "label"], "label", 32, 16, num_samples=4)
    sampler.set_random_state(0)
    for sample in sampler(_volume()):
        assert sample["image"].shape == (1, 32, 32, 32) and sample["label"].shape == (1, 16, 16, 16)
        assert torch.equal(2 * sample["image"][:, 8:24, 8:24, 8:24], sample["label"])  # aligned voxel for voxel


@pytest.mark.parametrize("centre,start", [((8, 8, 8), (0, 0, 0)), ((12, 16, 10), (4, 8, 2)), ((10, 11, 9), (2, 3, 1))])
def test_weight_map_picks_the_window_centred_on_it_border_included(centre, start):
    data = _volume()
    data["w"] = torch.zeros(1, *SHAPE)
    data["w"][(0, *centre)] = 1.0
    sample = RandContextPatchd(["image", "label"], "label", 32, 16, weight_key="w")(data)[0]
    assert _start(sample["label"]) == start
    assert "w" not in sample
    if centre == (12, 16, 10):  # the last window: its target ends at the volume's last voxel
        assert float(sample["label"][0, -1, -1, -1]) == float(data["label"][0, -1, -1, -1])


def test_uniform_sampling_covers_every_window_start():
    sampler = RandContextPatchd(["image", "label"], "label", 32, 16, num_samples=200)
    sampler.set_random_state(1)
    starts = {_start(s["label"]) for s in sampler(_volume())}
    xs = {s[0] for s in starts}
    assert xs == set(range(SHAPE[0] - 16 + 1))  # x starts 0..4, both borders included


def test_source_margin_is_edge_padded():
    data = dict(_volume(), w=torch.zeros(1, *SHAPE))
    data["w"][0, 8, 8, 8] = 1.0
    sample = RandContextPatchd(["image", "label"], "label", 32, 16, weight_key="w")(data)[0]
    assert _start(sample["label"]) == (0, 0, 0)
    assert torch.equal(sample["image"][0, :8, 8, 8], torch.full((8,), float(sample["image"][0, 8, 8, 8])))


def test_weight_map_uniform_gradient_and_tumour():
    data = _volume()
    label = torch.zeros(1, *SHAPE)
    label[:, 10:, :, :] = 1.0  # one edge at x = 10
    tumour = torch.zeros(1, *SHAPE)
    tumour[:, 2:4, 2:4, 2:4] = 1
    data.update(label=label, tumor=tumour)
    uniform = PatchWeightMapd("label", "w", 16)(data)["w"]
    assert uniform.shape == (1, *SHAPE) and torch.equal(uniform, torch.ones_like(uniform))
    edges = PatchWeightMapd("label", "w", 4, gradient_weight=1.0)(data)["w"]
    assert float(edges[0, 10, 5, 5]) > float(edges[0, 2, 5, 5]) == pytest.approx(1.0)
    tum = PatchWeightMapd("label", "w", 4, tumor_weight=3.0, tumor_key="tumor")(data)["w"]
    assert float(tum[0, 3, 3, 3]) == pytest.approx(1 + 3.0 * 8 / 64)  # 2³ tumour voxels in a 4³ window
    assert float(tum[0, 15, 15, 15]) == pytest.approx(1.0)
    no_tumour = PatchWeightMapd("label", "w", 4, tumor_weight=3.0, tumor_key="absent")(data)["w"]
    assert torch.equal(no_tumour, torch.ones_like(no_tumour))


def test_helpers_and_validation():
    ramp = torch.arange(10.0).reshape(1, 10, 1, 1).expand(1, 10, 3, 3)
    assert torch.allclose(gradient_magnitude(ramp), torch.ones(1, 10, 3, 3))
    assert torch.allclose(
        window_mean(torch.arange(6.0).reshape(1, 6), [2])[0], torch.tensor([0, 0.5, 1.5, 2.5, 3.5, 4.5])
    )
    with pytest.raises(ValueError, match="even"):
        RandContextPatchd(["image", "label"], "label", 32, 15)
    with pytest.raises(ValueError, match="label_keys"):
        RandContextPatchd(["image"], "label")
    with pytest.raises(ValueError, match="smaller than the output window"):
        RandContextPatchd(["image", "label"], "label", 32, 16)(
            {"image": torch.zeros(1, 8, 20, 20), "label": torch.zeros(1, 8, 20, 20)}
        )
    with pytest.raises(ValueError, match="gradient_weight"):
        PatchWeightMapd("label", gradient_weight=-1)
