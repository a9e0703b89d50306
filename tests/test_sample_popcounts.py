"""sample_popcounts: how many nodes of a layer each sample activates, on every backend, exactly equal to the
count taken from the boolean activations the masks were packed from, whatever the padding bits hold; the GPU
backends, on their callers' own arrays, exactly equal to the reference on the same tables; and, without a GPU,
that the device code compiles as CuPy compiles it and that cupy.py's launch geometry mirrors the extension's."""

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


# ----------------------------------------------------------------- the GPU backends against the reference
@pytest.mark.parametrize("backend", gpu_params("sample_popcounts"))
@pytest.mark.parametrize("samples, nodes, density, seed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_gpu_matches_the_reference(backend, samples, nodes, density, seed):
    """The CPU rows' tables in the GPU caller's own arrays: the reference's integers, in the caller's kind of array
    on its device, named and automatic."""
    rng = np.random.default_rng(seed)
    a = rng.random((samples, nodes)) < density
    packed = with_padding_set(K.pack_masks(torch.from_numpy(a)), samples)
    gpu_matches_reference(K.sample_popcounts, backend, packed, samples)


@pytest.mark.parametrize("backend", gpu_params("sample_popcounts"))
def test_gpu_many_chunks_on_a_side_stream(backend):
    """Rows in many chunks (each adds its counts with atomics into a table the launch zeroes first), run on a
    stream that is not the default one: the zeroing, the kernel and the read-back stay in order."""
    rng = np.random.default_rng(16)
    samples, nodes = 3000, 20_000
    a = rng.random((samples, nodes), dtype=np.float32) < rng.random(nodes, dtype=np.float32)  # every rate
    packed = with_padding_set(K.pack_masks(torch.from_numpy(a)), samples)
    x = to_backend(packed, backend)
    torch.cuda.synchronize()
    if backend == "cupy":
        import cupy

        with cupy.cuda.Stream(non_blocking=True):
            got = host(K.sample_popcounts(x, samples, backend=backend))
    else:
        with torch.cuda.stream(torch.cuda.Stream()):
            got = host(K.sample_popcounts(x, samples, backend=backend))
    np.testing.assert_array_equal(got, a.sum(axis=1))


@needs_nvcc
def test_device_code_compiles_as_cupy_compiles_it(tmp_path):
    device_code_compiles("sample_popcounts.cuh", ["nnp_sample_popcounts"], tmp_path)


def test_chunk_geometry_agrees_across_layers():
    """The rows a chunk's counters hold (kPopChunkMax), and the chunk rule of launch.h mirrored in cupy.py."""
    cuh = (CSRC / "cuda" / "sample_popcounts.cuh").read_text()
    assert re.search(r"constexpr int kPopPlanes = 8;", cuh)
    launch = (CSRC / "cuda" / "launch.h").read_text()
    rule = re.search(r"return r < (\d+) \? \d+ : \(r > (\d+) \? \d+ : r\);", launch)
    assert rule and (int(rule.group(1)), int(rule.group(2))) == (128, 255)  # 255 = 2**kPopPlanes - 1
    cupy_src = (CSRC.parent / "nnphases" / "kernels" / "impl" / "cupy.py").read_text()
    assert "return min(255, max(128, -(-nodes // chunks)))" in cupy_src
