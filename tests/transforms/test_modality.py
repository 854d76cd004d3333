"""Tests of common.transforms.modality: per-modality maps, zero-filled and synthesized missing inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer

from common.transforms.intensity import InverseReferenceIntensityScaled, ReferenceIntensityScaled
from common.transforms.modality import (
    ModalityIntensityScaled,
    StoredIntensityScaled,
    SynthesizeModalityd,
    ZeroFillModalityd,
    case_label,
    present_keys,
    unique_keys,
    without_keys,
)


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
    t = ModalityIntensityScaled(
        ["t1", "t1ce"], reference_keys={"t1ce": "t1ce"}, mask_key="mask", allow_missing_keys=True
    )
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
    d = {k: v for k, v in _data().items() if k != "t2"}  # t2 absent: synthesized
    path = tmp_path / "model.pt"
    state = {"scale": torch.tensor(2.0), "shift": torch.tensor(1.0)}
    torch.save({"model": state} if wrapped else state, path)
    inferer = SlidingWindowInferer(roi_size=(8, 8, 3), overlap=0.5, mode="gaussian")
    t = SynthesizeModalityd(
        "t2", source_keys=["t1"], network=_Affine(), inferer=inferer, weights=str(path), pad_divisor=(4, 4, 1)
    )
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
        SynthesizeModalityd("t2", ["flair"], _Affine(), inferer)({k: v for k, v in _data().items() if k != "t2"})


def test_unique_and_without_keys():
    expected = ["t1", "t2", "adc", "t1ce", "brain_mask"]
    assert unique_keys(["t1", "t2", "adc"], ["t1", "t1ce", None], "brain_mask", None) == expected
    assert unique_keys([], None, "") == []
    assert without_keys(["t1", "t2", "t1", None, "tumor_mask"], "tumor_mask") == ["t1", "t2"]
    assert without_keys(["t1", "t2"], ["t2", None]) == ["t1"] and without_keys(["t1"], None) == ["t1"]


def test_case_label():
    d = _data()
    d["t1"].meta["filename_or_obj"] = "/data/case_7/t1.nii.gz"
    assert case_label({"subject": "s1", **d}, ["t1"]) == "s1"
    assert case_label(d, ["missing", "t1"]) == "t1.nii.gz" and case_label({}, ["t1"]) == "?"


def test_zero_fill_ignores_a_listed_file_path(caplog):
    d = dict(_data(), adc="/data/case/adc.nii.gz", subject="s1")  # listed in the datalist, not loaded
    with caplog.at_level("INFO", logger="common.transforms.modality"):
        out = ZeroFillModalityd(["adc"], like_keys=["t1"])(d)
    assert isinstance(out["adc"], MetaTensor) and torch.count_nonzero(out["adc"]) == 0
    assert "case s1: 'adc' is declared missing; ignoring the listed file '/data/case/adc.nii.gz'" in caplog.text


def test_synthesize_keeps_a_present_image(caplog):
    d = dict(_data(), subject="s1")
    inferer = SlidingWindowInferer(roi_size=(8, 8, 3))
    with caplog.at_level("INFO", logger="common.transforms.modality"):
        out = SynthesizeModalityd("t2", ["t1"], _Affine(), inferer)(d)
        assert out["t2"] is d["t2"]  # the real image, untouched
        assert "case s1: 't2' is present; using the real image." in caplog.text
        forced = SynthesizeModalityd("t2", ["t1"], _Affine(), inferer, keep_present=False)(d)
    assert torch.count_nonzero(forced["t2"]) == 0  # scale = shift = 0: synthesized over the real one
    assert "case s1: 't2' is absent; synthesizing it from ['t1']." in caplog.text


def test_stored_intensity_scaled_inverts_the_inverse():
    d = _data()
    scaled = ReferenceIntensityScaled(["t1", "t1ce"], reference_key="t1", mask_key="mask")(d)
    back = InverseReferenceIntensityScaled(["t1ce"], stats_key="t1_scale")(scaled)
    again = StoredIntensityScaled(["t1ce"], stats_key="t1_scale")(back)
    torch.testing.assert_close(again["t1ce"].as_tensor(), scaled["t1ce"].as_tensor(), rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match="t2_scale"):
        StoredIntensityScaled(["t1ce"], stats_key="t2_scale")(d)


def test_default_upper_percentile_is_99_5_not_the_maximum():
    """Values 0..9999 with 0.3 % outliers at 1e5: the 99.5th percentile (~9972) is far from the maximum."""
    values = torch.cat([torch.arange(10_000, dtype=torch.float32), torch.full((30,), 1e5)])
    data = {"t1": values.reshape(1, 10, 17, 59)}
    out = ReferenceIntensityScaled(["t1"], reference_key="t1")(data)
    lo, hi = out["t1_scale"].tolist()
    expected = float(np.percentile(values.numpy(), 99.5))
    assert lo == 0.0 and hi == pytest.approx(expected, rel=1e-4)  # tolerance 1e-4 relative (about 1 unit)
    assert abs(hi - 1e5) > 0.5 * 1e5 and abs(hi - 9999.0) > 10.0  # neither the maximum nor the 100th inlier
    torch.testing.assert_close(out["t1"].max(), torch.tensor(1e5 / expected), rtol=1e-4, atol=0)


def test_percentiles_of_a_volume_above_4m_voxels():
    """4.2 M voxels (a BraTS volume has 8.9 M) take the strided-subsample path of the percentile computation;
    the values grow along the memory order, so a truncated or biased subsample would move the percentile."""
    n = 128 * 128 * 257  # 4,210,688 voxels > 4,000,000
    g = torch.Generator().manual_seed(0)
    values = torch.linspace(0.0, 1.0, n) + 1e-3 * torch.rand(n, generator=g)
    data = {"t1": values.reshape(1, 128, 128, 257)}
    out = ReferenceIntensityScaled(["t1"], reference_key="t1", lower=0.5, upper=99.5)(data)
    lo, hi = out["t1_scale"].tolist()
    exact_lo, exact_hi = np.percentile(values.numpy(), [0.5, 99.5])
    assert lo == pytest.approx(exact_lo, abs=1e-4) and hi == pytest.approx(exact_hi, abs=1e-4)  # stated tolerance
