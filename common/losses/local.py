"""Local (enhancement-mask) loss, slice-wise SSIM loss and the HR-FCN generator objective.

Reference:
    Chen C., Raymond C., Speier W., et al. "Synthesizing MR Image Contrast Enhancement Using 3D
    High-Resolution ConvNets." IEEE Transactions on Biomedical Engineering 70(2), 2023 (PMC author
    manuscript), Section III-C, Eq. (1).

``L_total = λ1·L_MAE + λ2·L_SSIM + λ3·L_local`` with ``L_SSIM = 1/n Σ_i (1 − SSIM(f(X)_i, Y_i))`` over the
``n`` slices of the slab and ``L_local = ||(f(X) − Y) ⊙ M||_1``, where ``M = 1`` where ``|Y − X_T1| > δ`` (a
label-free mask of enhancing tissue: tumour, vessels) or a given tumour mask.

The bundle builds Eq. (1) as ``common.losses.PairedGeneratorLoss(pixel_losses={"mae": L1Loss(), "ssim":
SliceSSIMLoss(...), "local": LocalLossTerm(reference_key="t1")}, pixel_weights={...})``: the local term is a
:class:`~common.losses.protocol.GeneratorTerm` that reads the pre-contrast T1 (or the mask) from the batch
under the key given to its constructor, so the label holds the target only. :class:`HRFCNLoss` is the same
objective built from the three weights in one call.

Reductions: every term is first computed **per sample** (shape ``(B,)``); ``reduction="none"`` returns
that vector, ``"sum"`` its sum over the batch and ``"mean"`` the batch mean (for the mask-normalised
local loss, ``"mean"`` pools numerator and mask count over the batch, see :class:`LocalLoss`).  This is
the convention of :class:`monai.losses.SSIMLoss`, whose un-reduced output is also one value per sample.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn.modules.loss import _Loss

from monai.losses import SSIMLoss
from monai.utils import LossReduction

from common.losses.adversarial import PairedGeneratorLoss
from common.losses.protocol import GeneratorTerm
from common.losses.utils import apply_reduction

__all__ = ["HRFCNLoss", "LocalLoss", "LocalLossTerm", "SliceSSIMLoss"]


def _check_aux(name: str, aux: torch.Tensor, pred: torch.Tensor) -> None:
    """``aux`` (reference or mask) must be ``(B, 1 or C, *spatial)`` like ``pred`` ``(B, C, *spatial)``."""
    if aux.dim() != pred.dim() or aux.shape[0] != pred.shape[0] or aux.shape[2:] != pred.shape[2:]:
        raise ValueError(f"{name} must have shape (B, 1 or C, *spatial) = {list(pred.shape)}, got {list(aux.shape)}.")
    if aux.shape[1] not in (1, pred.shape[1]):
        raise ValueError(f"{name} must have 1 or {pred.shape[1]} channels, got {aux.shape[1]}.")


class LocalLoss(_Loss):
    """Masked L1 loss of Chen et al. (IEEE TBME 2023), Sec. III-C: ``L_local = ||(f(X) − Y) ⊙ M||_1``.

    ``M = 1`` where ``|Y − X_T1| > δ`` else 0 (:meth:`threshold_mask`), or a mask given to :meth:`forward`
    (e.g. an expert tumour mask).  The mask is a constant: no gradient flows through it.

    Normalisation of the masked sum (per sample ``b``):

    - ``"voxels"`` (default): ``Σ |f(X) − Y|·M / N_b`` with ``N_b`` the number of elements of the sample,
      i.e. the mean of the masked error over **all** voxels, as in the authors' public code.  The term is
      then on the same scale as the MAE term times the mask fraction, which is what the paper's weights
      (λ3/λ1 up to 100, Sec. IV-D) were tuned for.
    - ``"mask"``: ``Σ |f(X) − Y|·M / max(Σ M, eps)``, the mean error inside the mask; with
      ``reduction="mean"`` numerator and mask count are pooled over the batch.  Much stronger per mask
      voxel (by the inverse mask fraction), so the paper's λ values do not transfer.

    Both give exactly 0 (finite value, zero gradient) for an all-zero mask.

    Args:
        delta: threshold δ on ``|Y − X_T1|`` (paper: 0.1, robust in [0.03, 0.15]) for intensities in [0, 1].
        normalization: ``"voxels"`` or ``"mask"``, see above.
        eps: lower bound of the mask count in ``"mask"`` normalisation.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-sample values of shape ``(B,)``).
    """

    def __init__(
        self,
        delta: float = 0.1,
        normalization: str = "voxels",
        eps: float = 1e-6,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}.")
        if normalization not in ("voxels", "mask"):
            raise ValueError(f"normalization must be 'voxels' or 'mask', got {normalization!r}.")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}.")
        super().__init__(reduction=LossReduction(reduction).value)
        self.delta = float(delta)
        self.normalization = normalization
        self.eps = float(eps)

    @staticmethod
    def threshold_mask(target: torch.Tensor, reference: torch.Tensor, delta: float = 0.1) -> torch.Tensor:
        """Label-free enhancement mask ``M = 1[|Y − X_T1| > δ]`` (paper Sec. III-C).

        Args:
            target: contrast-enhanced T1 ``Y``, ``(B, C, *spatial)``.
            reference: pre-contrast T1 ``X_T1``, same shape or broadcastable.
            delta: threshold δ.

        Returns:
            float mask of ``target``'s dtype and broadcast shape, without gradient.
        """
        return ((target.detach() - reference.detach()).abs() > delta).to(target.dtype)

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        reference: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the local loss.

        Args:
            pred: prediction ``f(X)``, ``(B, C, *spatial)``.
            target: ground truth ``Y``, same shape.
            reference: pre-contrast T1 ``(B, 1 or C, *spatial)``; used to threshold a mask when ``mask`` is None.
            mask: ``(B, 1 or C, *spatial)`` mask M (binary or soft in [0, 1]); takes precedence over ``reference``.

        Returns:
            scalar for ``"mean"``/``"sum"``, per-sample ``(B,)`` for ``"none"``.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {list(pred.shape)} vs {list(target.shape)}.")
        if mask is None:
            if reference is None:
                raise ValueError("LocalLoss needs either mask or reference (the pre-contrast T1).")
            _check_aux("reference", reference, pred)
            mask = self.threshold_mask(target, reference, self.delta)
        else:
            _check_aux("mask", mask, pred)
            mask = mask.detach().to(pred.dtype)
        mask = mask.expand_as(pred)
        masked = ((pred - target).abs() * mask).flatten(1).sum(1)  # (B,)
        if self.normalization == "voxels":
            return apply_reduction(masked / pred[0].numel(), self.reduction)
        count = mask.flatten(1).sum(1)
        if self.reduction == LossReduction.MEAN.value:
            return masked.sum() / count.sum().clamp_min(self.eps)
        return apply_reduction(masked / count.clamp_min(self.eps), self.reduction)


class LocalLossTerm(GeneratorTerm):
    """:class:`LocalLoss` as a generator term: the T1 reference or the mask is read from the batch.

    Exactly one of ``reference_key`` (``M = 1[|Y − batch[reference_key]| > δ]``, paper Sec. III-C) and
    ``mask_key`` (``M = batch[mask_key]``, e.g. an expert tumour mask) is given. The batch entry must be
    ``(B, 1 or C, *spatial)`` like ``pred`` (crop it together with ``image`` and ``label``); it is moved to
    ``pred``'s device and dtype.

    Args:
        reference_key: batch key of the pre-contrast T1 (threshold mask).
        mask_key: batch key of the mask (used as given).
        delta, normalization, eps, reduction: as in :class:`LocalLoss`.
    """

    def __init__(
        self,
        reference_key: str | None = None,
        mask_key: str | None = None,
        delta: float = 0.1,
        normalization: str = "voxels",
        eps: float = 1e-6,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        if (reference_key is None) == (mask_key is None):
            raise ValueError(f"give exactly one of reference_key and mask_key, got {reference_key!r}, {mask_key!r}.")
        super().__init__(reduction=LossReduction(reduction).value)
        self.reference_key = reference_key
        self.mask_key = mask_key
        self.local = LocalLoss(delta=delta, normalization=normalization, eps=eps, reduction=reduction)

    @property
    def delta(self) -> float:
        """Threshold δ of the enhancement mask."""
        return self.local.delta

    @property
    def key(self) -> str:
        """The batch key this term reads."""
        return str(self.reference_key if self.reference_key is not None else self.mask_key)

    def forward(  # type: ignore[override]
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        *,
        fake_outputs: Mapping[str, torch.Tensor] | None = None,
        batch: Mapping | None = None,
    ) -> torch.Tensor:
        """``L_local`` of ``pred`` ``(B, C, *spatial)`` against ``target`` with the mask from ``batch[key]``."""
        aux = self.batch_tensor(batch, self.key, pred, "the local loss").to(dtype=pred.dtype)
        if self.reference_key is not None:
            return self.local(pred, target, reference=aux)
        return self.local(pred, target, mask=aux)


class SliceSSIMLoss(_Loss):
    """``L_SSIM = 1/n Σ_i (1 − SSIM(f(X)_i, Y_i))`` over the ``n`` 2D slices of a sample (paper Eq. 1).

    A 3D tensor ``(B, C, H, W, D)`` is cut along ``slice_axis`` into ``B·S`` images for
    :class:`monai.losses.SSIMLoss` (``spatial_dims=2``); a 2D tensor ``(B, C, H, W)`` is used directly. Each
    slice must be at least ``win_size`` in both in-plane sizes (a ``(16, 16, 3)`` slab with ``slice_axis=-1``
    is fine).

    Args:
        slice_axis: tensor axis of 5D inputs along which slices are taken (2, 3, 4 or -3, -2, -1; default -1
            = D, the slab axis of ``(B, C, H, W, 3)``).
        data_range: intensity range (1 for [0, 1]-normalised images).
        win_size: SSIM window size (odd).
        kernel_sigma: Gaussian sigma of the window.
        kernel_type: ``"gaussian"`` or ``"uniform"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-sample ``(B,)``).
    """

    def __init__(
        self,
        slice_axis: int = -1,
        data_range: float = 1.0,
        win_size: int = 11,
        kernel_sigma: float = 1.5,
        kernel_type: str = "gaussian",
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        if slice_axis not in (2, 3, 4, -1, -2, -3):
            raise ValueError(f"slice_axis must be one of 2, 3, 4, -3, -2, -1, got {slice_axis}.")
        if win_size < 1 or win_size % 2 == 0:
            raise ValueError(f"win_size must be a positive odd int, got {win_size}.")
        if data_range <= 0:
            raise ValueError(f"data_range must be > 0, got {data_range}.")
        super().__init__(reduction=LossReduction(reduction).value)
        self.slice_axis = slice_axis % 5
        self.win_size = win_size
        self.ssim = SSIMLoss(
            spatial_dims=2,
            data_range=data_range,
            kernel_type=kernel_type,
            win_size=win_size,
            kernel_sigma=kernel_sigma,
            reduction="none",
        )

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``1 − SSIM`` of ``pred`` vs ``target`` ``(B, C, H, W[, D])``, averaged over each sample's slices."""
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {list(pred.shape)} vs {list(target.shape)}.")
        batch = pred.shape[0]
        if pred.dim() == 5:  # (B, C, H, W, D) -> (B * S, C, a, b), S slices along slice_axis
            pred = pred.movedim(self.slice_axis, 1).flatten(0, 1)
            target = target.movedim(self.slice_axis, 1).flatten(0, 1)
        elif pred.dim() != 4:
            raise ValueError(f"SliceSSIMLoss expects 2D (B, C, H, W) or 3D (B, C, H, W, D) tensors, got {pred.dim()}D.")
        if min(pred.shape[2:]) < self.win_size:
            raise ValueError(
                f"SSIM slices have in-plane size {list(pred.shape[2:])} but need both sizes >= win_size "
                f"= {self.win_size} (check slice_axis or lower win_size)."
            )
        return apply_reduction(self.ssim(pred, target).view(batch, -1).mean(1), self.reduction)


class HRFCNLoss(PairedGeneratorLoss):
    """Eq. (1) of Chen et al. in one call: ``{"g_mae": λ1·MAE, "g_ssim": λ2·L_SSIM, "g_local": λ3·L_local}``.

    A :class:`~common.losses.adversarial.PairedGeneratorLoss` with the three pixel terms ``"mae"``
    (:class:`torch.nn.L1Loss`), ``"ssim"`` (:class:`SliceSSIMLoss`) and ``"local"`` (:class:`LocalLossTerm`
    reading ``aux_key`` from the batch); a weight of 0 drops its term. The bundle configs spell the same
    objective out as a ``PairedGeneratorLoss``; this is a convenience for code.

    Args:
        lambda_mae: λ1.
        lambda_ssim: λ2.
        lambda_local: λ3.
        aux_key: batch key of the T1 reference (``mask_source="threshold"``) or of the mask (``"label"``).
        mask_source: ``"threshold"`` or ``"label"``.
        delta, local_normalization: of :class:`LocalLoss`.
        slice_axis, data_range, ssim_win_size: of :class:`SliceSSIMLoss`.
    """

    def __init__(
        self,
        lambda_mae: float = 1.0,
        lambda_ssim: float = 1.0,
        lambda_local: float = 1.0,
        aux_key: str = "t1",
        mask_source: str = "threshold",
        delta: float = 0.1,
        local_normalization: str = "voxels",
        slice_axis: int = -1,
        data_range: float = 1.0,
        ssim_win_size: int = 11,
    ) -> None:
        if mask_source not in ("threshold", "label"):
            raise ValueError(f"mask_source must be 'threshold' or 'label', got {mask_source!r}.")
        if lambda_mae + lambda_ssim + lambda_local == 0:
            raise ValueError("at least one of lambda_mae, lambda_ssim, lambda_local must be > 0.")
        local = LocalLossTerm(
            **({"reference_key": aux_key} if mask_source == "threshold" else {"mask_key": aux_key}),
            delta=delta,
            normalization=local_normalization,
        )
        super().__init__(
            pixel_losses={
                "mae": torch.nn.L1Loss(),
                "ssim": SliceSSIMLoss(slice_axis=slice_axis, data_range=data_range, win_size=ssim_win_size),
                "local": local,
            },
            pixel_weights={"mae": lambda_mae, "ssim": lambda_ssim, "local": lambda_local},
        )
