"""Centre-crop stitching with an explicit window step per axis, and the count of forward passes it costs.

:class:`~common.inferers.center_crop.CenterCropStitchInferer` derives one step for every axis from a single
``overlap`` fraction. The authors' stitching (Nie et al., "Medical image synthesis with deep convolutional
adversarial networks", IEEE TBME 2018; ``test_1_subject`` of their code) slides the 16³ output window with the
step [2, 5, 5], which no single overlap gives. :class:`SteppedCenterCropStitchInferer` accepts ``steps`` per
axis (``None``: from ``overlap`` as the parent) and reports how many windows a volume needs
(:meth:`num_windows`), so the bundle can compare the authors' ~10^4-10^5 passes with its default.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from monai.data.utils import compute_importance_map
from monai.utils import convert_to_dst_type, ensure_tuple_rep

from common.inferers.center_crop import CenterCropStitchInferer, _starts

__all__ = ["SteppedCenterCropStitchInferer"]


class SteppedCenterCropStitchInferer(CenterCropStitchInferer):
    """:class:`CenterCropStitchInferer` with an optional per-axis step between neighbouring output windows.

    The output windows start at ``0, s, 2s, ...`` along each axis, the last one flush with the border; each is
    predicted from the ``roi_size`` input window centred on it (the volume padded by the margin) and overlaps are
    averaged (or Gaussian-weighted). ``steps=None`` uses ``round(output_size * (1 - overlap))`` as the parent.

    Args:
        roi_size, output_size, overlap, sw_batch_size, padding_mode, blend_mode, sigma_scale: as the parent.
        steps: step per axis in voxels (e.g. the authors' ``[2, 5, 5]``), each in ``[1, output_size]``.
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
        super().__init__(roi_size, output_size, overlap, sw_batch_size, padding_mode, blend_mode, sigma_scale)
        if steps is None:
            self.steps = tuple(max(1, int(round(o * (1 - overlap)))) for o in self.output_size)
        else:
            self.steps = tuple(int(s) for s in ensure_tuple_rep(steps, len(self.output_size)))
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
        """(B, C, *spatial) -> (B, C_out, *spatial); ``network`` maps (N, C, *roi_size) to (N, C_out, *output_size).

        Unlike the parent, a MetaTensor input gives a MetaTensor output carrying the input's metadata.
        """
        nd = len(self.roi_size)
        if inputs.ndim != nd + 2:
            raise ValueError(f"inputs must have shape (B, C, {nd} spatial dims), got {tuple(inputs.shape)}.")
        spatial = tuple(inputs.shape[2:])
        grown = tuple(max(s, o) for s, o in zip(spatial, self.output_size))
        pad: list[int] = []
        for axis in reversed(range(nd)):
            pad += [self.margin[axis], self.margin[axis] + grown[axis] - spatial[axis]]
        x = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        padded = F.pad(x, pad, mode=self.padding_mode, **({"value": 0.0} if self.padding_mode == "constant" else {}))
        starts = self.window_starts(spatial)
        if self.blend_mode == "gaussian":
            weight = compute_importance_map(
                self.output_size, mode="gaussian", sigma_scale=self.sigma_scale, device=x.device
            )
        else:
            weight = torch.ones(self.output_size, device=x.device)
        weight = weight.to(torch.float32)
        count = torch.zeros((1, 1, *grown), device=x.device, dtype=torch.float32)
        for st in starts:
            count[(0, slice(None)) + tuple(slice(s, s + o) for s, o in zip(st, self.output_size))] += weight
        out: torch.Tensor | None = None
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
        if out is None:
            raise ValueError("no window was predicted.")
        out = (out / count)[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]
        # a MetaTensor input gives a MetaTensor output with its metadata (case name, affine), as MONAI's inferers
        return convert_to_dst_type(out, inputs, device=out.device, dtype=out.dtype)[0]
