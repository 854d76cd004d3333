from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(report: str, key: str) -> list[float]:
    line = next(row for row in report.splitlines() if row.startswith(f"| {key} |"))
    return [float(v) for v in line.strip("|").split("|")[1:]]


def test_data_only_report(tiny_phantom, tmp_path):
    run_demo = _load("run_demo")
    out = tmp_path / "out"
    assert (
        run_demo.main(
            ["--data_dir", tiny_phantom, "--out", str(out), "--num_subjects", "6", "--shape", "32,40,24", "--bundles"]
        )
        == 0
    )
    report = (out / "report.md").read_text()
    assert "6 subjects (3 training / 1 validation / 2 test)" in report
    assert "No bundle is present yet" not in report or "only the data" in report
    csf, gm, wm, enh = _row(report, "t1")
    assert wm > gm > csf  # T1-weighted contrast
    t2 = _row(report, "t2")
    assert t2[0] == max(t2[:3])  # CSF brightest in T2
    flair = _row(report, "flair")
    assert flair[0] == min(flair[:3])  # CSF darkest in FLAIR
    assert _row(report, "t1ce")[3] > enh  # enhancement only after contrast
    assert (out / "data_montage.png").stat().st_size > 1000
