"""Slice sampling for 2D methods trained on 3D volumes: per-slice weights for ``RandWeightedCropd``.

A 2D synthesis network (AMCGAN, pix2pix) is trained on slices drawn from co-registered volumes. MONAI's
``RandWeightedCropd`` draws a crop centre with probability proportional to a weight map, but it only
considers the *valid* centres of a crop: for a crop covering the whole slice, ``(H, W, 1)``, the only valid
in-plane centre is ``(H // 2, W // 2)``. A voxel-wise lesion map would therefore count a slice as lesion-rich
only when its centre voxel is lesion. :class:`SliceWeightMapd` builds the map MONAI needs: one weight per
slice, constant over the slice,

    w_s = 1 + lesion_weight * l_s,      l_s = 1 if slice s holds >= min_voxels lesion voxels, else 0,

so a slice with lesion is drawn ``1 + lesion_weight`` times as often as one without. Lesion voxels are those
of a mask (e.g. the tumour mask, any label > 0) or, for data without a mask, those where the target differs
from the source by more than ``difference_threshold`` (contrast enhancement: ``|t1ce - t1|``).

Reference (the sampling need): M. Pan, H. Zhang, Z. Tang, Y. Zhao, J. Tian, "Attention-Based Multi-Scale
Generative Adversarial Network for synthesizing contrast-enhanced MRI" (slices containing lesions are what
the method is evaluated on).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["SliceWeightMapd", "slice_lesion_indicator"]


def slice_lesion_indicator(lesion: torch.Tensor, axis: int, min_voxels: int = 1) -> torch.Tensor:
    """``l_s`` for every slice ``s`` along spatial ``axis`` of a channel-first boolean map.

    Args:
        lesion: ``(C, *spatial)`` boolean tensor (any channel counts).
        axis: spatial axis the slices are taken along (0-based, channel excluded).
        min_voxels: smallest number of lesion voxels that makes a slice a lesion slice.

    Returns:
        ``(n_slices,)`` float tensor of 0/1.
    """
    per_slice = lesion.movedim(axis + 1, 0).reshape(lesion.shape[axis + 1], -1).sum(dim=1)
    return (per_slice >= min_voxels).float()


class SliceWeightMapd(MapTransform):
    """Write a ``(1, *spatial)`` per-slice sampling weight map ``w_s = 1 + lesion_weight * l_s`` (see module).

    Args:
        keys: the lesion mask key (e.g. ``"tumor_mask"``); when the mask is absent from a case the lesion map is
            ``|data[target_key] - data[source_key]| > difference_threshold`` (largest over channels).
        source_key: image the difference map starts from (e.g. the normalised source ``"image"``).
        target_key: image the difference map ends at (e.g. the normalised target ``"label"``).
        weight_key: where the weight map is written (for ``RandWeightedCropd(w_key=...)``).
        axis: spatial axis of the slices (2: the third array axis, axial for RAS/LPS-stored head volumes).
        lesion_weight: extra weight of a lesion slice (0: uniform over slices).
        difference_threshold: lesion threshold of the difference map, in the units of the two images.
        min_voxels: lesion voxels a slice needs to count as a lesion slice.

    Shapes:
        images ``(C, *spatial)`` (3 spatial axes) -> ``data[weight_key]`` ``(1, *spatial)`` float32.
    """

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str = "image",
        target_key: str = "label",
        weight_key: str = "slice_weight",
        axis: int = 2,
        lesion_weight: float = 4.0,
        difference_threshold: float = 0.2,
        min_voxels: int = 1,
    ) -> None:
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be a spatial axis 0, 1 or 2, got {axis!r}.")
        if not lesion_weight >= 0:
            raise ValueError(f"lesion_weight must be >= 0, got {lesion_weight!r}.")
        if not difference_threshold >= 0:
            raise ValueError(f"difference_threshold must be >= 0, got {difference_threshold!r}.")
        if min_voxels < 1:
            raise ValueError(f"min_voxels must be >= 1, got {min_voxels!r}.")
        if not weight_key:
            raise ValueError("weight_key must be a non-empty key.")
        super().__init__(keys, allow_missing_keys=True)
        self.source_key, self.target_key, self.weight_key = source_key, target_key, weight_key
        self.axis, self.lesion_weight = int(axis), float(lesion_weight)
        self.difference_threshold, self.min_voxels = float(difference_threshold), int(min_voxels)

    def _lesion(self, d: Mapping[Hashable, torch.Tensor]) -> torch.Tensor:
        for key in self.key_iterator(d):
            return torch.as_tensor(d[key]) > 0
        for key in (self.source_key, self.target_key):
            if key not in d:
                raise KeyError(f"no lesion mask {list(self.keys)} and no '{key}' for the difference map.")
        diff = (torch.as_tensor(d[self.target_key]).float() - torch.as_tensor(d[self.source_key]).float()).abs()
        return diff.amax(dim=0, keepdim=True) > self.difference_threshold

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        lesion = self._lesion(d)
        if lesion.ndim != 4:
            raise ValueError(f"expected a channel-first 3D map (C, H, W, D), got shape {tuple(lesion.shape)}.")
        weights = 1.0 + self.lesion_weight * slice_lesion_indicator(lesion, self.axis, self.min_voxels)
        shape = [1, 1, 1]
        shape[self.axis] = -1
        spatial = lesion.shape[1:]
        weight_map = weights.reshape(shape).expand(*spatial).unsqueeze(0).contiguous()
        ref = d.get(self.target_key, d.get(self.source_key))
        d[self.weight_key] = MetaTensor(weight_map, meta=dict(ref.meta)) if isinstance(ref, MetaTensor) else weight_map
        return d
