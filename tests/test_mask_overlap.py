"""mask_overlap: per node, |A ∩ B| and |A ∪ B| of two mask sets of one layer, in all and per class, on every
backend, exactly equal to the counts taken from the boolean activations the masks were packed from (never from
the packed bits themselves), whatever the padding bits hold; the GPU backends, on their callers' own arrays (torch
for cuda, CuPy for cupy), exactly equal to the reference on the same tables; and, without a GPU, that the device
code compiles as CuPy compiles it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernel_tables import (
    backend_params,
    device_code_compiles,
    device_of,
    gpu_matches_reference,
    gpu_params,
    host,
    needs_nvcc,
    to_backend,
    with_padding_set,
)

import nnphases.kernels as K

# (id, samples, nodes, classes (0: no labels), density of A, density of B, seed)
CASES = [
    ("empty-samples", 0, 5, 0, 0.5, 0.5, 0),
    ("no-nodes", 70, 0, 3, 0.5, 0.5, 1),
    ("one-sample", 1, 7, 0, 0.5, 0.5, 2),
    ("63", 63, 9, 2, 0.4, 0.6, 3),
    ("64", 64, 9, 0, 0.5, 0.5, 4),
    ("65", 65, 9, 5, 0.5, 0.2, 5),
    ("odd-1000", 1001, 37, 10, 0.3, 0.3, 6),
    ("all-active", 130, 11, 4, 1.0, 1.0, 7),
    ("none-active", 130, 11, 4, 0.0, 0.0, 8),
    ("disjoint-densities", 500, 16, 0, 1.0, 0.0, 9),
    ("classes-absent", 300, 13, 7, 0.5, 0.5, 10),
    ("many-words", 4097, 33, 3, 0.1, 0.9, 11),
]


def truth(a: np.ndarray, b: np.ndarray, labels: np.ndarray | None, classes: int) -> np.ndarray:
    """From the activations' booleans [samples, nodes]: int64 [2, classes or 1, nodes]."""
    cls = np.zeros(a.shape[0], np.int64) if labels is None else labels
    out = np.zeros((2, max(classes, 1), a.shape[1]), np.int64)
    for c in range(max(classes, 1)):
        out[0, c] = (a & b)[cls == c].sum(axis=0)
        out[1, c] = (a | b)[cls == c].sum(axis=0)
    return out


def table(samples: int, nodes: int, classes: int, da: float, db: float, seed: int):
    """A case's activations a, b (bool [samples, nodes]), labels (or None) and masks (torch, padding bits set)."""
    rng = np.random.default_rng(seed)
    # A is the second mask set's samples partly kept, so that overlaps are neither empty nor total.
    a = rng.random((samples, nodes)) < da
    b = np.where(rng.random((samples, nodes)) < 0.5, a, rng.random((samples, nodes)) < db)
    if da in (0.0, 1.0) and db in (0.0, 1.0):
        b = np.full_like(a, db == 1.0)
    labels = rng.integers(0, max(1, classes - (2 if classes > 5 else 0)), samples) if classes else None
    pa = with_padding_set(K.pack_masks(torch.from_numpy(a)), samples)
    pb = with_padding_set(K.pack_masks(torch.from_numpy(b)), samples)
    return a, b, labels, pa, pb


@pytest.mark.parametrize("backend", backend_params("mask_overlap"))
@pytest.mark.parametrize("samples, nodes, classes, da, db, seed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_exact_against_the_activations(backend, samples, nodes, classes, da, db, seed):
    a, b, labels, pa, pb = table(samples, nodes, classes, da, db, seed)
    dev = device_of(backend)
    pa, pb = pa.to(dev), pb.to(dev)
    want = truth(a, b, labels, classes)
    if classes:
        got = K.mask_overlap(pa, pb, samples, labels=torch.from_numpy(labels).to(dev), num_classes=classes,
                             backend=backend)
        assert got.dtype == torch.int64 and got.device.type == dev and tuple(got.shape) == (2, classes, nodes)
        np.testing.assert_array_equal(got.cpu().numpy(), want)
    got = K.mask_overlap(pa, pb, samples, backend=backend)
    assert tuple(got.shape) == (2, nodes)
    np.testing.assert_array_equal(got.cpu().numpy(), want.sum(axis=1))


@pytest.mark.parametrize("backend", backend_params("mask_overlap"))
def test_numpy_in_numpy_out_and_threads(backend):
    if device_of(backend) != "cpu":
        pytest.skip("NumPy inputs: CPU backends")
    rng = np.random.default_rng(12)
    a, b = rng.random((777, 300)) < 0.5, rng.random((777, 300)) < 0.5
    pa, pb = K.pack_masks(a), K.pack_masks(b)
    assert isinstance(pa, np.ndarray)
    want = truth(a, b, None, 0).sum(axis=1)
    for threads in (1, 2, 3):
        got = K.mask_overlap(pa, pb, 777, backend=backend, threads=threads)
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, want)


def test_a_set_against_itself_is_its_own_size():
    rng = np.random.default_rng(13)
    a = rng.random((200, 20)) < 0.3
    pa = K.pack_masks(torch.from_numpy(a))
    got = K.mask_overlap(pa, pa, 200).numpy()
    np.testing.assert_array_equal(got[0], a.sum(axis=0))
    np.testing.assert_array_equal(got[1], a.sum(axis=0))


# ----------------------------------------------------------------- the GPU backends against the reference
@pytest.mark.parametrize("backend", gpu_params("mask_overlap"))
@pytest.mark.parametrize("samples, nodes, classes, da, db, seed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_gpu_matches_the_reference(backend, samples, nodes, classes, da, db, seed):
    """The CPU rows' tables in the GPU caller's own arrays: the reference's integers, in the caller's kind of array
    on its device, named and automatic (which takes the first GPU backend that runs)."""
    _, _, labels, pa, pb = table(samples, nodes, classes, da, db, seed)
    gpu_matches_reference(K.mask_overlap, backend, pa, pb, samples)
    xa, xb = to_backend(pa, backend), to_backend(pb, backend)
    if classes:
        lab = torch.from_numpy(labels)
        want = K.mask_overlap(pa, pb, samples, labels=lab, num_classes=classes, backend="reference").numpy()
        got = K.mask_overlap(xa, xb, samples, labels=to_backend(lab, backend), num_classes=classes, backend=backend)
        assert type(got) is type(xa) and tuple(got.shape) == (2, classes, nodes)
        np.testing.assert_array_equal(host(got), want)


@pytest.mark.parametrize("backend", gpu_params("mask_overlap"))
def test_gpu_strided_masks_and_many_nodes(backend):
    """Masks that are a view (every other row: copied once on the device) and a layer of many short rows, where
    several rows share a warp."""
    rng = np.random.default_rng(15)
    for samples, nodes in ((700, 20_001), (100, 3)):
        a, b = rng.random((samples, 2 * nodes)) < 0.4, rng.random((samples, 2 * nodes)) < 0.6
        pa = with_padding_set(K.pack_masks(torch.from_numpy(a)), samples)
        pb = with_padding_set(K.pack_masks(torch.from_numpy(b)), samples)
        want = K.mask_overlap(pa[::2], pb[::2], samples, backend="reference").numpy()
        got = K.mask_overlap(to_backend(pa, backend)[::2], to_backend(pb, backend)[::2], samples, backend=backend)
        np.testing.assert_array_equal(host(got), want)


@needs_nvcc
def test_device_code_compiles_as_cupy_compiles_it(tmp_path):
    device_code_compiles("mask_overlap.cuh", ["nnp_mask_overlap_rows", "nnp_mask_overlap_classes"], tmp_path)
