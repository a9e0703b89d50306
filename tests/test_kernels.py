"""Every backend against the reference, exact integer equality, over a table of
shapes (the edges of 8-, 32- and 64-bit words), dtypes, layouts and class counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nnphases.kernels as K
from kernel_tables import backend_params, case_seed, host, make_acts, make_labels, to_backend, to_backend_pair

EDGE_SAMPLES = [1, 31, 32, 33, 63, 64, 65, 1023, 1025]
# (samples, nodes, classes, absent classes): the word edges, then a seeded spread of random shapes.
_rng = np.random.default_rng(2026)
SHAPES = [(s, n, c, a) for s, n, c, a in [
    (1, 1, 1, 0), (31, 7, 2, 0), (32, 33, 3, 1), (33, 1, 10, 4), (63, 129, 5, 0), (64, 64, 1, 0),
    (65, 17, 7, 2), (1023, 31, 10, 0), (1025, 300, 1000, 900), (2000, 3, 2, 0), (0, 5, 3, 0), (7, 0, 3, 0),
]] + [
    (int(s), int(n), int(c), int(a))
    for s, n, c, a in zip(
        _rng.choice(EDGE_SAMPLES + list(_rng.integers(1, 3000, 12)), 24),
        _rng.choice([1, 2, 3, 5, 16, 100, 255, 513, 1000, 2049], 24),
        _rng.choice([1, 2, 3, 10, 100, 1000], 24),
        _rng.integers(0, 3, 24),
    )
]
SHAPE_IDS = [f"S{s}-N{n}-C{c}-a{a}" for s, n, c, a in SHAPES]
DTYPES = ["bool", "float16", "bfloat16", "float32", "float64"]
LAYOUTS = ["contiguous", "column-slice", "transposed", "row-step"]


def layout(t: torch.Tensor, how: str) -> torch.Tensor:
    """The same values in another memory layout."""
    s, n = t.shape
    if how == "column-slice":  # rows further apart than their length: read in place
        big = torch.zeros((s, n + 5), dtype=t.dtype)
        big[:, 3:3 + n] = t
        return big[:, 3:3 + n]
    if how == "transposed":  # nodes not adjacent: the boundary copies
        return t.t().contiguous().t()
    if how == "row-step":
        big = torch.zeros((2 * s, n), dtype=t.dtype)
        big[::2] = t
        return big[::2]
    return t


def reference_counts(acts: torch.Tensor, labels: torch.Tensor, c: int) -> np.ndarray:
    return K.class_counts(acts, labels, c, backend="reference", check_finite=False).numpy()


@pytest.mark.parametrize("backend", backend_params("class_counts"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_class_counts(backend, dtype, shape):
    s, n, c, absent = shape
    rng = np.random.default_rng(case_seed(s, n, c, dtype))
    acts = make_acts(rng, s, n, dtype)
    labels = make_labels(rng, s, c, torch.int32 if s % 2 else torch.int64, absent)
    want = reference_counts(acts, labels, c)
    a, lab = to_backend_pair(acts, labels, backend)
    got = K.class_counts(a, lab, c, backend=backend)
    assert type(got) is type(a)
    got = host(got)
    assert got.dtype == np.int64 and got.shape == (c, n)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", backend_params("class_counts"))
@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bool"])
def test_class_counts_layouts(backend, how, dtype):
    rng = np.random.default_rng(7)
    acts = make_acts(rng, 301, 77, dtype)
    labels = make_labels(rng, 301, 6)
    want = reference_counts(acts, labels, 6)
    got = K.class_counts(to_backend(layout(acts, how), backend), to_backend(labels, backend), 6, backend=backend)
    np.testing.assert_array_equal(host(got), want)


@pytest.mark.parametrize("backend", [p for p in backend_params("class_counts") if p.values[0] in ("cpp", "numba")])
@pytest.mark.parametrize("strategy", ["direct", "wide", "sorted"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_strategies_and_threads(backend, strategy, threads, dtype):
    rng = np.random.default_rng(11)
    acts = make_acts(rng, 1500, 130, dtype)
    labels = make_labels(rng, 1500, 37, absent=3)
    want = reference_counts(acts, labels, 37)
    got = K.class_counts(acts, labels, 37, backend=backend, strategy=strategy, threads=threads)
    np.testing.assert_array_equal(got.numpy(), want)


# Inputs past the C++ kernels' one-thread size (about a million elements a thread), so that threads past the
# first count into rows of their own that are summed at the end: few classes (direct), many (wide under auto),
# and classes absent from one thread's rows.
@pytest.mark.parametrize("backend", [p for p in backend_params("class_counts") if p.values[0] in ("cpp", "numba")])
@pytest.mark.parametrize("strategy", ["auto", "direct", "wide", "sorted"])
@pytest.mark.parametrize("classes, ordered", [(7, False), (1000, False), (50, True)])
def test_cpu_strategies_on_several_threads(backend, strategy, classes, ordered):
    rng = np.random.default_rng(classes + 13 * ordered)
    acts = make_acts(rng, 9001, 240, "float32")
    labels = make_labels(rng, 9001, classes)
    if ordered:  # each thread's rows name only some of the classes
        labels = torch.sort(labels).values
    want = reference_counts(acts, labels, classes)
    got = K.class_counts(acts, labels, classes, backend=backend, strategy=strategy, threads=2)
    np.testing.assert_array_equal(got.numpy(), want)
    out = torch.zeros((classes, 240), dtype=torch.int32)
    _, packed = K.count_and_pack(acts, labels, classes, out=out, backend=backend, threads=2)
    np.testing.assert_array_equal(out.numpy(), want)
    np.testing.assert_array_equal(packed.numpy(), K.pack_masks(acts, backend="reference").numpy())


@pytest.mark.parametrize("backend", backend_params("pack_masks"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES[:12], ids=SHAPE_IDS[:12])
def test_pack_masks(backend, dtype, shape):
    s, n = shape[:2]
    rng = np.random.default_rng(s * 7919 + n)
    acts = make_acts(rng, s, n, dtype)
    want = (acts > 0).numpy() if dtype != "bool" else acts.numpy()
    got = host(K.pack_masks(to_backend(acts, backend), backend=backend))
    assert got.dtype == np.uint8 and got.shape == (n, -(-s // 64) * 8)
    bits = np.unpackbits(got, axis=1, bitorder="little")
    np.testing.assert_array_equal(bits[:, :s], want.T)
    assert not bits[:, s:].any(), "padding bits must be zero"


@pytest.mark.parametrize("backend", backend_params("pack_masks"))
@pytest.mark.parametrize("how", LAYOUTS)
def test_pack_masks_layouts(backend, how):
    rng = np.random.default_rng(3)
    acts = make_acts(rng, 200, 45, "float32")
    want = host(K.pack_masks(acts, backend="reference"))
    got = K.pack_masks(to_backend(layout(acts, how), backend), backend=backend)
    np.testing.assert_array_equal(host(got), want)


@pytest.mark.parametrize("backend", backend_params("packed_class_counts"))
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("grouped", [False, True], ids=["shuffled", "grouped"])
def test_packed_class_counts(backend, shape, grouped):
    s, n, c, absent = shape
    rng = np.random.default_rng(s + 31 * n + c)
    acts = make_acts(rng, s, n, "float32")
    labels = make_labels(rng, s, c, absent=absent)
    if grouped:
        labels = labels.sort().values
    packed = K.pack_masks(acts, backend="reference")
    want = reference_counts(acts, labels, c)
    got = K.packed_class_counts(to_backend(packed, backend), to_backend(labels, backend), c, backend=backend)
    np.testing.assert_array_equal(host(got), want)


@pytest.mark.parametrize("backend", backend_params("packed_class_counts"))
def test_packed_ignores_padding_bits(backend):
    rng = np.random.default_rng(5)
    acts = make_acts(rng, 70, 9, "float32")
    labels = make_labels(rng, 70, 4)
    packed = K.pack_masks(acts, backend="reference")
    dirty = packed.clone()
    dirty[:, 9:] = 0xFF  # samples 72.. are padding; byte 8 holds samples 64..71, of which 70, 71 are padding
    dirty[:, 8] |= 0xC0
    got = K.packed_class_counts(to_backend(dirty, backend), to_backend(labels, backend), 4, backend=backend)
    np.testing.assert_array_equal(host(got), reference_counts(acts, labels, 4))


@pytest.mark.parametrize("backend", [p for p in backend_params("class_counts") if p.values[0] in ("cuda", "cupy")])
def test_gpu_runs_on_callers_stream(backend):
    """Work queued on a side stream is seen by the kernels (they run on the caller's current stream)."""
    rng = np.random.default_rng(9)
    acts = make_acts(rng, 4000, 700, "float32")
    labels = make_labels(rng, 4000, 10)
    want = reference_counts(acts, labels, 10)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        a = acts.cuda(non_blocking=False) * 1.0  # produced on the side stream
        lab = labels.cuda()
        if backend == "cupy":
            import cupy

            with cupy.cuda.ExternalStream(side.cuda_stream):
                got = K.class_counts(cupy.from_dlpack(a), cupy.from_dlpack(lab), 10, backend=backend,
                                     check_finite=False, check_labels=False)
                got = torch.from_dlpack(got)
        else:
            got = K.class_counts(a, lab, 10, backend=backend, check_finite=False, check_labels=False)
        packed = K.pack_masks(a, backend="cuda" if backend == "cuda" else "cupy", check_finite=False)
    side.synchronize()
    np.testing.assert_array_equal(host(got), want)
    np.testing.assert_array_equal(host(packed), host(K.pack_masks(acts, backend="reference")))


def test_add_into_adds_in_place_into_a_numpy_table():
    """The path of a host-only backend on a CuPy table: the counts are added into the table itself, and the
    frozen description of it is not assigned to (``out.obj += counts`` raised FrozenInstanceError)."""
    from nnphases.kernels import _arrays

    table = np.zeros((2, 3), np.int64)
    _arrays.add_into(_arrays.describe(table, "out"), np.ones((2, 3), np.int32))
    assert table.tolist() == [[1, 1, 1], [1, 1, 1]]
