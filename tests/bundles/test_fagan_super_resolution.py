"""Bundle ``fagan_super_resolution``: training, the SR output grid, evaluation with the bicubic baseline, ablations,
the perceptual-weights guard and bad inputs.

Everything runs in-process through ``monai.bundle.ConfigWorkflow`` on the session's tiny phantom (6 subjects of
32 x 40 x 24 voxels at 1 mm; 3 training, 1 validation, 2 test) with tiny widths.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from contract import BUNDLES, collated, run, workflow

from monai.bundle import ConfigWorkflow

from common.data.validation import InputDataError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "fagan_super_resolution" / "configs"
SPEC = next(b for b in BUNDLES if b.name == "fagan_super_resolution")
# the harness entry with full self-attention, 24 of the tiny 8 x 10 low-resolution slices at once
TINY = {**SPEC.tiny, "sa_kv_pool": 1, "slice_pixels_per_batch": 24 * 80}
ABLATIONS = {  # file: (use_lffb, use_ca, use_sa, fusion)
    "srgan": (False, False, False, "weighted"),
    "ca_srgan": (False, True, False, "weighted"),
    "sa_srgan": (False, False, True, "weighted"),
    "ca_sa_srgan": (False, True, True, "weighted"),
    "lffb_only": (True, False, False, "weighted"),
    "lffb_ca": (True, True, False, "weighted"),
    "lffb_sa": (True, False, True, "weighted"),
    "fusion_direct": (True, True, True, "direct"),
}


def _workflow(files, root, workflow_type="train", **override) -> ConfigWorkflow:
    """The contract harness's workflow (tiny settings, outputs under ``root``) with this file's ``TINY``."""
    return workflow(SPEC, files, root, workflow_type, **{**TINY, **override})


def _spacing(affine) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def _corners(affine, shape) -> np.ndarray:
    """World coordinates of the two outer corners of the field of view (voxel edges)."""
    pts = np.array([[-0.5, -0.5, -0.5, 1.0], [shape[0] - 0.5, shape[1] - 0.5, shape[2] - 0.5, 1.0]])
    return (np.asarray(affine) @ pts.T).T[:, :3]


@pytest.fixture(scope="module")
def trained(tiny_phantom, tmp_path_factory):
    """FA-GAN x4 trained one epoch (two iterations) on the tiny phantom, with one validation pass."""
    root = tmp_path_factory.mktemp("fagan_trained")
    wf = run(_workflow(["train.json"], root, dataset_dir=tiny_phantom))
    return root, wf


def test_train_one_epoch_paper_objective_and_unconditional_discriminator(trained):
    root, wf = trained
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration == 2
    out = collated(trainer.state.output)
    assert set(k for k in out if k.startswith(("g_", "d_"))) == {"g_mse", "g_adv_hr", "d_hr"}  # perceptual off
    assert out["image"].shape == (3, 1, 4, 4) and out["pred"].shape == (3, 1, 16, 16)  # LR 4x4 -> HR 16x16
    spec = trainer.discriminators["hr"]
    assert spec.conditional is False and spec.inputs(out["image"], out["label"]).shape == (3, 1, 16, 16)
    dnet = wf.parser.get_parsed_content("dnetwork_def")
    assert dnet.spectral_norm and dnet.features[0].conv.in_channels == 1
    assert (root / "models" / "checkpoint_epoch=1.pt").is_file() and (root / "models" / "model.pt").is_file()
    g_loss = wf.parser.get_parsed_content("g_loss")
    assert g_loss.pixel_weights == {"mse": 1.0, "perceptual": 0.0} and g_loss.adversarial_weights == {"hr": 0.001}
    assert wf.parser.get_parsed_content("optimizer").defaults["betas"] == (0.9, 0.999)
    assert wf.parser.get_parsed_content("optimizer").defaults["lr"] == pytest.approx(1e-4)


def _oblique_affine(spacing) -> np.ndarray:
    a, b = np.deg2rad(20), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)
    affine[:3, 3] = [31.5, -12.25, 7.0]
    return affine


def test_inference_writes_the_finer_grid(trained, tmp_path):
    root, _ = trained
    rng = np.random.default_rng(0)
    shape, spacing = (9, 11, 5), (2.4, 3.2, 2.5)  # an LR volume of odd size, oblique, LPS-like
    affine = _oblique_affine(spacing)
    img = nib.Nifti1Image((rng.random(shape) * 900).astype(np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(tmp_path / "lr.nii.gz"))
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": [{"subject": "lr_case", "t1": "lr.nii.gz"}]}))
    out = tmp_path / "out"
    run(_workflow(["inference.json"], root, "infer", datalist=str(datalist), output_dir=str(out)))
    saved = nib.load(out / "lr_case" / "lr_case_t1_sr_x4.nii.gz")
    assert saved.shape == (36, 44, 5)
    np.testing.assert_allclose(_spacing(saved.affine), [0.6, 0.8, 2.5], rtol=1e-5)  # spacing / 4 in-plane
    np.testing.assert_allclose(_corners(saved.affine, saved.shape), _corners(affine, shape), atol=1e-4)  # same extent
    np.testing.assert_allclose(saved.affine[:3, :3] / _spacing(saved.affine), affine[:3, :3] / spacing, atol=1e-6)
    assert np.isfinite(np.asarray(saved.dataobj)).all()


def _psnr(pred: np.ndarray, target: np.ndarray) -> float:
    return 10 * math.log10(float(target.max() - target.min()) ** 2 / float(np.mean((pred - target) ** 2)))


def test_evaluation_has_bicubic_baseline_and_matches_inference_from_hr(trained, tiny_phantom):
    root, _ = trained
    run(_workflow(["train.json", "evaluate.json"], root, dataset_dir=tiny_phantom))
    test_cases = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"]
    with open(root / "eval" / "metrics.csv") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert set(rows) == {c["subject"] for c in test_cases}
    summary = json.loads((root / "eval" / "summary.json").read_text())["metrics"]
    for column in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "psnr_brain", "bicubic_psnr_brain"):
        assert column in summary, column
    assert (root / "eval" / "figure_grid.png").stat().st_size > 0
    assert not (root / "eval" / "fid.json").exists()  # no VGG19 weights: FID skipped, never random features

    infer_dir = root / "infer_hr"
    run(
        _workflow(
            ["inference.json", "inference_from_hr.json"],
            root,
            "infer",
            dataset_dir=tiny_phantom,
            output_dir=str(infer_dir),
        )
    )
    for case in test_cases:
        name = case["subject"]
        hr = nib.load(Path(tiny_phantom) / case["t1"])
        saved = nib.load(infer_dir / name / f"{name}_t1_sr_x4_from_hr.nii.gz")
        assert saved.shape == hr.shape  # 32 x 40 x 24: multiples of 4 in-plane, nothing cropped
        np.testing.assert_allclose(saved.affine, hr.affine, atol=1e-5)  # the HR grid exactly
        pred = np.asarray(saved.dataobj, dtype=np.float64)
        target = np.asarray(hr.dataobj, dtype=np.float64)
        assert float(rows[name]["psnr"]) == pytest.approx(_psnr(pred, target), abs=1e-3)
        assert math.isfinite(float(rows[name]["bicubic_psnr"]))


@pytest.mark.parametrize("scale", [2, 8])
def test_scale_overrides(scale, tmp_path):
    wf = _workflow(["train.json", f"scale_x{scale}.json"], tmp_path, ckpt_dir=None)
    wf.parser.parse(reset=True)
    net = wf.parser.get_parsed_content("network_def")
    assert net.scale == scale and wf.parser.get_parsed_content("ckpt_dir").endswith(f"models/x{scale}")
    x = torch.rand(1, 1, 4, 5)
    assert net(x).shape == (1, 1, 4 * scale, 5 * scale)
    degradation = wf.parser.get_parsed_content("degradation")
    assert degradation.scale == scale


def test_other_scale_is_a_clear_error(tmp_path):
    wf = _workflow(["train.json"], tmp_path, scale=3)
    wf.parser.parse(reset=True)
    with pytest.raises(Exception) as info:
        wf.parser.get_parsed_content("network_def")
    assert "scale must be one of (2, 4, 8)" in repr(info.value) or "scale must be one of (2, 4, 8)" in str(
        info.value.__cause__
    )


@pytest.mark.parametrize("row", sorted(ABLATIONS) + ["degradation_kspace"])
def test_ablation_builds_and_trains(row, tiny_phantom, tmp_path):
    config = f"ablations/{row}.json" if row in ABLATIONS else f"{row}.json"
    wf = run(
        _workflow(
            ["train.json", config],
            tmp_path,
            dataset_dir=tiny_phantom,
            ckpt_dir=None,
            output_dir=None,
            val_interval=2,
            slices_per_volume=1,
        )
    )  # 1 iteration, no validation
    net = wf.parser.get_parsed_content("network_def")
    if row in ABLATIONS:
        lffb, ca, sa, fusion = ABLATIONS[row]
        assert (net.use_lffb, net.use_ca, net.use_sa, net.gffb.fusion.mode) == (lffb, ca, sa, fusion)
        assert (tmp_path / "models" / row / "checkpoint_epoch=1.pt").is_file()  # each row keeps its own folder
    else:
        assert type(wf.parser.get_parsed_content("degradation")).__name__ == "KSpaceTruncated"
    assert wf.parser.get_parsed_content("train#trainer").state.iteration == 1


def test_missing_perceptual_weights_stop_before_training(tiny_phantom, tmp_path):
    weights = tmp_path / "nowhere" / "vgg19-dcbb9e9d.pth"
    wf = _workflow(
        ["train.json"],
        tmp_path,
        dataset_dir=tiny_phantom,
        perceptual_network="vgg19",
        lambda_perceptual=0.006,
        perceptual_weights_path=str(weights),
    )
    with pytest.raises(Exception) as info:
        run(wf)
    error = info.value
    while error is not None and not isinstance(error, FileNotFoundError):
        error = error.__cause__
    assert isinstance(error, FileNotFoundError), info.value
    assert str(weights) in str(error) and "torchvision" in str(error)
    assert not (tmp_path / "models" / "checkpoint_epoch=1.pt").exists()


@pytest.mark.parametrize(
    "kind,expected", [("missing_file", "does not exist"), ("nan", "NaN"), ("2d", "2D"), ("no_checkpoint", "model.pt")]
)
def test_bad_inputs_fail_clearly_and_write_nothing(kind, expected, trained, tiny_phantom, tmp_path):
    root, _ = trained
    src = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0]
    t1 = nib.load(Path(tiny_phantom) / src["t1"])
    data = np.asarray(t1.dataobj, dtype=np.float32)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if kind == "nan":
        data[1, 2, 3] = np.nan
    elif kind == "2d":
        data = data[:, :, 0]
    nib.save(nib.Nifti1Image(data, t1.affine), str(data_dir / "t1.nii.gz"))
    case = {"subject": "bad", "t1": "t1.nii.gz" if kind != "missing_file" else "no_such.nii.gz"}
    datalist = data_dir / "datalist.json"
    datalist.write_text(json.dumps({"test": [case]}))
    ckpt = str(tmp_path / "nothing" / "model.pt") if kind == "no_checkpoint" else None
    out = tmp_path / "out"
    wf = _workflow(["inference.json"], root, "infer", datalist=str(datalist), output_dir=str(out), ckpt_path=ckpt)
    with pytest.raises(Exception) as info:
        run(wf)
    error = info.value
    while error is not None and not isinstance(error, InputDataError):
        error = error.__cause__
    assert isinstance(error, InputDataError), info.value
    assert expected in str(error)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_fid_with_a_feature_weights_file(trained, tiny_phantom, tmp_path):
    from tests.networks.test_vgg import _fake_torchvision_file

    root, _ = trained
    weights = tmp_path / "vgg19.pth"
    _fake_torchvision_file(weights)  # random values in torchvision's layout: the plumbing, not a real FID
    out = tmp_path / "eval"
    run(
        _workflow(
            ["train.json", "evaluate.json"],
            root,
            dataset_dir=tiny_phantom,
            output_dir=str(out),
            fid_weights_path=str(weights),
        )
    )
    fid = json.loads((out / "fid.json").read_text())
    assert fid["n_slices"] == 2 * 24  # two test volumes of 24 slices
    # 48 slices of 512-d relu5_4 features: singular covariances, so the FID is reported as not defined
    assert "fid_vgg19" not in fid and "48 slices of 512-d" in fid["skipped"]
