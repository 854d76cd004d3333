"""Learning-rate schedules used by the papers, as picklable callables for ``torch.optim.lr_scheduler.LambdaLR``."""

from __future__ import annotations

__all__ = ["LinearDecay"]


class LinearDecay:
    """pix2pix's schedule: a constant learning rate for ``n_constant`` epochs, then linear decay towards 0.

    ``factor(e) = 1 - max(0, e + 1 - n_constant) / (n_decay + 1)`` for ``LambdaLR``'s step count ``e``
    (``e = epoch - 1`` during the 1-based epoch ``epoch``), i.e. the factor of epoch ``n_constant + k`` is
    ``1 - k / (n_decay + 1)`` (Isola et al., CVPR 2017; the authors' ``lr_policy='linear'``).

    Args:
        n_constant: epochs at the initial learning rate (>= 0).
        n_decay: epochs of linear decay (>= 0).
    """

    def __init__(self, n_constant: int, n_decay: int) -> None:
        if n_constant < 0:
            raise ValueError(f"n_constant must be >= 0, got {n_constant}.")
        if n_decay < 0:
            raise ValueError(f"n_decay must be >= 0, got {n_decay}.")
        self.n_constant = int(n_constant)
        self.n_decay = int(n_decay)

    def __call__(self, epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - self.n_constant) / float(self.n_decay + 1)
