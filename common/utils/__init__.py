"""Utilities: repository and bundle paths, figure grids."""

from __future__ import annotations

from .figures import middle_slice, save_figure_grid, window_to_uint8
from .paths import bundle_root, default_dataset_dir, repo_root

__all__ = ["bundle_root", "default_dataset_dir", "repo_root", "middle_slice", "save_figure_grid", "window_to_uint8"]
