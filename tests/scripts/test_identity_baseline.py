from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]
identity_baseline = load_script("identity_baseline")


def _arr(path):
    return np.asarray(nib.load(path).dataobj, dtype=np.float64)


def _affine_copy(tiny_phantom, root: Path) -> Path:
    """A datalist whose ``t1ce`` is ``3 * t1 + 7`` on the brain voxels (and noise outside)."""
    from common.data import load_datalist

    meta = json.loads((Path(tiny_phantom) / "datalist.json").read_text())
    rng = np.random.default_rng(0)
    for split in ("training", "validation", "test"):
        for case, full in zip(meta[split], load_datalist(f"{tiny_phantom}/datalist.json", split)):
            img = nib.load(full["t1"])
            brain = _arr(full["brain_mask"]) > 0
            t1 = _arr(full["t1"])
            fake = np.where(brain, 3.0 * t1 + 7.0, rng.normal(0, 500, t1.shape))
            name = f"{case['subject']}_fake.nii.gz"
            nib.save(nib.Nifti1Image(fake.astype(np.float64), img.affine), root / name)
            case.update({k: str(Path(full[k])) for k in ("t1", "brain_mask", "tumor_mask")}, t1ce=str(root / name))
    (root / "datalist.json").write_text(json.dumps(meta))
    return root / "datalist.json"


def test_fit_recovers_a_known_affine_map(tiny_phantom, tmp_path):
    from common.data import load_datalist

    datalist = _affine_copy(tiny_phantom, tmp_path)
    a, b = identity_baseline.fit_linear_map(load_datalist(str(datalist), "training"), "t1", "t1ce")
    assert a == pytest.approx(3.0, rel=1e-9) and b == pytest.approx(7.0, abs=1e-6)
    rows = identity_baseline.run_baseline(datalist, "t1", "t1ce", tmp_path / "out", enhancement=True)
    assert [r["method"] for r in rows] == ["linear_fit", "identity"]  # (3, 7) != (1, 0): the raw row is kept
    fitted = rows[0]["summary"]["metrics"]
    # perfect up to float rounding of the fit: PSNR inf (left out of the mean) or above 120 dB
    assert fitted["psnr_brain"]["n_inf"] == 2 or fitted["psnr_brain"]["mean"] > 120.0
    assert fitted["mae_brain"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert rows[1]["summary"]["metrics"]["mae_brain"]["mean"] > 100.0
    saved = json.loads((tmp_path / "out" / "linear_fit" / "summary.json").read_text())
    assert saved["metrics"]["mae_brain"] == fitted["mae_brain"]
    assert json.loads((tmp_path / "out" / "baseline.json").read_text())["rows"][0]["scale"] == pytest.approx(3.0)


def test_baseline_equals_numpy(tiny_phantom, tmp_path):
    from common.data import load_datalist

    datalist = Path(tiny_phantom) / "datalist.json"
    train, test = load_datalist(str(datalist), "training"), load_datalist(str(datalist), "test")
    s = np.concatenate([_arr(c["t1"])[_arr(c["brain_mask"]) > 0] for c in train])
    t = np.concatenate([_arr(c["t2"])[_arr(c["brain_mask"]) > 0] for c in train])
    a, b = np.polyfit(s, t, 1)
    rows = identity_baseline.run_baseline(datalist, "t1", "t2", tmp_path / "t2")
    assert rows[0]["scale"] == pytest.approx(a, rel=1e-6) and rows[0]["offset"] == pytest.approx(b, rel=1e-6)
    assert rows[1]["method"] == "identity"
    psnr_brain, mae = [], []
    for c in test:
        src, tgt, brain = _arr(c["t1"]), _arr(c["t2"]), _arr(c["brain_mask"]) > 0
        err = (a * src + b - tgt)[brain]
        psnr_brain.append(10 * math.log10((tgt.max() - tgt.min()) ** 2 / np.mean(err**2)))
        mae.append(np.abs(a * src + b - tgt).mean())
    metrics = rows[0]["summary"]["metrics"]
    assert metrics["psnr_brain"]["mean"] == pytest.approx(np.mean(psnr_brain), rel=1e-6)
    assert metrics["psnr_brain"]["std"] == pytest.approx(np.std(psnr_brain), rel=1e-5)
    assert metrics["mae"]["mean"] == pytest.approx(np.mean(mae), rel=1e-6) and metrics["mae"]["count"] == 2


def test_enhancement_of_the_copied_source_is_zero(tiny_phantom, tmp_path):
    rows = identity_baseline.run_baseline(
        Path(tiny_phantom) / "datalist.json", "t1", "t1ce", tmp_path / "ce", fit=False, enhancement=True
    )
    assert [r["method"] for r in rows] == ["identity"]
    metrics = rows[0]["summary"]["metrics"]
    assert metrics["false_enhancement"]["mean"] == 0.0
    if "enhancement_recovery" in metrics and "mean" in metrics["enhancement_recovery"]:
        assert metrics["enhancement_recovery"]["mean"] == 0.0
    assert identity_baseline.main(["--dataset_dir", tiny_phantom, "--out", str(tmp_path / "cli"), "--no_fit"]) == 0
    assert (tmp_path / "cli" / "identity" / "metrics.csv").is_file()
