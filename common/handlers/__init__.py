"""Ignite handlers: per-case evaluation CSV/summary and figure grids."""

from __future__ import annotations

from .cases import case_items, case_name
from .evaluation import RegressionEvaluationSaver
from .figure_grid import FigureGridSaver

__all__ = ["FigureGridSaver", "RegressionEvaluationSaver", "case_items", "case_name"]
