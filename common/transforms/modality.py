"""Per-modality transforms for multi-input synthesis: shared or own intensity maps, missing inputs.

Multi-contrast synthesis (e.g. T1, T2, ADC -> contrast-enhanced T1, Chen et al., IEEE TBME 2023, Sec. III-A
and IV-E) needs three things MONAI does not have in one transform:

- :class:`ModalityIntensityScaled`: every modality mapped to [0, 1] inside the brain by *its own* percentile
  map, except those told to share another key's map (the CE-T1 target shares the pre-contrast T1's map, so
  ``|Y - X_T1| > delta`` of the local loss measures contrast uptake and the output can be de-normalised
  with the T1 statistics when no target exists).
- :class:`ZeroFillModalityd`: an unavailable input replaced by a zero image (the paper's degraded mode).
- :class:`SynthesizeModalityd`: an unavailable input synthesized by another network from the available
  ones, whole volume through an inferer (the paper's T1 -> T2 and T1 -> ADC cascade).

:func:`present_keys` lists the keys to load when some are declared missing; :func:`unique_keys` and
:func:`without_keys` build the key lists of the bundle configs (no comprehensions in config strings).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import ensure_tuple

from .intensity import InverseReferenceIntensityScaled, ReferenceIntensityScaled

__all__ = [
    "ModalityIntensityScaled",
    "ZeroFillModalityd",
    "SynthesizeModalityd",
    "StoredIntensityScaled",
    "present_keys",
    "unique_keys",
    "without_keys",
    "case_label",
]

logger = logging.getLogger(__name__)


def unique_keys(*groups: Sequence[str | None] | str | None) -> list[str]:
    """The keys of ``groups`` in order, each once, without ``None`` or empty names.

    Example: ``unique_keys(["t1", "t2"], ["t1", "t1ce", None])`` is ``["t1", "t2", "t1ce"]`` (a bundle's
    ``brain_mask_key`` may be ``None``).
    """
    out: list[str] = []
    for group in groups:
        for key in ensure_tuple(group):
            if key and str(key) not in out:
                out.append(str(key))
    return out


def without_keys(keys: Sequence[str | None], exclude: Sequence[str | None] | str | None) -> list[str]:
    """``unique_keys(keys)`` without the names in ``exclude`` (e.g. the keys to delete after concatenation)."""
    drop = set(unique_keys(exclude))
    return [k for k in unique_keys(keys) if k not in drop]


def case_label(d: Mapping[Hashable, Any], keys: Sequence[str] = ()) -> str:
    """Name of the case in log lines: ``d["subject"]``, else the file name of the first image of ``keys``."""
    if d.get("subject") is not None:
        return str(d["subject"])
    for key in keys:
        meta = getattr(d.get(key), "meta", None) or {}
        if meta.get("filename_or_obj"):
            return os.path.basename(str(meta["filename_or_obj"]))
    return "?"


def present_keys(keys: Sequence[str], missing_keys: Sequence[str] = (), required: Sequence[str] = ()) -> list[str]:
    """``keys`` without ``missing_keys``, in order; the keys in ``required`` may not be declared missing.

    Args:
        keys: modality keys a bundle reads (e.g. ``["t1", "t2", "adc"]``).
        missing_keys: keys declared unavailable (zero-filled or synthesized instead of loaded).
        required: keys that must stay available (e.g. the T1 whose map de-normalises the output).

    Raises:
        ValueError: naming the key, when a missing key is not one of ``keys`` or is required.
    """
    keys, missing = list(ensure_tuple(keys)), list(ensure_tuple(missing_keys))
    for key in missing:
        if key not in keys:
            raise ValueError(f"missing key {key!r} is not one of the input keys {keys}.")
        if key in ensure_tuple(required):
            raise ValueError(
                f"input {key!r} cannot be declared missing: it is required "
                "(its intensity map de-normalises the output)."
            )
    return [k for k in keys if k not in missing]


class ModalityIntensityScaled(MapTransform):
    """Map each key to ``[b_min, b_max]`` by the percentile map of its reference key (default: itself).

    For each reference ``r``, :class:`~common.transforms.ReferenceIntensityScaled` maps the keys whose reference
    is ``r`` with ``x' = (x - lo_r) / (hi_r - lo_r) (b_max - b_min) + b_min``, ``lo_r, hi_r`` the ``(lower,
    upper)`` percentiles of image ``r`` inside ``mask_key``; ``[lo_r, hi_r]`` is stored under ``"<r>_scale"``
    for :class:`~common.transforms.InverseReferenceIntensityScaled`.  A reference absent from the data (the
    target at inference time) is skipped with its keys when ``allow_missing_keys`` is set.

    Example: ``keys=["t1", "t2", "adc", "t1ce"], reference_keys={"t1ce": "t1"}`` gives t1 and t1ce one map
    (stored as ``t1_scale``) and t2, adc their own.

    Args:
        keys: images to map.
        reference_keys: ``{key: reference key}`` for keys that share another key's map.
        mask_key: mask (e.g. the brain mask) restricting the percentiles; ``None`` uses the whole image.
        lower: lower percentile.
        upper: upper percentile.
        b_min: value of the lower percentile.
        b_max: value of the upper percentile.
        clip: clip to ``[b_min, b_max]``.
        allow_missing_keys: skip keys (and references) absent from the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_keys: Mapping[str, str] | None = None,
        mask_key: str | None = None,
        lower: float = 0.0,
        upper: float = 99.5,
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        reference_keys = dict(reference_keys or {})
        unknown = [k for k in reference_keys if k not in self.keys]
        if unknown:
            raise ValueError(f"reference_keys names keys {unknown} that are not in keys {list(self.keys)}.")
        groups: dict[str, list[str]] = {}
        for key in self.keys:
            groups.setdefault(str(reference_keys.get(key, key)), []).append(str(key))
        self.groups = groups
        self.scalers = {
            ref: ReferenceIntensityScaled(
                keys=group,
                reference_key=ref,
                lower=lower,
                upper=upper,
                b_min=b_min,
                b_max=b_max,
                mask_key=mask_key,
                clip=clip,
                allow_missing_keys=allow_missing_keys,
            )
            for ref, group in groups.items()
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for ref, scaler in self.scalers.items():
            if ref not in d:
                if self.allow_missing_keys:
                    continue
                raise KeyError(f"key {ref!r} (intensity reference of {self.groups[ref]}) is missing from the data.")
            d = scaler(d)
        return d


def _like(d: Mapping[Hashable, Any], like_keys: Sequence[str]) -> torch.Tensor:
    for key in like_keys:
        if key in d:
            return d[key]
    raise KeyError(f"none of the template keys {list(like_keys)} is in the data (available: {sorted(map(str, d))}).")


class ZeroFillModalityd(MapTransform):
    """Put a constant image (default zeros) under each of ``keys``: an unavailable input (paper Sec. IV-E).

    The image has the shape, dtype and metadata of the first available ``like_keys`` entry (a one-channel
    MetaTensor of the same grid).  Applied after intensity normalisation, zero is the normalised value of the
    darkest brain voxel, the paper's "zero matrix".  A loaded image under a missing key is an error: a real
    image is never silently replaced.  A file *path* still listed under that key (the datalist names the file,
    the bundle declared it missing and so did not load it) is ignored with an INFO log line naming the case.

    Args:
        keys: the missing modalities (may be empty: the transform is then the identity).
        like_keys: candidates for the template image, in order (e.g. ``["t1", "brain_mask"]``).
        value: fill value.
    """

    def __init__(self, keys: KeysCollection, like_keys: KeysCollection, value: float = 0.0) -> None:
        if ensure_tuple(keys):
            super().__init__(keys, allow_missing_keys=True)
        else:  # nothing missing: an identity (MapTransform itself refuses an empty key list)
            self.keys, self.allow_missing_keys = (), True
        self.like_keys = [str(k) for k in ensure_tuple(like_keys)]
        if not self.like_keys:
            raise ValueError("like_keys must name at least one key.")
        self.value = float(value)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.keys:
            return d
        like = _like(d, self.like_keys)
        for key in self.keys:
            if isinstance(d.get(key), torch.Tensor):
                raise ValueError(f"key {key!r} is declared missing but the data holds an image for it.")
            if key in d:
                logger.info(
                    f"case {case_label(d, self.like_keys)}: {key!r} is declared missing; ignoring the listed file "
                    f"{d[key]!r} and zero-filling it."
                )
            fill = torch.full_like(torch.as_tensor(like)[:1], self.value, dtype=torch.float32)
            d[key] = MetaTensor(fill, meta=dict(like.meta)) if isinstance(like, MetaTensor) else fill
        return d


class SynthesizeModalityd(MapTransform):
    """Synthesize ``key`` from ``source_keys`` with a trained network, whole volume through ``inferer``.

    ``d[key] = inferer(cat(d[source_keys])[None], network)[0]`` under ``torch.no_grad`` with the network in
    eval mode, on ``device``, returned on the CPU as float32 with the metadata of the first source.  The
    sources must be normalised as when the network was trained (the cascade of the paper, Sec. IV-E: T1 ->
    T2 and T1 -> ADC models produce missing inputs of the CE-T1 model).

    With ``keep_present`` (default) a case whose data already holds a loaded image under ``key`` keeps it (a
    real scan beats a synthetic one); an INFO log line names the case and says which was used.

    Args:
        keys: the one key to write (the synthesized modality).
        source_keys: network inputs, concatenated along channels in this order.
        network: the synthesis network, ``(B, len(source_keys), *spatial) -> (B, 1, *spatial)``.
        inferer: a MONAI inferer (e.g. the bundle's ``SlidingWindowInferer``), called ``inferer(x, network)``.
        weights: optional checkpoint path loaded into ``network`` now (a state dict, or a dict holding one
            under ``"model"``); a missing file is an error naming it.
        device: device of the network and its input.
        pad_divisor: pad the input at the end of each spatial dim to a multiple of these sizes before the
            inferer (networks with down-sampling), and crop the output back.
        keep_present: use a loaded image already under ``key`` instead of synthesizing one.
    """

    def __init__(
        self,
        keys: KeysCollection,
        source_keys: KeysCollection,
        network: torch.nn.Module,
        inferer: Any,
        weights: str | None = None,
        device: str | torch.device = "cpu",
        pad_divisor: Sequence[int] | int | None = None,
        keep_present: bool = True,
    ) -> None:
        super().__init__(keys)
        self.keep_present = bool(keep_present)
        if len(self.keys) != 1:
            raise ValueError(f"keys must name exactly one modality to synthesize, got {list(self.keys)}.")
        self.source_keys = [str(k) for k in ensure_tuple(source_keys)]
        if not self.source_keys:
            raise ValueError("source_keys must name at least one input.")
        if not callable(inferer):
            raise ValueError("inferer must be callable as inferer(inputs, network).")
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.inferer = inferer
        self.pad_divisor = pad_divisor
        if weights is not None:
            if not os.path.isfile(weights):
                raise FileNotFoundError(
                    f"weights file '{weights}' of the network synthesizing {self.keys[0]!r} does not exist; "
                    "train it first."
                )
            state = torch.load(weights, map_location=self.device, weights_only=True)
            if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
                state = state["model"]
            self.network.load_state_dict(state)

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        spatial = tuple(x.shape[2:])
        if self.pad_divisor is None:
            return x, spatial
        k = ensure_tuple(self.pad_divisor)
        k = k * len(spatial) if len(k) == 1 else k
        if len(k) != len(spatial):
            raise ValueError(f"pad_divisor {tuple(k)} does not match the {len(spatial)} spatial dims of the input.")
        pad: list[int] = []
        for size, m in reversed(list(zip(spatial, k))):
            pad += [0, (-size) % int(m)]
        return torch.nn.functional.pad(x, pad), spatial

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.keys[0]
        if self.keep_present and isinstance(d.get(key), torch.Tensor):
            logger.info(f"case {case_label(d, self.source_keys)}: {key!r} is present; using the real image.")
            return d
        name = case_label(d, self.source_keys)
        logger.info(f"case {name}: {key!r} is absent; synthesizing it from {self.source_keys}.")
        absent = [k for k in self.source_keys if k not in d]
        if absent:
            raise KeyError(f"sources {absent} needed to synthesize {self.keys[0]!r} are missing from the data.")
        first = d[self.source_keys[0]]
        x = torch.cat([torch.as_tensor(d[k]).float() for k in self.source_keys], dim=0)[None]
        x, spatial = self._pad(x.as_tensor() if isinstance(x, MetaTensor) else x)
        with torch.no_grad():
            out = self.inferer(x.to(self.device), self.network)
        out = torch.as_tensor(out)[0].detach().float().cpu()
        out = out[(slice(None),) + tuple(slice(0, s) for s in spatial)].contiguous()
        d[self.keys[0]] = MetaTensor(out, meta=dict(first.meta)) if isinstance(first, MetaTensor) else out
        return d


class StoredIntensityScaled(InverseReferenceIntensityScaled):
    """Re-apply a stored :class:`~common.transforms.ReferenceIntensityScaled` map to ``keys``.

    ``x' = (x - lo) / (hi - lo) * (b_max - b_min) + b_min`` with ``[lo, hi]`` read from ``stats_key``: the
    inverse of :class:`~common.transforms.InverseReferenceIntensityScaled`. Evaluation uses it to report
    metrics in the normalised space of the training (e.g. HR-FCN's T1-referenced [0, 1]) from images in the
    target's units.

    Args:
        keys: images to map.
        stats_key: where the forward transform stored ``[lo, hi]``.
        b_min: as in the forward transform.
        b_max: as in the forward transform.
        allow_missing_keys: skip absent keys.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.stats_key not in d:
            raise KeyError(
                f"intensity statistics '{self.stats_key}' are missing: apply ReferenceIntensityScaled first."
            )
        stats = torch.as_tensor(d[self.stats_key]).reshape(-1)
        lo, hi = float(stats[0]), float(stats[1])
        for key in self.key_iterator(d):
            d[key] = (d[key] - lo) / (hi - lo) * (self.b_max - self.b_min) + self.b_min
        return d
