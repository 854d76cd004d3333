"""Tests of common.engines.lock.TrainingLock: exclusive checkpoint folders across processes and runs."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
from ignite.engine import Engine, Events

from monai.handlers import StatsHandler

from common.engines.lock import TrainingLock, TrainingLockError
from common.utils.errors import UserError


def _lock_file(ckpt_dir) -> str:
    return os.path.join(str(ckpt_dir), ".training.lock")


def test_acquire_writes_json_and_release_removes(tmp_path):
    ckpt = tmp_path / "models"
    lock = TrainingLock(str(ckpt))
    lock.acquire()
    info = json.loads(open(_lock_file(ckpt)).read())
    assert info["pid"] == os.getpid() and info["hostname"] == socket.gethostname() and info["start_time"]
    assert lock.held
    lock.acquire()  # idempotent for the holder
    lock.release()
    assert not os.path.exists(_lock_file(ckpt)) and not lock.held
    lock.release()  # idempotent


def test_second_acquire_refused_while_held(tmp_path):
    first, second = TrainingLock(str(tmp_path)), TrainingLock(str(tmp_path))
    first.acquire()
    with pytest.raises(TrainingLockError) as err:
        second.acquire()
    msg = str(err.value)
    assert str(tmp_path) in msg and f"pid {os.getpid()}" in msg and "overwrite" in msg
    assert isinstance(err.value, RuntimeError) and isinstance(err.value, UserError)
    second.release()  # not the holder: leaves the file alone
    assert os.path.exists(_lock_file(tmp_path))
    first.release()
    second.acquire()
    assert second.held
    second.release()


def test_stale_lock_of_dead_pid_taken_over(tmp_path, caplog):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: its pid is dead
    with open(_lock_file(tmp_path), "w") as f:
        json.dump({"pid": proc.pid, "hostname": socket.gethostname(), "start_time": "2020-01-01T00:00:00"}, f)
    lock = TrainingLock(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="common.engines.lock"):
        lock.acquire()
    assert "stale" in caplog.text and str(proc.pid) in caplog.text
    assert json.loads(open(_lock_file(tmp_path)).read())["pid"] == os.getpid()
    lock.release()


def test_own_pid_leftover_without_live_holder_taken_over(tmp_path):
    with open(_lock_file(tmp_path), "w") as f:
        json.dump({"pid": os.getpid(), "hostname": socket.gethostname(), "start_time": "x"}, f)
    with TrainingLock(str(tmp_path)) as lock:
        assert lock.held
    assert not os.path.exists(_lock_file(tmp_path))


def test_lock_held_by_live_subprocess_refused(tmp_path):
    # the subprocess writes the lock file's format itself (importing common would take seconds)
    code = (
        "import json, os, socket, time\n"
        f"with open({_lock_file(tmp_path)!r}, 'x') as f:\n"
        "    json.dump({'pid': os.getpid(), 'hostname': socket.gethostname(), 'start_time': 'now'}, f)\n"
        "print('locked', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(TrainingLockError, match=f"pid {proc.pid}"):
            TrainingLock(str(tmp_path)).acquire()
    finally:
        proc.kill()
        proc.wait()
    # the killed process could not release: its lock is now stale
    lock = TrainingLock(str(tmp_path))
    lock.acquire()
    assert json.loads(open(_lock_file(tmp_path)).read())["pid"] == os.getpid()
    lock.release()


def _engine(fail_at: int | None = None) -> Engine:
    def step(engine, batch):
        if fail_at is not None and engine.state.iteration == fail_at:
            raise ValueError("boom in iteration")
        return {"loss": torch.tensor(float(batch))}

    return Engine(step)


def test_released_after_engine_completes(tmp_path):
    engine = _engine()
    lock = TrainingLock(str(tmp_path))
    lock.attach(engine)
    assert os.path.exists(_lock_file(tmp_path))
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(os.path.exists(_lock_file(tmp_path))))
    engine.run([1, 2, 3], max_epochs=2)
    assert seen == [True] * 6
    assert not os.path.exists(_lock_file(tmp_path)) and not lock.held
    engine.run([1, 2], max_epochs=3)  # a second run re-locks at STARTED and unlocks at COMPLETED
    assert len(seen) > 6 and all(seen) and not os.path.exists(_lock_file(tmp_path))


@pytest.mark.parametrize("with_stats_handler", [False, True])
def test_released_after_engine_raises(tmp_path, with_stats_handler):
    engine = _engine(fail_at=2)
    TrainingLock(str(tmp_path)).attach(engine)
    if with_stats_handler:  # registers its own, re-raising EXCEPTION_RAISED handler after the lock's
        StatsHandler(name="test_lock_stats", iteration_log=False, epoch_log=False).attach(engine)
    with pytest.raises(ValueError, match="boom in iteration"):
        engine.run([1, 2, 3], max_epochs=1)
    assert not os.path.exists(_lock_file(tmp_path))


def test_crashed_holder_attached_after_stats_handler_is_stale(tmp_path):
    engine = _engine(fail_at=1)
    StatsHandler(name="test_lock_stats_first", iteration_log=False, epoch_log=False).attach(engine)
    crashed = TrainingLock(str(tmp_path))
    crashed.attach(engine)  # its EXCEPTION_RAISED handler is skipped: StatsHandler raises first
    with pytest.raises(ValueError, match="boom"):
        engine.run([1], max_epochs=1)
    assert os.path.exists(_lock_file(tmp_path)) and crashed.held
    retry = TrainingLock(str(tmp_path))
    retry.acquire()  # the crashed in-process holder does not block a new run
    assert retry.held
    retry.release()
    assert not os.path.exists(_lock_file(tmp_path))


def test_terminate_releases(tmp_path):
    engine = _engine()
    TrainingLock(str(tmp_path)).attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate())
    start = time.time()
    engine.run([1, 2, 3], max_epochs=5)
    assert engine.state.iteration == 2 and time.time() - start < 5
    assert not os.path.exists(_lock_file(tmp_path))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="ckpt_dir"):
        TrainingLock("")
    with pytest.raises(ValueError, match="name"):
        TrainingLock("/tmp", name="a/b")


def test_only_rank_zero_locks(tmp_path, monkeypatch):
    import common.engines.lock as lock_module

    monkeypatch.setattr(lock_module, "is_rank_zero", lambda: False)
    other_rank = TrainingLock(str(tmp_path))
    other_rank.acquire()
    assert not other_rank.held and not os.path.exists(_lock_file(tmp_path))
    monkeypatch.setattr(lock_module, "is_rank_zero", lambda: True)
    with TrainingLock(str(tmp_path)) as rank_zero:
        assert rank_zero.held and os.path.exists(_lock_file(tmp_path))
