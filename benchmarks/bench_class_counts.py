"""class_counts on every CPU backend next to the naive NumPy and PyTorch ways, on the
issue's cases; each result is checked against the reference. The "-out-int32" rows add
every batch in place into one int32 table (``out=``) instead of summing fresh tables. GPU figures:
benchmarks/gpu_report.py (CUDA events), exercised by bench_gpu.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nnphases.kernels as K
from bench_common import CASE_IDS, CASES, Case, read_bandwidth, record, run
from nnphases.kernels import refusal


def numpy_boolmask(acts: torch.Tensor, labels: torch.Tensor, c: int) -> np.ndarray:
    x, lab = acts.numpy(), labels.numpy()
    return np.stack([(x[lab == k] > 0).sum(axis=0) for k in range(c)]).astype(np.int64)


def torch_onehot(acts: torch.Tensor, labels: torch.Tensor, c: int) -> torch.Tensor:
    # float32 is exact below 2**24 samples per class, which every case stays under
    return (torch.nn.functional.one_hot(labels, c).T.to(torch.float32) @ (acts > 0).to(torch.float32)).to(torch.int64)


def torch_index_add(acts: torch.Tensor, labels: torch.Tensor, c: int) -> torch.Tensor:
    out = torch.zeros((c, acts.shape[1]), dtype=torch.int64)
    return out.index_add_(0, labels, (acts > 0).to(torch.int64))


# 100 classes over a layer of 131,072 nodes: a [classes, nodes] table of 26 MB (int16 counters), past the
# direct strategy's size, so the counts take the sorted sweep; the int64 result alone is 105 MB.
WIDE = [Case("wide-131k-c100", 2048, 131072, 100, "float32")]

IMPLS = {
    "cpp": lambda a, lab, c: K.class_counts(a, lab, c, backend="cpp"),
    "cpp-1thread": lambda a, lab, c: K.class_counts(a, lab, c, backend="cpp", threads=1),
    "cpp-nocheck": lambda a, lab, c: K.class_counts(a, lab, c, backend="cpp", check_finite=False),
    "cpp-out-int32": lambda a, lab, c, out: K.class_counts(a, lab, c, backend="cpp", out=out),
    "numba": lambda a, lab, c: K.class_counts(a, lab, c, backend="numba"),
    "numba-1thread": lambda a, lab, c: K.class_counts(a, lab, c, backend="numba", threads=1),
    "numba-out-int32": lambda a, lab, c, out: K.class_counts(a, lab, c, backend="numba", out=out),
    "numpy-boolmask": numpy_boolmask,
    "torch-onehot": torch_onehot,
    "torch-index_add": torch_index_add,
}


def impl_params() -> list:
    out = []
    for name in IMPLS:
        backend = name.split("-")[0]
        why = refusal(backend, "class_counts", "cpu") if backend in ("cpp", "numba") else None
        out.append(pytest.param(name, id=name, marks=[pytest.mark.skip(reason=why)] if why else []))
    return out


@pytest.mark.parametrize("impl", impl_params())
@pytest.mark.parametrize("case", CASES + WIDE, ids=CASE_IDS + [c.name for c in WIDE])
def test_class_counts(benchmark, inputs, case, impl):
    c, acts, labels = inputs(case)
    fn = IMPLS[impl]
    if (c.batch or case in WIDE) and impl.startswith(("numpy", "torch")) and not benchmark.disabled:
        pytest.skip("baselines are measured on the unbatched cases of 4096 nodes and fewer")
    want = K.class_counts(acts, labels, c.classes, backend="reference")
    step = c.batch or c.samples

    def batched():
        if "-out-" in impl:  # the batches accumulate in place into the caller's int32 table
            total = torch.zeros((c.classes, c.nodes), dtype=torch.int32)
            for s in range(0, c.samples, step):
                fn(acts[s:s + step], labels[s:s + step], c.classes, total)
            return total.numpy()
        total = np.zeros((c.classes, c.nodes), dtype=np.int64)
        for s in range(0, c.samples, step):
            total += np.asarray(fn(acts[s:s + step], labels[s:s + step], c.classes))
        return total

    bw = read_bandwidth(acts, threads=1 if "1thread" in impl else None)
    got = run(benchmark, batched)
    np.testing.assert_array_equal(got, want.numpy())
    record(benchmark, c, "class_counts", impl, acts, bw)
