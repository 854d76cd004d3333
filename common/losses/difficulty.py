"""Difficulty-region-aware pixel loss of the dual-discriminator synthesis GAN, and its plain counterpart.

Reference:
    Q. Xiao, D. Nie, "Fine-grained Medical Image Synthesis with Dual-Attention Adversarial Learning" (after
    Nie et al., arXiv:1907.03297), Sec. 2.1 Eq. (1), Sec. 2.3 Eq. (6) and (7).

- Eq. (1): ``L_G = ||Y - G(X)||^p`` with ``p`` in {1, 2} (:class:`PixelPowerLoss`).
- Eq. (6): ``L_AttG = F ⊙ ||Y - G(X)||^p`` with ``F = (1 - M)^beta`` and ``M = sigmoid(D2(G(X)))`` the local
  discriminator's confidence map (:class:`DifficultyAwarePixelLoss`).
- Eq. (7): ``L_G = L_AttG + lambda1 L_G_ADV1 + lambda2 L_G_ADV2``, assembled by
  :func:`dual_discriminator_generator_loss` from :class:`~common.losses.adversarial.PairedGeneratorLoss`.

Choices (the paper is silent; the authors' segmentation code differs): the attention multiplies the error
**per voxel** before averaging (confidentGAN multiplies an already averaged loss) and ``M`` is **detached**
(constant for G's update: G is not rewarded for lowering D2's confidence through the weights; the
adversarial term ``L_ADV2`` is the only path from D2 into G).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.modules.loss import _Loss

from monai.utils import LossReduction

from common.losses.adversarial import PairedGeneratorLoss
from common.losses.protocol import GeneratorTerm
from common.losses.utils import apply_reduction

__all__ = ["PixelPowerLoss", "DifficultyAwarePixelLoss", "difficulty_attention", "dual_discriminator_generator_loss"]


def _check_p(p: float) -> float:
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2 (Eq. 1), got {p!r}.")
    return float(p)


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {list(pred.shape)} and {list(target.shape)}.")


def difficulty_attention(confidence: torch.Tensor, beta: float) -> torch.Tensor:
    """Voxel-level attention ``F = (1 - M)^beta`` of Eq. (6), for a confidence map ``M`` in [0, 1].

    ``beta = 0`` gives ``F = 1`` everywhere (``0^0 = 1``), i.e. the plain pixel loss.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}.")
    return (1.0 - confidence.clamp(0.0, 1.0)) ** beta


class PixelPowerLoss(_Loss):
    """Eq. (1): ``mean |Y - G(X)|^p``, ``p = 1`` (L1) or ``2`` (L2), per sample then reduced.

    Args:
        p: exponent, 1 or 2.
        reduction: ``"mean"`` | ``"sum"`` over the batch of per-sample means, or ``"none"`` (shape (B,)).

    Shapes:
        pred, target (B, C, *S) -> scalar, or (B,) for ``"none"``.
    """

    def __init__(self, p: float = 1, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        self.p = _check_p(p)
        super().__init__(reduction=LossReduction(reduction).value)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        _check_pair(pred, target)
        value = (target - pred).abs() ** self.p
        return apply_reduction(value.flatten(1).mean(1), self.reduction)


class DifficultyAwarePixelLoss(GeneratorTerm):
    """Eq. (6): ``L_AttG = mean_v((1 - M(v))^beta · |Y(v) - G(X)(v)|^p)`` with ``M`` from the local discriminator.

    ``M`` is read from ``fake_outputs[discriminator]``, the local discriminator's output on ``G(X)`` that the
    trainer passes to the generator loss. That output is a map of **logits** (what the BCE criterion takes), so
    ``M = sigmoid(logits)`` here (``from_logits=True``); pass ``from_logits=False`` for a network that already
    returns probabilities. ``M`` is detached: no gradient flows from this term into D2's output (and D2 is
    frozen during G's update anyway). The weighting is per voxel, then the mean over voxels (and channels) of
    each sample, then ``reduction`` over the batch. A one-channel map is broadcast over the target's channels.

    Args:
        discriminator: name of the local discriminator in the trainer's ``discriminators`` (``"local"``).
        beta: attention exponent (the authors' code uses 2); 0 gives the plain pixel loss.
        p: pixel exponent, 1 or 2.
        from_logits: apply the sigmoid to the discriminator output.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-sample values, shape (B,)).

    Shapes:
        pred, target (B, C, *S); ``fake_outputs[discriminator]`` (B, 1 or C, *S) -> scalar or (B,).
    """

    def __init__(
        self,
        discriminator: str = "local",
        beta: float = 2.0,
        p: float = 1,
        from_logits: bool = True,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        if not discriminator or not isinstance(discriminator, str):
            raise ValueError(f"discriminator must be a non-empty name, got {discriminator!r}.")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}.")
        self.p = _check_p(p)
        super().__init__(reduction=LossReduction(reduction).value)
        self.discriminator = discriminator
        self.beta = float(beta)
        self.from_logits = bool(from_logits)

    def confidence(self, fake_outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The detached confidence map ``M`` in [0, 1] from the local discriminator's output."""
        if self.discriminator not in fake_outputs:
            raise ValueError(
                f"the difficulty-aware loss needs the output of discriminator {self.discriminator!r}, but the trainer "
                f"has {sorted(fake_outputs)}; train with that discriminator or use the plain pixel loss."
            )
        out = fake_outputs[self.discriminator].detach()
        return torch.sigmoid(out) if self.from_logits else out

    def forward(  # type: ignore[override]
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        *,
        fake_outputs: Mapping[str, torch.Tensor],
        batch: Mapping | None = None,
    ) -> torch.Tensor:
        _check_pair(pred, target)
        confidence = self.confidence(fake_outputs).to(pred.dtype)
        if (
            confidence.dim() != pred.dim()
            or confidence.shape[0] != pred.shape[0]
            or confidence.shape[2:] != pred.shape[2:]
            or confidence.shape[1] not in (1, pred.shape[1])
        ):
            raise ValueError(
                f"the confidence map of {self.discriminator!r} must have shape (B, 1 or C, *S) = {list(pred.shape)}, "
                f"got {list(confidence.shape)}: the local discriminator must return a dense map on the input grid."
            )
        weights = difficulty_attention(confidence, self.beta)
        value = weights * (target - pred).abs() ** self.p
        return apply_reduction(value.flatten(1).mean(1), self.reduction)


def dual_discriminator_generator_loss(
    lambda1: float = 0.05,
    lambda2: float = 0.05,
    beta: float = 2.0,
    p: float = 1,
    attention: bool = True,
    global_name: str = "global",
    local_name: str = "local",
    global_mode: str = "wasserstein",
    local_mode: str = "bce",
) -> PairedGeneratorLoss:
    """Eq. (7): ``L_G = L_AttG + lambda1 L_G_ADV1 + lambda2 L_G_ADV2`` as a :class:`PairedGeneratorLoss`.

    The pixel term is logged as ``g_pixel``: :class:`DifficultyAwarePixelLoss` when ``attention`` else
    :class:`PixelPowerLoss`. The adversarial terms (``g_adv_<name>``) exist for the discriminators the trainer
    has: ``-D1(G(x))`` (Wasserstein) for ``global_name`` and ``BCE(D2(G(x)), 1)`` for ``local_name``, so a
    trainer with fewer discriminators (the sGAN and U-Net-only ablations) drops their terms.

    Args:
        lambda1: weight of the global term (the authors' code uses 0.05 for its adversarial terms).
        lambda2: weight of the local term.
        beta: attention exponent of Eq. (6).
        p: pixel exponent, 1 or 2.
        attention: use the difficulty-aware pixel loss (needs the local discriminator).
        global_name, local_name: names of the discriminators in the trainer.
        global_mode, local_mode: their adversarial criteria (must match their ``DiscriminatorLoss`` modes).
    """
    if lambda1 < 0 or lambda2 < 0:
        raise ValueError(f"lambda1 and lambda2 must be >= 0, got {lambda1}, {lambda2}.")
    if global_name == local_name:
        raise ValueError(f"global_name and local_name must differ, got {global_name!r} twice.")
    pixel = DifficultyAwarePixelLoss(local_name, beta=beta, p=p) if attention else PixelPowerLoss(p)
    return PairedGeneratorLoss(
        pixel_losses={"pixel": pixel},
        pixel_weights={"pixel": 1.0},
        adversarial_weights={global_name: lambda1, local_name: lambda2},
        adversarial_modes={global_name: global_mode, local_name: local_mode},
    )
