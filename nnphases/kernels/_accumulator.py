"""Counts summed over many batches into one table: :func:`class_counts` with ``out``, with what does not
change from batch to batch (the table, the backend, the options, the activations' layout) validated once.

An evaluation pass calls ``class_counts`` once per ReLU site and batch: on a 9x320 MLP, 108 calls of about
0.3 MB each, where the boundary's checks and conversions cost more than the kernel. :class:`ClassCounts`
validates everything on a batch's first call (through ``class_counts`` itself) and remembers the layout it
accepted; a later batch with the same layout on the host goes straight to the backend's kernel after the
checks that keep native code safe (shape, dtype, contiguity, alignment, label count and range). Anything
else (another layout, GPU arrays, a backend that validates nothing natively) takes the public path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _arrays, _validate
from ._arrays import _SIGNED_OF_SIZE
from ._dispatch import select
from .cores import usable_cores

Array = Any  # numpy.ndarray | torch.Tensor | cupy.ndarray


# The last torch labels checked, with their version, address, length and class count, a copy of their content, and
# their checked int32 copy: every site of a batch is counted with the same labels. The tensor is held, so the entry
# names it alone.
_checked_labels: tuple[Any, tuple[int, ...] | None, Any, Any] = (None, None, None, None)
_NUMPY_TORCH: set[Any] = set()  # torch dtypes with a NumPy twin, filled on first use of torch


def _numpy_twins() -> set[Any]:
    import torch

    if not _NUMPY_TORCH:
        _NUMPY_TORCH.update((torch.bool, torch.float16, torch.float32, torch.float64))
    return _NUMPY_TORCH


@dataclass(frozen=True)
class _Layout:
    """An accepted host layout: activations of this type and dtype, ``nodes`` wide, rows dense; labels of this
    type and dtype."""

    acts_type: type[Any]  # numpy.ndarray or torch.Tensor
    acts_dtype: Any
    nodes: int
    itemsize: int
    labels_type: type[Any]
    labels_dtype: Any
    signed: Any  # torch: the signed integer dtype of the width, for dtypes NumPy lacks (bfloat16); else None
    storage: np.dtype  # the kind's storage dtype
    kind: Any
    fn: Callable[..., Any]
    out: np.ndarray  # the table as the backend writes it (a view of the caller's)
    threads: int  # resolved once: finding the usable cores costs a system call


class CheckedLabels:
    """Host labels checked once for ``num_classes`` (1-D int32 or int64, every value in ``[0, num_classes)``) and
    kept as the read-only int32 copy that native code indexes with. Hand the same object to
    :meth:`ClassCounts.add` for every site of a batch: the labels are then checked and converted once per batch
    rather than once per site (a copy cannot change under the check, so none is compared again)."""

    __slots__ = ("num_classes", "values")

    def __init__(self, labels: Array, num_classes: int) -> None:
        self.num_classes = _validate.num_classes_value(num_classes)
        lab = _arrays.describe(labels, "labels")
        if lab.device != "cpu":
            raise ValueError(f"labels must be on the host for CheckedLabels, got a {lab.lib} array on {lab.where}")
        _validate.labels_for(lab, None, lab)
        x = _arrays.to_numpy(labels)
        _validate.label_range(x, self.num_classes)
        values = np.array(x, dtype=np.int32)
        values.flags.writeable = False
        self.values = values

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def of_library(self, lib: str) -> Array:
        """The values as an array of ``lib`` ("torch" or "numpy"), sharing their memory."""
        if lib != "torch":
            return self.values
        import warnings

        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only memory: the kernels only read labels
            return torch.from_numpy(self.values)


class ClassCounts:
    """Per-class counts of active samples summed over batches into ``out`` (int32 or int64 ``[num_classes,
    nodes]``, C-contiguous, writable; NumPy array or torch tensor, on the host or a GPU).

    ``add(acts, labels)`` adds ``class_counts(acts, labels, num_classes)`` into ``out``: the same counts, the
    same errors, as :func:`class_counts` called with ``out=out`` and this object's options, which are checked
    here once. Host batches that keep the layout of the first one (library, dtype, width, dense rows; labels
    of one dtype) skip the boundary's repeated work: the Recorder counts every ReLU site of every batch this
    way. Labels are range-checked on every batch, on the host once per labels tensor and version, so the sites
    of one batch share one check."""

    def __init__(
        self,
        out: Array,
        num_classes: int,
        *,
        backend: str | None = None,
        check_finite: bool = True,
        check_labels: bool = True,
        threads: int | None = None,
        strategy: str = "auto",
    ) -> None:
        self.num_classes = _validate.num_classes_value(num_classes)
        o = _arrays.describe(out, "out")
        if len(o.shape) != 2:
            raise ValueError(f"out must be 2-D [num_classes, nodes], got shape {tuple(o.shape)}")
        _validate.out_for(o, self.num_classes, o.shape[1], o)
        self.out = out
        self.backend = backend
        self.check_finite = _validate.flag_value(check_finite, "check_finite")
        self.check_labels = _validate.flag_value(check_labels, "check_labels")
        self.threads = _validate.threads_value(threads)
        self.strategy = _validate.check_strategy(strategy)
        if backend is not None:
            select("class_counts", o.device, backend)  # an unknown or unavailable backend fails here, named
        self._layout: _Layout | None = None

    def add(self, acts: Array, labels: Array) -> Array:
        """Adds the batch's counts into ``out`` and returns ``out`` (which must keep its storage: a resized or
        replaced table is not followed)."""
        from . import class_counts

        layout = self._layout
        if type(labels) is CheckedLabels:
            if labels.num_classes != self.num_classes:
                raise ValueError(
                    f"labels were checked for num_classes={labels.num_classes}, these counts have "
                    f"num_classes={self.num_classes}"
                )
            if layout is not None and self._acts_fit(layout, acts) and len(labels) == acts.shape[0]:
                self._kernel(layout, acts, labels.values)
                return self.out
            labels = labels.of_library("torch" if _arrays._is_torch(acts) else "numpy")
        elif layout is not None and self._fits(layout, acts, labels):
            self._run(layout, acts, labels)
            return self.out
        class_counts(
            acts,
            labels,
            self.num_classes,
            out=self.out,
            backend=self.backend,
            check_finite=self.check_finite,
            check_labels=self.check_labels,
            threads=self.threads,
            strategy=self.strategy,
        )
        self._layout = self._learn(acts, labels)
        return self.out

    # -- the fast path ------------------------------------------------------------------------------------------

    def _learn(self, acts: Array, labels: Array) -> _Layout | None:
        """The layout of a batch the public path just accepted, when later batches like it can skip it: host
        arrays of one library, a backend computing on NumPy that checks labels itself or is given checked
        int32 labels."""
        a = _arrays.describe(acts, "acts")
        lab = _arrays.describe(labels, "labels")
        if a.device != "cpu" or a.lib not in ("numpy", "torch") or lab.lib != a.lib:
            return None
        b, fn = select("class_counts", "cpu", self.backend)
        if b.native != "numpy":
            return None
        kind = _validate.acts_kind(a)
        size = kind.itemsize
        signed = None  # NumPy arrays and torch dtypes NumPy has are viewed as the storage dtype directly
        if a.lib == "torch" and acts.dtype not in _numpy_twins():
            import torch

            signed = getattr(torch, _SIGNED_OF_SIZE[size])
        return _Layout(
            type(acts),
            acts.dtype,
            a.shape[1],
            size,
            type(labels),
            labels.dtype,
            signed,
            kind.storage,
            kind,
            fn,
            _arrays.to_numpy(self.out),
            self.threads if self.threads is not None else usable_cores(),
        )

    @staticmethod
    def _acts_fit(layout: _Layout, acts: Array) -> bool:
        """The checks on the activations that keep native code safe: the accepted dtype and width, dense
        aligned rows on the host."""
        if type(acts) is not layout.acts_type or acts.dtype != layout.acts_dtype or acts.ndim != 2:
            return False
        if acts.shape[1] != layout.nodes:
            return False
        if layout.acts_type is np.ndarray:
            return bool(acts.flags.c_contiguous and acts.flags.aligned)
        return acts.device.type == "cpu" and acts.is_contiguous() and acts.data_ptr() % layout.itemsize == 0

    @classmethod
    def _fits(cls, layout: _Layout, acts: Array, labels: Array) -> bool:
        """:meth:`_acts_fit`, and labels of the accepted type and dtype, one per sample, on the host."""
        if type(labels) is not layout.labels_type or labels.dtype != layout.labels_dtype or labels.ndim != 1:
            return False
        if labels.shape[0] != acts.shape[0]:
            return False
        if layout.labels_type is not np.ndarray and labels.device.type != "cpu":
            return False
        return cls._acts_fit(layout, acts)

    def _host_labels(self, layout: _Layout, labels: Array) -> np.ndarray:
        """The labels as checked int32, once per torch tensor, class count and content: the counters of a batch's
        sites share one check (and a copy, so what native code indexes with is what was checked). The content is
        compared, not only torch's version counter: a data source may refill the same tensor in place through NumPy
        or DLPack, which no version counter sees (one comparison of the labels, far cheaper than the counting).
        NumPy labels are checked on every call."""
        global _checked_labels
        if layout.labels_type is np.ndarray:
            _validate.label_range(labels, self.num_classes)
            return _arrays.dense_host(labels, np.int32)
        key = (labels._version, labels.data_ptr(), labels.shape[0], self.num_classes)
        x = labels.detach().numpy()
        held, held_key, held_raw, held_labels = _checked_labels
        if held is labels and held_key == key and np.array_equal(held_raw, x):
            return held_labels
        _validate.label_range(x, self.num_classes)
        y = np.array(x, dtype=np.int32)
        # One assignment: another thread sees the old entry or the new one.
        _checked_labels = (labels, key, x.copy(), y)
        return y

    def _run(self, layout: _Layout, acts: Array, labels: Array) -> None:
        self._kernel(layout, acts, self._host_labels(layout, labels))

    def _kernel(self, layout: _Layout, acts: Array, lab: np.ndarray) -> None:
        if layout.acts_type is np.ndarray:
            x = acts.view(layout.storage)
        elif layout.signed is None:  # a dtype NumPy has: one conversion
            x = (acts.detach() if acts.requires_grad else acts).numpy().view(layout.storage)
        else:  # bfloat16: its bits, through torch
            x = acts.detach().view(layout.signed).numpy().view(layout.storage)
        _, bad = layout.fn(
            x,
            layout.kind,
            lab,
            self.num_classes,
            check_finite=self.check_finite,
            out=layout.out,
            threads=layout.threads,
            strategy=self.strategy,
        )
        if bad:
            from . import _nonfinite

            raise _nonfinite("class_counts")
