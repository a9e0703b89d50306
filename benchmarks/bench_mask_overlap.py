"""mask_overlap and sample_popcounts on the CPU backends against the same run's streaming-read bandwidth: one
layer of 4,096 nodes over 1,000,000 samples at two checkpoints (2 x 512 MB packed), in all and per class. Every
result is checked against NumPy's popcount of the words (np.bitwise_count), computed here independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nnphases.kernels as K
from bench_common import Case, quick, read_bandwidth, record, run
from nnphases.kernels import refusal
from nnphases.kernels.bench import popcount_rate

CASE = Case("4096x1M", 1_000_000, 4096, 10, "uint8")


def params() -> list:
    out = []
    for name in ("cpp", "numba"):
        why = refusal(name, "mask_overlap", "cpu")
        out.append(pytest.param(name, id=name, marks=[pytest.mark.skip(reason=why)] if why else []))
    return out


_sets: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def mask_sets(c: Case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two random mask sets (B keeps about half of A's bits) and class labels in sorted runs, as an evaluation set
    ordered by class gives them; padding bits zero as pack_masks writes them."""
    key = (c.samples, c.nodes)
    if key not in _sets:
        rng = np.random.default_rng(2026)
        width = -(-c.samples // 64) * 8
        a = rng.integers(0, 256, (c.nodes, width), dtype=np.uint8)
        keep = rng.integers(0, 256, (c.nodes, width), dtype=np.uint8)
        b = (a & keep) | (rng.integers(0, 256, (c.nodes, width), dtype=np.uint8) & ~keep)
        if c.samples % 64:
            pad = np.unpackbits(np.zeros(width, np.uint8), bitorder="little").astype(bool)
            pad[c.samples:] = True
            keep_bits = ~np.packbits(pad, bitorder="little")
            a &= keep_bits
            b &= keep_bits
        labels = np.sort(rng.integers(0, c.classes, c.samples))
        _sets.clear()
        _sets[key] = (torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(labels))
    return _sets[key]


def expected(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[2, nodes] from NumPy's popcount of the bytes, a block of rows at a time."""
    out = np.zeros((2, a.shape[0]), np.int64)
    for d in range(0, a.shape[0], 256):
        out[0, d:d + 256] = np.bitwise_count(a[d:d + 256] & b[d:d + 256]).sum(axis=1)
        out[1, d:d + 256] = np.bitwise_count(a[d:d + 256] | b[d:d + 256]).sum(axis=1)
    return out


class Both:
    """Both mask sets as the records' input: their elements and bytes together, nothing copied."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.n = a.numel() + b.numel()

    def numel(self) -> int:
        return self.n

    def element_size(self) -> int:
        return 1


@pytest.mark.parametrize("per_class", [False, True], ids=["all", "per-class"])
@pytest.mark.parametrize("impl", params())
def test_mask_overlap(benchmark, request, impl, per_class):
    c = CASE.scaled(quick(request.config))
    a, b, labels = mask_sets(c)
    bw = read_bandwidth(a)  # a stream larger than the caches at full size
    kw = dict(labels=labels, num_classes=c.classes) if per_class else {}
    got = run(benchmark, lambda: K.mask_overlap(a, b, c.samples, backend=impl, **kw))
    want = expected(a.numpy(), b.numpy())
    np.testing.assert_array_equal(got.sum(dim=1).numpy() if per_class else got.numpy(), want)
    name = c.name + ("-per-class" if per_class else "")
    record(benchmark, Case(name, c.samples, c.nodes, c.classes, c.dtype), "mask_overlap", impl, Both(a, b), bw)


@pytest.mark.parametrize("impl", params())
def test_sample_popcounts(benchmark, request, impl):
    """One mask set's per-sample popcounts against the read bandwidth of that set."""
    c = CASE.scaled(quick(request.config))
    a, _, _ = mask_sets(c)
    bw = read_bandwidth(a)
    got = run(benchmark, lambda: K.sample_popcounts(a, c.samples, backend=impl))
    bits = np.unpackbits(a.numpy()[:, : 8 * 64], axis=1, bitorder="little")  # the first 4,096 samples, unpacked
    np.testing.assert_array_equal(got.numpy()[: bits.shape[1]], bits.sum(axis=0))
    assert int(got.sum()) == int(np.bitwise_count(a.numpy()).sum(dtype=np.int64))
    record(benchmark, c, "sample_popcounts", impl, a, bw)


COACT = Case("4096x100k", 100_000, 4096, 10, "uint8")


def popcount_limit() -> float:
    """Words per second this CPU popcounts on every core (nnphases.kernels.bench.popcount_rate: a cache-resident
    buffer per thread, built with the kernels' flags)."""
    rate = popcount_rate()
    assert rate is not None, "the C++ extension is not built: no popcount probe"
    return rate


@pytest.mark.parametrize("impl", params())
def test_coactivation(benchmark, request, impl):
    """The node-by-node table of a 4,096-node layer over 100,000 samples: pair-words ANDed and popcounted per
    second (the j >= i half) against this CPU's popcount rate, measured here; its result checked (the diagonal
    against NumPy's popcounts, 64 random nodes' block against a product of their bits, symmetry)."""
    c = COACT.scaled(quick(request.config))
    a, _, _ = mask_sets(c)
    limit = popcount_limit()
    got = run(benchmark, lambda: K.coactivation(a, c.samples, backend=impl), rounds=1)
    x = a.numpy()
    np.testing.assert_array_equal(np.diag(got.numpy()), np.bitwise_count(x).sum(axis=1, dtype=np.int64))
    rows = np.random.default_rng(1).choice(c.nodes, min(64, c.nodes), replace=False)
    bits = np.unpackbits(x[rows], axis=1, bitorder="little")[:, : c.samples].astype(np.float64)
    np.testing.assert_array_equal(got.numpy()[np.ix_(rows, rows)], np.rint(bits @ bits.T).astype(np.int64))
    np.testing.assert_array_equal(got.numpy(), got.numpy().T)
    if benchmark.disabled or benchmark.stats is None:
        return
    sec = benchmark.stats.stats.min
    words = c.nodes * (c.nodes + 1) // 2 * (-(-c.samples // 64))
    print(f"\ncoactivation {c.name} {impl}: {sec:.2f} s, {words / sec / 1e9:.2f} G pair-words/s; popcount limit "
          f"{limit / 1e9:.2f} G words/s (every core); {words / sec / limit:.2f} of it")
    benchmark.extra_info.update(pair_words_per_s=words / sec, popcount_limit=limit, of_limit=words / sec / limit)
