"""Ignite engines: the paired-GAN trainer and engine helpers."""

from __future__ import annotations

from .paired_gan import DiscriminatorSpec, NonFiniteLossError, PairedGanTrainer
from .utils import EpochSeedHandler, latest_checkpoint, loss_terms

__all__ = ["DiscriminatorSpec", "NonFiniteLossError", "PairedGanTrainer", "EpochSeedHandler", "latest_checkpoint", "loss_terms"]
