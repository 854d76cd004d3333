"""Losses: adversarial criteria and the paired generator objective, and the methods' own losses."""

from __future__ import annotations

from .adversarial import ADVERSARIAL_MODES, AdversarialLoss, DiscriminatorLoss, GradientPenalty, PairedGeneratorLoss
from .local import HRFCNLoss, LocalLoss
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
]
