"""Evaluation of super-resolution with its trivial baseline in the same table (bundle contract, section 9).

:class:`BaselineEvaluationSaver` is a :class:`~common.handlers.evaluation.RegressionEvaluationSaver` that also
scores a baseline image of every case (bicubic interpolation of the LR input for super-resolution) against
the same target, in the same space, and writes the baseline's values as ``<prefix><metric>`` columns of the
same ``metrics.csv`` / summary (e.g. ``psnr`` and ``bicubic_psnr`` side by side).
:class:`FeatureFIDHandler` adds the Frechet distance of FA-GAN's Table 5 on VGG19 features when a weights file is
given, and logs that it is skipped otherwise.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

import torch
from ignite.engine import Engine, Events

from monai.metrics import FIDMetric

from common.handlers.evaluation import RegressionEvaluationSaver, _tensor, case_items
from common.metrics.regression import compute_regression_metrics
from common.networks.vgg import VGG19Features

__all__ = ["BaselineEvaluationSaver", "FeatureFIDHandler"]


class BaselineEvaluationSaver(RegressionEvaluationSaver):
    """Per-case metrics of ``pred`` and of ``baseline_key`` against ``label``, in one CSV and summary.

    Args:
        output_dir: folder of ``metrics.csv``, ``summary.json``, ``summary.md``.
        baseline_key: key of the baseline image (same grid and units as ``pred``), e.g. ``"bicubic"``.
        baseline_prefix: column prefix of the baseline's metrics.
        baseline_regions: regions (``{name: mask_key}``) also scored for the baseline (default: all ``regions``).
        **kwargs: as :class:`~common.handlers.evaluation.RegressionEvaluationSaver`.
    """

    def __init__(
        self,
        output_dir: str,
        baseline_key: str = "bicubic",
        baseline_prefix: str = "bicubic_",
        baseline_regions: Mapping[str, str] | None = None,
        **kwargs,
    ) -> None:
        if not baseline_key or not baseline_prefix:
            raise ValueError(
                f"baseline_key and baseline_prefix must be non-empty, got {baseline_key!r}, {baseline_prefix!r}."
            )
        super().__init__(output_dir, **kwargs)
        self.baseline_key, self.baseline_prefix = baseline_key, baseline_prefix
        self.baseline_regions = dict(self.regions if baseline_regions is None else baseline_regions)

    def __call__(self, engine: Engine) -> None:
        """Score ``pred`` (the parent's columns), then the baseline of the same cases (prefixed columns)."""
        first = len(self.rows)
        super().__call__(engine)
        items = case_items(engine)
        items = [dict(self.item_transform(i)) if self.item_transform is not None else i for i in items]
        for row, item in zip(self.rows[first:], items):
            if item.get(self.baseline_key) is None:
                raise ValueError(f"baseline key {self.baseline_key!r} not found (keys: {sorted(item)}).")
            base, label = _tensor(item[self.baseline_key]).double(), _tensor(item[self.label_key]).double()
            if base.shape != label.shape:
                raise ValueError(f"baseline {tuple(base.shape)} and target {tuple(label.shape)} differ in shape.")
            values = compute_regression_metrics(
                base, label, None, metrics=self.metrics, **self.options, **self.ssim_kwargs
            )
            extra = {f"{self.baseline_prefix}{m}": v for m, v in values.items()}
            for region, key in self.baseline_regions.items():
                mask = self._mask(item, key, base, f"region {region!r}")
                if mask is None or not (mask > 0).any():
                    continue
                values = compute_regression_metrics(
                    base, label, mask, metrics=self.region_metrics, **self.options, **self.ssim_kwargs
                )
                extra.update({f"{self.baseline_prefix}{m}_{region}": v for m, v in values.items()})
            row.update(extra)
            self._columns += [c for c in extra if c not in self._columns]


class FeatureFIDHandler:
    """Frechet distance between VGG19 features of the synthesized and the real slices (and of the baseline's).

    ``FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` (FA-GAN Eq. 12) over the global-average-pooled
    ``layer`` features of every 2D slice along ``slice_axis`` (MONAI ``FIDMetric``). The paper uses Inception-v3
    features, which cannot be downloaded here; this handler uses the ImageNet VGG19 of the perceptual loss, so the
    values are labelled ``fid_vgg19`` and are not comparable with Inception FIDs. Without ``weights_path`` (or
    when the file is missing) it logs that FID is skipped and writes nothing: it never scores random features.

    Args:
        output_dir: where ``fid.json`` goes (``{"fid_vgg19", "<baseline_prefix>fid_vgg19", "n_slices", ...}``).
        weights_path: torchvision-format VGG19 state dict, or ``None`` / a missing file to skip.
        layer: feature layer (default ``relu5_4``).
        slice_axis: spatial axis of the slices of 3D cases.
        pred_key, label_key, baseline_key, baseline_prefix: the images compared (``baseline_key`` ``None``: none).
        item_transform: applied to each per-case dict first.
    """

    def __init__(
        self,
        output_dir: str,
        weights_path: str | None = None,
        layer: str = "relu5_4",
        slice_axis: int = 2,
        pred_key: str = "pred",
        label_key: str = "label",
        baseline_key: str | None = "bicubic",
        baseline_prefix: str = "bicubic_",
        item_transform=None,
    ) -> None:
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}.")
        self.output_dir, self.weights_path, self.layer, self.slice_axis = (
            str(output_dir),
            weights_path,
            layer,
            slice_axis,
        )
        self.keys = {"pred": pred_key, "label": label_key}
        if baseline_key:
            self.keys["baseline"] = baseline_key
        self.baseline_prefix, self.item_transform = baseline_prefix, item_transform
        self.features: dict[str, list] = {k: [] for k in self.keys}
        self.network = None
        self.logger = logging.getLogger(self.__class__.__name__)

    def attach(self, engine: Engine) -> None:
        """Load the feature network (or log the skip), collect after each iteration, write at the end."""
        if not self.weights_path or not os.path.isfile(self.weights_path):
            self.logger.warning(
                f"FID skipped: no VGG19 feature-network weights at {self.weights_path!r} "
                "(torchvision's vgg19-dcbb9e9d.pth; FID never uses random features)."
            )
            return
        self.network = VGG19Features(2, 3, self.layer, weights_path=self.weights_path).eval()
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def reset(self, engine: Engine | None = None) -> None:
        self.features = {k: [] for k in self.keys}

    def _embed(self, image: torch.Tensor) -> torch.Tensor:
        """(1, *spatial) volume -> (slices, C) pooled features; slices min-max scaled to [0, 1], ImageNet-normalised."""
        x = image.float()
        x = x.movedim(self.slice_axis + 1, 0) if x.ndim == 4 else x[None]  # (S, 1, H, W)
        lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
        hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
        x = ((x - lo) / (hi - lo).clamp_min(1e-8)).expand(-1, 3, -1, -1)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        with torch.no_grad():
            return self.network((x - mean) / std).mean(dim=(2, 3))

    def __call__(self, engine: Engine) -> None:
        for item in case_items(engine):
            item = dict(self.item_transform(item)) if self.item_transform is not None else item
            for name, key in self.keys.items():
                self.features[name].append(self._embed(_tensor(item[key]).cpu()))

    def write(self, engine: Engine) -> None:
        """Compute the distances and write ``fid.json``."""
        real = torch.cat(self.features["label"])
        out = {"n_slices": int(real.shape[0]), "features": f"VGG19 {self.layer}, global average pooled"}
        if real.shape[0] <= real.shape[1]:
            # the covariances of n <= d feature vectors are singular: their matrix square root, hence the FID,
            # is not defined (scipy returns a large imaginary part); report that instead of a number
            out["skipped"] = (
                f"FID needs more slices than feature dimensions: {real.shape[0]} slices of {real.shape[1]}-d "
                "features; evaluate more or larger volumes"
            )
            logging.getLogger(__name__).warning("fid_vgg19 skipped: %s.", out["skipped"])
        else:
            out["fid_vgg19"] = float(FIDMetric()(torch.cat(self.features["pred"]).double(), real.double()))
        if "baseline" in self.keys and "skipped" not in out:
            base = torch.cat(self.features["baseline"]).double()
            out[f"{self.baseline_prefix}fid_vgg19"] = float(FIDMetric()(base, real.double()))
        engine.state.metrics.update({k: v for k, v in out.items() if k.endswith("fid_vgg19")})
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "fid.json"), "w") as f:
            f.write(json.dumps(out, indent=2) + "\n")
