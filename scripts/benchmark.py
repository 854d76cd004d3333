"""Measure a bundle's speed: training steps/s, whole-volume inference, memory, overhead and efficiency.

Usage:
    python scripts/benchmark.py --bundle NAME [--paper] [--volume PATH] [--iterations 5] [--json OUT]

Without ``--paper`` the bundle's ``configs/demo.json`` override is applied (what runs on a CPU here).
Printed, for fp32 and bf16 autocast:
- train steps/s (median over ``--iterations`` after one warm-up step); for the PairedGanTrainer, its
  engine overhead: the fastest engine iteration against the fastest iteration of a bare PyTorch loop doing
  the same forward/backward/steps (discriminators frozen during the generator step, as the engine does)
  on the same batch, interleaved in the same process;
- whole-volume inference seconds (the bundle's inferer on one demo volume) and the pipeline overhead:
  inferer time over the pure forward time of the same windows, minus one (goal <= 10 %);
- network efficiency: FLOPs (``torch.utils.flop_counter``) per forward second, divided by the throughput
  of a large convolution of the same dimensionality measured in the same run (a roofline-style ratio);
- peak RSS of the process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

__all__ = ["TimedModule", "conv_throughput", "benchmark_inference", "benchmark_training", "main"]


class TimedModule(torch.nn.Module):
    """Wraps a network and accumulates the wall time spent inside its forward passes."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.seconds = 0.0
        self.calls = 0

    def forward(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.net(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _autocast(dtype: torch.dtype | None, device: torch.device):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def conv_throughput(spatial_dims: int, device: torch.device, dtype: torch.dtype | None, repeats: int = 5) -> float:
    """FLOP/s of a large 3x3(x3) convolution, 64 -> 64 channels: the machine's practical peak."""
    from monai.networks.layers.factories import Conv

    conv = Conv[Conv.CONV, spatial_dims](64, 64, 3, padding=1).to(device).eval()
    shape = (1, 64, 256, 256) if spatial_dims == 2 else (1, 64, 48, 64, 64)
    x = torch.randn(shape, device=device)
    voxels = 1
    for s in shape[2:]:
        voxels *= s
    flops = 2.0 * 64 * 64 * 3**spatial_dims * voxels
    times = []
    with torch.no_grad(), _autocast(dtype, device):
        conv(x)
        for _ in range(repeats):
            start = time.perf_counter()
            conv(x)
            times.append(time.perf_counter() - start)
    return flops / min(times)


def _count_flops(fn: Callable[[], object]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _parser(bundle: Path, config: str, overrides: list[str], dataset_dir: str | None):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / config)] + [str(bundle / o) for o in overrides])
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    if dataset_dir:
        parser["dataset_dir"] = dataset_dir
    return parser


def benchmark_inference(bundle: Path, overrides: list[str], dataset_dir: str | None, volume: str | None) -> dict:
    """Whole-volume inference timings of one test case (or ``volume``), fp32 and bf16."""
    parser = _parser(bundle, "inference.json", overrides, dataset_dir)
    device = torch.device(parser.get_parsed_content("device"))
    net = parser.get_parsed_content("network_def").to(device).eval()
    inferer = parser.get_parsed_content("inferer")
    preprocessing = parser.get_parsed_content("preprocessing")
    case = dict(parser.get_parsed_content("datalist_data")[0])
    if volume:
        for key in parser.get_parsed_content("source_keys"):
            case[key] = volume
    start = time.perf_counter()
    item = preprocessing(case)
    prep_s = time.perf_counter() - start
    image = item["image"].unsqueeze(0).to(device)
    # the network's own dimensionality: a SliceInferer runs a 2D network over a 3D volume
    inner = getattr(inferer, "inferer", inferer)  # through common.inferers.AutocastInferer
    net_dims = 2 if getattr(inner, "spatial_dim", None) is not None else min(max(image.ndim - 2, 2), 3)
    results = {"volume_shape": list(image.shape[2:]), "preprocessing_s": prep_s}
    with torch.no_grad():
        flops = _count_flops(lambda: inferer(image, net))  # the same in fp32 and bf16: counted once
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        timed = TimedModule(net)
        with torch.no_grad(), _autocast(dtype, device):
            inferer(image, timed)  # warm-up
            timed.seconds, timed.calls = 0.0, 0
            start = time.perf_counter()
            inferer(image, timed)
            total = time.perf_counter() - start
        peak = conv_throughput(net_dims, device, dtype)
        results[label] = {
            "inference_s": total,
            "forward_s": timed.seconds,
            "forward_calls": timed.calls,
            "pipeline_overhead": total / max(timed.seconds, 1e-12) - 1.0,
            "gflop": flops / 1e9,
            "achieved_gflops": flops / max(timed.seconds, 1e-12) / 1e9,
            "conv_peak_gflops": peak / 1e9,
            "efficiency": flops / max(timed.seconds, 1e-12) / peak,
        }
    results["peak_rss_mb_after_inference"] = peak_rss_mb()
    return results


def _bare_gan_step(trainer, x: torch.Tensor, y: torch.Tensor, batch: dict) -> None:
    """The PairedGanTrainer's algorithm written as a plain PyTorch loop (no engine, no events, no checks)."""
    g = trainer.g_network
    y_hat = g(x)
    for spec in trainer.discriminators.values():
        for _ in range(spec.steps):
            spec.optimizer.zero_grad()
            d_loss = spec.loss(spec.network(spec.inputs(x, y)), spec.network(spec.inputs(x, y_hat.detach())))
            pen = spec.loss.penalty(spec.network, spec.inputs(x, y), spec.inputs(x, y_hat.detach()))
            (d_loss if pen is None else d_loss + pen).backward()
            spec.optimizer.step()
    frozen = [p for s in trainer.discriminators.values() for p in s.network.parameters()]
    for p in frozen:
        p.requires_grad_(False)
    trainer.g_optimizer.zero_grad()
    fake = {n: s.network(s.inputs(x, y_hat)) for n, s in trainer.discriminators.items()}
    sum(trainer.g_loss(y_hat, y, fake, batch).values()).backward()
    trainer.g_optimizer.step()
    for p in frozen:
        p.requires_grad_(True)


def benchmark_training(bundle: Path, overrides: list[str], dataset_dir: str | None, iterations: int) -> dict:
    """Training iteration times through the bundle's own trainer (and a bare loop for the GAN engine)."""
    from ignite.engine import Events

    parser = _parser(bundle, "train.json", overrides, dataset_dir)
    parser["train#trainer#train_handlers"] = []
    trainer = parser.get_parsed_content("train#trainer")
    times: list[float] = []
    marks: dict[str, float] = {}
    first: dict = {}

    def _started(engine) -> None:
        first.setdefault("batch", engine.state.batch)  # before MONAI decollates it
        marks["t"] = time.perf_counter()

    trainer.add_event_handler(Events.ITERATION_STARTED, _started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: times.append(time.perf_counter() - marks["t"]))
    trainer.state.epoch_length = iterations + 1  # one warm-up step, then the timed ones
    trainer.state.max_epochs = 1
    start = time.perf_counter()
    trainer.run()  # the real pipeline: data loading, transforms, the engine and its events
    loop_s = time.perf_counter() - start
    batch = first["batch"]
    step_s = statistics.median(times[1:]) if len(times) > 1 else times[0]
    result = {
        "train_step_s": step_s,
        "train_steps_per_s": 1.0 / step_s,
        "train_loop_steps_per_s_with_data": (iterations + 1) / loop_s,
        "batch_image_shape": list(batch["image"].shape),
    }
    from common.engines import PairedGanTrainer

    if isinstance(trainer, PairedGanTrainer):
        x = batch["image"].to(trainer.state.device)
        y = batch["label"].to(trainer.state.device)
        _bare_gan_step(trainer, x, y, batch)
        engine_times, bare_times = [], []
        for _ in range(iterations):
            start = time.perf_counter()
            trainer._iteration(trainer, batch)
            engine_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            _bare_gan_step(trainer, x, y, batch)
            bare_times.append(time.perf_counter() - start)
        engine_s, bare_s = min(engine_times), min(bare_times)  # minima: least disturbed by other processes
        result.update(
            {"engine_iteration_s": engine_s, "bare_loop_s": bare_s, "engine_overhead": engine_s / bare_s - 1.0}
        )
    result["peak_rss_mb_after_training"] = peak_rss_mb()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--paper", action="store_true", help="paper-scale configs (no demo.json override)")
    ap.add_argument("--override", action="append", default=[], help="extra override relative to the bundle")
    ap.add_argument("--dataset_dir", default=None)
    ap.add_argument("--volume", default=None, help="a source volume to infer on instead of the first test case")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--skip_training", action="store_true")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    bundle = REPO / "bundles" / args.bundle
    if not bundle.is_dir():
        print(f"no bundle folder {bundle}", file=sys.stderr)
        return 1
    overrides = ([] if args.paper else ["configs/demo.json"]) + args.override
    torch.manual_seed(0)
    out = {"bundle": args.bundle, "overrides": overrides, "threads": torch.get_num_threads()}
    out["inference"] = benchmark_inference(bundle, overrides, args.dataset_dir, args.volume)
    if not args.skip_training:
        out["training"] = benchmark_training(bundle, overrides, args.dataset_dir, args.iterations)
    out["peak_rss_mb"] = peak_rss_mb()
    inf = out["inference"]
    print(
        f"bundle {args.bundle} ({'paper' if args.paper else 'demo'} configs, {out['threads']} threads), "
        f"volume {inf['volume_shape']}"
    )
    for label in ("fp32", "bf16"):
        r = inf[label]
        print(
            f"  inference {label}: {r['inference_s']:.3f} s/volume, "
            f"forward {r['forward_s']:.3f} s in {r['forward_calls']} calls, "
            f"pipeline overhead {100 * r['pipeline_overhead']:.1f} %, {r['gflop']:.1f} GFLOP, "
            f"{r['achieved_gflops']:.1f} GFLOP/s vs conv peak {r['conv_peak_gflops']:.1f} "
            f"-> efficiency {r['efficiency']:.2f}"
        )
    if "training" in out:
        t = out["training"]
        line = (
            f"  training: {t['train_steps_per_s']:.2f} steps/s "
            f"({t['train_step_s']:.3f} s/step, batch {t['batch_image_shape']})"
        )
        if "engine_overhead" in t:
            line += (
                f", engine {t['engine_iteration_s']:.4f} s vs bare loop {t['bare_loop_s']:.4f} s "
                f"-> overhead {100 * t['engine_overhead']:.1f} %"
            )
        print(line)
    print(f"  peak RSS {out['peak_rss_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
