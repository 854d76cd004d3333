from __future__ import annotations

import numpy as np
import pytest
import torch

from monai.data import MetaTensor

from common.transforms import InverseReferenceIntensityScaled, ReferenceIntensityScaled


@pytest.mark.parametrize("shape", [(1, 8, 9), (1, 6, 7, 5)])
def test_scale_and_invert_round_trip(shape):
    g = torch.Generator().manual_seed(0)
    src = MetaTensor(torch.rand(shape, generator=g) * 1000 + 50)
    tgt = src * 1.5
    mask = torch.zeros(shape)
    mask[:, 2:5] = 1
    d = ReferenceIntensityScaled(["src", "tgt"], "src", 0, 100, -1.0, 1.0, mask_key="mask")(
        {"src": src, "tgt": tgt, "mask": mask}
    )
    inside = src[mask > 0]
    lo, hi = float(inside.min()), float(inside.max())
    assert torch.allclose(d["src_scale"], torch.tensor([lo, hi], dtype=torch.float64))
    assert d["src"][mask > 0].min().item() == pytest.approx(-1.0, abs=1e-5)
    assert d["src"][mask > 0].max().item() == pytest.approx(1.0, abs=1e-5)
    assert isinstance(d["src"], MetaTensor)
    back = InverseReferenceIntensityScaled(["tgt"], "src_scale", -1.0, 1.0)(d)
    assert np.allclose(np.asarray(back["tgt"]), np.asarray(tgt), rtol=1e-4)


def test_missing_target_allowed_and_errors():
    d = ReferenceIntensityScaled(["a", "b"], "a", allow_missing_keys=True)({"a": torch.arange(11.0)[None]})
    assert "b" not in d and d["a"].max().item() == pytest.approx(1.0 / 0.995 * 1.0, rel=1e-2)
    with pytest.raises(KeyError, match="'a'"):
        ReferenceIntensityScaled(["a"], "a")({"b": torch.zeros(1, 2)})
    with pytest.raises(ValueError, match="lower and upper"):
        ReferenceIntensityScaled(["a"], "a", lower=50, upper=10)
    with pytest.raises(KeyError, match="ReferenceIntensityScaled"):
        InverseReferenceIntensityScaled(["a"], "a_scale")({"a": torch.zeros(1)})
