"""Bundle ``amcgan_contrast_mri``: train, resume, evaluate, infer, ablations and the contract's bad inputs.

Everything runs in-process through ``monai.bundle.ConfigWorkflow`` on the session's tiny phantom (6 subjects of
32 x 40 x 24 voxels; 3 training, 1 validation, 2 test) with tiny widths, except one command-line smoke test.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai.bundle import ConfigWorkflow

from common.data.validation import InputDataError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "amcgan_contrast_mri" / "configs"
TINY = {
    "channels": 4,
    "msfc_channels": 2,
    "num_res_blocks": 1,
    "d_channels": 4,
    "d_num_layers": 4,  # a 4-layer PatchGAN takes the phantom's 32 x 40 slices (six layers need 48)
    "n_epochs_constant": 1,
    "n_epochs_decay": 0,
    "slices_per_volume": 1,  # 3 training volumes x 1 slice, batch 2 -> 2 iterations per epoch
    "num_workers": 0,
    "sw_batch_size": 12,
}


def _workflow(files, root, workflow_type="train", **override) -> ConfigWorkflow:
    settings = dict(TINY)
    settings.update(bundle_root=str(root), ckpt_dir=str(root / "models"), output_dir=str(root / "eval"))
    settings.update(override)
    settings = {k: v for k, v in settings.items() if v is not None}  # None: keep the config's own value
    if "log_dir" not in settings and workflow_type == "train":
        settings["log_dir"] = str(root / "logs")
    return ConfigWorkflow(
        config_file=[str(CONFIGS / f) for f in files],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        **settings,
    )


def _run(wf: ConfigWorkflow) -> ConfigWorkflow:
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def _load_ckpt(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def trained(tiny_phantom, tmp_path_factory):
    """A two-epoch schedule killed after its first epoch (two iterations) of AMCGAN training."""
    root = tmp_path_factory.mktemp("amcgan_trained")
    wf = _run(_workflow(["train.json"], root, dataset_dir=tiny_phantom, n_epochs_constant=2, max_epochs=1))
    return root, wf


def test_train_writes_full_state_and_best_model(trained):
    root, wf = trained
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 1 and trainer.state.iteration == 2
    ckpt = _load_ckpt(root / "models" / "checkpoint_epoch=1.pt")
    assert {"gnetwork", "dnetwork", "g_optimizer", "d_optimizer", "g_lr_scheduler", "d_lr_scheduler", "trainer"} <= set(ckpt)
    assert ckpt["trainer"]["iteration"] == 2 and ckpt["trainer"]["epoch_length"] == 2  # epoch = iteration / length
    best = _load_ckpt(root / "models" / "model.pt")
    gnet = wf.parser.get_parsed_content("gnetwork")
    assert set(best) == set(gnet.state_dict())  # model.pt is the bare generator state dict
    # the loss terms of the paper's objective: BCE cGAN (generator and PatchGAN) + 100 * L1
    out = trainer.state.output  # batched (decollate=False)
    assert {"g_pixel", "g_adv_patch", "d_patch"} <= set(out) and out["pred"].shape == (1, 1, 32, 40)
    assert wf.parser.get_parsed_content("g_loss").pixel_weight == 100.0


def test_initialize_applies_pix2pix_normal_init(tiny_phantom, tmp_path):
    wf = _workflow(["train.json"], tmp_path, dataset_dir=tiny_phantom, channels=16)
    wf.initialize()  # validates the data and initialises the networks; nothing is trained
    net = wf.parser.get_parsed_content("gnetwork_def")
    bn = torch.cat([m.weight.detach() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(float(bn.mean()) - 1.0) < 0.01 and 0.01 < float(bn.std()) < 0.03  # N(1, 0.02), default: all 1
    conv = torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(float(conv.std()) - 0.02) < 0.002 and abs(float(conv.mean())) < 0.002  # N(0, 0.02)
    biases = [m.bias for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None]
    assert biases and all(float(b.abs().max()) == 0.0 for b in biases)
    assert float(net.fam.beta) == 0.0
    dnet = wf.parser.get_parsed_content("dnetwork_def")
    first = dnet.model.conv1.conv.weight
    assert abs(float(first.std()) - 0.02) < 0.005 and float(dnet.model.conv1.conv.bias.abs().max()) == 0.0
    assert not (tmp_path / "models" / "checkpoint_epoch=1.pt").exists()


def test_lr_schedule_is_constant_then_linear_decay(tmp_path):
    wf = _workflow(["train.json"], tmp_path, n_epochs_constant=300, n_epochs_decay=100)
    wf.parser.parse(reset=True)
    assert wf.parser.get_parsed_content("max_epochs") == 400
    factor = wf.parser.get_parsed_content("lr_lambda")
    # LambdaLR's step count during epoch e (1-based) is e - 1; pix2pix: 1 - max(0, e - 300) / 101
    assert [factor(e - 1) for e in (1, 300, 301, 400)] == pytest.approx([1.0, 1.0, 1 - 1 / 101, 1 / 101])
    assert wf.parser.get_parsed_content("g_optimizer").defaults["betas"] == (0.5, 0.999)
    assert wf.parser.get_parsed_content("d_optimizer").defaults["lr"] == pytest.approx(2e-4)


def test_resume_continues_and_equals_uninterrupted(trained, tiny_phantom, tmp_path):
    root, first = trained
    resumed_root = tmp_path / "resumed"
    shutil.copytree(root / "models", resumed_root / "models")
    best_before = first.parser.get_parsed_content("validate#best_model_saver")._key_metric_checkpoint._saved[0].priority

    wf = _workflow(["train.json"], resumed_root, dataset_dir=tiny_phantom, resume=True, n_epochs_constant=2)
    assert wf.parser.get_parsed_content("max_epochs") == 2
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    seen = {}

    def at_start(engine):
        seen["epoch"], seen["iteration"] = engine.state.epoch, engine.state.iteration
        seen["lr_steps"] = wf.parser.get_parsed_content("g_lr_scheduler").last_epoch
        saver = wf.parser.get_parsed_content("validate#best_model_saver")
        seen["best"] = saver._key_metric_checkpoint._saved[0].priority

    from ignite.engine import Events

    trainer.add_event_handler(Events.EPOCH_STARTED, at_start)
    wf.run()
    assert seen == {"epoch": 2, "iteration": 2, "lr_steps": 1, "best": best_before}
    assert trainer.state.epoch == 2 and trainer.state.iteration == 4

    straight = _run(_workflow(["train.json"], tmp_path / "straight", dataset_dir=tiny_phantom, n_epochs_constant=2))
    a = _load_ckpt(resumed_root / "models" / "checkpoint_epoch=2.pt")
    b = _load_ckpt(tmp_path / "straight" / "models" / "checkpoint_epoch=2.pt")
    for name in ("gnetwork", "dnetwork"):
        for key in b[name]:
            assert torch.allclose(a[name][key].float(), b[name][key].float(), atol=1e-6), (name, key)
    assert straight.parser.get_parsed_content("train#trainer").state.epoch == 2


def _psnr(pred: np.ndarray, target: np.ndarray) -> float:
    peak = float(target.max() - target.min())
    return 10 * math.log10(peak**2 / float(np.mean((pred - target) ** 2)))


def test_evaluate_csv_matches_inference_output(trained, tiny_phantom):
    root, _ = trained
    _run(_workflow(["train.json", "evaluate.json"], root, dataset_dir=tiny_phantom))
    test_cases = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"]
    with open(root / "eval" / "metrics.csv") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert set(rows) == {c["subject"] for c in test_cases}
    summary = json.loads((root / "eval" / "summary.json").read_text())
    assert summary["n_cases"] == len(test_cases)
    for column in ("mae", "mse", "psnr", "ssim", "psnr_brain", "mae_tumor", "psnr_tumor_slices"):
        assert column in summary["metrics"]
    assert (root / "eval" / "figure_grid.png").stat().st_size > 0

    # the same model through inference.json: its NIfTI output reproduces the evaluation's numbers
    infer_dir = root / "infer"
    _run(_workflow(["inference.json"], root, "infer", dataset_dir=tiny_phantom, output_dir=str(infer_dir)))
    with_tumour = 0
    for case in test_cases:
        name, row = case["subject"], rows[case["subject"]]
        pred = np.asarray(nib.load(infer_dir / name / f"{name}_t1ce_synth.nii.gz").dataobj, dtype=np.float64)
        target = np.asarray(nib.load(Path(tiny_phantom) / case["t1ce"]).dataobj, dtype=np.float64)
        tumour = np.asarray(nib.load(Path(tiny_phantom) / case["tumor_mask"]).dataobj) > 0
        assert float(row["psnr"]) == pytest.approx(_psnr(pred, target), abs=1e-3)
        assert float(row["mae"]) == pytest.approx(np.abs(pred - target).mean(), rel=1e-4)
        slices = [k for k in range(target.shape[2]) if tumour[..., k].any()]
        if slices:  # the paper's protocol: mean PSNR of the slices that contain tumour
            expected = np.mean([_psnr(pred[..., k], target[..., k]) for k in slices])
            assert math.isfinite(float(row["psnr_tumor_slices"]))
            assert float(row["psnr_tumor_slices"]) == pytest.approx(expected, abs=1e-3)
            with_tumour += 1
        else:
            assert row["psnr_tumor_slices"] == ""
    assert with_tumour >= 1  # the tumour-slice PSNR was checked on at least one case


def _oblique_affine(spacing=(0.9, 1.1, 2.5)) -> np.ndarray:
    """LPS-like orientation (x and y axes flipped), rotated 20 degrees about z and 10 about x: non-diagonal."""
    a, b = np.deg2rad(20), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)
    affine[:3, 3] = [31.5, -12.25, 7.0]
    return affine


def test_inference_keeps_oblique_lps_geometry(trained, tiny_phantom, tmp_path):
    root, _ = trained
    rng = np.random.default_rng(0)
    shape = (27, 33, 7)  # odd in-plane sizes, not multiples of 4
    data = (rng.random(shape) * 1500).astype(np.float32)
    affine = _oblique_affine()
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(tmp_path / "t1_oblique.nii.gz"))
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": [{"subject": "oblique_case", "t1": "t1_oblique.nii.gz"}]}))
    out = tmp_path / "out"
    _run(_workflow(["inference.json"], root, "infer", datalist=str(datalist), output_dir=str(out)))
    saved = nib.load(out / "oblique_case" / "oblique_case_t1ce_synth.nii.gz")
    assert saved.shape == shape
    np.testing.assert_allclose(saved.affine, affine, atol=1e-4)
    pred = np.asarray(saved.dataobj, dtype=np.float64)
    assert np.isfinite(pred).all()
    # de-normalised into the source's units: tanh's [-1, 1] maps to [lo, lo + (hi - lo) * 2 / 1.5]
    lo, hi = np.quantile(data, [0.0, 0.995])
    assert pred.min() >= lo - 1e-2 and pred.max() <= lo + (hi - lo) * 2.0 / 1.5 + 1e-2
    assert pred.std() > 0


ROWS = {"pix2pix": (False, False), "multi_scale": (True, False)}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_ablation_changes_network_and_trains(row, tiny_phantom, tmp_path):
    wf = _run(_workflow(["train.json", f"ablations/{row}.json"], tmp_path, dataset_dir=tiny_phantom,
                        ckpt_dir=None, output_dir=None, log_dir=None))
    net = wf.parser.get_parsed_content("network_def")
    assert (net.use_msfc, net.use_fam) == ROWS[row]
    assert wf.parser.get_parsed_content("train#trainer").state.iteration == 2
    assert (tmp_path / "models" / row / "checkpoint_epoch=1.pt").is_file()  # each row keeps its own folder

    full = _workflow(["train.json"], tmp_path / "full")
    full.parser.parse(reset=True)
    amcgan = full.parser.get_parsed_content("network_def")
    assert (amcgan.use_msfc, amcgan.use_fam) == (True, True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    if row == "pix2pix":
        assert count(net) < count(amcgan) and not hasattr(net.msfc, "branches")
    else:
        assert count(net) == count(amcgan) - 1  # FAM adds exactly its scale beta


def _bad_case(tiny_phantom, folder: Path, kind: str):
    """A copy of one test case broken in one way; returns (datalist path, the file or key the error must name)."""
    src = json.loads((Path(tiny_phantom) / "datalist.json").read_text())["test"][0]
    t1 = nib.load(Path(tiny_phantom) / src["t1"])
    t1_data, affine = np.asarray(t1.dataobj, dtype=np.float32), t1.affine
    t1ce_data = np.asarray(nib.load(Path(tiny_phantom) / src["t1ce"]).dataobj, dtype=np.float32)
    t1_path, t1ce_path = folder / "t1.nii.gz", folder / "t1ce.nii.gz"
    t1ce_affine, named = affine, str(t1_path)
    if kind == "shape":
        t1ce_data, named = t1ce_data[:, :, :-2], str(t1ce_path)
    elif kind == "affine":
        t1ce_affine, named = affine.copy(), str(t1ce_path)
        t1ce_affine[0, 3] += 3.0
    elif kind == "nan":
        t1_data = t1_data.copy()
        t1_data[3, 4, 5] = np.nan
    elif kind == "multichannel":
        t1_data = np.stack([t1_data, t1_data], axis=-1)
    elif kind == "2d":
        t1_data = t1_data[:, :, 0]
    nib.save(nib.Nifti1Image(t1_data, affine), str(t1_path))
    nib.save(nib.Nifti1Image(t1ce_data, t1ce_affine), str(t1ce_path))
    case = {"subject": "bad", "t1": t1_path.name, "t1ce": t1ce_path.name}
    if kind == "corrupt":
        t1_path.write_bytes(gzip.compress(b"this is not a NIfTI header" * 20))
    elif kind == "missing_file":
        case["t1"], named = "no_such_t1.nii.gz", "no_such_t1.nii.gz"  # as written in the datalist
    elif kind == "missing_key":
        case.pop("t1")
        named = "'t1'"
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"test": [case]}))
    return datalist, named


@pytest.mark.parametrize(
    "kind,config,expected",
    [
        ("shape", "evaluate", "shape"),
        ("affine", "evaluate", "affine"),
        ("missing_file", "inference", "does not exist"),
        ("missing_key", "inference", "key"),
        ("nan", "inference", "NaN"),
        ("multichannel", "inference", "channels"),
        ("corrupt", "inference", "cannot be read"),
        ("2d", "inference", "2D"),
        ("unwritable", "inference", "not writable"),
    ],
)
def test_bad_inputs_fail_clearly_and_write_nothing(kind, config, expected, trained, tiny_phantom, tmp_path):
    root, _ = trained
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    datalist, named = _bad_case(tiny_phantom, data_dir, kind)
    out = tmp_path / "out"
    if kind == "unwritable":
        (tmp_path / "a_file").write_text("not a folder")
        out = tmp_path / "a_file" / "out"
        named = str(out)
    files = ["inference.json"] if config == "inference" else ["train.json", "evaluate.json"]
    wf = _workflow(files, root, "infer" if config == "inference" else "train", datalist=str(datalist),
                   output_dir=str(out))
    with pytest.raises(Exception) as info:
        _run(wf)
    error = info.value
    while error is not None and not isinstance(error, InputDataError):
        error = error.__cause__
    assert isinstance(error, InputDataError), info.value
    assert named in str(error) and expected in str(error)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != data_dir and p.name != "a_file"]
    assert written == []  # no output file of any kind, in particular no .nii.gz


def test_command_line_train_smoke(tiny_phantom, tmp_path):
    files = [str(CONFIGS / "train.json")]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(files).replace(" ", ""),
           "--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf"),
           "--dataset_dir", tiny_phantom, "--bundle_root", str(tmp_path), "--ckpt_dir", str(tmp_path / "models"),
           "--log_dir", str(tmp_path / "logs")]
    for key, value in TINY.items():
        cmd += [f"--{key}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    ckpt = _load_ckpt(tmp_path / "models" / "checkpoint_epoch=1.pt")
    assert ckpt["trainer"]["iteration"] == 2
    assert (tmp_path / "models" / "model.pt").is_file()
