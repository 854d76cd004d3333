from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("benchmark", REPO / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def test_timed_module_counts_calls_and_time():
    net = benchmark.TimedModule(torch.nn.Identity())
    x = torch.ones(2)
    assert torch.equal(net(x), x) and net(x) is not None
    assert net.calls == 2 and net.seconds > 0


def test_conv_throughput_is_positive_and_flops_counted():
    peak = benchmark.conv_throughput(2, torch.device("cpu"), None, repeats=1)
    assert peak > 1e8  # > 0.1 GFLOP/s on any CPU
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    flops = benchmark._count_flops(lambda: conv(torch.zeros(1, 4, 10, 10)))
    assert flops == 2 * 4 * 8 * 9 * 100
