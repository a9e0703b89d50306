"""Class segments of bit-packed sample masks, shared by every packed-count backend.

Bit ``s`` of a packed row lives in 64-bit word ``s // 64``, at bit ``s % 64``.
For each class ``c`` the segments ``class_offsets[c] .. class_offsets[c+1]``
list the words holding samples of that class and, per word, the mask of those
samples' bits, so that ``count[c, d] = sum_k popcount(row_d[word[k]] & mask[k])``.
Sorted by (class, word); padding bits never appear in a mask. The number of
segments is at most ``min(samples, words * classes)``; labels grouped by class
give about ``words + classes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segments:
    class_offsets: np.ndarray  # int64 [num_classes + 1]
    word: np.ndarray  # int64 [K]
    mask: np.ndarray  # uint64 [K]


def build_segments(labels: np.ndarray, num_classes: int) -> Segments:
    """Segments for host labels (int32 or int64 in ``[0, num_classes)``)."""
    labels = np.asarray(labels, dtype=np.int64)
    samples = np.arange(labels.shape[0], dtype=np.int64)
    words = samples >> 6
    num_words = int(words[-1]) + 1 if labels.size else 0
    keys = labels * max(num_words, 1) + words  # already sorted by word for each class
    order = np.argsort(keys, kind="stable")
    keys_sorted = keys[order]
    starts = np.flatnonzero(np.r_[True, keys_sorted[1:] != keys_sorted[:-1]]) if keys.size else np.zeros(0, np.int64)
    # Bits of one (class, word) pair are distinct powers of two: their sum is their OR.
    bits = np.left_shift(np.uint64(1), (samples[order] & 63).astype(np.uint64))
    mask = np.add.reduceat(bits, starts) if keys.size else np.zeros(0, np.uint64)
    seg_keys = keys_sorted[starts]
    seg_class = seg_keys // max(num_words, 1)
    class_offsets = np.zeros(num_classes + 1, dtype=np.int64)
    np.cumsum(np.bincount(seg_class, minlength=num_classes), out=class_offsets[1:])
    return Segments(class_offsets, (seg_keys % max(num_words, 1)).astype(np.int64), mask.astype(np.uint64))
