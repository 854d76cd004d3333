"""Ignite handler writing the per-case regression evaluation of every bundle (bundle contract, section 5).

:class:`RegressionEvaluationSaver`: per-case MAE / MSE / PSNR / SSIM over the whole image and inside
region masks (brain, tumour), optional slice metrics (PSNR on the slices that contain tumour, AMCGAN),
optional contrast-enhancement metrics (:mod:`common.metrics.enhancement`: recovery and false enhancement),
written as ``metrics.csv`` (one row per case), ``summary.json`` and ``summary.md`` (mean ± std, count).
It reads each case from the engine's state after an iteration (:mod:`common.handlers.cases`);
``item_transform`` (e.g. a MONAI dict transform undoing the intensity normalisation of ``pred`` and
``label``) is applied to that per-case dict first. The figure grid (:class:`FigureGridSaver`) is in
:mod:`common.handlers.figure_grid`; it and the case helpers stay importable from here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine

from common.data.validation import read_image

# re-exported (with the public case helpers and FigureGridSaver) for code importing them from this module
from common.handlers.cases import _CaseHandler as _CaseHandler
from common.handlers.cases import _tensor as _tensor
from common.handlers.cases import case_items, case_name
from common.handlers.figure_grid import FigureGridSaver
from common.metrics.enhancement import ENHANCING_RIM_LABEL, compute_enhancement_metrics
from common.metrics.regression import METRIC_NAMES, compute_regression_metrics, compute_slice_psnr
from common.utils.dist import is_rank_zero, world_size

TARGET_FILE_RANGE = "target_file_range"

__all__ = ["RegressionEvaluationSaver", "FigureGridSaver", "case_items", "case_name"]


def _atomic_write(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class RegressionEvaluationSaver(_CaseHandler):
    """Per-case regression metrics over the whole image, regions and tumour slices; CSV + summary files.

    For every case: :func:`~common.metrics.regression.compute_regression_metrics` on the whole image
    (columns ``mae``, ``mse``, ``psnr``, ``ssim``), inside each region mask (columns ``<metric>_<region>``),
    and :func:`~common.metrics.regression.compute_slice_psnr` for each slice metric (AMCGAN: PSNR averaged
    over the slices whose tumour mask is non-empty). A region whose key is missing from a case is skipped
    (logged once); an empty mask is skipped with a warning. At ``write_event`` it writes atomically
    ``<output_dir>/metrics.csv`` (``case`` + metric columns, empty cell = skipped), ``summary.json``
    (``{"n_cases": N, "metrics": {name: {"mean", "std", "count", "skipped", "n_inf"}}}``; ``std`` is the
    population std, ``ddof=0``) and ``summary.md``. Skipped (NaN) values never enter a summary; infinite
    values (PSNR of an identical image) are left out of mean/std with a warning and counted in ``n_inf``.
    With ``state_metrics_prefix`` not None the means are also put in ``engine.state.metrics`` so MONAI's
    StatsHandler / MLFlowHandler log them (attach this handler before them; the default ``write_event``
    ``EPOCH_COMPLETED`` is the end of an evaluator's single pass). Files are rewritten at every run.

    Args:
        output_dir: folder of the output files (created if missing).
        regions: ``{region_name: mask_key}``, e.g. ``{"brain": "brain_mask", "tumor": "tumor_mask"}``.
        slice_metrics: ``{column: (mask_key, axis)}``, e.g. ``{"psnr_tumor_slices": ("tumor_mask", 2)}``.
        metrics: metrics of the whole image; ``region_metrics``: of the regions (default: ``metrics``).
        data_range, normalize, percentiles, percentile_reference: as in ``compute_regression_metrics``; also
            ``data_range="target_file_range"``: the peak is ``max - min`` of the target *file* the label was read
            from (``label.meta["filename_or_obj"]``), whatever the bundle did to the label afterwards. A
            skull-stripping bundle (HR-FCN) scores against its skull-stripped target with the same peak as a
            bundle scoring the whole head, so brain PSNRs of one task compare number for number.
        normalize_mask_key: mask whose voxels give the normalisation percentiles for every region (default:
            each region's own mask, the whole image for the whole-image metrics).
        ssim_kwargs: SSIM options (``kernel_type``, ``win_size``, ``kernel_sigma``, ``k1``, ``k2``,
            ``ssim_slice_axis``).
        pred_key, label_key: keys of the synthesized and the reference image in the per-case dict.
        case_key: key holding the case name (e.g. the datalist's ``"subject"``); else the label's file name.
        item_transform: callable applied to each per-case dict first (e.g. de-normalisation).
        state_metrics_prefix: prefix of the ``engine.state.metrics`` names; ``None`` to not set them.
        write_event: ``"EPOCH_COMPLETED"`` or ``"COMPLETED"``.
        enhancement: ``None``, or the keys of :func:`~common.metrics.enhancement.compute_enhancement_metrics`
            for columns ``enhancement_recovery`` and ``false_enhancement``: ``{"source_key": ...}`` (required:
            the pre-contrast source in the target's units, after ``item_transform``), ``"region_key"`` (label map,
            e.g. the tumour mask; missing: threshold mode), ``"region_label"`` (default 3, the phantom's enhancing
            rim; ``None``: every label), ``"brain_key"`` (default: the ``"brain"`` region's key), ``"threshold"``
            (``|target - source|`` threshold when there is no region map).
    """

    def __init__(
        self,
        output_dir: str,
        regions: Mapping[str, str] | None = None,
        slice_metrics: Mapping[str, Sequence] | None = None,
        metrics: Sequence[str] = METRIC_NAMES,
        region_metrics: Sequence[str] | None = None,
        data_range: float | str | None = None,
        normalize: str | None = None,
        percentiles: Sequence[float] = (0.5, 99.5),
        percentile_reference: str = "target",
        normalize_mask_key: str | None = None,
        ssim_kwargs: Mapping | None = None,
        pred_key: str = "pred",
        label_key: str = "label",
        case_key: str | None = "subject",
        item_transform: Callable | None = None,
        state_metrics_prefix: str | None = "",
        write_event: str = "EPOCH_COMPLETED",
        enhancement: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(pred_key, label_key, case_key, item_transform, write_event)
        self.enhancement = self._enhancement_options(enhancement, regions)
        if not output_dir:
            raise ValueError("output_dir must be a non-empty path.")
        for arg, names in (("metrics", metrics), ("region_metrics", region_metrics or metrics)):
            if isinstance(names, str) or not names or any(m not in METRIC_NAMES for m in names):
                raise ValueError(f"{arg} must be a non-empty subset of {METRIC_NAMES}, got {names!r}.")
        self.regions = dict(regions or {})
        self.slice_metrics = {k: (str(v[0]), int(v[1])) for k, v in (slice_metrics or {}).items()}
        for name, spec in (slice_metrics or {}).items():
            if len(spec) != 2 or int(spec[1]) not in (0, 1, 2):
                raise ValueError(f"slice_metrics[{name!r}] must be (mask_key, axis in 0..2), got {spec!r}.")
        self.file_range = data_range == TARGET_FILE_RANGE
        self._file_ranges: dict[str, float] = {}
        self.options = dict(
            data_range=None if self.file_range else data_range,
            normalize=normalize,
            percentiles=tuple(percentiles),
            percentile_reference=percentile_reference,
        )
        self.ssim_kwargs = dict(ssim_kwargs or {})
        probe = torch.arange(121.0).reshape(1, 11, 11)  # validates every option now rather than at the first case
        compute_regression_metrics(probe, probe, metrics=("mae",), **self.options, **self.ssim_kwargs)
        self.output_dir, self.metrics = str(output_dir), tuple(metrics)
        self.region_metrics = tuple(region_metrics or metrics)
        self.normalize_mask_key, self.state_metrics_prefix = normalize_mask_key, state_metrics_prefix
        self.rows: list[dict[str, Any]] = []
        self._columns: list[str] = []
        self._missing_logged: set[str] = set()
        self.logger = logging.getLogger(self.__class__.__name__)

    @staticmethod
    def _enhancement_options(enhancement: Mapping[str, Any] | None, regions: Mapping[str, str] | None) -> dict | None:
        """Validate the ``enhancement`` argument; fill in the defaults."""
        if enhancement is None:
            return None
        allowed = {"source_key", "region_key", "region_label", "brain_key", "threshold"}
        if not isinstance(enhancement, Mapping) or not enhancement.get("source_key") or set(enhancement) - allowed:
            raise ValueError(
                f"enhancement must be None or a dict with 'source_key' and keys of {allowed}, got {enhancement!r}."
            )
        options = {"region_key": None, "region_label": ENHANCING_RIM_LABEL, "threshold": None, **enhancement}
        options.setdefault("brain_key", (regions or {}).get("brain"))
        if options["region_key"] is None and options["threshold"] is None:
            raise ValueError("enhancement needs a 'region_key' or a 'threshold'.")
        return options

    def _enhancement(self, item: Mapping, name: str, pred: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
        """Enhancement recovery / false enhancement of one case (empty if its source is missing)."""
        opts = self.enhancement
        source = item.get(opts["source_key"])
        if source is None:
            self._mask(item, opts["source_key"], pred, "enhancement source")  # logs the missing key once
            return {}
        source = _tensor(source).double()
        source = source[None] if source.ndim == pred.ndim - 1 else source
        region = self._mask(item, opts["region_key"], pred, "enhancement region") if opts["region_key"] else None
        if opts["region_key"] and region is None and opts["threshold"] is None:
            return {}
        brain = self._mask(item, opts["brain_key"], pred, "enhancement brain") if opts["brain_key"] else None
        values = compute_enhancement_metrics(
            pred, label, source, region, opts["region_label"], opts["threshold"], brain
        )
        if math.isnan(values["enhancement_recovery"]):
            self.logger.info(f"case {name!r}: no enhancing voxels (or no contrast in the target); recovery skipped.")
        return values

    def reset(self, engine: Engine | None = None) -> None:
        super().reset(engine)
        self.rows, self._columns, self._missing_logged = [], [], set()

    def _mask(self, item: Mapping, key: str, pred: torch.Tensor, what: str) -> torch.Tensor | None:
        if item.get(key) is None:
            if key not in self._missing_logged:
                self._missing_logged.add(key)
                self.logger.info(f"{what}: key {key!r} is not in the data; skipped.")
            return None
        mask = _tensor(item[key])
        return mask[None] if mask.ndim == pred.ndim - 1 else mask

    def __call__(self, engine: Engine) -> None:
        """Compute the metrics of every case of the current iteration."""
        for name, item in self._cases(engine):
            pred, label = _tensor(item[self.pred_key]).double(), _tensor(item[self.label_key]).double()
            pmask = None
            if self.normalize_mask_key:
                pmask = self._mask(item, self.normalize_mask_key, pred, "normalisation mask")
            row: dict[str, Any] = {"case": name}
            if self.file_range:
                self.options["data_range"] = self._target_file_range(item[self.label_key], name)
            values = compute_regression_metrics(
                pred, label, None, metrics=self.metrics, percentile_mask=pmask, **self.options, **self.ssim_kwargs
            )
            row.update(values)
            for region, key in self.regions.items():
                mask = self._mask(item, key, pred, f"region {region!r}")
                if mask is None:
                    continue
                if not (mask > 0).any():
                    warnings.warn(f"case {name!r}: mask {key!r} of region {region!r} is empty; skipped.", stacklevel=2)
                values = compute_regression_metrics(
                    pred,
                    label,
                    mask,
                    metrics=self.region_metrics,
                    percentile_mask=pmask,
                    **self.options,
                    **self.ssim_kwargs,
                )
                row.update({f"{m}_{region}": v for m, v in values.items()})
            for column, (key, axis) in self.slice_metrics.items():
                mask = self._mask(item, key, pred, f"slice metric {column!r}")
                if mask is None:
                    continue
                if not (mask > 0).any():
                    warnings.warn(f"case {name!r}: mask {key!r} of {column!r} is empty; skipped.", stacklevel=2)
                row[column] = compute_slice_psnr(pred, label, mask, axis, percentile_mask=pmask, **self.options)
            if self.enhancement is not None:
                row.update(self._enhancement(item, name, pred, label))
            self._columns += [c for c in row if c != "case" and c not in self._columns]
            self.rows.append(row)

    def _target_file_range(self, label: Any, name: str) -> float:
        """``max - min`` of the file ``label`` was loaded from (read once per file)."""
        meta = getattr(label, "meta", None) or {}
        path = meta.get("filename_or_obj")
        if not path:
            raise ValueError(
                f"case {name!r}: data_range='target_file_range' needs the label's source file in its metadata "
                "(label.meta['filename_or_obj']); the label has none."
            )
        path = str(path[0] if isinstance(path, (list, tuple)) else path)
        if path not in self._file_ranges:
            data = np.asarray(read_image(path)[2], dtype=np.float64)
            self._file_ranges[path] = float(data.max() - data.min())
        return self._file_ranges[path]

    def _gather_rows(self) -> list[dict[str, Any]]:
        if world_size() == 1:
            return self.rows
        parts: list = [None] * world_size()
        torch.distributed.all_gather_object(parts, self.rows)
        return [row for part in parts for row in part]

    def summary(self, rows: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """``{"n_cases", "metrics": {name: {"mean", "std", "count", "skipped", "n_inf"}}}``, NaN-free."""
        rows = self.rows if rows is None else rows
        columns = [c for c in self._columns if any(c in r for r in rows)]
        out: dict[str, Any] = {}
        for column in columns:
            values = np.array([r.get(column, math.nan) for r in rows], dtype=np.float64)
            finite = values[np.isfinite(values)]
            n_inf = int(np.isinf(values).sum())
            if n_inf:
                warnings.warn(f"{column}: {n_inf} infinite value(s) left out of the mean and std.", stacklevel=2)
            entry: dict[str, Any] = {"count": int(finite.size), "skipped": int(np.isnan(values).sum())}
            entry["n_inf"] = n_inf
            if finite.size:
                entry.update(mean=float(finite.mean()), std=float(finite.std()))
            out[column] = entry
        return {"n_cases": len(rows), "metrics": out}

    def write(self, engine: Engine) -> None:
        """Write ``metrics.csv``, ``summary.json``, ``summary.md``; set the state metrics."""
        rows = self._gather_rows()
        summary = self.summary(rows)
        if self.state_metrics_prefix is not None:
            for column, entry in summary["metrics"].items():
                if "mean" in entry:
                    engine.state.metrics[f"{self.state_metrics_prefix}{column}"] = entry["mean"]
        if not is_rank_zero():
            return
        os.makedirs(self.output_dir, exist_ok=True)
        columns = list(summary["metrics"])
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["case", *columns])
        for row in rows:
            cells = [row.get(c, math.nan) for c in columns]
            writer.writerow([row["case"], *("" if math.isnan(v) else repr(float(v)) for v in cells)])
        _atomic_write(os.path.join(self.output_dir, "metrics.csv"), buf.getvalue())
        _atomic_write(
            os.path.join(self.output_dir, "summary.json"), json.dumps(summary, indent=2, allow_nan=False) + "\n"
        )
        lines = ["| metric | mean ± std | count | left out |", "|---|---|---|---|"]
        for column, e in summary["metrics"].items():
            value = f"{e['mean']:.5g} ± {e['std']:.3g}" if "mean" in e else "–"
            lines.append(f"| {column} | {value} | {e['count']} | {e['skipped'] + e['n_inf']} |")
        text = f"Evaluation of {summary['n_cases']} case(s).\n\n" + "\n".join(lines) + "\n"
        _atomic_write(os.path.join(self.output_dir, "summary.md"), text)
