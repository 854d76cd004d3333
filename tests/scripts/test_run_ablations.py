from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]


def test_tiny_ablation_table(tiny_phantom, tmp_path):
    """1 seed, 2 rows of a tiny AMCGAN: the table holds each row's evaluation means and the baselines."""
    sys.path.insert(0, str(REPO))
    from tests.bundles.contract import BUNDLES

    spec = next(s for s in BUNDLES if s.name == "amcgan_contrast_mri")
    overrides = tmp_path / "tiny.json"
    overrides.write_text(json.dumps({**spec.tiny, **spec.tiny_train, "val_interval": 1}))
    run_ablations = load_script("run_ablations")
    out = tmp_path / "abl"
    argv = ["--bundle", spec.name, "--seeds", "0", "--rows", "default", "pix2pix", "--data_dir", tiny_phantom]
    assert run_ablations.main([*argv, "--out", str(out), "--overrides", str(overrides)]) == 0
    table = json.loads((out / f"ablations_{spec.name}.json").read_text())
    assert table["task"] == "t1_to_t1ce" and [r["row"] for r in table["rows"]] == ["default", "pix2pix"]
    for row in table["rows"]:
        summary = json.loads((out / spec.name / row["row"] / "seed0" / "eval" / "summary.json").read_text())
        assert row["seeds"] == [0] and row["n_cases"] == summary["n_cases"] == 2
        for name in ("psnr_brain", "enhancement_recovery"):  # one seed: the mean is that seed's, std 0
            assert row["metrics"][name]["mean"] == pytest.approx(summary["metrics"][name]["mean"])
            assert row["metrics"][name]["std"] == 0.0 and row["metrics"][name]["count"] == 1
    for row in table["rows"]:  # the first seed's inference wrote one prediction per test case, in its geometry
        assert "inference_error" not in row and row["inferred_seed"] == 0
        written = sorted(Path(row["pred_dir"]).rglob("*.nii.gz"))
        data = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"]
        assert [p.parent.name for p in written] == [c["subject"] for c in data]
        assert np.allclose(nib.load(str(written[0])).affine, nib.load(str(Path(tiny_phantom) / data[0]["t1"])).affine)
    default, pix2pix = (r["per_seed"][0]["metrics"]["psnr_brain"]["mean"] for r in table["rows"])
    assert default != pix2pix  # two different networks were trained
    assert [b["label"].split(" (")[0] for b in table["baselines"]] == ["identity", "identity"]
    md = (out / f"ablations_{spec.name}.md").read_text()
    assert "| default | " in md and "| pix2pix | " in md and "identity (t1 fitted" in md
    assert f"{table['rows'][1]['metrics']['psnr_brain']['mean']:.4g} ± 0" in md
    assert "one seed: no ordering is claimed" in md
    # the rows join the demo leaderboard
    leaderboard = load_script("leaderboard")
    rows = leaderboard.ablation_rows(out)
    assert [r["label"] for r in rows] == ["default (1 seeds, ablation)", "pix2pix (1 seeds, ablation)"]
    assert all(r["task"] == "t1_to_t1ce" and r["spread"] == "seeds" for r in rows)
    assert [r["pred_dir"] for r in rows] == [r["pred_dir"] for r in table["rows"]]  # their figure tiles
    with pytest.raises(ValueError, match="not an ablation"):
        run_ablations.run_ablations(spec.name, [0], ["nope"], out, Path(tiny_phantom))
