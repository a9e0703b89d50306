"""The native metric kernels (``node_metrics``, ``layer_metrics`` on the cpp and numba
backends) against nnphases.kernels.metrics' NumPy implementation, the oracle, on hand-computable
and random count tables.

The bound, stated and tested: ``class_fraction``, ``fraction``, ``dead`` and
``always_active`` are identical (the same divisions and sums in the same order); the
entropies, ``p`` and ``u`` differ by at most ``ULPS`` machine epsilons times
``max(1, log |C|)`` in absolute value (the logarithms of the platform's libm against
NumPy's, on the path without tables; with tables, which NumPy builds itself, they are
identical too); layer means differ by at most ``ULPS`` epsilons (compensated sums
against NumPy's pairwise ones). NaN falls on exactly the same nodes, and the native
results do not depend on the thread count."""

from __future__ import annotations

import importlib
import math
import sys
import zlib
from dataclasses import fields

import numpy as np
import pytest

import nnphases.kernels as K
from kernel_tables import backend_params, device_of
from nnphases.kernels.metrics import LayerMetrics, NodeMetrics, layer_metrics_np, node_metrics_np

ULPS = 8
EPS = np.finfo(np.float64).eps
EXACT = ("class_fraction", "fraction", "dead", "always_active")
# The metrics run on the host (the table is small next to the activations): CPU backends only.
BACKENDS = [p for p in backend_params("node_metrics") if device_of(p.values[0]) == "cpu"]
NATIVE = [p for p in BACKENDS if p.values[0] in ("cpp", "numba")]


def seed_of(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


def assert_agrees(got: NodeMetrics, want: NodeMetrics, sizes: np.ndarray) -> None:
    scale = max(1.0, math.log(max(int(np.count_nonzero(sizes)), 1)))
    for f in fields(NodeMetrics):
        g, w = getattr(got, f.name), getattr(want, f.name)
        assert g.dtype == w.dtype and g.shape == w.shape, f.name
        assert not g.flags.writeable, f.name
        if f.name in EXACT:
            np.testing.assert_array_equal(g, w, err_msg=f.name)
            continue
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{f.name}: NaN placement")
        ok = ~np.isnan(w)
        err = np.abs(g[ok] - w[ok]).max(initial=0.0)
        assert err <= ULPS * EPS * scale, f"{f.name}: {err / EPS:.1f} eps > {ULPS} eps * {scale:.2f}"


def assert_layer_agrees(got: LayerMetrics, want: LayerMetrics) -> None:
    for name in ("nodes", "dead", "always_active"):
        assert getattr(got, name) == getattr(want, name) and isinstance(getattr(got, name), int), name
    for name in ("fraction", "predictability", "informativeness"):
        g, w = getattr(got, name), getattr(want, name)
        assert isinstance(g, float), name
        assert math.isnan(g) == math.isnan(w), name
        if not math.isnan(w):
            assert abs(g - w) <= ULPS * EPS, f"{name}: {abs(g - w) / EPS:.1f} eps"


def check(backend: str, counts: np.ndarray, sizes: np.ndarray, threads: int | None = None) -> NodeMetrics:
    want = node_metrics_np(counts, sizes)
    got = K.node_metrics(counts, sizes, backend=backend, threads=threads)
    assert_agrees(got, want, np.asarray(sizes))
    assert_layer_agrees(K.layer_metrics(counts, sizes, backend=backend, threads=threads),
                        layer_metrics_np(counts, sizes))
    return got


# ----------------------------------------------------------------- hand cases
def hand_table(c: int, per_class: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Columns: half the classes (p = 1, u = log 2 / log C), an exact half of every class (p = u = 0),
    dead, always active, one class only, every class but one, one sample of one class."""
    sizes = np.full(c, per_class)
    half = np.where(np.arange(c) < c // 2, sizes, 0)
    cols = [half, sizes // 2, np.zeros(c, np.int64), sizes, np.eye(c, dtype=np.int64)[0] * per_class,
            np.where(np.arange(c) == 0, 0, sizes), np.eye(c, dtype=np.int64)[-1]]
    return np.stack(cols, axis=1).astype(np.int64), sizes


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("c", [2, 4, 10, 100])
def test_hand_cases(backend, c):
    counts, sizes = hand_table(c)
    m = check(backend, counts, sizes)
    assert m.predictability[0] == pytest.approx(1.0, abs=1e-12)
    assert m.informativeness[0] == pytest.approx(math.log(2) / math.log(c), abs=1e-12)
    assert m.predictability[1] == pytest.approx(0.0, abs=1e-12)
    assert m.informativeness[1] == pytest.approx(0.0, abs=1e-12)
    assert m.dead.tolist()[2:4] == [True, False] and m.always_active.tolist()[2:4] == [False, True]
    assert np.isnan(m.predictability[2:4]).all() and np.isnan(m.informativeness[2:4]).all()
    assert np.isnan(m.h_z_given_y[2:4]).all() and np.isnan(m.h_y_given_z[2:4]).all()
    assert m.fraction[2] == 0.0 and m.fraction[3] == 1.0
    layer = K.layer_metrics(counts, sizes, backend=backend)
    assert layer.dead == 1 and layer.always_active == 1 and layer.nodes == counts.shape[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_class_present(backend):
    """One class with samples: u is NaN everywhere (log |C| = 0), p still defined where not dead/always."""
    counts = np.array([[0, 3, 7, 1], [0, 0, 0, 0], [0, 0, 0, 0]])
    sizes = np.array([7, 0, 0])
    m = check(backend, counts, sizes)
    assert np.isnan(m.informativeness).all()
    assert np.isnan(m.class_fraction[1:]).all()
    assert m.dead.tolist() == [True, False, False, False] and m.always_active.tolist() == [False, False, True, False]
    assert math.isnan(K.layer_metrics(counts, sizes, backend=backend).informativeness)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_classes(backend):
    """Classes without samples: NaN class fractions, left out of f, of both entropies and of |C|."""
    counts = np.array([[2, 0, 5, 1], [0, 0, 0, 0], [3, 4, 4, 0], [0, 0, 0, 0]])
    sizes = np.array([5, 0, 4, 0])
    m = check(backend, counts, sizes)
    assert np.isnan(m.class_fraction[[1, 3]]).all()
    np.testing.assert_array_equal(m.fraction, (counts[0] / 5 + counts[2] / 4) / 2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["all-dead", "all-always", "dead-and-always", "no-nodes", "one-node"])
def test_degenerate_layers(backend, kind):
    sizes = np.array([3, 4, 5])
    counts = {"all-dead": np.zeros((3, 6), np.int64), "all-always": np.repeat(sizes[:, None], 6, 1),
              "dead-and-always": np.stack([np.zeros(3, np.int64), sizes], 1), "no-nodes": np.zeros((3, 0), np.int64),
              "one-node": np.array([[1], [2], [3]])}[kind]
    check(backend, counts, sizes)
    layer = K.layer_metrics(counts, sizes, backend=backend)
    if kind in ("all-dead", "no-nodes"):
        assert math.isnan(layer.fraction)
    if kind != "one-node":
        assert math.isnan(layer.predictability) and math.isnan(layer.informativeness)


# ----------------------------------------------------------------- random tables
def random_table(seed: int, c: int, n: int, max_size: int, absent: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts with every kind of node (random, dead, always active, class-pure, halves) and classes
    without samples."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_size + 1, c)
    sizes[rng.permutation(c)[:absent]] = 0
    counts = np.floor(rng.random((c, n)) * (sizes[:, None] + 1)).astype(np.int64)
    special = [np.zeros(c, np.int64), sizes, np.where(np.arange(c) % 2 == 0, sizes, 0), sizes // 2]
    for j, col in zip(rng.permutation(n)[:4], special):
        counts[:, j] = col
    return counts, sizes


# (classes, nodes, largest class, absent classes): tables (sizes small next to nodes) and the
# logarithm path (few nodes, large classes), block edges (1024 nodes), many classes.
SHAPES = [(2, 1, 5, 0), (2, 7, 100_000, 0), (3, 1023, 40, 1), (10, 1024, 6000, 0), (10, 1025, 6000, 2),
          (10, 5000, 700, 3), (100, 300, 50, 10), (1000, 40, 30, 100), (7, 3000, 1, 2), (5, 2, 2**20, 1)]
SHAPE_IDS = [f"C{c}-N{n}-S{s}-a{a}" for c, n, s, a in SHAPES]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["int64", "int32", "uint32", "uint16", "uint8", "int16", "uint64"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_random_tables(backend, shape, dtype):
    counts, sizes = random_table(seed_of(shape, dtype), *shape)
    if np.iinfo(dtype).max < sizes.max():
        pytest.skip(f"{dtype} cannot hold counts up to {sizes.max()}")
    check(backend, counts.astype(dtype), sizes.astype(dtype))


@pytest.mark.parametrize("backend", NATIVE)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_threads_do_not_change_results(backend, shape):
    counts, sizes = random_table(seed_of(shape, "threads"), *shape)
    one = K.node_metrics(counts, sizes, backend=backend, threads=1)
    for threads in (2, 3):
        other = K.node_metrics(counts, sizes, backend=backend, threads=threads)
        for f in fields(NodeMetrics):
            np.testing.assert_array_equal(getattr(other, f.name), getattr(one, f.name), err_msg=f.name)
        # repr: exact (floats print round-trip) and NaN equals NaN
        assert repr(K.layer_metrics(counts, sizes, backend=backend, threads=threads)) == \
            repr(K.layer_metrics(counts, sizes, backend=backend, threads=1))


@pytest.mark.parametrize("backend", NATIVE)
@pytest.mark.parametrize("layout", ["fortran", "column-step", "reversed", "torch"])
def test_count_layouts(backend, layout):
    counts, sizes = random_table(5, 10, 600, 300, 1)
    view = {"fortran": lambda: np.asfortranarray(counts), "column-step": lambda: np.repeat(counts, 2, 1)[:, ::2],
            "reversed": lambda: counts[::-1].copy()[::-1],
            "torch": lambda: __import__("torch").from_numpy(counts.astype(np.int32))}[layout]()
    check(backend, view, sizes)


@pytest.mark.parametrize("backend", NATIVE)
def test_agrees_with_the_layer_of_its_own_nodes(backend):
    counts, sizes = random_table(9, 10, 5000, 6000, 0)
    layer = K.layer_metrics(counts, sizes, backend=backend)
    assert_layer_agrees(layer, LayerMetrics.from_nodes(K.node_metrics(counts, sizes, backend=backend)))


# ----------------------------------------------------------------- the boundary
RANGE = [  # found where the native kernels read the counts, by the boundary's scan for the others
    ("negative-count", lambda: (np.array([[1, -1], [0, 2]]), np.array([3, 3])), ValueError,
     r"counts\[0, 1\] = -1 is negative"),
    ("count-over-size", lambda: (np.array([[1, 4], [0, 2]]), np.array([3, 3])), ValueError,
     r"counts\[0, 1\] = 4 exceeds class_sizes\[0\] = 3"),
    ("uint64-too-large", lambda: (np.array([[1, 2**63], [0, 2]], np.uint64), np.array([3, 3])), ValueError,
     r"counts\[0, 1\] = 9223372036854775808 does not fit in int64"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel", ["node_metrics", "layer_metrics"])
@pytest.mark.parametrize("make, exc, rx", [pytest.param(*row[1:], id=row[0]) for row in RANGE])
def test_counts_out_of_range_raise(backend, kernel, make, exc, rx):
    with pytest.raises(exc, match=rx):
        getattr(K, kernel)(*make(), backend=backend)


BAD = [  # refused before any kernel runs
    ("negative-size", lambda: (np.ones((2, 2), np.int64), np.array([3, -1])), ValueError,
     r"class_sizes\[1\] = -1 is negative"),
    ("float-counts", lambda: (np.ones((2, 2)), np.array([3, 3])), TypeError, r"counts must have an integer dtype"),
    ("sizes-length", lambda: (np.ones((2, 2), np.int64), np.array([3, 3, 3])), ValueError,
     r"class_sizes has 3 entries but counts has 2 classes"),
    ("no-samples", lambda: (np.zeros((2, 2), np.int64), np.array([0, 0])), ValueError, r"class_sizes sums to 0"),
    ("counts-1d", lambda: (np.ones(2, np.int64), np.array([3, 3])), ValueError, r"counts must be 2-D"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel", ["node_metrics", "layer_metrics"])
@pytest.mark.parametrize("make, exc, rx", [pytest.param(*row[1:], id=row[0]) for row in BAD])
def test_bad_tables_raise_before_the_kernel(backend, kernel, make, exc, rx, monkeypatch):
    ran = []
    module = sys.modules[K.node_metrics.__module__]  # where the public function looks its backend up
    real = module.select

    def guarded(name, device, bk):
        b, fn = real(name, device, bk)
        return b, lambda *a, **k: ran.append(b.name)

    monkeypatch.setattr(module, "select", guarded)
    with pytest.raises(exc, match=rx):
        getattr(K, kernel)(*make(), backend=backend)
    assert ran == []


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_native_backends_agree_exactly(shape):
    """cpp and numba share the block grain of the layer sums and the arithmetic order: identical results."""
    names = [p.values[0] for p in NATIVE if not p.marks]
    if len(names) < 2:
        pytest.skip("needs both the cpp and numba backends")
    counts, sizes = random_table(seed_of(shape, "agree"), *shape)
    layers = {repr(K.layer_metrics(counts, sizes, backend=b)) for b in names}  # repr: NaN equals NaN
    assert len(layers) == 1, layers
    nodes = [K.node_metrics(counts, sizes, backend=b) for b in names]
    for f in fields(NodeMetrics):
        np.testing.assert_array_equal(getattr(nodes[0], f.name), getattr(nodes[1], f.name), err_msg=f.name)


# The native kernels check every count where they read it (a bad one would index past the entropy tables),
# so a table that reached them unchecked still raises the boundary's error: negative, over its class size,
# non-zero in an absent class; in every count type they read as stored, in the first and the last block.
KERNEL_BAD = [  # id, count type, row, node, value, message
    ("negative", np.int64, 1, 0, -1, r"counts\[1, 0\] = -1 is negative"),
    ("negative-int32", np.int32, 3, 700, -3, r"counts\[3, 700\] = -3 is negative"),
    ("over-size", np.int64, 0, 5, 41, r"counts\[0, 5\] = 41 exceeds class_sizes\[0\]"),
    ("over-size-uint8", np.uint8, 1, 1023, 41, r"counts\[1, 1023\] = 41 exceeds"),
    ("over-size-uint16", np.uint16, 3, 300, 40000, r"counts\[3, 300\] = 40000 exceeds"),
    ("over-size-uint32", np.uint32, 1, 256, 2**31, r"counts\[1, 256\] = 2147483648 exceeds"),
    ("absent-class", np.int64, 2, 17, 1, r"counts\[2, 17\] = 1 exceeds class_sizes\[2\] = 0"),
]


@pytest.mark.parametrize("backend", NATIVE)
@pytest.mark.parametrize("kernel", ["node_metrics", "layer_metrics"])
@pytest.mark.parametrize("dtype, row, node, value, rx", [pytest.param(*r[1:], id=r[0]) for r in KERNEL_BAD])
def test_kernels_check_the_counts_they_read(backend, kernel, dtype, row, node, value, rx):
    counts, sizes = random_table(11, 4, 1024, 40, 0)
    sizes[2] = 0
    counts[2] = 0
    counts = counts.astype(dtype)
    counts[row, node] = value
    fn = getattr(importlib.import_module(f"nnphases.kernels.impl.{backend}"), kernel)  # past the public boundary
    if kernel == "layer_metrics":  # the backends' layer kernel takes a list of tables and names the bad one
        good, _ = random_table(11, 4, 300, 40, 0)  # the same class sizes
        good[2] = 0
        with pytest.raises(ValueError, match=rx) as e:
            fn([good.astype(dtype), counts], sizes, threads=2)
        assert e.value.table == 1
        return
    with pytest.raises(ValueError, match=rx):
        fn(counts, sizes, threads=2)


# ------------------------------------------------------- many tables in one call
# A checkpoint's layers in one layer_metrics call: any widths (a partial last block, one node, the numba and
# C++ grain of 256), count dtypes mixed, tables on and off the entropy-table path (few nodes: logarithms).
MANY = [  # id, [(nodes, dtype)], classes, per class, absent classes
    ("checkpoint-like", [(1024, np.int32), (513, np.int32), (256, np.int32), (1, np.int32)], 10, 40, 0),
    ("mixed-dtypes", [(700, np.uint8), (300, np.uint16), (900, np.int64), (5, np.uint32)], 4, 60, 1),
    ("log-path-and-tables", [(3, np.int64), (2000, np.int64), (17, np.int32)], 3, 1000, 0),
    ("one-table", [(4096, np.int32)], 100, 7, 3),
]


def many_tables(row_id: str, widths: list, c: int, per: int, absent: int) -> tuple[list[np.ndarray], np.ndarray]:
    tables, sizes = [], None
    for n, dtype in widths:  # the same seed: the same class sizes for every table
        counts, sizes = random_table(seed_of("many", row_id), c, n, per, absent)
        tables.append(counts.astype(dtype))
    return tables, sizes


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("widths, c, per, absent", [pytest.param(*r[1:], id=r[0]) for r in MANY])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_layer_metrics_of_many_tables(backend, widths, c, per, absent, threads):
    """One call for many tables: the same results, exactly, as a call per table; a list (or tuple) in, a list
    out; within the oracle's bound."""
    tables, sizes = many_tables(repr(widths), widths, c, per, absent)
    got = K.layer_metrics(tables, sizes, backend=backend, threads=threads)
    assert isinstance(got, list) and len(got) == len(tables)
    for g, counts in zip(got, tables):
        assert repr(g) == repr(K.layer_metrics(counts, sizes, backend=backend, threads=threads))  # NaN == NaN
        assert_layer_agrees(g, layer_metrics_np(counts, sizes))
    assert repr(K.layer_metrics(tuple(tables), sizes, backend=backend)) == repr(got)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_metrics_of_no_tables(backend):
    assert K.layer_metrics([], np.array([3, 4]), backend=backend) == []


MANY_BAD = [  # id, tables from a good [4, 300] int64 table g and sizes, exception, message
    ("bad-count-in-third", lambda g: [g, g[:, :10], np.where(np.arange(300) == 7, 99, g)], ValueError,
     r"^counts\[2\]: counts\[0, 7\] = 99 exceeds class_sizes\[0\] = 40$"),
    ("negative-in-first", lambda g: [np.where(np.arange(300) == 0, -1, g), g], ValueError,
     r"^counts\[0\]: counts\[0, 0\] = -1 is negative$"),
    ("rows-differ", lambda g: [g, g[:3]], ValueError,
     r"^counts\[1\]: class_sizes has 4 entries but counts has 3 classes"),
    ("not-an-array", lambda g: [g, [[1, 2]]], TypeError, r"^counts\[1\] must be a NumPy array"),
    ("float-table", lambda g: [g.astype(np.float64)], TypeError, r"^counts\[0\]: counts must have an integer"),
    ("one-dimensional", lambda g: [g, g[0]], ValueError, r"^counts\[1\]: counts must be 2-D"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make, exc, rx", [pytest.param(*r[1:], id=r[0]) for r in MANY_BAD])
def test_layer_metrics_of_many_tables_names_the_bad_one(backend, make, exc, rx):
    good, _ = random_table(seed_of("many-bad"), 4, 300, 40, 0)
    sizes = np.full(4, 40)  # no smaller than any count
    with pytest.raises(exc, match=rx):
        K.layer_metrics(make(good), sizes, backend=backend)
