"""count_and_pack: :func:`class_counts` and :func:`pack_masks` of the same activations from one read of
them, for callers that want both (a measurement that keeps the sample sets and the per-class counts)."""

from __future__ import annotations

from typing import Any

from . import _arrays, _validate
from ._accumulator import CheckedLabels
from ._dispatch import select

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray


def count_and_pack(
    acts: Array,
    labels: Array,
    num_classes: int,
    *,
    out: Array | None = None,
    backend: str | None = None,
    check_finite: bool = True,
    threads: int | None = None,
) -> tuple[Array, Array]:
    """``(class_counts(acts, labels, num_classes, out=out), pack_masks(acts))`` with the activations read once
    by the CPU backends: the same arguments, checks, errors and results as those two calls (``out``, when
    given, receives the counts in place and is the first item returned). On a GPU, where no backend fuses the
    two, ``backend=None`` makes the two calls; a named backend that does not implement the kernel is refused.
    ``labels`` may be a :class:`CheckedLabels` of the same ``num_classes``, whose values are not checked again.
    """
    from . import _labels, _nonfinite, _options, class_counts, pack_masks

    a = _arrays.describe(acts, "acts")
    kind = _validate.acts_kind(a)
    n = _validate.num_classes_value(num_classes)
    checked = type(labels) is CheckedLabels
    if checked:
        if labels.num_classes != n:
            raise ValueError(f"labels were checked for num_classes={labels.num_classes}, got num_classes={n}")
        labels = labels.of_library(a.lib)
    lab = _arrays.describe(labels, "labels")
    _validate.labels_for(lab, a.shape[0], a)
    o = None
    if out is not None:
        o = _arrays.describe(out, "out")
        _validate.out_for(o, n, a.shape[1], a)
    else:
        _validate.counts_fit(n, a.shape[1], a.device)
    check_finite = _validate.flag_value(check_finite, "check_finite")
    threads = _validate.threads_value(threads)
    if backend is None and a.device != "cpu":
        counts = class_counts(acts, labels, n, out=out, check_finite=check_finite, threads=threads)
        return counts, pack_masks(acts, check_finite=check_finite, threads=threads)
    b, fn = select("count_and_pack", a.device, backend)
    if not checked:
        _validate.label_range(lab.obj, n)
    x = _arrays.to_native(_arrays.bits(a), b.native)
    if b.native == "numpy":
        x = x.view(kind.storage)
    # As in class_counts: the counts are added into `out` itself, except by the host-only reference backend
    # on GPU data, whose fresh table is added on the device afterwards.
    aliased = o is not None and (b.native != "numpy" or a.device == "cpu")
    counts, packed, bad = fn(
        x,
        kind,
        _labels(lab, b.native),
        n,
        check_finite=check_finite,
        out=_arrays.to_native(o.obj, b.native) if o is not None and aliased else None,
        **_options(b, a, threads),
    )
    if bad:
        raise _nonfinite("count_and_pack")
    packed = _arrays.like(packed, a)
    if o is None:
        return _arrays.like(counts, a), packed
    if not aliased:
        _arrays.add_into(o, _arrays.like(counts, a))
    return out, packed
