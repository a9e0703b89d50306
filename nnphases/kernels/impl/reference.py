"""The reference backend: the simplest correct NumPy, the test oracle. It reads
each value as a float (bfloat16 widened to float32 from its bits) and compares
``x > 0``, independently of the bit tests the fast backends use, and works in
chunks of rows so its memory stays bounded whatever the input's size."""

from __future__ import annotations

import numpy as np

from .._kinds import Kind
from ..metrics import LayerMetrics, NodeMetrics, layer_metrics_np, node_metrics_np

_CHUNK_ELEMENTS = 1 << 22
_FLOATS = {"float16": np.float16, "float32": np.float32, "float64": np.float64}


def _active(bits: np.ndarray, kind: Kind) -> tuple[np.ndarray, bool]:
    if kind.name == "bool":
        return bits != 0, False
    if kind.name == "bfloat16":
        x = (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
    else:
        x = bits.view(_FLOATS[kind.name])
    return x > 0, not bool(np.isfinite(x).all())


def _rows_per_chunk(nodes: int, multiple: int = 8) -> int:
    """Rows per chunk: about _CHUNK_ELEMENTS elements, a multiple of 8 so packed bytes never straddle chunks."""
    return max(multiple, _CHUNK_ELEMENTS // max(nodes, 1) // multiple * multiple)


def class_counts(
    acts: np.ndarray,
    kind: Kind,
    labels: np.ndarray,
    num_classes: int,
    *,
    check_finite: bool,
    threads: int | None = None,
    strategy: str = "auto",
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, bool]:
    samples, nodes = acts.shape
    if out is None:
        out = np.zeros((num_classes, nodes), dtype=np.int64)
    bad = False
    step = _rows_per_chunk(nodes)
    for s in range(0, samples, step):
        active, nonfinite = _active(acts[s : s + step], kind)
        bad |= nonfinite
        lab = labels[s : s + step]
        for c in np.unique(lab):
            out[c] += active[lab == c].sum(axis=0, dtype=np.int64)
    return out, bad and check_finite


def pack_masks(
    acts: np.ndarray, kind: Kind, *, check_finite: bool, threads: int | None = None
) -> tuple[np.ndarray, bool]:
    samples, nodes = acts.shape
    out = np.zeros((nodes, -(-samples // 64) * 8), dtype=np.uint8)
    bad = False
    step = _rows_per_chunk(nodes)
    for s in range(0, samples, step):
        active, nonfinite = _active(acts[s : s + step], kind)
        bad |= nonfinite
        packed = np.packbits(active, axis=0, bitorder="little")  # [ceil(rows / 8), nodes]
        out[:, s // 8 : s // 8 + packed.shape[0]] = packed.T
    return out, bad and check_finite


def count_and_pack(
    acts: np.ndarray,
    kind: Kind,
    labels: np.ndarray,
    num_classes: int,
    *,
    check_finite: bool,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The oracle of the fused kernels is the two kernels it fuses."""
    counts, bad = class_counts(acts, kind, labels, num_classes, check_finite=check_finite, out=out)
    packed, bad_pack = pack_masks(acts, kind, check_finite=check_finite)
    return counts, packed, bad or bad_pack


def packed_class_counts(
    packed: np.ndarray, labels: np.ndarray, num_classes: int, *, threads: int | None = None
) -> np.ndarray:
    nodes = packed.shape[0]
    samples = labels.shape[0]
    out = np.zeros((num_classes, nodes), dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(samples, 1))
    for d in range(0, nodes, step):
        bits = np.unpackbits(packed[d : d + step], axis=1, bitorder="little")[:, :samples]
        for c in np.unique(labels):
            out[c, d : d + step] = bits[:, labels == c].sum(axis=1, dtype=np.int64)
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
    """The sets' bits unpacked: per node and class, how many samples are in both and in either."""
    nodes = a.shape[0]
    out = np.zeros((2, num_classes, nodes), dtype=np.int64)
    cls = np.zeros(samples, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(samples, 1))
    for d in range(0, nodes, step):
        x = np.unpackbits(a[d : d + step], axis=1, bitorder="little")[:, :samples].astype(bool)
        y = np.unpackbits(b[d : d + step], axis=1, bitorder="little")[:, :samples].astype(bool)
        for c in range(num_classes):
            of_c = cls == c
            out[0, c, d : d + step] = (x & y)[:, of_c].sum(axis=1)
            out[1, c, d : d + step] = (x | y)[:, of_c].sum(axis=1)
    return out


def sample_popcounts(packed: np.ndarray, samples: int, *, threads: int | None = None) -> np.ndarray:
    """The bits unpacked and summed over the node rows."""
    out = np.zeros(samples, dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(samples, 1))
    for d in range(0, packed.shape[0], step):
        out += np.unpackbits(packed[d : d + step], axis=1, bitorder="little")[:, :samples].sum(axis=0, dtype=np.int64)
    return out


def coactivation(packed: np.ndarray, samples: int, *, threads: int | None = None) -> np.ndarray:
    """The bits unpacked, a block of samples at a time, as a matrix product of 0/1 integers."""
    N = packed.shape[0]
    out = np.zeros((N, N), dtype=np.int64)
    step = max(64, (_CHUNK_ELEMENTS // max(N, 1)) // 64 * 64)
    for s in range(0, samples, step):
        block = packed[:, s // 8 : (s + step) // 8]
        bits = np.unpackbits(block, axis=1, bitorder="little")[:, : min(step, samples - s)].astype(np.int64)
        out += bits @ bits.T
    return out


def sample_agreement(packed: np.ndarray, idx: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """The chosen samples' bits unpacked into 0/1 codes; distances as counts of disagreeing nodes."""
    bits = (packed[:, idx >> 3] >> (idx & 7).astype(np.uint8)) & 1  # [nodes, m]
    x = bits.T.astype(np.int64)
    ones = x.sum(axis=1)
    return ones[:, None] + ones[None, :] - 2 * (x @ x.T)


def node_metrics(counts: np.ndarray, class_sizes: np.ndarray, *, threads: int | None = None) -> NodeMetrics:
    """nnphases.kernels.metrics' NumPy implementation, the oracle of the native metric kernels."""
    return node_metrics_np(counts, class_sizes)


def layer_metrics(
    tables: list[np.ndarray], class_sizes: np.ndarray, *, threads: int | None = None
) -> list[LayerMetrics]:
    return [layer_metrics_np(counts, class_sizes) for counts in tables]
