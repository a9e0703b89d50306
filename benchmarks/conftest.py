"""Benchmark fixtures and the end-of-run summary: every figure as a ratio measured
in this run, to the streaming-read bandwidth and to the naive NumPy and PyTorch
baselines of the same case."""

from __future__ import annotations

import zlib
from typing import Callable

import pytest
import torch

from bench_common import RESULTS, Case, quick

_inputs: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


@pytest.fixture
def inputs(request: pytest.FixtureRequest) -> Callable[[Case], tuple[Case, torch.Tensor, torch.Tensor]]:
    """Case -> (scaled case, acts, labels), generated once per session (generation is slow)."""

    def get(case: Case) -> tuple[Case, torch.Tensor, torch.Tensor]:
        c = case.scaled(quick(request.config))
        key = (c.samples, c.nodes, c.classes, c.dtype)
        if key not in _inputs:
            g = torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))  # the same in every process
            acts = torch.randn((c.samples, c.nodes), generator=g).to(getattr(torch, c.dtype))
            labels = torch.randint(0, c.classes, (c.samples,), generator=g)
            _inputs.clear()  # keep one case in memory at a time
            _inputs[key] = (acts, labels)
        return (c, *_inputs[key])

    return get


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
