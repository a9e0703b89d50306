"""coactivation: |S_i ∩ S_j| for every pair of nodes of a layer, on every backend, exactly equal to the 0/1
matrix product of the boolean activations the masks were packed from, whatever the padding bits hold; node counts
around the kernels' 4-row and 64-row tiles and sample counts around the words and word chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nnphases.kernels as K
from kernel_tables import backend_params, device_of
from test_mask_overlap import with_padding_set

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
