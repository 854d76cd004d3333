"""Local (enhancement-mask) loss and the composite HR-FCN loss.

Reference:
    Chen C., Raymond C., Speier W., et al. "Synthesizing MR Image Contrast Enhancement Using 3D
    High-Resolution ConvNets." IEEE Transactions on Biomedical Engineering 70(2), 2023 (PMC author
    manuscript), Section III-C, Eq. (1).

``L_total = λ1·L_MAE + λ2·L_SSIM + λ3·L_local`` with ``L_SSIM = 1/n Σ_i (1 − SSIM(f(X)_i, Y_i))`` over the
``n`` slices of the slab and ``L_local = ||(f(X) − Y) ⊙ M||_1``, where ``M = 1`` where ``|Y − X_T1| > δ`` (a
label-free mask of enhancing tissue: tumour, vessels) or a given tumour mask.

Reductions: every term is first computed **per sample** (shape ``(B,)``); ``reduction="none"`` returns
that vector, ``"sum"`` its sum over the batch and ``"mean"`` the batch mean (for the mask-normalised
local loss, ``"mean"`` pools numerator and mask count over the batch, see :class:`LocalLoss`).  This is
the convention of :class:`monai.losses.SSIMLoss`, whose un-reduced output is also one value per sample.
"""

from __future__ import annotations

import torch
from torch.nn.modules.loss import _Loss

from monai.losses import SSIMLoss
from monai.utils import LossReduction

from common.losses.utils import apply_reduction

__all__ = ["HRFCNLoss", "LocalLoss"]


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


class HRFCNLoss(_Loss):
    """Composite loss of Chen et al. (IEEE TBME 2023), Eq. (1): ``λ1·L_MAE + λ2·L_SSIM + λ3·L_local``.

    - ``L_MAE = mean |f(X) − Y|``;
    - ``L_SSIM = mean over 2D slices of (1 − SSIM)`` (:class:`monai.losses.SSIMLoss`, ``spatial_dims=2``):
      a 3D tensor ``(B, C, H, W, D)`` is cut along ``slice_axis`` into ``B·D`` images; a 2D tensor
      ``(B, C, H, W)`` is used directly.  Each slice must be at least ``ssim_win_size`` in both in-plane
      sizes (a 3-slice slab with slice_axis=-1 is fine, a cube 16³ with the default window of 11 too);
    - ``L_local``: :class:`LocalLoss`.

    Paper schedule: stage 1 λ = (1, 1, 1); stage 2 λ = (0.1, 0.1, 10).  Terms with weight 0 are not computed.

    Passing the T1 reference or the tumour mask through MONAI's ``SupervisedTrainer`` (which calls
    ``loss_function(pred, label)``): pack the label as ``(B, C + 1, *spatial)`` with the target in the first
    ``C`` channels and an auxiliary channel last, interpreted by ``mask_source``:

    - ``"threshold"``: the extra channel is the pre-contrast T1; ``M = 1[|Y − T1| > δ]``;
    - ``"label"``: the extra channel is the mask itself (e.g. an expert tumour mask).

    Explicit ``reference=`` / ``mask=`` keyword arguments are used as given (``mask`` first) and then the
    label must hold only the target.  After each call the detached, reduced, un-weighted terms are in
    :attr:`last_terms` (keys ``"mae"``, ``"ssim"``, ``"local"``) for logging.

    Args:
        lambda_mae: λ1.
        lambda_ssim: λ2.
        lambda_local: λ3.
        delta: threshold δ of the local mask.
        mask_source: ``"threshold"`` or ``"label"``, meaning of an extra label channel.
        local_normalization: ``"voxels"`` or ``"mask"``, see :class:`LocalLoss`.
        slice_axis: tensor axis of 5D inputs along which SSIM slices are taken (2, 3, 4 or -3, -2, -1;
            default -1 = D, the slab axis of ``(B, C, H, W, 3)``).
        data_range: intensity range for SSIM (1 for [0, 1]-normalised images).
        ssim_win_size: SSIM window size.
        ssim_kernel_sigma: Gaussian sigma of the SSIM window.
        ssim_kernel_type: ``"gaussian"`` or ``"uniform"``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (per-sample ``(B,)``).
    """

    def __init__(
        self,
        lambda_mae: float = 1.0,
        lambda_ssim: float = 1.0,
        lambda_local: float = 1.0,
        delta: float = 0.1,
        mask_source: str = "threshold",
        local_normalization: str = "voxels",
        slice_axis: int = -1,
        data_range: float = 1.0,
        ssim_win_size: int = 11,
        ssim_kernel_sigma: float = 1.5,
        ssim_kernel_type: str = "gaussian",
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        for name, value in (("lambda_mae", lambda_mae), ("lambda_ssim", lambda_ssim), ("lambda_local", lambda_local)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        if lambda_mae + lambda_ssim + lambda_local == 0:
            raise ValueError("at least one of lambda_mae, lambda_ssim, lambda_local must be > 0.")
        if mask_source not in ("threshold", "label"):
            raise ValueError(f"mask_source must be 'threshold' or 'label', got {mask_source!r}.")
        if slice_axis not in (2, 3, 4, -1, -2, -3):
            raise ValueError(f"slice_axis must be one of 2, 3, 4, -3, -2, -1, got {slice_axis}.")
        if ssim_win_size < 1 or ssim_win_size % 2 == 0:
            raise ValueError(f"ssim_win_size must be a positive odd int, got {ssim_win_size}.")
        if data_range <= 0:
            raise ValueError(f"data_range must be > 0, got {data_range}.")
        super().__init__(reduction=LossReduction(reduction).value)
        self.lambda_mae = float(lambda_mae)
        self.lambda_ssim = float(lambda_ssim)
        self.lambda_local = float(lambda_local)
        self.mask_source = mask_source
        self.slice_axis = slice_axis % 5
        self.ssim_win_size = ssim_win_size
        self.local = LocalLoss(delta=delta, normalization=local_normalization, reduction=reduction)
        self.ssim = SSIMLoss(
            spatial_dims=2,
            data_range=data_range,
            kernel_type=ssim_kernel_type,
            win_size=ssim_win_size,
            kernel_sigma=ssim_kernel_sigma,
            reduction="none",
        )
        self.last_terms: dict[str, torch.Tensor] = {}

    def _ssim_per_sample(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``1 − SSIM`` averaged over the 2D slices of each sample, shape ``(B,)``."""
        batch = pred.shape[0]
        if pred.dim() == 5:  # (B, C, H, W, D) -> (B * S, C, a, b), S slices along slice_axis
            pred = pred.movedim(self.slice_axis, 1).flatten(0, 1)
            target = target.movedim(self.slice_axis, 1).flatten(0, 1)
        elif pred.dim() != 4:
            raise ValueError(f"HRFCNLoss expects 2D (B, C, H, W) or 3D (B, C, H, W, D) tensors, got {pred.dim()}D.")
        if min(pred.shape[2:]) < self.ssim_win_size:
            raise ValueError(
                f"SSIM slices have in-plane size {list(pred.shape[2:])} but need both sizes >= ssim_win_size "
                f"= {self.ssim_win_size} (check slice_axis or lower ssim_win_size)."
            )
        return self.ssim(pred, target).view(batch, -1).mean(1)

    def split_label(
        self, pred: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Split a packed label ``(B, C[+1], *spatial)`` into (target, reference, mask) per ``mask_source``."""
        n = pred.shape[1]
        if label.shape[1] == n:
            return label, None, None
        if label.shape[1] == n + 1:
            aux = label[:, n:]
            return (label[:, :n], aux, None) if self.mask_source == "threshold" else (label[:, :n], None, aux)
        raise ValueError(f"label must have {n} (target) or {n + 1} (target + auxiliary) channels, got {label.shape[1]}")

    def compute_terms(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        reference: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Reduced, un-weighted terms ``{"mae", "ssim", "local"}`` (only those with a non-zero weight).

        Args and label packing as in :meth:`forward`.
        """
        if reference is None and mask is None:
            target, reference, mask = self.split_label(pred, target)
        if pred.shape != target.shape:
            raise ValueError(f"pred and target shapes differ: {list(pred.shape)} vs {list(target.shape)}.")
        terms: dict[str, torch.Tensor] = {}
        if self.lambda_mae > 0:
            terms["mae"] = apply_reduction((pred - target).abs().flatten(1).mean(1), self.reduction)
        if self.lambda_ssim > 0:
            terms["ssim"] = apply_reduction(self._ssim_per_sample(pred, target), self.reduction)
        if self.lambda_local > 0:
            if reference is None and mask is None:
                aux = "T1" if self.mask_source == "threshold" else "mask"
                raise ValueError(
                    "lambda_local > 0 needs the T1 reference or a mask: pass reference=/mask= or pack the label as "
                    f"[target, {aux}] (mask_source={self.mask_source!r})."
                )
            terms["local"] = self.local(pred, target, reference=reference, mask=mask)
        return terms

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        reference: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted sum ``λ1·MAE + λ2·(1 − SSIM) + λ3·L_local``.

        Args:
            pred: prediction ``(B, C, H, W[, D])``.
            target: ground truth ``(B, C, ...)``, or a packed label ``(B, C + 1, ...)`` whose last channel is the
                T1 reference (``mask_source="threshold"``) or the mask (``"label"``) when no keyword is given.
            reference: optional pre-contrast T1 ``(B, 1 or C, ...)``.
            mask: optional local-loss mask ``(B, 1 or C, ...)``; used instead of thresholding when given.

        Returns:
            scalar (``"mean"``/``"sum"``) or per-sample ``(B,)`` (``"none"``).
        """
        terms = self.compute_terms(pred, target, reference, mask)
        weights = {"mae": self.lambda_mae, "ssim": self.lambda_ssim, "local": self.lambda_local}
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        total = sum(weights[k] * v for k, v in terms.items())
        return total  # type: ignore[return-value]
