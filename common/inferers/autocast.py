"""Mixed-precision inference: any MONAI inferer run under ``torch.autocast``, with float32 outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from monai.inferers import Inferer, SimpleInferer

from common.utils.flags import as_flag

__all__ = ["AutocastInferer"]


def _to_float32(data: Any) -> Any:
    """Cast every floating-point tensor in ``data`` (tensor, tuple, list or mapping, nested) to float32."""
    if isinstance(data, torch.Tensor):
        return data.float() if data.is_floating_point() else data
    if isinstance(data, Mapping):
        return {k: _to_float32(v) for k, v in data.items()}
    if isinstance(data, tuple):
        items = [_to_float32(v) for v in data]
        return type(data)(*items) if hasattr(data, "_fields") else tuple(items)
    if isinstance(data, list):
        return [_to_float32(v) for v in data]
    return data


class AutocastInferer(Inferer):
    """Run a MONAI inferer under ``torch.autocast`` and return float32 outputs.

    Convolutions and matrix products run in ``dtype`` (bfloat16 on CPU, float16 on CUDA by default), the
    ops autocast keeps in float32 (reductions, normalisation statistics, softmax) stay in float32, and every
    floating-point output tensor (also inside tuple, list and dict outputs) is cast back to float32 so
    post-processing, metrics and writers see the same dtype as without mixed precision. Wrapping
    ``SlidingWindowInferer`` or ``SliceInferer`` keeps their stitching buffers in the input's dtype
    (float32): only the network's forward passes are reduced.

    Args:
        inferer: the inferer to run (default ``SimpleInferer``).
        enabled: ``False`` makes this exactly ``inferer`` (no autocast, outputs untouched).
        device_type: ``torch.autocast`` device type, ``"cpu"`` or ``"cuda"`` (a ``torch.device`` is accepted,
            so a config can pass ``@device``).
        dtype: autocast dtype; default ``torch.bfloat16`` on CPU and ``torch.float16`` on CUDA.
    """

    def __init__(
        self,
        inferer: Inferer | None = None,
        enabled: bool = True,
        device_type: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        device_type = device_type.type if isinstance(device_type, torch.device) else str(device_type)
        if device_type not in ("cpu", "cuda", "xpu", "mps"):
            raise ValueError(f"device_type must be 'cpu', 'cuda', 'xpu' or 'mps', got {device_type!r}.")
        if inferer is not None and not callable(inferer):
            raise ValueError(f"inferer must be a MONAI Inferer, got {type(inferer).__name__}.")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}.")
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.enabled = as_flag(enabled, "enabled")
        self.device_type = device_type
        self.dtype = dtype if dtype is not None else (torch.float16 if device_type == "cuda" else torch.bfloat16)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``self.inferer(inputs, network, *args, **kwargs)`` under autocast.

        Args:
            inputs: network input, e.g. (B, C, *spatial).
            network: the model.
            args, kwargs: passed to the wrapped inferer (and through it to ``network``).

        Returns:
            The wrapped inferer's output, floating tensors as float32 (untouched when disabled).
        """
        if not self.enabled:
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            outputs = self.inferer(inputs, network, *args, **kwargs)
        return _to_float32(outputs)
