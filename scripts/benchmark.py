"""Measure a bundle's speed: training steps/s, whole-volume inference, memory, overhead and efficiency.

Usage:
    python scripts/benchmark.py --bundle NAME [--paper] [--volume PATH] [--iterations 5] [--repeats 3]
                                [--channels_last] [--compare] [--json OUT]

Without ``--paper`` the bundle's ``configs/demo.json`` override is applied (what runs on a CPU here).
Printed, for fp32 and bf16 autocast (and channels-last layouts with ``--channels_last``):
- whole-volume inference seconds (the bundle's inferer on one volume), wall and CPU time, minimum and median
  of ``--repeats`` runs, and the pipeline overhead: inferer time over the pure forward time of the same
  windows in the same run, minus one;
- network efficiency: FLOPs (``torch.utils.flop_counter``) per forward second over the attainable peak, the
  best FLOP/s of a large convolution in the plain and channels-last layouts (``bench_timing.ConvReference``),
  timed between the network's repeats in the same process, so both see the same load;
- train steps/s (median and minimum over ``--iterations`` after one warm-up step); for the PairedGanTrainer,
  its engine overhead: the fastest engine iteration against the fastest iteration of a bare PyTorch loop doing
  the same forward/backward/steps on the same batch, interleaved in the same process;
- ``--compare``: AMCGAN's "Pix2Pix" row through the project's trainer against a plain PyTorch pix2pix step
  (``scripts/peer_pix2pix.py``, same architecture and parameter count), interleaved: the project/peer ratio;
- ``--ckpt_dir DIR`` (trained weights, e.g. a demo run's ``models``): the bundle's evaluation on the test split
  with ``amp`` off and on (CPU: bf16 autocast), its metrics side by side and the change bf16 - fp32;
- peak RSS of the process.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench_timing import (  # noqa: E402
    ConvReference,
    TimedModule,
    autocast_context,
    bundle_parser,
    channels_last_format,
    count_flops,
    peak_rss_mb,
    summarize,
    time_call,
)

__all__ = ["benchmark_inference", "benchmark_training", "compare_pix2pix", "amp_accuracy", "main"]

AMP_METRICS = ("psnr", "psnr_brain", "psnr_tumor", "ssim", "mae", "enhancement_recovery")


def benchmark_inference(
    bundle: Path,
    overrides: list[str],
    dataset_dir: str | None,
    volume: str | None,
    repeats: int = 3,
    channels_last: bool = False,
) -> dict:
    """Whole-volume inference timings of one test case (or ``volume``), fp32 and bf16, ``repeats`` times each.

    Each repeat runs the bundle's inferer once over the volume (forward passes timed inside it) and then the
    reference convolution in both layouts, so network and reference alternate under the same load.
    ``channels_last`` adds two variants that run the network in channels-last memory layout.
    """
    parser = bundle_parser(bundle, "inference.json", overrides, dataset_dir)
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
    results = {"volume_shape": list(image.shape[2:]), "preprocessing_s": prep_s, "repeats": repeats}
    with torch.no_grad():
        flops = count_flops(lambda: inferer(image, net))  # the same in fp32 and bf16: counted once
    variants = [("fp32", None, None), ("bf16", torch.bfloat16, None)]
    if channels_last:
        fmt = channels_last_format(net_dims)
        variants += [("fp32_channels_last", None, fmt), ("bf16_channels_last", torch.bfloat16, fmt)]
    refs: dict[torch.dtype | None, ConvReference] = {}
    for label, dtype, fmt in variants:
        timed = TimedModule(copy.deepcopy(net) if fmt is not None else net, fmt)
        if dtype not in refs:  # one reference per dtype, shared by its layouts and measured in all their repeats
            refs[dtype] = ConvReference(net_dims, device, dtype)
        ref = refs[dtype]
        walls, cpus, forwards = [], [], []
        with torch.no_grad(), autocast_context(dtype, device):
            inferer(image, timed)  # warm-up
            for _ in range(repeats):
                timed.seconds, timed.calls = 0.0, 0
                wall, cpu = time_call(lambda t=timed: inferer(image, t))
                walls.append(wall)
                cpus.append(cpu)
                forwards.append(timed.seconds)
                ref.measure()
        forward_s = min(forwards)
        achieved = flops / max(forward_s, 1e-12)
        results[label] = {
            "inference_s": summarize(walls),
            "inference_cpu_s": summarize(cpus),
            "forward_s": summarize(forwards),
            "forward_calls": timed.calls,
            # pipeline overhead from the same repeat: everything the inferer does besides the forward passes
            "pipeline_overhead": min(w / max(f, 1e-12) - 1.0 for w, f in zip(walls, forwards)),
            "gflop": flops / 1e9,
            "achieved_gflops": achieved / 1e9,
            "_dtype": dtype,
        }
    for label, _, _ in variants:  # against the best of every repeat of the shared reference
        r = results[label]
        ref = refs[r.pop("_dtype")]
        r["reference_gflops"] = ref.gflops()
        r["peak_gflops"] = ref.peak_flops / 1e9
        r["efficiency"] = r["achieved_gflops"] * 1e9 / ref.peak_flops
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

    parser = bundle_parser(bundle, "train.json", overrides, dataset_dir)
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
        "train_step_s_stats": summarize(times[1:] or times),
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


def compare_pix2pix(overrides: list[str], dataset_dir: str | None, repeats: int, size: int = 128) -> dict:
    """Time AMCGAN's "Pix2Pix" row through the project's trainer against a plain PyTorch pix2pix step.

    Both get the same random (batch, 1, size, size) pair, the same widths and parameter counts; iterations
    alternate (project, peer) ``repeats`` times after one warm-up each. Returns minima, medians and the
    project/peer ratio of the minima (> 1: the project is slower).
    """
    from peer_pix2pix import PeerPatchDiscriminator, PeerPix2PixStep, PeerResnetGenerator

    bundle = REPO / "bundles" / "amcgan_contrast_mri"
    parser = bundle_parser(bundle, "train.json", [*overrides, "configs/ablations/pix2pix.json"], dataset_dir)
    parser["train#trainer#train_handlers"] = []
    trainer = parser.get_parsed_content("train#trainer")
    device = trainer.state.device
    if len(trainer.discriminators) != 1:
        raise ValueError("the pix2pix row has one discriminator")
    cfg = {
        k: parser.get_parsed_content(k)
        for k in (
            "channels",
            "num_res_blocks",
            "norm",
            "dropout",
            "d_channels",
            "d_num_layers",
            "d_norm",
            "batch_size",
            "lambda_l1",
        )
    }
    peer = PeerPix2PixStep(
        PeerResnetGenerator(1, 1, cfg["channels"], cfg["num_res_blocks"], cfg["norm"], cfg["dropout"]).to(device),
        PeerPatchDiscriminator(2, cfg["d_channels"], cfg["d_num_layers"], cfg["d_norm"]).to(device),
        lambda_l1=cfg["lambda_l1"],
    )
    spec = next(iter(trainer.discriminators.values()))
    counts = {
        "project_g": sum(p.numel() for p in trainer.g_network.parameters()),
        "peer_g": sum(p.numel() for p in peer.g.parameters()),
        "project_d": sum(p.numel() for p in spec.network.parameters()),
        "peer_d": sum(p.numel() for p in peer.d.parameters()),
    }
    if counts["project_g"] != counts["peer_g"] or counts["project_d"] != counts["peer_d"]:
        raise ValueError(f"the peer networks do not match the project's: parameter counts {counts}")
    x = torch.rand(cfg["batch_size"], 1, size, size, device=device) * 2 - 1
    y = torch.rand_like(x) * 2 - 1
    batch = {"image": x, "label": y}
    trainer.state.epoch, trainer.state.iteration = 1, 1
    project_times, peer_times = [], []
    trainer._iteration(trainer, batch)  # warm-up
    peer(x, y)
    for _ in range(repeats):
        project_times.append(time_call(lambda: trainer._iteration(trainer, batch))[0])
        peer_times.append(time_call(lambda: peer(x, y))[0])
    return {
        "input_shape": list(x.shape),
        "parameters": counts,
        "project_s": summarize(project_times),
        "peer_s": summarize(peer_times),
        "project_over_peer": min(project_times) / min(peer_times),
    }


def amp_accuracy(bundle: Path, overrides: list[str], dataset_dir: str | None, ckpt_dir: str, out_dir: Path) -> dict:
    """The bundle's own evaluation (train.json + overrides + evaluate.json) of ``ckpt_dir``'s model on the test
    split with ``amp`` false and true; ``{"fp32": means, "bf16": means, "change": bf16 - fp32}`` per metric."""
    from monai.bundle import ConfigWorkflow

    files = [str(bundle / "configs" / "train.json"), *(str(bundle / o) for o in overrides)]
    files.append(str(bundle / "configs" / "evaluate.json"))
    settings = {"bundle_root": str(bundle), "ckpt_dir": str(ckpt_dir)}
    if dataset_dir:
        settings["dataset_dir"] = dataset_dir
    means = {}
    for label, amp in (("fp32", False), ("bf16", True)):
        folder = Path(out_dir) / label
        wf = ConfigWorkflow(config_file=files, workflow_type=None, amp=amp, output_dir=str(folder), **settings)
        wf.initialize()
        wf.run()
        wf.finalize()
        summary = json.loads((folder / "summary.json").read_text())["metrics"]
        means[label] = {k: v["mean"] for k, v in summary.items() if isinstance(v, dict) and "mean" in v}
    shared = [k for k in means["fp32"] if k in means["bf16"]]
    return {**means, "change": {k: means["bf16"][k] - means["fp32"][k] for k in shared}}


def _print_inference(inf: dict) -> None:
    for label in ("fp32", "bf16", "fp32_channels_last", "bf16_channels_last"):
        if label not in inf:
            continue
        r = inf[label]
        refs = ", ".join(f"{k} {v:.0f}" for k, v in r["reference_gflops"].items())
        print(
            f"  inference {label}: {r['inference_s']['min']:.3f} s/volume (median {r['inference_s']['median']:.3f}, "
            f"CPU {r['inference_cpu_s']['min']:.3f} s, {r['inference_s']['n']} repeats), "
            f"forward {r['forward_s']['min']:.3f} s in {r['forward_calls']} calls, "
            f"pipeline overhead {100 * r['pipeline_overhead']:.1f} %, {r['gflop']:.1f} GFLOP, "
            f"{r['achieved_gflops']:.1f} GFLOP/s vs attainable peak {r['peak_gflops']:.1f} ({refs}) "
            f"-> efficiency {r['efficiency']:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--paper", action="store_true", help="paper-scale configs (no demo.json override)")
    ap.add_argument("--override", action="append", default=[], help="extra override relative to the bundle")
    ap.add_argument("--dataset_dir", default=None)
    ap.add_argument("--volume", default=None, help="a source volume to infer on instead of the first test case")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="inference repeats per variant (>= 3 for numbers)")
    ap.add_argument("--channels_last", action="store_true", help="also time channels-last network layouts")
    ap.add_argument("--skip_training", action="store_true")
    ap.add_argument("--skip_inference", action="store_true")
    ap.add_argument("--compare", action="store_true", help="AMCGAN pix2pix row vs a plain PyTorch pix2pix step")
    ap.add_argument("--compare_size", type=int, default=128)
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--ckpt_dir", default=None, help="trained models/ folder: evaluation metrics with amp off and on")
    ap.add_argument("--amp_out", default=None, help="evaluation outputs of --ckpt_dir (default: <ckpt_dir>/../amp)")
    args = ap.parse_args(argv)
    bundle = REPO / "bundles" / args.bundle
    if not bundle.is_dir():
        print(f"no bundle folder {bundle}", file=sys.stderr)
        return 1
    if args.repeats < 1:
        print("--repeats must be >= 1", file=sys.stderr)
        return 1
    overrides = ([] if args.paper else ["configs/demo.json"]) + args.override
    torch.manual_seed(0)
    out = {"bundle": args.bundle, "overrides": overrides, "threads": torch.get_num_threads()}
    print(f"bundle {args.bundle} ({'paper' if args.paper else 'demo'} configs, {out['threads']} threads)")
    if not args.skip_inference:
        out["inference"] = benchmark_inference(
            bundle, overrides, args.dataset_dir, args.volume, args.repeats, args.channels_last
        )
        print(f"  volume {out['inference']['volume_shape']}")
        _print_inference(out["inference"])
    if not args.skip_training:
        out["training"] = benchmark_training(bundle, overrides, args.dataset_dir, args.iterations)
        t = out["training"]
        line = (
            f"  training: {t['train_steps_per_s']:.2f} steps/s "
            f"({t['train_step_s']:.3f} s/step median, min {t['train_step_s_stats']['min']:.3f}, "
            f"batch {t['batch_image_shape']})"
        )
        if "engine_overhead" in t:
            line += (
                f", engine {t['engine_iteration_s']:.4f} s vs bare loop {t['bare_loop_s']:.4f} s "
                f"-> overhead {100 * t['engine_overhead']:.1f} %"
            )
        print(line)
    if args.compare:
        c = out["compare"] = compare_pix2pix(
            [o for o in overrides if "ablations" not in o], args.dataset_dir, max(args.repeats, 3), args.compare_size
        )
        print(
            f"  pix2pix row {c['input_shape']}: project {c['project_s']['min']:.4f} s "
            f"(median {c['project_s']['median']:.4f}) vs plain PyTorch {c['peer_s']['min']:.4f} s "
            f"(median {c['peer_s']['median']:.4f}) -> project/peer {c['project_over_peer']:.3f}"
        )
    if args.ckpt_dir:
        amp_out = Path(args.amp_out) if args.amp_out else Path(args.ckpt_dir).parent / "amp"
        a = out["amp_accuracy"] = amp_accuracy(bundle, overrides, args.dataset_dir, args.ckpt_dir, amp_out)
        shown = [k for k in AMP_METRICS if k in a["change"]]
        print(
            "  amp (bf16 autocast) vs fp32 on the test split: "
            + ", ".join(f"{k} {a['fp32'][k]:.4g} -> {a['bf16'][k]:.4g} ({a['change'][k]:+.3g})" for k in shown)
        )
    out["peak_rss_mb"] = peak_rss_mb()
    print(f"  peak RSS {out['peak_rss_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
