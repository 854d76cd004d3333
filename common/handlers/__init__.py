"""Ignite handlers: per-case evaluation CSV/summary and figure grids."""

from __future__ import annotations

from .cases import case_items, case_name
from .confidence import ConfidenceMapSaver, LocalConfidence
from .evaluation import RegressionEvaluationSaver
from .figure_grid import FigureGridSaver
from .super_resolution import BaselineEvaluationSaver, FeatureFIDHandler

__all__ = [
    "FigureGridSaver",
    "RegressionEvaluationSaver",
    "case_items",
    "case_name",
    "LocalConfidence",
    "ConfidenceMapSaver",
    "BaselineEvaluationSaver",
    "FeatureFIDHandler",
]
