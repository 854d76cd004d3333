"""Networks of the published synthesis methods, built from MONAI blocks and layer factories."""

from __future__ import annotations

from .amcgan import AMCGANGenerator, ResnetBlock, ResnetEncoderDecoder
from .amcgan_blocks import FeatureAttention, MultiScaleFeatureCapture
from .attention import FUSION_MODES, AttentionFusion, ChannelAttention, SelfAttention
from .context_gan import (
    AutoContextCascade,
    CentreCropResidual,
    ContextFCNGenerator,
    stage_checkpoints,
)
from .dual_discriminator import ConvNormPoolStage, ConvPoolCritic, LocalDiscriminator
from .fagan import SUPPORTED_SCALES, FAGANGenerator, GlobalFeatureFusion, SRGANDiscriminator, spectral_normalize
from .hrfcn import BRANCH_NAMES, HRFCN, FCNModule
from .lffb import LocalFusionFeatureBlock, SRResidualBlock
from .patchgan import PatchDiscriminator
from .synthesis_fcn import SynthesisFCN
from .vgg import VGG19_LAYERS, VGG19Features, load_torchvision_vgg19

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
    "ChannelAttention",
    "SelfAttention",
    "AttentionFusion",
    "FUSION_MODES",
    "CentreCropResidual",
    "ContextFCNGenerator",
    "AutoContextCascade",
    "stage_checkpoints",
    "ConvNormPoolStage",
    "ConvPoolCritic",
    "LocalDiscriminator",
    "SUPPORTED_SCALES",
    "GlobalFeatureFusion",
    "FAGANGenerator",
    "SRGANDiscriminator",
    "spectral_normalize",
    "LocalFusionFeatureBlock",
    "SRResidualBlock",
    "SynthesisFCN",
    "VGG19_LAYERS",
    "VGG19Features",
    "load_torchvision_vgg19",
]
