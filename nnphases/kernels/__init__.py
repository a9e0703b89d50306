"""Public kernels of nnphases: per-class counts of active ReLU nodes, bit-packed
activation masks, and the sample-set metrics computed from the counts.

Every kernel takes NumPy arrays, torch tensors or CuPy arrays and returns the same
kind of array on the same device, crossing by DLPack without copies. ``backend``
picks an implementation (see :data:`BACKENDS`); ``None`` takes the first that
works for the input's device, in the order of :data:`AUTO_ORDER`. GPU work runs
on the caller's current stream (torch's for tensors, CuPy's for CuPy arrays).
"""

from __future__ import annotations

from typing import Any

from . import _arrays, _validate
from ._dispatch import AUTO_ORDER, BACKENDS, BackendError, refusal, report, select
from ._metric_kernels import layer_metrics, node_metrics
from ._validate import NonFiniteError
from .metrics import LayerMetrics, NodeMetrics

__all__ = [
    "class_counts",
    "ClassCounts",
    "CheckedLabels",
    "pack_masks",
    "count_and_pack",
    "packed_class_counts",
    "mask_overlap",
    "sample_popcounts",
    "coactivation",
    "sample_agreement",
    "node_metrics",
    "layer_metrics",
    "NodeMetrics",
    "LayerMetrics",
    "BACKENDS",
    "AUTO_ORDER",
    "BackendError",
    "NonFiniteError",
    "backends",
    "refusal",
]

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray


def _options(backend: Any, ref: _arrays.Array, threads: int | None, **cpu: Any) -> dict[str, Any]:
    if backend.native == "numpy":
        return {"threads": threads, **cpu}
    return {"stream": _arrays.current_stream(ref), "device": ref.device_index}


def _labels(lab: _arrays.Array, native: str) -> Any:
    """Labels, contiguous and aligned, in the backend's native type. CPU kernels take int32 (the values were
    range-checked first); GPU kernels read int32 or int64 as given and check the range themselves, before
    any narrowing."""
    x = lab.obj
    if lab.lib == "torch":
        import torch

        x = x.detach()
        x = x.contiguous() if lab.indexable else x.clone(memory_format=torch.contiguous_format)
    elif lab.lib == "cupy":
        import cupy

        x = cupy.ascontiguousarray(x) if lab.indexable else x.copy(order="C")
    if native == "numpy":
        import numpy as np

        return _arrays.dense_host(_arrays.to_numpy(x), np.int32)
    return _arrays.to_native(x, native)


def _nonfinite(kernel: str) -> NonFiniteError:
    return NonFiniteError(
        f"acts contains NaN or infinite values ({kernel}); a NaN would silently count as "
        "inactive. Fix the model, or pass check_finite=False to count them as z > 0 does"
    )


def class_counts(
    acts: Array,
    labels: Array,
    num_classes: int,
    *,
    out: Array | None = None,
    backend: str | None = None,
    check_finite: bool = True,
    check_labels: bool = True,
    threads: int | None = None,
    strategy: str = "auto",
) -> Array:
    """Per-class counts of active samples: int64 ``[num_classes, nodes]`` with ``out[c, d]`` the number of
    samples ``n`` with ``labels[n] == c`` and ``acts[n, d] > 0``. ``acts`` is ``[samples, nodes]`` bool,
    float16, bfloat16, float32 or float64, any strides (rows with adjacent nodes are read in place, others
    copied once); ``labels`` is ``[samples]`` int32 or int64 in ``[0, num_classes)``, same library and
    device as ``acts``. With ``out`` (int32 or int64 ``[num_classes, nodes]``, C-contiguous, writable, same
    library and device as ``acts``) the counts are added into it in place and ``out`` is returned, so
    batches accumulate without a temporary table; an int32 ``out`` must stay below 2**31 in every entry
    (its sum is not checked: use it only for sets of fewer than 2**31 samples). NaN or infinite activations
    raise :class:`NonFiniteError` (detected in the same pass) unless ``check_finite=False``, when they count
    as ``z > 0`` does (+inf active, NaN not); after that error a given ``out`` may hold part of the call's
    counts. Labels out of range raise ``ValueError`` naming the first one; GPU backends find them in their
    own counting-sort pass, so a GPU call synchronises once, to read its error flags. With
    ``check_finite=False`` and ``check_labels=False`` a GPU call does not synchronise at all (for labels
    validated once, e.g. a fixed evaluation set): samples with out-of-range labels are then left out, never
    used as an index; on the CPU labels are always checked. ``threads`` (CPU backends) defaults to one per
    core this process may use (:func:`nnphases.kernels.cores.usable_cores`); ``strategy`` ('auto', 'direct',
    'wide', 'sorted') picks the CPU counting layout and exists for tests and benchmarks: 'auto' takes 'sorted' when
    a thread's 16-bit table would not fit in cache, else 'wide' (rows added straight into the output) when the
    call has fewer than 8 rows per class its labels name, else 'direct' (16-bit counters per class, flushed).
    """
    a = _arrays.describe(acts, "acts")
    kind = _validate.acts_kind(a)
    n = _validate.num_classes_value(num_classes)
    lab = _arrays.describe(labels, "labels")
    _validate.labels_for(lab, a.shape[0], a)
    o = None
    if out is not None:
        o = _arrays.describe(out, "out")
        _validate.out_for(o, n, a.shape[1], a)
    else:
        _validate.counts_fit(n, a.shape[1], a.device)
    check_finite = _validate.flag_value(check_finite, "check_finite")
    check_labels = _validate.flag_value(check_labels, "check_labels")
    threads = _validate.threads_value(threads)
    _validate.check_strategy(strategy)
    b, fn = select("class_counts", a.device, backend)
    if not getattr(fn, "checks_labels", False):
        _validate.label_range(lab.obj, n)
    x = _arrays.to_native(_arrays.bits(a), b.native)
    if b.native == "numpy":
        x = x.view(kind.storage)
    opts = (
        _options(b, a, threads, strategy=strategy)
        if b.native == "numpy"
        else {**_options(b, a, threads), "check_labels": check_labels}
    )
    # The backend adds into `out` in its native type (a view, never a copy), except the host-only
    # reference backend on GPU data, whose fresh table is added on the device afterwards.
    aliased = o is not None and (b.native != "numpy" or a.device == "cpu")
    counts, bad = fn(
        x,
        kind,
        _labels(lab, b.native),
        n,
        check_finite=check_finite,
        out=_arrays.to_native(o.obj, b.native) if o is not None and aliased else None,
        **opts,
    )
    if bad:
        raise _nonfinite("class_counts")
    if o is None:
        return _arrays.like(counts, a)
    if not aliased:
        _arrays.add_into(o, _arrays.like(counts, a))
    return out


def pack_masks(
    acts: Array, *, backend: str | None = None, check_finite: bool = True, threads: int | None = None
) -> Array:
    """Bit-packed activation masks along samples: uint8 ``[nodes, ceil(samples / 64) * 8]`` where bit
    ``s % 8`` (least significant first) of byte ``s // 8`` in row ``d`` is ``acts[s, d] > 0``; padding bits
    are zero, and each row is a whole number of little-endian 64-bit words, so a node's sample set is one
    contiguous bit row. ``acts`` and ``check_finite`` as in :func:`class_counts`.
    """
    a = _arrays.describe(acts, "acts")
    kind = _validate.acts_kind(a)
    check_finite = _validate.flag_value(check_finite, "check_finite")
    threads = _validate.threads_value(threads)
    b, fn = select("pack_masks", a.device, backend)
    x = _arrays.to_native(_arrays.bits(a), b.native)
    if b.native == "numpy":
        x = x.view(kind.storage)
    out, bad = fn(x, kind, check_finite=check_finite, **_options(b, a, threads))
    if bad:
        raise _nonfinite("pack_masks")
    return _arrays.like(out, a)


def packed_class_counts(
    packed: Array, labels: Array, num_classes: int, *, backend: str | None = None, threads: int | None = None
) -> Array:
    """:func:`class_counts` from masks made by :func:`pack_masks`: int64 ``[num_classes, nodes]`` from
    ``packed`` uint8 ``[nodes, ceil(samples / 64) * 8]`` and the ``labels`` of its samples. Padding bits are
    ignored. GPU backends read the labels on the host once to build the class segments.
    """
    p = _arrays.describe(packed, "packed")
    n = _validate.num_classes_value(num_classes)
    lab = _arrays.describe(labels, "labels")
    _validate.labels_for(lab, None, p)  # the labels give the sample count the packed width must match
    _validate.packed_for(p, lab.shape[0], "labels")
    _validate.counts_fit(n, p.shape[0], p.device)
    threads = _validate.threads_value(threads)
    b, fn = select("packed_class_counts", p.device, backend)
    if not getattr(fn, "checks_labels", False):
        _validate.label_range(lab.obj, n)
    x = _arrays.to_native(_arrays.dense(p, 8), b.native)  # every kernel reads the rows as 64-bit words
    opts = _options(b, p, threads)
    return _arrays.like(fn(x, _labels(lab, b.native), n, **opts), p)


def _packed_rows(packed: Array, samples: int, name: str = "packed") -> tuple[_arrays.Array, int]:
    """One layer's packed masks of ``samples`` samples (as :func:`pack_masks` makes them), described and checked."""
    p = _arrays.describe(packed, name)
    n_samples = _validate.samples_value(samples)
    _validate.packed_for(p, n_samples)
    return p, n_samples


def _on_rows(kernel: str, p: _arrays.Array, backend: str | None, threads: Any, *args: Any) -> Array:
    """``kernel`` on ``p``'s rows read as 64-bit words, its result as the caller's array: GPU backends on the
    caller's device and stream, host backends on a host copy (the reference also for GPU inputs, when it is named
    or no GPU backend runs here)."""
    threads = _validate.threads_value(threads)
    b, fn = select(kernel, p.device, backend)
    x = _arrays.to_native(_arrays.dense(p, 8), b.native)
    return _arrays.like(fn(x, *args, **_options(b, p, threads)), p)


def mask_overlap(
    a: Array,
    b: Array,
    samples: int,
    *,
    labels: Array | None = None,
    num_classes: int | None = None,
    backend: str | None = None,
    threads: int | None = None,
) -> Array:
    """Per node of one layer, how many samples two mask sets hold in both and in either.

    ``a``, ``b``: uint8 ``[nodes, ceil(samples / 64) * 8]`` as :func:`pack_masks` makes them (one layer at two
    checkpoints, the same samples in the same order); padding bits are ignored. Returns int64 ``[2, nodes]``:
    row 0 is ``|A ∩ B|``, row 1 ``|A ∪ B|``; with ``labels`` (and ``num_classes``), int64
    ``[2, num_classes, nodes]``, the same per class. A node's Jaccard churn is ``1 - |A ∩ B| / |A ∪ B|``
    (0 when both sets are empty). GPU backends read the labels on the host once to build the class segments.
    """
    pa, n_samples = _packed_rows(a, samples, "a")
    pb, _ = _packed_rows(b, samples, "b")
    _validate.same_masks(pa, pb)
    threads = _validate.threads_value(threads)
    host_labels = None
    if labels is None:
        if num_classes is not None:
            raise ValueError(f"num_classes={num_classes!r} is given without labels; pass labels too, or neither")
        n = 1
    else:
        if num_classes is None:
            raise ValueError("labels are given without num_classes; pass num_classes too")
        n = _validate.num_classes_value(num_classes)
        lab = _arrays.describe(labels, "labels")
        _validate.labels_for(lab, n_samples, pa)
        _validate.label_range(lab.obj, n)
        host_labels = _labels(lab, "numpy")
    _validate.counts_fit(n, pa.shape[0], pa.device)
    bk, fn = select("mask_overlap", pa.device, backend)
    xa = _arrays.to_native(_arrays.dense(pa, 8), bk.native)
    xb = _arrays.to_native(_arrays.dense(pb, 8), bk.native)
    out = fn(xa, xb, n_samples, host_labels, n, **_options(bk, pa, threads))
    return _arrays.like(out if labels is not None else out[:, 0], pa)


def sample_popcounts(packed: Array, samples: int, *, backend: str | None = None, threads: int | None = None) -> Array:
    """How many nodes of one layer each sample activates: int64 ``[samples]`` from ``packed`` uint8
    ``[nodes, ceil(samples / 64) * 8]`` as :func:`pack_masks` makes it; padding bits are ignored."""
    p, n_samples = _packed_rows(packed, samples)
    return _on_rows("sample_popcounts", p, backend, threads, n_samples)


def coactivation(packed: Array, samples: int, *, backend: str | None = None, threads: int | None = None) -> Array:
    """How many samples each pair of nodes of one layer has in common: int64 ``[nodes, nodes]``, entry
    ``[i, j] = |S_i ∩ S_j|`` (the diagonal holds each node's sample-set size), from ``packed`` uint8
    ``[nodes, ceil(samples / 64) * 8]`` as :func:`pack_masks` makes it; padding bits are ignored. The result
    takes ``nodes² x 8`` bytes; the kernels need no more than that and a tile per thread (per block of 256
    threads on the GPU, in shared memory)."""
    p, n_samples = _packed_rows(packed, samples)
    return _on_rows("coactivation", p, backend, threads, n_samples)


def sample_agreement(
    packed: Array, samples: int, chosen: Array, *, backend: str | None = None, threads: int | None = None
) -> Array:
    """Hamming distances between chosen samples' binary codes across one layer's nodes: int64 ``[m, m]``, entry
    ``[i, j]`` the number of nodes active for exactly one of samples ``chosen[i]`` and ``chosen[j]``. ``packed``:
    uint8 ``[nodes, ceil(samples / 64) * 8]`` as :func:`pack_masks` makes it; ``chosen``: ``m`` sample indices
    in ``[0, samples)`` (int32 or int64, 1-D). The codes are gathered from the stored layout, never unpacked to
    bytes. Its agreement matrix ``nodes - distance`` is the binary-code kernel whose log-determinant scores a
    network at initialisation (``nnphases.analysis.dynamics.code_score``). ``chosen`` is read on the host once,
    to check its range; GPU backends gather the codes on the device (``m x ceil(nodes / 64)`` words)."""
    import numpy as np

    p, n_samples = _packed_rows(packed, samples)
    c = _arrays.describe(chosen, "chosen")
    if len(c.shape) != 1:
        raise ValueError(f"chosen must be 1-D [m] sample indices, got shape {tuple(c.shape)}")
    if c.dtype not in ("int32", "int64"):
        raise TypeError(f"chosen has dtype {c.dtype}; supported: int32, int64")
    idx = np.ascontiguousarray(_arrays.to_numpy(c.obj), dtype=np.int64)
    bad = np.flatnonzero((idx < 0) | (idx >= n_samples))
    if bad.size:
        raise ValueError(f"chosen[{int(bad[0])}] = {int(idx[bad[0]])} is outside [0, samples={n_samples})")
    return _on_rows("sample_agreement", p, backend, threads, idx)


from ._accumulator import CheckedLabels, ClassCounts  # noqa: E402  (after class_counts, which it calls)
from ._fused import count_and_pack  # noqa: E402  (after the helpers it calls)


def backends() -> list[tuple[str, str, str | None]]:
    """(name, device, reason it is unavailable or None) for every backend on this machine."""
    return report()
