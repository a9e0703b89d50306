"""Shared benchmark tables and the same-run ratios.

Each benchmark times one kernel on one case, checks its result against the
reference, and records its time next to the machine's streaming-read bandwidth
measured on the same buffer right before it. The summary at the end prints
every figure as a ratio measured in this run: to the read bandwidth, and to the
naive NumPy and PyTorch baselines of the same case. With ``--benchmark-disable``
(CI) the cases shrink so that the suite checks correctness in seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import torch

from nnphases import _C


@dataclass(frozen=True)
class Case:
    name: str
    samples: int
    nodes: int
    classes: int
    dtype: str
    batch: int = 0  # >0: fed in batches of this many samples, counts summed

    def scaled(self, quick: bool) -> "Case":
        if not quick:
            return self
        return Case(self.name, max(64, self.samples // 64), max(3, self.nodes // 16), self.classes, self.dtype,
                    self.batch and max(16, self.batch // 16))


CASES = [
    Case("mnist-4096", 60000, 4096, 10, "float32"),
    Case("mnist-4096-f16", 60000, 4096, 10, "float16"),
    Case("mnist-4096-c100", 60000, 4096, 100, "float32"),
    Case("mlp-9x320", 12000, 2880, 10, "float32"),
    Case("conv-300k", 1024, 300_000, 10, "float32", batch=256),
]
CASE_IDS = [c.name for c in CASES]


@dataclass
class Record:
    case: str
    kernel: str
    impl: str
    seconds: float
    elements: int
    nbytes: int
    read_bw: float


RESULTS: list[Record] = []


def quick(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_disable", default=False))


_inputs: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


@pytest.fixture
def inputs(request: pytest.FixtureRequest) -> Callable[[Case], tuple[Case, torch.Tensor, torch.Tensor]]:
    """Case -> (scaled case, acts, labels), generated once per session (generation is slow)."""

    def get(case: Case) -> tuple[Case, torch.Tensor, torch.Tensor]:
        c = case.scaled(quick(request.config))
        key = (c.samples, c.nodes, c.classes, c.dtype)
        if key not in _inputs:
            g = torch.Generator().manual_seed(hash(key) % 2**31)
            acts = torch.randn((c.samples, c.nodes), generator=g).to(getattr(torch, c.dtype))
            labels = torch.randint(0, c.classes, (c.samples,), generator=g)
            _inputs.clear()  # keep one case in memory at a time
            _inputs[key] = (acts, labels)
        return (c, *_inputs[key])

    return get


def read_bandwidth(t: torch.Tensor, threads: int | None = None) -> float:
    """Bytes per second of a streaming read of t (best of 3), the yardstick of the CPU kernels."""
    arr = t.view(torch.uint8).numpy() if t.dtype != torch.bool else t.numpy().view(np.uint8)
    best = float("inf")
    for _ in range(3):
        a = time.perf_counter()
        _C.stream_read(arr, threads or 0)
        best = min(best, time.perf_counter() - a)
    return arr.nbytes / best


def run(benchmark, fn: Callable[[], object], *, rounds: int = 3) -> object:
    """Times fn with pytest-benchmark (one warm-up outside the timing) and returns its last result."""
    out = {}

    def call() -> None:
        out["r"] = fn()

    if benchmark.disabled:
        call()
    else:
        benchmark.pedantic(call, rounds=rounds, warmup_rounds=1, iterations=1)
    return out["r"]


def record(benchmark, case: Case, kernel: str, impl: str, acts: torch.Tensor, read_bw: float) -> None:
    if benchmark.disabled or benchmark.stats is None:
        return
    sec = benchmark.stats.stats.min
    RESULTS.append(Record(case.name, kernel, impl, sec, acts.numel(), acts.numel() * acts.element_size(), read_bw))
    benchmark.extra_info.update(gb_per_s=acts.numel() * acts.element_size() / sec / 1e9,
                                of_read_bandwidth=acts.numel() * acts.element_size() / sec / read_bw)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if not RESULTS:
        return
    w = terminalreporter
    w.section("nnphases: figures measured in this run (ratios in the same run)")
    w.write_line(f"{'case':16s} {'kernel':20s} {'impl':22s} {'time ms':>9s} {'Gact/s':>7s} {'GB/s':>6s} "
                 f"{'of read':>7s} {'x numpy':>7s} {'x torch':>7s}")
    base: dict[tuple[str, str], dict[str, float]] = {}
    for r in RESULTS:
        base.setdefault((r.case, r.kernel), {})[r.impl] = r.seconds
    for r in RESULTS:
        b = base[(r.case, r.kernel)]
        npy = b.get("numpy-boolmask")
        tch = min((v for k, v in b.items() if k.startswith("torch-")), default=None)
        w.write_line(
            f"{r.case:16s} {r.kernel:20s} {r.impl:22s} {r.seconds * 1e3:9.1f} {r.elements / r.seconds / 1e9:7.2f} "
            f"{r.nbytes / r.seconds / 1e9:6.1f} {r.nbytes / r.seconds / r.read_bw:7.2f} "
            f"{(npy / r.seconds if npy else float('nan')):7.1f} {(tch / r.seconds if tch else float('nan')):7.1f}")
