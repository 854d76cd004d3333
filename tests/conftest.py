"""Shared fixtures: a tiny physics phantom generated once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory) -> str:
    """Folder with 6 phantom subjects of 32 x 40 x 24 voxels (1 mm) and ``datalist.json``.

    Splits: 3 training, 1 validation, 2 test subjects. Generated once (about 3 s) and shared; tests must
    not write into it (copy it first when a test needs to corrupt a file).
    """
    from common.data.phantom import generate_dataset

    root = tmp_path_factory.mktemp("tiny_phantom")
    generate_dataset(
        root, num_subjects=6, shape=(32, 40, 24), spacing=(1.0, 1.0, 1.0), seed=0, fractions=(0.5, 0.17, 0.33)
    )
    return str(root)
