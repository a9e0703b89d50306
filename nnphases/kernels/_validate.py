"""Validation at the boundary: every check names the argument and the value, and
runs before any native code. Backends below trust what passes here."""

from __future__ import annotations

import operator
import os
from typing import Any

import numpy as np

from ._arrays import Array, to_numpy
from ._kinds import KINDS, Kind

LABEL_DTYPES = ("int32", "int64")
OUT_DTYPES = ("int32", "int64")
INT32_MAX = 2**31 - 1


class NonFiniteError(ValueError):
    """Activations held NaN or infinity; pass check_finite=False to count them as z > 0 does."""


def acts_kind(a: Array, name: str = "acts") -> Kind:
    if len(a.shape) != 2:
        raise ValueError(f"{name} must be 2-D [samples, nodes], got {len(a.shape)}-D with shape {a.shape}")
    if a.dtype not in KINDS:
        raise TypeError(f"{name} has dtype {a.dtype}; supported: {', '.join(KINDS)}")
    if a.shape[0] > INT32_MAX:
        raise ValueError(f"{name} has {a.shape[0]} samples; at most {INT32_MAX} per call (feed it in batches)")
    return KINDS[a.dtype]


def num_classes_value(num_classes: Any) -> int:
    if isinstance(num_classes, bool):
        raise TypeError(f"num_classes must be an int, got {num_classes!r}")
    try:
        n = operator.index(num_classes)
    except TypeError:
        raise TypeError(f"num_classes must be an int, got {num_classes!r}") from None
    if not 1 <= n <= INT32_MAX:
        raise ValueError(f"num_classes must be in [1, {INT32_MAX}], got {n}")
    return n


def counts_fit(num_classes: int, nodes: int, device: str) -> None:
    """A new int64 ``[num_classes, nodes]`` counts table on the host must fit in its memory: said here, with the
    sizes, rather than as an allocation failure inside NumPy or a backend."""
    if device != "cpu":
        return
    need = 8 * num_classes * nodes
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > total:
        raise ValueError(
            f"num_classes {num_classes} x {nodes} nodes: the int64 counts table needs {need / 2**30:.1f} GiB, more "
            f"than this machine's {total / 2**30:.1f} GiB of memory"
        )


def labels_for(lab: Array, samples: int | None, ref: Array) -> None:
    """Shape, dtype and placement of labels (their length too, unless ``samples`` is None); the value
    range is checked by :func:`label_range`."""
    if len(lab.shape) != 1:
        raise ValueError(f"labels must be 1-D [samples], got shape {lab.shape}")
    if lab.dtype not in LABEL_DTYPES:
        raise TypeError(f"labels has dtype {lab.dtype}; supported: int32, int64")
    if samples is not None and lab.shape[0] != samples:
        raise ValueError(f"labels has {lab.shape[0]} entries but {ref.name} has {samples} samples (rows)")
    same_lib = lab.lib == ref.lib or {lab.lib, ref.lib} == {"numpy"}
    if lab.where != ref.where or not same_lib:
        raise ValueError(
            f"labels is a {lab.lib} array on {lab.where} but {ref.name} is a {ref.lib} array on "
            f"{ref.where}; pass both from the same library and device"
        )


def label_range(labels: Any, num_classes: int) -> None:
    """Raises naming the first label outside [0, num_classes). GPU arrays are read back to the host,
    so GPU kernels that check labels in their own pass (``checks_labels``) skip this."""
    x = to_numpy(labels)
    if x.size == 0 or (x.min() >= 0 and x.max() < num_classes):
        return
    i = int(np.flatnonzero((x < 0) | (x >= num_classes))[0])
    raise ValueError(f"labels[{i}] = {int(x[i])} is outside [0, num_classes={num_classes})")


def flag_value(value: Any, name: str) -> bool:
    """A true/false option: a string such as 'no' would otherwise silently mean True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def threads_value(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be a positive int or None, got {threads!r}")
    if threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return int(threads)


def samples_value(samples: Any) -> int:
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)):
        raise TypeError(f"samples must be an int, got {samples!r}")
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples!r}")
    return int(samples)


def same_masks(a: Array, b: Array) -> None:
    """Two mask sets of one layer: the same shape, library and device."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{a.name} has shape {tuple(a.shape)} but {b.name} has {tuple(b.shape)}; pass one layer's")
    if a.lib != b.lib or a.where != b.where:
        raise ValueError(
            f"{b.name} is a {b.lib} array on {b.where} but {a.name} is a {a.lib} array on {a.where}; pass both "
            "from the same library and device"
        )


def packed_for(p: Array, samples: int, given_by: str = "samples") -> None:
    """Packed masks of ``samples`` samples (their number told by ``given_by``: the labels, or samples itself)."""
    if len(p.shape) != 2:
        raise ValueError(f"{p.name} must be 2-D [nodes, bytes], got shape {p.shape}")
    if p.dtype != "uint8":
        raise TypeError(f"{p.name} has dtype {p.dtype}; expected uint8 (the output of pack_masks)")
    want = -(-samples // 64) * 8
    if p.shape[1] != want:
        raise ValueError(
            f"{p.name} has {p.shape[1]} bytes per node but {samples} {given_by} need ceil({samples} / 64) * 8 = {want}"
        )


def out_for(o: Array, num_classes: int, nodes: int, ref: Array) -> None:
    """An accumulator for class_counts: int32 or int64 ``[num_classes, nodes]``, C-contiguous, writable,
    same library and device as ``ref``; the kernels add into it in place."""
    if o.lib != ref.lib or o.where != ref.where:
        raise ValueError(
            f"out is a {o.lib} array on {o.where} but {ref.name} is a {ref.lib} array on "
            f"{ref.where}; pass both from the same library and device"
        )
    if o.dtype not in OUT_DTYPES:
        raise TypeError(f"out has dtype {o.dtype}; supported: int32, int64")
    if tuple(o.shape) != (num_classes, nodes):
        raise ValueError(
            f"out has shape {tuple(o.shape)} but the counts are [num_classes, nodes] = {(num_classes, nodes)}"
        )
    if not o.contiguous:
        x = o.obj
        strides = tuple(x.strides) if o.lib != "torch" else tuple(st * x.element_size() for st in x.stride())
        raise ValueError(f"out must be C-contiguous and aligned, got byte strides {strides} for shape {tuple(o.shape)}")
    if not o.writable:
        raise ValueError("out is read-only (flags.writeable is False); pass a writable array")


def check_strategy(strategy: str) -> str:
    if strategy not in ("auto", "direct", "wide", "sorted"):
        raise ValueError(f"strategy must be 'auto', 'direct', 'wide' or 'sorted', got {strategy!r}")
    return strategy
