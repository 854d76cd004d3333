"""The demo leaderboard: one table and one figure per synthesis task, every method beside its trivial baseline.

A *row* is one trained configuration's test-set ``summary.json`` (written by ``configs/evaluate.json``). Its task
is the config id ``synthesis_task`` of the row's config files if one sets it (e.g. a bundle's
``task_mr_to_ct.json``), else the ``synthesis_task`` key of the bundle's ``configs/metadata.json``. Rows are
grouped by task; each table also holds the task's baseline (bundle contract, section 9), measured on the same
test cases in the same space: the linearly fitted identity of :mod:`identity_baseline` for same-grid synthesis
(and the raw identity when the fit is not ``(1, 0)``), the ``bicubic_*`` columns of the super-resolution
evaluation (:class:`~common.handlers.super_resolution.BaselineEvaluationSaver`). Values are mean ± std over the
test cases (over seeds for ablation rows, marked). New bundles join through their metadata key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import identity_baseline  # noqa: E402

from common.transforms.degradation import resize_in_plane  # noqa: E402
from common.utils.figures import window_to_uint8  # noqa: E402

__all__ = [
    "TASKS",
    "row_task",
    "make_row",
    "ablation_rows",
    "baseline_rows",
    "primary_metric",
    "leaderboard",
    "verdict",
    "task_figure",
]

# task id -> title, datalist keys of the baseline (None: the SR bundle's bicubic columns), columns, primary metric
TASKS: dict[str, dict] = {
    "t1_to_t1ce": {"title": "T1 → CE-T1", "source": "t1", "target": "t1ce", "enhancement": True},
    "t1_to_t2": {"title": "T1 → T2", "source": "t1", "target": "t2"},
    "mr_to_ct": {"title": "MR → CT", "source": "t1", "target": "ct"},
    "sr_x4": {"title": "SR ×4", "source": None, "target": "t1", "primary": "psnr", "scale": 4, "axes": (0, 1)},
}
REGION_COLUMNS = ("psnr_brain", "ssim_brain", "mae_brain", "psnr_tumor", "psnr")
CE_COLUMNS = ("enhancement_recovery", "false_enhancement")
SR_COLUMNS = ("psnr", "ssim", "mae")
BICUBIC_PREFIX = "bicubic_"


def _task_spec(task: str) -> dict:
    if task in TASKS:
        return TASKS[task]
    source, _, target = task.partition("_to_")  # e.g. "t1ce_to_t2": a same-grid task of datalist keys
    return {"title": task, "source": source or None, "target": target or None}


def row_task(bundle: Path, config_files: Sequence[str] = ()) -> str:
    """The task of a row: the last ``synthesis_task`` id among its config files, else the bundle metadata's."""
    task = None
    for name in config_files:
        path = Path(name) if Path(name).is_absolute() else bundle / "configs" / name
        if path.suffix == ".json" and path.is_file():
            task = json.loads(path.read_text()).get("synthesis_task", task)
    if task is None:
        task = json.loads((bundle / "configs" / "metadata.json").read_text()).get("synthesis_task", "unknown")
    return str(task)


def make_row(label: str, bundle: Path, summary: Mapping, data_dir: Path, configs: Sequence[str] = (), **extra) -> dict:
    """A leaderboard row: ``{"label", "bundle", "task", "summary", "data_dir", "kind", ...}`` (``extra`` kept)."""
    row = {"label": label, "bundle": bundle.name, "task": row_task(bundle, configs), "summary": dict(summary)}
    row.update({"data_dir": str(data_dir), "kind": "method", "spread": "cases", **extra})
    return row


def ablation_rows(folder: Path) -> list[dict]:
    """Rows of every ``ablations_<bundle>.json`` in ``folder`` (written by ``run_ablations.py``; ± over seeds).

    A row's figure tile is its first seed's inference (``pred_dir``), where ``run_ablations.py`` wrote one.
    """
    rows = []
    for path in sorted(Path(folder).glob("ablations_*.json")) if folder and Path(folder).is_dir() else []:
        table = json.loads(path.read_text())
        bundle = REPO / "bundles" / table["bundle"]
        for r in table["rows"]:
            summary = {"n_cases": r.get("n_cases", ""), "metrics": r["metrics"]}
            label = f"{r['row']} ({len(r['seeds'])} seeds, ablation)"
            extra = {"pred_dir": r["pred_dir"]} if r.get("pred_dir") else {}
            data_dir = Path(table["data_dir"])
            rows.append(make_row(label, bundle, summary, data_dir, r["configs"], spread="seeds", **extra))
    return rows


def baseline_rows(task: str, rows: Sequence[Mapping], out: Path) -> list[dict]:
    """Baseline rows of ``task`` for the data of its method ``rows`` (one set per distinct data folder)."""
    spec, found = _task_spec(task), []
    if spec.get("source") is None:  # super-resolution: bicubic columns of each method's own evaluation
        for row in rows:
            metrics = {
                k[len(BICUBIC_PREFIX) :]: v
                for k, v in row["summary"]["metrics"].items()
                if k.startswith(BICUBIC_PREFIX)
            }
            if metrics and row.get("spread") == "cases":
                summary = {"n_cases": row["summary"]["n_cases"], "metrics": metrics}
                found.append({**row, "label": f"bicubic (cases of {row['label']})", "kind": "baseline"})
                found[-1].update(summary=summary, pred_dir=None, method="bicubic")
        return found[:1]
    for data_dir in dict.fromkeys(r["data_dir"] for r in rows):
        datalist = Path(data_dir) / "datalist.json"
        target = out / "baselines" / f"{task}_{Path(data_dir).name}"
        for base in identity_baseline.run_baseline(
            datalist, spec["source"], spec["target"], target, enhancement=bool(spec.get("enhancement"))
        ):
            found.append({"label": base["label"], "bundle": "baseline", "task": task, "summary": base["summary"]})
            found[-1].update(data_dir=data_dir, kind="baseline", spread="cases", method=base["method"])
            found[-1].update(scale=base["scale"], offset=base["offset"], summary_dir=base["dir"])
    return found


def _cell(entry: Mapping | None) -> str:
    if not entry or "mean" not in entry:
        return "inf" if entry and entry.get("n_inf") else "–"
    return f"{entry['mean']:.4g} ± {entry['std']:.2g}"


def _columns(task: str, rows: Sequence[Mapping]) -> list[str]:
    spec = _task_spec(task)
    wanted = (
        SR_COLUMNS if spec.get("source") is None else REGION_COLUMNS + (CE_COLUMNS if spec.get("enhancement") else ())
    )
    present = {k for r in rows for k in r["summary"]["metrics"]}
    return [c for c in wanted if c in present]


def primary_metric(task: str) -> str:
    """The metric a default row must beat the baseline on: brain PSNR (whole-image PSNR for super-resolution)."""
    return _task_spec(task).get("primary", "psnr_brain")


def verdict(row: Mapping, baselines: Sequence[Mapping]) -> str:
    """One line: does ``row`` beat the best baseline of its data on the task's primary metric? With numbers."""
    metric = primary_metric(row["task"])
    mine = row["summary"]["metrics"].get(metric, {})
    same = [
        b for b in baselines if b["data_dir"] == row["data_dir"] and "mean" in b["summary"]["metrics"].get(metric, {})
    ]
    if "mean" not in mine or not same:
        return f"No baseline comparison on `{metric}` (missing values)."
    best = max(same, key=lambda b: b["summary"]["metrics"][metric]["mean"])
    b = best["summary"]["metrics"][metric]
    numbers = f"`{metric}` {mine['mean']:.4g} ± {mine['std']:.2g} vs {best['label']} {b['mean']:.4g} ± {b['std']:.2g}"
    text = ("Beats the baseline: " if mine["mean"] > b["mean"] else "**Loses to the baseline**: ") + numbers
    mae, base_mae = row["summary"]["metrics"].get("mae_brain", {}), best["summary"]["metrics"].get("mae_brain", {})
    if metric != "mae_brain" and "mean" in mae and "mean" in base_mae:  # peak-free: same in any skull-strip space
        text += f"; `mae_brain` {mae['mean']:.4g} vs {base_mae['mean']:.4g}"
    rec = row["summary"]["metrics"].get("enhancement_recovery", {})
    if "mean" in rec:
        text += f"; enhancement recovery {100 * rec['mean']:.1f} % (goal ≥ 50 %)"
        if metric == "psnr_brain":  # the contrast-enhancement bound: recovery >= 50 % within 1 dB of the baseline
            delta = mine["mean"] - b["mean"]
            met = rec["mean"] >= 0.5 and delta >= -1.0
            text += f". Enhancement goal (recovery ≥ 50 %, `{metric}` ≥ baseline − 1 dB, {delta:+.2f} dB): "
            text += "**met**" if met else "**missed**"
    return text + "."


def leaderboard(rows: Sequence[Mapping], out: Path, figures: bool = True) -> tuple[list[str], dict]:
    """Markdown tables (one per task) of ``rows`` plus their baselines; figures under ``out/figures``.

    Returns:
        ``(markdown lines, {task: {"rows": [...], "columns": [...], "figure": path or None}})``; the dict is also
        written to ``out/leaderboard.json``.
    """
    tasks = sorted({r["task"] for r in rows}, key=lambda t: (list(TASKS).index(t) if t in TASKS else len(TASKS), t))
    lines, result = [], {}
    for task in tasks:
        methods = [r for r in rows if r["task"] == task]
        bases = baseline_rows(task, methods, out)
        table = bases + methods
        columns = _columns(task, table)
        lines += [f"### {_task_spec(task)['title']} (`{task}`)", ""]
        lines += ["| row | data | cases | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
        for r in table:
            metrics = r["summary"]["metrics"]
            mark = " (± over seeds)" if r.get("spread") == "seeds" else ""
            name = f"{r['label']}{mark}" if r["kind"] == "baseline" else f"`{r['bundle']}` {r['label']}{mark}"
            cells = " | ".join(_cell(metrics.get(c)) for c in columns)
            lines.append(f"| {name} | {Path(r['data_dir']).name} | {r['summary'].get('n_cases', '')} | {cells} |")
        figure = None
        if figures:
            figure = task_figure(task, bases, methods, out / "figures" / f"{task}.png")
            if figure is not None:
                lines += ["", f"![{task}: source | methods | target]({figure.relative_to(out)})"]
        lines += [""]
        result[task] = {"columns": columns, "rows": table, "figure": None if figure is None else str(figure)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return lines, result


def _load(path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)


def _prediction(pred_dir: str | None, case: str) -> Path | None:
    if not pred_dir or not Path(pred_dir).is_dir():
        return None
    hits = sorted(p for p in Path(pred_dir).rglob("*.nii*") if case in str(p.relative_to(pred_dir)))
    return hits[0] if hits else None


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner if mask.shape[0] > 2 and mask.shape[1] > 2 else mask


def _low_resolution(target: np.ndarray, scale: int, axes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(LR input on the target grid by nearest neighbour, its bicubic interpolation) of a super-resolution target.

    The LR image is :class:`~common.transforms.degradation.BicubicDegraded`'s (anti-aliased bicubic) on the
    largest in-plane multiple of ``scale``; both outputs are zero-padded back to the target's shape.
    """
    size = [target.shape[a] // scale * scale for a in axes]
    crop = tuple(slice(0, size[list(axes).index(d)]) if d in axes else slice(None) for d in range(target.ndim))
    hr = torch.from_numpy(np.ascontiguousarray(target[crop]))[None]
    lr = resize_in_plane(hr, [s // scale for s in size], axes, "bicubic", antialias=True)
    out = []
    for mode in ("nearest", "bicubic"):
        full = np.zeros_like(target)
        full[crop] = resize_in_plane(lr, size, axes, mode, antialias=False)[0].numpy()
        out.append(full)
    return out[0], out[1]


def task_figure(task: str, bases: Sequence[Mapping], methods: Sequence[Mapping], path: Path) -> Path | None:
    """The same axial slice of one test case from every method: source | baselines | methods | target.

    The case is the first test case of the first method's data with the most enhancing rim (tumour label 3)
    in one slice; the rim is outlined in red on every tile; one intensity window (the target's) for all.
    Methods without a written prediction of that case get a tile reading "no output". For super-resolution
    the source tile is the case's low-resolution input (the bundles' bicubic degradation of the target, shown
    on the target grid by nearest neighbour) and the bicubic baseline tile its bicubic interpolation.
    ``None`` if no case is found.
    """
    spec = _task_spec(task)
    if not methods:
        return None
    data = Path(methods[0]["data_dir"])
    meta = json.loads((data / "datalist.json").read_text())
    cases = meta.get("test", [])
    if not cases:
        return None
    rims = [
        (_load(data / c["tumor_mask"]) == 3).sum(axis=(0, 1)) if c.get("tumor_mask") else np.zeros(1) for c in cases
    ]
    pick = int(np.argmax([r.max() for r in rims]))
    case, z = cases[pick], int(np.argmax(rims[pick]))
    target = _load(data / case[spec["target"]])
    z = z if rims[pick].max() > 0 else target.shape[2] // 2
    lo, hi = np.percentile(target[..., z], (0.5, 99.5))
    rim = (
        (_load(data / case["tumor_mask"])[..., z] == 3) if case.get("tumor_mask") else np.zeros(target.shape[:2], bool)
    )
    if spec.get("source"):
        source, bicubic = _load(data / case[spec["source"]]), None
        tiles: list[tuple[str, np.ndarray | None]] = [("source " + spec["source"], source)]
    else:  # super-resolution: the low-resolution input, on the target grid by nearest neighbour
        source, bicubic = _low_resolution(target, spec["scale"], spec["axes"])
        tiles = [(f"input x{spec['scale']} LR", source)]
    for b in bases:
        image = bicubic if b.get("method") == "bicubic" else None
        if "scale" in b and spec.get("source"):
            image = b["scale"] * source + b["offset"]
        tiles.append((b["label"].split(" (")[0] + f" ({b.get('method', '')})", image))
    for m in methods:
        hit = _prediction(m.get("pred_dir"), case["subject"])
        tiles.append((f"{m['bundle']} {m['label']}", None if hit is None else _load(hit)))
    tiles.append(("target " + spec["target"], target))
    h, w = target.shape[1], target.shape[0]  # rot90 of an (X, Y) slice
    canvas = Image.new("RGB", (len(tiles) * (w + 4) + 4, h + 18), (0, 0, 0))
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    edge = np.rot90(_outline(rim))
    for i, (name, volume) in enumerate(tiles):
        x = 4 + i * (w + 4)
        draw.text((x, 2), name[: max(4, w // 6)], fill=(255, 255, 255), font=font)
        if volume is None or volume.shape[:2] != target.shape[:2]:
            draw.text((x + 2, 16 + h // 2), "no output"[: max(2, w // 6)], fill=(128, 128, 128), font=font)
            continue
        gray = np.rot90(window_to_uint8(volume[..., z], lo, hi))
        rgb = np.repeat(gray[..., None], 3, axis=2)
        rgb[edge] = (255, 0, 0)
        canvas.paste(Image.fromarray(np.ascontiguousarray(rgb)), (x, 16))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
