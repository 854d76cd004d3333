"""The generator-loss protocol shared by every trainer of the collection.

A generator loss maps ``(pred, target, fake_outputs, batch)`` to a dict of **named, already weighted**
terms; the trainer (:class:`common.engines.PairedGanTrainer`) checks each term for NaN/Inf, sums them,
back-propagates the sum and logs every term under its name (``g_<name>``).

- ``pred``: the synthetic image ``G(x)``, shape (B, C, *spatial);
- ``target``: the real target ``y``, same shape;
- ``fake_outputs``: ``{name: D_name(G(x))}``, every discriminator's output on the synthetic image
  (gradients flow to G; empty for a non-adversarial bundle);
- ``batch``: the batch dict as the data loader gave it (extra keys such as a reference image or a mask).

Terms that only need ``(pred, target)`` are plain loss modules (``torch.nn.L1Loss``, ``monai.losses.SSIMLoss``).
Terms that need more (a reference image from the batch, a discriminator's confidence map) subclass
:class:`GeneratorTerm` and receive ``fake_outputs`` and ``batch`` as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["GeneratorTerm", "GeneratorLoss", "call_term"]


class GeneratorTerm(_Loss):
    """A generator loss term that needs the batch or the discriminators' outputs, not only ``(pred, target)``.

    Subclasses implement ``forward(pred, target, *, fake_outputs, batch) -> Tensor`` (reduced as their
    ``reduction`` says). The owning :class:`GeneratorLoss` applies the weight.
    """

    def forward(  # type: ignore[override]
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        *,
        fake_outputs: Mapping[str, torch.Tensor],
        batch: Mapping | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def batch_tensor(batch: Mapping | None, key: str, like: torch.Tensor, what: str) -> torch.Tensor:
        """``batch[key]`` as a tensor on ``like``'s device; a ``ValueError`` naming ``what`` and the batch's keys."""
        if batch is None or key not in batch:
            available = sorted(map(str, batch)) if batch is not None else []
            raise ValueError(f"{what} reads {key!r} from the batch, but the batch has only {available}.")
        return torch.as_tensor(batch[key]).to(device=like.device)


def call_term(
    term: torch.nn.Module,
    pred: torch.Tensor,
    target: torch.Tensor,
    fake_outputs: Mapping[str, torch.Tensor],
    batch: Mapping | None,
) -> torch.Tensor:
    """Evaluate one term: a :class:`GeneratorTerm` gets the context, any other loss module ``(pred, target)``."""
    if isinstance(term, GeneratorTerm):
        return term(pred, target, fake_outputs=fake_outputs, batch=batch)
    return term(pred, target)


class GeneratorLoss(_Loss):
    """Base of every generator objective: ``forward`` returns ``{term name: weighted term}``.

    The trainer sums the values; the names are what TensorBoard, the console and MLflow show, so each
    starts with ``g_``.
    """

    def forward(  # type: ignore[override]
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        fake_outputs: Mapping[str, torch.Tensor],
        batch: Mapping | None = None,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError
