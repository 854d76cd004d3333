"""Residual-output wrapper: a synthesis network predicts the difference to its source, not the image itself.

**Not from a paper of this collection** (a documented switch, off in every ``train.json``): AMCGAN (Pan et al.,
EMBC 2021) and HR-FCN (Chen et al., IEEE TBME 2023) output the target image directly. For contrast enhancement the
target equals the source almost everywhere, so predicting ``y − x`` makes the identity free and leaves the
network's capacity for the enhancement (residual learning: He et al., CVPR 2016; zero-initialised last layer:
Goyal et al., 2017 / "ReZero", Bachlechner et al., 2020)::

    ŷ = x[:, c] + f(x),   f's last convolution initialised at zero   ⇒   ŷ = x[:, c] at initialisation

``f`` is the wrapped network (any ``(B, C_in, *spatial) -> (B, C_out, *spatial)`` whose output activation maps 0 to
0, e.g. ``tanh`` or none) and ``c`` the source channel (the pre-contrast T1). Zeroing ``f``'s own last layer (found
by name, or as its last registered convolution with ``C_out`` output channels) rather than adding a zero
scale after it matters: with Adam every weight of that layer moves from the first step, whereas a single zero
scalar in front of ``f`` moves by one learning rate per step and the output stays at the identity for the whole
demo (measured: 0 % enhancement recovered in 10 AMCGAN epochs). A pix2pix-style re-initialisation of every
convolution (``normal_init``) also draws that layer; :func:`zero_residual_heads` sets it back to zero and belongs
right after such an initialiser.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from common.networks.utils import check_at_least, check_input_dims, check_spatial_dims

__all__ = ["ResidualOutput", "zero_residual_heads"]


class ResidualOutput(nn.Module):
    """``ŷ = x[:, source_channel : source_channel + out_channels] + f(x)`` with ``f``'s last layer zero-initialised.

    Args:
        spatial_dims: 2 or 3.
        network: the wrapped network ``f``: ``(B, C_in, *spatial) -> (B, out_channels, *spatial)``; its output
            activation must map 0 to 0 (``tanh``, identity).
        out_channels: output channels of ``f`` (and of the wrapper).
        source_channel: first input channel that is added to the output (must be in the intensity units of the
            target, as the normalised pre-contrast T1 of AMCGAN and HR-FCN is).
        last_layer: dotted name of ``f``'s last layer in ``f.named_modules()``; None: the last registered
            convolution (``torch.nn`` ``Conv*d`` / ``ConvTranspose*d``) with ``out_channels`` output channels
            (AMCGAN: ``encoder_decoder.decoder.2.conv``, HR-FCN: ``head.1.conv``).

    Shapes:
        input ``(B, C_in, *spatial)`` with ``C_in >= source_channel + out_channels``; output
        ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        network: nn.Module,
        out_channels: int = 1,
        source_channel: int = 0,
        last_layer: str | None = None,
    ) -> None:
        check_spatial_dims(spatial_dims)
        check_at_least(1, out_channels=out_channels)
        check_at_least(0, source_channel=source_channel)
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        super().__init__()
        self.spatial_dims = spatial_dims
        self.source_channel = int(source_channel)
        self.out_channels = int(out_channels)
        modules = dict(network.named_modules())
        if last_layer is None:
            convs = [
                k
                for k, m in modules.items()
                if isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == out_channels and k
            ]
            if not convs:
                raise ValueError(f"network has no convolution with out_channels={out_channels}; name last_layer.")
            last_layer = convs[-1]
        elif last_layer not in modules or not list(modules[last_layer].parameters(recurse=False)):
            raise ValueError(f"last_layer {last_layer!r} is not a module with parameters of the network.")
        self.network = network
        self.last_layer = last_layer
        self.reset_head()

    def __getattr__(self, name: str):
        """Attributes the wrapper lacks are the wrapped network's (``divisor``, ``use_msfc``, ...), so configs and
        tests that read them work unchanged."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("network"), name)

    def reset_head(self) -> None:
        """Zero the weight and bias of ``f``'s last layer, so that the wrapper outputs its source channel exactly."""
        layer = dict(self.network.named_modules())[self.last_layer]
        with torch.no_grad():
            for p in layer.parameters(recurse=False):
                p.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x[:, c : c + out_channels] + f(x)`` for ``x`` ``(B, C_in, *spatial)``."""
        check_input_dims(x, self.spatial_dims)
        if x.shape[1] < self.source_channel + self.out_channels:
            raise ValueError(
                f"input has {x.shape[1]} channels, the residual source needs channels "
                f"{self.source_channel}..{self.source_channel + self.out_channels - 1}."
            )
        source = x[:, self.source_channel : self.source_channel + self.out_channels]
        return source + self.network(x)


def zero_residual_heads(module: nn.Module) -> int:
    """Zero the last layer of every :class:`ResidualOutput` inside ``module`` (after a re-initialisation of all
    convolutions, e.g. pix2pix's ``normal_init``); a no-op for a network without one. Returns how many."""
    heads = [m for m in module.modules() if isinstance(m, ResidualOutput)]
    for m in heads:
        m.reset_head()
    return len(heads)
