"""The ``cpp`` backend: the extension's C++ CPU kernels (one pass, vectorised,
``threads`` threads; ``None`` means one per usable core, ``kernels.cores``)."""

from __future__ import annotations

import numpy as np

from .._kinds import Kind
from .._segments import build_segments
from ._cpp_metrics import _t, layer_metrics, node_metrics  # noqa: F401  (the backend's metric kernels)

try:
    from ... import _C
except ImportError as e:  # the text is the reason shown by `nnphases backends`
    raise ImportError(
        f"the C++ extension nnphases._C is not built ({e}); reinstall with a C++ compiler: pip install ."
    ) from None

_STRATEGIES = {"auto": 0, "direct": 1, "sorted": 2, "wide": 3}


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
    """Counts added into ``out`` (int32 or int64, C-contiguous; a fresh int64 table when None)."""
    if out is None:
        out = np.zeros((num_classes, acts.shape[1]), dtype=np.int64)
    bad = _C.class_counts(acts, kind.code, labels, num_classes, out, check_finite, _t(threads), _STRATEGIES[strategy])
    return out, bool(bad)


def pack_masks(
    acts: np.ndarray, kind: Kind, *, check_finite: bool, threads: int | None = None
) -> tuple[np.ndarray, bool]:
    out = np.empty((acts.shape[1], -(-acts.shape[0] // 64) * 8), dtype=np.uint8)
    bad = _C.pack_masks(acts, kind.code, out, check_finite, _t(threads))
    return out, bool(bad)


def packed_class_counts(
    packed: np.ndarray, labels: np.ndarray, num_classes: int, *, threads: int | None = None
) -> np.ndarray:
    seg = build_segments(labels, num_classes)
    out = np.zeros((num_classes, packed.shape[0]), dtype=np.int64)
    _C.packed_class_counts(np.ascontiguousarray(packed), seg.class_offsets, seg.word, seg.mask, out, _t(threads))
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
    out = np.zeros((2, num_classes, a.shape[0]), dtype=np.int64)
    if labels is None:  # whole rows: no segments to walk
        last = (1 << (samples % 64)) - 1 if samples % 64 else (1 << 64) - 1
        _C.mask_overlap(a, b, np.array([0, 0], np.int64), None, None, last, out[0], out[1], _t(threads))
        return out
    seg = build_segments(labels, num_classes)
    _C.mask_overlap(a, b, seg.class_offsets, seg.word, seg.mask, 0, out[0], out[1], _t(threads))
    return out


_POPCOUNT_STRATEGIES = {"auto": 0, "bitsliced": 1, "bytes": 2}


def sample_popcounts(
    packed: np.ndarray, samples: int, *, threads: int | None = None, strategy: str = "auto"
) -> np.ndarray:
    """-> int64 [samples]: the rows with each sample's bit set. ``strategy``: ``auto`` (byte counters where the
    CPU has AVX-512BW, else bit-sliced counters), ``bitsliced`` or ``bytes`` (RuntimeError without AVX-512BW)."""
    out = np.zeros(samples, dtype=np.int64)
    if not _C.sample_popcounts(packed, samples, out, _t(threads), _POPCOUNT_STRATEGIES[strategy]):
        raise RuntimeError("sample_popcounts: strategy 'bytes' needs a CPU with AVX-512BW")
    return out


def coactivation(packed: np.ndarray, samples: int, *, threads: int | None = None) -> np.ndarray:
    """-> int64 [nodes, nodes]: the samples each pair of rows has in common."""
    out = np.zeros((packed.shape[0], packed.shape[0]), dtype=np.int64)
    _C.coactivation(packed, samples, out, _t(threads))
    return out


def sample_agreement(packed: np.ndarray, idx: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """-> int64 [m, m]: Hamming distances between the chosen samples' codes across the rows."""
    out = np.zeros((idx.shape[0], idx.shape[0]), dtype=np.int64)
    _C.sample_agreement(packed, idx, out, _t(threads))
    return out


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
    """(counts added into ``out`` as :func:`class_counts`, packed masks as :func:`pack_masks`, any
    non-finite) from one read of the activations."""
    if out is None:
        out = np.zeros((num_classes, acts.shape[1]), dtype=np.int64)
    packed = np.empty((acts.shape[1], -(-acts.shape[0] // 64) * 8), dtype=np.uint8)
    bad = _C.count_and_pack(acts, kind.code, labels, num_classes, out, packed, check_finite, _t(threads))
    return out, packed, bool(bad)
