"""sample_agreement: Hamming distances between chosen samples' codes across a layer's nodes, on every backend,
exactly equal to the count of disagreeing nodes in the boolean activations the masks were packed from; the GPU
backends, on their callers' own arrays, exactly equal to the reference on the same tables; and, without a GPU,
that the device code compiles as CuPy compiles it."""

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

# (id, samples, nodes, chosen: "all", "first", "spread", "repeat" or "one", density, seed)
CASES = [
    ("no-nodes", 70, 0, "all", 0.5, 0),
    ("one-node", 65, 1, "all", 0.5, 1),
    ("63-nodes", 200, 63, "spread", 0.5, 2),
    ("64-nodes", 200, 64, "spread", 0.5, 3),
    ("65-nodes", 129, 65, "all", 0.3, 4),
    ("one-chosen", 300, 40, "one", 0.5, 5),
    ("repeated", 300, 40, "repeat", 0.5, 6),
    ("last-sample", 1001, 130, "first-and-last", 0.5, 7),
    ("all-active", 100, 70, "all", 1.0, 8),
    ("wide", 640, 1000, "spread", 0.2, 9),
]


def chosen_of(kind: str, samples: int, rng: np.random.Generator) -> np.ndarray:
    return {
        "all": np.arange(samples),
        "spread": rng.choice(samples, min(50, samples), replace=False),
        "one": np.array([samples // 2]),
        "repeat": np.array([3, 3, 7, 3]),
        "first-and-last": np.array([0, samples - 1, 64, 63]),
    }[kind]


@pytest.mark.parametrize("backend", backend_params("sample_agreement"))
@pytest.mark.parametrize("samples, nodes, kind, density, seed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_exact_against_the_activations(backend, samples, nodes, kind, density, seed):
    rng = np.random.default_rng(seed)
    a = rng.random((samples, nodes)) < density
    chosen = chosen_of(kind, samples, rng)
    packed = with_padding_set(K.pack_masks(torch.from_numpy(a)), samples).to(device_of(backend))
    got = K.sample_agreement(packed, samples, torch.from_numpy(chosen).to(device_of(backend)), backend=backend)
    codes = a[chosen]
    want = (codes[:, None, :] != codes[None, :, :]).sum(axis=2)
    assert got.dtype == torch.int64 and tuple(got.shape) == (len(chosen), len(chosen))
    np.testing.assert_array_equal(got.cpu().numpy(), want)


@pytest.mark.parametrize("call, error, message", [
    (lambda p: K.sample_agreement(p, 100, np.array([0, 100])), ValueError,
     r"^chosen\[1\] = 100 is outside \[0, samples=100\)$"),
    (lambda p: K.sample_agreement(p, 100, np.array([-1])), ValueError, r"^chosen\[0\] = -1 is outside"),
    (lambda p: K.sample_agreement(p, 100, np.array([[1]])), ValueError, r"^chosen must be 1-D \[m\]"),
    (lambda p: K.sample_agreement(p, 100, np.array([1.0])), TypeError, r"^chosen has dtype float64"),
    (lambda p: K.sample_agreement(p, 200, np.array([1])), ValueError, r"^packed has 16 bytes per node but 200"),
    (lambda p: K.sample_agreement(p, 100, None), TypeError, r"^chosen must be"),
], ids=["past-the-end", "negative", "2-d", "float", "width", "none"])
def test_bad_inputs_are_named(call, error, message):
    packed = K.pack_masks(np.zeros((100, 4), np.float32))
    with pytest.raises(error, match=message):
        call(packed)


# ----------------------------------------------------------------- the GPU backends against the reference
@pytest.mark.parametrize("backend", gpu_params("sample_agreement"))
@pytest.mark.parametrize("samples, nodes, kind, density, seed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_gpu_matches_the_reference(backend, samples, nodes, kind, density, seed):
    """The CPU rows' tables in the GPU caller's own arrays (masks and chosen indices): the reference's integers, in
    the caller's kind of array on its device, named and automatic."""
    rng = np.random.default_rng(seed)
    a = rng.random((samples, nodes)) < density
    chosen = torch.from_numpy(chosen_of(kind, samples, rng))
    packed = with_padding_set(K.pack_masks(torch.from_numpy(a)), samples)
    gpu_matches_reference(K.sample_agreement, backend, packed, samples, chosen)


@pytest.mark.parametrize("backend", gpu_params("sample_agreement"))
def test_gpu_many_chosen_over_a_wide_layer(backend):
    """Several 64-row tiles of chosen samples (int32 indices, some repeated) over a layer of 2,000 nodes."""
    rng = np.random.default_rng(18)
    samples, nodes = 5000, 2000
    a = rng.random((samples, nodes)) < 0.3
    chosen = torch.from_numpy(np.r_[rng.choice(samples, 200, replace=False), [7, 7, samples - 1]].astype(np.int32))
    packed = with_padding_set(K.pack_masks(torch.from_numpy(a)), samples)
    got = K.sample_agreement(to_backend(packed, backend), samples, to_backend(chosen, backend), backend=backend)
    codes = a[chosen.numpy()].astype(np.int64)
    want = codes.sum(1)[:, None] + codes.sum(1)[None, :] - 2 * codes @ codes.T
    np.testing.assert_array_equal(host(got), want)


@needs_nvcc
def test_device_code_compiles_as_cupy_compiles_it(tmp_path):
    device_code_compiles("sample_agreement.cuh", ["nnp_gather_codes", "nnp::popcount_gram_kernel<true>"], tmp_path)
