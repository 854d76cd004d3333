"""Transforms MONAI lacks: invertible reference-based intensity normalisation, case naming."""

from __future__ import annotations

from .intensity import InverseReferenceIntensityScaled, ReferenceIntensityScaled
from .meta import CASE_NAME, SetCaseNamed, case_name_formatter

__all__ = ["ReferenceIntensityScaled", "InverseReferenceIntensityScaled", "SetCaseNamed", "case_name_formatter", "CASE_NAME"]
