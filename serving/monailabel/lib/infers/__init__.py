"""MONAI Label infer tasks of the synthesis app."""

from __future__ import annotations

from .synthesis import SynthesisInferTask

__all__ = ["SynthesisInferTask"]
