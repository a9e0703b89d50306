"""The ``cupy`` backend: the same CUDA device code as the extension
(csrc/cuda/*.cuh), compiled at run time by CuPy's NVRTC, so GPU users need no
compiler. Kernels are compiled once per (kernel, kind, variant) and cached by
CuPy; launches run on the stream the dispatcher passes (the caller's)."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._kinds import Kind
from .._metric_kernels import DEVICE_COUNT_TYPES
from .._segments import build_segments
from .._validate import label_range

if TYPE_CHECKING:
    from .._metric_kernels import DevicePlan

try:
    import cupy
except ImportError:
    raise ImportError("CuPy is not installed (pip install 'nnphases[cupy]')") from None
try:
    _available = cupy.cuda.is_available()
except Exception as e:  # a broken driver install raises instead of answering
    raise ImportError(f"CuPy cannot reach a CUDA device: {e}") from None
if not _available:
    raise ImportError("CuPy finds no CUDA device")


def _source_dir() -> Path:
    here = Path(__file__).resolve().parents[2]  # the nnphases package: nnphases/kernels/impl/cupy.py
    for cand in (here / "_csrc", here.parent / "csrc"):  # installed copy, then a source checkout
        if (cand / "kinds.h").exists():
            return cand
    raise ImportError(f"the CUDA sources (kinds.h, cuda/*.cuh) are not in {here / '_csrc'}; reinstall nnphases")


_SRC = _source_dir()
_BLOCK = 256
_KIND_TYPES = {0: "KindBool", 1: "KindF16", 2: "KindBF16", 3: "KindF32", 4: "KindF64"}
# class_counts' output element by size: the unsigned types atomicAdd takes (int32 and int64 tables).
_OUT_TYPES = {4: "unsigned int", 8: "unsigned long long"}


@functools.cache
def _kernel(header: str, name: str) -> cupy.RawKernel:
    code = f'#include "cuda/{header}"\n'
    opts = ("-std=c++17", f"-I{_SRC}", f"-I{_SRC / 'cuda'}")
    templated = "<" in name
    mod = cupy.RawModule(code=code, options=opts, name_expressions=[name] if templated else None)
    return mod.get_function(name)


def _variant(kernel: str, kind: Kind, acts: cupy.ndarray, check: bool, *extra: str) -> tuple[str, bool]:
    row_bytes = acts.strides[0]
    vec = acts.data.ptr % 16 == 0 and row_bytes % 16 == 0
    args = ", ".join((f"nnp::{_KIND_TYPES[kind.code]}", str(vec).lower(), str(check).lower(), *extra))
    return f"nnp::{kernel}<{args}>", vec


@functools.cache
def _sm_count(device: int) -> int:
    return int(cupy.cuda.runtime.deviceGetAttribute(cupy.cuda.runtime.cudaDevAttrMultiProcessorCount, device))


@functools.lru_cache(maxsize=64)
def _stream(ptr: int, device: int) -> cupy.cuda.ExternalStream:
    with warnings.catch_warnings():  # CuPy 14 prefers Stream.from_external(obj with __cuda_stream__); we hold a handle
        warnings.simplefilter("ignore", DeprecationWarning)
        return cupy.cuda.ExternalStream(ptr, device)


def _rows_per_warp(samples: int, warps_per_segment: int, device: int) -> int:
    """Mirrors rows_per_warp in csrc/cuda/launch.h: about two full waves of warps."""
    segments = -(-(_sm_count(device) * 64 * 2) // warps_per_segment)
    r = max(-(-samples // segments), -(-samples // 65535))
    return max(32, -(-r // 32) * 32)


def class_counts(
    acts: cupy.ndarray,
    kind: Kind,
    labels: cupy.ndarray,
    num_classes: int,
    *,
    check_finite: bool,
    stream: int,
    device: int,
    check_labels: bool = True,
    out: cupy.ndarray | None = None,
) -> tuple[cupy.ndarray, bool]:
    """Counts added into ``out`` (int32 or int64, C-contiguous) or into a fresh zeroed int64 table."""
    samples, nodes = acts.shape
    with cupy.cuda.Device(device), _stream(stream, device):
        if out is None:
            out = cupy.zeros((num_classes, nodes), dtype=cupy.int64)
        flags = cupy.zeros(2, dtype=cupy.uint64)
        if samples and nodes:
            order = cupy.empty(samples, dtype=cupy.int32)
            sorted_labels = cupy.empty(samples, dtype=cupy.int32)
            hist = cupy.zeros(num_classes, dtype=cupy.int32)
            s64, c64 = np.int64(samples), np.int64(num_classes)
            blocks = min(-(-samples // _BLOCK), 4096)
            lab_t = "long long" if labels.dtype.itemsize == 8 else "int"
            _kernel("class_counts.cuh", f"nnp::class_histogram<{lab_t}>")(
                (blocks,), (_BLOCK,), (labels, s64, c64, hist, flags)
            )
            _kernel("class_counts.cuh", "nnp_class_scan")((1,), (1024,), (hist, c64))
            _kernel("class_counts.cuh", f"nnp::class_scatter<{lab_t}>")(
                (blocks,), (_BLOCK,), (labels, s64, c64, hist, order, sorted_labels)
            )
            name, _ = _variant("class_counts_kernel", kind, acts, check_finite, _OUT_TYPES[out.dtype.itemsize])
            tiles = -(-nodes // (32 * (16 // kind.itemsize)))
            blocks_x = -(-tiles // 8)
            rpw = _rows_per_warp(samples, blocks_x * 8, device)
            _kernel("class_counts.cuh", name)(
                (blocks_x, -(-samples // rpw)),
                (_BLOCK,),
                (
                    acts,
                    s64,
                    np.int64(nodes),
                    np.int64(acts.strides[0]),
                    order,
                    sorted_labels,
                    out,
                    flags,
                    np.int64(rpw),
                ),
            )
        if not (check_finite or check_labels):
            return out, False
        nonfinite, bad_labels = (int(v) for v in flags.get())  # the call's one synchronisation
    if bad_labels and check_labels:
        label_range(labels, num_classes)
    return out, bool(nonfinite)


class_counts.checks_labels = True  # type: ignore[attr-defined]


def pack_masks(
    acts: cupy.ndarray, kind: Kind, *, check_finite: bool, stream: int, device: int
) -> tuple[cupy.ndarray, bool]:
    samples, nodes = acts.shape
    words = -(-samples // 64)
    with cupy.cuda.Device(device), _stream(stream, device):
        out = cupy.empty((nodes, words * 8), dtype=cupy.uint8)
        flags = cupy.zeros(1, dtype=cupy.uint64)
        if samples and nodes:
            name, _ = _variant("pack_masks_kernel", kind, acts, check_finite)
            per = 16 // kind.itemsize
            grid = (-(-nodes // (32 * per)), min(-(-words // 8), 65535))
            _kernel("pack_masks.cuh", name)(
                grid,
                (_BLOCK,),
                (acts, np.int64(samples), np.int64(nodes), np.int64(acts.strides[0]), out, np.int64(words), flags),
            )
        bad = bool(int(flags[0])) if check_finite else False
    return out, bad


def packed_class_counts(
    packed: cupy.ndarray, labels: cupy.ndarray, num_classes: int, *, stream: int, device: int
) -> cupy.ndarray:
    nodes = packed.shape[0]
    with cupy.cuda.Device(device), _stream(stream, device):
        seg = build_segments(cupy.asnumpy(labels), num_classes)
        packed = cupy.ascontiguousarray(packed)
        out = cupy.empty((num_classes, nodes), dtype=cupy.int64)
        if nodes:
            args = (
                packed,
                np.int64(nodes),
                np.int64(packed.shape[1] // 8),
                cupy.asarray(seg.class_offsets),
                np.int64(num_classes),
                cupy.asarray(seg.word),
                cupy.asarray(seg.mask),
                out,
            )
            _kernel("packed_class_counts.cuh", "nnp_packed_class_counts")((-(-nodes // 8),), (_BLOCK,), args)
    return out


# coactivation's tiles (csrc/cuda/coactivation.cuh): kGramTile rows a side, kGramThreads threads a block.
_GRAM_TILE, _GRAM_THREADS = 64, 256


def _last_mask(samples: int) -> np.uint64:
    """The bits of a row's last word that hold samples (all of them when the samples fill it)."""
    return np.uint64((1 << (samples % 64)) - 1 if samples % 64 else (1 << 64) - 1)


def _overlap_lanes(words: int) -> int:
    """Mirrors overlap_lanes in csrc/cuda/launch.h: a power of two as wide as a row has words, at most a warp."""
    lanes = 1
    while lanes < 32 and lanes < words:
        lanes *= 2
    return lanes


def _popcount_chunk_rows(nodes: int, words: int, device: int) -> int:
    """Mirrors popcount_chunk_rows in csrc/cuda/launch.h: about two waves of warps, 128 to 255 rows a chunk."""
    columns = -(-words // 32) if words > 32 else 1
    chunks = -(-(_sm_count(device) * 64 * 2) // columns)
    return min(255, max(128, -(-nodes // chunks)))


def _gram(rows: cupy.ndarray, n: int, words: int, last_mask: np.uint64, xor: bool, out: cupy.ndarray) -> None:
    tiles = -(-n // _GRAM_TILE)
    name = f"nnp::popcount_gram_kernel<{str(xor).lower()}>"
    header = "sample_agreement.cuh" if xor else "coactivation.cuh"
    _kernel(header, name)((tiles, tiles), (_GRAM_THREADS,), (rows, np.int64(n), np.int64(words), last_mask, out))


def mask_overlap(
    a: cupy.ndarray,
    b: cupy.ndarray,
    samples: int,
    labels: np.ndarray | None,
    num_classes: int,
    *,
    stream: int,
    device: int,
) -> cupy.ndarray:
    """-> int64 [2, classes, nodes]: popcounts of A & B, then of A | B, per class (one class without labels); the
    host labels' segments are built on the host and uploaded."""
    nodes, row_bytes = a.shape
    words = row_bytes // 8
    with cupy.cuda.Device(device), _stream(stream, device):
        out = cupy.empty((2, num_classes, nodes), dtype=cupy.int64)
        if not nodes:
            return out
        if labels is None:
            lanes = _overlap_lanes(words)
            rows = (a, b, np.int64(nodes), np.int64(words), _last_mask(samples), np.int32(lanes), out)
            _kernel("mask_overlap.cuh", "nnp_mask_overlap_rows")((-(-(nodes * lanes) // _BLOCK),), (_BLOCK,), rows)
            return out
        seg = build_segments(labels, num_classes)
        args = (
            a,
            b,
            np.int64(nodes),
            np.int64(words),
            cupy.asarray(seg.class_offsets),
            np.int64(num_classes),
            cupy.asarray(seg.word),
            cupy.asarray(seg.mask),
            out,
        )
        _kernel("mask_overlap.cuh", "nnp_mask_overlap_classes")((-(-nodes // 8),), (_BLOCK,), args)
    return out


def sample_popcounts(packed: cupy.ndarray, samples: int, *, stream: int, device: int) -> cupy.ndarray:
    """-> int64 [samples]: the rows with each sample's bit set."""
    nodes, row_bytes = packed.shape
    words = row_bytes // 8
    with cupy.cuda.Device(device), _stream(stream, device):
        out = cupy.zeros(samples, dtype=cupy.int64)  # the kernel adds each chunk's counts into it
        if nodes and samples:
            rows = _popcount_chunk_rows(nodes, words, device)
            chunks = -(-nodes // rows)  # a warp each, eight to a block
            grid = (-(-words // 32), -(-chunks // 8))
            args = (packed, np.int64(nodes), np.int64(words), np.int64(samples), np.int64(rows), out)
            _kernel("sample_popcounts.cuh", "nnp_sample_popcounts")(grid, (_BLOCK,), args)
    return out


def coactivation(packed: cupy.ndarray, samples: int, *, stream: int, device: int) -> cupy.ndarray:
    """-> int64 [nodes, nodes]: the samples each pair of rows has in common."""
    nodes, row_bytes = packed.shape
    with cupy.cuda.Device(device), _stream(stream, device):
        out = cupy.empty((nodes, nodes), dtype=cupy.int64)
        if nodes:
            _gram(packed, nodes, row_bytes // 8, _last_mask(samples), False, out)
    return out


def sample_agreement(packed: cupy.ndarray, idx: np.ndarray, *, stream: int, device: int) -> cupy.ndarray:
    """-> int64 [m, m]: Hamming distances between the chosen samples' codes (host indices, checked by the
    caller) across the rows."""
    nodes, row_bytes = packed.shape
    m = idx.shape[0]
    code_words = -(-nodes // 64)
    with cupy.cuda.Device(device), _stream(stream, device):
        out = cupy.empty((m, m), dtype=cupy.int64)
        if not m:
            return out
        codes = cupy.empty(m * code_words, dtype=cupy.uint64)
        if code_words:
            chosen = cupy.asarray(np.ascontiguousarray(idx, dtype=np.int64))
            blocks = min(-(-m * code_words // 8), _sm_count(device) * 32)
            args = (packed, np.int64(nodes), np.int64(row_bytes), chosen, np.int64(m), np.int64(code_words), codes)
            _kernel("sample_agreement.cuh", "nnp_gather_codes")((blocks,), (_BLOCK,), args)
        _gram(codes, m, code_words, np.uint64(2**64 - 1), True, out)  # codes are zero past the last node
    return out


# The metric kernels (csrc/cuda/node_metrics.cuh): kMetricsBlock nodes per block, kMetricsPartial doubles of
# partials per block, kMetricsCombine threads in the combining block.
_METRICS_BLOCK, _METRICS_PARTIAL, _METRICS_COMBINE = 256, 9, 1024
_METRIC_FIELDS = (
    "class_fraction",
    "fraction",
    "predictability",
    "informativeness",
    "h_z_given_y",
    "h_y_given_z",
    "dead",
    "always_active",
)


def _metrics(counts: cupy.ndarray, plan: DevicePlan, out: dict[str, cupy.ndarray]) -> np.ndarray:
    """Launches on the current device and stream; returns the nine-number result (the one synchronisation)."""
    classes, nodes = counts.shape
    blocks = -(-nodes // _METRICS_BLOCK)
    work = cupy.empty(_METRICS_PARTIAL * (blocks + 1), dtype=cupy.float64)  # the blocks' partials, then the result
    partials, result = work[: _METRICS_PARTIAL * blocks], work[_METRICS_PARTIAL * blocks :]
    if nodes:
        sizes = cupy.asarray(plan.class_sizes)
        store = bool(out)
        name = (
            f"nnp::node_metrics_kernel<{DEVICE_COUNT_TYPES[counts.dtype.name]}, {str(store).lower()}, "
            f"{str(plan.pair_terms).lower()}>"
        )
        null = np.uint64(0)  # a pointer the variant without node outputs never reads
        outs = tuple(out[f] for f in _METRIC_FIELDS) if store else (null,) * len(_METRIC_FIELDS)
        _kernel("node_metrics.cuh", name)(
            (blocks,),
            (_METRICS_BLOCK,),
            (
                counts,
                np.int64(classes),
                np.int64(nodes),
                sizes,
                np.int64(plan.total),
                np.float64(plan.present),
                np.float64(plan.h_y),
                np.float64(plan.log_k),
                *outs,
                partials,
            ),
        )
    # Also with no nodes: it writes the zero sums and counts read back below.
    _kernel("node_metrics.cuh", "nnp_node_metrics_combine")(
        (1,), (_METRICS_COMBINE,), (partials, np.int64(blocks), result)
    )
    return result.get()


def node_metrics(
    counts: cupy.ndarray, plan: DevicePlan, *, stream: int, device: int
) -> tuple[dict[str, cupy.ndarray], np.ndarray]:
    """The node arrays on the counts' device, and the layer result (whose last entry counts bad counts)."""
    classes, nodes = counts.shape
    with cupy.cuda.Device(device), _stream(stream, device):
        out = {name: cupy.empty(nodes, dtype=cupy.float64) for name in _METRIC_FIELDS}
        out["class_fraction"] = cupy.empty((classes, nodes), dtype=cupy.float64)
        out["dead"] = cupy.empty(nodes, dtype=cupy.bool_)
        out["always_active"] = cupy.empty(nodes, dtype=cupy.bool_)
        result = _metrics(counts, plan, out)
    return out, result


def layer_metrics(counts: cupy.ndarray, plan: DevicePlan, *, stream: int, device: int) -> np.ndarray:
    """The layer result: sums of f, p, u; how many of each; dead; always active; bad counts."""
    with cupy.cuda.Device(device), _stream(stream, device):
        return _metrics(counts, plan, {})
