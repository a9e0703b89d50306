"""Hypothesis properties of the CPU backends: exact agreement with the reference over
random shapes, dtypes, labels, layouts, strategies and threads; packed counts equal
direct counts; invariance under permuting samples; class sums equal per-node active
counts; counts of two batches add up to the counts of the whole, also accumulated into
an int32 or int64 ``out``; and any NumPy byte layout (strides that are not whole
elements, misaligned, reversed) of activations and labels counts as its dense copy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnphases.kernels as K
from kernel_tables import backend_params, make_acts

CPU = [p for p in backend_params("class_counts") if p.values[0] in ("cpp", "numba")]
PACK_CPU = [p for p in backend_params("packed_class_counts") if p.values[0] in ("cpp", "numba")]
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = ["bool", "float16", "bfloat16", "float32", "float64"]


@st.composite
def problems(draw):
    """(acts torch [S, N], labels torch [S], num_classes, nonfinite?) with the values that trip
    sign tests (-0.0, denormals), optionally NaN and infinities, and a strided layout."""
    s = draw(st.integers(0, 300))
    n = draw(st.integers(1, 70))
    c = draw(st.integers(1, 50))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]))
    nonfinite = dtype != "bool" and draw(st.booleans())
    layout = draw(st.sampled_from(["contiguous", "column-slice", "transposed"]))
    rng = np.random.default_rng(seed)
    a = make_acts(rng, s, n, dtype, density=min(max(density, 1e-6), 1 - 1e-6))
    if density in (0.0, 1.0) and dtype == "bool":
        a = torch.full((s, n), density == 1.0)
    if nonfinite and s:
        pick = torch.from_numpy(rng.integers(0, 10, (s, n)))
        a[pick == 0] = math.nan
        a[pick == 1] = math.inf
        a[pick == 2] = -math.inf
    if layout == "column-slice":
        big = torch.zeros((s, n + 3), dtype=a.dtype)
        big[:, 2:2 + n] = a
        a = big[:, 2:2 + n]
    elif layout == "transposed":
        a = a.t().contiguous().t()
    used = draw(st.integers(1, c))  # labels drawn from the first `used` classes; the rest stay empty
    lab = torch.from_numpy(rng.integers(0, used, s)).to(draw(st.sampled_from([torch.int32, torch.int64])))
    return a, lab, c, nonfinite


def reference(a, lab, c) -> np.ndarray:
    return K.class_counts(a, lab, c, backend="reference", check_finite=False).numpy()


def active(a: torch.Tensor) -> np.ndarray:
    return a.numpy() if a.dtype == torch.bool else (a.double() > 0).numpy()


@pytest.mark.parametrize("backend", CPU)
@SETTINGS
@given(p=problems(), strategy=st.sampled_from(["auto", "direct", "wide", "sorted"]), threads=st.sampled_from([None, 1, 2]))
def test_backend_equals_reference(backend, p, strategy, threads):
    a, lab, c, nonfinite = p
    want = reference(a, lab, c)
    got = K.class_counts(a, lab, c, backend=backend, strategy=strategy, threads=threads, check_finite=not nonfinite)
    assert got.dtype == torch.int64 and tuple(got.shape) == (c, a.shape[1])
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("backend", CPU)
@SETTINGS
@given(p=problems(), threads=st.sampled_from([None, 1, 2]))
def test_pack_masks_equals_reference(backend, p, threads):
    a, _, _, nonfinite = p
    want = K.pack_masks(a, backend="reference", check_finite=False).numpy()
    got = K.pack_masks(a, backend=backend, threads=threads, check_finite=not nonfinite).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", PACK_CPU)
@SETTINGS
@given(p=problems())
def test_packed_counts_equal_counts(backend, p):
    a, lab, c, _ = p
    packed = K.pack_masks(a, backend=backend, check_finite=False)
    got = K.packed_class_counts(packed, lab, c, backend=backend)
    np.testing.assert_array_equal(got.numpy(), K.class_counts(a, lab, c, backend=backend, check_finite=False).numpy())
    np.testing.assert_array_equal(got.numpy(), reference(a, lab, c))


@pytest.mark.parametrize("backend", CPU)
@SETTINGS
@given(p=problems(), seed=st.integers(0, 2**32 - 1))
def test_invariant_under_permuting_samples(backend, p, seed):
    a, lab, c, _ = p
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(a.shape[0]))
    before = K.class_counts(a, lab, c, backend=backend, check_finite=False)
    after = K.class_counts(a[perm], lab[perm], c, backend=backend, check_finite=False)
    np.testing.assert_array_equal(after.numpy(), before.numpy())


@pytest.mark.parametrize("backend", CPU)
@SETTINGS
@given(p=problems())
def test_class_sum_is_node_activity(backend, p):
    a, lab, c, _ = p
    got = K.class_counts(a, lab, c, backend=backend, check_finite=False).numpy()
    np.testing.assert_array_equal(got.sum(axis=0), active(a).sum(axis=0))
    # and classes without samples have all-zero rows
    empty = np.bincount(lab.numpy().astype(np.int64), minlength=c) == 0
    assert not got[empty].any()


@pytest.mark.parametrize("backend", CPU)
@SETTINGS
@given(p=problems(), cut=st.floats(0.0, 1.0))
def test_batches_add_up(backend, p, cut):
    a, lab, c, _ = p
    k = int(round(cut * a.shape[0]))
    whole = K.class_counts(a, lab, c, backend=backend, check_finite=False).numpy()
    first = K.class_counts(a[:k], lab[:k], c, backend=backend, check_finite=False).numpy()
    second = K.class_counts(a[k:], lab[k:], c, backend=backend, check_finite=False).numpy()
    np.testing.assert_array_equal(first + second, whole)


@pytest.mark.parametrize("backend", CPU)
@SETTINGS
@given(p=problems(), cut=st.floats(0.0, 1.0), out_dtype=st.sampled_from([torch.int32, torch.int64]))
def test_batches_accumulate_into_out(backend, p, cut, out_dtype):
    a, lab, c, _ = p
    k = int(round(cut * a.shape[0]))
    start = torch.from_numpy(np.random.default_rng(k).integers(-99, 99, (c, a.shape[1]))).to(out_dtype)
    out = start.clone()
    for sl in (slice(0, k), slice(k, None)):
        assert K.class_counts(a[sl], lab[sl], c, out=out, backend=backend, check_finite=False) is out
    np.testing.assert_array_equal(out.numpy(), start.numpy() + reference(a, lab, c))


@st.composite
def numpy_views(draw):
    """(view, labels, num_classes): random activations in a NumPy view at arbitrary byte strides (nodes
    `item + gap` bytes apart, rows a few more bytes apart than their length), reversed along either axis
    or not, data at any byte offset, over a buffer of 0xFF bytes (a misread sees NaN or true); labels
    likewise at any byte stride."""
    s, n, c = draw(st.integers(0, 150)), draw(st.integers(1, 40)), draw(st.integers(1, 20))
    dtype = draw(st.sampled_from(["bool", "float16", "float32", "float64"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    a = make_acts(rng, s, n, dtype).numpy()

    def place(x: np.ndarray, steps: tuple[int, ...], offset: int) -> np.ndarray:
        span = sum((k - 1) * st_ for k, st_ in zip(x.shape, steps)) + x.itemsize if x.size else 0
        buf = np.full(offset + span + 8, 0xFF, np.uint8)
        v = np.ndarray(x.shape, dtype=x.dtype, buffer=buf, offset=offset, strides=steps)
        v[...] = x
        return v

    node_step = a.itemsize + draw(st.integers(0, 3))
    v = place(a, (n * node_step + draw(st.integers(0, 5)), node_step), draw(st.integers(0, 7)))
    if draw(st.booleans()):
        v = v[::-1]
    if draw(st.booleans()):
        v = v[:, ::-1]
    lab = rng.integers(0, c, s).astype(draw(st.sampled_from([np.int32, np.int64])))
    lab = place(lab, (lab.itemsize + draw(st.integers(0, 3)),), draw(st.integers(0, 7)))
    return v, lab, c


@pytest.mark.parametrize("backend", CPU)
@SETTINGS
@given(p=numpy_views(), threads=st.sampled_from([None, 1, 2]), check_finite=st.booleans())
def test_any_numpy_layout_equals_reference(backend, p, threads, check_finite):
    v, lab, c = p
    want = K.class_counts(v.copy(order="C"), lab.copy(), c, backend="reference")
    got = K.class_counts(v, lab, c, backend=backend, threads=threads, check_finite=check_finite)
    np.testing.assert_array_equal(got, want)
    packed = K.pack_masks(v, backend=backend, threads=threads, check_finite=check_finite)
    np.testing.assert_array_equal(packed, K.pack_masks(v.copy(order="C"), backend="reference"))
    np.testing.assert_array_equal(K.packed_class_counts(packed[::-1].copy()[::-1], lab, c, backend=backend), want)
