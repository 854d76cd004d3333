"""The canonical checkpoint dict of the collection: every object a training run needs to resume exactly.

Keys (``docs/bundle_conventions.md``): ``model`` (the generator / the network), ``optimizer``, ``lr_scheduler``,
``d_<name>``, ``d_<name>_optimizer``, ``d_<name>_lr_scheduler``, ``trainer`` (epoch and iteration counters),
``best_model`` (the best-metric saver's ranking, so ``save_key_metric`` keeps comparing against the best
value of the interrupted run instead of restarting from scratch). Schedulers and gradient scalers appear
only when they exist. Pass the dict to both ``CheckpointSaver`` and ``CheckpointLoader``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["best_model_state", "canonical_save_dict"]


def best_model_state(best_model_saver: Any) -> Any:
    """The stateful best-metric checkpoint of a ``monai.handlers.CheckpointSaver`` (``save_key_metric=True``).

    Raises:
        ValueError: naming ``best_model_saver`` when it is not a CheckpointSaver saving the key metric.
    """
    from monai.handlers import CheckpointSaver

    if not isinstance(best_model_saver, CheckpointSaver):
        raise ValueError(
            f"best_model_saver must be a monai.handlers.CheckpointSaver, got {type(best_model_saver).__name__}."
        )
    state = best_model_saver._key_metric_checkpoint
    if state is None:
        raise ValueError(
            "best_model_saver must save the key metric (save_key_metric=True) for its ranking to be resumed."
        )
    return state


def canonical_save_dict(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer: Any,
    lr_scheduler: Any | None = None,
    discriminators: Mapping[str, tuple[torch.nn.Module, torch.optim.Optimizer, Any | None]] | None = None,
    best_model_saver: Any | None = None,
    scalers: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the canonical save dict.

    Args:
        model: the generator (or the only network).
        optimizer: its optimizer.
        trainer: the Ignite engine (its state: epoch, iteration, max_epochs).
        lr_scheduler: the network's scheduler, if any.
        discriminators: ``{name: (network, optimizer, scheduler or None)}``.
        best_model_saver: the validation ``CheckpointSaver`` with ``save_key_metric=True``, if any.
        scalers: ``{"generator" or discriminator name: torch.amp.GradScaler}``; saved as ``grad_scaler`` and
            ``d_<name>_grad_scaler`` (CUDA float16 training only).
    """
    out: dict[str, Any] = {"model": model, "optimizer": optimizer}
    if lr_scheduler is not None:
        out["lr_scheduler"] = lr_scheduler
    for name, (network, d_optimizer, d_scheduler) in dict(discriminators or {}).items():
        out[f"d_{name}"] = network
        out[f"d_{name}_optimizer"] = d_optimizer
        if d_scheduler is not None:
            out[f"d_{name}_lr_scheduler"] = d_scheduler
    for name, scaler in dict(scalers or {}).items():
        out["grad_scaler" if name == "generator" else f"d_{name}_grad_scaler"] = scaler
    out["trainer"] = trainer
    if best_model_saver is not None:
        out["best_model"] = best_model_state(best_model_saver)
    return out
