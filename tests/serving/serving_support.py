"""Shared by the serving tests: the bundles to loop over, the tiny settings, and a reference run
of a bundle's own ``inference.json`` (tiny settings, random weights) to compare served results with."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from contract import BUNDLES, BundleSpec, abs_case, output_path, run, workflow  # tests/bundles, see conftest.py

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "serving" / "monailabel"

__all__ = ["REPO", "APP_DIR", "BUNDLE_NAMES", "spec_for", "test_cases", "reference_run"]

# every bundle folder: a bundle added later is served and tested without registering it here
BUNDLE_NAMES = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/inference.json"))


# smaller still than the contract's tiny settings, for speed: self-attention over a whole x4 slice is N^2
FASTER = {"fagan_super_resolution": {"sa_kv_pool": 8}}


def spec_for(name: str) -> BundleSpec:
    """The contract's spec of bundle ``name`` (its tiny settings, plus :data:`FASTER`); a bundle not registered
    there runs as it is."""
    for spec in BUNDLES:
        if spec.name == name:
            return dataclasses.replace(spec, tiny={**spec.tiny, **FASTER.get(name, {})})
    return BundleSpec(name=name, tiny={}, source_keys=(), target_key="")


SPLIT = "validation"  # the tiny phantom's one-case split: the contract tests cover the others


def test_cases(tiny_phantom: str) -> list[dict]:
    """The cases of the tiny phantom's :data:`SPLIT`, with absolute paths."""
    entries = json.loads((Path(tiny_phantom) / "datalist.json").read_text())[SPLIT]
    return [abs_case(tiny_phantom, e) for e in entries]


test_cases.__test__ = False  # a helper, not a test


def reference_run(name: str, tiny_phantom: str, root: Path) -> dict[str, Path]:
    """Random weights at ``root/models/model.pt``, then the bundle's own inference over :data:`SPLIT`.

    Returns ``{case name: written output}``; the served task must reproduce these files.
    """
    spec = spec_for(name)
    wf = workflow(spec, spec.infer_configs, root, workflow_type="infer", dataset_dir=tiny_phantom, datalist_key=SPLIT)
    torch.manual_seed(0)
    network = wf.parser.get_parsed_content("network_def")
    (root / "models").mkdir(parents=True, exist_ok=True)
    torch.save({"model": network.state_dict()}, root / "models" / "model.pt")
    run(wf)
    cases = wf.parser.get_parsed_content("datalist_data")
    return {c["subject"]: output_path(spec, wf, root / "eval", c["subject"]) for c in cases}
