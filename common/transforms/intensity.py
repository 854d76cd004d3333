"""Intensity normalisation that can be undone, so a synthesized image comes back in its target's units.

Paired synthesis normalises the source and the target with *one* per-subject map computed on a reference
image (typically the source, e.g. pre-contrast T1 for T1 -> CE-T1): the network then learns the physical
change between contrasts rather than two independent rescalings, and at inference, where no target
exists, the synthetic image is mapped back with the reference's statistics.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch

from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["ReferenceIntensityScaled", "InverseReferenceIntensityScaled"]


def _scalar(value) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.reshape(-1)[0].item())
    return float(np.asarray(value).reshape(-1)[0])


class ReferenceIntensityScaled(MapTransform):
    """Map ``keys`` linearly so the reference's percentiles ``(lower, upper)`` go to ``(b_min, b_max)``.

    ``x' = (x - lo) / (hi - lo) * (b_max - b_min) + b_min`` with ``lo, hi`` the percentiles of the image under
    ``reference_key`` (inside ``mask_key`` when given, e.g. the brain mask). ``lo`` and ``hi`` are stored in
    the data dict under ``stats_key`` so :class:`InverseReferenceIntensityScaled` can undo the map.

    Args:
        keys: images to map (the reference and, e.g., the target).
        reference_key: image whose percentiles define the map.
        lower: lower percentile (0 = the minimum).
        upper: upper percentile (100 = the maximum).
        b_min: value ``lo`` maps to.
        b_max: value ``hi`` maps to.
        mask_key: optional mask restricting the percentile computation.
        clip: clip the result to ``[b_min, b_max]``.
        stats_key: where ``{"lo", "hi"}`` are stored (default ``"<reference_key>_scale"``).
        allow_missing_keys: skip absent keys (a target at inference time).
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str,
        lower: float = 0.0,
        upper: float = 99.5,
        b_min: float = 0.0,
        b_max: float = 1.0,
        mask_key: str | None = None,
        clip: bool = False,
        stats_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"lower and upper must satisfy 0 <= lower < upper <= 100, got {lower}, {upper}.")
        if b_max <= b_min:
            raise ValueError(f"b_max must be greater than b_min, got {b_min}, {b_max}.")
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.lower, self.upper = float(lower), float(upper)
        self.b_min, self.b_max = float(b_min), float(b_max)
        self.mask_key = mask_key
        self.clip = clip
        self.stats_key = stats_key or f"{reference_key}_scale"

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.reference_key not in d:
            raise KeyError(f"reference image key '{self.reference_key}' is missing (available: {sorted(map(str, d))}).")
        ref = torch.as_tensor(d[self.reference_key]).float()
        values = ref
        if self.mask_key is not None:
            if self.mask_key not in d:
                raise KeyError(f"mask key '{self.mask_key}' is missing (available: {sorted(map(str, d))}).")
            mask = torch.as_tensor(d[self.mask_key]) > 0
            if mask.shape != ref.shape:
                mask = mask.expand_as(ref)
            if bool(mask.any()):
                values = ref[mask]
        flat = values.reshape(-1)
        q = torch.tensor([self.lower / 100.0, self.upper / 100.0])
        if flat.numel() > 4_000_000:  # torch.quantile's size limit: a strided subsample is exact enough
            flat = flat[:: flat.numel() // 4_000_000 + 1]
        lo, hi = (float(v) for v in torch.quantile(flat, q))
        if hi - lo < 1e-8:
            hi = lo + 1.0
        scale = (self.b_max - self.b_min) / (hi - lo)
        for key in self.key_iterator(d):
            out = (d[key] - lo) * scale + self.b_min
            d[key] = out.clamp(self.b_min, self.b_max) if self.clip else out
        d[self.stats_key] = torch.tensor([lo, hi], dtype=torch.float64)
        return d


class InverseReferenceIntensityScaled(MapTransform):
    """Undo :class:`ReferenceIntensityScaled` on ``keys`` (e.g. the prediction) with the stored ``lo, hi``.

    ``x = (x' - b_min) / (b_max - b_min) * (hi - lo) + lo``.

    Args:
        keys: images to map back.
        stats_key: where the forward transform stored ``[lo, hi]``.
        b_min: as in the forward transform.
        b_max: as in the forward transform.
    """

    def __init__(
        self,
        keys: KeysCollection,
        stats_key: str,
        b_min: float = 0.0,
        b_max: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        if b_max <= b_min:
            raise ValueError(f"b_max must be greater than b_min, got {b_min}, {b_max}.")
        super().__init__(keys, allow_missing_keys)
        self.stats_key = stats_key
        self.b_min, self.b_max = float(b_min), float(b_max)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.stats_key not in d:
            raise KeyError(
                f"intensity statistics '{self.stats_key}' are missing: apply ReferenceIntensityScaled first."
            )
        stats = torch.as_tensor(d[self.stats_key]).reshape(-1)
        lo, hi = _scalar(stats[0]), _scalar(stats[1])
        for key in self.key_iterator(d):
            d[key] = (d[key] - self.b_min) / (self.b_max - self.b_min) * (hi - lo) + lo
        return d
