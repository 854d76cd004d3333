"""Fixtures of the bundle-contract tests: one parametrised bundle spec and one tiny training per bundle."""

from __future__ import annotations

import pytest
import torch
from contract import BUNDLES, BundleSpec, run, workflow

IDS = [b.name for b in BUNDLES]


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP oversubscription on the 2-core machine (session-wide, so the
    session-scoped training and the runs compared with it use the same reduction order)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session", params=BUNDLES, ids=IDS)
def spec(request) -> BundleSpec:
    return request.param


@pytest.fixture(scope="session")
def trained(spec, tiny_phantom, tmp_path_factory):
    """A two-epoch schedule stopped after its first epoch: full state, best model, the workflow."""
    root = tmp_path_factory.mktemp(f"{spec.name}_trained")
    wf = run(
        workflow(spec, spec.train_configs, root, dataset_dir=tiny_phantom, **{**spec.schedule(2), "max_epochs": 1})
    )
    return root, wf
