"""Evaluation data as a stream of ``(x, y)`` batches, checked batch by batch on the host.

A measurement reads its data in passes (the probes' training subset, then the
evaluation set), and every pass must see the same samples in the same order:
bit ``s`` of a stored mask row is sample ``s`` of the pass. :class:`Stream`
wraps what a user has, in-memory tensors (cut into batches here) or any
re-iterable of ``(x, y)`` batches (a ``torch.utils.data.DataLoader`` with
workers and pinned memory in particular), checks each batch before it reaches
the model (labels 1-D integer class indices in range, the same per-sample shape
and dtype as the first batch) and counts the samples of each class, so class
sizes come from the data. Counts, losses and probe statistics are sums and do
not depend on the order; masks do, so a ``DataLoader`` whose sampler shuffles is
refused where masks are kept (see :meth:`Stream.refuse_shuffling`), and a pass
whose class sizes differ from the first pass's stops the measurement.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..options import check_int

__all__ = ["Batch", "Stream"]


@dataclass(frozen=True)
class Batch:
    """One batch on the model's device: inputs ``x``, int64 labels ``y``, and the index of its first sample in the
    pass (``start``), so a measure knows where its samples go."""

    x: torch.Tensor
    y: torch.Tensor
    start: int

    @property
    def size(self) -> int:
        return int(self.y.shape[0])


def _dense(x: torch.Tensor, where: str) -> None:
    # A sparse or other non-strided tensor would fail inside the model or the kernels with an error that names
    # neither the data nor the batch.
    if x.layout != torch.strided:
        raise TypeError(f"{where}: x must be a dense tensor, got layout {x.layout} (call .to_dense())")


def _labels(y: Any, name: str, num_classes: int | None) -> torch.Tensor:
    """``y`` as a 1-D int64 CPU-or-device tensor, refusing what would be misread (floats, one-hot rows)."""
    if isinstance(y, (list, tuple)):
        try:
            y = torch.as_tensor(np.asarray(y))
        except (TypeError, ValueError):
            raise TypeError(f"{name} labels must be integer class indices, got a list that is not numeric") from None
    elif isinstance(y, np.ndarray):
        y = torch.from_numpy(np.ascontiguousarray(y))
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} labels must be a tensor (or NumPy array) of class indices, got {type(y).__name__}")
    if y.dim() != 1:
        hint = " (one-hot rows? pass y.argmax(1))" if y.dim() == 2 else ""
        raise ValueError(f"{name} labels must be 1-D class indices, got shape {tuple(y.shape)}{hint}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(
            f"{name} labels must be integers, got dtype {y.dtype} (a float label such as 0.7 would be "
            "truncated to a class)"
        )
    y = y.to(torch.int64)
    if num_classes is not None and y.numel() and y.device.type == "cpu":
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} labels must lie in [0, {num_classes}), got a label {lo if lo < 0 else hi}")
    return y


class Stream:
    """A re-iterable evaluation source: ``(x, y)`` tensors cut into ``batch_size`` batches, or an iterable of
    ``(x, y)`` batches such as a DataLoader. ``name`` names the argument in errors ("eval_data")."""

    def __init__(self, data: Any, name: str, batch_size: int = 1000, shard: tuple[int, int] = (0, 1)) -> None:
        self.name, self.batch_size, self.shard = name, check_int(batch_size, "batch_size", 1), shard
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.iterable: Iterable | None = None
        if isinstance(data, (tuple, list)) and len(data) == 2 and not _is_batch_list(data):
            x, y = data
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(np.ascontiguousarray(x))
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name}: x must be a tensor (or NumPy array), got {type(x).__name__}")
            _dense(x, name)
            y = _labels(y, name, None)
            if x.dim() < 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"{name}: y has {y.shape[0]} labels but x has {x.shape[0] if x.dim() else 0} samples")
            if x.shape[0] == 0:
                raise ValueError(f"{name} is empty: it needs at least one sample")
            self.x, self.y = x, y
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, torch.Tensor, np.ndarray, dict)):
            # An iterator returns itself from iter(); asking it of a re-iterable such as a DataLoader would start
            # its workers for nothing, so only what is an Iterator by type is asked.
            if isinstance(data, Iterator) and iter(data) is data:
                raise TypeError(
                    f"{name} is an iterator (a generator?), which is exhausted after one pass; every "
                    "measurement reads it again: pass a DataLoader, a list of batches or (x, y) tensors"
                )
            self.iterable = data
            if shard[1] > 1:
                from .distributed import check_unpadded

                check_unpadded(data, name)
        else:
            raise TypeError(
                f"{name} must be an (x, y) pair of tensors or an iterable of (x, y) batches "
                f"(e.g. a DataLoader), got {type(data).__name__}"
            )

    # -- what is known before a pass ---------------------------------------------------------------

    @property
    def samples(self) -> int | None:
        """Number of samples of a pass (of all processes' shards together) when known up front: tensors, or a
        DataLoader over a sized dataset."""
        if self.y is not None:
            return int(self.y.shape[0])
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        from .distributed import UnpaddedSampler

        d = self.iterable
        if self.shard[1] > 1:
            sampler = d.sampler if isinstance(d, DataLoader) else None
            if isinstance(sampler, (UnpaddedSampler, DistributedSampler)) and not d.drop_last:  # type: ignore[union-attr]
                return len(sampler.dataset) if isinstance(sampler, DistributedSampler) else sampler.n  # type: ignore[arg-type]
            return None
        if isinstance(d, DataLoader) and d.batch_size is not None and hasattr(d.dataset, "__len__"):
            try:
                n = len(d.sampler)  # type: ignore[arg-type]
            except TypeError:
                return None
            return n - n % d.batch_size if d.drop_last else n
        return None

    def class_sizes(self, num_classes: int) -> np.ndarray | None:
        """Samples per class when known without a pass (tensors); None for streams (counted in the first pass)."""
        if self.y is None:
            return None
        _labels(self.y, self.name, num_classes)
        return torch.bincount(self.y.cpu(), minlength=num_classes).numpy().astype(np.int64)

    def example(self) -> torch.Tensor:
        """A few samples of ``x`` (the first batch's) to trace the model and learn its site shapes."""
        if self.x is not None:
            return self.x[:2]
        for xb, _ in self._raw():
            if isinstance(xb, np.ndarray):
                xb = torch.from_numpy(xb)
            if not isinstance(xb, torch.Tensor):
                raise TypeError(f"{self.name} batch 0: x must be a tensor, got {type(xb).__name__}")
            _dense(xb, f"{self.name} batch 0")
            return xb[:2]
        raise ValueError(f"{self.name} yielded no batches")

    def refuse_shuffling(self, why: str) -> None:
        """Raise when the source is a DataLoader whose sampler may reorder samples between passes: one that shuffles
        (RandomSampler, SubsetRandomSampler, WeightedRandomSampler, a shuffling DistributedSampler) or one whose
        order nnphases cannot know (any other sampler class). Kept: SequentialSampler, nnphases' UnpaddedSampler,
        a DistributedSampler without shuffling, a list, tuple or range of indices, an IterableDataset's own order."""
        from torch.utils.data import DataLoader

        d = self.iterable
        if not isinstance(d, DataLoader):
            return
        batch = d.batch_sampler
        sampler = getattr(batch, "sampler", None) if batch is not None else d.sampler
        if sampler is None:  # a custom batch sampler: its order is its own
            sampler = batch
        problem = _reorders(sampler)
        if problem is not None:
            raise ValueError(
                f"{self.name} {problem}; {why} needs the same sample order in every pass: build the loader with "
                "shuffle=False and a SequentialSampler (or a list of indices)"
            )

    # -- passes ------------------------------------------------------------------------------------

    def _raw(self) -> Iterator[tuple[Any, Any]]:
        if self.x is not None and self.y is not None:
            from .distributed import shard_range

            start, stop = shard_range(self.x.shape[0], *self.shard)  # a process's own, unpadded share
            for s in range(start, stop, self.batch_size):
                e = min(s + self.batch_size, stop)
                yield self.x[s:e], self.y[s:e]
            return
        assert self.iterable is not None
        for i, item in enumerate(self.iterable):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(
                    f"{self.name} batch {i} must be an (x, y) pair, got {type(item).__name__}"
                    + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
                )
            yield item[0], item[1]

    def batches(
        self, device: torch.device, num_classes: int, dtype: torch.dtype | None, shape: tuple[int, ...] | None
    ) -> Iterator[Batch]:
        """The pass's batches on ``device``, each checked first: ``x`` a tensor with per-sample ``shape`` and
        floating ``dtype`` (those of the first batch when None), ``y`` 1-D integer labels in range, as many as
        ``x`` has samples. After the pass, :attr:`last_class_sizes` holds the samples counted per class."""
        sizes = torch.zeros(num_classes, dtype=torch.int64)
        start = 0
        for i, (x, y) in enumerate(self._raw()):
            where = f"{self.name} batch {i}"
            if isinstance(x, np.ndarray):
                x = torch.from_numpy(x)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{where}: x must be a tensor, got {type(x).__name__}")
            _dense(x, where)
            y = _labels(y, where, num_classes)
            if x.dim() < 1 or x.shape[0] != y.shape[0]:
                raise ValueError(f"{where}: y has {y.shape[0]} labels but x has {x.shape[0] if x.dim() else 0} samples")
            if shape is None:
                shape = tuple(x.shape[1:])
            elif tuple(x.shape[1:]) != shape:
                raise ValueError(f"{where}: samples have shape {tuple(x.shape[1:])}, the first batch's have {shape}")
            if dtype is not None and x.is_floating_point() and x.dtype != dtype:
                raise TypeError(
                    f"{where}: x has dtype {x.dtype} but the model computes in {dtype}; convert the "
                    "inputs (e.g. a transform to float32) so nothing is cast silently"
                )
            if y.device.type != "cpu":  # labels already on a device: check their range there, once per batch
                y = _labels(y.cpu(), where, num_classes).to(y.device)
            sizes += torch.bincount(y.cpu(), minlength=num_classes)
            if y.numel():
                yield Batch(x.to(device, non_blocking=True), y.to(device, non_blocking=True), start)
            start += int(y.shape[0])
        self.last_class_sizes = sizes.numpy()
        self.last_samples = start


def _is_batch_list(data: tuple | list) -> bool:
    """Whether a 2-element list is two (x, y) batches rather than one (x, y) pair."""
    return all(isinstance(item, (tuple, list)) and len(item) == 2 for item in data)


def check_class_sizes(sizes: np.ndarray, name: str) -> None:
    """Every class needs samples for the class-conditional metrics."""
    missing = np.flatnonzero(sizes == 0).tolist()
    if missing:
        raise ValueError(
            f"{name} has no samples of classes {missing}; every class needs samples for the "
            "class-conditional metrics (use a stratified split)"
        )


def accumulator_dtype(samples: int | None) -> torch.dtype:
    """int32 counters when a pass has fewer than 2^31 samples (half the memory of int64), else int64."""
    return torch.int32 if samples is not None and samples < 2**31 - 1 else torch.int64


def _reorders(sampler: object) -> str | None:
    """What makes ``sampler`` give another order at another pass, or None when its order is fixed."""
    from torch.utils.data import (
        BatchSampler,
        RandomSampler,
        SequentialSampler,
        SubsetRandomSampler,
        WeightedRandomSampler,
    )
    from torch.utils.data.distributed import DistributedSampler

    from .distributed import UnpaddedSampler

    if isinstance(sampler, BatchSampler):
        return _reorders(sampler.sampler)
    if isinstance(sampler, (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)):
        return f"shuffles (its sampler is a {type(sampler).__name__})"
    if isinstance(sampler, DistributedSampler):
        return "shuffles (a DistributedSampler with shuffle=True)" if sampler.shuffle else None
    if isinstance(sampler, (SequentialSampler, UnpaddedSampler, list, tuple, range)):
        return None
    if type(sampler).__name__ == "_InfiniteConstantSampler":  # an IterableDataset: it yields in its own order
        return None
    return f"samples with a {type(sampler).__name__}, whose order nnphases cannot know"
