"""The ``cpp`` backend's metric kernels: the sample-set metrics of one layer from its
per-class counts (csrc/cpu/node_metrics.cpp; the layer summaries of many tables in one call,
csrc/cpu/layer_metrics.cpp)."""

from __future__ import annotations

import numpy as np

from .. import _metrics as _metrics_plan
from ..cores import usable_cores
from ..metrics import LayerMetrics, NodeMetrics

try:
    from ... import _C
except ImportError as e:  # the same reason cpp.py gives
    raise ImportError(f"the C++ extension nnphases._C is not built ({e})") from None


def _t(threads: int | None) -> int:
    # Resolved here rather than by the extension's fallback, which sees only the affinity mask, not a cgroup
    # quota or OMP_NUM_THREADS.
    return usable_cores() if threads is None else threads


def node_metrics(counts: np.ndarray, class_sizes: np.ndarray, *, threads: int | None = None) -> NodeMetrics:
    p = _metrics_plan.plan(counts, class_sizes)
    out = _metrics_plan.node_outputs(p)
    if _C.node_metrics(
        p.counts,
        _metrics_plan.COUNT_TYPES[p.counts.dtype],
        p.class_sizes,
        p.pairs,
        p.table_offset,
        p.hz_table,
        p.h_y,
        p.log_k,
        out,
        _t(threads),
    ):
        _metrics_plan.out_of_range(counts, p.class_sizes)  # as given: a widened copy may have wrapped
    return _metrics_plan.node_result(out)


def layer_metrics(
    tables: list[np.ndarray], class_sizes: np.ndarray, *, threads: int | None = None
) -> list[LayerMetrics]:
    """The layer summaries of every table, in one call with one team of threads, without any per-node
    array."""
    if not tables:
        return []
    b = _metrics_plan.batch_plan(tables, class_sizes)
    n, c = len(b.counts), b.class_sizes.shape[0]
    sums, node_counts, class_sums = np.zeros((n, 2)), np.zeros((n, 2), np.int64), np.zeros((n, c), np.int64)
    bad = _C.layer_metrics(
        b.counts,
        "".join(_metrics_plan.COUNT_TYPES[x.dtype] for x in b.counts),
        b.class_sizes,
        b.entropy,
        b.table_offset,
        b.hz_table,
        b.use_tables,
        b.use_hz,
        sums,
        node_counts,
        class_sums,
        _t(threads),
    )
    if bad >= 0:
        _metrics_plan.out_of_range(tables[bad], b.class_sizes, bad)
    return [
        _metrics_plan.layer_from_sums(sums[i], node_counts[i], class_sums[i], x.shape[1], b.terms)
        for i, x in enumerate(b.counts)
    ]


# Both kernels check every count's range where they read it (nnphases.kernels skips its own scan).
node_metrics.checks_counts = True  # type: ignore[attr-defined]
layer_metrics.checks_counts = True  # type: ignore[attr-defined]
