"""class_counts with ``out``: the counts of each call are added in place into the caller's
int32 or int64 table, which is returned. Batches accumulated into ``out`` (starting from
nonzero contents) equal the start plus the sum of separate calls, exactly, on every
backend, dtype, library, strategy and thread count; the CPU C++ path adds in place with
no table allocated per call."""

from __future__ import annotations

import tracemalloc
import zlib

import numpy as np
import pytest
import torch

import nnphases.kernels as K
from kernel_tables import backend_params, device_of, host, make_acts, make_labels, to_backend_pair

DTYPES = ["bool", "float16", "bfloat16", "float32", "float64"]
OUT_DTYPES = ["int32", "int64"]
CPU = [p for p in backend_params("class_counts") if device_of(p.values[0]) == "cpu"]
NATIVE_CPU = [p for p in CPU if p.values[0] in ("cpp", "numba")]
# (samples, nodes, classes, batches): one row, word edges, many classes, uneven batches.
SHAPES = [(1, 1, 1, 1), (65, 33, 3, 2), (300, 77, 6, 3), (1025, 129, 10, 4), (700, 5, 100, 5), (257, 300, 2, 7)]
SHAPE_IDS = [f"S{s}-N{n}-C{c}-b{b}" for s, n, c, b in SHAPES]


def seed_of(*parts: object) -> int:
    """A seed from a case's parameters, the same in every process (hash() of str is salted)."""
    return zlib.crc32(repr(parts).encode())


def start_table(rng: np.random.Generator, c: int, n: int, dtype: str) -> np.ndarray:
    """Nonzero initial contents, negative ones included: out is added into, never overwritten."""
    return rng.integers(-1000, 1000, (c, n)).astype(dtype)


def like_acts(table: np.ndarray, a: object) -> object:
    """The table in the library and on the device of the activations a."""
    t = torch.from_numpy(table.copy())
    if isinstance(a, np.ndarray):
        return t.numpy()
    if isinstance(a, torch.Tensor):
        return t.to(a.device)
    import cupy

    return cupy.from_dlpack(t.cuda())


def cuts(rng: np.random.Generator, samples: int, batches: int) -> list[tuple[int, int]]:
    inner = sorted(rng.choice(np.arange(1, samples), batches - 1, replace=False).tolist()) if batches > 1 else []
    edges = [0, *inner, samples]
    return list(zip(edges[:-1], edges[1:]))


@pytest.mark.parametrize("backend", backend_params("class_counts"))
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_batches_accumulate(backend, dtype, out_dtype, shape):
    s, n, c, batches = shape
    rng = np.random.default_rng(seed_of(s, n, c, dtype, out_dtype))
    acts = make_acts(rng, s, n, dtype)
    labels = make_labels(rng, s, c, torch.int32 if batches % 2 else torch.int64)
    start = start_table(rng, c, n, out_dtype)
    a, lab = to_backend_pair(acts, labels, backend)
    out = like_acts(start, a)
    separate = np.zeros((c, n), np.int64)
    reference = np.zeros((c, n), np.int64)
    for b0, b1 in cuts(rng, s, batches):
        separate += host(K.class_counts(a[b0:b1], lab[b0:b1], c, backend=backend))
        reference += K.class_counts(acts[b0:b1], labels[b0:b1], c, backend="reference").numpy()
        got = K.class_counts(a[b0:b1], lab[b0:b1], c, out=out, backend=backend)
        assert got is out
    np.testing.assert_array_equal(separate, reference)
    result = host(out)
    assert result.dtype == np.dtype(out_dtype) and result.shape == (c, n)
    np.testing.assert_array_equal(result, start + separate)


@pytest.mark.parametrize("backend", NATIVE_CPU)
@pytest.mark.parametrize("strategy", ["direct", "wide", "sorted"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_strategies_and_threads_accumulate(backend, dtype, out_dtype, threads, strategy):
    rng = np.random.default_rng(12)
    acts = make_acts(rng, 1500, 130, dtype)
    labels = make_labels(rng, 1500, 37, absent=3)
    start = start_table(rng, 37, 130, out_dtype)
    out = torch.from_numpy(start.copy())
    for b0, b1 in [(0, 700), (700, 701), (701, 1500)]:
        got = K.class_counts(acts[b0:b1], labels[b0:b1], 37, out=out, backend=backend, strategy=strategy,
                             threads=threads)
        assert got is out
    want = start + K.class_counts(acts, labels, 37, backend="reference").numpy()
    np.testing.assert_array_equal(out.numpy(), want)


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_out_is_returned_and_fresh_table_unchanged(backend, lib):
    """Without out every call returns a fresh int64 table; with out the same object comes back."""
    rng = np.random.default_rng(3)
    acts, labels = make_acts(rng, 100, 9, "float32"), make_labels(rng, 100, 4)
    if lib == "numpy":
        acts, labels = acts.numpy(), labels.numpy()
    first = K.class_counts(acts, labels, 4, backend=backend)
    second = K.class_counts(acts, labels, 4, backend=backend)
    assert first is not second and host(first).dtype == np.int64
    np.testing.assert_array_equal(host(first), host(second))
    out = like_acts(np.zeros((4, 9), np.int32), acts)
    assert K.class_counts(acts, labels, 4, out=out, backend=backend) is out
    assert type(out) is type(first)
    np.testing.assert_array_equal(host(out), host(first))


@pytest.mark.parametrize("backend", CPU)
def test_empty_batch_leaves_out_unchanged(backend):
    out = np.arange(12, dtype=np.int32).reshape(3, 4)
    got = K.class_counts(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 3, out=out, backend=backend)
    assert got is out and out.tolist() == np.arange(12).reshape(3, 4).tolist()


@pytest.mark.parametrize("strategy", ["direct", "wide", "sorted"])
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
def test_cpp_adds_in_place_without_a_table(out_dtype, strategy):
    """The C++ path allocates no [classes, nodes] array per call (its per-thread counters live in C++):
    the Python-visible peak of a call stays far below one table."""
    if [p for p in CPU if p.values[0] == "cpp" and p.marks]:
        pytest.skip("cpp backend unavailable")
    rng = np.random.default_rng(4)
    c, n = 100, 10_000
    acts, labels = make_acts(rng, 64, n, "float32").numpy(), make_labels(rng, 64, c).numpy()
    out = np.zeros((c, n), out_dtype)
    K.class_counts(acts, labels, c, out=out, backend="cpp", threads=1, strategy=strategy)  # warm up
    tracemalloc.start()
    try:
        K.class_counts(acts, labels, c, out=out, backend="cpp", threads=1, strategy=strategy)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < out.nbytes // 8, f"a call allocated {peak} bytes next to a {out.nbytes}-byte table"
    np.testing.assert_array_equal(out, 2 * K.class_counts(acts, labels, c, backend="reference"))
