"""Ignite handler writing ``figure_grid.png`` of the first cases (inputs | synthesized | target | error).

Part of the evaluation outputs of every bundle (bundle contract, section 5); cases are read and named as by
:class:`~common.handlers.evaluation.RegressionEvaluationSaver` (:mod:`common.handlers.cases`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ignite.engine import Engine

from common.handlers.cases import _CaseHandler, _tensor
from common.utils.dist import is_rank_zero
from common.utils.figures import middle_slice, save_figure_grid

__all__ = ["FigureGridSaver"]


class FigureGridSaver(_CaseHandler):
    """Collect the middle slices of the first ``num_cases`` cases and write ``<output_dir>/<filename>``.

    Columns: every channel of every ``input_keys`` entry, synthesized, target, absolute error (see
    :func:`~common.utils.figures.save_figure_grid`); rows are named as in :class:`RegressionEvaluationSaver`.

    Args:
        output_dir: output folder.
        input_keys: keys of the network inputs to show (one column per channel).
        num_cases: number of rows.
        slice_axis: spatial axis of the middle slice of 3D cases.
        filename: PNG file name.
        pred_key, label_key, case_key, item_transform, write_event: as in :class:`RegressionEvaluationSaver`.
        figure_kwargs: further options of ``save_figure_grid`` (``percentiles``, ``zoom``, ``rot90``, ...).
    """

    def __init__(
        self,
        output_dir: str,
        input_keys: Sequence[str] = ("image",),
        num_cases: int = 4,
        slice_axis: int = 2,
        filename: str = "figure_grid.png",
        pred_key: str = "pred",
        label_key: str = "label",
        case_key: str | None = "subject",
        item_transform: Callable | None = None,
        write_event: str = "EPOCH_COMPLETED",
        figure_kwargs: Mapping | None = None,
    ) -> None:
        super().__init__(pred_key, label_key, case_key, item_transform, write_event)
        if isinstance(input_keys, str) or not input_keys:
            raise ValueError(f"input_keys must be a non-empty sequence of keys, got {input_keys!r}.")
        if num_cases < 1:
            raise ValueError(f"num_cases must be >= 1, got {num_cases}.")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis!r}.")
        if not output_dir or not filename.lower().endswith(".png"):
            raise ValueError(
                f"output_dir must be non-empty and filename end in .png, got {output_dir!r}, {filename!r}."
            )
        self.output_dir, self.input_keys, self.num_cases = str(output_dir), list(input_keys), num_cases
        self.slice_axis, self.filename, self.figure_kwargs = slice_axis, filename, dict(figure_kwargs or {})
        self.rows: list[dict[str, Any]] = []

    def reset(self, engine: Engine | None = None) -> None:
        super().reset(engine)
        self.rows = []

    def __call__(self, engine: Engine) -> None:
        """Keep the middle slices of the cases of this iteration until ``num_cases`` are held."""
        if len(self.rows) >= self.num_cases:
            return
        for name, item in self._cases(engine):
            if len(self.rows) >= self.num_cases:
                break
            inputs = {}
            for key in self.input_keys:
                if item.get(key) is None:
                    raise ValueError(f"input key {key!r} not found in the engine's batch or output.")
                image = _tensor(item[key]).double()
                for c in range(image.shape[0]):
                    inputs[key if image.shape[0] == 1 else f"{key}[{c}]"] = middle_slice(image[c], self.slice_axis)
            pair = []
            for key in (self.pred_key, self.label_key):
                image = _tensor(item[key]).double()
                if image.shape[0] != 1:
                    raise ValueError(f"{key!r} must have one channel for the figure grid, got {tuple(image.shape)}.")
                pair.append(middle_slice(image[0], self.slice_axis))
            self.rows.append({"name": name, "inputs": inputs, "pred": pair[0], "target": pair[1]})

    def write(self, engine: Engine) -> None:
        """Write the grid of the collected cases (nothing if none were seen; rank 0 only when distributed)."""
        if self.rows and is_rank_zero():
            path = os.path.join(self.output_dir, self.filename)
            save_figure_grid(self.rows, path, slice_axis=self.slice_axis, **self.figure_kwargs)
