"""Bundle ``hrfcn_contrast_t1``: configs - paper settings, multi-GPU wiring, bf16, the local loss's inputs,
blended sliding windows, the Model-A..D / input ablations and the Fig. 7 / Fig. 9 sweeps.
"""

from __future__ import annotations

import json
import math
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from hrfcn_helpers import (
    CONFIGS,
    TINY,
    _input_data_error,
    _workflow,
)

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


SWEEPS = sorted(p.name for p in (CONFIGS / "sweeps").glob("*.json"))


def test_unwritable_checkpoint_folder_fails_before_training(data, tmp_path):
    (tmp_path / "a_file").write_text("x")
    ckpt_dir = str(tmp_path / "a_file" / "models")
    wf = _workflow(["train.json"], bundle_root=str(tmp_path), datalist=str(data["datalist"]), ckpt_dir=ckpt_dir, **TINY)
    with pytest.raises(Exception) as info:
        wf.initialize()
    assert ckpt_dir in str(_input_data_error(info.value))
    assert not (tmp_path / "eval").exists()  # refused at initialize: no trainer ran, no log was written


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
