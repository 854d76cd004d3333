"""Bundle ``hrfcn_contrast_t1``: the CPU demo override's non-paper levers (issue #12) do what they say."""

from __future__ import annotations

import json

import torch
from hrfcn_helpers import CONFIGS, TINY, _workflow

from common.networks.residual import ResidualOutput


def test_demo_trains_with_the_stage2_local_loss_from_the_start(tmp_path):
    demo = json.loads((CONFIGS / "demo.json").read_text())
    stage2 = json.loads((CONFIGS / "finetune_local.json").read_text())
    assert all(demo[k] == stage2[k] for k in ("lambda_mae", "lambda_ssim", "lambda_local"))
    wf = _workflow(["train.json", "demo.json"], bundle_root=str(tmp_path), **TINY)
    wf.parser.parse(reset=True)
    assert wf.parser.get_parsed_content("g_loss").pixel_weights == {"mae": 0.1, "ssim": 0.1, "local": 10.0}


def test_demo_network_is_residual_on_t1_in_training_and_inference(tmp_path):
    for files in (["train.json", "demo.json"], ["inference.json", "demo.json"]):
        wf = _workflow(files, bundle_root=str(tmp_path), **{k: TINY[k] for k in ("stem_width", "channels")})
        wf.parser.parse(reset=True)
        net = wf.parser.get_parsed_content("network_def")
        assert isinstance(net, ResidualOutput) and net.source_channel == 0  # source_keys[0] = t1
        assert wf.parser.get_parsed_content("net_divisor") == [4, 4, 1]  # HRFCN.divisor reads through
        x = torch.rand(1, 3, 16, 16, 3)
        assert torch.equal(net.eval()(x), x[:, :1])  # identity (the T1) at initialisation


def test_architecture_ablations_keep_the_demo_levers(tmp_path):
    """unet2d/unet3d swap ``backbone_def`` only: on the demo they stay inside its residual output (equal levers),
    on the paper config they are the bare U-Net; training and inference build the same network."""
    from monai.networks.nets import UNet

    for row, dims in (("unet3d", 3), ("unet2d", 2)):
        for base in ("train.json", "inference.json"):
            built = []
            for demo in ([], ["demo.json"]):
                wf = _workflow([base, *demo, f"ablations/{row}.json"], bundle_root=str(tmp_path))
                wf.parser.parse(reset=True)
                built.append(wf.parser.get_parsed_content("network_def"))
            paper, demo_net = built
            assert isinstance(paper, UNet) and paper.dimensions == dims
            assert isinstance(demo_net, ResidualOutput) and isinstance(demo_net.network, UNet)


def test_demo_network_has_no_per_window_normalisation(tmp_path):
    """Instance norm made the output depend on the window (64^2 training patches vs whole-plane inference windows:
    seed 1 brain PSNR 15.8 dB whole-plane vs 19.9 dB with 64^2 windows, same weights); the demo uses none."""
    wf = _workflow(
        ["train.json", "demo.json"], bundle_root=str(tmp_path), **{k: TINY[k] for k in ("stem_width", "channels")}
    )
    wf.parser.parse(reset=True)
    net = wf.parser.get_parsed_content("network_def")
    norms = (torch.nn.InstanceNorm3d, torch.nn.BatchNorm3d, torch.nn.GroupNorm)
    assert not any(isinstance(m, norms) for m in net.modules())
    assert wf.parser.get_parsed_content("patch_hw") == [32, 32] and wf.parser.get_parsed_content("max_epochs") == 120
