"""Adversarial criteria for paired image-to-image GANs.

The paired-GAN engine (:class:`common.engines.PairedGanTrainer`) trains one generator against any number of
discriminators. Each discriminator owns a :class:`DiscriminatorLoss`; the generator owns one loss object
(for example :class:`PairedGeneratorLoss`) that receives the discriminators' outputs on the synthetic image.

References:
    Goodfellow et al., "Generative adversarial nets", NeurIPS 2014 (``"bce"``).
    Mao et al., "Least squares generative adversarial networks", ICCV 2017 (``"lsgan"``).
    Lim and Ye, "Geometric GAN", arXiv:1705.02894, 2017 (``"hinge"``).
    Arjovsky et al., "Wasserstein GAN", ICML 2017 and Gulrajani et al., "Improved training of Wasserstein
    GANs", NeurIPS 2017 (``"wasserstein"`` and :class:`GradientPenalty`).
    Isola et al., "Image-to-image translation with conditional adversarial networks", CVPR 2017 (pix2pix).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from monai.utils import LossReduction

from common.losses.utils import apply_reduction

__all__ = ["ADVERSARIAL_MODES", "AdversarialLoss", "DiscriminatorLoss", "GradientPenalty", "PairedGeneratorLoss"]

ADVERSARIAL_MODES = ("bce", "lsgan", "hinge", "wasserstein")


class AdversarialLoss(_Loss):
    """Adversarial criterion on discriminator logits ``D(.)`` of any shape (a scalar per image or a patch map).

    For a target label ``t`` (real or synthetic) and a role (discriminator or generator):

    - ``"bce"``: ``-[t log sigmoid(D) + (1 - t) log(1 - sigmoid(D))]`` (vanilla GAN, logits in, numerically stable);
    - ``"lsgan"``: ``(D - t)^2``;
    - ``"hinge"``: discriminator ``max(0, 1 - D)`` on real and ``max(0, 1 + D)`` on synthetic; generator ``-D``;
    - ``"wasserstein"``: discriminator ``-D`` on real and ``D`` on synthetic; generator ``-D``.

    Args:
        mode: one of ``"bce"``, ``"lsgan"``, ``"hinge"``, ``"wasserstein"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """

    def __init__(self, mode: str = "bce", reduction: LossReduction | str = LossReduction.MEAN) -> None:
        if mode not in ADVERSARIAL_MODES:
            raise ValueError(f"mode must be one of {ADVERSARIAL_MODES}, got {mode!r}.")
        super().__init__(reduction=LossReduction(reduction).value)
        self.mode = mode

    def forward(self, logits: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        """
        Args:
            logits: discriminator output, shape (B, ...).
            target_is_real: whether the label is "real".
            for_discriminator: True when the discriminator is being updated; hinge and Wasserstein use a
                different generator criterion (``-D``), which needs ``target_is_real=True``.
        """
        if self.mode in ("hinge", "wasserstein") and not for_discriminator:
            if not target_is_real:
                raise ValueError("the generator's hinge/Wasserstein criterion takes target_is_real=True.")
            return apply_reduction(-logits, self.reduction)
        if self.mode == "bce":
            target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
            value = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        elif self.mode == "lsgan":
            value = (logits - (1.0 if target_is_real else 0.0)) ** 2
        elif self.mode == "hinge":
            value = F.relu(1.0 - logits) if target_is_real else F.relu(1.0 + logits)
        else:
            value = -logits if target_is_real else logits
        return apply_reduction(value, self.reduction)


class GradientPenalty(_Loss):
    """WGAN-GP gradient penalty (Gulrajani et al. 2017, Eq. 3).

    ``GP = E_{x_hat}[(||grad_{x_hat} D(x_hat)||_2 - 1)^2]`` with ``x_hat = e * x_real + (1 - e) * x_fake``,
    ``e ~ U[0, 1]`` drawn per sample. The weight (``lambda_gp``, 10 in the paper) is applied by the owner.

    Args:
        reduction: ``"mean"`` (over the batch), ``"sum"`` or ``"none"`` (one value per sample).
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)

    def forward(  # type: ignore[override]
        self, critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            critic: the discriminator, mapping (B, C, *spatial) to (B, ...).
            real: real critic inputs, shape (B, C, *spatial).
            fake: synthetic critic inputs of the same shape (detached from the generator).
        """
        if real.shape != fake.shape:
            raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}.")
        eps = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device, dtype=real.dtype)
        x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
        out = critic(x_hat)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
        norm = grad.flatten(1).norm(2, dim=1)
        return apply_reduction((norm - 1.0) ** 2, self.reduction)


class DiscriminatorLoss(_Loss):
    """Loss of one discriminator: ``L_D = w * (l(D(real), real) + l(D(fake), fake)) + lambda_gp * GP``.

    ``w = 0.5`` is pix2pix's halving of the discriminator objective ("we divide the objective by 2 while
    optimizing D"); ``w = 1`` is the plain sum. ``lambda_gp > 0`` adds the WGAN-GP penalty, computed by the
    trainer through :meth:`penalty` because it needs the network.

    Args:
        mode: adversarial criterion, see :class:`AdversarialLoss`.
        real_fake_weight: ``w`` above.
        gradient_penalty_weight: ``lambda_gp`` (10 in WGAN-GP); 0 disables the penalty.
    """

    def __init__(self, mode: str = "bce", real_fake_weight: float = 0.5, gradient_penalty_weight: float = 0.0) -> None:
        if real_fake_weight <= 0:
            raise ValueError(f"real_fake_weight must be positive, got {real_fake_weight}.")
        if gradient_penalty_weight < 0:
            raise ValueError(f"gradient_penalty_weight must be >= 0, got {gradient_penalty_weight}.")
        super().__init__(reduction=LossReduction.MEAN.value)
        self.criterion = AdversarialLoss(mode)
        self.real_fake_weight = float(real_fake_weight)
        self.gradient_penalty_weight = float(gradient_penalty_weight)
        self.gradient_penalty = GradientPenalty()

    @property
    def mode(self) -> str:
        return self.criterion.mode

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``w * (l(D(real), real) + l(D(fake), fake))`` for logits of shape (B, ...)."""
        real = self.criterion(real_logits, target_is_real=True)
        fake = self.criterion(fake_logits, target_is_real=False)
        return self.real_fake_weight * (real + fake)

    def penalty(
        self, critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor | None:
        """``lambda_gp * GP`` on the critic inputs, or None when the penalty is off."""
        if self.gradient_penalty_weight == 0:
            return None
        return self.gradient_penalty_weight * self.gradient_penalty(critic, real, fake)


class PairedGeneratorLoss(_Loss):
    """Generator objective of a paired (conditional) GAN.

    ``L_G = lambda_pix * l_pix(G(x), y) + sum_k lambda_k * l_adv,k(D_k(G(x)), real)``

    pix2pix (Isola et al. 2017, Eq. 4) is ``l_pix = L1``, ``lambda_pix = 100``, one BCE discriminator with
    ``lambda = 1``.

    Args:
        pixel_loss: a loss module mapping (pred, target) to a scalar; None for no pixel term.
        pixel_weight: ``lambda_pix``.
        adversarial_weights: ``{discriminator name: lambda_k}``; a discriminator not named gets weight 1.
        adversarial_modes: the criterion of each named discriminator (one mode for all, or a mapping);
            it must match that discriminator's own loss mode.
    """

    def __init__(
        self,
        pixel_loss: torch.nn.Module | None = None,
        pixel_weight: float = 100.0,
        adversarial_weights: Mapping[str, float] | None = None,
        adversarial_modes: str | Mapping[str, str] = "bce",
    ) -> None:
        if pixel_weight < 0:
            raise ValueError(f"pixel_weight must be >= 0, got {pixel_weight}.")
        weights = dict(adversarial_weights or {})
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"adversarial_weights must be >= 0, got {weights}.")
        modes = adversarial_modes if isinstance(adversarial_modes, Mapping) else {}
        default_mode = adversarial_modes if isinstance(adversarial_modes, str) else "bce"
        for m in list(modes.values()) + [default_mode]:
            if m not in ADVERSARIAL_MODES:
                raise ValueError(f"adversarial_modes must be among {ADVERSARIAL_MODES}, got {m!r}.")
        super().__init__(reduction=LossReduction.MEAN.value)
        self.pixel_loss = pixel_loss
        self.pixel_weight = float(pixel_weight)
        self.adversarial_weights = weights
        self._modes = dict(modes)
        self._default_mode = default_mode
        self.criteria = torch.nn.ModuleDict({m: AdversarialLoss(m) for m in ADVERSARIAL_MODES})

    def forward(  # type: ignore[override]
        self, pred: torch.Tensor, target: torch.Tensor, fake_outputs: Mapping[str, torch.Tensor], batch: Mapping | None = None
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            pred: synthetic image G(x), shape (B, C, *spatial).
            target: real target y, same shape.
            fake_outputs: ``{name: D_name(G(x))}`` logits of every discriminator (gradients flow to G).
            batch: the batch dict (unused here; part of the generator-loss protocol).

        Returns:
            the weighted terms, ``{"g_pixel": ..., "g_adv_<name>": ...}``; the trainer sums them.
        """
        terms: dict[str, torch.Tensor] = {}
        if self.pixel_loss is not None and self.pixel_weight > 0:
            terms["g_pixel"] = self.pixel_weight * self.pixel_loss(pred, target)
        for name, logits in fake_outputs.items():
            weight = self.adversarial_weights.get(name, 1.0)
            if weight == 0:
                continue
            criterion = self.criteria[self._modes.get(name, self._default_mode)]
            terms[f"g_adv_{name}"] = weight * criterion(logits, target_is_real=True, for_discriminator=False)
        return terms
