"""Bundle tests of ``bundles/hrfcn_contrast_t1`` (HR-FCN, T1 + T2 + ADC -> contrast-enhanced T1).

In-process ``monai.bundle.ConfigWorkflow`` runs on the tiny phantom with shrunken widths (``TINY``). Two
sections:

- generic bundle-contract tests (candidates for ``tests/bundles/contract.py``): training, resumption (and
  resume == uninterrupted), training pre-checks, ``val_psnr`` in the target's units, the multi-GPU config,
  mixed precision, evaluation, inference in the input geometry (also an oblique, anisotropic LPS grid), the
  bad inputs of the bundle contract (section 6) and one command-line run's exit status;
- HR-FCN-specific tests: stage-2 fine-tuning, the paper's settings, the T1-referenced target map, the local
  loss's batch key, zero-filled and cascaded missing inputs (also with the cascade models trained by the
  bundle), blended sliding windows, every ablation and sweep override.
"""

from __future__ import annotations

import json
import logging
import math
import os
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
    out.update(bundle_root=str(root), datalist=str(datalist), output_dir=str(root / "out"), ckpt_path=str(model))
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
    datalist = _write_datalist(
        root / "datalist.json", training=cases["training"], validation=cases["validation"], test=test
    )
    return {"datalist": datalist, "test": test, "cases": everyone, "dir": root}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """Stage 1: one epoch of two iterations, validation on the validation case (writes model.pt)."""
    root = tmp_path_factory.mktemp("hrfcn_bundle")
    wf = _workflow(
        ["train.json"],
        bundle_root=str(root),
        datalist=str(data["datalist"]),
        **TINY,
        **{"train#trainer#epoch_length": 2},
    )
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


def _input_data_error(err: BaseException | None) -> Exception:
    """The ``InputDataError`` in the cause/context chain of ``err`` (MONAI wraps it in a RuntimeError)."""
    from common.data import InputDataError

    chain = []
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    error = next((e for e in chain if isinstance(e, InputDataError)), None)
    assert error is not None, f"no InputDataError in {[type(e).__name__ for e in chain]}"
    return error


BAD = ["shape", "affine", "missing_file", "missing_key", "nan", "multichannel", "corrupt", "2d", "unwritable"]


def _train_weights(root: Path, data: dict, max_epochs: int, resume: bool = False) -> dict:
    wf = _workflow(
        ["train.json"],
        bundle_root=str(root),
        datalist=str(data["datalist"]),
        resume=resume,
        val_interval=100,
        **dict(TINY, max_epochs=max_epochs),
        **{"train#trainer#epoch_length": 1},
    )
    wf.initialize()
    wf.run()
    weights = _state(wf.parser.get_parsed_content("network"))
    wf.finalize()
    return weights


class _Messages(logging.Handler):
    """Collects the messages of one logger (``fileConfig`` in ConfigWorkflow replaces pytest's root handler)."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.INFO)
        self.logger, self.messages = logging.getLogger(name), []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> list[str]:
        self.logger.addHandler(self)
        self.level_before = self.logger.level
        self.logger.setLevel(logging.INFO)
        return self.messages

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level_before)


def _constant_cascade_models(root: Path) -> dict:
    """T1 -> T2 and T1 -> ADC HR-FCNs whose output is a known constant (0.25, 0.5): the last conv's bias."""
    from common.networks import HRFCN

    paths = {}
    for name, value in {"t1_to_t2": 0.25, "t1_to_adc": 0.5}.items():
        net = HRFCN(
            3,
            1,
            1,
            stem_channels=TINY["stem_width"],
            channels=TINY["channels"],
            strides=(2, 2, 1),
            num_res_blocks=TINY["num_res_blocks"],
        )
        with torch.no_grad():
            net.head[-1].conv.weight.zero_()
            net.head[-1].conv.bias.fill_(value)
        (root / "models" / name).mkdir(parents=True)
        torch.save(net.state_dict(), root / "models" / name / "model.pt")
        paths[name] = root / "models" / name / "model.pt"
    return paths


# ==============================================================================================================
# Contract tests beyond tests/bundles/test_contract.py (which runs resume = uninterrupted, the training
# pre-checks, the oblique geometry, every bad input and the command line on this bundle too)
# ==============================================================================================================


def test_train_and_resume(trained, data):
    models = trained / "models"
    assert (models / "model.pt").is_file() and (models / "checkpoint_epoch=1.pt").is_file()
    full = torch.load(models / "checkpoint_epoch=1.pt", weights_only=True)
    assert {"model", "optimizer", "trainer"} <= set(full)

    # resume: continues at epoch 2 from the full state (weights, optimizer, epoch and iteration counters)
    from ignite.engine import Events

    wf = _workflow(
        ["train.json"],
        bundle_root=str(trained),
        datalist=str(data["datalist"]),
        resume=True,
        **dict(TINY, max_epochs=2),
        **{"train#trainer#epoch_length": 2},
    )
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
    best = wf.parser.get_parsed_content("validate#best_model_saver")._key_metric_checkpoint
    assert len(best._saved) == 1 and best._saved[0].priority >= full["best_model"]["_saved"][0][0]
    wf.finalize()


def test_unwritable_checkpoint_folder_fails_before_training(data, tmp_path):
    (tmp_path / "a_file").write_text("x")
    ckpt_dir = str(tmp_path / "a_file" / "models")
    wf = _workflow(["train.json"], bundle_root=str(tmp_path), datalist=str(data["datalist"]), ckpt_dir=ckpt_dir, **TINY)
    with pytest.raises(Exception) as info:
        wf.initialize()
    assert ckpt_dir in str(_input_data_error(info.value))
    assert not (tmp_path / "eval").exists()  # refused at initialize: no trainer ran, no log was written


def test_val_psnr_is_in_target_units(trained, data):
    """val_psnr: de-normalised prediction vs the raw (skull-stripped) target, peak = the target's range."""
    wf = _workflow(["train.json"], bundle_root=str(trained), datalist=str(data["datalist"]), **TINY)
    wf.initialize()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    evaluator.network = ConstantNet(0.25)
    evaluator.run()
    (case,) = [c for c in data["cases"] if c in json.loads(Path(data["datalist"]).read_text())["validation"]]
    t1 = np.asarray(nib.load(case["t1"]).dataobj, dtype=np.float64)
    target = np.asarray(nib.load(case["t1ce"]).dataobj, dtype=np.float64)
    brain = np.asarray(nib.load(case["brain_mask"]).dataobj) > 0
    lo, hi = np.quantile(t1[brain], [0.0, 0.995])
    pred = np.where(brain, lo + 0.25 * (hi - lo), 0.0)
    label = np.where(brain, target, 0.0)
    expected = 10 * math.log10((label.max() - label.min()) ** 2 / np.mean((pred - label) ** 2))
    assert evaluator.state.metrics["val_psnr"] == pytest.approx(expected, abs=1e-3)
    wf.finalize()


def test_multi_gpu_config_wraps_and_splits_handlers(data, tmp_path, monkeypatch):
    """multi_gpu_train.json (gloo, world size 1, in-process): DDP network, distributed samplers, and the
    logging handlers on rank 0 only (no positional slicing of train.json's lists)."""
    import torch.distributed as dist
    from ignite.handlers import ProgressBar

    from monai.bundle import ConfigParser
    from monai.data import DistributedSampler
    from monai.handlers import (
        CheckpointSaver,
        StatsHandler,
        TensorBoardImageHandler,
        TensorBoardStatsHandler,
        ValidationHandler,
    )

    from common.engines import EpochSeedHandler, LearningRateLogger

    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:

        def parsed(rank: int) -> ConfigParser:
            monkeypatch.setattr("common.utils.dist.rank", lambda: rank)
            parser = ConfigParser()
            parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
            parser.update(dict(TINY, bundle_root=str(tmp_path), datalist=str(data["datalist"])))
            parser.parse()
            return parser

        parser = parsed(0)
        net = parser.get_parsed_content("network")
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel) and type(net.module).__name__ == "HRFCN"
        trainer = parser.get_parsed_content("train#trainer")
        assert trainer.g_network is net and parser.get_parsed_content("validate#evaluator").network is net
        assert isinstance(parser.get_parsed_content("train#dataloader").sampler, DistributedSampler)
        assert isinstance(parser.get_parsed_content("validate#dataloader").sampler, DistributedSampler)
        kinds = [type(h) for h in parser.get_parsed_content("train#trainer#train_handlers")]
        assert kinds == [
            EpochSeedHandler,
            ValidationHandler,
            ProgressBar,
            LearningRateLogger,
            StatsHandler,
            TensorBoardStatsHandler,
            TensorBoardImageHandler,
        ]
        val_kinds = [type(h) for h in parser.get_parsed_content("validate#evaluator#val_handlers")]
        assert val_kinds == [StatsHandler, TensorBoardStatsHandler, CheckpointSaver]

        other = parsed(1)  # another rank: no handler that logs (ignite's savers write on rank 0 only)
        kinds = [type(h) for h in other.get_parsed_content("train#trainer#train_handlers")]
        assert kinds == [EpochSeedHandler, ValidationHandler]
        assert [type(h) for h in other.get_parsed_content("validate#evaluator#val_handlers")] == [CheckpointSaver]
    finally:  # ignite caches the distributed context it saw: reset it to serial, then drop the group
        import ignite.distributed as idist

        idist.finalize()
        if dist.is_initialized():
            dist.destroy_process_group()


def test_bf16_autocast_switch_on_cpu(data, tmp_path):
    """``--amp true`` on a CPU runs the training forward pass under bfloat16 autocast; the loss stays float32."""
    wf = _workflow(
        ["train.json"],
        bundle_root=str(tmp_path),
        datalist=str(data["datalist"]),
        val_interval=100,
        amp=True,
        **TINY,
        **{"train#trainer#epoch_length": 1},
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.amp and trainer.autocast_device == "cpu" and trainer.amp_dtype == torch.bfloat16
    val_inferer = wf.parser.get_parsed_content("validate#inferer")
    assert val_inferer.enabled and val_inferer.device_type == "cpu" and val_inferer.dtype == torch.bfloat16
    net = wf.parser.get_parsed_content("network")
    dtypes = []
    net.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    wf.run()
    assert dtypes == [torch.bfloat16] and trainer.state.output[0]["pred"].dtype == torch.float32
    assert math.isfinite(float(trainer.state.output[0]["loss"]))
    out = val_inferer(torch.rand(1, 3, 16, 16, 3), net.eval())  # validation/inference path: bf16 inside, fp32 out
    assert dtypes[-1] == torch.bfloat16 and out.dtype == torch.float32
    wf.finalize()


def test_evaluate_writes_brain_and_tumour_metrics(trained, data):
    out = trained / "eval_test"
    wf = _workflow(
        ["train.json", "evaluate.json"],
        bundle_root=str(trained),
        datalist=str(data["datalist"]),
        output_dir=str(out),
        **TINY,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    import csv

    # the collection's space (target units, peak = the target's range) in metrics.csv; the paper's own
    # [0, 1]-normalised space with peak 1 as a second, labelled table
    units = list(csv.DictReader((out / "metrics.csv").open()))
    assert sorted(r["case"] for r in units) == sorted(c["subject"] for c in data["test"])
    rows = list(csv.DictReader((out / "paper_space" / "metrics.csv").open()))
    assert sorted(r["case"] for r in rows) == sorted(c["subject"] for c in data["test"])
    for row, unit_row in zip(rows, units):
        assert float(unit_row["mae_brain"]) > 10 * float(row["mae_brain"])  # target units, not [0, 1]
        for column in ("mae_brain", "psnr_brain", "ssim_brain", "psnr_tumor"):
            assert math.isfinite(float(row[column])), (column, row)
        # PSNR in the [0, 1]-normalised space with peak 1: 10 log10(1 / MSE)
        assert float(row["psnr_brain"]) == pytest.approx(-10 * math.log10(float(row["mse_brain"])), rel=1e-6)
        assert -1.0 <= float(row["ssim_brain"]) <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == len(data["test"]) and summary["metrics"]["psnr_tumor"]["count"] == len(data["test"])
    assert (out / "figure_grid.png").stat().st_size > 0


def test_inference_geometry_and_units(trained, data):
    _run_inference(["inference.json"], _infer_overrides(trained, data["datalist"], trained / "models" / "model.pt"))
    for case in data["test"]:
        _assert_same_geometry(_output(trained, case["subject"]), case["t1"])

    # a constant network through overlapping blended windows: inside the brain the output is exactly the
    # constant de-normalised with the T1's brain percentiles (0, 99.5); outside, 0 (skull-stripped output)
    net = ConstantNet(0.25)
    root = trained / "const"
    _run_inference(
        ["inference.json"],
        _infer_overrides(
            root, data["datalist"], trained / "models" / "model.pt", roi_hw=[16, 16], sw_overlap=[0.5, 0.5, 0.67]
        ),
        net,
    )
    assert net.inputs and tuple(net.inputs[0].shape[2:]) == (16, 16, 3)
    for case in data["test"]:
        out = _assert_same_geometry(_output(root, case["subject"]), case["t1"])
        t1 = np.asarray(nib.load(case["t1"]).dataobj, dtype=np.float64)
        brain = np.asarray(nib.load(case["brain_mask"]).dataobj) > 0
        lo, hi = np.quantile(t1[brain], [0.0, 0.995])
        np.testing.assert_allclose(out[brain], lo + 0.25 * (hi - lo), rtol=1e-4)
        assert np.all(out[~brain] == 0)


# ==============================================================================================================
# HR-FCN-specific tests: two-stage local loss, T1-referenced map, missing inputs, ablations, sweeps
# ==============================================================================================================


def test_finetune_stage2_starts_from_stage1(trained, data):
    from ignite.engine import Events

    models = trained / "models"
    # stage 2: starts from stage 1's model.pt, lambda = (0.1, 0.1, 10), lr 1e-5, own folder
    stage1 = (models / "model.pt").read_bytes()
    stage1_weights = torch.load(models / "model.pt", weights_only=True)
    wf = _workflow(
        ["train.json", "finetune_local.json"],
        bundle_root=str(trained),
        datalist=str(data["datalist"]),
        **TINY,
        **{"train#trainer#epoch_length": 2},
    )
    wf.initialize()
    weights = wf.parser.get_parsed_content("g_loss").pixel_weights
    optimizer = wf.parser.get_parsed_content("optimizer")
    assert (weights["mae"], weights["ssim"], weights["local"]) == (0.1, 0.1, 10.0)
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


def test_training_target_uses_the_t1_map(data):
    """The CE-T1 target is normalised by T1's brain percentiles (inference de-normalises with them)."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose, RandSpatialCropSamplesd

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update(dict(TINY, datalist=str(data["datalist"])))
    transforms = parser.get_parsed_content("train#preprocessing").transforms
    crop = next(i for i, t in enumerate(transforms) if isinstance(t, RandSpatialCropSamplesd))
    case = parser.get_parsed_content("train#datalist_data")[0]
    out = Compose(transforms[:crop])(case)  # everything before the random crop: deterministic
    t1 = np.asarray(nib.load(case["t1"]).dataobj, dtype=np.float64)
    ce = np.asarray(nib.load(case["t1ce"]).dataobj, dtype=np.float64)
    brain = np.asarray(nib.load(case["brain_mask"]).dataobj) > 0
    t1_map, ce_map = np.quantile(t1[brain], [0.0, 0.995]), np.quantile(ce[brain], [0.0, 0.995])
    assert abs(ce_map[1] - t1_map[1]) > 0.05 * t1_map[1]  # a case where the two maps differ
    np.testing.assert_allclose(out["t1_scale"].numpy(), t1_map, rtol=1e-5)
    assert "t1ce_scale" not in out
    label = out["label"].numpy().astype(np.float64)  # foreground-cropped, padded: compare crop-free sums
    for lo, hi in (t1_map,):
        assert label.sum() == pytest.approx((((ce - lo) / (hi - lo)) * brain).sum(), rel=1e-4)
    lo, hi = ce_map
    assert label.sum() != pytest.approx((((ce - lo) / (hi - lo)) * brain).sum(), rel=1e-2)


@pytest.mark.parametrize("mask_source", ["threshold", "label"])
def test_local_loss_mask_source(mask_source, data, tmp_path):
    """The label is the target only; the local term reads the T1 ("threshold") or the binary tumour mask
    ("label") from the batch, cropped with image and label."""
    wf = _workflow(
        ["train.json"],
        bundle_root=str(tmp_path),
        datalist=str(data["datalist"]),
        val_interval=100,
        mask_source=mask_source,
        **TINY,
        **{"train#trainer#epoch_length": 1},
    )
    wf.initialize()
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    keys = ("image", "label", "t1", "tumor_mask")
    first = trainer.state.batch[0]  # decollated: one dict per sample; unloaded keys stay file paths
    batch = {k: torch.stack([item[k] for item in trainer.state.batch]) for k in keys if torch.is_tensor(first.get(k))}
    image, label = batch["image"], batch["label"]
    assert label.shape[1] == 1 and math.isfinite(float(trainer.state.output[0]["loss"]))
    term = wf.parser.get_parsed_content("g_loss").pixel_losses["local"]
    aux = batch[term.key]
    assert aux.shape == label.shape
    if mask_source == "threshold":
        assert term.reference_key == "t1" and term.mask_key is None
        torch.testing.assert_close(aux, image[:, :1])  # the T1 channel of the input, same crop
    else:
        assert term.mask_key == "tumor_mask" and term.reference_key is None
        assert set(torch.unique(aux).tolist()) <= {0.0, 1.0}
    assert {"g_mae", "g_ssim", "g_local"} <= set(trainer.state.output[0])  # logged from the term dict
    wf.finalize()


def test_zero_fill_missing_input(trained, data, tmp_path):
    cases = [{k: v for k, v in c.items() if k != "adc"} for c in data["test"]]
    datalist = _write_datalist(tmp_path / "datalist.json", test=cases)
    net = ConstantNet(0.5)
    _run_inference(
        ["inference.json", "inference_missing.json"],
        _infer_overrides(tmp_path, datalist, trained / "models" / "model.pt"),
        net,
    )
    x = torch.cat(net.inputs)
    assert x.shape[1] == 3 and torch.all(x[:, 2] == 0) and x[:, 0].abs().max() > 0 and x[:, 1].abs().max() > 0
    for case in cases:
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])
    # the trained network also runs with the zero-filled input
    root = tmp_path / "trained"
    _run_inference(
        ["inference.json", "inference_missing.json"], _infer_overrides(root, datalist, trained / "models" / "model.pt")
    )
    for case in cases:
        _assert_same_geometry(_output(root, case["subject"]), case["t1"])


def test_zero_fill_ignores_a_listed_missing_file(trained, data, tmp_path):
    """inference_missing.json while the datalist still lists the ADC: the file is ignored and zero-filled."""
    net = ConstantNet(0.5)
    with _Messages("common.transforms.modality") as messages:
        _run_inference(
            ["inference.json", "inference_missing.json"],
            _infer_overrides(tmp_path, data["datalist"], trained / "models" / "model.pt"),
            net,
        )
    x = torch.cat(net.inputs)
    assert torch.all(x[:, 2] == 0) and x[:, 1].abs().max() > 0
    for case in data["test"]:
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])
        lines = [m for m in messages if f"case {case['subject']}:" in m]
        assert any("'adc' is declared missing; ignoring the listed file" in m and case["adc"] in m for m in lines)


def test_cascade_synthesizes_missing_inputs(trained, data, tmp_path):
    from common.networks import HRFCN

    constants = {"t1_to_t2": 0.25, "t1_to_adc": 0.5}
    for name, value in constants.items():
        net = HRFCN(
            3,
            1,
            1,
            stem_channels=TINY["stem_width"],
            channels=TINY["channels"],
            strides=(2, 2, 1),
            num_res_blocks=TINY["num_res_blocks"],
        )
        with torch.no_grad():  # a known synthesis: the last 1x1 conv outputs its bias everywhere
            net.head[-1].conv.weight.zero_()
            net.head[-1].conv.bias.fill_(value)
        (tmp_path / "models" / name).mkdir(parents=True)
        torch.save(net.state_dict(), tmp_path / "models" / name / "model.pt")
    cases = [{k: c[k] for k in ("subject", "t1", "brain_mask")} for c in data["test"]]
    datalist = _write_datalist(tmp_path / "datalist.json", test=cases)
    net = ConstantNet(0.5)
    _run_inference(
        ["inference.json", "inference_cascade.json"],
        _infer_overrides(tmp_path, datalist, trained / "models" / "model.pt"),
        net,
    )
    x = torch.cat(net.inputs)  # the windows the CE-T1 network saw: [T1, synthetic T2, synthetic ADC]
    brain = x[:, 1] != 0
    assert brain.any() and x[:, 0][brain].abs().max() > 0
    assert torch.all(x[:, 1][brain] == 0.25) and torch.all(x[:, 2][brain] == 0.5)  # synthesized in the brain
    assert torch.all(x[:, 2][~brain] == 0)  # skull-stripped like the real inputs
    for case in cases:
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])
    # one command path with the trained CE-T1 model
    root = tmp_path / "trained"
    _run_inference(
        ["inference.json", "inference_cascade.json"],
        _infer_overrides(
            root,
            datalist,
            trained / "models" / "model.pt",
            t2_ckpt_path=str(tmp_path / "models/t1_to_t2/model.pt"),
            adc_ckpt_path=str(tmp_path / "models/t1_to_adc/model.pt"),
        ),
    )
    for case in cases:
        _assert_same_geometry(_output(root, case["subject"]), case["t1"])


def test_cascade_uses_real_images_where_present(trained, data, tmp_path):
    """inference_cascade.json: a listed real T2 is used (normalised by its own map); only absent inputs are
    synthesized; one log line per case and key says which."""
    from ignite.engine import Events

    _constant_cascade_models(tmp_path)
    with_t2, without = data["test"]
    cases = [
        {k: with_t2[k] for k in ("subject", "t1", "t2", "brain_mask")},
        {k: without[k] for k in ("subject", "t1", "brain_mask")},
    ]
    datalist = _write_datalist(tmp_path / "datalist.json", test=cases)
    net = ConstantNet(0.5)
    wf = _workflow(
        ["inference.json", "inference_cascade.json"],
        workflow_type="infer",
        **_infer_overrides(tmp_path, datalist, trained / "models" / "model.pt"),
    )
    with _Messages("common.transforms.modality") as messages:
        wf.initialize()
        evaluator = wf.parser.get_parsed_content("evaluator")
        evaluator.network = net
        marks: list[int] = []
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: marks.append(len(net.inputs)))
        wf.run()
        wf.finalize()
    first, second = torch.cat(net.inputs[: marks[0]]), torch.cat(net.inputs[marks[0] :])
    for x in (first, second):
        brain = x[:, 2] != 0
        assert brain.any() and torch.all(x[:, 2][brain] == 0.5)  # ADC synthesized for both
    brain = first[:, 2] != 0
    assert (first[:, 1][brain] != 0.25).float().mean() > 0.9 and first[:, 1].max() > 0.5  # the real T2
    brain = second[:, 2] != 0
    assert torch.all(second[:, 1][brain] == 0.25)  # synthesized T2
    assert f"case {with_t2['subject']}: 't2' is present; using the real image." in messages
    assert f"case {without['subject']}: 't2' is absent; synthesizing it from ['t1']." in messages
    for case in (with_t2, without):
        assert f"case {case['subject']}: 'adc' is absent; synthesizing it from ['t1']." in messages
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])


def test_cascade_models_trained_by_the_bundle_feed_inference(trained, data, tmp_path):
    """train_t1_to_t2.json / train_t1_to_adc.json write the models inference_cascade.json loads, end to end."""
    for name in ("t1_to_t2", "t1_to_adc"):
        wf = _workflow(
            ["train.json", f"train_{name}.json"],
            bundle_root=str(tmp_path),
            datalist=str(data["datalist"]),
            **TINY,
            **{"train#trainer#epoch_length": 1},
        )
        wf.initialize()
        wf.run()
        wf.finalize()
        assert (tmp_path / "models" / name / "model.pt").is_file()
    cases = [{k: c[k] for k in ("subject", "t1", "brain_mask")} for c in data["test"]]
    datalist = _write_datalist(tmp_path / "datalist.json", test=cases)
    net = ConstantNet(0.5)
    _run_inference(
        ["inference.json", "inference_cascade.json"],
        _infer_overrides(tmp_path, datalist, trained / "models" / "model.pt"),
        net,
    )
    x = torch.cat(net.inputs)
    brain = x[:, 0] != 0
    assert torch.isfinite(x).all() and x[:, 1][brain].std() > 0 and x[:, 2][brain].std() > 0  # real syntheses
    for case in cases:
        _assert_same_geometry(_output(tmp_path, case["subject"]), case["t1"])


@pytest.mark.parametrize("ablation", [None, "ablations/hrfcn2d.json", "ablations/unet2d.json"])
def test_sliding_window_blending_is_seamless(ablation):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json")] + ([str(CONFIGS / ablation)] if ablation else []))
    parser.update({"roi_hw": [8, 8], "sw_overlap": [0.5, 0.5, 0.67], "sw_batch_size": 7})
    inferer = parser.get_parsed_content("inferer")  # AutocastInferer (off: amp false) around the window inferer
    assert type(inferer.inferer).__name__ == ("SliceInferer" if ablation else "SlidingWindowInferer")
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
    validate = "2d" in name  # the 2D variants also validate: SliceInferer over whole volumes, val_psnr
    wf = _workflow(
        ["train.json", f"ablations/{name}"],
        bundle_root=str(tmp_path),
        datalist=str(data["datalist"]),
        val_interval=1 if validate else 100,
        **TINY,
        **{"train#trainer#epoch_length": 1},
    )
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
    wf.run()  # one iteration; that every override trains and checkpoints is also a contract test
    trainer = wf.parser.get_parsed_content("train#trainer")
    batch = trainer.state.batch[0]["image"]  # decollated: one dict per sample
    assert batch.ndim == (3 if "2d" in name else 4) and batch.shape[0] == len(
        wf.parser.get_parsed_content("source_keys")
    )
    if validate:
        assert math.isfinite(wf.parser.get_parsed_content("validate#evaluator").state.metrics["val_psnr"])
    wf.finalize()


SWEEPS = sorted(p.name for p in (CONFIGS / "sweeps").glob("*.json"))


def test_sweep_files_are_the_papers_grids():
    weights = sorted(n for n in SWEEPS if n.startswith("local_weights_"))
    deltas = sorted(float(n[len("delta_") : -len(".json")]) for n in SWEEPS if n.startswith("delta_"))
    assert len(weights) == 5  # Fig. 7: (λ1 = λ2, λ3) in {(1, 1), (1, 10), (1, 30), (0.1, 10), (0.01, 10)}
    assert deltas == [0.001, 0.01, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3]  # Fig. 9


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_sets_the_loss_and_trains_one_iteration(name, data, tmp_path):
    wf = _workflow(
        ["train.json", f"sweeps/{name}"],
        bundle_root=str(tmp_path),
        datalist=str(data["datalist"]),
        val_interval=100,
        **TINY,
        **{"train#trainer#epoch_length": 1},
    )
    wf.initialize()
    loss = wf.parser.get_parsed_content("g_loss")
    spec = json.loads((CONFIGS / "sweeps" / name).read_text())
    weights = loss.pixel_weights
    assert weights["mae"] == spec.get("lambda_mae", 1.0) and weights["ssim"] == spec.get("lambda_ssim", 1.0)
    assert weights["local"] == spec.get("lambda_local", 1.0)
    assert loss.pixel_losses["local"].delta == spec.get("delta", 0.1)
    assert wf.parser.get_parsed_content("ckpt_dir") == str(tmp_path / "models" / name[:-5])
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 1 and math.isfinite(float(trainer.state.output[0]["loss"]))
