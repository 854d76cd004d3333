"""Tests of common.utils.dist: ranks with and without an initialised process group."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from common.utils import dist as cdist


def test_not_initialised_is_rank_zero():
    assert not dist.is_initialized()
    assert cdist.is_rank_zero() is True
    assert cdist.rank() == 0
    assert cdist.world_size() == 1


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_monkeypatched_ranks(monkeypatch, rank):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: rank)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 4)
    assert cdist.rank() == rank
    assert cdist.world_size() == 4
    assert cdist.is_rank_zero() is (rank == 0)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
            f.write(f"{cdist.rank()} {cdist.world_size()} {int(cdist.is_rank_zero())}")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_gloo_world_size_two(tmp_path):
    init_file = os.path.join(tempfile.mkdtemp(dir=tmp_path), "pg_init")
    # fork: the children share the imported torch instead of re-importing it (seconds on a loaded machine)
    mp.start_processes(_worker, args=(2, init_file, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    assert (tmp_path / "rank0.txt").read_text() == "0 2 1"
    assert (tmp_path / "rank1.txt").read_text() == "1 2 0"
