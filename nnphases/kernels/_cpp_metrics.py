"""The ``cpp`` backend's metric kernels: the sample-set metrics of one layer from its
per-class counts (csrc/cpu/node_metrics.cpp)."""

from __future__ import annotations

import numpy as np

from ..metrics import LayerMetrics, NodeMetrics
from . import _metrics as _metrics_plan

try:
    from .. import _C
except ImportError as e:  # the same reason cpp.py gives
    raise ImportError(f"the C++ extension nnphases._C is not built ({e})") from None


def _t(threads: int | None) -> int:
    return 0 if threads is None else threads


def _metrics(counts: np.ndarray, p: _metrics_plan.Plan, out: dict[str, np.ndarray], threads: int | None) -> None:
    if _C.node_metrics(p.counts, _metrics_plan.COUNT_TYPES[p.counts.dtype], p.class_sizes, p.pairs, p.table_offset,
                       p.hz_table, p.h_y, p.log_k, out, _t(threads)):
        _metrics_plan.out_of_range(counts, p.class_sizes)  # as given: a widened copy may have wrapped


def node_metrics(counts: np.ndarray, class_sizes: np.ndarray, *, threads: int | None = None) -> NodeMetrics:
    p = _metrics_plan.plan(counts, class_sizes)
    out = _metrics_plan.node_outputs(p)
    _metrics(counts, p, out, threads)
    return _metrics_plan.node_result(out)


def layer_metrics(counts: np.ndarray, class_sizes: np.ndarray, *, threads: int | None = None) -> LayerMetrics:
    """The layer summaries in the same pass, without building any per-node array."""
    p = _metrics_plan.plan(counts, class_sizes)
    out = {"layer_sums": np.zeros(2), "layer_counts": np.zeros(2, np.int64),
           "class_sums": np.zeros(p.counts.shape[0], np.int64)}
    _metrics(counts, p, out, threads)
    return _metrics_plan.layer_from_sums(out["layer_sums"], out["layer_counts"], out["class_sums"], p)


# Both kernels check every count's range where they read it (nnphases.kernels skips its own scan).
node_metrics.checks_counts = True  # type: ignore[attr-defined]
layer_metrics.checks_counts = True  # type: ignore[attr-defined]
