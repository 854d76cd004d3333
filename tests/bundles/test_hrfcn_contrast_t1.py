"""Bundle tests of ``bundles/hrfcn_contrast_t1`` (HR-FCN, T1 + T2 + ADC -> contrast-enhanced T1).

In-process ``monai.bundle.ConfigWorkflow`` runs on the tiny phantom with shrunken widths (``TINY``):
training, stage-2 fine-tuning and resumption; evaluation; inference in the input geometry (also for an
oblique, anisotropic LPS grid), with a zero-filled input and through the T1 -> T2 / ADC cascade; blended
sliding windows; every ablation override; the bad inputs of the bundle contract (section 6). One
command-line run checks the exit status of a bad input.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "hrfcn_contrast_t1" / "configs"
SOURCES = ("t1", "t2", "adc")

TINY = {
    "stem_width": 2,
    "channels": [4, 4, 4],
    "num_res_blocks": 1,
    "patch_hw": [16, 16],
    "batch_size": 1,
    "num_samples": 2,
    "cache_rate": 0.0,
    "num_workers": 0,
    "max_epochs": 1,
    "sw_batch_size": 16,
    "unet2d_channels": [4, 4, 4, 4, 4],
    "unet3d_channels": [4, 4, 4, 4],
}
INFER_KEYS = ("stem_width", "channels", "num_res_blocks", "sw_batch_size")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP oversubscription on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _workflow(configs, workflow_type: str = "train", **overrides):
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(
        config_file=[str(CONFIGS / c) for c in configs],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        **overrides,
    )


def _infer_overrides(root: Path, datalist: Path | str, model: Path, **extra) -> dict:
    out = {k: TINY[k] for k in INFER_KEYS}
    out.update(bundle_root=str(root), datalist=str(datalist), output_dir=str(root / "out"), model_file=str(model))
    out.update(extra)
    return out


def _abs_case(root: str, case: dict) -> dict:
    return {k: (v if k == "subject" else os.path.join(root, v)) for k, v in case.items()}


def _write_datalist(path: Path, **splits) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(splits))
    return path


@pytest.fixture(scope="module")
def data(tiny_phantom, tmp_path_factory) -> dict:
    """A datalist over the tiny phantom whose test cases all hold a tumour (absolute paths)."""
    meta = json.loads((Path(tiny_phantom) / "datalist.json").read_text())
    cases = {s: [_abs_case(tiny_phantom, c) for c in meta[s]] for s in ("training", "validation", "test")}
    everyone = cases["training"] + cases["validation"] + cases["test"]
    tumour = [c for c in everyone if (np.asarray(nib.load(c["tumor_mask"]).dataobj) > 0).any()]
    assert tumour, "the tiny phantom has no subject with a tumour"
    test = tumour[:2]
    root = tmp_path_factory.mktemp("hrfcn_data")
    datalist = _write_datalist(root / "datalist.json", training=cases["training"], validation=cases["validation"], test=test)
    return {"datalist": datalist, "test": test, "cases": everyone, "dir": root}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """Stage 1: one epoch of two iterations, validation on the validation case (writes model.pt)."""
    root = tmp_path_factory.mktemp("hrfcn_bundle")
    wf = _workflow(["train.json"], bundle_root=str(root), datalist=str(data["datalist"]), **TINY,
                   **{"train#trainer#epoch_length": 2})
    wf.initialize()
    wf.run()
    state = wf.parser.get_parsed_content("train#trainer").state
    assert (state.epoch, state.iteration) == (1, 2)
    wf.finalize()
    return root


def _state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def test_train_resume_and_finetune(trained, data):
    models = trained / "models"
    assert (models / "model.pt").is_file() and (models / "checkpoint_epoch=1.pt").is_file()
    full = torch.load(models / "checkpoint_epoch=1.pt", weights_only=True)
    assert {"model", "optimizer", "trainer"} <= set(full)

    # resume: continues at epoch 2 from the full state (weights, optimizer, epoch and iteration counters)
    from ignite.engine import Events

    wf = _workflow(["train.json"], bundle_root=str(trained), datalist=str(data["datalist"]), resume=True,
                   **dict(TINY, max_epochs=2), **{"train#trainer#epoch_length": 2})
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    network = wf.parser.get_parsed_content("network")
    seen: dict = {"iterations": 0}
    trainer.add_event_handler(Events.STARTED, lambda e: seen.update(epoch=e.state.epoch, weights=_state(network)))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.update(iterations=seen["iterations"] + 1))
    wf.run()
    assert seen["epoch"] == 1 and _same_state(seen["weights"], full["model"])
    assert seen["iterations"] == 2 and (trainer.state.epoch, trainer.state.iteration) == (2, 4)
    from common.engines import latest_checkpoint

    assert latest_checkpoint(str(models)) == str(models / "checkpoint_epoch=2.pt")
    # the best-model tracking resumes too: model.pt is replaced only by a better validation PSNR
    best = wf.parser.get_parsed_content("validate#best_saver")._key_metric_checkpoint
    assert len(best._saved) == 1 and best._saved[0].priority >= full["best_model"]["_saved"][0][0]
    wf.finalize()

    # stage 2: starts from stage 1's model.pt, lambda = (0.1, 0.1, 10), lr 1e-5, own folder
    stage1 = (models / "model.pt").read_bytes()
    stage1_weights = torch.load(models / "model.pt", weights_only=True)
    wf = _workflow(["train.json", "finetune_local.json"], bundle_root=str(trained), datalist=str(data["datalist"]),
                   **TINY, **{"train#trainer#epoch_length": 2})
    wf.initialize()
    loss = wf.parser.get_parsed_content("loss")
    optimizer = wf.parser.get_parsed_content("optimizer")
    assert (loss.lambda_mae, loss.lambda_ssim, loss.lambda_local) == (0.1, 0.1, 10.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    trainer = wf.parser.get_parsed_content("train#trainer")
    network = wf.parser.get_parsed_content("network")
    seen = {}
    trainer.add_event_handler(Events.STARTED, lambda e: seen.update(weights=_state(network)))
    wf.run()
    assert _same_state(seen["weights"], stage1_weights)
    assert (models / "finetune_local" / "model.pt").is_file()
    assert (models / "model.pt").read_bytes() == stage1  # stage 1's model is not overwritten
    assert not _same_state(_state(network), stage1_weights)  # and stage 2 did train
    wf.finalize()


def test_evaluate_writes_brain_and_tumour_metrics(trained, data):
    out = trained / "eval_test"
    wf = _workflow(["train.json", "evaluate.json"], bundle_root=str(trained), datalist=str(data["datalist"]),
                   output_dir=str(out), **TINY)
    wf.initialize()
    wf.run()
    wf.finalize()
    import csv

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert sorted(r["case"] for r in rows) == sorted(c["subject"] for c in data["test"])
    for row in rows:
        for column in ("mae_brain", "psnr_brain", "ssim_brain", "psnr_tumor"):
            assert math.isfinite(float(row[column])), (column, row)
        # PSNR in the [0, 1]-normalised space with peak 1: 10 log10(1 / MSE)
        assert float(row["psnr_brain"]) == pytest.approx(-10 * math.log10(float(row["mse_brain"])), rel=1e-6)
        assert -1.0 <= float(row["ssim_brain"]) <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == len(data["test"]) and summary["metrics"]["psnr_tumor"]["count"] == len(data["test"])
    assert (out / "figure_grid.png").stat().st_size > 0


class ConstantNet(torch.nn.Module):
    """``(B, C, *spatial) -> (B, 1, *spatial)`` filled with ``value``; records the inputs it saw."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return torch.full_like(x[:, :1], self.value)


def _run_inference(configs, overrides: dict, network: torch.nn.Module | None = None):
    wf = _workflow(configs, workflow_type="infer", **overrides)
    wf.initialize()
    if network is not None:
        wf.parser.get_parsed_content("evaluator").network = network
    wf.run()
    wf.finalize()
    return wf


def _output(root: Path, case: str) -> Path:
    return root / "out" / case / f"{case}_t1ce_synth.nii.gz"


def _assert_same_geometry(out_path: Path, ref_path: str) -> np.ndarray:
    out, ref = nib.load(out_path), nib.load(ref_path)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    data = np.asarray(out.dataobj, dtype=np.float64)
    assert np.isfinite(data).all()
    return data


def test_inference_geometry_and_units(trained, data):
    _run_inference(["inference.json"], _infer_overrides(trained, data["datalist"], trained / "models" / "model.pt"))
    for case in data["test"]:
        _assert_same_geometry(_output(trained, case["subject"]), case["t1"])

    # a constant network through overlapping blended windows: inside the brain the output is exactly the
    # constant de-normalised with the T1's brain percentiles (0, 99.5); outside, 0 (skull-stripped output)
    net = ConstantNet(0.25)
    root = trained / "const"
    _run_inference(["inference.json"], _infer_overrides(root, data["datalist"], trained / "models" / "model.pt", roi_hw=[16, 16], sw_overlap=[0.5, 0.5, 0.67]), net)
    assert net.inputs and tuple(net.inputs[0].shape[2:]) == (16, 16, 3)
    for case in data["test"]:
        out = _assert_same_geometry(_output(root, case["subject"]), case["t1"])
        t1 = np.asarray(nib.load(case["t1"]).dataobj, dtype=np.float64)
        brain = np.asarray(nib.load(case["brain_mask"]).dataobj) > 0
        lo, hi = np.quantile(t1[brain], [0.0, 0.995])
        np.testing.assert_allclose(out[brain], lo + 0.25 * (hi - lo), rtol=1e-4)
        assert np.all(out[~brain] == 0)


def _oblique_case(src: dict, folder: Path) -> dict:
    """Resample-free oblique LPS anisotropic copy: crops with a rotated, flipped, anisotropic affine."""
    theta = np.deg2rad(20.0)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rot @ np.diag([0.9, 1.1, 2.5])
    affine[:3, 3] = [40.0, -25.0, 12.0]
    folder.mkdir(parents=True, exist_ok=True)
    case = {"subject": "oblique"}
    for key in (*SOURCES, "brain_mask"):
        arr = np.asarray(nib.load(src[key]).dataobj)[1:31, 1:38, 5:16]  # 30 x 37 x 11: not divisible by 4
        path = folder / f"{key}.nii.gz"
        nib.save(nib.Nifti1Image(arr, affine), str(path))
        case[key] = str(path)
    return case


def test_oblique_lps_anisotropic_input_keeps_geometry(trained, data, tmp_path):
    case = _oblique_case(data["test"][0], tmp_path / "oblique")
    datalist = _write_datalist(tmp_path / "datalist.json", test=[case])
    root = tmp_path / "run"
    _run_inference(["inference.json"], _infer_overrides(root, datalist, trained / "models" / "model.pt"))
    out = _assert_same_geometry(_output(root, "oblique"), case["t1"])
    assert out.shape == (30, 37, 11) and nib.aff2axcodes(nib.load(_output(root, "oblique")).affine)[:2] == ("L", "P")


def test_zero_fill_missing_input(trained, data, tmp_path):
    cases = [{k: v for k, v in c.items() if k != "adc"} for c in data["test"]]
    datalist = _write_datalist(tmp_path / "datalist.json", test=cases)
    net = ConstantNet(0.5)
    _run_inference(["inference.json", "inference_missing.json"], _infer_overrides(tmp_path, datalist, trained / "models" / "model.pt"), net)
    x = torch.cat(net.inputs)
    assert x.shape[1] == 3 and torch.all(x[:, 2] == 0) and x[:, 0].abs().max() > 0 and x[:, 1].abs().max() > 0
    for case in cases:
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])
    # the trained network also runs with the zero-filled input
    root = tmp_path / "trained"
    _run_inference(["inference.json", "inference_missing.json"],
                   _infer_overrides(root, datalist, trained / "models" / "model.pt"))
    for case in cases:
        _assert_same_geometry(_output(root, case["subject"]), case["t1"])


def test_cascade_synthesizes_missing_inputs(trained, data, tmp_path):
    from common.networks import HRFCN

    constants = {"t1_to_t2": 0.25, "t1_to_adc": 0.5}
    for name, value in constants.items():
        net = HRFCN(3, 1, 1, stem_channels=TINY["stem_width"], channels=TINY["channels"], strides=(2, 2, 1),
                    num_res_blocks=TINY["num_res_blocks"])
        with torch.no_grad():  # a known synthesis: the last 1x1 conv outputs its bias everywhere
            net.head[-1].conv.weight.zero_()
            net.head[-1].conv.bias.fill_(value)
        (tmp_path / "models" / name).mkdir(parents=True)
        torch.save(net.state_dict(), tmp_path / "models" / name / "model.pt")
    cases = [{k: c[k] for k in ("subject", "t1", "brain_mask")} for c in data["test"]]
    datalist = _write_datalist(tmp_path / "datalist.json", test=cases)
    net = ConstantNet(0.5)
    _run_inference(["inference.json", "inference_cascade.json"], _infer_overrides(tmp_path, datalist, trained / "models" / "model.pt"), net)
    x = torch.cat(net.inputs)  # the windows the CE-T1 network saw: [T1, synthetic T2, synthetic ADC]
    brain = x[:, 1] != 0
    assert brain.any() and x[:, 0][brain].abs().max() > 0
    assert torch.all(x[:, 1][brain] == 0.25) and torch.all(x[:, 2][brain] == 0.5)  # synthesized in the brain
    assert torch.all(x[:, 2][~brain] == 0)  # skull-stripped like the real inputs
    for case in cases:
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])
    # one command path with the trained CE-T1 model
    root = tmp_path / "trained"
    _run_inference(["inference.json", "inference_cascade.json"],
                   _infer_overrides(root, datalist, trained / "models" / "model.pt",
                                    t2_model_file=str(tmp_path / "models/t1_to_t2/model.pt"),
                                    adc_model_file=str(tmp_path / "models/t1_to_adc/model.pt")))
    for case in cases:
        _assert_same_geometry(_output(root, case["subject"]), case["t1"])


@pytest.mark.parametrize("ablation", [None, "ablations/hrfcn2d.json", "ablations/unet2d.json"])
def test_sliding_window_blending_is_seamless(ablation):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json")] + ([str(CONFIGS / ablation)] if ablation else []))
    parser.update({"roi_hw": [8, 8], "sw_overlap": [0.5, 0.5, 0.67], "sw_batch_size": 7})
    inferer = parser.get_parsed_content("inferer")
    x = torch.rand(1, 3, 20, 22, 9)
    out = inferer(x, lambda t: torch.full_like(t[:, :1], 0.7))
    assert out.shape == (1, 1, 20, 22, 9)
    torch.testing.assert_close(out, torch.full_like(out, 0.7), rtol=0, atol=1e-6)


ABLATIONS = {
    "hrfcn2d.json": ("HRFCN", {"spatial_dims": 2}),
    "unet2d.json": ("UNet", {"dimensions": 2, "num_res_units": 4}),
    "unet3d.json": ("UNet", {"dimensions": 3, "num_res_units": 3}),
    "model_a.json": ("HRFCN", {"in_channels": 3}),
    "model_b.json": ("HRFCN", {"levels": (0,)}),
    "model_c.json": ("HRFCN", {"levels": (1, 2)}),
    "model_d.json": ("HRFCN", {}),
    "input_t1.json": ("HRFCN", {"in_channels": 1}),
    "input_t1_t2.json": ("HRFCN", {"in_channels": 2}),
}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_builds_and_trains_one_iteration(name, data, tmp_path):
    assert sorted(p.name for p in (CONFIGS / "ablations").glob("*.json")) == sorted(ABLATIONS)
    wf = _workflow(["train.json", f"ablations/{name}"], bundle_root=str(tmp_path), datalist=str(data["datalist"]),
                   val_interval=100, **TINY, **{"train#trainer#epoch_length": 1})
    wf.initialize()
    net = wf.parser.get_parsed_content("network")
    kind, attrs = ABLATIONS[name]
    assert type(net).__name__ == kind
    for attr, value in attrs.items():
        assert getattr(net, attr) == value, attr
    if name == "model_a.json":
        assert not net.stem.separate and len(net.stem.stems) == 1
    if name == "model_d.json":  # no exchange in stages 3 and 4: every unit reads its own branch only
        assert all(len(u.indices) == 1 for s in (net.stage3, net.stage4) for u in s.units)
    if kind == "HRFCN" and name not in ("model_a.json", "model_d.json"):
        assert net.stem.separate and len(net.stem.stems) == net.in_channels
    before = _state(net)
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 1 and math.isfinite(float(trainer.state.output["loss"].detach()))
    batch = trainer.state.batch["image"]
    assert batch.ndim == (4 if "2d" in name else 5) and batch.shape[1] == len(wf.parser.get_parsed_content("source_keys"))
    assert not _same_state(before, _state(net))
    wf.finalize()


def _save_like(src: str, dst: Path, array: np.ndarray | None = None, affine: np.ndarray | None = None) -> str:
    img = nib.load(src)
    arr = np.asarray(img.dataobj, dtype=np.float32) if array is None else array
    nib.save(nib.Nifti1Image(arr, img.affine if affine is None else affine), str(dst))
    return str(dst)


def _bad_case(kind: str, case: dict, folder: Path) -> tuple[dict, str]:
    """A copy of ``case`` broken as ``kind``; returns it and a string the error message must contain."""
    case = dict(case)
    t2 = np.asarray(nib.load(case["t2"]).dataobj, dtype=np.float32)
    bad = folder / "t2.nii.gz"
    if kind == "shape":
        case["t2"] = _save_like(case["t2"], bad, t2[:-2])
    elif kind == "affine":
        affine = nib.load(case["t1"]).affine.copy()
        affine[0, 3] += 3.0
        case["t2"] = _save_like(case["t2"], bad, affine=affine)
    elif kind == "missing_file":
        case["t2"] = str(folder / "does_not_exist.nii.gz")
    elif kind == "missing_key":
        del case["adc"]
        return case, "adc"
    elif kind == "nan":
        t2[3, 4, 5] = np.nan
        case["t2"] = _save_like(case["t2"], bad, t2)
    elif kind == "multichannel":
        case["t2"] = _save_like(case["t2"], bad, np.stack([t2, t2], axis=-1))
    elif kind == "corrupt":
        bad.write_bytes(b"\x1f\x8b\x08 this is not a NIfTI file")
        case["t2"] = str(bad)
    elif kind == "2d":
        case["t2"] = _save_like(case["t2"], bad, t2[:, :, 5])
    else:
        raise ValueError(kind)
    return case, case["t2"]


BAD = ["shape", "affine", "missing_file", "missing_key", "nan", "multichannel", "corrupt", "2d", "unwritable"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_stops_cleanly(kind, trained, data, tmp_path):
    from common.data import InputDataError

    case, expected = _bad_case(kind, data["test"][0], tmp_path) if kind != "unwritable" else (data["test"][0], "")
    datalist = _write_datalist(tmp_path / "datalist.json", test=[case])
    overrides = _infer_overrides(tmp_path, datalist, trained / "models" / "model.pt")
    if kind == "unwritable":
        (tmp_path / "a_file").write_text("x")
        overrides["output_dir"] = str(tmp_path / "a_file" / "out")
        expected = overrides["output_dir"]
    with pytest.raises(Exception) as info:
        _run_inference(["inference.json"], overrides)
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    error = next((e for e in chain if isinstance(e, InputDataError)), None)
    assert error is not None, f"no InputDataError in {[type(e).__name__ for e in chain]}"
    assert expected in str(error)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "out" in p.relative_to(tmp_path).parts]
    assert written == []


def test_command_line_bad_input_exits_nonzero(data, tmp_path):
    case = dict(data["test"][0], t2=str(tmp_path / "missing_t2.nii.gz"))
    datalist = _write_datalist(tmp_path / "datalist.json", test=[case])
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(CONFIGS / "inference.json"),
        "--meta_file", str(CONFIGS / "metadata.json"),
        "--logging_file", str(CONFIGS / "logging.conf"),
        "--bundle_root", str(tmp_path), "--datalist", str(datalist), "--output_dir", str(tmp_path / "out"),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert "missing_t2.nii.gz" in proc.stderr + proc.stdout and "does not exist" in proc.stderr + proc.stdout
    assert not (tmp_path / "out").exists()


def test_configs_keep_paper_settings():
    """train.json holds the paper's stage-1 settings; the stage-2 override its fine-tuning ones."""
    train = json.loads((CONFIGS / "train.json").read_text())
    assert (train["lambda_mae"], train["lambda_ssim"], train["lambda_local"]) == (1.0, 1.0, 1.0)
    assert (train["learning_rate"], train["max_epochs"], train["delta"]) == (1e-4, 40, 0.1)
    assert train["channels"] == [64, 128, 256] and train["num_res_blocks"] == 4 and train["batch_size"] == 3
    assert train["slab_depth"] == 3 and train["mask_source"] == "threshold"
    stage2 = json.loads((CONFIGS / "finetune_local.json").read_text())
    assert (stage2["lambda_mae"], stage2["lambda_ssim"], stage2["lambda_local"]) == (0.1, 0.1, 10.0)
    assert (stage2["learning_rate"], stage2["max_epochs"]) == (1e-5, 10)
    assert all("#" not in k for k in json.loads((CONFIGS / "demo.json").read_text()))  # top-level ids only


@pytest.mark.parametrize("mask_source", ["threshold", "label"])
def test_local_loss_mask_source(mask_source, data, tmp_path):
    """The label is packed [t1ce, T1] for the threshold mask, [t1ce, binary tumour mask] for "label"."""
    wf = _workflow(["train.json"], bundle_root=str(tmp_path), datalist=str(data["datalist"]), val_interval=100,
                   mask_source=mask_source, **TINY, **{"train#trainer#epoch_length": 1})
    wf.initialize()
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    image, label = trainer.state.batch["image"], trainer.state.batch["label"]
    assert label.shape[1] == 2 and trainer.state.output["loss"].isfinite()
    if mask_source == "threshold":
        torch.testing.assert_close(label[:, 1], image[:, 0])  # the T1 channel of the input
    else:
        assert set(torch.unique(label[:, 1]).tolist()) <= {0.0, 1.0}
    assert wf.parser.get_parsed_content("loss").mask_source == mask_source
    wf.finalize()


def test_bf16_autocast_switch_on_cpu(data, tmp_path):
    """``--amp true`` on a CPU runs the training forward pass under bfloat16 autocast; the loss stays float32."""
    wf = _workflow(["train.json"], bundle_root=str(tmp_path), datalist=str(data["datalist"]), val_interval=100,
                   amp=True, **TINY, **{"train#trainer#epoch_length": 1})
    wf.initialize()
    assert wf.parser.get_parsed_content("cpu_autocast") is True
    net = wf.parser.get_parsed_content("network")
    dtypes = []
    net.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert dtypes == [torch.bfloat16] and trainer.state.output["pred"].dtype == torch.float32
    assert trainer.state.output["loss"].isfinite()
    wf.finalize()


SWEEPS = sorted(p.name for p in (CONFIGS / "sweeps").glob("*.json"))


def test_sweep_files_are_the_papers_grids():
    weights = sorted(n for n in SWEEPS if n.startswith("local_weights_"))
    deltas = sorted(float(n[len("delta_") : -len(".json")]) for n in SWEEPS if n.startswith("delta_"))
    assert len(weights) == 5  # Fig. 7: (λ1 = λ2, λ3) in {(1, 1), (1, 10), (1, 30), (0.1, 10), (0.01, 10)}
    assert deltas == [0.001, 0.01, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3]  # Fig. 9


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_sets_the_loss_and_trains_one_iteration(name, data, tmp_path):
    wf = _workflow(["train.json", f"sweeps/{name}"], bundle_root=str(tmp_path), datalist=str(data["datalist"]),
                   val_interval=100, **TINY, **{"train#trainer#epoch_length": 1})
    wf.initialize()
    loss = wf.parser.get_parsed_content("loss")
    spec = json.loads((CONFIGS / "sweeps" / name).read_text())
    assert loss.lambda_mae == spec.get("lambda_mae", 1.0) and loss.lambda_ssim == spec.get("lambda_ssim", 1.0)
    assert loss.lambda_local == spec.get("lambda_local", 1.0) and loss.local.delta == spec.get("delta", 0.1)
    assert wf.parser.get_parsed_content("ckpt_dir") == str(tmp_path / "models" / name[:-5])
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 1 and math.isfinite(float(trainer.state.output["loss"].detach()))
