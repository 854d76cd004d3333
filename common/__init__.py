"""Shared code of the medical image synthesis MONAI bundles.

Sub-packages: ``data`` (phantom generator, dataset preparation), ``metrics``, ``losses``,
``networks``, ``engines`` (paired-GAN trainer), ``inferers``, ``handlers``, ``transforms``, ``utils``.

Importing ``common`` (every bundle config does, first) installs :func:`common.utils.errors.install_excepthook`,
so a refused input ends the command's output with the line naming the file or key to fix.
"""

from __future__ import annotations

from common.utils.errors import install_excepthook as _install_excepthook

__all__: list[str] = []
__version__ = "0.1.0"

_install_excepthook()
