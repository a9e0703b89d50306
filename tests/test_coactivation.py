"""coactivation: |S_i ∩ S_j| for every pair of nodes of a layer, on every backend, exactly equal to the 0/1
matrix product of the boolean activations the masks were packed from, whatever the padding bits hold; node counts
around the kernels' 4-row and 64-row tiles and sample counts around the words and word chunks (256 words on the
CPU, 32 on the GPU); the GPU backends, on their callers' own arrays, exactly equal to the reference on the same
tables and to the cpp backend on a 4,096-node layer over 100,000 samples, in no more device memory than the
result; and, without a GPU, that the device code compiles as CuPy compiles it."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from kernel_tables import (
    CSRC,
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
from nnphases.kernels._dispatch import refusal

# (id, samples, nodes, density, seed)
CASES = [
    ("no-samples", 0, 5, 0.5, 0),
    ("no-nodes", 70, 0, 0.5, 1),
    ("one-node", 130, 1, 0.5, 2),
    ("one-sample", 1, 9, 1.0, 3),
    ("63x3", 63, 3, 0.5, 4),
    ("64x4", 64, 4, 0.5, 5),
    ("65x5", 65, 5, 0.5, 6),
    ("1001x63", 1001, 63, 0.3, 7),
    ("1001x64", 1001, 64, 0.3, 8),
    ("1001x65", 1001, 65, 0.3, 9),
    ("chunk-edge-16385x130", 16385, 130, 0.5, 10),  # 257 words: one past a 256-word chunk
    ("all-active-300x129", 300, 129, 1.0, 11),
    ("none-active-300x129", 300, 129, 0.0, 12),
    ("sparse-40000x200", 40000, 200, 0.02, 13),
]


def product(a: np.ndarray) -> np.ndarray:
    """a.T @ a of the booleans, in float64 through BLAS (exact: every sum is an integer below 2**53)."""
    x = a.astype(np.float64)
    return np.rint(x.T @ x).astype(np.int64)


@pytest.mark.parametrize("backend", backend_params("coactivation"))
@pytest.mark.parametrize("samples, nodes, density, seed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_exact_against_the_activations(backend, samples, nodes, density, seed):
    rng = np.random.default_rng(seed)
    a = rng.random((samples, nodes)) < density
    packed = with_padding_set(K.pack_masks(torch.from_numpy(a)), samples).to(device_of(backend))
    got = K.coactivation(packed, samples, backend=backend)
    assert got.dtype == torch.int64 and got.device.type == device_of(backend) and tuple(got.shape) == (nodes, nodes)
    np.testing.assert_array_equal(got.cpu().numpy(), product(a))


@pytest.mark.parametrize("backend", backend_params("coactivation"))
def test_numpy_in_numpy_out_and_threads(backend):
    if device_of(backend) != "cpu":
        pytest.skip("NumPy inputs: CPU backends")
    rng = np.random.default_rng(14)
    a = rng.random((2000, 150)) < 0.5
    packed = K.pack_masks(a)
    for threads in (1, 2, 3):
        got = K.coactivation(packed, 2000, backend=backend, threads=threads)
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, product(a))


# ----------------------------------------------------------------- the GPU backends against the reference
@pytest.mark.parametrize("backend", gpu_params("coactivation"))
@pytest.mark.parametrize("samples, nodes, density, seed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_gpu_matches_the_reference(backend, samples, nodes, density, seed):
    """The CPU rows' tables in the GPU caller's own arrays: the reference's integers, in the caller's kind of array
    on its device, named and automatic."""
    rng = np.random.default_rng(seed)
    a = rng.random((samples, nodes)) < density
    packed = with_padding_set(K.pack_masks(torch.from_numpy(a)), samples)
    gpu_matches_reference(K.coactivation, backend, packed, samples)


@pytest.mark.parametrize("backend", gpu_params("coactivation"))
def test_gpu_a_4096_node_layer_over_100k_samples(backend):
    """The size the tiles are for: exact against the cpp backend (the reference would unpack 400 M bits), and on
    cuda the call's device memory is the result's, no more (the tiles live in shared memory)."""
    if refusal("cpp", "coactivation", "cpu"):
        pytest.skip(f"cpp: {refusal('cpp', 'coactivation', 'cpu')}")
    samples, nodes = 100_000, 4096
    g = torch.Generator(device="cuda").manual_seed(17)
    packed = torch.randint(0, 256, (nodes, -(-samples // 64) * 8), dtype=torch.uint8, device="cuda", generator=g)
    x = to_backend(packed, backend)  # every padding bit random: 0 or 1
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    got = K.coactivation(x, samples, backend=backend)
    if backend == "cuda":
        assert torch.cuda.max_memory_allocated() - base <= nodes * nodes * 8 + (2 << 20)
    want = K.coactivation(packed.cpu().numpy(), samples, backend="cpp")
    np.testing.assert_array_equal(host(got), want)


@needs_nvcc
def test_device_code_compiles_as_cupy_compiles_it(tmp_path):
    device_code_compiles("coactivation.cuh", ["nnp::popcount_gram_kernel<false>"], tmp_path)


def test_tile_geometry_agrees_across_layers():
    cuh = (CSRC / "cuda" / "coactivation.cuh").read_text()
    tile, threads = (int(re.search(rf"constexpr int {n} = (\d+);", cuh).group(1))
                     for n in ("kGramTile", "kGramThreads"))
    cupy_src = (CSRC.parent / "nnphases" / "kernels" / "impl" / "cupy.py").read_text()
    assert f"_GRAM_TILE, _GRAM_THREADS = {tile}, {threads}" in cupy_src
