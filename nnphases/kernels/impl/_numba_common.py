"""What the Numba kernel modules share: cached jit and the thread count of one call."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numba

from ..cores import usable_cores


def _jit(**options: object) -> Callable[[Callable], Callable]:
    """numba.njit with on-disk caching, lazily compiled on first call."""

    def wrap(fn: Callable) -> Callable:
        opts: dict[str, Any] = {"nogil": True, "error_model": "numpy", **options}
        try:
            return numba.njit(cache=True, **opts)(fn)
        except RuntimeError:
            # Numba raises when neither the package's __pycache__ nor a user cache
            # directory is writable; compiling in every process still works.
            return numba.njit(cache=False, **opts)(fn)

    return wrap


@contextmanager
def _num_threads(threads: int | None) -> Iterator[int]:
    # Numba sizes its pool by the affinity mask alone; a cgroup quota or OMP_NUM_THREADS lowers the default.
    if threads is None:
        threads = usable_cores()
    # Numba cannot run more threads than its pool was started with; the counts do
    # not depend on the thread count, so asking for more just uses them all.
    # numba.config sets NUMBA_NUM_THREADS at import, from the environment: no stub declares it.
    n = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(previous)
