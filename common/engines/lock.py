"""A lock file that keeps two trainings from writing into one checkpoint folder.

Two runs started with the same ``ckpt_dir`` (a forgotten terminal, a re-submitted job) would overwrite each
other's ``checkpoint_epoch=*.pt`` and ``model.pt`` without any error. :class:`TrainingLock` makes the second one
fail at start-up with a message naming the folder and the process that holds it.
"""

from __future__ import annotations

import atexit
import datetime
import errno
import json
import logging
import os
import socket
import threading
import weakref
from typing import Any

from common.utils.dist import is_rank_zero
from common.utils.errors import UserError

__all__ = ["TrainingLock", "TrainingLockError"]

logger = logging.getLogger(__name__)

# lock path -> the live TrainingLock of this process that holds it
_HOLDERS: weakref.WeakValueDictionary[str, TrainingLock] = weakref.WeakValueDictionary()
_REGISTRY_LOCK = threading.Lock()


class TrainingLockError(RuntimeError, UserError):
    """Raised when ``ckpt_dir`` is already used by a running training."""


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (a zombie counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError as e:  # pragma: no cover - platform specific
        return e.errno != errno.ESRCH
    return True


class TrainingLock:
    """Exclusive lock of a checkpoint folder for the duration of a training.

    ``acquire`` creates ``<ckpt_dir>/<name>`` atomically (``O_CREAT | O_EXCL``) with the holder's pid, host and
    start time as JSON. A lock that exists is

    - *held* (:class:`TrainingLockError`) when its pid is alive on this host and is another process, or when
      it is this process and another live, not-crashed ``TrainingLock`` of this process holds it; a lock written
      on another host is always treated as held (its pid cannot be checked from here);
    - *stale* and replaced with a warning otherwise: its process died (killed, crashed), or it is this
      process's own leftover from an earlier in-process run that crashed.

    Used as a MONAI/Ignite handler (``attach``), the lock is taken when the trainer is built and released on
    ``Events.COMPLETED``, ``Events.TERMINATE`` and on an exception. Ignite stops calling ``EXCEPTION_RAISED``
    handlers after the first one that raises (MONAI's ``StatsHandler`` and ``CheckpointSaver`` do) and does
    not re-raise when any such handler exists, so the lock's own ``EXCEPTION_RAISED`` handler releases and then
    re-raises: the exception always propagates. Attach the lock before other handlers that handle exceptions
    (first in ``train#handlers``). Should one of those run first, the lock is still considered stale by the
    next in-process ``acquire`` (its engine's ``last_event_name`` is ``EXCEPTION_RAISED``) and is removed at
    interpreter exit (``atexit``); a process killed outright leaves a lock whose dead pid marks it stale.

    Under ``torchrun`` only rank 0 creates the lock (every rank writes into the same ``ckpt_dir``).

    Args:
        ckpt_dir: the checkpoint folder to protect (created if missing).
        name: lock file name inside ``ckpt_dir``.
    """

    def __init__(self, ckpt_dir: str, name: str = ".training.lock") -> None:
        if not ckpt_dir:
            raise ValueError("ckpt_dir must be a non-empty folder path.")
        if not name or os.sep in name or name in (".", ".."):
            raise ValueError(f"name must be a plain file name, got {name!r}.")
        self.ckpt_dir = str(ckpt_dir)
        self.name = name
        self.path = os.path.realpath(os.path.join(self.ckpt_dir, name))
        self._held = False
        self._engine: weakref.ref | None = None

    @property
    def held(self) -> bool:
        """Whether this instance currently holds the lock file."""
        return self._held

    def _content(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "start_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "ckpt_dir": os.path.abspath(self.ckpt_dir),
        }

    def _read(self) -> dict[str, Any] | None:
        """The existing lock's content; ``None`` if it vanished; ``{}`` if unreadable (being written)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except json.JSONDecodeError:
            return {}
        return info if isinstance(info, dict) else {}

    def _crashed(self) -> bool:
        """Whether this instance's engine stopped on an exception without releasing (handler order)."""
        from ignite.engine import Events

        engine = self._engine() if self._engine is not None else None
        return engine is not None and getattr(engine, "last_event_name", None) == Events.EXCEPTION_RAISED

    def _live_holder_in_process(self) -> TrainingLock | None:
        holder = _HOLDERS.get(self.path)
        if holder is None or holder is self or not holder._held or holder._crashed():
            return None
        return holder

    def _error(self, info: dict[str, Any]) -> TrainingLockError:
        who = f"pid {info.get('pid', '?')} on host '{info.get('hostname', '?')}'"
        since = f", started {info['start_time']}" if info.get("start_time") else ""
        return TrainingLockError(
            f"checkpoint folder '{self.ckpt_dir}' is locked by a running training ({who}{since}): two trainings "
            f"into one ckpt_dir would overwrite each other's checkpoints. Wait for it to finish, stop it, or choose "
            f"another ckpt_dir; if no such training is running, delete '{self.path}'."
        )

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self._content(), f)
        return True

    def acquire(self) -> None:
        """Take the lock (idempotent for its holder); a no-op on ranks other than 0.

        Raises:
            TrainingLockError: naming the folder and the holder's pid when another training holds it.
        """
        if self._held or not is_rank_zero():
            return
        os.makedirs(self.ckpt_dir, exist_ok=True)
        with _REGISTRY_LOCK:
            for _ in range(10):
                if self._create():
                    break
                info = self._read()
                if info is None:  # released between our two calls: retry
                    continue
                pid, host = info.get("pid"), info.get("hostname")
                if not isinstance(pid, int) or host != socket.gethostname():
                    raise self._error(info or {"pid": "?", "hostname": "?"})
                if pid == os.getpid():
                    if self._live_holder_in_process() is not None:
                        raise self._error(info)
                    reason = "an earlier run in this process stopped without releasing it"
                elif _pid_alive(pid):
                    raise self._error(info)
                else:
                    reason = f"its process {pid} is not running"
                if self._read() != info:  # replaced meanwhile by another process: re-examine
                    continue
                logger.warning(f"replacing the stale training lock '{self.path}' ({reason}).")
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
            else:
                raise self._error(self._read() or {})
            self._held = True
            _HOLDERS[self.path] = self

    def release(self) -> None:
        """Remove the lock file if this instance holds it (idempotent; another process's lock is left alone)."""
        if not self._held:
            return
        with _REGISTRY_LOCK:
            self._held = False
            if _HOLDERS.get(self.path) is self:
                del _HOLDERS[self.path]
            info = self._read()
            if info and info.get("pid") == os.getpid() and info.get("hostname") == socket.gethostname():
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass

    def __enter__(self) -> TrainingLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def attach(self, engine: Any) -> None:
        """Lock now; re-lock on ``STARTED`` (a resumed ``run``); unlock on completion, termination and errors.

        Args:
            engine: an Ignite ``Engine`` (e.g. ``PairedGanTrainer``).
        """
        from ignite.engine import Events

        self.acquire()
        self._engine = weakref.ref(engine)
        engine.add_event_handler(Events.STARTED, self._on_started)
        engine.add_event_handler(Events.COMPLETED, self._on_finished)
        engine.add_event_handler(Events.TERMINATE, self._on_finished)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._on_exception)

    def _on_started(self, engine: Any) -> None:
        self.acquire()

    def _on_finished(self, engine: Any) -> None:
        self.release()

    def _on_exception(self, engine: Any, e: BaseException) -> None:
        self.release()
        raise e


@atexit.register
def _release_all() -> None:
    for lock in list(_HOLDERS.values()):
        lock.release()
