"""Networks of the published synthesis methods, built from MONAI blocks and layer factories."""

from __future__ import annotations

from .amcgan import AMCGANGenerator, ResnetBlock, ResnetEncoderDecoder
from .amcgan_blocks import FeatureAttention, MultiScaleFeatureCapture
from .hrfcn import BRANCH_NAMES, HRFCN, FCNModule
from .patchgan import PatchDiscriminator

__all__ = [
    "AMCGANGenerator",
    "FeatureAttention",
    "MultiScaleFeatureCapture",
    "ResnetBlock",
    "ResnetEncoderDecoder",
    "PatchDiscriminator",
    "BRANCH_NAMES",
    "HRFCN",
    "FCNModule",
]
