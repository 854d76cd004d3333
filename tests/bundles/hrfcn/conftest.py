"""Fixtures of the HR-FCN bundle tests: the tiny phantom with a tumour in every test case, one stage-1 training."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hrfcn_helpers import (
    TINY,
    _abs_case,
    _workflow,
    _write_datalist,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP oversubscription on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tiny_phantom, tmp_path_factory) -> dict:
    """A datalist over the tiny phantom whose test cases all hold a tumour (absolute paths)."""
    meta = json.loads((Path(tiny_phantom) / "datalist.json").read_text())
    cases = {s: [_abs_case(tiny_phantom, c) for c in meta[s]] for s in ("training", "validation", "test")}
    everyone = cases["training"] + cases["validation"] + cases["test"]
    tumour = [c for c in everyone if (np.asarray(nib.load(c["tumor_mask"]).dataobj) > 0).any()]
    assert tumour, "the tiny phantom has no subject with a tumour"
    test = tumour[:2]
    root = tmp_path_factory.mktemp("hrfcn_data")
    datalist = _write_datalist(
        root / "datalist.json", training=cases["training"], validation=cases["validation"], test=test
    )
    return {"datalist": datalist, "test": test, "cases": everyone, "dir": root}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """Stage 1: one epoch of two iterations, validation on the validation case (writes model.pt)."""
    root = tmp_path_factory.mktemp("hrfcn_bundle")
    wf = _workflow(
        ["train.json"],
        bundle_root=str(root),
        datalist=str(data["datalist"]),
        **TINY,
        **{"train#trainer#epoch_length": 2},
    )
    wf.initialize()
    wf.run()
    state = wf.parser.get_parsed_content("train#trainer").state
    assert (state.epoch, state.iteration) == (1, 2)
    wf.finalize()
    return root
