"""Tests of common.transforms.modality: per-modality maps, zero-filled and synthesized missing inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer

from common.transforms.intensity import InverseReferenceIntensityScaled
from common.transforms.modality import ModalityIntensityScaled, SynthesizeModalityd, ZeroFillModalityd, present_keys


def _volume(seed: int, scale: float, shape=(1, 12, 10, 6)) -> MetaTensor:
    g = torch.Generator().manual_seed(seed)
    affine = torch.diag(torch.tensor([0.9, 1.1, 2.5, 1.0], dtype=torch.float64))
    return MetaTensor(torch.rand(*shape, generator=g) * scale, affine=affine)


def _data() -> dict:
    mask = torch.zeros(1, 12, 10, 6)
    mask[:, 2:10, 2:8, 1:5] = 1
    return {"t1": _volume(0, 1000.0), "t1ce": _volume(1, 2000.0), "t2": _volume(2, 300.0), "mask": mask}


def test_present_keys():
    assert present_keys(["t1", "t2", "adc"], ["adc"], required=["t1"]) == ["t1", "t2"]
    assert present_keys(["t1", "t2"]) == ["t1", "t2"]
    with pytest.raises(ValueError, match="'t1'"):
        present_keys(["t1", "t2"], ["t1"], required=["t1"])
    with pytest.raises(ValueError, match="'flair'"):
        present_keys(["t1", "t2"], ["flair"])


def test_modality_intensity_scaled_shares_and_separates_maps():
    d = _data()
    out = ModalityIntensityScaled(["t1", "t2", "t1ce"], reference_keys={"t1ce": "t1"}, mask_key="mask", upper=100.0)(d)
    brain = d["mask"] > 0
    lo, hi = d["t1"][brain].min(), d["t1"][brain].max()
    torch.testing.assert_close(out["t1"].as_tensor(), ((d["t1"] - lo) / (hi - lo)).as_tensor())
    torch.testing.assert_close(out["t1ce"].as_tensor(), ((d["t1ce"] - lo) / (hi - lo)).as_tensor())  # T1's map
    lo2, hi2 = d["t2"][brain].min(), d["t2"][brain].max()
    torch.testing.assert_close(out["t2"].as_tensor(), ((d["t2"] - lo2) / (hi2 - lo2)).as_tensor())  # its own
    assert out["t2"][brain].min() == 0 and out["t2"][brain].max() == pytest.approx(1.0)
    assert set(out) >= {"t1_scale", "t2_scale"} and "t1ce_scale" not in out
    back = InverseReferenceIntensityScaled("t1ce", stats_key="t1_scale")(out)  # T1ce back in its units
    torch.testing.assert_close(back["t1ce"].as_tensor(), d["t1ce"].as_tensor(), rtol=1e-5, atol=1e-3)


def test_modality_intensity_scaled_missing_reference():
    d = _data()
    del d["t1ce"]
    t = ModalityIntensityScaled(["t1", "t1ce"], reference_keys={"t1ce": "t1ce"}, mask_key="mask", allow_missing_keys=True)
    out = t(d)  # the target (its own reference) is absent at inference: skipped
    assert "t1_scale" in out and "t1ce_scale" not in out
    with pytest.raises(KeyError, match="t1ce"):
        ModalityIntensityScaled(["t1", "t1ce"], reference_keys={"t1ce": "t1ce"}, mask_key="mask")(d)
    with pytest.raises(ValueError, match="flair"):
        ModalityIntensityScaled(["t1"], reference_keys={"flair": "t1"})


def test_zero_fill():
    d = _data()
    out = ZeroFillModalityd(["adc"], like_keys=["missing", "t1"])(d)
    assert isinstance(out["adc"], MetaTensor) and out["adc"].shape == d["t1"].shape
    assert torch.count_nonzero(out["adc"]) == 0
    np.testing.assert_allclose(out["adc"].affine.numpy(), d["t1"].affine.numpy())
    assert ZeroFillModalityd([], like_keys=["t1"])(d).keys() == d.keys()  # nothing missing: identity
    with pytest.raises(ValueError, match="'t2'"):
        ZeroFillModalityd(["t2"], like_keys=["t1"])(d)  # never replaces a real image
    with pytest.raises(KeyError, match="template"):
        ZeroFillModalityd(["adc"], like_keys=["flair"])(d)


class _Affine(torch.nn.Module):
    """y = 2 x + 1 on the first channel, a per-voxel map (any window size)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.0))
        self.shift = torch.nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.scale + self.shift


@pytest.mark.parametrize("wrapped", [False, True])
def test_synthesize_modality(tmp_path, wrapped):
    d = _data()
    path = tmp_path / "model.pt"
    state = {"scale": torch.tensor(2.0), "shift": torch.tensor(1.0)}
    torch.save({"model": state} if wrapped else state, path)
    inferer = SlidingWindowInferer(roi_size=(8, 8, 3), overlap=0.5, mode="gaussian")
    t = SynthesizeModalityd("t2", source_keys=["t1"], network=_Affine(), inferer=inferer, weights=str(path),
                            pad_divisor=(4, 4, 1))
    out = t(d)
    assert isinstance(out["t2"], MetaTensor) and out["t2"].shape == d["t1"].shape
    torch.testing.assert_close(out["t2"].as_tensor(), (2 * d["t1"] + 1).as_tensor(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out["t2"].affine.numpy(), d["t1"].affine.numpy())
    assert not t.network.training


def test_synthesize_modality_errors(tmp_path):
    inferer = SlidingWindowInferer(roi_size=(8, 8, 3))
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        SynthesizeModalityd("t2", ["t1"], _Affine(), inferer, weights=str(tmp_path / "nothere.pt"))
    with pytest.raises(ValueError, match="exactly one"):
        SynthesizeModalityd(["t2", "adc"], ["t1"], _Affine(), inferer)
    with pytest.raises(KeyError, match="flair"):
        SynthesizeModalityd("t2", ["flair"], _Affine(), inferer)(_data())
