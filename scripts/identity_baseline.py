"""The identity baseline: score the *source* image as if it were the synthesized target.

A synthesis model is only useful where it beats copying its input (T1 as CE-T1: everything right except the
enhancement). This prints the per-split mean ± std of the same metrics the bundles' evaluation writes.

Usage:
    python scripts/identity_baseline.py --dataset_dir data/demo --source_key t1 --target_key t1ce
        [--split test] [--data_range target_range|target_max|FLOAT]
        [--scale_percentile 99.5 --scale_mask_key brain_mask]   # HR-FCN space: both / source's percentile
        [--json OUT]

``--scale_percentile P`` maps source and target with the source's [0, P] percentiles inside
``--scale_mask_key`` to [0, 1] first (the HR-FCN bundle's metric space, peak 1); without it the images
stay in their own units (the AMCGAN bundle's space, peak = the target's range).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.data import load_datalist, read_image  # noqa: E402
from common.metrics import compute_regression_metrics, compute_slice_psnr  # noqa: E402

__all__ = ["identity_metrics", "main"]


def _load(path: str) -> torch.Tensor:
    return torch.as_tensor(read_image(path)[2], dtype=torch.float32)[None]


def identity_metrics(
    cases: list[dict],
    source_key: str,
    target_key: str,
    data_range: float | str = "target_range",
    regions: dict[str, str] | None = None,
    scale_percentile: float | None = None,
    scale_mask_key: str | None = None,
    tumor_slice_key: str | None = "tumor_mask",
    slice_axis: int = 2,
) -> dict[str, dict[str, float]]:
    """Mean, std and count over ``cases`` of MAE/MSE/PSNR/SSIM of source vs target (and per region)."""
    values: dict[str, list[float]] = {}
    for case in cases:
        src, tgt = _load(case[source_key]), _load(case[target_key])
        if scale_percentile is not None:
            ref = src[_load(case[scale_mask_key]) > 0] if scale_mask_key else src.reshape(-1)
            lo, hi = float(ref.min()), float(torch.quantile(ref.float(), scale_percentile / 100.0))
            src, tgt = (src - lo) / (hi - lo), (tgt - lo) / (hi - lo)
        found = {k: v for k, v in compute_regression_metrics(src, tgt, data_range=data_range).items()}
        for name, key in (regions or {}).items():
            if key in case:
                mask = (_load(case[key]) > 0).float()
                if mask.any():
                    found.update(
                        {
                            f"{m}_{name}": v
                            for m, v in compute_regression_metrics(src, tgt, mask=mask, data_range=data_range).items()
                        }
                    )
        if tumor_slice_key and tumor_slice_key in case:
            mask = (_load(case[tumor_slice_key]) > 0).float()
            if mask.any():
                found["psnr_tumor_slices"] = compute_slice_psnr(src, tgt, mask, axis=slice_axis, data_range=data_range)
        for k, v in found.items():
            values.setdefault(k, []).append(float(v))
    return {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "count": len(v)} for k, v in values.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset_dir", default=str(REPO / "data" / "demo"))
    ap.add_argument("--source_key", default="t1")
    ap.add_argument("--target_key", default="t1ce")
    ap.add_argument("--split", default="test")
    ap.add_argument("--data_range", default="target_range")
    ap.add_argument("--scale_percentile", type=float, default=None)
    ap.add_argument("--scale_mask_key", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    data_range: float | str = args.data_range
    try:
        data_range = float(args.data_range)
    except ValueError:
        pass
    cases = load_datalist(str(Path(args.dataset_dir) / "datalist.json"), args.split)
    stats = identity_metrics(
        cases,
        args.source_key,
        args.target_key,
        data_range,
        {"brain": "brain_mask", "tumor": "tumor_mask"},
        args.scale_percentile,
        args.scale_mask_key,
    )
    print(f"identity baseline: {args.source_key} scored as {args.target_key} on {len(cases)} '{args.split}' cases")
    for k, s in stats.items():
        print(f"  {k:20s} {s['mean']:.4g} ± {s['std']:.3g} (n={s['count']})")
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
