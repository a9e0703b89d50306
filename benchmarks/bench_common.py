"""Shared benchmark tables and helpers: the cases, the same-run read-bandwidth
probe, timing through pytest-benchmark, and the records the summary prints
(benchmarks/conftest.py). With ``--benchmark-disable`` (CI) the cases shrink so
that the suite checks correctness in seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch

from nnphases.kernels.bench import read_bandwidth as _read_bandwidth


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


def read_bandwidth(t: torch.Tensor, threads: int | None = None) -> float:
    """Bytes per second of a streaming read of t (best of 3), the yardstick of the CPU kernels (the package's
    probe, which ``nnphases bench`` uses too)."""
    bw = _read_bandwidth(t, threads)
    assert bw is not None, "the C++ extension is not built: no read-bandwidth probe"
    return bw


def run(benchmark, fn: Callable[[], object], *, rounds: int = 3) -> object:
    """Times fn with pytest-benchmark (one warm-up outside the timing) and returns its last result."""
    out = {}

    def call() -> None:
        out["r"] = fn()

    benchmark.pedantic(call, rounds=rounds, warmup_rounds=1, iterations=1)  # disabled: one plain call
    return out["r"]


def record(benchmark, case: Case, kernel: str, impl: str, acts: torch.Tensor, read_bw: float) -> None:
    if benchmark.disabled or benchmark.stats is None:
        return
    sec = benchmark.stats.stats.min
    RESULTS.append(Record(case.name, kernel, impl, sec, acts.numel(), acts.numel() * acts.element_size(), read_bw))
    benchmark.extra_info.update(gb_per_s=acts.numel() * acts.element_size() / sec / 1e9,
                                of_read_bandwidth=acts.numel() * acts.element_size() / sec / read_bw)
