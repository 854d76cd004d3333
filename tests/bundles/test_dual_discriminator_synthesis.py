"""Bundle ``dual_discriminator_synthesis``: train, resume, evaluate, ablations, MR -> CT in HU, 2D, bad inputs.

In-process through ``monai.bundle.ConfigWorkflow`` on the session's tiny phantom (6 subjects of 32 x 40 x 24
voxels; 3 training, 1 validation, 2 test) with tiny widths and 16^3 patches.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from contract import BUNDLES, collated, load_checkpoint, run, workflow

from monai.bundle import ConfigParser, ConfigWorkflow

from common.data.validation import InputDataError
from common.networks.dual_discriminator import ConvPoolCritic

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "dual_discriminator_synthesis" / "configs"
SPEC = next(b for b in BUNDLES if b.name == "dual_discriminator_synthesis")


def _workflow(files, root, workflow_type="train", **override) -> ConfigWorkflow:
    """The contract harness's workflow of this bundle: its tiny settings, outputs under ``root``."""
    return workflow(SPEC, files, root, workflow_type, **override)


@pytest.fixture(scope="module")
def trained(tiny_phantom, tmp_path_factory):
    """A two-epoch schedule stopped after its first epoch (two iterations) of the default: dual-D + attention."""
    root = tmp_path_factory.mktemp("dual_trained")
    wf = run(_workflow(["train.json"], root, dataset_dir=tiny_phantom))
    return root, wf


@pytest.mark.parametrize(
    "bundle, key, input_size",
    [
        ("dual_discriminator_synthesis", "global_dnetwork_def", None),
        ("context_gan_synthesis", "dnetwork_def", [16] * 3),
    ],
)
def test_both_gan_bundles_build_the_shared_critic_with_the_papers_layers(bundle, key, input_size):
    """D1 of Xiao and Nie and D of Nie et al. 2018 are one class; only the head's input handling differs."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    critic = parser.get_parsed_content(key)
    assert type(critic) is ConvPoolCritic and critic.input_size == input_size
    convs = [m.out_channels for m in critic.modules() if isinstance(m, torch.nn.Conv3d)]
    linears = [m.out_features for m in critic.modules() if isinstance(m, torch.nn.Linear)]
    assert convs == [32, 64, 128, 256] and linears == [512, 128, 1]
    assert sum(isinstance(m, torch.nn.BatchNorm3d) for m in critic.modules()) == 4


def test_default_trains_both_discriminators_with_attention(trained):
    root, wf = trained
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration == 2
    assert set(trainer.discriminators) == {"global", "local"}
    assert type(trainer.discriminators["global"].network) is ConvPoolCritic
    assert trainer.discriminators["global"].loss.mode == "wasserstein"
    assert trainer.discriminators["global"].loss.gradient_penalty_weight == 10.0
    assert trainer.discriminators["local"].loss.mode == "bce" and not trainer.discriminators["local"].conditional
    out = collated(trainer.state.output)
    assert {"g_pixel", "g_adv_global", "g_adv_local", "d_global", "d_global_gp", "d_local"} <= set(out)
    g_loss = wf.parser.get_parsed_content("g_loss")
    assert type(g_loss.pixel_losses["pixel"]).__name__ == "DifficultyAwarePixelLoss"
    assert g_loss.adversarial_weights == {"global": 0.05, "local": 0.05}
    assert out["pred"].shape[1:] == (1, 16, 16, 16)  # 16^3 patches (the last batch holds the third volume)
    ckpt = load_checkpoint(root / "models" / "checkpoint_epoch=1.pt")
    assert {"model", "optimizer", "d_global", "d_global_optimizer", "d_local", "d_local_optimizer", "trainer"} <= set(
        ckpt
    )
    best = load_checkpoint(root / "models" / "model.pt")
    assert set(best) == set(wf.parser.get_parsed_content("gnetwork").state_dict())
    assert any(p.name.startswith("events") for p in (root / "logs" / "local_confidence").iterdir())


def test_resume_continues_and_equals_uninterrupted(trained, tiny_phantom, tmp_path):
    root, _ = trained
    resumed = tmp_path / "resumed"
    shutil.copytree(root / "models", resumed / "models")
    wf = run(_workflow(["train.json"], resumed, dataset_dir=tiny_phantom, resume=True, max_epochs=2))
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2 and trainer.state.iteration == 4
    run(_workflow(["train.json"], tmp_path / "straight", dataset_dir=tiny_phantom, max_epochs=2))
    a = load_checkpoint(resumed / "models" / "checkpoint_epoch=2.pt")
    b = load_checkpoint(tmp_path / "straight" / "models" / "checkpoint_epoch=2.pt")
    for name in ("model", "d_global", "d_local"):
        for key in b[name]:
            assert torch.allclose(a[name][key].float(), b[name][key].float(), atol=1e-5), (name, key)


def test_evaluate_writes_metrics_figure_and_confidence_map(trained, tiny_phantom):
    root, _ = trained
    run(_workflow(["train.json", "evaluate.json"], root, dataset_dir=tiny_phantom))
    summary = json.loads((root / "eval" / "summary.json").read_text())
    test_cases = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"]
    assert summary["n_cases"] == len(test_cases)
    for column in ("mae", "psnr", "ssim", "psnr_brain", "psnr_tumor"):
        assert column in summary["metrics"]
    for name in ("figure_grid.png", "confidence_maps.png"):
        assert (root / "eval" / name).stat().st_size > 0
    from PIL import Image

    grid = np.asarray(Image.open(root / "eval" / "confidence_maps.png"))
    assert grid.shape[0] > 40 and grid.shape[1] > 4 * 32  # 4 columns of 32 x 40 slices


# ablation -> (discriminators, pixel term, generator terms)
ROWS = {
    "unet_only": (set(), "PixelPowerLoss", {"g_pixel"}),
    "sgan_global": ({"global"}, "PixelPowerLoss", {"g_pixel", "g_adv_global"}),
    "sgan_local": ({"local"}, "PixelPowerLoss", {"g_pixel", "g_adv_local"}),
    "dual_no_attention": ({"global", "local"}, "PixelPowerLoss", {"g_pixel", "g_adv_global", "g_adv_local"}),
    "fcn": (set(), "PixelPowerLoss", {"g_pixel"}),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_ablation_removes_exactly_what_it_names(row, tiny_phantom, tmp_path):
    wf = run(
        _workflow(
            ["train.json", f"ablations/{row}.json"],
            tmp_path,
            dataset_dir=tiny_phantom,
            ckpt_dir=None,
            output_dir=None,
            log_dir=None,
            batch_size=3,
        )
    )
    discriminators, pixel, terms = ROWS[row]
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert set(trainer.discriminators) == discriminators and trainer.state.iteration == 1
    g_terms = {k for k in collated(trainer.state.output) if k.startswith("g_")}
    d_terms = {k for k in collated(trainer.state.output) if k.startswith("d_")}
    assert g_terms == terms
    assert d_terms == {f"d_{n}" for n in discriminators} | ({"d_global_gp"} if "global" in discriminators else set())
    assert type(wf.parser.get_parsed_content("g_loss").pixel_losses["pixel"]).__name__ == pixel
    generator = wf.parser.get_parsed_content("network_def")
    assert type(generator).__name__ == ("SynthesisFCN" if row == "fcn" else "UNet")
    assert (tmp_path / "models" / row / "checkpoint_epoch=1.pt").is_file()  # each row keeps its own folder


@pytest.mark.parametrize("row", sorted(ROWS))
def test_ablation_row_layers_on_inference_json(row):
    """A row's file sets top-level ids only, so it layers on ``inference.json``: the row's generator and folder."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "ablations" / f"{row}.json")])
    parser["bundle_root"] = "/bundle"
    assert type(parser.get_parsed_content("network_def")).__name__ == ("SynthesisFCN" if row == "fcn" else "UNet")
    assert parser.get_parsed_content("ckpt_path") == f"/bundle/models/{row}/model.pt"
    assert not any(
        key.startswith(("train#", "validate#"))
        for key in json.loads((CONFIGS / "ablations" / f"{row}.json").read_text())
    )


def test_fcn_row_trains_and_infers_with_inference_json(tiny_phantom, tmp_path):
    """The FCN baseline (a generator other than the U-Net) runs through ``inference.json`` + its ablation file."""
    files = dict(dataset_dir=tiny_phantom, ckpt_dir=None, output_dir=None, log_dir=None)
    run(_workflow(["train.json", "ablations/fcn.json"], tmp_path, **files))
    trained = load_checkpoint(tmp_path / "models" / "fcn" / "model.pt")  # one network: a plain state dict
    out = tmp_path / "infer"
    wf = run(
        _workflow(["inference.json", "ablations/fcn.json"], tmp_path, "infer", **{**files, "output_dir": str(out)})
    )
    network = wf.parser.get_parsed_content("network")
    assert type(network).__name__ == "SynthesisFCN"
    for name, value in network.state_dict().items():
        torch.testing.assert_close(value.cpu(), trained[name].cpu())  # the FCN checkpoint was loaded, not a U-Net
    for case in json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"]:
        saved = nib.load(out / case["subject"] / f"{case['subject']}_t2_synth.nii.gz")
        source = nib.load(Path(tiny_phantom) / case["t1"])
        assert saved.shape == source.shape
        np.testing.assert_allclose(saved.affine, source.affine, atol=1e-5)
        synth = np.asarray(saved.dataobj, dtype=np.float64)
        assert np.isfinite(synth).all() and synth.std() > 0


def test_mr_to_ct_writes_hounsfield_units(tiny_phantom, tmp_path):
    run(
        _workflow(
            ["train.json", "task_mr_to_ct.json"],
            tmp_path,
            dataset_dir=tiny_phantom,
            ckpt_dir=None,
            output_dir=None,
            log_dir=None,
        )
    )
    ckpt_dir = tmp_path / "models" / "mr_to_ct"
    assert (ckpt_dir / "model.pt").is_file()
    out = tmp_path / "infer"
    run(
        _workflow(
            ["inference.json", "task_mr_to_ct.json"],
            tmp_path,
            "infer",
            dataset_dir=tiny_phantom,
            ckpt_dir=str(ckpt_dir),
            output_dir=str(out),
        )
    )
    case = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0]
    saved = nib.load(out / case["subject"] / f"{case['subject']}_ct_synth.nii.gz")
    source = nib.load(Path(tiny_phantom) / case["t1"])
    assert saved.shape == source.shape
    np.testing.assert_allclose(saved.affine, source.affine, atol=1e-5)
    hu = np.asarray(saved.dataobj, dtype=np.float64)
    assert np.isfinite(hu).all() and hu.min() >= -1024.0 and hu.max() <= 3071.0  # the HU window, clipped
    assert hu.max() - hu.min() > 10.0  # HU, not the normalised [0, 1] range
    # evaluation adds the head region (target > -500 HU) for the MAE in HU inside the head
    run(
        _workflow(
            ["train.json", "task_mr_to_ct.json", "evaluate.json"],
            tmp_path,
            dataset_dir=tiny_phantom,
            ckpt_dir=str(ckpt_dir),
            output_dir=str(tmp_path / "eval_ct"),
        )
    )
    summary = json.loads((tmp_path / "eval_ct" / "summary.json").read_text())
    assert summary["metrics"]["mae_head"]["count"] == 2 and summary["metrics"]["mae_head"]["mean"] > 0


def test_2d_variant_trains_on_slices_and_infers_volumes(tiny_phantom, tmp_path):
    wf = run(
        _workflow(
            ["train.json", "train_2d.json"],
            tmp_path,
            dataset_dir=tiny_phantom,
            ckpt_dir=None,
            output_dir=None,
            log_dir=None,
            crop_size=[16, 16, 1],
        )
    )
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert collated(trainer.state.output)["pred"].shape[1:] == (1, 16, 16)
    assert wf.parser.get_parsed_content("local_dnetwork_def").spatial_dims == 2
    ckpt_dir = tmp_path / "models" / "2d"
    out = tmp_path / "infer"
    run(
        _workflow(
            ["inference.json", "train_2d.json"],
            tmp_path,
            "infer",
            dataset_dir=tiny_phantom,
            ckpt_dir=str(ckpt_dir),
            output_dir=str(out),
            crop_size=[16, 16, 1],
        )
    )
    case = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0]
    saved = nib.load(out / case["subject"] / f"{case['subject']}_t2_synth.nii.gz")
    assert saved.shape == (32, 40, 24)


def _bad_case(tiny_phantom, folder: Path, kind: str):
    src = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0]
    t1 = nib.load(Path(tiny_phantom) / src["t1"])
    t1_data, affine = np.asarray(t1.dataobj, dtype=np.float32), t1.affine
    t2_data = np.asarray(nib.load(Path(tiny_phantom) / src["t2"]).dataobj, dtype=np.float32)
    t1_path, t2_path = folder / "t1.nii.gz", folder / "t2.nii.gz"
    named = str(t1_path)
    if kind == "shape":
        t2_data, named = t2_data[:, :, :-2], str(t2_path)
    elif kind == "nan":
        t1_data = t1_data.copy()
        t1_data[3, 4, 5] = np.nan
    elif kind == "2d":
        t1_data = t1_data[:, :, 0]
    nib.save(nib.Nifti1Image(t1_data, affine), str(t1_path))
    nib.save(nib.Nifti1Image(t2_data, affine), str(t2_path))
    case = {"subject": "bad", "t1": t1_path.name, "t2": t2_path.name}
    if kind == "missing_key":
        case.pop("t1")
        named = "'t1'"
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"test": [case]}))
    return datalist, named


@pytest.mark.parametrize(
    "kind,config,expected",
    [
        ("shape", "evaluate", "shape"),
        ("missing_key", "inference", "key"),
        ("nan", "inference", "NaN"),
        ("2d", "inference", "2D"),
    ],
)
def test_bad_inputs_fail_clearly_and_write_nothing(kind, config, expected, trained, tiny_phantom, tmp_path):
    root, _ = trained
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    datalist, named = _bad_case(tiny_phantom, data_dir, kind)
    out = tmp_path / "out"
    files = ["inference.json"] if config == "inference" else ["train.json", "evaluate.json"]
    wf = _workflow(
        files,
        root,
        "infer" if config == "inference" else "train",
        datalist=str(datalist),
        output_dir=str(out),
        log_dir=None,
    )
    with pytest.raises(Exception) as info:
        run(wf)
    error = info.value
    while error is not None and not isinstance(error, InputDataError):
        error = error.__cause__
    assert isinstance(error, InputDataError), info.value
    assert named in str(error) and expected in str(error)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != data_dir] == []
