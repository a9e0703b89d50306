"""Node and layer metrics of ReLU sample sets, from per-class activation counts.

Everything here is float64 arithmetic on ``counts[c, i]`` (the number of
samples of class ``c`` that activate node ``i``) and ``class_sizes[c]``
(``|S_c|``), following ``docs/metrics.md`` section 1: ``f[c,i] =
n[c,i]/|S_c|``; ``e(1,c) = n[c,i]/|S|`` and ``e(0,c) = (|S_c| - n[c,i])/|S|``;
``H(Zhat|Y)`` and ``H(Y|Zhat)`` in nats with ``0 log 0 = 0``; ``p = 1 -
H(Zhat|Y)/log 2`` and ``u = 1 - H(Y|Zhat)/log |C|``. Conventions where the
spec is silent or needs a rule: a class with no samples has ``f[c,i] = NaN``,
is left out of the node fraction ``f[i]`` (the mean over classes *with*
samples) and contributes nothing to either entropy; ``|C|`` in ``u`` is the
number of classes with at least one sample, because an absent class carries
no entropy and counting it would cap ``u`` below its reachable maximum; when
that number is 1, ``log |C| = 0`` and ``u`` is NaN for every node. ``p``,
``u`` and both entropies are NaN (never 0) for a dead node (``n[i] == 0``)
and an always-active node (``n[i] == |S|``), whose activation event carries
no information. The layer fraction ``f[l]`` is the mean of ``f[i]`` over
nodes that are not dead (always-active nodes included); the layer ``p[l]``
and ``u[l]`` are means over nodes where they are defined; each is NaN when
no node qualifies. Every returned array is read-only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["NodeMetrics", "LayerMetrics", "node_metrics_np", "layer_metrics_np"]


@dataclass(frozen=True, eq=False)  # eq=False: elementwise array == has no single truth value
class NodeMetrics:
    """Per-node metrics; arrays are read-only, C = classes, N = nodes."""

    class_fraction: np.ndarray  # float64 [C, N]; NaN rows for classes with |S_c| = 0
    fraction: np.ndarray  # float64 [N]
    predictability: np.ndarray  # float64 [N]; NaN where dead or always active
    informativeness: np.ndarray  # float64 [N]; NaN where dead, always active, or |C| = 1
    h_z_given_y: np.ndarray  # float64 [N], nats; NaN where dead or always active
    h_y_given_z: np.ndarray  # float64 [N], nats; NaN where dead or always active
    dead: np.ndarray  # bool [N]
    always_active: np.ndarray  # bool [N]


@dataclass(frozen=True)
class LayerMetrics:
    """Layer summaries of a NodeMetrics; NaN where no node qualifies."""

    fraction: float
    predictability: float
    informativeness: float
    nodes: int
    dead: int
    always_active: int

    @classmethod
    def from_nodes(cls, nm: NodeMetrics) -> LayerMetrics:
        # Dead nodes are left out of f[l] (spec); always-active ones stay in.
        return cls(
            fraction=_mean_where(nm.fraction, ~nm.dead),
            predictability=_mean_where(nm.predictability, ~np.isnan(nm.predictability)),
            informativeness=_mean_where(nm.informativeness, ~np.isnan(nm.informativeness)),
            nodes=int(nm.dead.shape[0]),
            dead=int(np.count_nonzero(nm.dead)),
            always_active=int(np.count_nonzero(nm.always_active)),
        )


def _mean_where(values: np.ndarray, mask: np.ndarray) -> float:
    # np.mean / np.nanmean warn on an empty selection; an empty layer is a NaN, not a warning.
    k = int(np.count_nonzero(mask))
    return float(values[mask].sum() / k) if k else math.nan


def _as_int_array(x: object, name: str, ndim: int) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype (int64 or int32), got {a.dtype}")
    if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
        idx = np.unravel_index(int(np.argmax(a)), a.shape)
        raise ValueError(f"{name}[{', '.join(map(str, idx))}] = {int(a[idx])} does not fit in int64")
    # Only uint64 is widened (np.take refuses it as indices); narrower tables
    # stay as given rather than growing a copy of a possibly multi-GB array.
    return a.astype(np.int64) if a.dtype == np.uint64 else a


def _validate(counts: object, class_sizes: object) -> tuple[np.ndarray, np.ndarray]:
    n = _as_int_array(counts, "counts", 2)
    sizes = _as_int_array(class_sizes, "class_sizes", 1).astype(np.int64, copy=False)
    if sizes.shape[0] != n.shape[0]:
        raise ValueError(f"class_sizes has {sizes.shape[0]} entries but counts has {n.shape[0]} classes (rows)")
    if (bad := np.flatnonzero(sizes < 0)).size:
        c = int(bad[0])
        raise ValueError(f"class_sizes[{c}] = {int(sizes[c])} is negative")
    if n.size:
        # Row minima and maxima need no [C, N] temporary; the offending row is
        # searched only once we know there is one.
        if (bad := np.flatnonzero(n.min(axis=1) < 0)).size:
            c = int(bad[0])
            i = int(np.argmax(n[c] < 0))
            raise ValueError(f"counts[{c}, {i}] = {int(n[c, i])} is negative")
        if (bad := np.flatnonzero(n.max(axis=1) > sizes)).size:
            c = int(bad[0])
            i = int(np.argmax(n[c] > sizes[c]))
            raise ValueError(f"counts[{c}, {i}] = {int(n[c, i])} exceeds class_sizes[{c}] = {int(sizes[c])}")
    if int(sizes.sum()) == 0:
        raise ValueError(f"class_sizes sums to 0 (|S| = 0, no samples): {sizes.tolist()[:10]}")
    return n, sizes


def _neg_xlogx_ratio(m: np.ndarray, d: np.ndarray | float) -> np.ndarray:
    """-m * log(m / d) elementwise with 0 log 0 = 0, for integer-valued 0 <= m <= d, d > 0."""
    # Counts are integers, so max(m, 1) equals m wherever m > 0 and turns each
    # 0 * log 0 into 0 * log(1/d) = 0 with no masked ufunc and no warning.
    # log(m / d) rather than log m - log d: every term is >= 0 and exactly 0
    # when m == d, so a node active for whole classes only gets H = 0, p = 1.
    t = np.fmax(m, 1.0)
    np.divide(t, d, out=t)
    np.log(t, out=t)
    np.multiply(t, m, out=t)
    return np.subtract(0.0, t, out=t)  # not -t: an exact zero should not print as -0.0


def _class_entropy_tables(sizes: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Concatenated tables g_s[m] = |S_c| * h(m/|S_c|) (nats) for each distinct size s.

    Counts are integers in [0, s], so tabulating these s + 1 values once and
    gathering them costs one lookup per count instead of two logarithms (about
    8 ns each on AVX2 machines, which dominated the run time).
    """
    uniq = np.unique(sizes)
    starts = np.concatenate(([0], np.cumsum(uniq + 1)[:-1]))
    size_of = np.repeat(uniq, uniq + 1).astype(np.float64)
    m = (np.arange(size_of.shape[0]) - np.repeat(starts, uniq + 1)).astype(np.float64)
    table = _neg_xlogx_ratio(m, size_of) + _neg_xlogx_ratio(size_of - m, size_of)
    return table, dict(zip(uniq.tolist(), starts.tolist(), strict=True))


def _sum_class_entropies(n: np.ndarray, sizes: np.ndarray, use_table: bool) -> np.ndarray:
    """|S| * H(Zhat|Y) per node: the sum over classes of |S_c| * h(n[c,i] / |S_c|).

    ``n`` and ``sizes`` hold present classes only (|S_c| > 0). The loop runs
    over classes, each step vectorised over all nodes.
    """
    acc = np.zeros(n.shape[1])
    if use_table:
        table, offsets = _class_entropy_tables(sizes)
        for row, s in zip(n, sizes.tolist(), strict=True):
            o = offsets[s]
            acc += np.take(table[o : o + s + 1], row)
    else:
        for row, s in zip(n, sizes.tolist(), strict=True):
            m1 = row.astype(np.float64)
            acc += _neg_xlogx_ratio(m1, float(s))
            acc += _neg_xlogx_ratio(float(s) - m1, float(s))
    return acc


def node_metrics_np(counts: np.ndarray, class_sizes: np.ndarray) -> NodeMetrics:
    """Node metrics from ``counts`` (int [C, N]) and ``class_sizes`` (int [C]).

    ``counts[c, i]`` is the number of samples of class ``c`` activating node
    ``i``; ``class_sizes[c]`` is ``|S_c|``. Raises ValueError on a shape,
    length or range problem and TypeError on a non-integer dtype. See the
    module docstring for the conventions (NaN rules, the choice of ``|C|``).
    """
    n, sizes = _validate(counts, class_sizes)
    num_classes, num_nodes = n.shape
    total = int(sizes.sum())
    present = sizes > 0
    k_present = int(np.count_nonzero(present))

    n_node = n.sum(axis=0, dtype=np.int64)  # exact, so dead / always-active tests are exact
    dead = n_node == 0
    always = n_node == total
    undefined = dead | always

    # Row by row: the only [C, N] array built is the output itself.
    class_fraction = np.empty((num_classes, num_nodes))
    fraction = np.zeros(num_nodes)
    for c in range(num_classes):
        if present[c]:
            np.divide(n[c], float(sizes[c]), out=class_fraction[c])
            fraction += class_fraction[c]
        else:
            class_fraction[c] = np.nan
    fraction /= k_present

    # Absent classes have e(0,c) = e(1,c) = 0 and add nothing to either entropy.
    # The table pays off once it is no larger than the counts it serves.
    n_p, sizes_p = (n, sizes) if k_present == num_classes else (n[present], sizes[present])
    table_len = int((np.unique(sizes_p) + 1).sum())
    h_z_given_y = _sum_class_entropies(n_p, sizes_p, table_len <= n_p.size) / total

    # H(Y|Zhat) by the chain rule H(Y) + H(Zhat|Y) = H(Zhat) + H(Y|Zhat), exact
    # for the plug-in estimates e(z,c): it needs no second pass over [C, N], and
    # its absolute error stays at a few ulps of log |C|.
    q = n_node.astype(np.float64)
    h_z = (_neg_xlogx_ratio(q, float(total)) + _neg_xlogx_ratio(total - q, float(total))) / total
    s_p = sizes_p.astype(np.float64)
    h_y = float(_neg_xlogx_ratio(s_p, float(total)).sum() / total)
    # Clipping to the bounds the true values obey removes only rounding (so p, u
    # never leave [0, 1] by an ulp): 0 <= H(Zhat|Y) <= H(Zhat), H(Y|Zhat) >= 0.
    np.clip(h_z_given_y, 0.0, h_z, out=h_z_given_y)
    h_y_given_z = np.maximum(h_y - h_z + h_z_given_y, 0.0)

    h_z_given_y[undefined] = np.nan
    h_y_given_z[undefined] = np.nan
    predictability = 1.0 - h_z_given_y / math.log(2.0)
    if k_present > 1:
        informativeness = 1.0 - h_y_given_z / math.log(k_present)
    else:
        informativeness = np.full(num_nodes, np.nan)

    arrays = (class_fraction, fraction, predictability, informativeness, h_z_given_y, h_y_given_z, dead, always)
    for a in arrays:
        a.flags.writeable = False
    return NodeMetrics(*arrays)


def layer_metrics_np(counts: np.ndarray, class_sizes: np.ndarray) -> LayerMetrics:
    """Layer metrics of one layer's ``counts`` (int [C, N]) and ``class_sizes`` (int [C])."""
    return LayerMetrics.from_nodes(node_metrics_np(counts, class_sizes))
