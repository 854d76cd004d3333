"""Ignite engines: the paired-GAN trainer, non-finite guards, the canonical checkpoint dict and engine helpers."""

from __future__ import annotations

from .checkpoint import best_model_state, canonical_save_dict
from .guard import NonFiniteGuard, NonFiniteLossError, NonFiniteStateError, check_finite_loss, check_finite_state
from .lock import TrainingLock, TrainingLockError
from .lr_logging import LearningRateLogger, trainer_optimizers
from .paired_gan import DiscriminatorSpec, PairedGanTrainer
from .schedules import LinearDecay
from .utils import EpochSeedHandler, latest_checkpoint, loss_terms

__all__ = [
    "DiscriminatorSpec",
    "PairedGanTrainer",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "NonFiniteStateError",
    "check_finite_loss",
    "check_finite_state",
    "best_model_state",
    "canonical_save_dict",
    "TrainingLock",
    "TrainingLockError",
    "LearningRateLogger",
    "trainer_optimizers",
    "LinearDecay",
    "EpochSeedHandler",
    "latest_checkpoint",
    "loss_terms",
]
