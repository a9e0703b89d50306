"""The ``cpp`` backend: the extension's C++ CPU kernels (one pass, vectorised,
``threads`` threads; ``None`` means one per core)."""

from __future__ import annotations

import numpy as np

from ..metrics import LayerMetrics, NodeMetrics
from . import _metrics as _metrics_plan
from ._kinds import Kind
from ._segments import build_segments

try:
    from .. import _C
except ImportError as e:  # the text is the reason shown by `nnphases backends`
    raise ImportError(f"the C++ extension nnphases._C is not built ({e}); reinstall with a C++ compiler: "
                      "pip install .") from None

_STRATEGIES = {"auto": 0, "direct": 1, "sorted": 2}


def _t(threads: int | None) -> int:
    return 0 if threads is None else threads


def class_counts(acts: np.ndarray, kind: Kind, labels: np.ndarray, num_classes: int, *, check_finite: bool,
                 threads: int | None = None, strategy: str = "auto",
                 out: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Counts added into ``out`` (int32 or int64, C-contiguous; a fresh int64 table when None)."""
    if out is None:
        out = np.zeros((num_classes, acts.shape[1]), dtype=np.int64)
    bad = _C.class_counts(acts, kind.code, labels, num_classes, out, check_finite, _t(threads), _STRATEGIES[strategy])
    return out, bool(bad)


def pack_masks(acts: np.ndarray, kind: Kind, *, check_finite: bool,
               threads: int | None = None) -> tuple[np.ndarray, bool]:
    out = np.empty((acts.shape[1], -(-acts.shape[0] // 64) * 8), dtype=np.uint8)
    bad = _C.pack_masks(acts, kind.code, out, check_finite, _t(threads))
    return out, bool(bad)


def packed_class_counts(packed: np.ndarray, labels: np.ndarray, num_classes: int, *,
                        threads: int | None = None) -> np.ndarray:
    seg = build_segments(labels, num_classes)
    out = np.zeros((num_classes, packed.shape[0]), dtype=np.int64)
    _C.packed_class_counts(np.ascontiguousarray(packed), seg.class_offsets, seg.word, seg.mask, out, _t(threads))
    return out


def _metrics(p: _metrics_plan.Plan, out: dict[str, np.ndarray], threads: int | None) -> None:
    _C.node_metrics(p.counts, p.class_sizes, p.pairs, p.table_offset, p.hz_table, p.h_y, p.log_k, out, _t(threads))


def node_metrics(counts: np.ndarray, class_sizes: np.ndarray, *, threads: int | None = None) -> NodeMetrics:
    p = _metrics_plan.plan(counts, class_sizes)
    out = _metrics_plan.node_outputs(p)
    _metrics(p, out, threads)
    return _metrics_plan.node_result(out)


def layer_metrics(counts: np.ndarray, class_sizes: np.ndarray, *, threads: int | None = None) -> LayerMetrics:
    """The layer summaries in the same pass, without building any per-node array."""
    p = _metrics_plan.plan(counts, class_sizes)
    out = {"layer_sums": np.zeros(3), "layer_counts": np.zeros(5, np.int64)}
    _metrics(p, out, threads)
    return _metrics_plan.layer_result(out["layer_sums"], out["layer_counts"], p.counts.shape[1])
