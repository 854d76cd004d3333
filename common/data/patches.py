"""On-the-fly patch sampling for networks whose output is the centre of their input (32³ source -> 16³ target).

Nie et al. ("Medical image synthesis with deep convolutional adversarial networks", IEEE TBME 2018) train on
32³ source patches paired with the 16³ target at their centre; the authors extract them on a regular grid into
h5 files after mirror-padding the source by the margin ``(32 - 16) / 2 = 8`` and stress balancing the patches
over regions (mr2ct README). Here the patches are drawn on the fly from the cached volumes:

- :class:`PatchWeightMapd` writes a sampling weight per target window, uniform or weighted towards high
  target gradients (edges) and tumour voxels;
- :class:`RandContextPatchd` pads every volume by the margin (edge copy, as the authors' code), draws the
  window centres with probability proportional to that weight (MONAI's ``RandWeightedCropd``) and crops the
  input window from the source and its centre output window from the target, so every target voxel of the
  volume, the border included, can be sampled and source and target stay aligned voxel for voxel.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import BorderPadd, CenterSpatialCropd, MapTransform, Randomizable, RandWeightedCropd
from monai.utils import ensure_tuple, ensure_tuple_rep

__all__ = ["PatchWeightMapd", "RandContextPatchd", "gradient_magnitude", "window_mean"]


def gradient_magnitude(image: torch.Tensor) -> torch.Tensor:
    """``|∇I|`` by central differences over the spatial axes of a channel-first image, largest over channels.

    Shapes:
        (C, *spatial) -> (1, *spatial).
    """
    image = torch.as_tensor(image).float()
    grads = torch.gradient(image, dim=tuple(range(1, image.ndim)))
    return torch.sqrt(sum(g**2 for g in grads)).amax(dim=0, keepdim=True)


def window_mean(values: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """Mean of ``values`` over the window ``[v - w // 2, v - w // 2 + w)`` at every voxel ``v`` (borders: the part
    inside the volume).

    This is the window a MONAI crop of size ``w`` centred on ``v`` covers, so the value at ``v`` is the mean over
    the target patch whose centre is ``v``.

    Shapes:
        (C, *spatial) -> (C, *spatial).
    """
    nd = values.ndim - 1
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
    window = [int(w) for w in window]
    pad: list[int] = []
    for w in reversed(window):
        pad += [w // 2, w - 1 - w // 2]
    x = values.float()[None]
    ones = torch.ones_like(x[:, :1])
    total = pool(F.pad(x, pad), kernel_size=window, stride=1)
    count = pool(F.pad(ones, pad), kernel_size=window, stride=1)
    return (total / count)[0]


class PatchWeightMapd(MapTransform):
    """Sampling weight of the target window centred at each voxel: ``w(v) = mean over the window of u``, with

        u = 1 + gradient_weight * |∇Y| / mean(|∇Y|) + tumor_weight * 1[tumour],

    ``Y`` the image under ``keys`` (the target), the tumour indicator from ``tumor_key`` (any label > 0; a case
    without that key has no tumour term). ``gradient_weight = tumor_weight = 0`` samples uniformly; with weights,
    windows holding edges or tumour are drawn more often (the "hard regions" of the spec). With ``foreground_key``,
    ``u`` is multiplied by ``background_weight`` outside that mask (e.g. to draw fewer air patches).

    Args:
        keys: the image whose gradients count (one key, e.g. ``"label"``).
        weight_key: where the ``(1, *spatial)`` map is written (for :class:`RandContextPatchd`).
        window: the target window (output patch) size, e.g. 16.
        gradient_weight: extra weight of an average-gradient voxel (>= 0).
        tumor_weight: extra weight of a tumour voxel (>= 0).
        tumor_key: tumour mask key (optional per case).
        foreground_key: optional mask; voxels outside get ``background_weight`` times their weight.
        background_weight: in (0, 1].
    """

    def __init__(
        self,
        keys: KeysCollection,
        weight_key: str = "patch_weight",
        window: Sequence[int] | int = 16,
        gradient_weight: float = 0.0,
        tumor_weight: float = 0.0,
        tumor_key: str | None = None,
        foreground_key: str | None = None,
        background_weight: float = 1.0,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"keys must name exactly one image, got {list(self.keys)}.")
        if not gradient_weight >= 0 or not tumor_weight >= 0:
            raise ValueError(f"gradient_weight and tumor_weight must be >= 0, got {gradient_weight}, {tumor_weight}.")
        if not 0 < background_weight <= 1:
            raise ValueError(f"background_weight must be in (0, 1], got {background_weight}.")
        if not weight_key:
            raise ValueError("weight_key must be a non-empty key.")
        if any(int(w) < 1 for w in ensure_tuple(window)):
            raise ValueError(f"window must be >= 1, got {window}.")
        self.weight_key, self.window = weight_key, window
        self.gradient_weight, self.tumor_weight = float(gradient_weight), float(tumor_weight)
        self.tumor_key, self.foreground_key = tumor_key, foreground_key
        self.background_weight = float(background_weight)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.keys[0]]
        spatial = tuple(image.shape[1:])
        u = torch.ones((1, *spatial), dtype=torch.float32)
        if self.gradient_weight > 0:
            g = gradient_magnitude(image)
            u = u + self.gradient_weight * g / (g.mean() + 1e-8)
        if self.tumor_weight > 0 and self.tumor_key and self.tumor_key in d:
            u = u + self.tumor_weight * (torch.as_tensor(d[self.tumor_key]) > 0).float().amax(dim=0, keepdim=True)
        if self.foreground_key and self.foreground_key in d and self.background_weight < 1:
            fg = (torch.as_tensor(d[self.foreground_key]) > 0).float().amax(dim=0, keepdim=True)
            u = u * (self.background_weight + (1 - self.background_weight) * fg)
        weight = window_mean(u, ensure_tuple_rep(self.window, len(spatial)))
        d[self.weight_key] = MetaTensor(weight, meta=dict(image.meta)) if isinstance(image, MetaTensor) else weight
        return d


class RandContextPatchd(Randomizable, MapTransform):
    """Draw ``num_samples`` (input window, centre output window) pairs: ``roi_size`` from ``keys``, ``output_size``
    from ``label_keys`` at its centre.

    1. pad every key (and the weight map) by ``m = (roi_size - output_size) / 2`` per side (``padding_mode``:
       ``"replicate"`` = the authors' edge copy; one more voxel at the high end, never inside a crop, because
       ``RandWeightedCropd``'s valid centres stop one short of the last window);
    2. draw a centre ``c`` with probability proportional to ``weight_key`` among the centres whose ``roi_size``
       window fits the padded volume (uniform without a weight map): these are exactly the output windows inside
       the original volume, border included;
    3. crop ``roi_size`` around ``c`` from every key, then ``output_size`` at the centre of ``label_keys``.

    The weight under the centre ``c`` is the weight the original map holds at the centre of the output window
    (the padding shifts both by ``m``), e.g. from :class:`PatchWeightMapd` with ``window=output_size``.

    Args:
        keys: every key cropped to ``roi_size`` (the source ``image``, and the target before its centre crop).
        label_keys: keys reduced to the centre ``output_size`` (e.g. ``"label"``); must be among ``keys``.
        roi_size: network input window (32).
        output_size: network output window (16); ``roi_size - output_size`` even and >= 0.
        num_samples: pairs per volume and call.
        weight_key: sampling weight map (``None``: uniform); removed from the samples.
        padding_mode: ``"replicate"``, ``"reflect"`` or ``"constant"``.

    Returns:
        a list of ``num_samples`` dicts, ``keys`` of shape (C, *roi_size) except ``label_keys`` (C, *output_size).
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection = "label",
        roi_size: Sequence[int] | int = 32,
        output_size: Sequence[int] | int = 16,
        num_samples: int = 1,
        weight_key: str | None = None,
        padding_mode: str = "replicate",
    ) -> None:
        MapTransform.__init__(self, keys)
        self.label_keys = [str(k) for k in ensure_tuple(label_keys)]
        if not set(self.label_keys) <= set(map(str, self.keys)):
            raise ValueError(f"label_keys {self.label_keys} must be among keys {list(self.keys)}.")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if padding_mode not in ("replicate", "reflect", "constant"):
            raise ValueError(f"padding_mode must be 'replicate', 'reflect' or 'constant', got {padding_mode!r}.")
        self.roi_size = int(roi_size) if isinstance(roi_size, int) else tuple(int(r) for r in roi_size)
        self.output_size = int(output_size) if isinstance(output_size, int) else tuple(int(o) for o in output_size)
        self.num_samples, self.weight_key, self.padding_mode = int(num_samples), weight_key, padding_mode
        lengths = [len(s) for s in (self.roi_size, self.output_size) if isinstance(s, tuple)]
        self._check_sizes(lengths[0] if lengths else 3)

    def _check_sizes(self, nd: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        roi, out = ensure_tuple_rep(self.roi_size, nd), ensure_tuple_rep(self.output_size, nd)
        margins = tuple(r - o for r, o in zip(roi, out))
        if any(m < 0 or m % 2 for m in margins) or any(o < 1 for o in out):
            raise ValueError(
                f"roi_size - output_size must be even and >= 0 per axis, got roi_size={roi}, output_size={out}."
            )
        return roi, out, tuple(m // 2 for m in margins)

    def randomize(self, data: Any = None) -> None:  # the draw happens inside RandWeightedCropd
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:  # type: ignore[override]
        d = dict(data)
        keys = [str(k) for k in self.keys]
        spatial = tuple(d[keys[0]].shape[1:])
        roi, out, margin = self._check_sizes(len(spatial))
        if any(s < o for s, o in zip(spatial, out)):
            raise ValueError(f"volume of spatial size {spatial} is smaller than the output window {out}.")
        w_key = self.weight_key or "_uniform_patch_weight"
        if self.weight_key is None:
            d[w_key] = torch.ones((1, *spatial), dtype=torch.float32)
        elif w_key not in d:
            raise KeyError(f"sampling weight map {w_key!r} is missing: add PatchWeightMapd first.")
        # one extra voxel at the high end: MONAI's valid-centre range stops one short of the last window
        border = [p for m in margin for p in (m, m + 1)]
        mode = {"replicate": "replicate", "reflect": "reflect", "constant": "constant"}[self.padding_mode]
        d = BorderPadd(keys=keys, spatial_border=border, mode=mode)(d)
        d = BorderPadd(keys=w_key, spatial_border=border, mode="constant")(d)
        self._weighted_crop = RandWeightedCropd(keys=keys, w_key=w_key, spatial_size=roi, num_samples=self.num_samples)
        self._weighted_crop.set_random_state(state=self.R)
        centre = CenterSpatialCropd(keys=self.label_keys, roi_size=out)
        samples = []
        for sample in self._weighted_crop(d):
            sample = centre(sample)
            sample.pop(w_key, None)
            samples.append(sample)
        return samples
