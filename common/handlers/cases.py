"""Shared plumbing of the per-case evaluation handlers: per-case dicts, case names, event names.

MONAI evaluators decollate ``engine.state.batch`` and ``engine.state.output`` into lists of per-case dicts
(batched dicts are decollated here); a case is the batch item updated by the output item, so ``"pred"``
comes from the output and masks and names from the batch. :class:`_CaseHandler` is the base of
:class:`~common.handlers.evaluation.RegressionEvaluationSaver` and
:class:`~common.handlers.figure_grid.FigureGridSaver`: it applies ``item_transform`` to each per-case dict,
gives every case a unique name and attaches itself to an engine (bundle contract, section 5).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai.data import decollate_batch

from common.utils.extensions import IMAGE_EXTENSIONS

__all__ = ["case_items", "case_name"]

_EVENTS = {"EPOCH_COMPLETED": Events.EPOCH_COMPLETED, "COMPLETED": Events.COMPLETED}
_SUFFIXES = IMAGE_EXTENSIONS  # longest first: ".nii.gz" before ".gz"


def case_items(engine: Engine) -> list[dict]:
    """Per-case dicts of the current iteration: each batch item updated with the matching output item."""
    batch, output = engine.state.batch, engine.state.output
    batch = batch if isinstance(batch, list) else ([] if batch is None else decollate_batch(batch, detach=True))
    output = output if isinstance(output, list) else decollate_batch(output, detach=True)
    items = []
    for i, out in enumerate(output):
        if not isinstance(out, Mapping):
            raise ValueError(f"engine.state.output items must be dicts, got {type(out).__name__}.")
        base = batch[i] if i < len(batch) and isinstance(batch[i], Mapping) else {}
        items.append({**base, **out})
    return items


def case_name(item: Mapping, case_key: str | None, name_keys: Sequence[str]) -> str | None:
    """Name of a case: ``item[case_key]`` if present, else the file name (no extension) of the first
    ``name_keys`` entry with ``filename_or_obj`` in its MetaTensor ``.meta`` or ``<key>_meta_dict``."""
    if case_key and item.get(case_key) is not None:
        value = item[case_key]
        value = value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value
        # MONAI's datalist loader turns a subject name that is also a dataset folder into a path
        return os.path.basename(os.path.normpath(str(value)))
    for key in name_keys:
        meta = getattr(item.get(key), "meta", None) or item.get(f"{key}_meta_dict")
        name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
        if isinstance(name, (list, tuple)):
            name = name[0] if name else None
        if name:
            base = os.path.basename(os.path.normpath(str(name)))
            for suffix in _SUFFIXES:
                if base.lower().endswith(suffix):
                    return base[: -len(suffix)]
            return base
    return None


def _tensor(value: Any) -> torch.Tensor:
    value = value.as_tensor() if hasattr(value, "as_tensor") else value
    return torch.as_tensor(value).detach().cpu()


class _CaseHandler:
    """Shared plumbing: event names, per-case dicts, unique case names."""

    def __init__(self, pred_key, label_key, case_key, item_transform, write_event) -> None:
        if write_event not in _EVENTS:
            raise ValueError(f"write_event must be one of {list(_EVENTS)}, got {write_event!r}.")
        if not pred_key or not label_key:
            raise ValueError(f"pred_key and label_key must be non-empty, got {pred_key!r}, {label_key!r}.")
        if item_transform is not None and not callable(item_transform):
            raise ValueError("item_transform must be callable or None.")
        self.pred_key, self.label_key, self.case_key = pred_key, label_key, case_key
        self.item_transform, self.write_event = item_transform, write_event
        self._names: set[str] = set()

    def attach(self, engine: Engine) -> None:
        """Reset at each epoch start, collect after each iteration, write at ``write_event``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(_EVENTS[self.write_event], self.write)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the cases of the previous run."""
        self._names = set()

    def _cases(self, engine: Engine):
        for item in case_items(engine):
            item = dict(self.item_transform(item)) if self.item_transform is not None else item
            for key in (self.pred_key, self.label_key):
                if item.get(key) is None:
                    raise ValueError(f"key {key!r} not found in the engine's output or batch (keys: {sorted(item)}).")
            name = case_name(item, self.case_key, (self.label_key, self.pred_key)) or f"case_{len(self._names):04d}"
            unique, n = name, 2
            while unique in self._names:
                unique, n = f"{name}_{n}", n + 1
            if unique != name:
                warnings.warn(f"case name {name!r} is repeated; this case is called {unique!r}.", stacklevel=2)
            self._names.add(unique)
            yield unique, item

    def write(self, engine: Engine) -> None:
        """Write the outputs of the run (subclasses)."""
        raise NotImplementedError
