"""pack_masks and packed_class_counts on every CPU backend next to np.packbits;
each result is checked against the reference."""

from __future__ import annotations

import numpy as np
import pytest

import nnphases.kernels as K
from bench_common import CASE_IDS, CASES, read_bandwidth, record, run
from nnphases.kernels import refusal

CPU = ["cpp", "numba"]


def numpy_packbits(acts):
    return np.packbits((acts.numpy() > 0), axis=0, bitorder="little").T


def params(kernel: str) -> list:
    out = []
    for name in CPU:
        why = refusal(name, kernel, "cpu")
        out.append(pytest.param(name, id=name, marks=[pytest.mark.skip(reason=why)] if why else []))
    return out


@pytest.mark.parametrize("impl", params("pack_masks") + [pytest.param("numpy-packbits", id="numpy-packbits")])
@pytest.mark.parametrize("case", CASES[:4], ids=CASE_IDS[:4])
def test_pack_masks(benchmark, inputs, case, impl):
    c, acts, _ = inputs(case)
    want = K.pack_masks(acts, backend="reference").numpy()
    bw = read_bandwidth(acts)
    if impl == "numpy-packbits":
        got = run(benchmark, lambda: numpy_packbits(acts), rounds=1)
        np.testing.assert_array_equal(got, want[:, :got.shape[1]])
    else:
        got = run(benchmark, lambda: K.pack_masks(acts, backend=impl))
        np.testing.assert_array_equal(got.numpy(), want)
    record(benchmark, c, "pack_masks", impl, acts, bw)


@pytest.mark.parametrize("impl", params("packed_class_counts"))
@pytest.mark.parametrize("case", CASES[:4], ids=CASE_IDS[:4])
def test_packed_class_counts(benchmark, inputs, case, impl):
    c, acts, labels = inputs(case)
    packed = K.pack_masks(acts, backend="cpp" if impl == "cpp" else "reference")
    want = K.class_counts(acts, labels, c.classes, backend="reference").numpy()
    bw = read_bandwidth(packed)
    got = run(benchmark, lambda: K.packed_class_counts(packed, labels, c.classes, backend=impl))
    np.testing.assert_array_equal(got.numpy(), want)
    record(benchmark, c, "packed_class_counts", impl, packed, bw)
