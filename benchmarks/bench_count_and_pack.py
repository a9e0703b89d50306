"""count_and_pack (counts and masks from one read of the activations) on every CPU backend next to the two
separate calls it replaces, class_counts then pack_masks, in the same run; every result is checked against
the reference before it is timed. "of read" is the input's bytes (read once by the fused kernel, twice by
the pair) per second over the streaming read of the same buffer."""

from __future__ import annotations

import numpy as np
import pytest

import nnphases.kernels as K
from bench_common import CASE_IDS, CASES, read_bandwidth, record, run
from nnphases.kernels import refusal

IMPLS = {
    "cpp": lambda a, lab, c: K.count_and_pack(a, lab, c, backend="cpp"),
    "cpp-separate": lambda a, lab, c: (K.class_counts(a, lab, c, backend="cpp"), K.pack_masks(a, backend="cpp")),
    "numba": lambda a, lab, c: K.count_and_pack(a, lab, c, backend="numba"),
    "numba-separate": lambda a, lab, c: (K.class_counts(a, lab, c, backend="numba"),
                                         K.pack_masks(a, backend="numba")),
}


def impl_params() -> list:
    out = []
    for name in IMPLS:
        backend = name.split("-")[0]
        why = refusal(backend, "count_and_pack", "cpu")
        out.append(pytest.param(name, id=name, marks=[pytest.mark.skip(reason=why)] if why else []))
    return out


@pytest.mark.parametrize("impl", impl_params())
@pytest.mark.parametrize("case", CASES[:4], ids=CASE_IDS[:4])
def test_count_and_pack(benchmark, inputs, case, impl):
    c, acts, labels = inputs(case)
    want_counts = K.class_counts(acts, labels, c.classes, backend="reference").numpy()
    want_packed = K.pack_masks(acts, backend="reference").numpy()
    fn = IMPLS[impl]
    counts, packed = fn(acts, labels, c.classes)  # checked before it is timed
    np.testing.assert_array_equal(counts.numpy(), want_counts)
    np.testing.assert_array_equal(packed.numpy(), want_packed)
    bw = read_bandwidth(acts)
    run(benchmark, lambda: fn(acts, labels, c.classes))
    record(benchmark, c, "count_and_pack", impl, acts, bw)
