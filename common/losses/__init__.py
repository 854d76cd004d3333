"""Losses: adversarial criteria and the paired generator objective, and the methods' own losses."""

from __future__ import annotations

from .adversarial import ADVERSARIAL_MODES, AdversarialLoss, DiscriminatorLoss, GradientPenalty, PairedGeneratorLoss
from .difficulty import (
    DifficultyAwarePixelLoss,
    PixelPowerLoss,
    difficulty_attention,
    dual_discriminator_generator_loss,
)
from .gradient_difference import GradientDifferenceLoss, finite_differences
from .local import HRFCNLoss, LocalLoss
from .perceptual import PERCEPTUAL_NETWORKS, PerceptualLoss
from .protocol import GeneratorLoss, GeneratorTerm, call_term

__all__ = [
    "ADVERSARIAL_MODES",
    "AdversarialLoss",
    "DiscriminatorLoss",
    "GradientPenalty",
    "PairedGeneratorLoss",
    "HRFCNLoss",
    "LocalLoss",
    "GeneratorLoss",
    "GeneratorTerm",
    "call_term",
    "PixelPowerLoss",
    "DifficultyAwarePixelLoss",
    "difficulty_attention",
    "dual_discriminator_generator_loss",
    "GradientDifferenceLoss",
    "finite_differences",
    "PERCEPTUAL_NETWORKS",
    "PerceptualLoss",
]
