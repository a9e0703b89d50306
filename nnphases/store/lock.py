"""One writer per run folder: an advisory flock on ``RUN/.lock`` that holds the writer's pid and host."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

from .atomic import mkdirs
from .errors import RunLocked
from .layout import LOCK_FILE


class _Held:
    """This process's flock on one run folder, shared by its RunLock handles."""

    def __init__(self, key: Path, fd: int) -> None:
        self.key, self.fd, self.count, self.pid = key, fd, 1, os.getpid()


_held: dict[Path, _Held] = {}
# Re-entrant: a RunLock's __del__ may run in the garbage collector while this thread holds the guard.
_held_guard = threading.RLock()


class RunLock:
    """A hold on a run folder's writer lock (from :meth:`RunDir.lock`); ``release()``, the end of a ``with``
    block or garbage collection lets go of it, and the kernel does when the process dies."""

    def __init__(self, held: _Held, path: Path) -> None:
        self._held: _Held | None = held
        self.path = path

    @property
    def held(self) -> bool:
        return self._held is not None

    def release(self) -> None:
        """Let go of this hold (later calls do nothing); the lock is free once every hold of the process is."""
        h, self._held = self._held, None
        if h is None:
            return
        with _held_guard:
            h.count -= 1
            if h.count > 0:
                return
            if _held.get(h.key) is h:
                del _held[h.key]
        if h.pid == os.getpid():
            # Unlock explicitly: a child forked meanwhile (a DataLoader worker) shares the descriptor and would
            # otherwise keep the folder locked; a child never unlocks its parent's lock.
            try:
                os.ftruncate(h.fd, 0)
                fcntl.flock(h.fd, fcntl.LOCK_UN)
            except OSError:
                pass
        os.close(h.fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # at interpreter shutdown the modules it needs may be gone; the kernel unlocks anyway
            pass

    def __repr__(self) -> str:
        return f"RunLock({str(self.path)!r}, held={self.held})"


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        return f"pid {int(info['pid'])} on host {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def lock_holder(folder: Path) -> dict | None:
    """Who last took ``folder``'s writer lock and still names itself in it (``pid``, ``host``, ``since``), read
    without taking the lock (a reader must never keep a writer out); None when the lock file is empty or absent. A
    writer that let go emptied it; one that was killed leaves its name behind, so callers check that the pid lives."""
    try:
        info = json.loads((Path(folder) / LOCK_FILE).read_bytes() or b"null")
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
        return None
    return info


def take_lock(folder: Path) -> RunLock:
    """Take ``folder``'s writer lock (see :meth:`nnphases.store.RunDir.lock`)."""
    mkdirs(folder)
    key = folder.resolve()
    with _held_guard:
        h = _held.get(key)
        if h is not None and h.pid == os.getpid():
            h.count += 1
            return RunLock(h, folder / LOCK_FILE)
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunLocked(
                f"run folder {str(folder)!r} is being written by another process ({holder}); "
                "one writer per run: wait for it to end or stop it"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        h = _held[key] = _Held(key, fd)
        return RunLock(h, folder / LOCK_FILE)
