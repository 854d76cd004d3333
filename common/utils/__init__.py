"""Utilities: repository and bundle paths, figure grids, distributed ranks, user-facing errors, boolean flags."""

from __future__ import annotations

from .dist import is_rank_zero, rank, world_size
from .errors import UserError
from .figures import middle_slice, save_figure_grid, window_to_uint8
from .flags import as_flag
from .paths import bundle_root, default_dataset_dir, repo_root

__all__ = [
    "as_flag",
    "is_rank_zero",
    "rank",
    "world_size",
    "UserError",
    "bundle_root",
    "default_dataset_dir",
    "repo_root",
    "middle_slice",
    "save_figure_grid",
    "window_to_uint8",
]
