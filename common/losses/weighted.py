"""Lesion / difference-weighted L1 loss: errors where the target differs from the source count more.

Not from a paper of this collection: AMCGAN (Pan et al., EMBC 2021) trains with ``L_cGAN + λ·L1``; with a
``lesion_weight`` of 0 the term below *is* that ``L1`` (the paper setting). The weighting follows the idea of
HR-FCN's local loss (Chen et al., IEEE TBME 2023, Sec. III-C, ``M = 1[|Y − X_T1| > δ]``), applied to every voxel
of the L1 term rather than as a separate term::

    L_w = mean_v( (1 + α·M_v + β·P_v·(1 − M_v)) · |G(x)_v − y_v| ),   M = 1[|y − x_src| > τ]   (or the lesion mask)
                                                                    P = 1[|G(x) − x_src| > τ]  (detached)

With an enhancing tumour covering ~1 % of the brain and carrying a small part of the total ``y − x`` difference,
plain L1 has little reason to learn the enhancement; ``α`` of 10-50 makes the mask voxels count as much as the
rest of the slice (issue #12). ``β`` (default 0) weights the *false* enhancement the same way: voxels where the
synthesis departs from the source but the target does not. ``α`` alone pays for enhancing every rim-like voxel
(missed enhancement costs ``1 + α``, false enhancement 1); ``β = α`` makes both errors cost alike. The masks are
constants: no gradient flows through them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.nn.modules.loss import _Loss

from monai.utils import LossReduction

from common.losses.protocol import GeneratorTerm
from common.losses.utils import apply_reduction

__all__ = ["DifferenceWeightedL1Loss", "DifferenceWeightedL1Term"]


class DifferenceWeightedL1Loss(_Loss):
    """``L_w = mean_v((1 + α·M_v)·|pred_v − target_v|)`` per sample, ``M`` a lesion / difference mask.

    ``M = 1[|target − source| > threshold]`` when a ``source`` is given to :meth:`forward`, or the ``mask``
    given (binary or soft in [0, 1], e.g. the enhancing-tumour label); a ``mask`` takes precedence.
    ``lesion_weight = 0`` gives exactly :class:`torch.nn.L1Loss` (no source or mask needed then).
    ``prediction_weight`` ``β > 0`` adds ``β`` where ``|pred − source| > threshold`` outside ``M`` (needs the source).

    Args:
        lesion_weight: ``α >= 0``, the extra weight of a mask voxel (0 = plain L1, the AMCGAN paper).
        threshold: ``τ >= 0`` on ``|target − source|`` (and ``|pred − source|``) in the network's intensity units.
        prediction_weight: ``β >= 0``, the extra weight of a voxel the prediction changes but the target does not.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-sample values of shape ``(B,)``).
    """

    def __init__(
        self,
        lesion_weight: float = 0.0,
        threshold: float = 0.2,
        reduction: LossReduction | str = LossReduction.MEAN,
        prediction_weight: float = 0.0,
    ) -> None:
        if not float(lesion_weight) >= 0:
            raise ValueError(f"lesion_weight must be >= 0, got {lesion_weight}.")
        if not float(threshold) >= 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}.")
        if not float(prediction_weight) >= 0:
            raise ValueError(f"prediction_weight must be >= 0, got {prediction_weight}.")
        super().__init__(reduction=LossReduction(reduction).value)
        self.lesion_weight = float(lesion_weight)
        self.threshold = float(threshold)
        self.prediction_weight = float(prediction_weight)

    def weight_map(
        self,
        target: torch.Tensor,
        source: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        pred: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``1 + α·M (+ β·P·(1 − M))`` of ``target``'s shape ``(B, C, *spatial)``, without gradient.

        Args:
            target: ``(B, C, *spatial)``.
            source: ``(B, 1 or C, *spatial)``, thresholded against ``target`` when ``mask`` is None.
            mask: ``(B, 1 or C, *spatial)``, used as given.
            pred: ``(B, C, *spatial)``, thresholded against ``source`` for ``P`` when ``prediction_weight > 0``.
        """
        if mask is None and source is None:
            raise ValueError("DifferenceWeightedL1Loss with lesion_weight > 0 needs a source or a mask.")
        aux = mask if mask is not None else source
        name = "mask" if mask is not None else "source"
        if aux.dim() != target.dim() or aux.shape[0] != target.shape[0] or aux.shape[2:] != target.shape[2:]:
            raise ValueError(
                f"{name} must have shape (B, 1 or C, *spatial) = {list(target.shape)}, got {list(aux.shape)}."
            )
        if aux.shape[1] not in (1, target.shape[1]):
            raise ValueError(f"{name} must have 1 or {target.shape[1]} channels, got {aux.shape[1]}.")
        aux = aux.detach().to(device=target.device, dtype=target.dtype)
        m = aux if mask is not None else ((target.detach() - aux).abs() > self.threshold).to(target.dtype)
        weights = (1.0 + self.lesion_weight * m).expand_as(target)
        if self.prediction_weight > 0:
            if source is None or pred is None:
                raise ValueError("DifferenceWeightedL1Loss with prediction_weight > 0 needs the source and pred.")
            src = source.detach().to(device=target.device, dtype=target.dtype)
            changed = ((pred.detach() - src).abs() > self.threshold).to(target.dtype)
            weights = weights + self.prediction_weight * changed * (1.0 - m)
        return weights

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        source: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted L1 of ``pred`` vs ``target`` ``(B, C, *spatial)``; scalar, or ``(B,)`` for ``"none"``."""
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {list(pred.shape)} vs {list(target.shape)}.")
        err = (pred - target).abs()
        if self.lesion_weight > 0 or self.prediction_weight > 0:
            err = err * self.weight_map(target, source, mask, pred)
        if self.reduction == LossReduction.MEAN.value:  # every sample has as many voxels: the same as L1Loss
            return err.mean()
        return apply_reduction(err.flatten(1).mean(1), self.reduction)


class DifferenceWeightedL1Term(GeneratorTerm):
    """:class:`DifferenceWeightedL1Loss` as a generator term: the source or the mask is read from the batch.

    ``source_key`` names the batch entry holding the source (AMCGAN: ``"image"``, the network input) and
    ``source_channel`` its channel compared with the target (the pre-contrast T1); ``mask_key`` instead names a
    lesion mask ``(B, 1, *spatial)``, optionally reduced to ``mask_labels`` (e.g. ``[3]``, the enhancing rim).
    With ``lesion_weight = 0`` the batch is not read and the value is that of :class:`torch.nn.L1Loss`.

    Args:
        lesion_weight, threshold, reduction, prediction_weight: as in :class:`DifferenceWeightedL1Loss`
            (``prediction_weight`` needs ``source_key``).
        source_key: batch key of the source image ``(B, C_in, *spatial)``.
        source_channel: channel of ``batch[source_key]`` that the target is compared with.
        mask_key: batch key of a lesion mask (takes the place of the source threshold).
        mask_labels: label values of ``batch[mask_key]`` that count as lesion; None: any value > 0.
    """

    def __init__(
        self,
        lesion_weight: float = 0.0,
        threshold: float = 0.2,
        source_key: str | None = "image",
        source_channel: int = 0,
        mask_key: str | None = None,
        mask_labels: Sequence[int] | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
        prediction_weight: float = 0.0,
    ) -> None:
        if (source_key is None) == (mask_key is None):
            raise ValueError(f"give exactly one of source_key and mask_key, got {source_key!r}, {mask_key!r}.")
        if prediction_weight > 0 and source_key is None:
            raise ValueError("prediction_weight > 0 needs source_key (the prediction is compared with the source).")
        if source_channel < 0:
            raise ValueError(f"source_channel must be >= 0, got {source_channel}.")
        super().__init__(reduction=LossReduction(reduction).value)
        self.loss = DifferenceWeightedL1Loss(lesion_weight, threshold, reduction, prediction_weight)
        self.source_key, self.source_channel, self.mask_key = source_key, int(source_channel), mask_key
        self.mask_labels = None if mask_labels is None else [int(v) for v in mask_labels]

    @property
    def key(self) -> str:
        """The batch key this term reads."""
        return str(self.source_key if self.source_key is not None else self.mask_key)

    def forward(  # type: ignore[override]
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        *,
        fake_outputs: Mapping[str, torch.Tensor] | None = None,
        batch: Mapping | None = None,
    ) -> torch.Tensor:
        """Weighted L1 of ``pred`` ``(B, C, *spatial)`` against ``target`` with the mask from ``batch[key]``."""
        if self.loss.lesion_weight == 0 and self.loss.prediction_weight == 0:
            return self.loss(pred, target)
        aux = self.batch_tensor(batch, self.key, pred, "the weighted L1")
        if self.source_key is not None:
            if self.source_channel >= aux.shape[1]:
                raise ValueError(
                    f"source_channel {self.source_channel} >= the {aux.shape[1]} channels of {self.key!r}."
                )
            return self.loss(pred, target, source=aux[:, self.source_channel : self.source_channel + 1])
        if self.mask_labels is None:
            mask = aux > 0
        else:
            mask = torch.isin(aux, torch.as_tensor(self.mask_labels, device=aux.device, dtype=aux.dtype))
        return self.loss(pred, target, mask=mask.to(pred.dtype))
