"""How many threads nnphases runs on the CPU: the cores this process may use.

A thread more than the process has cores does not finish sooner: it waits for a core, and a fork-join team
waits for its slowest member, so on a shared or quota-limited machine a team sized to the whole machine runs
at the pace of its most delayed thread. The CPU kernels (C++ and Numba) take their default thread count from
:func:`usable_cores`, and the command line sizes torch's intra-op pool with it.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """The number of threads to run: ``OMP_NUM_THREADS`` when it is set to a positive integer (the user's
    own choice, which torch and OpenMP follow too); otherwise the cores in this process's affinity mask
    (``taskset``, ``numactl``, a Slurm or container cpuset), capped by its cgroup's CPU quota (``cpu.max``
    under cgroup v2, ``cpu.cfs_quota_us`` under v1, in whole cores rounded up). At least 1."""
    told = _omp_num_threads()
    if told is not None:
        return told
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(n, quota) if quota is not None else n)


def _omp_num_threads() -> int | None:
    # OpenMP's variable may list one count per nesting level ("4,2"): the first is the team's size.
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


@functools.cache
def cgroup_quota(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """This process's CPU quota in whole cores, rounded up: the smallest over its cgroup and the cgroup's
    ancestors, under cgroup v2 and v1 alike (None: no quota, or nothing readable). Cached, because the
    kernels ask at every call and a process's quota is set when its container or job starts."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # the v2 hierarchy: at the root, or under unified/ on a hybrid system
            for base in (root, root / "unified"):
                quotas += _up(base, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            for base in {root / controllers, root / "cpu"}:
                quotas += _up(base, path, _v1_quota)
    return math.ceil(min(quotas)) if quotas else None


def _up(base: Path, path: str, read: Callable[[Path], float | None]) -> Iterator[float]:
    """The quotas read in ``base/path`` and in each folder above it up to ``base``."""
    if not base.is_dir():
        return
    folder = base / path.strip("/")
    while True:
        q = read(folder)
        if q is not None:
            yield q
        if folder == base or base not in folder.parents:
            return
        folder = folder.parent


def _v2_quota(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return int(quota) / int(period) if quota != "max" and int(period) > 0 and int(quota) > 0 else None
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
