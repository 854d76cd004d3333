"""``scripts/new_bundle.py``: the skeleton a new bundle starts from trains, validates and infers as generated."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from monai.bundle import ConfigWorkflow

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import check_bundles  # noqa: E402
from new_bundle import new_bundle  # noqa: E402

TINY = {
    "features": [4, 4, 4, 4, 4, 4],
    "d_channels": 4,
    "d_num_layers": 3,
    "patch_size": [32, 32, 32],
    "samples_per_volume": 1,
    "batch_size": 1,
    "max_epochs": 1,
    "num_workers": 0,
    "sw_batch_size": 8,
}


@pytest.mark.parametrize("kind", ["gan", "supervised"])
def test_skeleton_trains_and_infers(kind, tiny_phantom, tmp_path):
    bundle = new_bundle("my_method", kind, tmp_path)
    assert check_bundles._check_files(bundle).endswith("files")
    assert "hardening wired" in check_bundles._check_ids(bundle)  # every canonical id and check is there
    train = json.loads((bundle / "configs" / "train.json").read_text())
    assert train["bundle_root"] == "$common.utils.bundle_root('my_method')"
    assert ("dnetwork_def" in train) == (kind == "gan")

    common = {"bundle_root": str(bundle), "dataset_dir": tiny_phantom}
    tiny = dict(TINY) if kind == "gan" else {k: v for k, v in TINY.items() if not k.startswith("d_")}
    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **common,
        **tiny,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 3 and set(trainer.discriminators) == ({"patch"} if kind == "gan" else set())
    terms = set(trainer.state.output[0])
    assert "g_l1" in terms and ("g_adv_patch" in terms) == (kind == "gan")
    ckpt = torch.load(bundle / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert {"model", "optimizer", "trainer", "best_model"} <= set(ckpt) and ("d_patch" in ckpt) == (kind == "gan")

    infer_tiny = {k: tiny[k] for k in ("features", "patch_size", "sw_batch_size", "num_workers")}
    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        output_dir=str(tmp_path / "out"),
        **common,
        **infer_tiny,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    cases = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"]
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.nii.gz"))
    assert written == sorted(f"{c['subject']}/{c['subject']}_t2_synth.nii.gz" for c in cases)


def test_refuses_a_bad_name_or_an_existing_folder(tmp_path):
    with pytest.raises(ValueError, match="name"):
        new_bundle("My-Method", "gan", tmp_path)
    with pytest.raises(ValueError, match="kind"):
        new_bundle("ok_name", "diffusion", tmp_path)
    new_bundle("taken", "gan", tmp_path)
    with pytest.raises(ValueError, match="exists"):
        new_bundle("taken", "gan", tmp_path)
