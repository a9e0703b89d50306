"""Numba CPU backend, metric kernels: the sample-set metrics of one layer from its
per-class counts in one pass, with the arithmetic of csrc/cpu/node_metrics.cpp in the
same order (node outputs as nnphases.kernels.metrics computes them; layer sums in the same
four lanes per block), so the two backends agree exactly."""

from __future__ import annotations

import numpy as np
from numba import prange

from .. import _metrics
from ..cores import usable_cores
from ..metrics import LayerMetrics, NodeMetrics
from ._numba_common import _jit, _num_threads

METRICS_BLOCK = 256  # nodes per block, as in csrc/cpu/node_metrics.cpp (so the layer sums are the same)
LANES = 4  # node j of a block adds to lane j % 4 of the layer sums, as the C++ kernel's vectors do


@_jit(inline="always")
def _neg_xlogx_ratio(m: float, d: float) -> float:
    return 0.0 - np.log(max(m, 1.0) / d) * m


@_jit(inline="always")
def _hz(nn: int, hz_table: np.ndarray, use_hz: bool, tot: float) -> float:
    if use_hz:
        return hz_table[nn]
    q = float(nn)
    return (_neg_xlogx_ratio(q, tot) + _neg_xlogx_ratio(tot - q, tot)) / tot


@_jit(inline="always")
def _neumaier(s: np.ndarray, c: np.ndarray, k: int, x: float) -> None:
    t = s[k] + x
    if abs(s[k]) >= abs(x):
        c[k] += (s[k] - t) + x
    else:
        c[k] += (x - t) + s[k]
    s[k] = t


@_jit(parallel=True)
def _node_metrics(
    counts: np.ndarray,
    sizes: np.ndarray,
    pairs: np.ndarray,
    offsets: np.ndarray,
    hz_table: np.ndarray,
    use_hz: bool,
    h_y: float,
    log_k: float,
    store: bool,
    class_fraction: np.ndarray,
    fraction: np.ndarray,
    predictability: np.ndarray,
    informativeness: np.ndarray,
    h_z_given_y: np.ndarray,
    h_y_given_z: np.ndarray,
    dead_out: np.ndarray,
    always_out: np.ndarray,
    block_sums: np.ndarray,
    block_counts: np.ndarray,
    block_class_sums: np.ndarray,
    bad_blocks: np.ndarray,
) -> None:
    # Classes outer within a block of nodes; every count is range-checked before it indexes a table
    # (a block with a bad count stops and is flagged, its outputs undefined).
    C, N = counts.shape
    total = 0
    present = 0
    for c in range(C):
        total += sizes[c]
        present += sizes[c] > 0
    tot = float(total)
    k = float(present)
    log2 = np.log(2.0)
    blocks = block_sums.shape[0]
    for b in prange(blocks):
        d0 = b * METRICS_BLOCK
        w = min(METRICS_BLOCK, N - d0)
        nn = np.zeros(w, np.int64)
        frac = np.zeros(w)
        acc = np.zeros(w)
        bad = False
        for c in range(C):
            row = counts[c, d0 : d0 + w]
            s = sizes[c]
            lo = np.int64(0)
            hi = np.int64(0)
            row_sum = np.int64(0)
            for j in range(w):  # branch-free, so it vectorises
                v = np.int64(row[j])
                nn[j] += v
                row_sum += v
                lo = min(lo, v)
                hi = max(hi, v)
            block_class_sums[b, c] = row_sum
            if lo < 0 or hi > s:
                bad = True
                break
            if s == 0:
                if store:
                    for j in range(w):
                        class_fraction[c, d0 + j] = np.nan
                continue
            o = offsets[c]
            if o >= 0:  # NumPy's class fraction and entropy term of each possible count, one row of pairs
                for j in range(w):
                    if store:
                        cf = pairs[o + row[j], 0]
                        class_fraction[c, d0 + j] = cf
                        frac[j] += cf
                    acc[j] += pairs[o + row[j], 1]
            else:
                sd = float(s)
                for j in range(w):
                    m = float(row[j])
                    if store:
                        cf = m / sd
                        class_fraction[c, d0 + j] = cf
                        frac[j] += cf
                    acc[j] += _neg_xlogx_ratio(m, sd)
                    acc[j] += _neg_xlogx_ratio(sd - m, sd)
        if bad:
            bad_blocks[b] = True
            continue
        if store:  # the divisions, clip and maximum of metrics.node_metrics_np, node by node
            for j in range(w):
                dead = nn[j] == 0
                always = nn[j] == total
                hzy = np.nan
                hyz = np.nan
                if not (dead or always):
                    hz = _hz(nn[j], hz_table, use_hz, tot)
                    hzy = min(max(acc[j] / tot, 0.0), hz)
                    hyz = max(h_y - hz + hzy, 0.0)
                d = d0 + j
                fraction[d] = frac[j] / k
                predictability[d] = 1.0 - hzy / log2
                informativeness[d] = 1.0 - hyz / log_k
                h_z_given_y[d] = hzy
                h_y_given_z[d] = hyz
                dead_out[d] = dead
                always_out[d] = always
            continue
        # Layer sums over all nodes, per lane: |S| H(Zhat|Y) and H(Zhat) (both 0 on dead and always-active
        # nodes, so no node is masked); the fractions' sum comes from the row sums.
        ls = np.zeros((2, LANES))
        lc = np.zeros((2, LANES))
        n_dead = n_always = 0
        for j in range(w):
            lane = j % LANES
            _neumaier(ls[0], lc[0], lane, acc[j])
            _neumaier(ls[1], lc[1], lane, _hz(nn[j], hz_table, use_hz, tot))
            n_dead += nn[j] == 0
            n_always += nn[j] == total
        for i in range(2):
            s2 = np.zeros(1)
            c2 = np.zeros(1)
            for lane in range(LANES):
                _neumaier(s2, c2, 0, ls[i, lane] + lc[i, lane])
            block_sums[b, i] = s2[0] + c2[0]
        block_counts[b, 0] = n_dead
        block_counts[b, 1] = n_always


@_jit()
def _neumaier_columns(x: np.ndarray) -> np.ndarray:
    out = np.zeros(x.shape[1])
    for k in range(x.shape[1]):
        s = np.zeros(1)
        c = np.zeros(1)
        for i in range(x.shape[0]):
            _neumaier(s, c, 0, x[i, k])
        out[k] = s[0] + c[0]
    return out


def _run_metrics(
    counts: np.ndarray, class_sizes: np.ndarray, store: bool, threads: int | None, table: int | None = None
) -> tuple[_metrics.Plan, dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    p = _metrics.plan(counts, class_sizes)
    c, n = p.counts.shape
    out = _metrics.node_outputs(p) if store else {}
    empty1, empty2, empty_b = np.empty(0), np.empty((0, 0)), np.empty(0, np.bool_)
    blocks = -(-n // METRICS_BLOCK)
    block_sums = np.zeros((blocks, 2))
    block_class_sums = np.zeros((blocks, c), np.int64)
    block_counts = np.zeros((blocks, 2), np.int64)
    bad_blocks = np.zeros(blocks, np.bool_)
    hz = p.hz_table if p.hz_table is not None else empty1
    # About a quarter-million counts per thread, as the C++ kernel does: waking the pool costs
    # milliseconds on a busy machine, more than a small table's whole pass.
    want = usable_cores() if threads is None else threads
    with _num_threads(min(want, c * n // (1 << 18) + 1)):
        _node_metrics(
            p.counts,
            p.class_sizes,
            p.pairs,
            p.table_offset,
            hz,
            p.hz_table is not None,
            p.h_y,
            p.log_k,
            store,
            out.get("class_fraction", empty2),
            out.get("fraction", empty1),
            out.get("predictability", empty1),
            out.get("informativeness", empty1),
            out.get("h_z_given_y", empty1),
            out.get("h_y_given_z", empty1),
            out.get("dead", empty_b),
            out.get("always_active", empty_b),
            block_sums,
            block_counts,
            block_class_sums,
            bad_blocks,
        )
    if bad_blocks.any():
        _metrics.out_of_range(counts, p.class_sizes, table)  # as given: a widened copy may have wrapped
    return p, out, _neumaier_columns(block_sums), block_counts.sum(axis=0), block_class_sums.sum(axis=0)


def node_metrics(counts: np.ndarray, class_sizes: np.ndarray, *, threads: int | None = None) -> NodeMetrics:
    """-> per-node metrics, the arithmetic of nnphases.kernels.metrics.node_metrics_np in one pass."""
    return _metrics.node_result(_run_metrics(counts, class_sizes, True, threads)[1])


def layer_metrics(
    tables: list[np.ndarray], class_sizes: np.ndarray, *, threads: int | None = None
) -> list[LayerMetrics]:
    """-> layer summaries of each table from the same pass, without building any per-node array (one
    parallel pass per table: the sums do not depend on how tables are grouped)."""
    out = []
    for i, counts in enumerate(tables):
        p, _, sums, n, class_sums = _run_metrics(counts, class_sizes, False, threads, i)
        out.append(_metrics.layer_from_sums(sums, n, class_sums, p.counts.shape[1], p.terms))
    return out


# Both kernels check every count's range where they read it (nnphases.kernels skips its own scan).
node_metrics.checks_counts = True  # type: ignore[attr-defined]
layer_metrics.checks_counts = True  # type: ignore[attr-defined]
