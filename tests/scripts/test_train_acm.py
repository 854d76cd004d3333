"""scripts/train_acm.py: the auto-context cascade trained stage after stage through ``monai.bundle run``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import train_acm  # noqa: E402

TINY = [
    "--channels",
    "[4,4,4,8,8,8,4,4]",
    "--kernel_sizes",
    "[5,3,3,3,5,3,3,3,3]",
    "--patch_size",
    "24",
    "--target_patch_size",
    "16",
    "--d_channels",
    "[4,4,4]",
    "--d_bottleneck_channels",
    "4",
    "--d_fc_channels",
    "[8,4]",
    "--patches_per_volume",
    "2",
    "--batch_size",
    "3",
    "--max_epochs",
    "1",
    "--val_interval",
    "1",
    "--num_workers",
    "0",
]


def test_stage_paths():
    assert train_acm.stage_dir("/m", 1) == Path("/m") and train_acm.stage_dir("/m", 3) == Path("/m/stage3")
    assert train_acm.synthesis_path("/o", "case_1", "t2") == Path("/o/case_1/case_1_t2_synth.nii.gz")


def test_stage_datalist_names_each_subjects_synthesis(tiny_phantom, tmp_path):
    datalist = Path(tiny_phantom) / "datalist.json"
    original = json.loads(datalist.read_text())
    synth = tmp_path / "inputs"
    for split in ("training", "validation"):
        for case in original[split]:
            path = train_acm.synthesis_path(synth, case["subject"], "t2")
            path.parent.mkdir(parents=True)
            path.write_bytes(b"x")
    lists = train_acm.write_stage_datalist(datalist, tmp_path / "stage2" / "datalist.json", synth, "t1ce", "t2")
    written = json.loads((tmp_path / "stage2" / "datalist.json").read_text())
    assert written == lists and set(written) == {"training", "validation"}
    for split in written:
        assert [c["subject"] for c in written[split]] == [c["subject"] for c in original[split]]
        for case in written[split]:
            assert case["acm_prev"] == str(train_acm.synthesis_path(synth, case["subject"], "t2"))
            assert os.path.isabs(case["t1ce"]) and Path(case["t1ce"]).is_file()
    missing = original["training"][0]["subject"]
    train_acm.synthesis_path(synth, missing, "t2").unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        train_acm.write_stage_datalist(datalist, tmp_path / "again.json", synth, "t1ce", "t2")


def test_two_stage_cascade_keeps_every_checkpoint(tiny_phantom, tmp_path):
    acm_root = tmp_path / "models"
    code = train_acm.main(
        [
            "--bundle_root",
            str(REPO / "bundles" / "context_gan_synthesis"),
            "--stages",
            "2",
            "--acm_root",
            str(acm_root),
            "--dataset_dir",
            tiny_phantom,
            "--log_dir",
            str(tmp_path / "logs"),
            *TINY,
        ]
    )
    assert code == 0
    for folder in (acm_root, acm_root / "stage2"):
        assert (folder / "model.pt").is_file() and (folder / "checkpoint_epoch=1.pt").is_file()
    stage2 = json.loads((acm_root / "stage2" / "datalist.json").read_text())
    case = stage2["training"][0]
    prev, source = nib.load(case["acm_prev"]), nib.load(case["t1ce"])
    assert prev.shape == source.shape and np.allclose(prev.affine, source.affine, atol=1e-4)  # same grid
    assert np.isfinite(np.asarray(prev.dataobj)).all() and float(np.asarray(prev.dataobj).std()) > 0


def test_extra_overrides_parse_json_values_and_refuse_unpaired():
    assert train_acm._extra_overrides(["--max_epochs", "2", "--lr", "1e-3", "--name", "x", "--l", "[1,2]"]) == {
        "max_epochs": 2,
        "lr": 0.001,
        "name": "x",
        "l": [1, 2],
    }
    with pytest.raises(SystemExit, match="pairs"):
        train_acm._extra_overrides(["--max_epochs"])
    with pytest.raises(SystemExit, match="pairs"):
        train_acm._extra_overrides(["max_epochs", "2"])
