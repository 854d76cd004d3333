"""The MONAI Label app's library: ``bundle`` (no MONAI Label import) and ``infers`` (the infer task)."""

from __future__ import annotations

__all__: list[str] = []
