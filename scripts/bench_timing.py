"""Timing primitives of ``scripts/benchmark.py``: timed forward passes, repeats, the attainable-peak reference.

The reference is what "efficiency" is measured against: a large 3x3(x3) 64 -> 64 convolution timed in both the
plain (contiguous) and the channels-last layout, interleaved with the network being measured, best of all
repeats and layouts. On this CPU channels-last runs the same convolution ~1.5x faster, so a plain-layout
reference alone overstates every efficiency figure (issue #13).
"""

from __future__ import annotations

import contextlib
import copy
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = [
    "TimedModule",
    "ConvReference",
    "time_call",
    "summarize",
    "channels_last_format",
    "peak_rss_mb",
    "autocast_context",
    "count_flops",
    "bundle_parser",
]


class TimedModule(torch.nn.Module):
    """Wraps a network and accumulates the wall and CPU time spent inside its forward passes.

    Args:
        net: the network.
        memory_format: ``torch.channels_last`` / ``torch.channels_last_3d`` converts every input (and, once,
            the network) to that layout; the conversion is inside the timed region. ``None``: inputs as given.
    """

    def __init__(self, net: torch.nn.Module, memory_format: torch.memory_format | None = None) -> None:
        super().__init__()
        self.net = net if memory_format is None else net.to(memory_format=memory_format)
        self.memory_format = memory_format
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        self.calls = 0

    def forward(self, *args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        if self.memory_format is not None:
            args = tuple(a.contiguous(memory_format=self.memory_format) for a in args)
        out = self.net(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.process_time() - cpu
        self.calls += 1
        return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def autocast_context(dtype: torch.dtype | None, device: torch.device):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def time_call(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call of ``fn``."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def summarize(samples: list[float]) -> dict[str, float]:
    """Minimum, median and count of repeated timings (the minimum is the least disturbed by other processes)."""
    return {"min": min(samples), "median": statistics.median(samples), "n": len(samples)}


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


class ConvReference:
    """A large 3x3(x3) convolution, 64 -> 64 channels, in both memory layouts: the attainable peak.

    ``measure()`` times one forward pass per layout (call it between the network's repeats, so reference and
    network are interleaved and see the same machine load); ``peak_flops`` is the best FLOP/s over every layout
    and repeat, the attainable peak of a convolution on this machine at this dtype.
    """

    def __init__(self, spatial_dims: int, device: torch.device, dtype: torch.dtype | None) -> None:
        from monai.networks.layers.factories import Conv

        self.dtype, self.device = dtype, device
        shape = (1, 64, 256, 256) if spatial_dims == 2 else (1, 64, 48, 64, 64)
        voxels = 1
        for s in shape[2:]:
            voxels *= s
        self.flops = 2.0 * 64 * 64 * 3**spatial_dims * voxels
        conv = Conv[Conv.CONV, spatial_dims](64, 64, 3, padding=1).to(device).eval()
        fmt = channels_last_format(spatial_dims)
        x = torch.randn(shape, device=device)
        self.layouts = {
            "contiguous": (conv, x),
            "channels_last": (copy.deepcopy(conv).to(memory_format=fmt), x.contiguous(memory_format=fmt)),
        }
        self.seconds: dict[str, list[float]] = {k: [] for k in self.layouts}
        with torch.no_grad(), autocast_context(dtype, device):
            for net, inp in self.layouts.values():
                net(inp)  # warm-up

    def measure(self) -> None:
        with torch.no_grad(), autocast_context(self.dtype, self.device):
            for name, (net, inp) in self.layouts.items():
                self.seconds[name].append(time_call(lambda n=net, i=inp: n(i))[0])

    def gflops(self) -> dict[str, float]:
        return {k: self.flops / min(v) / 1e9 for k, v in self.seconds.items() if v}

    @property
    def peak_flops(self) -> float:
        return max(self.gflops().values()) * 1e9


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one call of ``fn`` (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def bundle_parser(bundle: Path, config: str, overrides: list[str], dataset_dir: str | None):
    """A ``ConfigParser`` of ``bundle/configs/<config>`` plus ``overrides`` (paths relative to the bundle)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / config)] + [str(bundle / o) for o in overrides])
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    if dataset_dir:
        parser["dataset_dir"] = dataset_dir
    return parser
