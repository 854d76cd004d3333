"""Shared code of the medical image synthesis MONAI bundles.

Sub-packages: ``data`` (phantom generator, dataset preparation), ``metrics``, ``losses``,
``networks``, ``engines`` (paired-GAN trainer), ``inferers``, ``handlers``, ``transforms``, ``utils``.
"""

from __future__ import annotations

__all__: list[str] = []
__version__ = "0.1.0"
