"""scripts/benchmark.py measures what it says: repeats, interleaved attainable peak, window counts, the peer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]


benchmark = load_script("benchmark")
bench_timing = load_script("bench_timing")
peer = load_script("peer_pix2pix")

AMCGAN_TINY = {
    "channels": 4,
    "msfc_channels": 2,
    "num_res_blocks": 1,
    "d_channels": 4,
    "d_num_layers": 4,
    "slices_per_volume": 1,
    "num_workers": 0,
    "slice_pixels_per_batch": 8 * 32 * 40,  # 8 of the tiny phantom's 32 x 40 slices per forward call
}


def test_timed_module_counts_calls_and_keeps_values_in_channels_last():
    net = torch.nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 8, 8)
    expected = net(x)
    timed = bench_timing.TimedModule(net, torch.channels_last)
    out = timed(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    timed(x)
    assert timed.calls == 2 and timed.seconds > 0 and timed.cpu_seconds >= 0


def test_summarize_min_median_count():
    assert bench_timing.summarize([3.0, 1.0, 2.0, 10.0]) == {"min": 1.0, "median": 2.5, "n": 4}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reference_measures_both_layouts_and_peak_is_the_best(spatial_dims):
    ref = bench_timing.ConvReference(spatial_dims, torch.device("cpu"), None)
    ref.measure()
    ref.measure()
    assert set(ref.seconds) == {"contiguous", "channels_last"}
    assert all(len(v) == 2 for v in ref.seconds.values())
    gflops = ref.gflops()
    assert ref.peak_flops == pytest.approx(max(gflops.values()) * 1e9)
    voxels = 256 * 256 if spatial_dims == 2 else 48 * 64 * 64
    assert ref.flops == 2 * 64 * 64 * 3**spatial_dims * voxels
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    assert bench_timing.count_flops(lambda: conv(torch.zeros(1, 4, 10, 10))) == 2 * 4 * 8 * 9 * 100


@pytest.mark.parametrize("norm, d_norm, layers", [("batch", "instance", 6), ("instance", "batch", 3)])
def test_peer_networks_have_the_project_parameter_counts(norm, d_norm, layers):
    from common.networks import AMCGANGenerator, PatchDiscriminator

    ours_g = AMCGANGenerator(2, 1, 1, channels=8, num_res_blocks=2, use_msfc=False, use_fam=False, norm=norm)
    ours_d = PatchDiscriminator(2, 2, channels=8, num_layers=layers, norm=d_norm)
    peer_g = peer.PeerResnetGenerator(1, 1, 8, 2, norm)
    peer_d = peer.PeerPatchDiscriminator(2, 8, layers, d_norm)

    def count(m):
        return sum(p.numel() for p in m.parameters())

    assert count(ours_g) == count(peer_g) and count(ours_d) == count(peer_d)
    x = torch.randn(2, 1, 64, 64)
    assert peer_g(x).shape == ours_g(x).shape
    assert peer_d(torch.cat([x, x], 1)).shape == ours_d(torch.cat([x, x], 1)).shape


def test_peer_step_updates_both_networks():
    torch.manual_seed(0)
    g, d = peer.PeerResnetGenerator(1, 1, 4, 1), peer.PeerPatchDiscriminator(2, 4, 3)
    step = peer.PeerPix2PixStep(g, d)
    g0 = [p.detach().clone() for p in g.parameters()]
    d0 = [p.detach().clone() for p in d.parameters()]
    x, y = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    loss = step(x, y)
    assert math.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(g0, g.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, d.parameters()))
    assert all(p.requires_grad for p in d.parameters())


@pytest.fixture()
def tiny_override(tmp_path) -> str:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(AMCGAN_TINY))
    return str(path)


def test_inference_counts_the_windows_and_interleaves_the_reference(tiny_phantom, tiny_override):
    bundle = REPO / "bundles" / "amcgan_contrast_mri"
    res = benchmark.benchmark_inference(
        bundle, ["configs/demo.json", tiny_override], tiny_phantom, None, repeats=3, channels_last=True
    )
    depth = res["volume_shape"][2]  # slices along the slice axis, 8 per forward call
    for label in ("fp32", "bf16", "fp32_channels_last", "bf16_channels_last"):
        r = res[label]
        assert r["forward_calls"] == math.ceil(depth / 8)
        assert r["inference_s"]["n"] == 3 and r["forward_s"]["n"] == 3
        assert r["inference_s"]["min"] <= r["inference_s"]["median"]
        assert r["forward_s"]["min"] <= r["inference_s"]["min"] + 1e-9
        assert r["efficiency"] == pytest.approx(r["achieved_gflops"] / r["peak_gflops"])
        assert r["peak_gflops"] == pytest.approx(max(r["reference_gflops"].values()))
    # fp32 and fp32 channels-last share one reference, measured in both variants' repeats
    assert res["fp32"]["peak_gflops"] == res["fp32_channels_last"]["peak_gflops"]
    # the FLOPs of the whole volume are those of one slice forward times the number of slices
    from common.networks import AMCGANGenerator

    h, w = res["volume_shape"][:2]
    net = AMCGANGenerator(2, 1, 1, channels=4, msfc_channels=2, num_res_blocks=1)
    per_slice = bench_timing.count_flops(lambda: net(torch.zeros(1, 1, h, w)))
    assert res["fp32"]["gflop"] * 1e9 == pytest.approx(per_slice * depth, rel=1e-6)


def test_compare_runs_the_same_architecture(tiny_phantom, tiny_override):
    res = benchmark.compare_pix2pix(["configs/demo.json", tiny_override], tiny_phantom, repeats=3, size=32)
    counts = res["parameters"]
    assert counts["project_g"] == counts["peer_g"] and counts["project_d"] == counts["peer_d"]
    assert res["project_s"]["n"] == res["peer_s"]["n"] == 3
    assert res["project_over_peer"] == pytest.approx(res["project_s"]["min"] / res["peer_s"]["min"])
    assert res["input_shape"] == [2, 1, 32, 32]


def test_amp_accuracy_evaluates_the_same_weights_in_fp32_and_bf16(tiny_phantom, tiny_override, tmp_path):
    """--ckpt_dir: the bundle's evaluation with amp off and on; the change is bf16 - fp32, small and non-zero."""
    bundle = REPO / "bundles" / "amcgan_contrast_mri"
    overrides = ["configs/demo.json", tiny_override]
    net = bench_timing.bundle_parser(bundle, "train.json", overrides, tiny_phantom).get_parsed_content("network_def")
    torch.manual_seed(0)
    with torch.no_grad():  # away from the residual's zero initialisation, so the output depends on the weights
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    (tmp_path / "models").mkdir()
    torch.save({"model": net.state_dict()}, tmp_path / "models" / "model.pt")
    res = benchmark.amp_accuracy(bundle, overrides, tiny_phantom, str(tmp_path / "models"), tmp_path / "amp")
    for label in ("fp32", "bf16"):
        summary = json.loads((tmp_path / "amp" / label / "summary.json").read_text())
        assert summary["n_cases"] == 2 and res[label]["psnr_brain"] == summary["metrics"]["psnr_brain"]["mean"]
    for name, change in res["change"].items():
        assert change == res["bf16"][name] - res["fp32"][name]
    assert 0 < abs(res["change"]["psnr_brain"]) < 1.0  # bf16 autocast really ran, and changed little
