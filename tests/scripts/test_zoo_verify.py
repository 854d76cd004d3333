"""scripts/zoo_verify.py: the Model Zoo CI's ``min`` and ``full`` checks pass on every exported archive.

``full`` runs in one ``python -S`` subprocess that sees site-packages only (as the CI has no repository): each
archive must bring its own ``common``. ``min`` and the refusals run in process (they import no bundle code).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import torch
from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]
BUNDLES = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/metadata.json"))


eb, zv = load_script("export_bundle"), load_script("zoo_verify")
FULL_CHECKS = ["large_files", "directory", "version", "metadata", "properties", "net_in_out", "torchscript"]


def _archives(root: Path, names: list[str] = BUNDLES) -> list[Path]:
    out = []
    for name in names:
        torch.manual_seed(0)
        net = eb._parser(REPO / "bundles" / name, [eb.DEMO]).get_parsed_content("network_def")
        torch.save(net.state_dict(), root / f"{name}.pt")
        out.append(eb.export_bundle(name, root / f"{name}.pt", root / "dist", check=False))
    return out


def test_full_and_min_pass_on_every_archive(tmp_path):
    archives = _archives(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = __import__("sysconfig").get_paths()["purelib"]
    cmd = [sys.executable, "-S", str(REPO / "scripts" / "zoo_verify.py"), "-m", "full", *map(str, archives)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if " PASS " in line or " FAIL " in line]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for archive in archives:
        passed = [line.split()[2] for line in lines if line.startswith(archive.name) and " PASS " in line]
        assert passed == FULL_CHECKS, (archive.name, lines)
    for archive in archives:  # min imports no bundle code: in process
        results = zv.verify_path(archive, mode="min")
        assert list(results) == FULL_CHECKS[:4] and all(ok for ok, _ in results.values()), results


def test_min_refuses_a_changed_weights_file_and_missing_files(tmp_path):
    archive = _archives(tmp_path, BUNDLES[:1])[0]
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "x")
    bundle = tmp_path / "x" / BUNDLES[0]
    with open(bundle / "models" / "model.ts", "ab") as f:
        f.write(b"\0")
    results = zv.verify(bundle, mode="min")
    assert results == {"large_files": (False, results["large_files"][1])}  # stops at the first failure
    assert "models/model.ts" in results["large_files"][1]
    listing = json.loads((bundle / "large_files.yml").read_text())
    listing["large_files"] = []
    (bundle / "large_files.yml").write_text(json.dumps(listing))
    (bundle / "LICENSE").unlink()
    results = zv.verify(bundle, mode="min")
    assert results["large_files"][0] and not results["directory"][0] and "LICENSE" in results["directory"][1]


def test_version_must_be_in_changelog_and_unpublished(tmp_path):
    archive = _archives(tmp_path, BUNDLES[:1])[0]
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "x")
    bundle = tmp_path / "x" / BUNDLES[0]
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    published = tmp_path / "model_info.json"
    published.write_text(json.dumps({f"{BUNDLES[0]}_v{meta['version']}": {}}))
    results = zv.verify(bundle, mode="min", published=published)
    assert not results["version"][0] and "already published" in results["version"][1]
