"""Dataset helpers."""

from __future__ import annotations

from torch.utils.data import ConcatDataset, Dataset

__all__ = ["repeat_dataset"]


def repeat_dataset(dataset: Dataset, times: int) -> ConcatDataset:
    """``dataset`` repeated ``times`` times: an epoch then draws ``times`` random slices or patches per volume.

    The items are shared (a cached volume is not copied); random transforms applied on top draw anew for
    each repetition.

    Raises:
        ValueError: ``times`` < 1.
    """
    if times < 1:
        raise ValueError(f"times must be >= 1, got {times}.")
    return ConcatDataset([dataset] * int(times))
