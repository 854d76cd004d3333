"""The trivial baseline of same-grid synthesis (bundle contract, section 9): the source, linearly fitted.

A synthesis model is only useful where it beats its input. The baseline maps the source to the target's
intensities by the least-squares line ``target ~ a * source + b`` fitted on the brain voxels of the *training*
subjects (so cross-contrast tasks, T1 -> T2 or MR -> CT, get a fair baseline too) and scores ``a * source + b``
on the test split with the bundles' own evaluation code
(:class:`~common.handlers.evaluation.RegressionEvaluationSaver`): target units, PSNR/SSIM peak = the target's
per-case range, regions brain/tumour, PSNR of the tumour slices, and for contrast enhancement the enhancement
recovery and false enhancement (enhancing-rim label 3). It writes the same ``metrics.csv`` / ``summary.json`` /
``summary.md`` as ``configs/evaluate.json``, so the tables join. When the fit differs from ``(1, 0)`` by more than
rounding, the raw identity (the source copied, no fit) is written as a second, labelled row. Super-resolution's
baseline is bicubic interpolation, scored inside the SR bundle's evaluation by
:class:`~common.handlers.super_resolution.BaselineEvaluationSaver` (``bicubic_*`` columns of its summary).

Usage:
    python scripts/identity_baseline.py --dataset_dir data/demo --source_key t1 --target_key t1ce \\
        [--split test] [--fit_split training] [--enhancement] [--out runs/baseline_t1_to_t1ce] [--no_fit]
        [--scale_percentile 99.5 --scale_mask_key brain_mask]   # HR-FCN's paper space: both / source's percentile

``--scale_percentile P`` maps prediction and target by the source's [min, P-th percentile] inside
``--scale_mask_key`` to [0, 1] first, peak 1 (HR-FCN's paper space, a second labelled table); without it the
numbers are in the collection's one metric space.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.data import load_datalist, read_image  # noqa: E402
from common.handlers.evaluation import RegressionEvaluationSaver  # noqa: E402
from common.metrics.enhancement import ENHANCING_RIM_LABEL  # noqa: E402

__all__ = ["fit_linear_map", "evaluate_baseline", "run_baseline", "main"]

FIT_ROUNDING = 1e-3  # |a - 1| and |b| / target scale below this: the fit is the identity, one row only


def _load(path: str) -> torch.Tensor:
    return torch.as_tensor(np.asarray(read_image(path)[2], dtype=np.float64))[None]


def fit_linear_map(cases: list[dict], source_key: str, target_key: str, mask_key: str | None = "brain_mask"):
    """Least-squares ``(a, b)`` of ``target ~ a * source + b`` over the ``mask_key`` voxels of all ``cases``.

    Accumulates the normal equations case by case (no voxel arrays are concatenated).

    Returns:
        ``(a, b)`` as floats.
    """
    n = ss = st = sss = sst = 0.0
    for case in cases:
        src, tgt = _load(case[source_key]), _load(case[target_key])
        keep = _load(case[mask_key]) > 0 if mask_key and case.get(mask_key) else torch.ones_like(src, dtype=torch.bool)
        s, t = src[keep], tgt[keep]
        n, ss, st = n + s.numel(), ss + float(s.sum()), st + float(t.sum())
        sss, sst = sss + float((s * s).sum()), sst + float((s * t).sum())
    if n < 2:
        raise ValueError(f"the fit needs at least 2 voxels in {mask_key!r}, got {int(n)}.")
    det = n * sss - ss * ss
    a = (n * sst - ss * st) / det if det > 0 else 0.0
    return float(a), float((st - a * ss) / n)


def _scale_pair(pred, target, source, mask, percentile):
    ref = source[mask > 0] if mask is not None else source.reshape(-1)
    lo, hi = float(ref.min()), float(torch.quantile(ref.float(), percentile / 100.0))
    return (pred - lo) / (hi - lo), (target - lo) / (hi - lo)


def evaluate_baseline(
    cases: list[dict],
    source_key: str,
    target_key: str,
    output_dir: str | Path,
    scale: float = 1.0,
    offset: float = 0.0,
    brain_mask_key: str | None = "brain_mask",
    tumor_mask_key: str | None = "tumor_mask",
    enhancement: bool = False,
    slice_axis: int | None = 2,
    data_range: float | str = "target_range",
    scale_percentile: float | None = None,
) -> dict:
    """Score ``scale * source + offset`` as the synthesis of every case; write and return the summary.

    The metrics are those of the bundles' ``configs/evaluate.json`` (one :class:`RegressionEvaluationSaver`,
    fed one case at a time): whole image, ``brain`` / ``tumor`` regions, ``psnr_tumor_slices`` along
    ``slice_axis`` (``None``: none) and, with ``enhancement``, recovery / false enhancement in the rim.

    Returns:
        the ``summary.json`` dict (``{"n_cases", "metrics": {name: {"mean", "std", "count", ...}}}``).
    """
    regions = {k: v for k, v in (("brain", brain_mask_key), ("tumor", tumor_mask_key)) if v}
    slices = {"psnr_tumor_slices": (tumor_mask_key, slice_axis)} if tumor_mask_key and slice_axis is not None else {}
    enh = None
    if enhancement:
        enh = {"source_key": "source", "region_key": tumor_mask_key, "region_label": ENHANCING_RIM_LABEL}
    saver = RegressionEvaluationSaver(
        str(output_dir), regions=regions, slice_metrics=slices, data_range=data_range, enhancement=enh
    )
    engine = SimpleNamespace(state=SimpleNamespace(metrics={}))
    for case in cases:
        source, target = _load(case[source_key]), _load(case[target_key])
        item = {"subject": case.get("subject") or Path(case[target_key]).name.split(".")[0], "source": source}
        for key in regions.values():
            if case.get(key):
                item[key] = _load(case[key])
        pred = scale * source + offset
        if scale_percentile is not None:
            mask = item.get(brain_mask_key) if brain_mask_key else None
            pred, target = _scale_pair(pred, target, source, mask, scale_percentile)
            item["source"] = _scale_pair(source, source, source, mask, scale_percentile)[0]
        engine.state.batch, engine.state.output = [item], [{"pred": pred, "label": target}]
        saver(engine)
    saver.write(engine)
    return saver.summary()


def run_baseline(
    datalist: str | Path,
    source_key: str,
    target_key: str,
    out_dir: str | Path,
    split: str = "test",
    fit_split: str = "training",
    fit: bool = True,
    **options,
) -> list[dict]:
    """Fit on ``fit_split`` and score on ``split``; one row per baseline (the fit, and the raw identity).

    Each row is ``{"label", "method", "scale", "offset", "dir", "summary"}``; its files are in ``out_dir/<method>``.
    ``options`` go to :func:`evaluate_baseline`.
    """
    out_dir = Path(out_dir)
    test = load_datalist(str(datalist), split)
    a, b = fit_linear_map(load_datalist(str(datalist), fit_split), source_key, target_key) if fit else (1.0, 0.0)
    spread = float(np.mean([float(_load(c[target_key]).std()) for c in test[:2]])) or 1.0
    runs = [("linear_fit", f"identity ({source_key} fitted: {a:.4g}·{source_key} + {b:.4g})", a, b)]
    if abs(a - 1.0) > FIT_ROUNDING or abs(b) > FIT_ROUNDING * spread:
        runs.append(("identity", f"identity ({source_key} copied, no fit)", 1.0, 0.0))
    if not fit:
        runs = [("identity", f"identity ({source_key} copied, no fit)", 1.0, 0.0)]
    rows = []
    for method, label, scale, offset in runs:
        summary = evaluate_baseline(test, source_key, target_key, out_dir / method, scale, offset, **options)
        rows.append({"label": label, "method": method, "scale": scale, "offset": offset, "dir": str(out_dir / method)})
        rows[-1]["summary"] = summary
    meta = {"source_key": source_key, "target_key": target_key, "split": split, "fit_split": fit_split, "rows": rows}
    (out_dir / "baseline.json").write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset_dir", default=str(REPO / "data" / "demo"))
    ap.add_argument("--datalist", default=None, help="default: <dataset_dir>/datalist.json")
    ap.add_argument("--source_key", default="t1")
    ap.add_argument("--target_key", default="t1ce")
    ap.add_argument("--split", default="test")
    ap.add_argument("--fit_split", default="training")
    ap.add_argument("--no_fit", action="store_true", help="only the raw identity (the source copied)")
    ap.add_argument("--enhancement", action="store_true", help="also enhancement recovery / false enhancement")
    ap.add_argument("--brain_mask_key", default="brain_mask")
    ap.add_argument("--tumor_mask_key", default="tumor_mask")
    ap.add_argument("--data_range", default="target_range")
    ap.add_argument("--scale_percentile", type=float, default=None)
    ap.add_argument("--out", default=None, help="default: runs/baseline_<source>_to_<target>")
    args = ap.parse_args(argv)
    data_range: float | str = args.data_range
    try:
        data_range = float(args.data_range)
    except ValueError:
        pass
    out = Path(args.out or REPO / "runs" / f"baseline_{args.source_key}_to_{args.target_key}")
    rows = run_baseline(
        args.datalist or Path(args.dataset_dir) / "datalist.json",
        args.source_key,
        args.target_key,
        out,
        args.split,
        args.fit_split,
        not args.no_fit,
        brain_mask_key=args.brain_mask_key or None,
        tumor_mask_key=args.tumor_mask_key or None,
        enhancement=args.enhancement,
        data_range=data_range,
        scale_percentile=args.scale_percentile,
    )
    for row in rows:
        summary = row["summary"]
        print(f"{row['label']}: {summary['n_cases']} '{args.split}' cases -> {row['dir']}")
        for name, s in summary["metrics"].items():
            if "mean" in s:
                print(f"  {name:22s} {s['mean']:.4g} ± {s['std']:.3g} (n={s['count']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
