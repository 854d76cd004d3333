"""The VGG19 convolutional feature stack, loadable from a torchvision-format state dict (no torchvision needed).

Reference:
    Simonyan K., Zisserman A. "Very deep convolutional networks for large-scale image recognition", ICLR 2015
    (configuration E, 16 convolutions). Ledig C., et al., SRGAN, CVPR 2017, use ``phi_{i,j}``, the feature map
    of the j-th convolution (after its ReLU) before the i-th max-pooling, as the content-loss space.

The module list reproduces ``torchvision.models.vgg19().features`` index by index (conv, ReLU, ..., max-pool),
so the keys ``features.<index>.weight`` / ``.bias`` of torchvision's ImageNet file
(``vgg19-dcbb9e9d.pth``) load unchanged; the classifier keys of that file are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from monai.networks.layers.factories import Act, Conv, Pool

from common.networks.utils import check_spatial_dims

__all__ = ["VGG19_LAYERS", "VGG19Features", "load_torchvision_vgg19"]

_CONFIG = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


def _layer_names() -> tuple[str, ...]:
    names = []
    for i, block in enumerate(_CONFIG, start=1):
        for j in range(1, len(block) + 1):
            names += [f"conv{i}_{j}", f"relu{i}_{j}"]
        names.append(f"pool{i}")
    return tuple(names)


VGG19_LAYERS = _layer_names()  # index in torchvision's ``features`` -> name (``relu5_4`` = SRGAN's phi_{5,4})


def load_torchvision_vgg19(path: str) -> dict[str, torch.Tensor]:
    """Read a torchvision-format VGG19 state dict (``{"features.0.weight": ...}``, optionally under ``"state_dict"``).

    Raises:
        FileNotFoundError: ``path`` does not exist; the message says which file to put there.
    """
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(
            f"VGG19 weights file '{path}' not found. Pre-trained features cannot be downloaded at run time: put "
            "torchvision's ImageNet VGG19 state dict (vgg19-dcbb9e9d.pth, keys 'features.<i>.weight') at that path, "
            "or switch the perceptual term off (perceptual_network 'none', weight 0)."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"'{path}' does not hold a state dict (got {type(state).__name__}).")
    return dict(state)


class VGG19Features(nn.Module):
    """VGG19's feature stack up to and including ``last_layer`` (a name of :data:`VGG19_LAYERS`).

    Args:
        spatial_dims: 2 (the pre-trained weights are 2D); 3 builds the same stack with 3D layers, untrained.
        in_channels: 3 for ImageNet weights.
        last_layer: e.g. ``"relu5_4"`` (SRGAN's VGG54) or ``"relu2_2"`` (VGG22).
        weights_path: torchvision-format file to load (``None``: random initialisation, for tests and 3D).
        requires_grad: whether the weights are trainable (a loss network is frozen: False).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        last_layer: str = "relu5_4",
        weights_path: str | None = None,
        requires_grad: bool = False,
    ) -> None:
        check_spatial_dims(spatial_dims)
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        if last_layer not in VGG19_LAYERS:
            raise ValueError(f"last_layer must be one of {VGG19_LAYERS}, got {last_layer!r}.")
        if weights_path is not None and spatial_dims != 2:
            raise ValueError(
                f"pre-trained VGG19 weights are 2D; spatial_dims must be 2 to load them, got {spatial_dims}."
            )
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for block in _CONFIG:
            for out in block:
                layers += [Conv[Conv.CONV, spatial_dims](width, out, kernel_size=3, padding=1), Act[Act.RELU]()]
                width = out
            layers.append(Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2))
        self.last_layer = last_layer
        self.features = nn.Sequential(*layers[: VGG19_LAYERS.index(last_layer) + 1])
        if weights_path is not None:
            self.load_torchvision(load_torchvision_vgg19(weights_path), source=weights_path)
        for p in self.parameters():
            p.requires_grad_(requires_grad)

    def load_torchvision(self, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
        """Load the ``features.*`` entries this stack needs from a torchvision VGG19 state dict."""
        needed = self.state_dict()
        missing = [k for k in needed if k not in state]
        if missing:
            raise ValueError(f"'{source}' is not a torchvision VGG19 state dict: keys {missing[:4]} ... are missing.")
        wrong = [k for k in needed if tuple(state[k].shape) != tuple(needed[k].shape)]
        if wrong:
            raise ValueError(f"'{source}': shapes of {wrong[:4]} differ from VGG19's (a different architecture?).")
        self.load_state_dict({k: state[k] for k in needed})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *spatial) -> (B, C_layer, *spatial / 2^pools)``, the feature map ``phi`` of ``last_layer``."""
        return self.features(x)
