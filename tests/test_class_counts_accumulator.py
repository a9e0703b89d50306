"""kernels.ClassCounts: class_counts summed over batches into one table with the table and options
validated once. Every sequence of batches gives exactly what class_counts with ``out`` gives, whether a
batch takes the remembered layout's short path or the public one (another dtype, width, library or
layout, strided rows, labels changed in place); bad batches raise the public path's errors, never reach
native code unchecked; bad tables and options are refused when the counter is made."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from kernel_tables import (
    backend_params,
    device_of,
    host,
    make_acts,
    make_labels,
    to_backend_pair,
)

import nnphases.kernels as K

CPU = [p for p in backend_params("class_counts") if device_of(p.values[0]) == "cpu"]
ALL = backend_params("class_counts")


def seed_of(*parts: object) -> int:
    return zlib.crc32(repr(parts).encode())


# Each row: batches as (samples, dtype, layout, labels dtype); layout "dense", "strided" (every other node of
# a twice-as-wide array: rows not dense, the public path copies), "numpy" (NumPy arrays and table, not torch).
SEQUENCES = [
    ("same-layout", [(100, "float32", "dense", "int64")] * 4),
    ("dtype-changes", [(64, "float32", "dense", "int64"), (65, "float16", "dense", "int64"),
                       (30, "float32", "dense", "int64"), (7, "bfloat16", "dense", "int32"),
                       (7, "bfloat16", "dense", "int32")]),
    ("strided-then-dense", [(50, "float64", "strided", "int64"), (50, "float64", "dense", "int64"),
                            (51, "float64", "strided", "int64"), (1, "float64", "dense", "int64")]),
    ("bool-and-empty", [(33, "bool", "dense", "int32"), (0, "bool", "dense", "int32"), (33, "bool", "dense", "int32")]),
    ("numpy", [(40, "float32", "numpy", "int64"), (40, "float32", "numpy", "int32"), (41, "float64", "numpy", "int64"),
               (40, "float32", "numpy", "int64")]),
]


def batch(rng: np.random.Generator, samples: int, nodes: int, classes: int, dtype: str, layout: str,
          labels_dtype: str) -> tuple[object, object, torch.Tensor, torch.Tensor]:
    """(acts, labels) as given to the counter and the same values as dense torch tensors for the reference."""
    wide = make_acts(rng, samples, 2 * nodes if layout == "strided" else nodes, dtype)
    acts = wide[:, ::2] if layout == "strided" else wide
    labels = make_labels(rng, samples, classes, getattr(torch, labels_dtype))
    ref = (acts.contiguous(), labels)
    if layout == "numpy":
        return acts.numpy(), labels.numpy(), *ref
    return acts, labels, *ref


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("out_dtype", ["int32", "int64"])
@pytest.mark.parametrize("batches", [pytest.param(r[1], id=r[0]) for r in SEQUENCES])
def test_batches_sum_as_class_counts_does(backend, out_dtype, batches):
    rng = np.random.default_rng(seed_of("accumulator", backend, out_dtype, repr(batches)))
    nodes, classes = 37, 5
    start = rng.integers(-50, 50, (classes, nodes)).astype(out_dtype)
    out = start.copy() if batches[0][2] == "numpy" else torch.from_numpy(start.copy())  # the batches' library
    counter = K.ClassCounts(out, classes, backend=backend)
    want = start.astype(np.int64)
    for samples, dtype, layout, lab_dtype in batches:
        acts, labels, ref_acts, ref_labels = batch(rng, samples, nodes, classes, dtype, layout, lab_dtype)
        assert counter.add(acts, labels) is out
        want += K.class_counts(ref_acts, ref_labels, classes, backend="reference").numpy()
        np.testing.assert_array_equal(host(out), want)


@pytest.mark.parametrize("backend", ALL)
def test_every_backend_and_device(backend):
    """GPU counters take the public path each time; the sums are the same."""
    rng = np.random.default_rng(seed_of("devices", backend))
    acts, labels = make_acts(rng, 300, 20, "float32"), make_labels(rng, 300, 4)
    a, lab = to_backend_pair(acts, labels, backend)
    out = K.class_counts(a[:1], lab[:1], 4, backend=backend) * 0
    counter = K.ClassCounts(out, 4, backend=backend)
    for b0, b1 in ((0, 100), (100, 250), (250, 300)):
        counter.add(a[b0:b1], lab[b0:b1])
    np.testing.assert_array_equal(host(out), K.class_counts(acts, labels, 4, backend="reference").numpy())


def test_labels_changed_in_place_are_checked_again():
    """The sites of a batch share one label check per tensor version; an in-place change makes a new one."""
    rng = np.random.default_rng(seed_of("versions"))
    acts, labels = make_acts(rng, 50, 8, "float32"), make_labels(rng, 50, 3)
    out = torch.zeros((3, 8), dtype=torch.int64)
    counter = K.ClassCounts(out, 3)
    original = labels.clone()
    counter.add(acts, labels)
    counter.add(acts, labels)  # the short path, labels checked once
    labels[7] = (int(labels[7]) + 1) % 3  # in place, in range: a new version, counted with the new label
    counter.add(acts, labels)
    want = 2 * K.class_counts(acts, original, 3).numpy() + K.class_counts(acts, labels, 3).numpy()
    np.testing.assert_array_equal(out.numpy(), want)
    labels[9] = 3  # out of range: refused on the short path too, nothing added
    before = out.clone()
    with pytest.raises(ValueError, match=r"^labels\[9\] = 3 is outside \[0, num_classes=3\)$"):
        counter.add(acts, labels)
    assert torch.equal(out, before)


@pytest.mark.parametrize("refill", ["numpy", "dlpack"])
def test_labels_refilled_without_a_version_bump_are_counted_as_they_are(refill):
    """A data source that refills one label tensor in place through NumPy or DLPack bumps no version counter: the
    counts must follow the labels' content, not a cached earlier batch's."""
    rng = np.random.default_rng(seed_of("refill"))
    acts, labels = make_acts(rng, 50, 8, "float32"), make_labels(rng, 50, 3)
    out = torch.zeros((3, 8), dtype=torch.int64)
    counter = K.ClassCounts(out, 3)
    first = labels.clone()
    counter.add(acts, labels)
    version = labels._version
    view = labels.numpy() if refill == "numpy" else np.from_dlpack(labels)
    view[:] = (view + 1) % 3  # every label changes, torch sees no write
    assert labels._version == version
    counter.add(acts, labels)
    want = K.class_counts(acts, first, 3).numpy() + K.class_counts(acts, labels, 3).numpy()
    np.testing.assert_array_equal(out.numpy(), want)
    view[4] = 7  # out of range, unseen by torch: refused all the same
    with pytest.raises(ValueError, match=r"^labels\[4\] = 7 is outside \[0, num_classes=3\)$"):
        counter.add(acts, labels)


BAD_BATCHES = [  # id, (acts, labels) from a good float32 batch of 40 x 8 and its int64 labels, error, message
    ("label-negative", lambda a, y: (a, torch.where(torch.arange(40) == 3, -1, y)), ValueError,
     r"^labels\[3\] = -1 is outside"),
    ("label-count", lambda a, y: (a, y[:39]), ValueError, r"labels"),
    ("width", lambda a, y: (a[:, :7], y), ValueError, r"out has shape \(3, 8\) but the counts are"),
    ("nan", lambda a, y: (torch.where(torch.arange(8) == 2, float("nan"), a), y), K.NonFiniteError, r"NaN"),
    ("labels-float", lambda a, y: (a, y.float()), TypeError, r"labels"),
    ("acts-int", lambda a, y: (a.to(torch.int32), y), TypeError, r"acts"),
    ("acts-3d", lambda a, y: (a[None], y), ValueError, r"acts"),
    ("mixed-libraries", lambda a, y: (a.numpy(), y), ValueError, r"labels|acts"),
]


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("make, exc, rx", [pytest.param(*r[1:], id=r[0]) for r in BAD_BATCHES])
def test_bad_batches_raise_after_a_good_one(backend, make, exc, rx):
    """A good batch first, so the layout is remembered: a bad one still raises the public path's error."""
    rng = np.random.default_rng(seed_of("bad", backend))
    acts, labels = make_acts(rng, 40, 8, "float32", special=False), make_labels(rng, 40, 3)
    out = torch.zeros((3, 8), dtype=torch.int64)
    counter = K.ClassCounts(out, 3, backend=backend)
    counter.add(acts, labels)
    with pytest.raises(exc, match=rx):
        counter.add(*make(acts, labels))


BAD_COUNTERS = [  # id, arguments, error, message
    ("out-float", lambda: (torch.zeros((3, 4)), 3), TypeError, r"^out has dtype float32; supported: int32, int64$"),
    ("out-1d", lambda: (torch.zeros(4, dtype=torch.int64), 3), ValueError, r"^out must be 2-D"),
    ("rows", lambda: (torch.zeros((2, 4), dtype=torch.int64), 3), ValueError, r"^out has shape \(2, 4\)"),
    ("classes", lambda: (torch.zeros((3, 4), dtype=torch.int64), 0), ValueError, r"num_classes"),
    ("not-an-array", lambda: ([[0, 0]], 1), TypeError, r"^out must be a NumPy array"),
]


@pytest.mark.parametrize("make, exc, rx", [pytest.param(*r[1:], id=r[0]) for r in BAD_COUNTERS])
def test_bad_counters_are_refused_when_made(make, exc, rx):
    out, classes = make()
    with pytest.raises(exc, match=rx):
        K.ClassCounts(out, classes)


@pytest.mark.parametrize("kwargs, exc, rx", [
    ({"backend": "fortran"}, ValueError, r"^backend must be one of"),
    ({"check_finite": "no"}, TypeError, r"^check_finite must be True or False, got 'no'$"),
    ({"threads": 0}, ValueError, r"^threads must be a positive int or None, got 0$"),
    ({"strategy": "fast"}, ValueError, r"^strategy must be 'auto', 'direct', 'wide' or 'sorted', got 'fast'$"),
])
def test_bad_options_are_refused_when_made(kwargs, exc, rx):
    with pytest.raises(exc, match=rx):
        K.ClassCounts(torch.zeros((2, 3), dtype=torch.int64), 2, **kwargs)


def test_read_only_table_is_refused():
    out = np.zeros((2, 3), np.int64)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"^out is read-only"):
        K.ClassCounts(out, 2)


@pytest.mark.parametrize("backend", CPU)
def test_the_public_path_runs_only_when_the_layout_changes(backend, monkeypatch):
    calls = []
    real = K.class_counts
    monkeypatch.setattr(K, "class_counts", lambda *a, **k: calls.append(a[0].dtype) or real(*a, **k))
    rng = np.random.default_rng(seed_of("layout", backend))
    out = torch.zeros((4, 16), dtype=torch.int32)
    counter = K.ClassCounts(out, 4, backend=backend)
    want = np.zeros((4, 16), np.int64)
    for dtype in ("float32", "float32", "float32", "float16", "float16", "float32"):
        acts, labels = make_acts(rng, 30, 16, dtype), make_labels(rng, 30, 4)
        counter.add(acts, labels)
        want += real(acts, labels, 4, backend="reference").numpy()
    assert calls == [torch.float32, torch.float16, torch.float32]
    np.testing.assert_array_equal(out.numpy(), want)


def test_counters_share_a_label_check_only_for_the_same_class_count():
    """Labels checked for 5 classes are not taken as checked for 3 by another counter of the same batch."""
    rng = np.random.default_rng(seed_of("shared-check"))
    acts, labels = make_acts(rng, 60, 6, "float32"), make_labels(rng, 60, 3)
    wide, narrow = K.ClassCounts(torch.zeros((5, 6), dtype=torch.int64), 5), K.ClassCounts(
        torch.zeros((3, 6), dtype=torch.int64), 3)
    for counter in (wide, narrow):
        counter.add(acts, labels)  # both learn the layout
    labels[11] = 4
    wide.add(acts, labels)
    with pytest.raises(ValueError, match=r"^labels\[11\] = 4 is outside \[0, num_classes=3\)$"):
        narrow.add(acts, labels)


# Labels checked once per batch (CheckedLabels) for every site of the batch: the same counts as plain labels, on
# every CPU backend, through the counter's short path and its public one, and through count_and_pack.
@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("name, sizes", [("same-size", [100, 100, 100]), ("sizes-change", [64, 65, 1, 0, 130])])
def test_checked_labels_count_as_plain_labels(backend, name, sizes):
    rng = np.random.default_rng(seed_of("checked", backend, name))
    classes, nodes = 5, 37
    out = torch.zeros((classes, nodes), dtype=torch.int32)
    plain = torch.zeros((classes, nodes), dtype=torch.int32)
    counter = K.ClassCounts(out, classes, backend=backend)
    for i, n in enumerate(sizes):
        acts = make_acts(rng, n, nodes, "float32")
        labels = make_labels(rng, n, classes, torch.int64)
        checked = K.CheckedLabels(labels, classes)
        for _ in range(2):  # two sites of one batch share the check
            counter.add(acts, checked)
            K.class_counts(acts, labels, classes, out=plain, backend="reference")
        fused = torch.zeros((classes, nodes), dtype=torch.int64)
        _, packed = K.count_and_pack(acts, checked, classes, out=fused, backend=backend)
        want = K.class_counts(acts, labels, classes, backend="reference")
        np.testing.assert_array_equal(fused.numpy(), np.asarray(want), err_msg=f"count_and_pack, batch {i}")
        np.testing.assert_array_equal(np.asarray(packed), np.asarray(K.pack_masks(acts, backend="reference")))
    np.testing.assert_array_equal(out.numpy(), plain.numpy())


BAD_CHECKED = [
    ("out-of-range", lambda: K.CheckedLabels(torch.tensor([0, 3, 9]), 5), ValueError,
     r"^labels\[2\] = 9 is outside \[0, num_classes=5\)$"),
    ("negative", lambda: K.CheckedLabels(np.array([-1, 0]), 5), ValueError,
     r"^labels\[0\] = -1 is outside \[0, num_classes=5\)$"),
    ("2-d", lambda: K.CheckedLabels(torch.zeros((2, 2), dtype=torch.int64), 5), ValueError,
     r"^labels must be 1-D \[samples\], got shape \(2, 2\)$"),
    ("float", lambda: K.CheckedLabels(torch.zeros(3), 5), TypeError, r"^labels has dtype float32; supported"),
    ("classes", lambda: K.CheckedLabels(torch.zeros(3, dtype=torch.int64), 0), ValueError, r"num_classes"),
    ("other-classes", lambda: K.ClassCounts(torch.zeros((4, 3), dtype=torch.int32), 4).add(
        torch.ones((2, 3)), K.CheckedLabels(torch.tensor([0, 1]), 5)), ValueError,
     r"^labels were checked for num_classes=5, these counts have num_classes=4$"),
    ("length", lambda: K.ClassCounts(torch.zeros((5, 3), dtype=torch.int32), 5).add(
        torch.ones((2, 3)), K.CheckedLabels(torch.tensor([0, 1, 2]), 5)), ValueError,
     r"^labels has 3 entries but acts has 2 samples \(rows\)$"),
    ("fused-classes", lambda: K.count_and_pack(torch.ones((2, 3)), K.CheckedLabels(torch.tensor([0, 1]), 5), 4),
     ValueError, r"^labels were checked for num_classes=5, got num_classes=4$"),
]


@pytest.mark.parametrize("make, exc, rx", [pytest.param(*r[1:], id=r[0]) for r in BAD_CHECKED])
def test_bad_checked_labels_are_refused(make, exc, rx):
    with pytest.raises(exc, match=rx):
        make()


def test_checked_labels_keep_their_own_copy():
    labels = torch.tensor([0, 1, 2])
    checked = K.CheckedLabels(labels, 3)
    labels[0] = 7  # the caller's tensor changes; what was checked does not
    assert checked.values.tolist() == [0, 1, 2] and not checked.values.flags.writeable
