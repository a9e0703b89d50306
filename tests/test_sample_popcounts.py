"""sample_popcounts: how many nodes of a layer each sample activates, on every backend, exactly equal to the
count taken from the boolean activations the masks were packed from, whatever the padding bits hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nnphases.kernels as K
from kernel_tables import backend_params, device_of
from test_mask_overlap import with_padding_set

# (id, samples, nodes, density, seed): node counts at and around the powers of two where the counters gain a bit
CASES = [
    ("no-samples", 0, 5, 0.5, 0),
    ("no-nodes", 70, 0, 0.5, 1),
    ("one-node", 130, 1, 0.5, 2),
    ("one-sample", 1, 9, 0.5, 3),
    ("63x7", 63, 7, 1.0, 4),
    ("64x8", 64, 8, 1.0, 5),
    ("65x255", 65, 255, 0.9, 6),
    ("1001x256-all", 1001, 256, 1.0, 7),
    ("515x257", 515, 257, 0.5, 8),
    ("600x1000-none", 600, 1000, 0.0, 9),
    ("4097x4097", 4097, 4097, 0.3, 10),
    ("700x1025-dense", 700, 1025, 0.99, 11),
]


@pytest.mark.parametrize("backend", backend_params("sample_popcounts"))
@pytest.mark.parametrize("samples, nodes, density, seed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_exact_against_the_activations(backend, samples, nodes, density, seed):
    rng = np.random.default_rng(seed)
    a = rng.random((samples, nodes)) < density
    packed = with_padding_set(K.pack_masks(torch.from_numpy(a)), samples).to(device_of(backend))
    got = K.sample_popcounts(packed, samples, backend=backend)
    assert got.dtype == torch.int64 and got.device.type == device_of(backend) and tuple(got.shape) == (samples,)
    np.testing.assert_array_equal(got.cpu().numpy(), a.sum(axis=1))


@pytest.mark.parametrize("backend", backend_params("sample_popcounts"))
def test_numpy_in_numpy_out_and_threads(backend):
    if device_of(backend) != "cpu":
        pytest.skip("NumPy inputs: CPU backends")
    rng = np.random.default_rng(12)
    a = rng.random((3000, 77)) < 0.5
    packed = K.pack_masks(a)
    for threads in (1, 2, 3):
        got = K.sample_popcounts(packed, 3000, backend=backend, threads=threads)
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, a.sum(axis=1))


@pytest.mark.parametrize("strategy", ["bitsliced", "bytes"])
@pytest.mark.parametrize("samples, nodes, density, seed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_both_cpp_strategies(strategy, samples, nodes, density, seed):
    """The cpp backend's two ways, each forced: bit-sliced counters (every CPU) and byte counters (AVX-512BW; auto
    takes them where the CPU has it), so that the one this machine does not choose is tested too."""
    cpp = pytest.importorskip("nnphases.kernels.impl.cpp", reason="the C++ extension is not built")
    rng = np.random.default_rng(seed)
    a = rng.random((samples, nodes)) < density
    packed = with_padding_set(K.pack_masks(torch.from_numpy(a)), samples).numpy()
    try:
        got = cpp.sample_popcounts(np.ascontiguousarray(packed), samples, strategy=strategy)
    except RuntimeError as e:
        assert strategy == "bytes" and "AVX-512BW" in str(e)
        pytest.skip(str(e))
    np.testing.assert_array_equal(got, a.sum(axis=1))
