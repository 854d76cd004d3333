from __future__ import annotations

import importlib.util
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("identity_baseline", REPO / "scripts" / "identity_baseline.py")
identity_baseline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(identity_baseline)


def test_identity_of_target_is_perfect_and_source_is_not(tiny_phantom):
    from common.data import load_datalist

    cases = load_datalist(f"{tiny_phantom}/datalist.json", "test")
    same = identity_baseline.identity_metrics(cases, "t1ce", "t1ce", regions={"brain": "brain_mask"})
    assert same["mae"]["mean"] == 0.0 and same["mse"]["mean"] == 0.0 and same["ssim"]["mean"] > 0.9999
    real = identity_baseline.identity_metrics(
        cases, "t1", "t1ce", regions={"brain": "brain_mask", "tumor": "tumor_mask"}
    )
    assert real["mae"]["mean"] > 0 and math.isfinite(real["psnr"]["mean"]) and real["psnr"]["count"] == 2
    # the enhancement is what T1 lacks: errors are larger inside the tumour than over the brain
    if "mae_tumor" in real:
        assert real["mae_tumor"]["mean"] > real["mae_brain"]["mean"]
    scaled = identity_baseline.identity_metrics(
        cases, "t1", "t1ce", data_range=1.0, scale_percentile=99.5, scale_mask_key="brain_mask"
    )
    assert scaled["mae"]["mean"] < 1.0  # [0, 1] space
