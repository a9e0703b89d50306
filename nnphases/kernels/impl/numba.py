"""Numba CPU backend: single-pass kernels over raw activation bits that count, per
class and node, the samples whose ReLU input is active, pack those activity masks
into bit rows along samples, and count packed rows under class segments. Every
kernel reads the activations once as unsigned integers of the element's width
(see ``_kinds``), compares them with the kind's bit patterns (exact for -0.0,
denormals, infinities and NaN), optionally ORs a non-finite flag in the same pass,
and counts in narrow counters that are flushed into int64 before they can
overflow; work is split across numba's threads in large contiguous pieces.

About 540 lines: every kernel's Numba version, one function each, sharing the jitted bit tests of this file;
the metric kernels are in _numba_metrics.py.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import prange

from .._kinds import Kind
from .._segments import build_segments
from ._numba_common import _jit, _num_threads
from ._numba_metrics import layer_metrics, node_metrics  # noqa: F401  (the backend's metric kernels)

# "auto" counts directly while one thread's narrow table stays about L2/L3-sized;
# beyond it the table thrashes and the class-sorted sweep wins (performance.md).
DIRECT_TABLE_BYTES = 4 << 20
# Nodes per tile in pack_masks: whole rows up to this width, so the 64 rows of a
# block are read sequentially (narrower tiles measured 20-40% slower at 4096 nodes).
PACK_TILE = 16384
# Nodes per tile in the sorted strategy: a row buffer of at most 128 KiB stays in
# L2 while one class's rows stream through it.
SORTED_TILE = 32768
# Rows per class named in a call below which "auto" adds rows straight into the output ("wide") instead of
# narrow counters that are zeroed and flushed per class; the C++ kernel's threshold (class_counts.cpp).
WIDE_ROWS_PER_CLASS = 8


def _counter_dtype(kind: Kind) -> np.dtype:
    # 16-bit counters for every kind, as the C++ kernels: half the cache footprint of 32-bit ones (100
    # classes x 4096 nodes, float32: 1.45x -> 0.96x the cpp time in a same-run A/B), flushed every 65535 rows.
    return np.dtype(np.uint16)


def _flat_rows(acts: np.ndarray) -> tuple[np.ndarray, int]:
    """A read-only 1-D contiguous view spanning all rows, and the row stride in elements.

    Numba cannot prove unit stride for a 2-D non-contiguous ("A") array and would
    not vectorise the inner loop; one flat view with explicit row offsets can.
    """
    S, N = acts.shape
    isz = acts.itemsize
    if (
        (S > 1 and (acts.strides[0] % isz or acts.strides[0] < 0))
        or (N > 1 and acts.strides[1] != isz)
        or acts.ctypes.data % isz
    ):
        # Only rows of adjacent, aligned nodes, whole elements apart in increasing order, can be
        # addressed by index in one flat view (the public boundary already copied anything else).
        acts = acts.copy(order="C")
    rs = acts.strides[0] // isz if S > 1 else N
    length = (S - 1) * rs + N
    flat = np.lib.stride_tricks.as_strided(acts, shape=(length,), strides=(isz,), writeable=False)
    return flat, rs


def _bits(kind: Kind) -> tuple[np.generic, np.generic, np.generic]:
    # Typed scalars so every comparison stays unsigned at the element's width;
    # mixing uint64 with Python ints would make Numba compare in float64.
    t = kind.storage.type
    return t(0), t(kind.inf_bits), t(kind.abs_mask)


# --------------------------------------------------------------------------- kernels
# Each factory closes over ``check`` so the non-finite test is compiled out of the
# hot loop when not requested; Numba hashes closure cells into its cache key.


def _make_wide(check: bool) -> Callable:
    @_jit(parallel=True)
    def wide(
        flat: np.ndarray,
        rs: int,
        S: int,
        N: int,
        labels: np.ndarray,
        zero: np.unsignedinteger,
        inf: np.unsignedinteger,
        absm: np.unsignedinteger,
        nt: int,
        out: np.ndarray,
    ) -> bool:
        # Threads split the nodes, so each adds into its own columns of the output and needs no table of its own.
        bad = np.zeros(nt, np.bool_)
        for t in prange(nt):
            d0 = N * t // nt // 16 * 16
            d1 = N if t == nt - 1 else N * (t + 1) // nt // 16 * 16
            seen = False
            for s in range(S):
                row = flat[s * rs + d0 : s * rs + d1]
                acc = out[labels[s], d0:d1]
                for d in range(d1 - d0):
                    b = row[d]
                    acc[d] += (b != zero) & (b <= inf)
                    if check:
                        seen |= (b & absm) >= inf
            bad[t] = seen
        return bool(bad.any())

    return wide


def _make_direct(check: bool) -> Callable:
    @_jit(parallel=True)
    def direct(
        flat: np.ndarray,
        rs: int,
        S: int,
        N: int,
        labels: np.ndarray,
        zero: np.unsignedinteger,
        inf: np.unsignedinteger,
        absm: np.unsignedinteger,
        narrow: np.ndarray,
        wide: np.ndarray,
        limit: int,
        out: np.ndarray,
    ) -> bool:
        nt = narrow.shape[0]
        bad = np.zeros(nt, np.bool_)
        for t in prange(nt):
            s0 = S * t // nt
            s1 = S * (t + 1) // nt
            table = narrow[t]
            seen = False
            for a in range(s0, s1, limit):
                e = min(s1, a + limit)
                for s in range(a, e):
                    # Slicing first lets LLVM see non-negative indices: flat[base + d]
                    # would carry a negative-index wraparound per element and
                    # become a gather instead of a vector load.
                    row = flat[s * rs : s * rs + N]
                    acc = table[labels[s]]
                    for d in range(N):
                        b = row[d]
                        acc[d] += (b != zero) & (b <= inf)
                        if check:
                            seen |= (b & absm) >= inf
                if e < s1:
                    # Flush before the narrow counters can wrap.
                    w = wide[t]
                    for c in range(table.shape[0]):
                        for d in range(N):
                            w[c, d] += table[c, d]
                            table[c, d] = 0
            bad[t] = seen
        C = narrow.shape[1]
        has_wide = wide.shape[0] > 0
        for c in prange(C):
            for t in range(nt):
                for d in range(N):
                    out[c, d] += narrow[t, c, d]
                if has_wide:
                    for d in range(N):
                        out[c, d] += wide[t, c, d]
        return bool(bad.any())

    return direct


def _make_sorted(check: bool) -> Callable:
    @_jit(parallel=True)
    def sorted_(
        flat: np.ndarray,
        rs: int,
        S: int,
        N: int,
        labels: np.ndarray,
        C: int,
        zero: np.unsignedinteger,
        inf: np.unsignedinteger,
        absm: np.unsignedinteger,
        buf_proto: np.ndarray,
        limit: int,
        tile: int,
        nt: int,
        out: np.ndarray,
    ) -> bool:
        # buf_proto is an empty array of the counter dtype: Numba specialises on it,
        # so one kernel serves uint16 and uint32 buffers.
        # Stable counting sort: each class's rows are visited in ascending order,
        # which keeps the hardware prefetcher useful.
        start = np.zeros(C + 1, np.int64)
        for s in range(S):
            start[labels[s] + 1] += 1
        for c in range(C):
            start[c + 1] += start[c]
        order = np.empty(S, np.int64)
        nxt = start[:C].copy()
        for s in range(S):
            lab = labels[s]
            order[nxt[lab]] = s
            nxt[lab] += 1
        # Node ranges in multiples of 64 keep threads off each other's out cache lines.
        units = (N + 63) // 64
        bad = np.zeros(nt, np.bool_)
        for t in prange(nt):
            d0 = min(N, units * t // nt * 64)
            d1 = min(N, units * (t + 1) // nt * 64)
            buf = np.zeros(min(tile, max(d1 - d0, 1)), buf_proto.dtype)
            seen = False
            for a in range(d0, d1, tile):
                w = min(tile, d1 - a)
                for c in range(C):
                    for k0 in range(start[c], start[c + 1], limit):
                        k1 = min(start[c + 1], k0 + limit)
                        for k in range(k0, k1):
                            base = order[k] * rs + a
                            row = flat[base : base + w]
                            for j in range(w):
                                b = row[j]
                                buf[j] += (b != zero) & (b <= inf)
                                if check:
                                    seen |= (b & absm) >= inf
                        for j in range(w):
                            out[c, a + j] += buf[j]
                            buf[j] = 0
            bad[t] = seen
        return bool(bad.any())

    return sorted_


def _make_pack(check: bool) -> Callable:
    @_jit(parallel=True)
    def pack(
        flat: np.ndarray,
        rs: int,
        S: int,
        N: int,
        zero: np.unsignedinteger,
        inf: np.unsignedinteger,
        absm: np.unsignedinteger,
        bitv: np.ndarray,
        tile: int,
        nt: int,
        words: np.ndarray,
    ) -> bool:
        # Rows are OR-ed into accumulators as wide as the element (bitv[k] = 1 << k),
        # so compare and OR share one vector lane width; every G = lane-bits rows
        # the lanes are folded into one uint64 word per node, stored once per 64
        # rows. A tile spans whole rows when it can: reading rows sequentially
        # matters more than keeping the accumulators in L1.
        G = bitv.shape[0]
        # Sample ranges in multiples of 512 = one 64-byte output line per node row.
        units = (S + 511) // 512
        bad = np.zeros(nt, np.bool_)
        for t in prange(nt):
            s0 = min(S, units * t // nt * 512)
            s1 = min(S, units * (t + 1) // nt * 512)
            acc = np.empty(tile, flat.dtype)
            word = np.empty(tile, np.uint64)
            seen = False
            for blk in range(s0, s1, 64):
                rows = min(64, s1 - blk)
                col = blk // 64
                for d0 in range(0, N, tile):
                    w = min(tile, N - d0)
                    a = acc[:w]
                    wd = word[:w]
                    for g0 in range(0, rows, G):
                        for k in range(min(G, rows - g0)):
                            base = (blk + g0 + k) * rs + d0
                            row = flat[base : base + w]
                            bk = bitv[k]
                            if k == 0:
                                # Assigning the first row saves a separate zeroing pass.
                                for j in range(w):
                                    b = row[j]
                                    a[j] = bk if (b != zero) & (b <= inf) else zero
                                    if check:
                                        seen |= (b & absm) >= inf
                            else:
                                for j in range(w):
                                    b = row[j]
                                    a[j] |= bk if (b != zero) & (b <= inf) else zero
                                    if check:
                                        seen |= (b & absm) >= inf
                        if g0 == 0:
                            for j in range(w):
                                wd[j] = np.uint64(a[j])
                        else:
                            sh = np.uint64(g0)
                            for j in range(w):
                                wd[j] |= np.uint64(a[j]) << sh
                    out = words[d0 : d0 + w]
                    for j in range(w):
                        out[j, col] = wd[j]
            bad[t] = seen
        return bool(bad.any())

    return pack


def _make_count_pack(check: bool) -> Callable:
    @_jit(parallel=True)
    def count_pack(
        flat: np.ndarray,
        rs: int,
        S: int,
        N: int,
        labels: np.ndarray,
        zero: np.unsignedinteger,
        inf: np.unsignedinteger,
        absm: np.unsignedinteger,
        bitv: np.ndarray,
        tile: int,
        narrow: np.ndarray,
        wide: np.ndarray,
        limit: int,
        out: np.ndarray,
        words: np.ndarray,
    ) -> bool:
        # pack's sweep with direct's counting in the same inner loop: each value is
        # compared once and its 0/1 goes both to the row's bit lane and to the
        # counter of the row's label in the thread's own table.
        G = bitv.shape[0]
        nt = narrow.shape[0]
        units = (S + 511) // 512
        bad = np.zeros(nt, np.bool_)
        for t in prange(nt):
            s0 = min(S, units * t // nt * 512)
            s1 = min(S, units * (t + 1) // nt * 512)
            table = narrow[t]
            acc = np.empty(tile, flat.dtype)
            word = np.empty(tile, np.uint64)
            seen = False
            since = 0
            for blk in range(s0, s1, 64):
                rows = min(64, s1 - blk)
                col = blk // 64
                for d0 in range(0, N, tile):
                    w = min(tile, N - d0)
                    a = acc[:w]
                    wd = word[:w]
                    for g0 in range(0, rows, G):
                        for k in range(min(G, rows - g0)):
                            r = blk + g0 + k
                            base = r * rs + d0
                            row = flat[base : base + w]
                            cnt = table[labels[r], d0 : d0 + w]
                            bk = bitv[k]
                            if k == 0:
                                for j in range(w):
                                    b = row[j]
                                    on = (b != zero) & (b <= inf)
                                    cnt[j] += on
                                    a[j] = bk if on else zero
                                    if check:
                                        seen |= (b & absm) >= inf
                            else:
                                for j in range(w):
                                    b = row[j]
                                    on = (b != zero) & (b <= inf)
                                    cnt[j] += on
                                    a[j] |= bk if on else zero
                                    if check:
                                        seen |= (b & absm) >= inf
                        if g0 == 0:
                            for j in range(w):
                                wd[j] = np.uint64(a[j])
                        else:
                            sh = np.uint64(g0)
                            for j in range(w):
                                wd[j] |= np.uint64(a[j]) << sh
                    dst = words[d0 : d0 + w]
                    for j in range(w):
                        dst[j, col] = wd[j]
                since += rows
                if since + 64 > limit:
                    # Flush before the narrow counters can wrap.
                    wt = wide[t]
                    for c in range(table.shape[0]):
                        for d in range(N):
                            wt[c, d] += table[c, d]
                            table[c, d] = 0
                    since = 0
            bad[t] = seen
        C = narrow.shape[1]
        has_wide = wide.shape[0] > 0
        for c in prange(C):
            for t in range(nt):
                for d in range(N):
                    out[c, d] += narrow[t, c, d]
                if has_wide:
                    for d in range(N):
                        out[c, d] += wide[t, c, d]
        return bool(bad.any())

    return count_pack


_DIRECT = {c: _make_direct(c) for c in (False, True)}
_WIDE = {c: _make_wide(c) for c in (False, True)}
_SORTED = {c: _make_sorted(c) for c in (False, True)}
_PACK = {c: _make_pack(c) for c in (False, True)}
_COUNT_PACK = {c: _make_count_pack(c) for c in (False, True)}

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_S1 = np.uint64(1)
_S2 = np.uint64(2)
_S4 = np.uint64(4)
_S56 = np.uint64(56)


@_jit(inline="always")
def _popcount(x: np.uint64) -> np.uint64:
    # SWAR popcount; LLVM recognises the pattern and emits popcnt where available.
    x = x - ((x >> _S1) & _M1)
    x = (x & _M2) + ((x >> _S2) & _M2)
    x = (x + (x >> _S4)) & _M4
    return (x * _H01) >> _S56


@_jit(parallel=True)
def _packed_counts(
    words: np.ndarray, offsets: np.ndarray, seg_word: np.ndarray, seg_mask: np.ndarray, out: np.ndarray
) -> None:
    # seg_word arrives as uint64: an unsigned index needs no negative-index
    # wraparound, which otherwise costs more than the popcount itself.
    N = words.shape[0]
    C = out.shape[0]
    for d in prange(N):
        row = words[d]
        for c in range(C):
            ws = seg_word[offsets[c] : offsets[c + 1]]
            ms = seg_mask[offsets[c] : offsets[c + 1]]
            n = np.uint64(0)
            for k in range(ws.shape[0]):
                n += _popcount(row[ws[k]] & ms[k])
            out[c, d] = n


@_jit(parallel=True)
def _overlap(
    a: np.ndarray, b: np.ndarray, offsets: np.ndarray, seg_word: np.ndarray, seg_mask: np.ndarray, out: np.ndarray
) -> None:
    N = a.shape[0]
    C = out.shape[1]
    for d in prange(N):
        ra, rb = a[d], b[d]
        for c in range(C):
            both = np.uint64(0)
            either = np.uint64(0)
            for k in range(offsets[c], offsets[c + 1]):
                w, m = seg_word[k], seg_mask[k]
                both += _popcount(ra[w] & rb[w] & m)
                either += _popcount((ra[w] | rb[w]) & m)
            out[0, c, d] = both
            out[1, c, d] = either


@_jit(parallel=True)
def _sample_popcounts(words: np.ndarray, samples: int, planes: int, out: np.ndarray) -> None:
    # Bit-sliced counters per column of 64 samples, as the C++ kernel (csrc/cpu/sample_popcounts.cpp).
    N, W = words.shape
    for k in prange(W):
        plane = np.zeros(planes, np.uint64)
        for d in range(N):
            carry = words[d, k]
            p = 0
            while carry != 0:
                nxt = plane[p] & carry
                plane[p] ^= carry
                carry = nxt
                p += 1
        s0 = k * 64
        for b in range(min(64, samples - s0)):
            n = 0
            for p in range(planes):
                n |= int((plane[p] >> np.uint64(b)) & np.uint64(1)) << p
            out[s0 + b] = n


@_jit(parallel=True)
def _coactivation(words: np.ndarray, last_mask: np.uint64, out: np.ndarray) -> None:
    N, W = words.shape
    for i in prange(N):
        for j in range(i, N):
            n = np.uint64(0)
            for k in range(W - 1):
                n += _popcount(words[i, k] & words[j, k])
            n += _popcount(words[i, W - 1] & words[j, W - 1] & last_mask)
            out[i, j] = n
            out[j, i] = n


@_jit(parallel=True)
def _sample_agreement(packed: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
    N = packed.shape[0]
    m = idx.shape[0]
    W = (N + 63) // 64
    codes = np.zeros((m, W), np.uint64)
    for j in prange(m):  # the chosen samples' bits, gathered into codes of a bit per node
        s = idx[j]
        for d in range(N):
            if (packed[d, s >> 3] >> (s & 7)) & 1:
                codes[j, d >> 6] |= np.uint64(1) << np.uint64(d & 63)
    for i in prange(m):
        for j in range(i + 1, m):
            h = np.uint64(0)
            for w in range(W):
                h += _popcount(codes[i, w] ^ codes[j, w])
            out[i, j] = h
            out[j, i] = h


@_jit(parallel=True)
def _overlap_rows(a: np.ndarray, b: np.ndarray, last_mask: np.uint64, out: np.ndarray) -> None:
    # No classes: whole rows, no segments to walk; the last word masked to the samples.
    N, W = a.shape
    for d in prange(N):
        both = np.uint64(0)
        either = np.uint64(0)
        for k in range(W - 1):
            both += _popcount(a[d, k] & b[d, k])
            either += _popcount(a[d, k] | b[d, k])
        both += _popcount(a[d, W - 1] & b[d, W - 1] & last_mask)
        either += _popcount((a[d, W - 1] | b[d, W - 1]) & last_mask)
        out[0, 0, d] = both
        out[1, 0, d] = either


# ------------------------------------------------------------------------ interface


def class_counts(
    acts: np.ndarray,
    kind: Kind,
    labels: np.ndarray,
    num_classes: int,
    *,
    check_finite: bool,
    threads: int | None,
    strategy: str = "auto",
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    """-> (counts [num_classes, N], any_nonfinite): added into ``out`` (int32 or int64, C-contiguous; the
    kernels specialise on its dtype), or a fresh int64 table when None."""
    S, N = acts.shape
    C = int(num_classes)
    if out is None:
        out = np.zeros((C, N), np.int64)
    if S == 0 or N == 0 or C == 0:
        return out, False
    check = bool(check_finite) and kind.abs_mask != 0  # bool has no non-finite values
    flat, rs = _flat_rows(acts)
    zero, inf, absm = _bits(kind)
    cdt = _counter_dtype(kind)
    limit = int(np.iinfo(cdt).max)
    if strategy == "auto":
        strategy = "direct" if C * N * cdt.itemsize <= DIRECT_TABLE_BYTES else "sorted"
        if strategy == "direct" and S < WIDE_ROWS_PER_CLASS * int(np.count_nonzero(np.bincount(labels, minlength=C))):
            strategy = "wide"
    with _num_threads(threads) as nthreads:
        if strategy == "wide":
            # Threads on node ranges of at least 1024: fewer leave each too little of a row.
            bad = _WIDE[check](flat, rs, S, N, labels, zero, inf, absm, max(1, min(nthreads, N // 1024)), out)
        elif strategy == "direct":
            # Tiny inputs do not pay for a second table and thread.
            nt = max(1, min(nthreads, S // 64))
            narrow = np.zeros((nt, C, N), cdt)
            rows_per = -(-S // nt)
            wide = np.zeros((nt if rows_per > limit else 0, C, N), np.int64)
            bad = _DIRECT[check](flat, rs, S, N, labels, zero, inf, absm, narrow, wide, limit, out)
        else:
            nt = max(1, min(nthreads, -(-N // 64)))
            bad = _SORTED[check](
                flat, rs, S, N, labels, C, zero, inf, absm, np.zeros(0, cdt), limit, SORTED_TILE, nt, out
            )
    return out, bool(bad)


def pack_masks(acts: np.ndarray, kind: Kind, *, check_finite: bool, threads: int | None) -> tuple[np.ndarray, bool]:
    """-> (packed uint8 [N, ceil(S/64)*8], any_nonfinite)."""
    S, N = acts.shape
    W = -(-S // 64) * 8
    # Every word is written (bits past S stay zero in the last one), so no zero fill.
    out = np.empty((N, W), np.uint8)
    if S == 0 or N == 0:
        return out, False
    check = bool(check_finite) and kind.abs_mask != 0
    flat, rs = _flat_rows(acts)
    zero, inf, absm = _bits(kind)
    words = out.view(np.uint64)
    bitv = np.left_shift(np.ones(1, kind.storage), np.arange(8 * kind.itemsize, dtype=kind.storage))
    tile = min(N, PACK_TILE)
    with _num_threads(threads) as nthreads:
        nt = max(1, min(nthreads, -(-S // 512)))
        bad = _PACK[check](flat, rs, S, N, zero, inf, absm, bitv, tile, nt, words)
    return out, bool(bad)


def count_and_pack(
    acts: np.ndarray,
    kind: Kind,
    labels: np.ndarray,
    num_classes: int,
    *,
    check_finite: bool,
    threads: int | None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """-> (counts as :func:`class_counts`, packed as :func:`pack_masks`, any_nonfinite) from one read."""
    S, N = acts.shape
    C = int(num_classes)
    cdt = _counter_dtype(kind)
    if C * N * cdt.itemsize > DIRECT_TABLE_BYTES:
        # The sorted counting sweep reads rows in class order: the masks take a pass of their own.
        counts, bad = class_counts(acts, kind, labels, C, check_finite=check_finite, threads=threads, out=out)
        packed, bad_pack = pack_masks(acts, kind, check_finite=check_finite, threads=threads)
        return counts, packed, bad or bad_pack
    if out is None:
        out = np.zeros((C, N), np.int64)
    packed = np.empty((N, -(-S // 64) * 8), np.uint8)
    if S == 0 or N == 0:
        return out, packed, False
    check = bool(check_finite) and kind.abs_mask != 0
    flat, rs = _flat_rows(acts)
    zero, inf, absm = _bits(kind)
    limit = int(np.iinfo(cdt).max)
    bitv = np.left_shift(np.ones(1, kind.storage), np.arange(8 * kind.itemsize, dtype=kind.storage))
    with _num_threads(threads) as nthreads:
        nt = max(1, min(nthreads, -(-S // 512)))
        narrow = np.zeros((nt, C, N), cdt)
        rows_per = -(-S // nt) + 512
        wide = np.zeros((nt if rows_per > limit else 0, C, N), np.int64)
        bad = _COUNT_PACK[check](
            flat,
            rs,
            S,
            N,
            labels,
            zero,
            inf,
            absm,
            bitv,
            min(N, PACK_TILE),
            narrow,
            wide,
            limit,
            out,
            packed.view(np.uint64),
        )
    return out, packed, bool(bad)


def packed_class_counts(
    packed: np.ndarray, labels: np.ndarray, num_classes: int, *, threads: int | None = None
) -> np.ndarray:
    """-> counts int64 [num_classes, N], from the class segments of the labels."""
    segments = build_segments(labels, num_classes)
    N = packed.shape[0]
    out = np.zeros((int(num_classes), N), np.int64)
    if N == 0 or num_classes == 0 or packed.shape[1] == 0:
        return out
    words = packed.view(np.uint64)
    with _num_threads(threads):
        _packed_counts(words, segments.class_offsets, segments.word.view(np.uint64), segments.mask, out)
    return out


def mask_overlap(
    a: np.ndarray,
    b: np.ndarray,
    samples: int,
    labels: np.ndarray | None,
    num_classes: int,
    *,
    threads: int | None = None,
) -> np.ndarray:
    """-> int64 [2, classes, nodes]: popcounts of A & B, then of A | B, per class (one class without labels)."""
    out = np.zeros((2, num_classes, a.shape[0]), np.int64)
    if a.shape[0] == 0 or a.shape[1] == 0:
        return out
    if labels is None:
        last = np.uint64((1 << (samples % 64)) - 1 if samples % 64 else 0xFFFFFFFFFFFFFFFF)
        with _num_threads(threads):
            _overlap_rows(a.view(np.uint64), b.view(np.uint64), last, out)
        return out
    seg = build_segments(labels, num_classes)
    with _num_threads(threads):
        _overlap(a.view(np.uint64), b.view(np.uint64), seg.class_offsets, seg.word.view(np.uint64), seg.mask, out)
    return out


def sample_popcounts(packed: np.ndarray, samples: int, *, threads: int | None = None) -> np.ndarray:
    """-> int64 [samples]: the rows with each sample's bit set."""
    out = np.zeros(samples, np.int64)
    if samples == 0 or packed.shape[0] == 0:
        return out
    with _num_threads(threads):
        _sample_popcounts(packed.view(np.uint64), samples, max(1, int(packed.shape[0]).bit_length()), out)
    return out


def coactivation(packed: np.ndarray, samples: int, *, threads: int | None = None) -> np.ndarray:
    """-> int64 [nodes, nodes]: the samples each pair of rows has in common."""
    N = packed.shape[0]
    out = np.zeros((N, N), np.int64)
    if samples == 0 or N == 0:
        return out
    last = np.uint64((1 << (samples % 64)) - 1 if samples % 64 else 0xFFFFFFFFFFFFFFFF)
    with _num_threads(threads):
        _coactivation(packed.view(np.uint64), last, out)
    return out


def sample_agreement(packed: np.ndarray, idx: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """-> int64 [m, m]: Hamming distances between the chosen samples' codes across the rows."""
    out = np.zeros((idx.shape[0], idx.shape[0]), np.int64)
    if idx.shape[0] == 0 or packed.shape[0] == 0:
        return out
    with _num_threads(threads):
        _sample_agreement(packed, idx, out)
    return out
