"""What the native metric kernels need besides the counts, computed once per call with
NumPy exactly as :mod:`nnphases.metrics` computes it (its entropy tables, H(Y), the
choice between tables and logarithms), and the assembly of their outputs into
:class:`~nnphases.metrics.NodeMetrics` and :class:`~nnphases.metrics.LayerMetrics`.
The per-node pass itself is in each backend (C++ ``csrc/cpu/node_metrics.cpp``, Numba)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..metrics import LayerMetrics, NodeMetrics, _class_entropy_tables, _neg_xlogx_ratio
from ._arrays import dense_host

NODE_FIELDS = ("class_fraction", "fraction", "predictability", "informativeness", "h_z_given_y", "h_y_given_z",
               "dead", "always_active")


@dataclass(frozen=True)
class Plan:
    counts: np.ndarray  # int32 or int64 [C, N], C-contiguous
    class_sizes: np.ndarray  # int64 [C]
    # float64 [L, 2]: (m / |S_c|, |S_c| * h(m / |S_c|)) for m in 0..|S_c| of each distinct size, concatenated:
    # NumPy's class fraction and entropy table for every possible count, one 16-byte load per count.
    pairs: np.ndarray
    table_offset: np.ndarray  # int64 [C]: the row of pairs where class c's starts; -1: compute with logarithms
    hz_table: np.ndarray | None  # float64 [|S| + 1]: H(Zhat) for each node count, when no larger than N
    h_y: float
    log_k: float  # log of the number of classes with samples; NaN when fewer than two


def plan(counts: np.ndarray, class_sizes: np.ndarray) -> Plan:
    """From counts and sizes already validated by ``nnphases.metrics._validate``."""
    n = counts if counts.dtype in (np.int32, np.int64) else counts.astype(np.int64)
    n = dense_host(n)
    sizes = dense_host(class_sizes, np.int64)
    num_nodes = n.shape[1]
    present = sizes > 0
    k = int(np.count_nonzero(present))
    total = int(sizes.sum())
    sizes_p = sizes[present]
    offsets = np.full(sizes.shape[0], -1, np.int64)
    pairs = np.zeros((1, 2))
    # The rule metrics.node_metrics_np uses: a table pays off once it is no larger than the counts it serves.
    if int((np.unique(sizes_p) + 1).sum()) <= k * num_nodes:
        table, start = _class_entropy_tables(sizes_p)
        offsets[present] = [start[s] for s in sizes_p.tolist()]
        pairs = np.empty((table.shape[0], 2))
        pairs[:, 1] = table
        for s, o in start.items():  # the division np.divide(n[c], float(|S_c|)) does, for every count
            pairs[o:o + s + 1, 0] = np.arange(s + 1, dtype=np.float64) / float(s)
    hz_table = None
    if total + 1 <= num_nodes:
        q = np.arange(total + 1, dtype=np.float64)
        hz_table = (_neg_xlogx_ratio(q, float(total)) + _neg_xlogx_ratio(total - q, float(total))) / total
    h_y = float(_neg_xlogx_ratio(sizes_p.astype(np.float64), float(total)).sum() / total)
    return Plan(n, sizes, pairs, offsets, hz_table, h_y, math.log(k) if k > 1 else math.nan)


def node_outputs(p: Plan) -> dict[str, np.ndarray]:
    c, n = p.counts.shape
    out = {name: np.empty(n) for name in NODE_FIELDS}
    out["class_fraction"] = np.empty((c, n))
    out["dead"] = np.empty(n, np.bool_)
    out["always_active"] = np.empty(n, np.bool_)
    return out


def node_result(out: dict[str, np.ndarray]) -> NodeMetrics:
    for a in out.values():
        a.flags.writeable = False
    return NodeMetrics(*(out[name] for name in NODE_FIELDS))


def layer_result(sums: np.ndarray, counts: np.ndarray, nodes: int) -> LayerMetrics:
    """From the kernels' sums of f, p, u and counts of (live, defined p, defined u, dead, always active)."""
    f, p, u = (float(s / k) if k else math.nan for s, k in zip(sums.tolist(), counts[:3].tolist()))
    return LayerMetrics(fraction=f, predictability=p, informativeness=u, nodes=int(nodes), dead=int(counts[3]),
                        always_active=int(counts[4]))
