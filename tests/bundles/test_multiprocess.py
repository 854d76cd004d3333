"""``multi_gpu_train.json`` of every bundle: trained under ``torchrun --nproc_per_node=2`` (gloo, CPU), and run
one iteration in process at world size 1.

The two-process run is launched once for all bundles (``mp_driver.py`` loops over ``bundles/`` inside each rank,
imports cost ~10 s per process) with ``train.json + demo.json + multi_gpu_train.json`` and the tiny settings of
``contract.BUNDLES``, two epochs on the tiny phantom; each rank writes into its own ``bundle_root`` so that what
rank 1 wrote can be listed. Per bundle it asserts: every network DDP-wrapped, both ranks' generator and
discriminator parameters bit-identical afterwards, rank 0's checkpoint holding rank 0's state (unwrapped keys),
the validation metric all-gathered (the same on both ranks), every discriminator's DDP gradient (WGAN-GP penalty
through DDP included) equal to the mean of the ranks' own gradients, and only rank 0 writing checkpoints and logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ignite.distributed as idist
import pytest
import torch
import torch.distributed as dist
from contract import BUNDLES, load_checkpoint, workflow
from mp_driver import EPOCHS, bundle_names
from torch.nn.parallel import DistributedDataParallel

from monai.data import DistributedSampler

DRIVER = Path(__file__).resolve().parent / "mp_driver.py"
NAMES = bundle_names()
SPECS = {s.name: s for s in BUNDLES}
WORLD = 2
DIST_INIT = [
    "$torch.distributed.is_initialized() or torch.distributed.init_process_group(backend=@dist_backend)",
    "$torch.cuda.set_device(@device) if torch.cuda.is_available() else None",
]
LOGGERS = {"ProgressBar", "StatsHandler", "TensorBoardStatsHandler", "TensorBoardImageHandler", "LearningRateLogger"}
DIST_FINALIZE = ["$torch.distributed.is_initialized() and torch.distributed.destroy_process_group()"]


@pytest.fixture(scope="module")
def torchrun(tiny_phantom, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One ``torchrun --nproc_per_node=2`` of the driver over every bundle: (its output folder, the process)."""
    out = tmp_path_factory.mktemp("torchrun")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}"]
    cmd += [str(DRIVER), "--dataset_dir", tiny_phantom, "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=str(out), capture_output=True, text=True, env=env, timeout=900)
    return out, proc


def _results(out: Path, proc: subprocess.CompletedProcess, name: str) -> list[dict]:
    paths = [out / name / f"result_rank{r}.json" for r in range(WORLD)]
    missing = [str(p) for p in paths if not p.exists()]
    assert not missing, (
        f"torchrun exited {proc.returncode} without {missing}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    results = [json.loads(p.read_text()) for p in paths]
    for rank, result in enumerate(results):
        assert result["ok"], f"{name} failed on rank {rank}:\n{result['error']}"
    return results


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize("name", NAMES)
def test_torchrun_two_ranks(name, torchrun):
    out, proc = torchrun
    results = _results(out, proc, name)
    for result in results:
        assert result["world_size"] == WORLD and result["generator_ddp"] and result["epoch"] == EPOCHS
        assert result["val_iterations"] >= 1  # every rank validates its shard (even a 1-case validation set)
    assert results[0]["iterations"] == results[1]["iterations"] >= EPOCHS  # the same number of DDP steps
    assert results[0]["val_metrics"] == results[1]["val_metrics"] and "val_psnr" in results[0]["val_metrics"]

    # rank 1 keeps what takes part in collectives (validation: the metric is all-gathered) and drops the loggers
    for key in ("train_handlers", "val_handlers"):
        kept, full = results[1][key], results[0][key]
        assert [h for h in full if h in kept] == kept and not LOGGERS & set(kept), (key, full, kept)
    assert "ValidationHandler" in results[1]["train_handlers"] and LOGGERS & set(results[0]["train_handlers"])

    # both ranks end with the same weights (DDP all-reduces gradients; every optimizer steps identically)
    weights = [torch.load(out / name / f"weights_rank{r}.pt", weights_only=True) for r in range(WORLD)]
    nets = {"generator", *(f"d_{n}" for n in results[0]["discriminators"])}
    assert set(weights[0]["parameters"]) == set(weights[1]["parameters"]) == nets
    for net, params in weights[0]["parameters"].items():
        assert params and list(params) == list(weights[1]["parameters"][net]), net
        differ = [k for k in params if not torch.equal(params[k], weights[1]["parameters"][net][k])]
        assert not differ, f"{name}: {net} differs between the ranks in {differ[:5]}"

    # the discriminators' gradients are the mean over ranks of each rank's own gradient
    for rank, result in enumerate(results):
        for dname, check in result["discriminators"].items():
            assert check["ddp"], f"{name}: discriminator {dname} is not DDP-wrapped"
            assert check["local_differs_from_mean"] > 0  # the ranks saw different data: the check can fail
            assert check["mean_grad_norm"] > 0
            assert check["max_abs_diff"] <= 1e-5 * max(1.0, check["max_abs_grad"]), (rank, dname, check)
            if check["penalty"]:  # the WGAN-GP penalty's own gradient is non-zero, so the check above carries it
                assert check["penalty_grad_norm"] > 0

    # only rank 0 writes: its checkpoint, best model and logs; nothing at all under rank 1's folders
    assert _files(out / name / "rank1") == []
    files = _files(out / name / "rank0")
    assert f"models/checkpoint_epoch={EPOCHS}.pt" in files and "models/model.pt" in files, files
    assert any(f.startswith("logs/") and "tfevents" in f for f in files), files
    assert "models/.training.lock" not in files  # released at the end
    ckpt = load_checkpoint(out / name / "rank0" / "models" / f"checkpoint_epoch={EPOCHS}.pt")
    assert ckpt["trainer"]["iteration"] == results[0]["iterations"] and ckpt["trainer"]["max_epochs"] == EPOCHS
    for net, state in weights[0]["state"].items():  # rank 0's state, saved without DDP's "module." prefix
        saved = ckpt["model" if net == "generator" else net]
        assert list(saved) == list(state) and all(torch.equal(saved[k], state[k]) for k in state), net
    best = load_checkpoint(out / name / "rank0" / "models" / "model.pt")
    assert list(best.get("model", best)) == list(weights[0]["state"]["generator"])


@pytest.fixture
def world_of_one(monkeypatch):
    """A gloo process group of one rank in this process (the config's own init is then a no-op)."""
    monkeypatch.setenv("LOCAL_RANK", "0")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    idist.finalize()  # ignite caches the context it saw: back to serial (destroys the group if still there)
    if dist.is_initialized():
        dist.destroy_process_group()


@pytest.mark.parametrize("name", NAMES)
def test_multi_gpu_config_one_iteration(name, tiny_phantom, tmp_path, world_of_one):
    """train.json + multi_gpu_train.json at world size 1: DDP networks, distributed samplers, train.json's own
    initialize / finalize around the process-group lines, every handler kept on rank 0, one iteration trained."""
    if name not in SPECS:
        pytest.fail(f"bundle {name!r} has no BundleSpec in tests/bundles/contract.py: register its tiny settings")
    spec = SPECS[name]
    multi = json.loads((spec.configs / "multi_gpu_train.json").read_text())
    train = json.loads((spec.configs / "train.json").read_text())
    assert multi["initialize"] == DIST_INIT + train["initialize"]  # no drift from train.json
    assert multi["finalize"] == train["finalize"] + DIST_FINALIZE and multi["run"] == train["run"]
    assert "train#trainer#train_handlers" not in multi and "validate#evaluator#val_handlers" not in multi

    wf = workflow(
        spec,
        ("train.json", "multi_gpu_train.json"),
        tmp_path,
        dataset_dir=tiny_phantom,
        **{**spec.schedule(1), "val_interval": 1, "train#trainer#epoch_length": 1},
    )
    wf.initialize()
    try:
        trainer = wf.parser.get_parsed_content("train#trainer")
        assert isinstance(trainer.g_network, DistributedDataParallel)
        assert all(isinstance(s.network, DistributedDataParallel) for s in trainer.discriminators.values())
        assert isinstance(wf.parser.get_parsed_content("train#dataloader").sampler, DistributedSampler)
        assert isinstance(wf.parser.get_parsed_content("validate#dataloader").sampler, DistributedSampler)
        handlers = wf.parser.get_parsed_content("train#handlers")
        assert len(handlers) == len(train["train"]["handlers"])  # rank 0 keeps every logging handler
        before = [p.detach().clone() for p in trainer.g_network.module.parameters()]
        wf.run()
        assert trainer.state.iteration == 1
        assert any(not torch.equal(a, p) for a, p in zip(before, trainer.g_network.module.parameters()))
    finally:
        idist.finalize()  # before the config's destroy_process_group, so ignite forgets the group
        wf.finalize()
    assert (tmp_path / "models" / "checkpoint_epoch=1.pt").exists() and (tmp_path / "models" / "model.pt").exists()
    assert not (tmp_path / "models" / ".training.lock").exists()
