"""Transforms MONAI lacks: invertible reference-based intensity normalisation, case naming, missing modalities."""

from __future__ import annotations

from .degradation import (
    BicubicDegraded,
    CropToMultipled,
    InterpolateResolutiond,
    KSpaceTruncated,
    SuperResolutionGeometryd,
    resize_in_plane,
    scaled_affine,
)
from .intensity import InverseReferenceIntensityScaled, ReferenceIntensityScaled
from .meta import CASE_NAME, SetCaseNamed, case_name_formatter
from .modality import ModalityIntensityScaled, SynthesizeModalityd, ZeroFillModalityd, present_keys
from .spatial import slice_divisor

__all__ = [
    "ReferenceIntensityScaled",
    "InverseReferenceIntensityScaled",
    "SetCaseNamed",
    "case_name_formatter",
    "CASE_NAME",
    "ModalityIntensityScaled",
    "SynthesizeModalityd",
    "ZeroFillModalityd",
    "present_keys",
    "slice_divisor",
    "scaled_affine",
    "resize_in_plane",
    "BicubicDegraded",
    "KSpaceTruncated",
    "InterpolateResolutiond",
    "CropToMultipled",
    "SuperResolutionGeometryd",
]
