"""Perceptual (VGG feature) content loss of SRGAN / FA-GAN.

Reference:
    Jiang M., et al. "FA-GAN: Fused attentive generative adversarial networks for MRI image super-resolution",
    Computerized Medical Imaging and Graphics 92, 101969, 2021 (Sec. 2.4, content loss).
    Ledig C., et al. "Photo-realistic single image super-resolution using a generative adversarial network",
    CVPR 2017, Eq. (5): ``l_VGG/i.j = 1/(W_ij H_ij) sum_x sum_y (phi_ij(I_HR) - phi_ij(G(I_LR)))^2``.

The feature network is configurable: ``"vgg19"`` (the ImageNet VGG19 from a local torchvision-format file)
or ``"none"`` (the term is off; it must then carry weight 0 in the generator loss, which never evaluates it).
A configuration that asks for VGG19 features without the file stops at construction with a message naming
the path; it never trains against random features.
"""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from monai.utils import LossReduction

from common.losses.utils import apply_reduction
from common.networks.vgg import VGG19Features

__all__ = ["PERCEPTUAL_NETWORKS", "PerceptualLoss"]

PERCEPTUAL_NETWORKS = ("vgg19", "none")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualLoss(_Loss):
    """Mean squared distance of VGG19 feature maps, per sample: ``mean_{c,x,y} (phi(pred) - phi(target))^2``.

    Inputs ``(B, C, H, W)`` (3D ``(B, C, H, W, D)``: every slice along the last axis is a 2D image) are mapped
    from ``input_range`` to [0, 1], grey images repeated to RGB and normalised with the ImageNet mean / std.

    Args:
        network: ``"vgg19"`` or ``"none"`` (off: calling the loss is an error).
        weights_path: torchvision-format VGG19 state dict (required for ``"vgg19"``).
        layer: feature layer ``phi_{i,j}``, e.g. ``"relu5_4"`` (SRGAN VGG54) or ``"relu2_2"``.
        input_range: intensity range of the network's images that maps to [0, 1].
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (one value per sample).

    Raises:
        FileNotFoundError: ``network="vgg19"`` and ``weights_path`` is not a file (the message says where to put it).
    """

    def __init__(
        self,
        network: str = "vgg19",
        weights_path: str | None = None,
        layer: str = "relu5_4",
        input_range: tuple[float, float] = (0.0, 1.0),
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        if network not in PERCEPTUAL_NETWORKS:
            raise ValueError(f"network must be one of {PERCEPTUAL_NETWORKS}, got {network!r}.")
        lo, hi = (float(v) for v in input_range)
        if not hi > lo:
            raise ValueError(f"input_range must be (low, high) with high > low, got {input_range}.")
        super().__init__(reduction=LossReduction(reduction).value)
        self.network_name, self.input_range = network, (lo, hi)
        self.features: VGG19Features | None = None
        if network == "vgg19":
            if weights_path is None:
                weights_path = ""  # load_torchvision_vgg19 raises FileNotFoundError with the instructions
            self.features = VGG19Features(2, 3, layer, weights_path=weights_path, requires_grad=False).eval()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """The feature network stays in eval mode (frozen loss network)."""
        super().train(mode)
        if self.features is not None:
            self.features.eval()
        return self

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5:  # (B, C, H, W, D) -> (B * D, C, H, W)
            x = x.permute(0, 4, 1, 2, 3).reshape(-1, *x.shape[1:4])
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"perceptual loss expects (B, 1 or 3, H, W[, D]) images, got {tuple(x.shape)}.")
        lo, hi = self.input_range
        x = (x - lo) / (hi - lo)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target``: (B, C, H, W[, D]) -> the reduced loss (``"none"``: shape (B,))."""
        if self.features is None:
            raise RuntimeError("the perceptual network is 'none' (off); give this term weight 0 in the generator loss.")
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target must have the same shape, got {tuple(pred.shape)}, {tuple(target.shape)}."
            )
        batch = pred.shape[0]
        diff = (self.features(self._prepare(pred)) - self.features(self._prepare(target).detach())) ** 2
        return apply_reduction(diff.reshape(batch, -1).mean(1), self.reduction)
