"""The public metric kernels (re-exported by :mod:`nnphases.kernels`): sample-set
metrics of one layer from its per-class counts, on the backend the caller picks.

Host counts go to the CPU backends. GPU counts (torch CUDA tensors, CuPy arrays) stay
on their device: the GPU backends (``cuda``, ``cupy``) read them in place, check every
count's range in the same pass and send back only the layer summaries and that check's
result; the boundary checks shapes and dtypes there without copying the table (the
class sizes, one integer per class, are read on the host). The host-only ``reference``
backend copies GPU counts to the host."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from . import _arrays, _validate
from ._dispatch import select
from .metrics import LayerMetrics, NodeMetrics, _neg_xlogx_ratio
from .metrics import _validate as _validate_counts

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray

NODE_FIELDS = (
    "class_fraction",
    "fraction",
    "predictability",
    "informativeness",
    "h_z_given_y",
    "h_y_given_z",
    "dead",
    "always_active",
)
# Count dtypes the GPU kernels read as they are, with their C types, in the order of their codes (MetricsCount
# in csrc/cuda/node_metrics.h); other integer dtypes are widened to int64 on the device first.
DEVICE_COUNT_TYPES = {
    "int32": "int",
    "int64": "long long",
    "uint8": "unsigned char",
    "uint16": "unsigned short",
    "uint32": "unsigned int",
}
_INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


@dataclass(frozen=True)
class DevicePlan:
    """What the GPU kernels take from the host besides the counts: the class sizes and the scalars
    nnphases.kernels.metrics derives from them alone, computed here with its own NumPy expressions."""

    class_sizes: np.ndarray  # int64 [C], validated
    total: int  # |S|
    present: int  # classes with samples
    h_y: float
    log_k: float  # log(present); NaN when fewer than two
    # Whether NumPy adds each class's two entropy terms together before adding them up (it does when it
    # tabulates them: metrics.node_metrics_np's rule), so the device adds them in the same order.
    pair_terms: bool


def device_plan(sizes: np.ndarray, nodes: int) -> DevicePlan:
    sizes = np.ascontiguousarray(sizes, np.int64)  # uploaded as one dense buffer
    present = sizes > 0
    k = int(np.count_nonzero(present))
    total = int(sizes.sum())
    sizes_p = sizes[present]
    pair = int((np.unique(sizes_p) + 1).sum()) <= k * nodes
    h_y = float(_neg_xlogx_ratio(sizes_p.astype(np.float64), float(total)).sum() / total)
    return DevicePlan(sizes, total, k, h_y, math.log(k) if k > 1 else math.nan, pair)


def _metric_inputs(counts: Array, class_sizes: Array) -> tuple[Any, Any]:
    """Host copies of GPU tables, then nnphases.kernels.metrics' checks (shapes, integer dtypes, ranges)."""
    return _validate_counts(
        _arrays.to_numpy(_arrays.describe(counts, "counts").obj),
        _arrays.to_numpy(_arrays.describe(class_sizes, "class_sizes").obj),
    )


def _checks_without_values(a: _arrays.Array, class_sizes: Array) -> np.ndarray:
    """nnphases.kernels.metrics' checks of counts that need no look at their values (the native kernels check the
    ranges where they read them), with its messages, and the validated class sizes on the host (from any
    library or device)."""
    if len(a.shape) != 2:
        raise ValueError(f"counts must be 2-D, got shape {a.shape}")
    if a.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"counts must have an integer dtype (int64 or int32), got {a.dtype}")
    sizes = (
        class_sizes
        if isinstance(class_sizes, np.ndarray)
        else _arrays.to_numpy(_arrays.describe(class_sizes, "class_sizes").obj)
    )
    if sizes.dtype == np.int64 and sizes.ndim == 1:
        return _valid_sizes(a.shape[0], sizes.tobytes())  # a run passes the same sizes for every layer
    return _validate_sizes(a.shape[0], sizes)


def _validate_sizes(rows: int, sizes: np.ndarray) -> np.ndarray:
    # A table with the counts' rows and no nodes: _validate checks the sizes alone, with its own messages.
    return _validate_counts(np.zeros((rows, 0), np.int64), sizes)[1]


@functools.lru_cache(maxsize=32)
def _valid_sizes(rows: int, sizes_bytes: bytes) -> np.ndarray:
    """The validated sizes, read-only, once per set of sizes (an invalid set raises and is not kept)."""
    sizes = _validate_sizes(rows, np.frombuffer(sizes_bytes, np.int64)).copy()
    sizes.flags.writeable = False
    return sizes


def _device_counts(a: _arrays.Array) -> Any:
    """The counts C-contiguous in a dtype the kernels read, in the caller's library and on its device."""
    x = _arrays.dense(a, np.dtype(a.dtype).itemsize)
    if a.dtype in DEVICE_COUNT_TYPES:
        return x
    # uint64 values above the int64 range wrap negative here, so the kernel flags them and the host check
    # names them with nnphases.kernels.metrics' message.
    if a.lib == "torch":
        import torch

        return x.to(torch.int64)
    return x.astype("int64")


def _raise_bad_counts(counts: Array, sizes: np.ndarray, bad: int) -> None:
    """The device found counts outside [0, class_sizes[c]]: the host path's ValueError, from a host copy."""
    _validate_counts(_arrays.to_numpy(counts), sizes)
    raise RuntimeError(
        f"the GPU kernel found {bad} counts outside [0, class_sizes[c]] but a host copy of the "
        "counts has none; the device memory may have changed during the call"
    )


def _layer(result: np.ndarray, nodes: int) -> LayerMetrics:
    """From the kernels' result: sums of f, p, u; counts of those, of dead and of always-active nodes."""
    sums, counts = result[:3].tolist(), [int(v) for v in result[3:8].tolist()]
    f, p, u = (s / k if k else math.nan for s, k in zip(sums, counts[:3], strict=True))
    return LayerMetrics(
        fraction=f, predictability=p, informativeness=u, nodes=int(nodes), dead=counts[3], always_active=counts[4]
    )


def _on_device(kernel: str, a: _arrays.Array, class_sizes: Array, backend: str | None, threads: int | None) -> Any:
    """node_metrics or layer_metrics of GPU counts (described as ``a``): (NodeMetrics | LayerMetrics)."""
    counts = a.obj
    sizes = _checks_without_values(a, class_sizes)
    b, fn = select(kernel, a.device, backend)
    if b.native == "numpy":  # the host-only reference: copies, checks and computes on the host
        result = fn(*_metric_inputs(counts, class_sizes), threads=threads)
        if kernel == "layer_metrics":
            return result
        # np.array: writable copies (torch warns on read-only ones), then to the counts' device.
        return NodeMetrics(*(_arrays.like(np.array(getattr(result, name)), a) for name in NODE_FIELDS))
    plan = device_plan(sizes, a.shape[1])
    x = _arrays.to_native(_device_counts(a), b.native)
    opts = {"stream": _arrays.current_stream(a), "device": a.device_index}
    if kernel == "layer_metrics":
        result = fn(x, plan, **opts)
        if result[8]:
            _raise_bad_counts(counts, sizes, int(result[8]))
        return _layer(result, a.shape[1])
    fields, result = fn(x, plan, **opts)
    if result[8]:
        _raise_bad_counts(counts, sizes, int(result[8]))
    return NodeMetrics(*(_arrays.like(fields[name], a) for name in NODE_FIELDS))


def _nodes_on_host(a: _arrays.Array, class_sizes: Array, backend: str | None, threads: int | None) -> NodeMetrics:
    """node_metrics of host counts (described as ``a``). The native backends check every count's range where
    they read it (``checks_counts``), so the boundary checks only shapes, dtypes and sizes and the table is
    read once; the others get counts validated here."""
    _, fn = select("node_metrics", "cpu", backend)
    if getattr(fn, "checks_counts", False):
        sizes = _checks_without_values(a, class_sizes)
        return fn(_arrays.to_numpy(a.obj), sizes, threads=threads)
    return fn(*_metric_inputs(a.obj, class_sizes), threads=threads)


def _named(e: Exception, index: int | None) -> Exception:
    """The error of one table of a list, naming it (``counts[i]: ...``); as it is for a single table."""
    return e if index is None else type(e)(f"counts[{index}]: {e}")


def _layers_on_host(
    arrays: list[_arrays.Array], class_sizes: Array, backend: str | None, threads: int | None, listed: bool
) -> list[LayerMetrics]:
    """layer_metrics of host tables, all in one backend call (the ``cpp`` backend reads them with one team of
    threads). ``listed``: the caller passed a list, so errors name the table."""
    _, fn = select("layer_metrics", "cpu", backend)
    native = getattr(fn, "checks_counts", False)
    if native:  # the sizes on the host once, for every table's check
        class_sizes = _arrays.to_numpy(_arrays.describe(class_sizes, "class_sizes").obj)
    tables, sizes = [], None
    for i, a in enumerate(arrays):
        try:
            if native:
                sizes = _checks_without_values(a, class_sizes)
                tables.append(_arrays.to_numpy(a.obj))
            else:
                table, sizes = _metric_inputs(a.obj, class_sizes)
                tables.append(table)
        except (ValueError, TypeError) as e:
            raise _named(e, i if listed else None) from None
    try:
        return fn(tables, sizes, threads=threads)
    except ValueError as e:  # a count out of range, found by the kernel in table e.table
        table = getattr(e, "table", None)
        if table is None:
            raise
        raise _named(e, table if listed else None) from None


def node_metrics(
    counts: Array, class_sizes: Array, *, backend: str | None = None, threads: int | None = None
) -> NodeMetrics:
    """Per-node sample-set metrics (float64; see :mod:`nnphases.kernels.metrics`) from ``counts`` int ``[C, N]``
    and ``class_sizes`` int ``[C]``.

    Host counts are computed on the host; the fields are read-only NumPy arrays. The native CPU backends do
    the arithmetic of :func:`nnphases.kernels.metrics.node_metrics_np` in the same order in one pass: fractions and
    flags are identical, the entropies, ``p`` and ``u`` within ``8 * eps * max(1, log C)`` (only the
    logarithms can differ; tests/test_metric_kernels.py), NaN on the same nodes. ``threads`` as in
    :func:`class_counts`.

    GPU counts (torch CUDA tensor or CuPy array; ``class_sizes`` from any library or device) are computed on
    their device with the same arithmetic and the same agreement (tests/test_metric_kernels_gpu.py); the
    fields are then arrays of the counts' library on the counts' device (``dead`` and ``always_active``
    bool), writable there, as they are for the ``reference`` backend on GPU counts. Counts outside
    ``[0, class_sizes[c]]`` are found on the device and raise the host path's ``ValueError``; the call
    synchronises once, to read that check."""
    threads = _validate.threads_value(threads)
    a = _arrays.describe(counts, "counts")
    if a.device != "cpu":
        return _on_device("node_metrics", a, class_sizes, backend, threads)
    return _nodes_on_host(a, class_sizes, backend, threads)


@overload
def layer_metrics(
    counts: Sequence[Array], class_sizes: Array, *, backend: str | None = None, threads: int | None = None
) -> list[LayerMetrics]: ...


@overload
def layer_metrics(
    counts: Array, class_sizes: Array, *, backend: str | None = None, threads: int | None = None
) -> LayerMetrics: ...


def layer_metrics(counts: Any, class_sizes: Array, *, backend: str | None = None, threads: int | None = None) -> Any:
    """Layer means of :func:`node_metrics` with the spec's exclusions (dead nodes out of ``f``; dead and
    always-active nodes out of ``p`` and ``u``); the native backends compute them in the same pass without
    building per-node arrays, with compensated sums. On GPU counts only the summaries (nine numbers) cross
    to the host; the per-block sums are combined in a fixed order, so the result does not change from run
    to run.

    ``counts`` may also be a list or tuple of tables measured against the same ``class_sizes`` (a
    checkpoint's layers, any widths and count dtypes, all on one device): the result is then a list, one
    :class:`LayerMetrics` per table, equal to what separate calls give. The ``cpp`` backend reads all the
    host tables in one call with one team of threads, which on a checkpoint of many small layers costs much
    less than a call per layer; errors name the table (``counts[i]: ...``)."""
    threads = _validate.threads_value(threads)
    if isinstance(counts, (list, tuple)):
        arrays = [_arrays.describe(c, f"counts[{i}]") for i, c in enumerate(counts)]
        if not arrays:
            return []
        where = {a.where for a in arrays}
        if len(where) > 1:
            raise ValueError(f"counts must all be on one device, got tables on {', '.join(sorted(where))}")
        if arrays[0].device == "cpu":
            return _layers_on_host(arrays, class_sizes, backend, threads, True)
        out = []
        for i, a in enumerate(arrays):
            try:
                out.append(_on_device("layer_metrics", a, class_sizes, backend, threads))
            except (ValueError, TypeError) as e:
                raise _named(e, i) from None
        return out
    a = _arrays.describe(counts, "counts")
    if a.device != "cpu":
        return _on_device("layer_metrics", a, class_sizes, backend, threads)
    return _layers_on_host([a], class_sizes, backend, threads, False)[0]
