"""Ignite handlers: per-case evaluation CSV/summary and figure grids."""

from __future__ import annotations

from .evaluation import FigureGridSaver, RegressionEvaluationSaver, case_items, case_name

__all__ = ["FigureGridSaver", "RegressionEvaluationSaver", "case_items", "case_name"]
