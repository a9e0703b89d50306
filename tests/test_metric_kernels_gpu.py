"""The GPU metric kernels (``node_metrics``, ``layer_metrics`` on the cuda and cupy backends)
against nnphases.kernels.metrics' NumPy implementation, the oracle, on the hand and random tables of
tests/test_metric_kernels.py; and, without a GPU, that their CUDA sources compile.

The bound, stated and tested: ``class_fraction``, ``fraction``, ``dead`` and ``always_active``
are identical (the same IEEE divisions and sums in the same class order; the device's ``/`` on
doubles is correctly rounded and no product is contracted into an fma). The entropies, ``p``
and ``u`` differ by at most ``ULPS`` machine epsilons times ``max(1, log |C|)`` in absolute
value, the CPU backends' bound: the device's ``log()`` (at most 1 ulp from the exact value, as
is NumPy's) is the only difference, each class term's relative error of a few ulps adds up to
a few ulps of ``H(Zhat|Y) <= log 2`` and of ``H(Zhat)``, and ``H(Y|Zhat)`` combines those with
``H(Y) <= log |C|`` (computed on the host as NumPy does), dividing by ``log |C|`` in ``u``. Layer
means differ by that bound plus 4 epsilons (a mean of values each within the bound is within
it; the compensated sums in a fixed tree against NumPy's pairwise sums add a few ulps of a
mean <= 1). NaN falls on exactly the same nodes; results are identical from run to run and
between the two GPU backends (the same device code). Counts outside ``[0, class_sizes[c]]``,
found on the device, raise the CPU path's ValueError."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

import nnphases.kernels as K
import nnphases.kernels._metric_kernels as MK
from kernel_tables import backend_params, device_of, host
from nnphases.kernels.metrics import NodeMetrics, layer_metrics_np, node_metrics_np
from test_metric_kernels import BAD, EXACT, SHAPE_IDS, SHAPES, hand_table, random_table, seed_of

ULPS = 8
EPS = np.finfo(np.float64).eps
ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
GPU = [p for p in backend_params("node_metrics") if device_of(p.values[0]) == "cuda"]


def on_device(x: np.ndarray, backend: str) -> object:
    """The table as a caller of that backend holds it: a torch CUDA tensor (cuda) or a CuPy array (cupy)."""
    if backend == "cupy":
        import cupy

        return cupy.asarray(x)
    return torch.from_numpy(np.ascontiguousarray(x)).cuda()


def scale_of(sizes: np.ndarray) -> float:
    return max(1.0, math.log(max(int(np.count_nonzero(sizes)), 1)))


def assert_agrees(got: NodeMetrics, want: NodeMetrics, sizes: np.ndarray, lib: type) -> None:
    scale = scale_of(sizes)
    for f in fields(NodeMetrics):
        g, w = getattr(got, f.name), getattr(want, f.name)
        assert isinstance(g, lib), f"{f.name} is a {type(g).__name__}, not on the counts' device"
        g = host(g)
        assert g.dtype == w.dtype and g.shape == w.shape, f.name
        if f.name in EXACT:
            np.testing.assert_array_equal(g, w, err_msg=f.name)
            continue
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{f.name}: NaN placement")
        ok = ~np.isnan(w)
        err = np.abs(g[ok] - w[ok]).max(initial=0.0)
        assert err <= ULPS * EPS * scale, f"{f.name}: {err / EPS:.1f} eps > {ULPS} eps * {scale:.2f}"


def assert_layer_agrees(got, want, sizes: np.ndarray) -> None:
    for name in ("nodes", "dead", "always_active"):
        assert getattr(got, name) == getattr(want, name) and isinstance(getattr(got, name), int), name
    bound = (ULPS * scale_of(sizes) + 4) * EPS
    for name in ("fraction", "predictability", "informativeness"):
        g, w = getattr(got, name), getattr(want, name)
        assert isinstance(g, float), name
        assert math.isnan(g) == math.isnan(w), name
        if not math.isnan(w):
            assert abs(g - w) <= bound, f"{name}: {abs(g - w) / EPS:.1f} eps"


def check(backend: str, counts: np.ndarray, sizes: np.ndarray) -> NodeMetrics:
    x = on_device(counts, backend)
    got = K.node_metrics(x, sizes, backend=backend)
    assert_agrees(got, node_metrics_np(counts, sizes), np.asarray(sizes), type(x))
    assert_layer_agrees(K.layer_metrics(x, sizes, backend=backend), layer_metrics_np(counts, sizes),
                        np.asarray(sizes))
    return got


# ----------------------------------------------------------------- the CPU cases, on the GPU
@pytest.mark.parametrize("backend", GPU)
@pytest.mark.parametrize("c", [2, 4, 10, 100])
def test_hand_cases(backend, c):
    counts, sizes = hand_table(c)
    m = check(backend, counts, sizes)
    p, u = host(m.predictability), host(m.informativeness)
    assert p[0] == pytest.approx(1.0, abs=1e-12) and u[0] == pytest.approx(math.log(2) / math.log(c), abs=1e-12)
    assert p[1] == pytest.approx(0.0, abs=1e-12) and u[1] == pytest.approx(0.0, abs=1e-12)
    assert host(m.dead).tolist()[2:4] == [True, False] and host(m.always_active).tolist()[2:4] == [False, True]
    layer = K.layer_metrics(on_device(counts, backend), sizes, backend=backend)
    assert layer.dead == 1 and layer.always_active == 1 and layer.nodes == counts.shape[1]


@pytest.mark.parametrize("backend", GPU)
@pytest.mark.parametrize("case", ["single-class", "empty-classes", "all-dead", "all-always", "no-nodes", "one-node"])
def test_special_tables(backend, case):
    sizes3 = np.array([3, 4, 5])
    counts, sizes = {
        "single-class": (np.array([[0, 3, 7, 1], [0, 0, 0, 0], [0, 0, 0, 0]]), np.array([7, 0, 0])),
        "empty-classes": (np.array([[2, 0, 5, 1], [0, 0, 0, 0], [3, 4, 4, 0], [0, 0, 0, 0]]), np.array([5, 0, 4, 0])),
        "all-dead": (np.zeros((3, 6), np.int64), sizes3),
        "all-always": (np.repeat(sizes3[:, None], 6, 1), sizes3),
        "no-nodes": (np.zeros((3, 0), np.int64), sizes3),
        "one-node": (np.array([[1], [2], [3]]), sizes3),
    }[case]
    check(backend, counts, sizes)


@pytest.mark.parametrize("backend", GPU)
@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "uint16", "uint32", "int16", "uint64"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_random_tables(backend, shape, dtype):
    counts, sizes = random_table(seed_of(shape, dtype), *shape)
    if np.iinfo(dtype).max < sizes.max():
        pytest.skip(f"{dtype} cannot hold counts up to {sizes.max()}")
    if backend == "cuda" and dtype in ("uint32", "uint64") and not hasattr(torch, dtype):
        pytest.skip(f"torch {torch.__version__} has no {dtype}")
    check(backend, counts.astype(dtype), sizes)


@pytest.mark.parametrize("backend", GPU)
def test_sizes_on_the_device_and_strided_counts(backend):
    counts, sizes = random_table(5, 10, 600, 300, 1)
    wide = on_device(np.repeat(counts, 2, 1), backend)[:, ::2]  # a strided view: copied once on the device
    m = K.node_metrics(wide, on_device(sizes, backend), backend=backend)
    assert_agrees(m, node_metrics_np(counts, sizes), sizes, type(wide))


@pytest.mark.parametrize("backend", GPU)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_runs_are_identical(backend, shape):
    """No float atomics: the layer sums are reduced in a fixed order."""
    counts, sizes = random_table(seed_of(shape, "repeat"), *shape)
    x = on_device(counts, backend)
    first = [K.node_metrics(x, sizes, backend=backend) for _ in range(2)]
    for f in fields(NodeMetrics):
        np.testing.assert_array_equal(host(getattr(first[0], f.name)), host(getattr(first[1], f.name)))
    assert len({repr(K.layer_metrics(x, sizes, backend=backend)) for _ in range(3)}) == 1  # repr: NaN == NaN


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gpu_backends_agree_exactly(shape):
    """cuda and cupy run the same device code (csrc/cuda/node_metrics.cuh): identical results."""
    names = [p.values[0] for p in GPU if not p.marks or all(m.name != "skip" for m in p.marks)]
    if len(names) < 2:
        pytest.skip("needs both the cuda and cupy backends")
    counts, sizes = random_table(seed_of(shape, "gpu-agree"), *shape)
    x = on_device(counts, "cuda")
    assert len({repr(K.layer_metrics(x, sizes, backend=b)) for b in names}) == 1
    nodes = [K.node_metrics(x, sizes, backend=b) for b in names]
    for f in fields(NodeMetrics):
        np.testing.assert_array_equal(host(getattr(nodes[0], f.name)), host(getattr(nodes[1], f.name)))


@pytest.mark.parametrize("backend", GPU)
def test_many_tables_in_one_call(backend):
    """A list of GPU tables: one result per table, equal to separate calls; a bad table named by its index."""
    tables, sizes = [], None
    for n, dtype in ((1024, np.int32), (513, np.uint16), (1, np.int64)):
        counts, sizes = random_table(seed_of("gpu-many"), 10, n, 40, 1)
        tables.append(on_device(counts.astype(dtype), backend))
    got = K.layer_metrics(tables, sizes, backend=backend)
    assert repr(got) == repr([K.layer_metrics(t, sizes, backend=backend) for t in tables])
    bad = on_device(np.where(np.arange(1024) == 3, 10**6, host(tables[0])), backend)
    with pytest.raises(ValueError, match=r"^counts\[1\]: counts\[\d+, 3\] = 1000000 exceeds"):
        K.layer_metrics([tables[0], bad], sizes, backend=backend)


@pytest.mark.parametrize("backend", GPU)
def test_a_large_layer(backend):
    """Many blocks of partial sums (2,048 here), so the combining kernel's runs and tree are exercised."""
    rng = np.random.default_rng(11)
    sizes = np.full(10, 1000)
    counts = rng.binomial(sizes[:, None], rng.random(524_288)[None, :]).astype(np.int32)
    counts[:, :100] = 0
    counts[:, 100:200] = sizes[:, None]
    check(backend, counts, sizes)


@pytest.mark.parametrize("backend", GPU)
def test_reference_on_gpu_counts(backend):
    """The host-only reference backend copies GPU counts to the host; its node fields come back to the device."""
    counts, sizes = random_table(3, 4, 50, 20, 1)
    x = on_device(counts, backend)
    m = K.node_metrics(x, sizes, backend="reference")
    assert_agrees(m, node_metrics_np(counts, sizes), sizes, type(x))
    assert repr(K.layer_metrics(x, sizes, backend="reference")) == repr(layer_metrics_np(counts, sizes))


# ----------------------------------------------------------------- bad counts, found on the device
BAD_COUNTS = [
    ("negative", np.array([[1, -1], [0, 2]]), np.array([3, 3]), r"counts\[0, 1\] = -1 is negative"),
    ("over-size", np.array([[1, 4], [0, 2]]), np.array([3, 3]), r"counts\[0, 1\] = 4 exceeds class_sizes\[0\] = 3"),
    ("absent-class", np.array([[1, 2], [0, 1]]), np.array([3, 0]), r"counts\[1, 1\] = 1 exceeds class_sizes\[1\] = 0"),
    ("late-block", np.pad(np.array([[0], [9]]), ((0, 0), (5000, 0))), np.array([3, 3]),
     r"counts\[1, 5000\] = 9 exceeds class_sizes\[1\] = 3"),
]


@pytest.mark.parametrize("backend", GPU)
@pytest.mark.parametrize("kernel", ["node_metrics", "layer_metrics"])
@pytest.mark.parametrize("dtype", ["int64", "int32"])
@pytest.mark.parametrize("counts, sizes, rx", [pytest.param(*row[1:], id=row[0]) for row in BAD_COUNTS])
def test_bad_counts_raise(backend, kernel, dtype, counts, sizes, rx):
    with pytest.raises(ValueError, match=rx):
        getattr(K, kernel)(on_device(counts.astype(dtype), backend), sizes, backend=backend)


@pytest.mark.parametrize("backend", GPU)
def test_uint64_beyond_int64_raises(backend):
    if backend == "cuda" and not hasattr(torch, "uint64"):
        pytest.skip(f"torch {torch.__version__} has no uint64")
    counts = np.array([[1, 2**63 + 5], [0, 1]], np.uint64)
    with pytest.raises(ValueError, match=r"counts\[0, 1\] = 9223372036854775813 does not fit in int64"):
        K.layer_metrics(on_device(counts, backend), np.array([3, 3]), backend=backend)


@pytest.mark.parametrize("backend", GPU)
@pytest.mark.parametrize("kernel", ["node_metrics", "layer_metrics"])
@pytest.mark.parametrize("make, exc, rx", [pytest.param(*row[1:], id=row[0]) for row in BAD
                                           if row[0] not in ("negative-count", "count-over-size")])
def test_bad_tables_raise_before_the_kernel(backend, kernel, make, exc, rx, monkeypatch):
    ran = []
    real = MK.select

    def guarded(name, device, bk):
        b, fn = real(name, device, bk)
        return b, lambda *a, **k: ran.append(b.name)

    monkeypatch.setattr(MK, "select", guarded)
    counts, sizes = make()
    with pytest.raises(exc, match=rx):
        getattr(K, kernel)(on_device(counts, backend), sizes, backend=backend)
    assert ran == []


# ----------------------------------------------------------------- the sources compile (CPU, needs nvcc)
NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")


def nvcc(args: list[str], tmp_path: Path) -> None:
    """nvcc with setup.py's flags for one architecture (sm_90), so the check stays within seconds."""
    cmd = [NVCC, *args, "-O3", "-std=c++17", "-DNNPHASES_WITH_CUDA", "-Xcompiler", "-fPIC", f"-I{CSRC}",
           "-gencode=arch=compute_90,code=sm_90"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


@needs_nvcc
def test_launcher_compiles(tmp_path):
    nvcc(["-c", str(CSRC / "cuda" / "node_metrics.cu"), "-o", str(tmp_path / "node_metrics.o")], tmp_path)


@needs_nvcc
def test_device_code_compiles_as_cupy_compiles_it(tmp_path):
    """The .cuh alone, as CuPy's NVRTC gets it (included by a file with nothing else, no standard headers),
    with every kernel variant nnphases/kernels/impl/cupy.py names instantiated."""
    text = (CSRC / "cuda" / "node_metrics.cuh").read_text()
    assert not re.search(r"#\s*include\s*<", text), "NVRTC has no standard headers"
    variants = [f"nnp::node_metrics_kernel<{t}, {s}, {p}>" for t in MK.DEVICE_COUNT_TYPES.values()
                for s in ("true", "false") for p in ("true", "false")]
    src = tmp_path / "rtc.cu"
    src.write_text('#include "cuda/node_metrics.cuh"\n\nvoid* variants[] = {\n'
                   + "".join(f"    (void*)&{v},\n" for v in variants)
                   + "    (void*)&nnp_node_metrics_combine,\n};\n")
    nvcc(["-c", str(src), "-o", str(tmp_path / "rtc.o")], tmp_path)


def test_constants_agree_across_layers():
    """The count codes, block sizes and partials width written in C++ and mirrored in Python."""
    header = (CSRC / "cuda" / "node_metrics.h").read_text()
    codes = dict(re.findall(r"kCount(\w+) = (\d+)", header))
    assert [codes[n] for n in ("Int32", "Int64", "UInt8", "UInt16", "UInt32")] == ["0", "1", "2", "3", "4"]
    assert list(MK.DEVICE_COUNT_TYPES) == ["int32", "int64", "uint8", "uint16", "uint32"]
    cuh = (CSRC / "cuda" / "node_metrics.cuh").read_text()
    block, partial, combine = (int(re.search(rf"constexpr int {n} = (\d+);", cuh).group(1))
                               for n in ("kMetricsBlock", "kMetricsPartial", "kMetricsCombine"))
    cupy_src = (ROOT / "nnphases" / "kernels" / "impl" / "cupy.py").read_text()
    assert f"_METRICS_BLOCK, _METRICS_PARTIAL, _METRICS_COMBINE = {block}, {partial}, {combine}" in cupy_src


def test_device_plan_matches_numpy():
    """The host's part of the GPU path: H(Y), log |C| and NumPy's pairing rule from the class sizes alone."""
    sizes = np.array([5, 0, 4, 9])
    plan = MK.device_plan(sizes, nodes=3)
    assert (plan.total, plan.present) == (18, 3)
    assert plan.log_k == math.log(3) and not plan.pair_terms  # 5 + 6 + 10 table entries > 3 * 3 counts
    assert not MK.device_plan(sizes, nodes=6).pair_terms and MK.device_plan(sizes, nodes=7).pair_terms
    assert math.isnan(MK.device_plan(np.array([7, 0]), nodes=4).log_k)
