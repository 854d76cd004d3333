"""Start a new bundle from the skeleton in ``scripts/bundle_template/``.

Usage:
    python scripts/new_bundle.py NAME [--kind gan|supervised] [--bundles_dir bundles]

The skeleton is a working bundle (a MONAI ``BasicUNet`` on 3D patches, T1 -> T2 on the demo data) with every
id, handler and check of ``docs/bundle_conventions.md`` already wired: pre-checks, the training lock, the
non-finite guard, the canonical checkpoint dict, ``val_psnr`` in the target's units, rank-0 logging,
``amp`` on CPU and CUDA. ``--kind gan`` keeps one conditional PatchGAN discriminator; ``--kind supervised``
removes it (the same trainer with no discriminator). Next: put the paper's networks and losses into
``common/``, point ``network_def`` / ``dnetwork_def`` / ``g_loss`` at them, and add one ``BundleSpec`` to
``tests/bundles/contract.py``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).resolve().parent / "bundle_template"
PLACEHOLDER = "__NAME__"
DISCRIMINATOR_IDS = (
    "dnetwork_def",
    "dnetwork",
    "d_optimizer",
    "d_loss",
    "d_channels",
    "d_num_layers",
    "d_norm",
    "d_learning_rate",
    "lambda_adv",
    "gan_mode",
)

__all__ = ["new_bundle", "main"]


def _drop_discriminator(bundle: Path) -> None:
    """Turn the GAN skeleton into a supervised one: no discriminator, no adversarial term."""
    train = bundle / "configs" / "train.json"
    config = json.loads(train.read_text())
    for key in DISCRIMINATOR_IDS:
        config.pop(key, None)
    config["train"]["discriminators"] = {}
    for key in ("adversarial_weights", "adversarial_modes"):
        config["g_loss"].pop(key, None)
    train.write_text(json.dumps(config, indent=4) + "\n")
    for name, drop in (("multi_gpu_train.json", ("dnetwork",)), ("demo.json", ("d_channels", "d_num_layers"))):
        path = bundle / "configs" / name
        override = {k: v for k, v in json.loads(path.read_text()).items() if k not in drop}
        path.write_text(json.dumps(override, indent=4) + "\n")
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("discriminator_data_format", None)
    meta_path.write_text(json.dumps(meta, indent=4) + "\n")


def new_bundle(name: str, kind: str = "gan", bundles_dir: Path = REPO / "bundles") -> Path:
    """Copy the skeleton to ``bundles_dir/name`` and fill in the name; returns the new folder.

    Raises:
        ValueError: ``name`` is not a lowercase folder name, ``kind`` is unknown, or the folder exists.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"name must be a lowercase folder name (letters, digits, '_'), got {name!r}.")
    if kind not in ("gan", "supervised"):
        raise ValueError(f"kind must be 'gan' or 'supervised', got {kind!r}.")
    bundle = Path(bundles_dir) / name
    if bundle.exists():
        raise ValueError(f"'{bundle}' exists already; choose another name or remove it.")
    shutil.copytree(TEMPLATE, bundle)
    for path in bundle.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".yml", ".conf", ".txt"):
            path.write_text(path.read_text().replace(PLACEHOLDER, name))
    if kind == "supervised":
        _drop_discriminator(bundle)
    return bundle


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="bundle folder name, e.g. my_method_synthesis")
    parser.add_argument("--kind", default="gan", choices=("gan", "supervised"))
    parser.add_argument("--bundles_dir", default=str(REPO / "bundles"))
    args = parser.parse_args(argv)
    try:
        bundle = new_bundle(args.name, args.kind, Path(args.bundles_dir))
    except ValueError as e:
        print(f"new_bundle: {e}", file=sys.stderr)
        return 1
    print(f"created {bundle}; next: docs/bundle_conventions.md, 'A new bundle, step by step'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
