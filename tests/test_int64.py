"""Counts are int64 end to end: a total accumulated past 2**31 over batches stays exact
and its metrics see an always-active node; the CPU backends' narrow (16-bit) counters
are flushed before they wrap, on both counting strategies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nnphases.kernels as K
from kernel_tables import backend_params

CPU = [p for p in backend_params("class_counts") if p.values[0] in ("cpp", "numba")]


def test_total_past_int32():
    rows, calls = 2**27, 17
    why = dict((name, reason) for name, _, reason in K.backends())["cpp"]
    if why is not None:
        pytest.skip(f"cpp: {why}")
    acts = np.ones((rows, 1), dtype=np.bool_)  # 128 MiB, every sample active
    labels = np.zeros(rows, np.int32)
    total = np.zeros((1, 1), np.int64)
    for _ in range(calls):
        counts = K.class_counts(acts, labels, 1, backend="cpp", threads=2)
        assert counts.dtype == np.int64 and counts.tolist() == [[rows]]
        total += counts
    assert total.dtype == np.int64
    assert int(total[0, 0]) == calls * rows == 2_281_701_376 > 2**31
    m = K.node_metrics(total, np.array([calls * rows], np.int64))
    assert m.fraction[0] == 1.0 and m.class_fraction[0, 0] == 1.0
    assert m.always_active.tolist() == [True] and m.dead.tolist() == [False]
    assert np.isnan(m.predictability[0]) and np.isnan(m.informativeness[0])


ROWS = 200_000  # more than 3 * 65535: every 16-bit counter must be flushed several times


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("strategy", ["direct", "wide", "sorted"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("classes", [1, 2], ids=["one-class", "two-classes"])
@pytest.mark.parametrize("dtype", ["bool", "float16", "bfloat16"])
def test_narrow_counters_flush(dtype, classes, threads, strategy, backend):
    acts = torch.ones((ROWS, 3), dtype=getattr(torch, dtype))
    labels = torch.arange(ROWS, dtype=torch.int32) % classes
    got = K.class_counts(acts, labels, classes, backend=backend, strategy=strategy, threads=threads)
    assert got.dtype == torch.int64
    assert got.tolist() == [[ROWS // classes] * 3] * classes


@pytest.mark.parametrize("backend", CPU)
@pytest.mark.parametrize("strategy", ["direct", "wide", "sorted"])
@pytest.mark.parametrize("dtype", ["bool", "float16"])
def test_narrow_counters_flush_mixed(dtype, strategy, backend):
    """Partly active columns (densities 0, 0.3, 0.9, 0.999, 1) in three classes, one thread,
    so each class passes 65535 rows in every column: equal to the reference."""
    rng = np.random.default_rng(6)
    acts = torch.from_numpy(rng.random((ROWS, 5)) < np.array([0.0, 0.3, 0.9, 0.999, 1.0]))
    if dtype != "bool":
        acts = acts.to(torch.float16) - 0.5 * (~acts).to(torch.float16)
    labels = torch.from_numpy(rng.integers(0, 3, ROWS)).to(torch.int64)
    want = K.class_counts(acts, labels, 3, backend="reference").numpy()
    got = K.class_counts(acts, labels, 3, backend=backend, strategy=strategy, threads=1)
    np.testing.assert_array_equal(got.numpy(), want)
    assert want[:, 4].sum() == ROWS and want[:, 0].sum() == 0


@pytest.mark.parametrize("backend", [p for p in backend_params("packed_class_counts")
                                     if p.values[0] in ("cpp", "numba", "reference")])
def test_packed_counts_past_16_bits(backend):
    acts = torch.ones((ROWS, 2), dtype=torch.bool)
    labels = torch.zeros(ROWS, dtype=torch.int32)
    packed = K.pack_masks(acts, backend="reference")
    got = K.packed_class_counts(packed, labels, 1, backend=backend)
    assert got.dtype == torch.int64 and got.tolist() == [[ROWS, ROWS]]
