"""The process pool: ``nnphases`` commands in subprocesses, at most ``slots`` at once, each in its own process
group so that a deadline stops it whole, with its CPU time accounted.

:mod:`nnphases.experiments.sweep` runs jobs through submitit, which has no deadline to stop them at; this pool
exists for the budget: it kills calibration and training at the deadline and keeps what they wrote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import REPO


def nnphases() -> list[str]:
    """``nnphases`` as its console script would run it (pyproject's entry point), with this interpreter: works
    where the package is installed and where it is not (PYTHONPATH has the repository)."""
    target = "nnphases.cli:app"
    try:
        import tomllib

        target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["nnphases"]
    except (OSError, KeyError, ValueError, ImportError):
        pass
    mod, attr = target.split(":")
    return [sys.executable, "-c", f"import sys; sys.argv[0] = 'nnphases'; from {mod} import {attr} as main; "
                                  f"sys.exit(main())"]


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # Errors leave a plain traceback in the run's log (typer's own would print every local variable).
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", NNPHASES_TRACEBACK="1", _TYPER_STANDARD_TRACEBACK="1",
               COLUMNS="200", TERM="dumb",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    return env


@dataclass
class Task:
    key: str  # "calib/<job>/s<seed>", "train/<job>/s<seed>", "finalize/<job>"
    kind: str
    job: str
    cmds: list[tuple[list[str], Path | None]]  # argv and where its stdout goes (None: the log)
    log: Path
    on_done: Callable[[Task], None]
    seed: int | None = None
    priority: int = 0
    proc: subprocess.Popen | None = None
    index: int = 0
    started: float = 0.0
    ended: float = 0.0
    rc: int | None = None  # the first non-zero exit status of its commands, else 0
    rcs: list[int] = field(default_factory=list)
    killed: str = ""  # why it was stopped: "at the deadline", "at the budget's end", "by SIGTERM"
    cpu: float = 0.0  # user + system seconds of its processes
    _files: list[Any] = field(default_factory=list)


class Pool:
    """At most ``slots`` subprocesses at once, each in its own process group (killed as a whole)."""

    def __init__(self, slots: int, env: dict[str, str]) -> None:
        self.slots, self.env = slots, env
        self.queue: list[Task] = []
        self.running: list[Task] = []

    def submit(self, task: Task) -> None:
        self.queue.append(task)
        self.queue.sort(key=lambda t: -t.priority)

    def busy(self) -> bool:
        return bool(self.queue or self.running)

    def _start(self, task: Task) -> None:
        argv, stdout = task.cmds[task.index]
        task.log.parent.mkdir(parents=True, exist_ok=True)
        logf = open(task.log, "a")
        logf.write(f"$ {' '.join(argv[3:] if argv[1:2] == ['-c'] else argv)}\n")
        logf.flush()
        outf = open(stdout, "w") if stdout else logf
        task._files = [logf] + ([outf] if stdout else [])
        task.proc = subprocess.Popen(argv, stdout=outf, stderr=logf, stdin=subprocess.DEVNULL, env=self.env,
                                     cwd=REPO, process_group=0)

    def poll(self) -> None:
        for task in list(self.running):
            rc = _reap(task)
            if rc is None:
                continue
            for f in task._files:
                f.close()
            task.rcs.append(rc)
            if not task.killed and task.index + 1 < len(task.cmds):  # the next command runs whatever this one gave
                task.index += 1
                self._start(task)
                continue
            task.rc, task.ended = next((r for r in task.rcs if r != 0), 0), time.time()
            self.running.remove(task)
            task.on_done(task)
        while self.queue and len(self.running) < self.slots:
            task = self.queue.pop(0)
            task.started = time.time()
            self.running.append(task)
            self._start(task)

    def kill(self, why: str, kinds: set[str] | None = None, grace: float = 3.0) -> None:
        """Stops the running tasks of these kinds (all when None) and drops the queued ones."""
        self.queue = [t for t in self.queue if kinds is not None and t.kind not in kinds]
        victims = [t for t in self.running if kinds is None or t.kind in kinds]
        for t in victims:
            t.killed = why
            _signal(t, signal.SIGTERM)
        end = time.time() + grace
        while time.time() < end and any(_reap(t) is None for t in victims):
            time.sleep(0.1)
        for t in victims:
            if _reap(t) is None:
                _signal(t, signal.SIGKILL)
                while _reap(t) is None:
                    time.sleep(0.05)
        self.poll()


def _reap(task: Task) -> int | None:
    """The exit status of the task's current process (None while it runs), adding its CPU time to the task's."""
    proc = task.proc
    if proc.returncode is not None:
        return proc.returncode
    try:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:
        return proc.poll()
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    task.cpu += usage.ru_utime + usage.ru_stime
    return proc.returncode


def _signal(task: Task, sig: int) -> None:
    try:
        os.killpg(task.proc.pid, sig)
    except ProcessLookupError:
        pass
