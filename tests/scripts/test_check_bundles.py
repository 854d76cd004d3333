from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/metadata.json"))


check_bundles = load_script("check_bundles")


def test_pinned_versions_match_requirements():
    pins = check_bundles.pinned_versions()
    assert pins["torch"] == "2.13.0" and pins["monai"] == "1.6.1"
    import numpy
    import torch

    import monai

    assert monai.__version__ == pins["monai"]
    assert torch.__version__.split("+")[0] == pins["torch"]
    assert numpy.__version__ == pins["numpy"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_passes_every_check(bundle):
    results = check_bundles.check_bundle(REPO / "bundles" / bundle, overrides=["configs/demo.json"])
    failed = {k: v for k, (ok, v) in results.items() if not ok}
    assert not failed
    assert set(results) == set(check_bundles.CHECKS)


@pytest.mark.skipif(not BUNDLES, reason="no bundle yet")
def test_broken_bundle_fails_named_checks(tmp_path):
    src = REPO / "bundles" / BUNDLES[0]
    copy = tmp_path / BUNDLES[0]
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("models", "eval"))
    meta = json.loads((copy / "configs/metadata.json").read_text())
    meta["version"] = "9.9.9"
    meta["monai_version"] = "0.0.1"
    (copy / "configs/metadata.json").write_text(json.dumps(meta))
    (copy / "LICENSE").unlink()
    results = check_bundles.check_bundle(copy, overrides=["configs/demo.json"])
    assert not results["files"][0] and "LICENSE" in results["files"][1]
    assert not results["changelog"][0] and "9.9.9" in results["changelog"][1]
    assert not results["versions"][0] and "monai_version" in results["versions"][1]
    assert check_bundles.main(["no_such_bundle"]) == 1
