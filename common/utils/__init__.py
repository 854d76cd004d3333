"""Utilities: repository and bundle paths."""

from __future__ import annotations

from .paths import bundle_root, default_dataset_dir, repo_root

__all__ = ["bundle_root", "default_dataset_dir", "repo_root"]
