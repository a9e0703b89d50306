"""What the native metric kernels need besides the counts, computed once per call with
NumPy exactly as :mod:`nnphases.kernels.metrics` computes it (its entropy tables, H(Y), the
choice between tables and logarithms), and the assembly of their outputs into
:class:`~nnphases.kernels.metrics.NodeMetrics` and :class:`~nnphases.kernels.metrics.LayerMetrics`.
The per-node pass itself is in each backend (C++ ``csrc/cpu/node_metrics.cpp``, Numba)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ._arrays import dense_host
from .metrics import LayerMetrics, NodeMetrics, _class_entropy_tables, _neg_xlogx_ratio
from .metrics import _validate as validate_counts

NODE_FIELDS = (
    "class_fraction",
    "fraction",
    "predictability",
    "informativeness",
    "h_z_given_y",
    "h_y_given_z",
    "dead",
    "always_active",
)


# Count dtypes the native kernels read as stored (a narrowed table is never widened), by type code.
COUNT_TYPES = {
    np.dtype(t): code
    for t, code in ((np.uint8, "B"), (np.uint16, "H"), (np.uint32, "I"), (np.int32, "i"), (np.int64, "q"))
}


@dataclass(frozen=True)
class Plan:
    counts: np.ndarray  # [C, N] of a COUNT_TYPES dtype, C-contiguous
    class_sizes: np.ndarray  # int64 [C]
    # float64 [L, 2]: (m / |S_c|, |S_c| * h(m / |S_c|)) for m in 0..|S_c| of each distinct size, concatenated:
    # NumPy's class fraction and entropy table for every possible count, one 16-byte load per count.
    pairs: np.ndarray
    table_offset: np.ndarray  # int64 [C]: the row of pairs where class c's starts; -1: compute with logarithms
    hz_table: np.ndarray | None  # float64 [|S| + 1]: H(Zhat) for each node count, when no larger than N
    h_y: float
    log_k: float  # log of the number of classes with samples; NaN when fewer than two
    terms: SizeTerms


def plan(counts: np.ndarray, class_sizes: np.ndarray) -> Plan:
    """From counts and sizes already validated by ``nnphases.kernels.metrics._validate``."""
    b = batch_plan([counts], class_sizes)
    return Plan(b.counts[0], b.class_sizes, b.pairs, b.table_offset, b.hz_table, b.terms.h_y, b.terms.log_k, b.terms)


def _tabled(t: SizeTerms, nodes: int) -> bool:
    # The rule metrics.node_metrics_np uses: a table pays off once it is no larger than the counts it serves.
    return t.table_len <= t.present * nodes


def _hz_tabled(t: SizeTerms, nodes: int) -> bool:
    return t.total + 1 <= nodes


@dataclass(frozen=True)
class Batch:
    """Tables measured against the same sizes and what they share: the entropy tables, built when any table
    uses them, and per table whether it does."""

    counts: list[np.ndarray]  # each [C, N_l] of a COUNT_TYPES dtype, C-contiguous
    class_sizes: np.ndarray
    terms: SizeTerms
    pairs: np.ndarray  # as Plan's
    entropy: np.ndarray  # float64 [L]: the entropy column of pairs, contiguous (the layer pass reads no fractions)
    table_offset: np.ndarray
    hz_table: np.ndarray | None
    use_tables: np.ndarray  # bool [L]
    use_hz: np.ndarray  # bool [L]


def batch_plan(tables: list[np.ndarray], class_sizes: np.ndarray) -> Batch:
    """What the kernels need for every table, the size terms looked up once."""
    counts = [dense_host(c if c.dtype in COUNT_TYPES else c.astype(np.int64)) for c in tables]
    sizes = dense_host(class_sizes, np.int64)
    key = sizes.tobytes()
    t = _size_terms(key)
    use_tables = np.array([_tabled(t, c.shape[1]) for c in counts], np.bool_)
    use_hz = np.array([_hz_tabled(t, c.shape[1]) for c in counts], np.bool_)
    pairs, entropy, offsets = (
        _pair_tables(key) if use_tables.any() else (_NO_PAIRS, _NO_PAIRS[:, 1], np.full(sizes.shape[0], -1, np.int64))
    )
    return Batch(
        counts, sizes, t, pairs, entropy, offsets, _hz_table(t.total) if use_hz.any() else None, use_tables, use_hz
    )


# What depends on the class sizes alone, computed once per set of sizes: a run measures every layer at every
# checkpoint against the same sizes, and rebuilding these cost more than the pass over a small layer.
_NO_PAIRS = np.zeros((1, 2))
_NO_PAIRS.flags.writeable = False


@dataclass(frozen=True)
class SizeTerms:
    """What the layer summaries take from the class sizes alone."""

    present: int  # classes with samples
    total: int  # |S|
    h_y: float
    log_k: float  # log(present); NaN when fewer than two
    table_len: int  # length of the entropy tables
    sizes: tuple[int, ...]


@functools.lru_cache(maxsize=32)
def _size_terms(sizes_bytes: bytes) -> SizeTerms:
    sizes = np.frombuffer(sizes_bytes, np.int64)
    sizes_p = sizes[sizes > 0]
    total = int(sizes.sum())
    h_y = float(_neg_xlogx_ratio(sizes_p.astype(np.float64), float(total)).sum() / total)
    k = int(sizes_p.shape[0])
    return SizeTerms(
        k, total, h_y, math.log(k) if k > 1 else math.nan, int((np.unique(sizes_p) + 1).sum()), tuple(sizes.tolist())
    )


@functools.lru_cache(maxsize=32)
def _pair_tables(sizes_bytes: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pairs, their entropy column alone and contiguous, offsets)."""
    sizes = np.frombuffer(sizes_bytes, np.int64)
    present = sizes > 0
    sizes_p = sizes[present]
    offsets = np.full(sizes.shape[0], -1, np.int64)
    table, start = _class_entropy_tables(sizes_p)
    offsets[present] = [start[s] for s in sizes_p.tolist()]
    pairs = np.empty((table.shape[0], 2))
    pairs[:, 1] = table
    for s, o in start.items():  # the division np.divide(n[c], float(|S_c|)) does, for every count
        pairs[o : o + s + 1, 0] = np.arange(s + 1, dtype=np.float64) / float(s)
    pairs.flags.writeable = offsets.flags.writeable = table.flags.writeable = False
    return pairs, table, offsets


@functools.lru_cache(maxsize=8)
def _hz_table(total: int) -> np.ndarray:
    q = np.arange(total + 1, dtype=np.float64)
    hz = (_neg_xlogx_ratio(q, float(total)) + _neg_xlogx_ratio(total - q, float(total))) / total
    hz.flags.writeable = False
    return hz


def out_of_range(counts: np.ndarray, class_sizes: np.ndarray, table: int | None = None) -> None:
    """Raises the boundary's ValueError for a table a kernel found a count outside [0, |S_c|] in; ``table``,
    its index among the tables of a call, goes on the error as ``.table`` (the boundary names it)."""
    try:
        validate_counts(counts, class_sizes)
    except ValueError as e:
        e.table = table  # type: ignore[attr-defined]  # an attribute of this error only, which the boundary reads
        raise
    raise AssertionError("a metric kernel flagged a count out of range that the boundary's check accepts")


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


def layer_from_sums(
    sums: np.ndarray, counts: np.ndarray, class_sums: np.ndarray, nodes: int, t: SizeTerms
) -> LayerMetrics:
    """The layer means from the kernels' layer pass: ``sums`` are the compensated sums over all nodes of
    |S| H(Zhat|Y) and of H(Zhat), which are 0 on dead and always-active nodes (so these are their sums over the
    nodes where p and u are defined); ``counts`` the dead and the always-active nodes; ``class_sums`` each
    class's sum of counts (exact integers), so the sum of |C| f[i] over the nodes is sum_c class_sums[c] /
    |S_c|, correctly rounded by math.fsum.

    The means of p = 1 - H(Zhat|Y) / log 2 and u = 1 - H(Y|Zhat) / log |C|, with H(Y|Zhat) = H(Y) - H(Zhat) +
    H(Zhat|Y), follow from the sums without per-node values; they leave out the per-node clipping to
    [0, H(Zhat)] and >= 0 of nnphases.kernels.metrics, which changes a node's value only by rounding, so the means stay
    within a few ulps of the per-node ones (tests/test_metric_kernels.py)."""
    dead, always = (int(x) for x in counts.tolist())
    live, defined = nodes - dead, nodes - dead - always
    s_acc, s_hz = (float(x) for x in sums.tolist())
    s_frac = math.fsum([r / s for r, s in zip(class_sums.tolist(), t.sizes, strict=True) if s > 0])
    s_hzy = s_acc / float(t.total)
    s_hyz = defined * t.h_y - s_hz + s_hzy
    return LayerMetrics(
        fraction=s_frac / t.present / live if live else math.nan,
        predictability=1.0 - s_hzy / defined / math.log(2.0) if defined else math.nan,
        informativeness=1.0 - s_hyz / defined / t.log_k if defined and not math.isnan(t.log_k) else math.nan,
        nodes=nodes,
        dead=dead,
        always_active=always,
    )
