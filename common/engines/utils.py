"""Engine helpers: logging transforms, checkpoint discovery and per-epoch seeding for exact resumption."""

from __future__ import annotations

import glob
import os
import random
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["loss_terms", "latest_checkpoint", "EpochSeedHandler"]


def loss_terms(output: Any) -> dict[str, float]:
    """Output transform giving every scalar loss entry of a trainer's output (``loss`` and each term).

    Works on batched output dicts and on MONAI's decollated lists of per-item dicts, where scalars are
    replicated per item. Use it as the ``output_transform`` of ``StatsHandler`` / ``TensorBoardStatsHandler``.
    """
    item = output[0] if isinstance(output, (list, tuple)) else output
    terms: dict[str, float] = {}
    for key, value in item.items():
        if key == "loss" or key.startswith(("g_", "d_")):
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                terms[key] = float(value.item())
            elif isinstance(value, (int, float)):
                terms[key] = float(value)
    return terms


_EPOCH_RE = re.compile(r"epoch=(\d+)")


def latest_checkpoint(ckpt_dir: str, pattern: str = "checkpoint_epoch=*.pt") -> str:
    """Path of the newest full-state checkpoint in ``ckpt_dir`` (highest epoch number).

    Raises:
        FileNotFoundError: naming the folder, when there is nothing to resume from.
    """
    paths = glob.glob(os.path.join(ckpt_dir, pattern))
    if not paths:
        raise FileNotFoundError(
            f"--resume was asked but no checkpoint matching '{pattern}' is in '{ckpt_dir}'; "
            "train without --resume first."
        )

    def epoch(path: str) -> int:
        match = _EPOCH_RE.search(os.path.basename(path))
        return int(match.group(1)) if match else -1

    return max(paths, key=lambda p: (epoch(p), os.path.getmtime(p)))


class EpochSeedHandler:
    """Seed every random generator from ``(seed, epoch)`` when an epoch starts.

    Shuffling, random crops, dropout and random transforms of epoch ``e`` then depend only on ``seed`` and
    ``e``, so a run resumed from an epoch checkpoint continues exactly as the uninterrupted run would
    (torch, numpy and random are seeded; the datasets' own random transforms are re-seeded too). cuDNN's
    non-deterministic kernels are left alone, so GPU runs are repeatable only up to them.

    Args:
        seed: base seed.
        datasets: datasets (or data loaders) whose MONAI randomizable transforms are re-seeded each epoch.
    """

    def __init__(self, seed: int = 0, datasets: Sequence[Any] | None = None) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}.")
        self.seed = int(seed)
        self.datasets = list(datasets or [])

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Any) -> None:
        from monai.data.utils import set_rnd

        epoch_seed = (self.seed * 100_003 + int(engine.state.epoch)) % (2**32)
        # seed the generators only: cuDNN's deterministic mode (set_determinism) would slow GPU training
        random.seed(epoch_seed)
        np.random.seed(epoch_seed)
        torch.manual_seed(epoch_seed)
        for ds in self.datasets:
            set_rnd(getattr(ds, "dataset", ds), epoch_seed)
