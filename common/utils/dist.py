"""Distributed-training helpers: which process logs, checkpoints and writes figures under ``torchrun``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.distributed as dist

__all__ = ["is_rank_zero", "rank", "world_size", "rank_zero_handlers"]


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


def rank_zero_handlers(handlers: Sequence[Any] | None) -> list[Any]:
    """The given handlers on rank 0, an empty list on every other rank.

    Logging handlers (``TensorBoardStatsHandler``, ``ProgressBar``, ``StatsHandler``, image and figure
    writers, checkpoint savers) must exist once per training, not once per ``torchrun`` process. In a bundle
    config: ``"handlers": "$common.utils.dist.rank_zero_handlers([...])"`` or, for a list defined elsewhere,
    ``"$common.utils.dist.rank_zero_handlers(@train#logging_handlers)"``.

    Args:
        handlers: handlers (anything with ``attach(engine)``); ``None`` is treated as empty.

    Returns:
        A new list with the handlers on rank 0, ``[]`` on other ranks.
    """
    return list(handlers or []) if is_rank_zero() else []
