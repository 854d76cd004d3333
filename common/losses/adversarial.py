"""Adversarial criteria for paired image-to-image GANs, and why MONAI's ``PatchAdversarialLoss`` is not used.

The paired-GAN engine (:class:`common.engines.PairedGanTrainer`) trains one generator against any number of
discriminators. Each discriminator owns a :class:`DiscriminatorLoss`; the generator owns one loss object
(for example :class:`PairedGeneratorLoss`) that receives the discriminators' outputs on the synthetic image.

MONAI 1.6.1's ``monai.losses.PatchAdversarialLoss`` (``monai/losses/adversarial_loss.py``) passes the logits
through an activation before its criterion, so its objectives are not the papers' ones:

- ``"bce"``: ``sigmoid`` then ``torch.nn.BCELoss`` (log clamped at -100) instead of the stable
  BCE-with-logits used here; saturated logits give clamped values and vanishing gradients;
- ``"least_squares"``: by default ``LeakyReLU(0.05)`` is applied to the logits before the MSE
  (``no_activation_leastsq=False``), so negative outputs are shrunk 20x; LSGAN (Mao et al.) and pix2pix's
  ``lsgan`` are the MSE of the raw output (our ``"lsgan"``);
- ``"hinge"``: ``tanh`` first, giving ``mean(1 - tanh D)`` / ``mean(1 + tanh D)``, whose margins are never
  reached (``|tanh D| < 1``), and a generator criterion ``mean(1 - tanh D)`` instead of Lim and Ye's ``-mean(D)``;
- no Wasserstein criterion and no gradient penalty (it never sees the critic), and no real/fake weight
  (pix2pix halves the D objective); a list input (multi-scale D) is averaged with equal weights.

Swapping it in therefore changes the objective being optimised, not only the implementation.

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

from common.losses.protocol import GeneratorLoss, call_term
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
            raise ValueError(
                f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}."
            )
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


class PairedGeneratorLoss(GeneratorLoss):
    """Generator objective of a paired (conditional) GAN, or of a non-adversarial regression network.

    ``L_G = sum_j lambda_j * l_j(G(x), y) + sum_k lambda_k * l_adv,k(D_k(G(x)), real)``

    pix2pix (Isola et al. 2017, Eq. 4) is one pixel term ``l_1 = L1`` with ``lambda = 100`` and one BCE
    discriminator with ``lambda = 1``. Pixel terms that need more than ``(pred, target)`` (a reference image
    from the batch, a discriminator's confidence map) are :class:`~common.losses.protocol.GeneratorTerm`
    modules; they receive ``fake_outputs`` and ``batch``. With no discriminator the adversarial sum is empty
    and this is a plain weighted regression loss.

    Args:
        pixel_losses: ``{term name: loss module}``; each term is logged as ``g_<name>``.
        pixel_weights: ``{term name: lambda_j}``; every name of ``pixel_losses`` must have a weight. A weight
            of 0 drops the term (it is not computed).
        adversarial_weights: ``{discriminator name: lambda_k}``; a discriminator not named gets weight 1,
            weight 0 drops its term (logged as ``g_adv_<name>``).
        adversarial_modes: the criterion of each named discriminator (one mode for all, or a mapping);
            it must match that discriminator's own loss mode.
    """

    def __init__(
        self,
        pixel_losses: Mapping[str, torch.nn.Module] | None = None,
        pixel_weights: Mapping[str, float] | None = None,
        adversarial_weights: Mapping[str, float] | None = None,
        adversarial_modes: str | Mapping[str, str] = "bce",
    ) -> None:
        losses = dict(pixel_losses or {})
        pweights = {k: float(v) for k, v in dict(pixel_weights or {}).items()}
        if set(losses) != set(pweights):
            raise ValueError(
                f"pixel_weights must name exactly the terms of pixel_losses, got {sorted(pweights)} "
                f"for {sorted(losses)}."
            )
        if any(w < 0 for w in pweights.values()):
            raise ValueError(f"pixel_weights must be >= 0, got {pweights}.")
        weights = {k: float(v) for k, v in dict(adversarial_weights or {}).items()}
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"adversarial_weights must be >= 0, got {weights}.")
        modes = adversarial_modes if isinstance(adversarial_modes, Mapping) else {}
        default_mode = adversarial_modes if isinstance(adversarial_modes, str) else "bce"
        for m in list(modes.values()) + [default_mode]:
            if m not in ADVERSARIAL_MODES:
                raise ValueError(f"adversarial_modes must be among {ADVERSARIAL_MODES}, got {m!r}.")
        super().__init__(reduction=LossReduction.MEAN.value)
        self.pixel_losses = torch.nn.ModuleDict(losses)
        self.pixel_weights = pweights
        self.adversarial_weights = weights
        self._modes = dict(modes)
        self._default_mode = default_mode
        self.criteria = torch.nn.ModuleDict({m: AdversarialLoss(m) for m in ADVERSARIAL_MODES})

    def forward(  # type: ignore[override]
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        fake_outputs: Mapping[str, torch.Tensor],
        batch: Mapping | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            pred: synthetic image G(x), shape (B, C, *spatial).
            target: real target y, same shape.
            fake_outputs: ``{name: D_name(G(x))}`` logits of every discriminator (gradients flow to G).
            batch: the batch dict, passed to :class:`~common.losses.protocol.GeneratorTerm` pixel terms.

        Returns:
            the weighted terms, ``{"g_<pixel term>": ..., "g_adv_<name>": ...}``; the trainer sums them.
        """
        terms: dict[str, torch.Tensor] = {}
        for name, term in self.pixel_losses.items():
            weight = self.pixel_weights[name]
            if weight > 0:
                terms[f"g_{name}"] = weight * call_term(term, pred, target, fake_outputs, batch)
        for name, logits in fake_outputs.items():
            weight = self.adversarial_weights.get(name, 1.0)
            if weight == 0:
                continue
            criterion = self.criteria[self._modes.get(name, self._default_mode)]
            terms[f"g_adv_{name}"] = weight * criterion(logits, target_is_real=True, for_discriminator=False)
        return terms
