"""Every rank's side of ``tests/bundles/test_multiprocess.py``: train each bundle under ``torchrun`` in one process.

Launched once for all bundles (imports cost ~10 s per process)::

    torchrun --nproc_per_node=2 tests/bundles/mp_driver.py --dataset_dir PHANTOM --out OUT [--bundle NAME ...]

For every bundle (default: every folder of ``bundles/`` with a ``configs/multi_gpu_train.json``) each rank runs
``train.json + demo.json + multi_gpu_train.json`` with the tiny settings of ``contract.BUNDLES`` for two epochs
(validation at the end), with ``bundle_root``, ``ckpt_dir``, ``log_dir`` and ``output_dir`` under
``OUT/<bundle>/rank<r>/`` so that what each rank wrote can be listed. Then, still inside the process group, it
checks every DDP discriminator's update the way the trainer computes it (``D(real)``, ``D(fake)`` and the gradient
penalty's ``D(x_hat)`` with ``create_graph`` through DDP, then one backward): the DDP gradient must equal the
mean over ranks of the gradients of the unwrapped network on each rank's own batch. It writes
``OUT/<bundle>/weights_rank<r>.pt`` (``state`` and ``parameters`` of the unwrapped generator and discriminators) and
``OUT/<bundle>/result_rank<r>.json`` (what was wrapped, iterations, the penalty check, errors), which the test reads.
A bundle that fails is recorded and the next one still runs (the process group is re-created per bundle).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contract import BUNDLES, REPO, collated, workflow  # noqa: E402

__all__ = ["CONFIGS", "bundle_names", "discriminator_gradient_check", "train_one", "main"]

CONFIGS = ("train.json", "demo.json", "multi_gpu_train.json")
EPOCHS = 2
TIMEOUT = datetime.timedelta(seconds=120)  # a rank that failed alone makes the other fail after this, not hang


def bundle_names() -> list[str]:
    """Every bundle folder with a multi-GPU config, sorted."""
    return sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/multi_gpu_train.json"))


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return net.module if isinstance(net, DistributedDataParallel) else net


def _grads(net: torch.nn.Module) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in net.parameters()]


def _discriminator_objective(spec, critic, real_in: torch.Tensor, fake_in: torch.Tensor, seed: int, part: str):
    """The trainer's discriminator objective through ``critic``, in ``PairedGanTrainer._discriminator_update``'s
    order (``D(real)``, ``D(fake)``, then the penalty's ``D(x_hat)``): ``part`` "total" or "penalty" alone."""
    torch.manual_seed(seed)  # the penalty's interpolation weights: the same draw for DDP and the reference
    total = spec.loss(critic(real_in).float(), critic(fake_in).float()) if part == "total" else 0.0
    penalty = spec.loss.penalty(critic, real_in.float(), fake_in.float())
    return total if penalty is None else total + penalty


def _mean_over_ranks(grads: list[torch.Tensor], world: int) -> list[torch.Tensor]:
    mean = [g.clone() for g in grads]
    for g in mean:
        dist.all_reduce(g)
        g /= world
    return mean


def _norm(grads: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))


def discriminator_gradient_check(trainer, rank: int, world: int) -> dict:
    """For each discriminator: does one DDP backward of its objective give the mean of every rank's own gradient?

    The objective is the trainer's: ``D(real)``, ``D(fake)`` and, with WGAN-GP, ``D(x_hat)`` differentiated with
    ``create_graph`` (three DDP forwards, then one backward). Each rank uses its own last training batch, so the
    local gradients differ between ranks and only a correct all-reduce gives their mean. With a penalty, the
    norm of the penalty's own (reference) gradient is reported too: it must be non-zero for the DDP gradient to
    carry it.
    """
    last = collated(trainer.state.output)  # the last iteration's source, target and synthesis on this rank
    x, y, y_hat = last["image"], last["label"], last["pred"]
    report = {}
    for name, spec in trainer.discriminators.items():
        ddp, module = spec.network, _unwrap(spec.network)
        module.train()
        real_in, fake_in = spec.inputs(x, y), spec.inputs(x, y_hat)
        seed = 1000 + rank
        entry = {"ddp": isinstance(ddp, DistributedDataParallel), "penalty": spec.loss.gradient_penalty_weight > 0}
        # references on copies: a backward through the wrapped module's own parameters would fire DDP's gradient
        # hooks outside a DDP forward
        reference = copy.deepcopy(module)
        _discriminator_objective(spec, reference, real_in, fake_in, seed, "total").backward()
        local = _grads(reference)
        mean = _mean_over_ranks(local, world)
        if entry["penalty"]:
            reference = copy.deepcopy(module)
            _discriminator_objective(spec, reference, real_in, fake_in, seed, "penalty").backward()
            entry["penalty_grad_norm"] = _norm(_mean_over_ranks(_grads(reference), world))
        module.zero_grad(set_to_none=True)
        _discriminator_objective(spec, ddp, real_in, fake_in, seed, "total").backward()
        got = _grads(module)
        module.zero_grad(set_to_none=True)
        entry.update(
            mean_grad_norm=_norm(mean),
            local_differs_from_mean=max(float((a - m).abs().max()) for a, m in zip(local, mean)),
            max_abs_diff=max(float((a - m).abs().max()) for a, m in zip(got, mean)),
            max_abs_grad=max(float(m.abs().max()) for m in mean),
        )
        report[name] = entry
    return report


def train_one(name: str, dataset_dir: str, out: Path, rank: int, world: int) -> dict:
    """Train bundle ``name`` for ``EPOCHS`` tiny epochs on this rank; returns this rank's result record."""
    specs = {s.name: s for s in BUNDLES}
    if name not in specs:
        raise KeyError(f"bundle {name!r} has no BundleSpec in tests/bundles/contract.py: register its tiny settings")
    spec = specs[name]
    root = out / name / f"rank{rank}"
    # two epochs of one or two iterations each: the second iteration is where a DDP reducer left unfinished by the
    # first one (a frozen discriminator's unused parameters) fails; one validation, at the end
    settings = {**spec.schedule(EPOCHS), "val_interval": EPOCHS, "dataset_dir": dataset_dir}
    wf = workflow(spec, CONFIGS, root, **settings)
    wf.initialize()
    try:
        wf.run()
        trainer = wf.parser.get_parsed_content("train#trainer")
        nets = {"generator": trainer.g_network, **{f"d_{n}": s.network for n, s in trainer.discriminators.items()}}
        weights = {  # before the check below runs the discriminators again
            "state": {k: _unwrap(v).state_dict() for k, v in nets.items()},
            "parameters": {k: {n: p.detach() for n, p in _unwrap(v).named_parameters()} for k, v in nets.items()},
        }
        torch.save(weights, out / name / f"weights_rank{rank}.pt")
        record = {
            "generator_ddp": isinstance(trainer.g_network, DistributedDataParallel),
            "discriminators": discriminator_gradient_check(trainer, rank, world),
            "epoch": int(trainer.state.epoch),
            "iterations": int(trainer.state.iteration),
            "world_size": world,
        }
        record["train_handlers"] = [type(h).__name__ for h in wf.parser.get_parsed_content("train#handlers")]
        record["val_handlers"] = [type(h).__name__ for h in wf.parser.get_parsed_content("validate#handlers")]
        evaluator = wf.parser.get_parsed_content("validate#evaluator")
        record["val_metrics"] = {k: float(v) for k, v in evaluator.state.metrics.items()}
        record["val_iterations"] = int(evaluator.state.iteration)
    finally:
        wf.finalize()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--bundle", action="append", help="bundle folder name (repeatable); default: all")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # torchrun's store, as a client: a fresh key prefix per bundle (a second init_process_group on the same
    # env:// prefix reads the first group's stale gloo addresses and fails to connect)
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, False, timeout=TIMEOUT)
    for index, name in enumerate(args.bundle or bundle_names()):
        (out / name).mkdir(parents=True, exist_ok=True)
        # the config's own init_process_group is then a no-op; its finalize destroys the group
        dist.init_process_group(
            "gloo", store=dist.PrefixStore(f"mp_driver/{index}", store), rank=rank, world_size=world, timeout=TIMEOUT
        )
        try:
            record = {"ok": True, **train_one(name, args.dataset_dir, out, rank, world)}
        except BaseException:  # recorded for the test; the next bundle still runs
            record = {"ok": False, "error": traceback.format_exc()}
        if dist.is_initialized():
            dist.destroy_process_group()
        (out / name / f"result_rank{rank}.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
