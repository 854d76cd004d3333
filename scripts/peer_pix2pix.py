"""A plain PyTorch pix2pix training step: the peer the project's pix2pix row is timed against.

``scripts/benchmark.py --compare`` times one training iteration of AMCGAN's Table I "Pix2Pix" row through the
project's ``PairedGanTrainer`` and one iteration of this module: the published pix2pix architecture (P. Isola et
al., "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017; the ResNet generator
``resnet_6blocks`` and the n-layer PatchGAN) and its ``optimize_parameters`` step (D on real and detached fake
pairs, then G on adversarial + lambda * L1), written directly with ``torch.nn`` layers and no engine, events,
checks or MONAI factories. It is a benchmark reference, deliberately plain, and not library code: the project's
networks are built through MONAI's factories (``common.networks``). Same widths give the same parameter count
as ``AMCGANGenerator(use_msfc=False, use_fam=False)`` and ``PatchDiscriminator`` (tested).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["PeerResnetGenerator", "PeerPatchDiscriminator", "PeerPix2PixStep"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    raise ValueError(f"norm must be 'batch' or 'instance', got {kind!r}.")


class _PeerResBlock(nn.Module):
    def __init__(self, channels: int, norm: str, dropout: float) -> None:
        super().__init__()
        bias = norm != "batch"
        layers: list[nn.Module] = [
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect", bias=bias),
            _norm(norm, channels),
            nn.ReLU(True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect", bias=bias),
            _norm(norm, channels),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class PeerResnetGenerator(nn.Module):
    """pix2pix ``resnet_<n>blocks``: c7s1-w, d2w, d4w, R4w x n, u2w, uw, c7s1-out, tanh (2D, (B, C, H, W))."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int = 64,
        num_res_blocks: int = 6,
        norm: str = "batch",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        bias, w = norm != "batch", channels
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, w, 7, padding=3, padding_mode="reflect", bias=bias),
            _norm(norm, w),
            nn.ReLU(True),
        ]
        for c_in, c_out in ((w, 2 * w), (2 * w, 4 * w)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=bias), _norm(norm, c_out), nn.ReLU(True)]
        layers += [_PeerResBlock(4 * w, norm, dropout) for _ in range(num_res_blocks)]
        for c_in, c_out in ((4 * w, 2 * w), (2 * w, w)):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=bias),
                _norm(norm, c_out),
                nn.ReLU(True),
            ]
        layers += [nn.Conv2d(w, out_channels, 7, padding=3, padding_mode="reflect"), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PeerPatchDiscriminator(nn.Module):
    """The PatchGAN of pix2pix with ``num_layers`` 4x4 convolutions (stride 2 except the last two; 2D)."""

    def __init__(self, in_channels: int, channels: int = 64, num_layers: int = 6, norm: str = "instance") -> None:
        super().__init__()
        bias = norm != "batch"
        strides = [2] * (num_layers - 2) + [1, 1]
        widths = [channels * min(2**i, 8) for i in range(num_layers - 1)] + [1]
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, (stride, c_out) in enumerate(zip(strides, widths)):
            first, last = i == 0, i == num_layers - 1
            layers.append(nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1, bias=True if first or last else bias))
            if not (first or last):
                layers.append(_norm(norm, c_out))
            if not last:
                layers.append(nn.LeakyReLU(0.2, True))
            c_in = c_out
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PeerPix2PixStep:
    """pix2pix ``optimize_parameters``: one D step on (x, y) / (x, G(x).detach()), then one G step.

    Args:
        generator, discriminator: the two networks (the discriminator sees ``cat(x, y)``).
        lambda_l1: weight of the L1 term (pix2pix: 100).
        lr, betas: Adam settings of both optimizers (pix2pix: 2e-4, (0.5, 0.999)).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        lambda_l1: float = 100.0,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
    ) -> None:
        self.g, self.d = generator, discriminator
        self.lambda_l1 = lambda_l1
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=lr, betas=betas)
        self.bce = nn.BCEWithLogitsLoss()
        self.l1 = nn.L1Loss()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> float:
        fake = self.g(x)
        self.opt_d.zero_grad()
        pred_fake = self.d(torch.cat([x, fake.detach()], 1))
        pred_real = self.d(torch.cat([x, y], 1))
        loss_d = 0.5 * (
            self.bce(pred_fake, torch.zeros_like(pred_fake)) + self.bce(pred_real, torch.ones_like(pred_real))
        )
        loss_d.backward()
        self.opt_d.step()
        for p in self.d.parameters():
            p.requires_grad_(False)
        self.opt_g.zero_grad()
        pred_fake = self.d(torch.cat([x, fake], 1))
        loss_g = self.bce(pred_fake, torch.ones_like(pred_fake)) + self.lambda_l1 * self.l1(fake, y)
        loss_g.backward()
        self.opt_g.step()
        for p in self.d.parameters():
            p.requires_grad_(True)
        return float(loss_g.detach())
