"""Patch stitching for networks whose output is the centre of their input window.

Nie et al.'s context-aware 3D GAN ("Medical image synthesis with deep convolutional adversarial networks",
IEEE TBME 2018) maps a 32³ source patch to the centre 16³ of the target through unpadded ("valid")
convolutions. MONAI's ``sliding_window_inference`` assumes an output window the size of the input window,
so this inferer slides *output* windows over the volume and feeds the network the larger input window
centred on each.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from monai.data.utils import compute_importance_map
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type, ensure_tuple_rep

__all__ = ["CenterCropStitchInferer"]


def _starts(size: int, window: int, step: int) -> list[int]:
    """Window starts covering [0, size) with the last window flush with the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


class CenterCropStitchInferer(Inferer):
    """Whole-volume inference for a network mapping an ``roi_size`` input to its centre ``output_size``.

    The volume is padded by the margin ``m = (roi_size - output_size) / 2`` on every side (``padding_mode``:
    ``"replicate"`` as the authors' code, ``"reflect"`` or ``"constant"``); output windows of ``output_size``
    tile the volume with the given ``overlap`` or per-axis ``steps`` (the last one flush with the border); each
    is predicted from
    the input window that has it at its centre; overlapping predictions are averaged (``blend_mode``
    ``"constant"``) or Gaussian-weighted (``"gaussian"``). For an exactly translation-equivariant network
    the result equals the network applied once to the whole padded volume.

    Args:
        roi_size: network input window, e.g. (32, 32, 32).
        output_size: network output window, e.g. (16, 16, 16); ``roi_size - output_size`` must be even.
        overlap: fraction of overlap between neighbouring output windows, in [0, 1).
        sw_batch_size: windows per forward pass.
        padding_mode: how the margin is filled.
        blend_mode: ``"constant"`` or ``"gaussian"``.
        sigma_scale: Gaussian sigma as a fraction of ``output_size`` (``blend_mode="gaussian"``).
        steps: step between neighbouring output windows per axis, in voxels, each in ``[1, output_size]``
            (e.g. the step [2, 5, 5] of Nie et al.'s code, which no single overlap gives); ``None``:
            ``round(output_size * (1 - overlap))``. :meth:`num_windows` counts the forward passes it costs.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        output_size: Sequence[int] | int,
        overlap: float = 0.5,
        sw_batch_size: int = 8,
        padding_mode: str = "replicate",
        blend_mode: str = "constant",
        sigma_scale: float = 0.125,
        steps: Sequence[int] | int | None = None,
    ) -> None:
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}.")
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}.")
        if padding_mode not in ("replicate", "reflect", "constant"):
            raise ValueError(f"padding_mode must be 'replicate', 'reflect' or 'constant', got {padding_mode!r}.")
        if blend_mode not in ("constant", "gaussian"):
            raise ValueError(f"blend_mode must be 'constant' or 'gaussian', got {blend_mode!r}.")
        ndim = (
            len(roi_size)
            if isinstance(roi_size, Sequence)
            else (len(output_size) if isinstance(output_size, Sequence) else 3)
        )
        self.roi_size = ensure_tuple_rep(roi_size, ndim)
        self.output_size = ensure_tuple_rep(output_size, ndim)
        margins = [(r - o) for r, o in zip(self.roi_size, self.output_size)]
        if any(m < 0 or m % 2 for m in margins):
            raise ValueError(
                f"roi_size - output_size must be even and >= 0 per axis, got roi_size={self.roi_size}, "
                f"output_size={self.output_size}."
            )
        super().__init__()
        self.margin = tuple(m // 2 for m in margins)
        self.overlap = overlap
        self.sw_batch_size = sw_batch_size
        self.padding_mode = padding_mode
        self.blend_mode = blend_mode
        self.sigma_scale = sigma_scale
        if steps is None:
            self.steps = tuple(max(1, int(round(o * (1 - overlap)))) for o in self.output_size)
        else:
            self.steps = tuple(int(s) for s in ensure_tuple_rep(steps, ndim))
            if any(not 1 <= s <= o for s, o in zip(self.steps, self.output_size)):
                raise ValueError(
                    f"steps must be in [1, output_size] per axis, got {self.steps} for {self.output_size}."
                )

    def window_starts(self, spatial: Sequence[int]) -> list[tuple[int, ...]]:
        """Start of every output window over a volume of spatial size ``spatial``."""
        grown = tuple(max(int(s), o) for s, o in zip(spatial, self.output_size))
        return list(itertools.product(*[_starts(g, o, s) for g, o, s in zip(grown, self.output_size, self.steps)]))

    def num_windows(self, spatial: Sequence[int]) -> int:
        """Forward passes (windows) the inferer runs for one volume of spatial size ``spatial``."""
        return len(self.window_starts(spatial))

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """
        Args:
            inputs: volume of shape (B, C, *spatial) with ``len(spatial) == len(roi_size)``.
            network: maps (N, C, *roi_size) to (N, C_out, *output_size).

        Returns:
            (B, C_out, *spatial), on the inputs' device; a MetaTensor input gives a MetaTensor output carrying
            its metadata (case name, affine), as MONAI's inferers do.
        """
        nd = len(self.roi_size)
        if inputs.ndim != nd + 2:
            raise ValueError(f"inputs must have shape (B, C, {nd} spatial dims), got {tuple(inputs.shape)}.")
        spatial = tuple(inputs.shape[2:])
        # grow volumes smaller than an output window at the end, crop back at the return
        grown = tuple(max(s, o) for s, o in zip(spatial, self.output_size))
        pad: list[int] = []
        for axis in reversed(range(nd)):
            pad += [self.margin[axis], self.margin[axis] + grown[axis] - spatial[axis]]
        x = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        if self.padding_mode == "constant":
            padded = F.pad(x, pad, mode="constant", value=0.0)
        else:
            padded = F.pad(x, pad, mode=self.padding_mode)
        starts = self.window_starts(spatial)
        if self.blend_mode == "gaussian":
            weight = compute_importance_map(
                self.output_size, mode="gaussian", sigma_scale=self.sigma_scale, device=x.device
            )
        else:
            weight = torch.ones(self.output_size, device=x.device)
        weight = weight.to(torch.float32)

        out: torch.Tensor | None = None
        count = torch.zeros((1, 1, *grown), device=x.device, dtype=torch.float32)
        for b in range(x.shape[0]):
            for i in range(0, len(starts), self.sw_batch_size):
                chunk = starts[i : i + self.sw_batch_size]
                windows = torch.stack(
                    [
                        padded[b][(slice(None),) + tuple(slice(s, s + r) for s, r in zip(st, self.roi_size))]
                        for st in chunk
                    ]
                )
                pred = network(windows, *args, **kwargs)
                if tuple(pred.shape[2:]) != self.output_size:
                    raise ValueError(
                        f"the network returned windows of shape {tuple(pred.shape[2:])}, "
                        f"expected output_size={self.output_size}."
                    )
                if out is None:
                    out = torch.zeros((x.shape[0], pred.shape[1], *grown), device=x.device, dtype=torch.float32)
                for st, p in zip(chunk, pred):
                    region = tuple(slice(s, s + o) for s, o in zip(st, self.output_size))
                    out[(b, slice(None)) + region] += p.float() * weight
                    if b == 0:
                        count[(0, slice(None)) + region] += weight
        assert out is not None
        out = (out / count)[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]
        return convert_to_dst_type(out, inputs, device=out.device, dtype=out.dtype)[0]
