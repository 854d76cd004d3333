"""Resolution transforms of super-resolution bundles: degradations, interpolation and the SR output grid.

A low-resolution (LR) image is made on the fly from a high-resolution (HR) one by a *degradation* transform
in the pipeline, so a user can swap it:

- :class:`BicubicDegraded`: bicubic down-sampling by the scale (anti-aliased, as MATLAB's ``imresize``), the
  FA-GAN paper's protocol ("all low-resolution images are obtained by bicubic interpolation");
- :class:`KSpaceTruncated`: keeps the centre ``1/scale`` of k-space in-plane (what a shorter MR acquisition
  measures), then the magnitude of the inverse FFT.

Both act on the ``spatial_axes`` (in-plane) of ``(C, *spatial)`` images; the other spatial axes (slices) are
untouched. Geometry follows voxel-centre grids: LR voxel ``i`` covers HR voxels ``s*i .. s*i + s - 1``, so
``A_LR = A_HR @ [diag(s), (s - 1) / 2]`` along those axes (spacing x ``s``, same world extent), and the SR
output of an LR image gets ``A_SR = A_LR @ [diag(1 / s), -(s - 1) / (2 s)]`` (:class:`SuperResolutionGeometryd`)
— the exact HR grid of a degraded HR image. MONAI would keep the input's affine on a network's output.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, SpatialCrop

__all__ = [
    "scaled_affine",
    "resize_in_plane",
    "BicubicDegraded",
    "KSpaceTruncated",
    "InterpolateResolutiond",
    "CropToMultipled",
    "SuperResolutionGeometryd",
]


def _check_axes(spatial_axes: Sequence[int], count: int | None = 2) -> tuple[int, ...]:
    axes = tuple(int(a) for a in spatial_axes)
    if len(set(axes)) != len(axes) or any(a < 0 or a > 2 for a in axes) or (count is not None and len(axes) != count):
        raise ValueError(f"spatial_axes must be {count or 'distinct'} distinct axes among 0, 1, 2; got {spatial_axes}.")
    return axes


def _check_scale(scale: float, name: str = "scale") -> float:
    if isinstance(scale, bool) or not float(scale) >= 1:
        raise ValueError(f"{name} must be a number >= 1, got {scale!r}.")
    return float(scale)


def scaled_affine(affine: Any, factors: Mapping[int, float]) -> torch.Tensor:
    """Affine of a grid whose voxels are ``factors[axis]`` times the size of ``affine``'s along each axis.

    ``A' = A @ [diag(f), (f - 1) / 2]`` (voxel centres; the corners of the field of view stay in place).
    """
    a = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    dims = a.shape[0] - 1
    m = torch.eye(dims + 1, dtype=torch.float64)
    for axis, f in factors.items():
        m[axis, axis] = float(f)
        m[axis, dims] = (float(f) - 1.0) / 2.0
    return a @ m


def _with_geometry(data: torch.Tensor, like: Any, factors: Mapping[int, float]) -> torch.Tensor:
    """``data`` as a MetaTensor with ``like``'s metadata and the rescaled affine (plain tensor when ``like`` is)."""
    if not isinstance(like, MetaTensor):
        return data
    meta = copy.deepcopy(dict(like.meta))
    meta["affine"] = scaled_affine(like.affine, factors).to(like.affine.dtype)
    meta["spatial_shape"] = np.asarray(data.shape[1:])
    return MetaTensor(data, meta=meta)


def resize_in_plane(
    image: torch.Tensor, size: Sequence[int], spatial_axes: Sequence[int], mode: str = "bicubic", antialias: bool = True
) -> torch.Tensor:
    """Resize the two ``spatial_axes`` of ``image`` (C, *spatial) to ``size`` with 2D interpolation, slice by slice.

    ``mode``: ``"bicubic"``, ``"bilinear"``, ``"nearest"`` or ``"area"`` (``F.interpolate``); ``antialias`` low-pass
    filters when down-sampling (bicubic / bilinear only).
    """
    axes = _check_axes(spatial_axes, 2)
    x = torch.as_tensor(image.as_tensor() if isinstance(image, MetaTensor) else image).float()
    if max(axes) >= x.ndim - 1:
        raise ValueError(f"spatial_axes {axes} do not exist in an image of shape {tuple(x.shape)} (C, *spatial).")
    other = [d for d in range(1, x.ndim) if d - 1 not in axes]
    order = [0, *other, axes[0] + 1, axes[1] + 1]
    moved = x.permute(order)
    lead = moved.shape[:-2]
    flat = moved.reshape(-1, 1, *moved.shape[-2:])
    kwargs = {"align_corners": False} if mode in ("bicubic", "bilinear") else {}
    if mode in ("bicubic", "bilinear"):
        kwargs["antialias"] = antialias
    out = F.interpolate(flat, size=tuple(int(s) for s in size), mode=mode, **kwargs)
    out = out.reshape(*lead, *out.shape[-2:])
    return out.permute(list(np.argsort(order))).contiguous()


class _ResolutionTransform(MapTransform):
    """Shared argument handling: ``keys`` -> ``output_keys`` (default: in place) on ``spatial_axes``."""

    def __init__(
        self,
        keys: KeysCollection,
        scale: float,
        spatial_axes: Sequence[int] = (0, 1),
        output_keys: KeysCollection | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scale = _check_scale(scale)
        self.spatial_axes = _check_axes(spatial_axes, 2)
        outs = (
            self.keys
            if output_keys is None
            else ((output_keys,) if isinstance(output_keys, str) else tuple(output_keys))
        )
        if len(outs) != len(self.keys):
            raise ValueError(f"output_keys must name one output per key, got {outs} for {self.keys}.")
        self.output_keys = outs

    def _shape(self, key: Hashable, image: torch.Tensor) -> list[int]:
        if image.ndim - 1 <= max(self.spatial_axes):
            raise ValueError(
                f"'{key}' has shape {tuple(image.shape)}; expected (C, *spatial) with axes {self.spatial_axes}."
            )
        return [int(image.shape[a + 1]) for a in self.spatial_axes]

    def transform(self, key: Hashable, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out in self.key_iterator(d, self.output_keys):
            d[out] = self.transform(key, d[key])
        return d


class _Degradation(_ResolutionTransform):
    def _lr_shape(self, key: Hashable, image: torch.Tensor) -> list[int]:
        hr = self._shape(key, image)
        if self.scale != int(self.scale) or any(s % int(self.scale) for s in hr):
            raise ValueError(
                f"'{key}' has in-plane size {hr}, not a multiple of the scale {self.scale:g}; crop it first "
                "(common.transforms.degradation.CropToMultipled)."
            )
        return [s // int(self.scale) for s in hr]


class BicubicDegraded(_Degradation):
    """HR -> LR by anti-aliased bicubic down-sampling by ``scale`` in-plane (FA-GAN's degradation).

    Args:
        keys: HR images (C, *spatial).
        scale: integer factor; the in-plane sizes must be multiples of it.
        spatial_axes: the two in-plane axes.
        output_keys: where the LR images go (default: replace ``keys``).
        antialias: low-pass filter before sampling (MATLAB ``imresize``); False: plain bicubic sampling.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale: int = 4,
        spatial_axes: Sequence[int] = (0, 1),
        output_keys: KeysCollection | None = None,
        antialias: bool = True,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, scale, spatial_axes, output_keys, allow_missing_keys)
        self.antialias = bool(antialias)

    def transform(self, key: Hashable, image: torch.Tensor) -> torch.Tensor:
        lr = resize_in_plane(image, self._lr_shape(key, image), self.spatial_axes, "bicubic", self.antialias)
        return _with_geometry(lr, image, {a: self.scale for a in self.spatial_axes})


class KSpaceTruncated(_Degradation):
    """HR -> LR by keeping the central ``1/scale`` of the in-plane k-space (a lower-resolution acquisition).

    ``x_LR = |IFFT_n(crop_n(FFT_N(x) e^{2 pi i k (s - 1) / (2 N)}))|`` with the forward transform normalised by
    ``1/N``, so intensities keep their level (the mean is preserved exactly); the phase ramp samples the
    band-limited image at the LR voxel centres, the grid :class:`BicubicDegraded`'s affine describes.

    Args:
        keys, scale, spatial_axes, output_keys: as in :class:`BicubicDegraded`.
        magnitude: the magnitude of the complex result (MR magnitude images); False: its real part.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale: int = 4,
        spatial_axes: Sequence[int] = (0, 1),
        output_keys: KeysCollection | None = None,
        magnitude: bool = True,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, scale, spatial_axes, output_keys, allow_missing_keys)
        self.magnitude = bool(magnitude)

    def transform(self, key: Hashable, image: torch.Tensor) -> torch.Tensor:
        lr_shape = self._lr_shape(key, image)
        x = torch.as_tensor(image.as_tensor() if isinstance(image, MetaTensor) else image).float()
        dims = [a + 1 for a in self.spatial_axes]
        k = torch.fft.fftn(x, dim=dims, norm="forward")
        for d in dims:  # shift by (s - 1) / 2 HR voxels: LR samples sit at the centres of their s x s HR voxels
            freq = torch.fft.fftfreq(x.shape[d], dtype=torch.float64)
            phase = torch.exp(2j * torch.pi * freq * (self.scale - 1.0) / 2.0).to(k.dtype)
            k = k * phase.reshape([-1 if i == d else 1 for i in range(x.ndim)])
        k = torch.fft.fftshift(k, dim=dims)
        index: list[slice] = [slice(None)] * x.ndim
        for d, n in zip(dims, lr_shape):
            start = x.shape[d] // 2 - n // 2  # the DC bin stays at the centre after fftshift
            index[d] = slice(start, start + n)
        lr = torch.fft.ifftn(torch.fft.ifftshift(k[tuple(index)], dim=dims), dim=dims, norm="forward")
        lr = lr.abs() if self.magnitude else lr.real
        return _with_geometry(lr.float(), image, {a: self.scale for a in self.spatial_axes})


class InterpolateResolutiond(_ResolutionTransform):
    """LR -> HR grid by interpolation (the bicubic baseline, or nearest for display), finer affine included.

    Args:
        keys, spatial_axes, output_keys: as in :class:`BicubicDegraded`.
        scale: up-sampling factor (output size = ``scale`` x input size in-plane).
        mode: ``"bicubic"`` (baseline), ``"bilinear"`` or ``"nearest"``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale: int = 4,
        spatial_axes: Sequence[int] = (0, 1),
        output_keys: KeysCollection | None = None,
        mode: str = "bicubic",
        allow_missing_keys: bool = False,
    ):
        if mode not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"mode must be 'bicubic', 'bilinear' or 'nearest', got {mode!r}.")
        super().__init__(keys, scale, spatial_axes, output_keys, allow_missing_keys)
        self.mode = mode

    def transform(self, key: Hashable, image: torch.Tensor) -> torch.Tensor:
        size = [round(s * self.scale) for s in self._shape(key, image)]
        hr = resize_in_plane(image, size, self.spatial_axes, self.mode, antialias=False)
        return _with_geometry(hr, image, {a: 1.0 / self.scale for a in self.spatial_axes})


class CropToMultipled(MapTransform):
    """Crop the trailing voxels of ``spatial_axes`` so their sizes are multiples of ``k`` (affine kept exact).

    Args:
        keys: images (C, *spatial) of one grid.
        k: the multiple (the scale of a degradation that follows).
        spatial_axes: axes to crop.
    """

    def __init__(
        self, keys: KeysCollection, k: int = 4, spatial_axes: Sequence[int] = (0, 1), allow_missing_keys: bool = False
    ) -> None:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}.")
        super().__init__(keys, allow_missing_keys)
        self.k, self.spatial_axes = int(k), _check_axes(spatial_axes, None)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            shape = d[key].shape[1:]
            slices = [slice(0, (s // self.k) * self.k if a in self.spatial_axes else s) for a, s in enumerate(shape)]
            if any(sl.stop == 0 for sl in slices):
                raise ValueError(f"'{key}' of shape {tuple(shape)} is smaller than {self.k} along {self.spatial_axes}.")
            d[key] = SpatialCrop(roi_slices=slices)(d[key])
        return d


class SuperResolutionGeometryd(MapTransform):
    """Give the network's SR output the fine grid of its LR input: ``A_SR = A_LR @ [diag(1/s), -(s-1)/(2s)]``.

    The output keeps the reference's metadata (file name, case name) with the scaled affine, so
    ``SaveImaged(resample=False)`` writes it with spacing ``/ s`` in-plane and the input's world extent.

    Args:
        keys: SR outputs (C, *spatial), ``s`` x the reference's in-plane size.
        reference_key: the LR network input (a MetaTensor).
        scale: ``s``.
        spatial_axes: the in-plane axes.

    Raises:
        ValueError: the output's shape is not ``s`` x the reference's in-plane (and equal elsewhere).
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str = "image",
        scale: int = 4,
        spatial_axes: Sequence[int] = (0, 1),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key, self.scale = reference_key, _check_scale(scale)
        self.spatial_axes = _check_axes(spatial_axes, None)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.reference_key]
        for key in self.key_iterator(d):
            out = d[key]
            expected = [round(s * self.scale) if a in self.spatial_axes else s for a, s in enumerate(ref.shape[1:])]
            if list(out.shape[1:]) != expected:
                raise ValueError(
                    f"'{key}' has spatial shape {tuple(out.shape[1:])}; expected {tuple(expected)} "
                    f"({self.scale:g} x '{self.reference_key}' {tuple(ref.shape[1:])} in-plane)."
                )
            plain = out.as_tensor() if isinstance(out, MetaTensor) else torch.as_tensor(out)
            d[key] = _with_geometry(plain, ref, {a: 1.0 / self.scale for a in self.spatial_axes})
        return d
