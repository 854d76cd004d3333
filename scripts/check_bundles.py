"""Run the Model Zoo's bundle checks offline, for every bundle (or the ones named).

Usage:
    python scripts/check_bundles.py [bundle ...] [--schema PATH] [--override configs/demo.json]

Checks, one line each per bundle: required files; the canonical config ids and the hardening wiring of
``docs/bundle_conventions.md`` (pre-checks, lock, checkpoint dict, the collection's ``val_psnr``); the version
is in the changelog; the metadata's package versions equal requirements.txt; ``verify_metadata`` against the
Model Zoo schema (offline copy); ``verify_net_in_out``; ``ckpt_export`` (from a temporary copy; a checkout
without trained weights exports freshly initialised weights) and the exported TorchScript gives the eager output.
Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
REQUIRED_FILES = (
    "configs/metadata.json",
    "configs/train.json",
    "configs/inference.json",
    "configs/evaluate.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
    "LICENSE",
    "large_files.yml",
)
TRAIN_IDS = (
    "bundle_root", "dataset_dir", "datalist", "source_keys", "target_key", "device", "amp", "seed", "ckpt_dir",
    "output_dir", "log_dir", "resume", "val_interval", "max_epochs", "network_def", "network",
    "train#datalist_data", "train#preprocessing", "train#dataset", "train#dataloader", "train#inferer",
    "train#handlers", "train#trainer", "train#save_dict", "train#checkpoint_loader", "train#checkpoint_saver",
    "train#lock", "validate#datalist_data", "validate#preprocessing", "validate#postprocessing", "validate#dataset",
    "validate#dataloader", "validate#inferer", "validate#key_metric#val_psnr", "validate#handlers",
    "validate#best_model_saver", "validate#evaluator", "initialize", "run", "finalize",
)  # fmt: skip
INFER_IDS = (
    "bundle_root", "dataset_dir", "datalist", "datalist_key", "datalist_data", "source_keys", "device", "amp",
    "ckpt_dir", "ckpt_path", "output_dir", "output_suffix", "network_def", "network", "preprocessing",
    "postprocessing", "inferer", "dataset", "dataloader", "checkpoint_loader", "handlers", "evaluator",
    "initialize", "run", "finalize",
)  # fmt: skip
# what the template-hardening conventions put into the configs (docs/bundle_conventions.md)
TRAIN_WIRING = {
    "train#trainer#_target_": "PairedGanTrainer",
    "train#save_dict": "checkpoint_dict(",
    "validate#key_metric#val_psnr#metric_fn#_target_": "MaskedPSNRMetric",
    "validate#key_metric#val_psnr#metric_fn#data_range": "target_range",
    "initialize": ("check_finite=True", "check_output_dir(@ckpt_dir)", "@train#lock.attach("),
    "finalize": ("@train#lock.release()",),
}
INFER_WIRING = {"initialize": ("check_finite=True", "check_checkpoint(@ckpt_path)", "check_output_dir(@output_dir)")}
VERSION_FIELDS = {"monai_version": "monai", "pytorch_version": "torch", "numpy_version": "numpy"}

__all__ = ["pinned_versions", "check_bundle", "main"]


def pinned_versions(requirements: Path = REPO / "requirements.txt") -> dict[str, str]:
    """``{package: version}`` of the ``==`` pins in requirements.txt (extras stripped, names lower-case)."""
    pins = {}
    for line in requirements.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==\s*([^\s;#]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(3)
    return pins


def _check_files(bundle: Path, **_) -> str:
    missing = [f for f in REQUIRED_FILES if not (bundle / f).is_file()]
    if missing:
        raise AssertionError(f"missing {missing}")
    return f"{len(REQUIRED_FILES)} files"


def _missing_wiring(config: Path, ids: Sequence[str], wiring: dict) -> list[str]:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config))
    problems = [f"no id '{i}'" for i in ids if i not in parser]
    for id_, needles in wiring.items():
        text = json.dumps(parser.get(id_)) if id_ in parser else ""
        for needle in (needles,) if isinstance(needles, str) else needles:
            if needle not in text:
                problems.append(f"'{id_}' lacks {needle!r}")
    return [f"{config.name}: {p}" for p in problems]


def _check_ids(bundle: Path, **_) -> str:
    problems = _missing_wiring(bundle / "configs/train.json", TRAIN_IDS, TRAIN_WIRING)
    problems += _missing_wiring(bundle / "configs/inference.json", INFER_IDS, INFER_WIRING)
    if problems:
        raise AssertionError("; ".join(problems))
    return f"{len(TRAIN_IDS)} train and {len(INFER_IDS)} inference ids, hardening wired"


def _check_changelog(bundle: Path, **_) -> str:
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    if meta.get("version") not in meta.get("changelog", {}):
        raise AssertionError(f"version {meta.get('version')} is not in the changelog")
    return f"version {meta['version']}"


def _check_versions(bundle: Path, **_) -> str:
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    pins = pinned_versions()
    wrong = []
    for field, pkg in VERSION_FIELDS.items():
        if meta.get(field) != pins.get(pkg):
            wrong.append(f"{field}={meta.get(field)} (requirements: {pins.get(pkg)})")
    for field in ("required_packages_version", "optional_packages_version"):
        for pkg, version in meta.get(field, {}).items():
            if pins.get(pkg.lower()) != version:
                wrong.append(f"{field}[{pkg}]={version} (requirements: {pins.get(pkg.lower())})")
    if wrong:
        raise AssertionError("; ".join(wrong))
    return "equal to requirements.txt"


def _check_metadata(bundle: Path, schema: Path, **_) -> str:
    from monai.bundle import verify_metadata

    if not schema.is_file():
        raise AssertionError(f"schema file '{schema}' not found (pass --schema)")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "schema.json"
        shutil.copy(schema, local)  # an existing file: verify_metadata does not download
        verify_metadata(meta_file=str(bundle / "configs/metadata.json"), filepath=str(local))
    return f"valid against {schema.name}"


def _configs(bundle: Path, overrides: Sequence[str]) -> list[str]:
    return [str(bundle / "configs/inference.json")] + [str(bundle / o) for o in overrides if (bundle / o).is_file()]


def _check_net_in_out(bundle: Path, overrides: Sequence[str], **_) -> str:
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs/metadata.json"),
        config_file=_configs(bundle, overrides),
        device="cpu",
        p=1,
        n=1,
        any=1,
    )
    return "input/output shapes and dtypes as in the metadata"


def _check_export(bundle: Path, overrides: Sequence[str], **_) -> str:
    import torch

    from monai.bundle import ConfigParser, ckpt_export
    from monai.bundle.scripts import _get_fake_input_shape

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / bundle.name
        shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("eval", "*.ts"))
        configs = _configs(copy, overrides)
        parser = ConfigParser()
        parser.read_config(configs)
        parser.read_meta(str(copy / "configs/metadata.json"))
        parser["bundle_root"] = str(copy)
        net = parser.get_parsed_content("network_def").eval()
        ckpt = copy / "models" / "model.pt"
        source = "trained weights"
        if ckpt.is_file():
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            net.load_state_dict(state["model"] if "model" in state else state)
        else:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save(net.state_dict(), ckpt)
            source = "freshly initialised weights (no trained model.pt)"
        ts_path = copy / "models" / "model.ts"
        ckpt_export(
            net_id="network_def",
            filepath=str(ts_path),
            ckpt_file=str(ckpt),
            meta_file=str(copy / "configs/metadata.json"),
            config_file=configs,
            bundle_root=str(copy),
        )
        scripted = torch.jit.load(str(ts_path), map_location="cpu").eval()
        shape = _get_fake_input_shape(parser)
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            eager, ts = net(x), scripted(x)
        diff = float((eager - ts).abs().max())
        if diff > 1e-4:
            raise AssertionError(f"TorchScript output differs from eager by {diff:.3g}")
    return f"TorchScript of {source} equals eager (max diff {diff:.1e}) on input {tuple(shape)}"


CHECKS: dict[str, Callable[..., str]] = {
    "files": _check_files,
    "ids": _check_ids,
    "changelog": _check_changelog,
    "versions": _check_versions,
    "verify_metadata": _check_metadata,
    "verify_net_in_out": _check_net_in_out,
    "ckpt_export": _check_export,
}


def check_bundle(
    bundle: Path, schema: Path = DEFAULT_SCHEMA, overrides: Sequence[str] = ()
) -> dict[str, tuple[bool, str]]:
    """Run every check on one bundle folder; ``{check: (passed, detail)}``."""
    results: dict[str, tuple[bool, str]] = {}
    for name, check in CHECKS.items():
        try:
            results[name] = (True, check(bundle, schema=schema, overrides=overrides))
        except Exception as e:  # a check's failure is reported, the others still run
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            logging.getLogger("check_bundles").debug(traceback.format_exc())
            results[name] = (False, f"{type(e).__name__}: {detail}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="*", help="bundle names (default: every folder in bundles/)")
    parser.add_argument("--schema", default=str(DEFAULT_SCHEMA), help="offline copy of the Model Zoo metadata schema")
    parser.add_argument(
        "--override", action="append", default=[], help="extra config relative to the bundle, e.g. configs/demo.json"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    names = args.bundles or sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/metadata.json"))
    if not names:
        print("no bundles found in bundles/")
        return 1
    failed = 0
    for name in names:
        bundle = REPO / "bundles" / name
        if not bundle.is_dir():
            print(f"{name:32s} {'exists':18s} FAIL  no folder bundles/{name}")
            failed += 1
            continue
        for check, (ok, detail) in check_bundle(bundle, Path(args.schema), args.override).items():
            failed += not ok
            print(f"{name:32s} {check:18s} {'PASS' if ok else 'FAIL'}  {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
