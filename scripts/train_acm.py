"""Train the auto-context cascade of the context-aware GAN bundle, stage after stage, with ``monai.bundle run``.

Nie et al. (IEEE TBME 2018, Sec. II-D; seed report Sec. 3.2) train K GANs one after another: stage 1 maps the
source to the target; stage k >= 2 takes the source and the stage k-1 synthesis of the *whole* volume as two
channels. The synthetic volumes stage k trains on are produced by the cascade of stages 1..k-1 on the training
(and validation) subjects. For ``k = 1..K`` this script runs:

1. train stage k: ``configs/train.json`` (+ ``configs/acm_stage.json --stage k`` for k >= 2) + the extra configs;
   stage 1 keeps its checkpoints in ``<acm_root>`` (default ``<bundle_root>/models``), stage k in
   ``<acm_root>/stage<k>`` (every stage's ``model.pt`` and latest full state are kept);
2. if k < K: the stages 1..k (``configs/inference.json`` + ``configs/inference_acm.json --acm_stages k``) over the
   training and validation subjects, written to ``<acm_root>/stage<k+1>/inputs``, and the stage-(k+1) datalist
   ``<acm_root>/stage<k+1>/datalist.json``: the original entries plus ``acm_prev`` = that synthesis;
3. with ``--evaluate``: ``train.json + evaluate.json + evaluate_acm.json --acm_stages k`` on the test list,
   written to ``<eval_dir>/acm_stage<k>`` (default ``<bundle_root>/eval``), and a table ``acm_stages.md``
   of every stage's summary.

Usage:
    python scripts/train_acm.py --bundle_root bundles/context_gan_synthesis --stages 3 \\
        [--config configs/demo.json ...] [--dataset_dir DIR] [--evaluate] [--start_stage K] [--any_id VALUE ...]

Unknown ``--id value`` pairs are passed to every ``monai.bundle run`` call (e.g. ``--max_epochs 2``). The calls run
in this process (``monai.bundle.run``, the function behind the command line); ``--subprocess`` starts
``python -m monai.bundle run`` for each instead.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.data import assign_case_names, load_datalist  # noqa: E402

__all__ = ["stage_dir", "synthesis_path", "write_stage_datalist", "bundle_run", "main"]

CONTEXT_KEY = "acm_prev"
SPLITS = ("training", "validation")


def stage_dir(acm_root: str | Path, stage: int) -> Path:
    """Checkpoint folder of stage ``stage``: ``acm_root`` for stage 1, ``acm_root/stage<k>`` after."""
    return Path(acm_root) if stage == 1 else Path(acm_root) / f"stage{stage}"


def synthesis_path(output_dir: str | Path, case: str, target_key: str) -> Path:
    """Where ``inference.json`` writes a case: ``<output_dir>/<case>/<case>_<target>_synth.nii.gz``."""
    return Path(output_dir) / case / f"{case}_{target_key}_synth.nii.gz"


def write_stage_datalist(
    datalist: str | Path,
    out_file: str | Path,
    synthesis_dir: str | Path,
    source_key: str,
    target_key: str,
    splits: Sequence[str] = SPLITS,
    context_key: str = CONTEXT_KEY,
) -> dict[str, list[dict]]:
    """The stage-(k+1) datalist: each entry of ``splits`` with ``context_key`` = its stage-k synthesis (absolute paths).

    Raises:
        FileNotFoundError: naming the case, when its synthesis was not written.
    """
    lists: dict[str, list[dict]] = {}
    for split in splits:
        cases = assign_case_names(load_datalist(str(datalist), split), source_key)
        for case in cases:
            path = synthesis_path(synthesis_dir, case["subject"], target_key)
            if not path.is_file():
                raise FileNotFoundError(f"the synthesis of case '{case['subject']}' ({path}) was not written.")
            case[context_key] = str(path)
        lists[split] = cases
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(lists, indent=2))
    return lists


def _extra_overrides(extra: Sequence[str]) -> dict[str, object]:
    """``["--max_epochs", "2", "--lr", "1e-3"]`` -> ``{"max_epochs": 2, "lr": 0.001}`` (JSON values, else strings)."""
    if len(extra) % 2 or any(not k.startswith("--") for k in extra[::2]):
        raise SystemExit(f"extra arguments must be '--id value' pairs, got {' '.join(extra)}")
    out: dict[str, object] = {}
    for key, value in zip(extra[::2], extra[1::2]):
        try:
            out[key[2:]] = json.loads(value)
        except json.JSONDecodeError:
            out[key[2:]] = value
    return out


def bundle_run(
    configs: Sequence[Path], meta: Path, args: dict[str, object], extra: Sequence[str], in_process: bool = True
) -> None:
    """``monai.bundle run --config_file [...] --id value ...``; raises on failure.

    ``in_process`` calls ``monai.bundle.run`` (the function behind the command line) in this process, saving an
    interpreter start and the torch + MONAI import per stage; ``False`` starts ``python -m monai.bundle run``.
    """
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        json.dumps([str(c) for c in configs]),
        "--meta_file",
        str(meta),
        "--logging_file",
        str(meta.parent / "logging.conf"),
    ]
    for key, value in args.items():
        cmd += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    cmd += list(extra)
    print("+", " ".join(cmd), flush=True)
    if in_process:
        from monai.bundle import run

        run(
            config_file=[str(c) for c in configs],
            meta_file=str(meta),
            logging_file=str(meta.parent / "logging.conf"),
            **args,
            **_extra_overrides(extra),
        )
        return
    result = subprocess.run(cmd, cwd=str(REPO))
    if result.returncode != 0:
        raise SystemExit(f"monai.bundle run failed ({result.returncode}): {' '.join(cmd)}")


def _summary_table(rows: list[tuple[int, dict]]) -> str:
    names = [
        n for n in ("psnr", "mae", "ssim", "psnr_brain", "mae_brain", "psnr_tumor", "mae_tumor") if n in rows[0][1]
    ]
    lines = ["| stage | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for stage, metrics in rows:
        cells = [f"{metrics[n]['mean']:.4g} ± {metrics[n]['std']:.2g}" if n in metrics else "" for n in names]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle_root", default=str(REPO / "bundles" / "context_gan_synthesis"))
    ap.add_argument("--stages", type=int, default=3, help="K, the number of auto-context stages")
    ap.add_argument("--start_stage", type=int, default=1, help="resume the cascade at this stage")
    ap.add_argument("--config", action="append", default=[], help="extra override config, relative to the bundle")
    ap.add_argument("--dataset_dir", default=None)
    ap.add_argument("--datalist", default=None)
    ap.add_argument("--acm_root", default=None, help="default: <bundle_root>/models")
    ap.add_argument("--source_key", default="t1ce", help="first source key (names the cases)")
    ap.add_argument("--target_key", default="t2")
    ap.add_argument("--evaluate", action="store_true", help="evaluate every stage on the test list")
    ap.add_argument("--eval_dir", default=None, help="evaluation folder (default: <bundle_root>/eval)")
    ap.add_argument("--skip_training", action="store_true", help="only evaluate the stages already trained")
    ap.add_argument(
        "--subprocess", action="store_true", help="run every step as its own 'python -m monai.bundle run' process"
    )
    args, extra = ap.parse_known_args(argv)
    if args.stages < 1 or not 1 <= args.start_stage <= args.stages:
        ap.error(f"need stages >= 1 and 1 <= start_stage <= stages, got {args.stages}, {args.start_stage}.")
    root = Path(args.bundle_root).absolute()
    configs = root / "configs"
    meta = configs / "metadata.json"
    extra_configs = [root / c for c in args.config]
    acm_root = Path(args.acm_root or root / "models").absolute()
    eval_dir = Path(args.eval_dir or root / "eval").absolute()
    dataset_dir = args.dataset_dir or str(REPO / "data" / "demo")
    datalist = Path(args.datalist or Path(dataset_dir) / "datalist.json").absolute()
    common_args: dict[str, object] = {
        "bundle_root": str(root),
        "dataset_dir": dataset_dir,
        "source_keys": [args.source_key],
        "target_key": args.target_key,
    }

    for k in range(args.start_stage, 0 if args.skip_training else args.stages + 1):
        stage_args = dict(common_args, ckpt_dir=str(stage_dir(acm_root, k)))
        files = [configs / "train.json", *extra_configs]
        if k == 1:
            stage_args["datalist"] = str(datalist)
        else:
            files.append(configs / "acm_stage.json")
            stage_args.update(stage=k, acm_root=str(acm_root))
        bundle_run(files, meta, stage_args, extra, not args.subprocess)
        if k == args.stages:
            break
        out_dir = stage_dir(acm_root, k + 1) / "inputs"
        combined = stage_dir(acm_root, k + 1) / "subjects.json"
        cases = {s: load_datalist(str(datalist), s) for s in SPLITS}
        combined.parent.mkdir(parents=True, exist_ok=True)
        combined.write_text(json.dumps({"acm": cases["training"] + cases["validation"]}))
        infer_args = dict(
            common_args,
            datalist=str(combined),
            datalist_key="acm",
            output_dir=str(out_dir),
            ckpt_dir=str(acm_root),
            acm_root=str(acm_root),
            acm_stages=k,
        )
        bundle_run(
            [configs / "inference.json", *extra_configs, configs / "inference_acm.json"],
            meta,
            infer_args,
            extra,
            not args.subprocess,
        )
        write_stage_datalist(
            datalist, stage_dir(acm_root, k + 1) / "datalist.json", out_dir, args.source_key, args.target_key
        )

    if args.evaluate:
        rows = []
        for k in range(1, args.stages + 1):
            out = eval_dir / f"acm_stage{k}"
            eval_args = dict(
                common_args,
                datalist=str(datalist),
                ckpt_dir=str(acm_root),
                acm_root=str(acm_root),
                acm_stages=k,
                output_dir=str(out),
            )
            files = [configs / "train.json", *extra_configs, configs / "evaluate.json", configs / "evaluate_acm.json"]
            bundle_run(files, meta, eval_args, extra, not args.subprocess)
            rows.append((k, json.loads((out / "summary.json").read_text())["metrics"]))
        table = _summary_table(rows)
        (eval_dir / "acm_stages.md").write_text(table)
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
