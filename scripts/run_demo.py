"""The main job: demo data, then for every bundle a short training, evaluation and inference, then a report.

Usage:
    python scripts/run_demo.py [--data_dir data/demo] [--out runs/demo] [--bundles NAME ...]
                               [--num_subjects 12] [--shape "96,112,96"] [--seed 0] [--regenerate]
                               [--ablations runs/ablations] [--overrides FILE]

Writes ``<out>/report.md``: the data summary (tissue intensities per modality, tumour burden, a montage of
one subject), the leaderboard (:mod:`leaderboard`: one table per task with every bundle's default row, the
ablation rows found in ``--ablations`` and the task's baseline on the same test cases, mean ± std; one figure per
task, the same slice from every method), and, per bundle, a first line saying whether its default row beats the
baseline (with the numbers), the test-set metrics table of ``configs/demo.json`` training (narrow networks, few
epochs: CPU-sized, not the paper's settings), its figure grid, and the time of each step. ``--overrides FILE``
(JSON ``{bundle: {config id: value}}``) shrinks runs further, e.g. for smoke tests.
Bundles run in this process through ``monai.bundle.ConfigWorkflow``, exactly as
``python -m monai.bundle run`` would run them with the same config files and overrides.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import leaderboard  # noqa: E402

from common.data.phantom import generate_dataset, phantom_options_record  # noqa: E402
from common.data.phantom_physics import IMAGE_KEYS  # noqa: E402
from common.utils.figures import window_to_uint8  # noqa: E402

log = logging.getLogger("run_demo")

SUMMARY_TISSUES = {1: "CSF", 2: "GM", 3: "WM", 11: "enhancing"}
# the shared demo set (the contrast-enhancement bundles): larger enhancing lesions than the phantom's default
# (0.15, 0.28), and at least one per subject (default 0-3), so every split, the validation case included, has an
# enhancing rim to learn and score (bundles/amcgan_contrast_mri/docs/README.md)
DEMO_PHANTOM = {"tumor_radius_range": (0.25, 0.4), "num_tumors": (1, 3)}
# bundles whose demo needs its own phantom grid or inference configs (the others use the shared demo data):
# super-resolution needs fine in-plane slices so x4 inputs are not a handful of voxels, and is scored by
# inference from the degraded high-resolution volume; the 32^3-patch context GAN runs on a 2 mm grid.
BUNDLE_DEMO = {
    "fagan_super_resolution": {
        "data": ("fagan_sr", {"num_subjects": 8, "shape": [128, 144, 12], "spacing": [0.75, 0.75, 8.0]}),
        "infer": ["inference.json", "inference_from_hr.json"],
    },
    "context_gan_synthesis": {
        "data": ("context_gan_synthesis", {"num_subjects": 12, "shape": [48, 56, 48], "spacing": [2.0, 2.0, 2.0]}),
    },
    # a 32^3 patch of the 1 mm head holds too little anatomy for the demo's few iterations (bundle README)
    "dual_discriminator_synthesis": {
        "data": (
            "dual_discriminator_synthesis",
            {"num_subjects": 12, "shape": [48, 56, 48], "spacing": [2.0, 2.0, 2.0]},
        ),
    },
}


def ensure_data(
    data_dir: Path,
    num_subjects: int,
    shape: list[int],
    seed: int,
    regenerate: bool,
    spacing: list[float] | None = None,
    phantom: dict | None = None,
) -> tuple[Path, float]:
    """Generate the phantom data set unless one with the same grid, seed, size and phantom options is there."""
    datalist = data_dir / "datalist.json"
    phantom = dict(phantom or {})
    if datalist.is_file() and not regenerate:
        meta = json.loads(datalist.read_text())
        if (
            meta.get("shape") == list(shape)
            and meta.get("seed") == seed
            and meta.get("numTraining", 0) + meta.get("numValidation", 0) + meta.get("numTest", 0) == num_subjects
            and (spacing is None or meta.get("spacing") == list(spacing))
            and meta.get("phantom_options", {}) == phantom_options_record(phantom)
        ):
            log.info("demo data present at %s", data_dir)
            return datalist, 0.0
    start = time.perf_counter()
    kwargs = {} if spacing is None else {"spacing": spacing}
    kwargs.update(phantom)
    generate_dataset(data_dir, num_subjects=num_subjects, shape=shape, seed=seed, num_workers=2, **kwargs)
    return datalist, time.perf_counter() - start


def data_summary(datalist: Path, out: Path) -> str:
    """Markdown: per-modality mean intensity in CSF/GM/WM/enhancing tumour over all subjects; a montage."""
    meta = json.loads(datalist.read_text())
    cases = [c for split in ("training", "validation", "test") for c in meta[split]]
    root = datalist.parent
    sums: dict[str, dict[int, list[float]]] = {k: {t: [] for t in SUMMARY_TISSUES} for k in IMAGE_KEYS}
    tumour_ml = []
    for case in cases:
        labels = np.asarray(nib.load(root / case["labels"]).dataobj)
        tumour = np.asarray(nib.load(root / case["tumor_mask"]).dataobj)
        tumour_ml.append(float((tumour > 0).sum()) * float(np.prod(meta["spacing"])) / 1000.0)
        for key in IMAGE_KEYS:
            img = np.asarray(nib.load(root / case[key]).dataobj, dtype=np.float32)
            for t in SUMMARY_TISSUES:
                if (labels == t).any():
                    sums[key][t].append(float(img[labels == t].mean()))
    lines = [
        f"{len(cases)} subjects ({meta['numTraining']} training / {meta['numValidation']} validation / "
        f"{meta['numTest']} test), {meta['shape']} voxels at {meta['spacing']} mm, seed {meta['seed']}; "
        f"tumour volume per subject {np.mean(tumour_ml):.1f} ± {np.std(tumour_ml):.1f} ml.",
        "",
        "Mean intensity per tissue (tissue label map; MR in arbitrary units, ADC in mm²/s, CT in HU):",
        "",
        "| modality | " + " | ".join(SUMMARY_TISSUES.values()) + " |",
        "|---|" + "---|" * len(SUMMARY_TISSUES),
    ]
    for key in IMAGE_KEYS:
        vals = [np.mean(sums[key][t]) if sums[key][t] else float("nan") for t in SUMMARY_TISSUES]
        fmt = "{:.2e}" if key == "adc" else "{:.0f}"
        lines.append(f"| {key} | " + " | ".join(fmt.format(v) for v in vals) + " |")
    # a montage of the subject with the largest tumour
    case = cases[int(np.argmax(tumour_ml))]  # the subject with the largest tumour
    tumour = np.asarray(nib.load(root / case["tumor_mask"]).dataobj)
    z = int(np.argmax((tumour > 0).sum(axis=(0, 1)))) if tumour.any() else tumour.shape[2] // 2
    tiles = []
    for key in (*IMAGE_KEYS, "tumor_mask"):
        vol = np.asarray(nib.load(root / case[key]).dataobj, dtype=np.float32)
        sl = vol[:, :, z]
        lo, hi = (0.0, 3.0) if key == "tumor_mask" else np.percentile(sl, (0.5, 99.5))
        tiles.append((key, np.rot90(window_to_uint8(sl, lo, hi))))
    h, w = tiles[0][1].shape
    canvas = Image.new("L", (len(tiles) * (w + 4) + 4, h + 18), 0)
    draw = ImageDraw.Draw(canvas)
    for i, (key, tile) in enumerate(tiles):
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (4 + i * (w + 4), 16))
        draw.text((4 + i * (w + 4), 2), key, fill=255, font=ImageFont.load_default())
    canvas.save(out / "data_montage.png")
    lines += ["", f"![{case['subject']}, axial slice {z}](data_montage.png)", ""]
    return "\n".join(lines)


def _workflow(bundle: Path, configs: list[str], overrides: dict) -> float:
    from monai.bundle import ConfigWorkflow

    start = time.perf_counter()
    wf = ConfigWorkflow(
        config_file=[str(bundle / "configs" / c) for c in configs],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=None,
        **overrides,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    return time.perf_counter() - start


def run_bundle(
    bundle: Path, data_dir: Path, out: Path, infer_configs: list[str] | None = None, overrides: dict | None = None
) -> dict:
    """Train (demo override), evaluate on the test list, infer on the test list; return timings and metrics.

    ``overrides``: extra config ids for every workflow (e.g. tiny widths in tests).
    """
    run_dir = out / bundle.name
    common = {"dataset_dir": str(data_dir), "bundle_root": str(bundle), "ckpt_dir": str(run_dir / "models")}
    common.update(overrides or {})
    timings = {
        "train": _workflow(
            bundle,
            ["train.json", "demo.json"],
            {**common, "output_dir": str(run_dir / "train"), "log_dir": str(run_dir / "logs")},
        ),
        "evaluate": _workflow(
            bundle, ["train.json", "demo.json", "evaluate.json"], {**common, "output_dir": str(run_dir / "eval")}
        ),
        "infer": _workflow(
            bundle,
            [*(infer_configs or ["inference.json"]), "demo.json"],
            {**common, "output_dir": str(run_dir / "inference")},
        ),
    }
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    return {"timings": timings, "summary": summary, "run_dir": run_dir, "configs": ["train.json", "demo.json"]}


def _metrics_table(summary: dict) -> list[str]:
    metrics = summary.get("metrics", summary)
    lines = ["| metric | mean ± std | cases |", "|---|---|---|"]
    for name, stats in metrics.items():
        if isinstance(stats, dict) and "mean" in stats:
            lines.append(f"| {name} | {stats['mean']:.4g} ± {stats.get('std', 0.0):.3g} | {stats.get('count', '')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default=str(REPO / "data" / "demo"))
    ap.add_argument("--out", default=str(REPO / "runs" / "demo"))
    ap.add_argument(
        "--bundles",
        nargs="*",
        default=None,
        help="bundle names (default: every bundle with configs/demo.json; none given: data only)",
    )
    ap.add_argument("--num_subjects", type=int, default=12)
    ap.add_argument("--shape", default="96,112,96")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--ablations", default=None, help="folder of run_ablations.py tables (default: <out>/ablations)")
    ap.add_argument("--overrides", default=None, help="JSON file {bundle: {config id: value}} for every workflow")
    args = ap.parse_args(argv)
    overrides = json.loads(Path(args.overrides).read_text()) if args.overrides else {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    total_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = [int(s) for s in str(args.shape).strip("[]()").split(",")]
    datalist, gen_s = ensure_data(
        Path(args.data_dir), args.num_subjects, shape, args.seed, args.regenerate, phantom=DEMO_PHANTOM
    )
    report = ["# Demo report", "", "## Demo data (physics phantom)", ""]
    report.append(f"Generated in {gen_s:.1f} s." if gen_s else "Reused the existing data.")
    report += ["", data_summary(datalist, out)]
    names = (
        args.bundles
        if args.bundles is not None
        else sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/demo.json"))
    )
    failures, rows, sections = 0, [], {}
    if not names:
        report += ["## Bundles", "", "No bundle is present yet: only the data was generated and summarised.", ""]
    for name in names:
        bundle = REPO / "bundles" / name
        section = sections[name] = [f"## {name}", ""]
        try:
            demo = BUNDLE_DEMO.get(name, {})
            data_dir = Path(args.data_dir)
            if "data" in demo:
                folder, spec = demo["data"]
                data_dir = Path(args.data_dir).parent / folder
                ensure_data(data_dir, spec["num_subjects"], spec["shape"], args.seed, args.regenerate, spec["spacing"])
            res = run_bundle(bundle, data_dir, out, demo.get("infer"), overrides.get(name))
        except Exception as e:  # report the failure, go on with the other bundles, exit non-zero
            log.exception("bundle %s failed", name)
            section += [f"**Failed**: `{type(e).__name__}: {e}`", ""]
            failures += 1
            continue
        rows.append(
            leaderboard.make_row(
                "default (demo.json)",
                bundle,
                res["summary"],
                data_dir,
                res["configs"],
                pred_dir=str(res["run_dir"] / "inference"),
            )
        )
        t = res["timings"]
        section += [
            f"`configs/demo.json` settings (CPU-sized: narrow networks, few epochs — not the paper's). "
            f"Train {t['train']:.0f} s, evaluate {t['evaluate']:.0f} s, infer {t['infer']:.0f} s.",
            "",
            *_metrics_table(res["summary"]),
            "",
        ]
        grid = res["run_dir"] / "eval" / "figure_grid.png"
        if grid.is_file():
            section += [f"![{name} test cases]({grid.relative_to(out)})", ""]
    rows += leaderboard.ablation_rows(Path(args.ablations) if args.ablations else out / "ablations")
    board: dict = {}
    if rows:
        try:
            lines, board = leaderboard.leaderboard(rows, out)
        except Exception as e:  # the per-bundle sections still get written
            log.exception("leaderboard failed")
            lines, failures = [f"**Leaderboard failed**: `{type(e).__name__}: {e}`", ""], failures + 1
        report += ["## Leaderboard", "", "Test split; mean ± std over the test cases (over seeds where marked); "]
        report[-1] += "one metric space: the written output in the target's units, PSNR/SSIM peak = target range."
        report += ["", *lines]
        for row in rows:
            if row["spread"] == "cases" and row["bundle"] in sections and row["task"] in board:
                bases = [r for r in board[row["task"]]["rows"] if r["kind"] == "baseline"]
                sections[row["bundle"]].insert(2, leaderboard.verdict(row, bases))
                sections[row["bundle"]].insert(3, "")
    for name in names:
        report += sections[name]
    total = time.perf_counter() - total_start
    report += [f"Total time {total:.0f} s ({total / 60:.1f} min)."]
    (out / "report.md").write_text("\n".join(report) + "\n")
    print(f"report: {out / 'report.md'} ({total:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
