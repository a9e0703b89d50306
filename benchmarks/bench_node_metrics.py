"""node_metrics and layer_metrics on the native backends against nnphases.kernels.metrics' NumPy
path (the oracle) on a 524,288-node, 10-class table (a conv layer's worth of nodes) and
the MLP preset's 2,880 nodes; each result is checked against NumPy, and the ratio to
NumPy measured in the same run is printed at the end."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest

import nnphases.kernels as K
from nnphases.kernels import refusal
from nnphases.kernels.metrics import NodeMetrics, layer_metrics_np, node_metrics_np

CASES = {"conv-524288x10": (10, 524_288, 6000), "mlp-2880x10": (10, 2880, 1200)}
IMPLS = {
    "numpy": lambda c, s: node_metrics_np(c, s),
    "cpp": lambda c, s: K.node_metrics(c, s, backend="cpp"),
    "cpp-1thread": lambda c, s: K.node_metrics(c, s, backend="cpp", threads=1),
    "numba": lambda c, s: K.node_metrics(c, s, backend="numba"),
    "numpy-layer": lambda c, s: layer_metrics_np(c, s),
    "cpp-layer": lambda c, s: K.layer_metrics(c, s, backend="cpp"),
    "numba-layer": lambda c, s: K.layer_metrics(c, s, backend="numba"),
}
_TIMES: dict[tuple[str, str], float] = {}
_TABLES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def table(case: str, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """Counts of a random layer: every class balanced, a few dead and always-active nodes."""
    if case not in _TABLES:
        c, n, size = CASES[case]
        if quick:
            n, size = max(64, n // 256), max(10, size // 16)
        rng = np.random.default_rng(0)
        sizes = np.full(c, size, np.int64)
        counts = rng.binomial(sizes[:, None], rng.random(n)[None, :]).astype(np.int64)
        counts[:, : n // 100] = 0
        counts[:, n // 100 : n // 50] = sizes[:, None]
        _TABLES.clear()
        _TABLES[case] = (counts, sizes)
    return _TABLES[case]


def impl_params() -> list:
    out = []
    for name in IMPLS:
        backend = name.split("-")[0]
        why = refusal(backend, "node_metrics", "cpu") if backend in ("cpp", "numba") else None
        out.append(pytest.param(name, id=name, marks=[pytest.mark.skip(reason=why)] if why else []))
    return out


@pytest.mark.parametrize("impl", impl_params())
@pytest.mark.parametrize("case", list(CASES))
def test_node_metrics(benchmark, case, impl):
    counts, sizes = table(case, benchmark.disabled)
    fn = IMPLS[impl]
    fn(counts, sizes)  # warm up: Numba compiles outside the timing
    got = benchmark.pedantic(lambda: fn(counts, sizes), rounds=5, warmup_rounds=1, iterations=1)
    if impl.endswith("layer"):
        want = layer_metrics_np(counts, sizes)
        for name in ("fraction", "predictability", "informativeness"):
            assert math.isclose(getattr(got, name), getattr(want, name), rel_tol=0, abs_tol=1e-14), name
    else:
        want = node_metrics_np(counts, sizes)
        for f in fields(NodeMetrics):
            np.testing.assert_allclose(getattr(got, f.name), getattr(want, f.name), rtol=0, atol=1e-14,
                                       err_msg=f.name)
    if not benchmark.disabled and benchmark.stats is not None:
        _TIMES[(case, impl)] = benchmark.stats.stats.min


def test_print_ratios(benchmark, capsys):
    """Runs last: the figures of this run, each as a ratio to the NumPy path of its case."""
    if benchmark.disabled or not _TIMES:
        pytest.skip("no timings (benchmarks disabled)")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    lines = [f"{'case':16s} {'impl':14s} {'time ms':>9s} {'x numpy':>8s}"]
    for (case, impl), sec in _TIMES.items():
        base = _TIMES.get((case, "numpy-layer" if impl.endswith("layer") else "numpy"))
        lines.append(f"{case:16s} {impl:14s} {sec * 1e3:9.2f} {(base / sec if base else float('nan')):8.2f}")
    with capsys.disabled():
        print("\nnode_metrics: speed-up over NumPy measured in this run\n" + "\n".join(lines))
