"""Train and evaluate a bundle's default row and its ablation rows at equal budgets over seeds; write one table.

Usage:
    python scripts/run_ablations.py --bundle amcgan_contrast_mri --seeds 0 1 [--rows default pix2pix multi_scale]
        [--data_dir DIR] [--out runs/ablations] [--overrides FILE]

Each row is ``configs/train.json + configs/demo.json`` (``default``) or that plus ``configs/ablations/<row>.json``:
the same demo budget for every row (an ablation file that changes the schedule is reported in the table). For
every seed the row is trained (``seed`` overridden), then evaluated on the test split with ``configs/evaluate.json``
(the bundle's own metrics, one metric space); at the first seed the row's inference writes its test
predictions (for the demo figure). The table ``<out>/ablations_<bundle>.md`` / ``.json`` has, per row
and metric, the mean ± std over seeds (population std) of the per-seed test-set means, and the task's baseline
(:func:`leaderboard.baseline_rows`, same test cases). An ordering of rows is called consistent only when it holds
at every seed (bundle contract, section 9). ``run_demo.py --ablations <out>`` adds the rows to the leaderboard.
``--overrides`` (JSON ``{config id: value}``) shrinks every run (smoke tests); the measurement itself is the lead's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import leaderboard  # noqa: E402
import run_demo  # noqa: E402

__all__ = ["row_configs", "run_row", "infer_row", "aggregate", "run_ablations", "main"]

log = logging.getLogger("run_ablations")
SCHEDULE_IDS = ("max_epochs", "n_epochs_constant", "n_epochs_decay", "num_epochs", "epochs")


def row_configs(bundle: Path, row: str) -> list[str]:
    """Config files of a row: ``default`` is train + demo; other rows add ``ablations/<row>.json``."""
    configs = ["train.json", "demo.json"]
    if row != "default":
        if not (bundle / "configs" / "ablations" / f"{row}.json").is_file():
            known = sorted(p.stem for p in (bundle / "configs" / "ablations").glob("*.json"))
            raise ValueError(f"row {row!r} is not an ablation of {bundle.name}; rows: default, {', '.join(known)}.")
        configs.append(f"ablations/{row}.json")
    return configs


def run_row(
    bundle: Path, row: str, seed: int, data_dir: Path, out: Path, overrides: dict | None = None, infer: bool = False
) -> dict:
    """Train one row at one seed and evaluate it on the test split; its ``summary.json`` dict and timings.

    ``infer``: also write the row's predictions of the test split (:func:`infer_row`) for the demo figure.
    """
    run_dir = out / bundle.name / row / f"seed{seed}"
    settings = {"dataset_dir": str(data_dir), "bundle_root": str(bundle), "ckpt_dir": str(run_dir / "models")}
    settings.update(overrides or {}, seed=seed)
    configs = row_configs(bundle, row)
    start = time.perf_counter()
    run_demo._workflow(bundle, configs, {**settings, "output_dir": str(run_dir / "train"), "log_dir": str(run_dir)})
    trained = time.perf_counter() - start
    run_demo._workflow(bundle, [*configs, "evaluate.json"], {**settings, "output_dir": str(run_dir / "eval")})
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    result = {"summary": summary, "train_s": trained, "eval_dir": str(run_dir / "eval")}
    if infer:
        result.update(infer_row(bundle, row, run_dir, settings))
    return result


def infer_row(bundle: Path, row: str, run_dir: Path, settings: dict) -> dict:
    """Run the bundle's inference (as ``run_demo.py``: its inference configs, ``demo.json``, the row's file) on
    the test split; ``{"pred_dir": folder}``, or ``{"inference_error": message}`` if the row cannot infer
    (logged; the table says so and the figure shows the row's tile as "no output")."""
    infer = run_demo.BUNDLE_DEMO.get(bundle.name, {}).get("infer", ["inference.json"])
    configs = [*infer, *row_configs(bundle, row)[1:]]
    pred_dir = run_dir / "inference"
    try:
        run_demo._workflow(bundle, configs, {**settings, "output_dir": str(pred_dir)})
    except Exception as err:  # one row that cannot infer must not lose the other rows' measurements
        log.error("%s: row %s cannot run inference (%s): %s", bundle.name, row, " + ".join(configs), err)
        return {"inference_error": f"{type(err).__name__}: {err}".splitlines()[0][:300]}
    return {"pred_dir": str(pred_dir)}


def aggregate(summaries: list[dict]) -> dict:
    """Per metric: mean ± std (``ddof=0``) over seeds of the per-seed means, and the number of seeds."""
    names = dict.fromkeys(k for s in summaries for k in s["metrics"])
    out = {}
    for name in names:
        values = np.array([s["metrics"].get(name, {}).get("mean", np.nan) for s in summaries], dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size:
            out[name] = {"mean": float(finite.mean()), "std": float(finite.std()), "count": int(finite.size)}
    return out


def _schedule_changes(bundle: Path, row: str) -> list[str]:
    if row == "default":
        return []
    text = json.loads((bundle / "configs" / "ablations" / f"{row}.json").read_text())
    return [k for k in text if k in SCHEDULE_IDS]


def _ordering(rows: list[dict], metric: str) -> str:
    """The ranking of rows by ``metric`` and whether it is the same at every seed."""
    have = [r for r in rows if all(metric in s["metrics"] and "mean" in s["metrics"][metric] for s in r["per_seed"])]
    if len(have) < 2:
        return ""
    ranks = {
        tuple(sorted((r["row"] for r in have), key=lambda n, i=i: -_seed_value(have, n, i, metric)))
        for i in range(len(have[0]["per_seed"]))
    }
    mean_rank = sorted(have, key=lambda r: -r["metrics"][metric]["mean"])
    text = " > ".join(r["row"] for r in mean_rank)
    if len(have[0]["per_seed"]) < 2:
        return f"Ordering by mean `{metric}`: {text} (one seed: no ordering is claimed)."
    same = len(ranks) == 1
    return f"Ordering by mean `{metric}`: {text} ({'holds at every seed' if same else 'not consistent across seeds'})."


def _seed_value(rows, name, i, metric):
    row = next(r for r in rows if r["row"] == name)
    return row["per_seed"][i]["metrics"][metric]["mean"]


def run_ablations(
    bundle_name: str,
    seeds: list[int],
    rows: list[str] | None,
    out: Path,
    data_dir: Path | None = None,
    overrides: dict | None = None,
) -> dict:
    """Run every row at every seed; write ``ablations_<bundle>.md`` / ``.json`` under ``out``; return the table."""
    bundle = REPO / "bundles" / bundle_name
    if not (bundle / "configs" / "metadata.json").is_file():
        raise ValueError(f"no bundle {bundle_name!r} under {REPO / 'bundles'}.")
    rows = rows or ["default", *sorted(p.stem for p in (bundle / "configs" / "ablations").glob("*.json"))]
    for row in rows:
        row_configs(bundle, row)  # unknown rows fail before any training
    if data_dir is None:
        folder, spec = run_demo.BUNDLE_DEMO.get(bundle_name, {}).get("data", ("demo", None))
        data_dir = REPO / "data" / folder
        if spec is not None:
            run_demo.ensure_data(data_dir, spec["num_subjects"], spec["shape"], 0, False, spec["spacing"])
        else:
            run_demo.ensure_data(data_dir, 12, [96, 112, 96], 0, False)
    table = []
    for row in rows:
        per_seed, timings, inferred = [], [], {}
        for seed in seeds:
            log.info("%s: row %s, seed %d", bundle_name, row, seed)
            res = run_row(bundle, row, seed, Path(data_dir), out, overrides, infer=seed == seeds[0])
            per_seed.append(res["summary"])
            timings.append(res["train_s"])
            inferred = inferred or {k: res[k] for k in ("pred_dir", "inference_error") if k in res}
        entry = {"row": row, "configs": row_configs(bundle, row), "seeds": list(seeds), "metrics": aggregate(per_seed)}
        entry.update(inferred, inferred_seed=seeds[0])
        entry.update(n_cases=per_seed[0]["n_cases"], train_s=timings, per_seed=per_seed)
        entry["schedule_changes"] = _schedule_changes(bundle, row)
        table.append(entry)
    task = leaderboard.row_task(bundle, table[0]["configs"])
    pseudo = [leaderboard.make_row(r["row"], bundle, r["per_seed"][0], Path(data_dir), r["configs"]) for r in table]
    bases = leaderboard.baseline_rows(task, pseudo[:1], out / bundle_name)
    result = {"bundle": bundle_name, "task": task, "data_dir": str(data_dir), "rows": table}
    result["baselines"] = [{"label": b["label"], "summary": b["summary"]} for b in bases]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"ablations_{bundle_name}.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    (out / f"ablations_{bundle_name}.md").write_text(_markdown(result, task) + "\n")
    return result


def _markdown(result: dict, task: str) -> str:
    rows, metric = result["rows"], leaderboard.primary_metric(task)
    pseudo = [{"summary": {"metrics": r["metrics"]}} for r in rows] + result["baselines"]
    columns = leaderboard._columns(task, pseudo)
    seeds = ", ".join(str(s) for s in rows[0]["seeds"])
    lines = [
        f"# Ablations of `{result['bundle']}` ({task}), seeds {seeds}",
        "",
        f"Data `{result['data_dir']}`, test split ({rows[0]['n_cases']} cases); configs/train.json + configs/demo.json "
        "(+ the row's ablation file) at equal budgets; mean ± std over seeds of the per-seed test means; "
        "baselines: mean ± std over the test cases.",
        "",
        "| row | " + " | ".join(columns) + " | train s / seed |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for r in rows:
        cells = " | ".join(leaderboard._cell(r["metrics"].get(c)) for c in columns)
        note = f" (changes {', '.join(r['schedule_changes'])})" if r["schedule_changes"] else ""
        lines.append(f"| {r['row']}{note} | {cells} | {np.mean(r['train_s']):.0f} |")
    for b in result["baselines"]:
        cells = " | ".join(leaderboard._cell(b["summary"]["metrics"].get(c)) for c in columns)
        lines.append(f"| {b['label']} | {cells} | – |")
    order = _ordering(rows, metric)
    failed = [f"- `{r['row']}`: no inference ({r['inference_error']})" for r in rows if r.get("inference_error")]
    return "\n".join(lines + ([] if not order else ["", order]) + ([] if not failed else ["", *failed]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--rows", nargs="+", default=None, help="default: 'default' and every configs/ablations/*.json")
    ap.add_argument("--data_dir", default=None, help="default: the bundle's demo data (as run_demo.py)")
    ap.add_argument("--out", default=str(REPO / "runs" / "ablations"))
    ap.add_argument("--overrides", default=None, help="JSON file {config id: value} applied to every run")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    overrides = json.loads(Path(args.overrides).read_text()) if args.overrides else None
    data_dir = Path(args.data_dir) if args.data_dir else None
    run_ablations(args.bundle, args.seeds, args.rows, Path(args.out), data_dir, overrides)
    print(f"table: {Path(args.out) / f'ablations_{args.bundle}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
