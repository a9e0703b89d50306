"""Numba CPU backend, metric kernels: the sample-set metrics of one layer from its
per-class counts in one pass (the arithmetic of csrc/cpu/node_metrics.cpp)."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ..metrics import LayerMetrics, NodeMetrics
from . import _metrics
from ._numba_common import _jit, _num_threads

METRICS_BLOCK = 256  # nodes per block, as in csrc/cpu/node_metrics.cpp (so the layer sums are the same)


@_jit(inline="always")
def _neg_xlogx_ratio(m: float, d: float) -> float:
    return 0.0 - np.log(max(m, 1.0) / d) * m


@_jit(parallel=True)
def _node_metrics(
    counts: np.ndarray, sizes: np.ndarray, pairs: np.ndarray, offsets: np.ndarray, hz_table: np.ndarray,
    use_hz: bool, h_y: float, log_k: float, store: bool, class_fraction: np.ndarray, fraction: np.ndarray,
    predictability: np.ndarray, informativeness: np.ndarray, h_z_given_y: np.ndarray, h_y_given_z: np.ndarray,
    dead_out: np.ndarray, always_out: np.ndarray, block_sums: np.ndarray, block_counts: np.ndarray,
) -> None:
    # The arithmetic of nnphases.metrics in the same order (see csrc/cpu/node_metrics.cpp):
    # classes outer within a block of nodes, layer sums compensated per block.
    C, N = counts.shape
    total = 0
    present = 0
    for c in range(C):
        total += sizes[c]
        present += sizes[c] > 0
    tot = float(total)
    log2 = np.log(2.0)
    blocks = block_sums.shape[0]
    for b in prange(blocks):
        d0 = b * METRICS_BLOCK
        w = min(METRICS_BLOCK, N - d0)
        nn = np.zeros(w, np.int64)
        frac = np.zeros(w)
        acc = np.zeros(w)
        for c in range(C):
            row = counts[c, d0 : d0 + w]
            s = sizes[c]
            for j in range(w):
                nn[j] += row[j]
            if s == 0:
                if store:
                    for j in range(w):
                        class_fraction[c, d0 + j] = np.nan
                continue
            o = offsets[c]
            if o >= 0:  # NumPy's class fraction and entropy term of each possible count, one row of pairs
                for j in range(w):
                    cf = pairs[o + row[j], 0]
                    if store:
                        class_fraction[c, d0 + j] = cf
                    frac[j] += cf
                    acc[j] += pairs[o + row[j], 1]
            else:
                sd = float(s)
                for j in range(w):
                    m = float(row[j])
                    cf = m / sd
                    if store:
                        class_fraction[c, d0 + j] = cf
                    frac[j] += cf
                    acc[j] += _neg_xlogx_ratio(m, sd)
                    acc[j] += _neg_xlogx_ratio(sd - m, sd)
        sums = np.zeros(3)
        comp = np.zeros(3)
        f_n = p_n = u_n = dead_n = always_n = 0
        for j in range(w):
            dead = nn[j] == 0
            always = nn[j] == total
            f = frac[j] / present
            hzy = np.nan
            hyz = np.nan
            if not (dead or always):
                q = float(nn[j])
                hz = hz_table[nn[j]] if use_hz else (_neg_xlogx_ratio(q, tot) + _neg_xlogx_ratio(tot - q, tot)) / tot
                hzy = min(max(acc[j] / tot, 0.0), hz)
                hyz = max(h_y - hz + hzy, 0.0)
            p = 1.0 - hzy / log2
            u = 1.0 - hyz / log_k
            if store:
                d = d0 + j
                fraction[d] = f
                predictability[d] = p
                informativeness[d] = u
                h_z_given_y[d] = hzy
                h_y_given_z[d] = hyz
                dead_out[d] = dead
                always_out[d] = always
            vals = (f, p, u)
            ok = (not dead, p == p, u == u)
            for k in range(3):
                if ok[k]:
                    x = vals[k]
                    t = sums[k] + x
                    if abs(sums[k]) >= abs(x):
                        comp[k] += (sums[k] - t) + x
                    else:
                        comp[k] += (x - t) + sums[k]
                    sums[k] = t
            f_n += not dead
            p_n += p == p
            u_n += u == u
            dead_n += dead
            always_n += always
        for k in range(3):
            block_sums[b, k] = sums[k] + comp[k]
        block_counts[b, 0] = f_n
        block_counts[b, 1] = p_n
        block_counts[b, 2] = u_n
        block_counts[b, 3] = dead_n
        block_counts[b, 4] = always_n


@_jit()
def _neumaier_columns(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape[1])
    for k in range(x.shape[1]):
        s = 0.0
        c = 0.0
        for i in range(x.shape[0]):
            v = x[i, k]
            t = s + v
            if abs(s) >= abs(v):
                c += (s - t) + v
            else:
                c += (v - t) + s
            s = t
        out[k] = s + c
    return out


def _run_metrics(counts: np.ndarray, class_sizes: np.ndarray, store: bool,
                 threads: int | None) -> tuple[_metrics.Plan, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    p = _metrics.plan(counts, class_sizes)
    c, n = p.counts.shape
    out = _metrics.node_outputs(p) if store else {}
    empty1, empty2, empty_b = np.empty(0), np.empty((0, 0)), np.empty(0, np.bool_)
    blocks = -(-n // METRICS_BLOCK)
    block_sums = np.zeros((blocks, 3))
    block_counts = np.zeros((blocks, 5), np.int64)
    hz = p.hz_table if p.hz_table is not None else empty1
    # About a quarter-million counts per thread, as the C++ kernel does: waking the pool costs
    # milliseconds on a busy machine, more than a small table's whole pass.
    want = numba.get_num_threads() if threads is None else threads
    with _num_threads(min(want, c * n // (1 << 18) + 1)):
        _node_metrics(
            p.counts, p.class_sizes, p.pairs, p.table_offset, hz, p.hz_table is not None, p.h_y, p.log_k, store,
            out.get("class_fraction", empty2), out.get("fraction", empty1), out.get("predictability", empty1),
            out.get("informativeness", empty1), out.get("h_z_given_y", empty1), out.get("h_y_given_z", empty1),
            out.get("dead", empty_b), out.get("always_active", empty_b), block_sums, block_counts,
        )
    return p, out, _neumaier_columns(block_sums), block_counts.sum(axis=0)


def node_metrics(counts: np.ndarray, class_sizes: np.ndarray, *, threads: int | None = None) -> NodeMetrics:
    """-> per-node metrics, the arithmetic of nnphases.metrics.node_metrics_np in one pass."""
    return _metrics.node_result(_run_metrics(counts, class_sizes, True, threads)[1])


def layer_metrics(counts: np.ndarray, class_sizes: np.ndarray, *, threads: int | None = None) -> LayerMetrics:
    """-> layer summaries from the same pass, without building any per-node array."""
    p, _, sums, counts_ = _run_metrics(counts, class_sizes, False, threads)
    return _metrics.layer_result(sums, counts_, p.counts.shape[1])
