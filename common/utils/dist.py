"""Distributed-training helpers: which process logs, checkpoints and writes figures under ``torchrun``."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["is_rank_zero", "rank", "world_size"]


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank; 0 when ``torch.distributed`` is not initialised (a single-process run)."""
    return int(dist.get_rank()) if _initialized() else 0


def world_size() -> int:
    """Number of processes in the default group; 1 when ``torch.distributed`` is not initialised."""
    return int(dist.get_world_size()) if _initialized() else 1


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 (always true when ``torch.distributed`` is not initialised)."""
    return rank() == 0
