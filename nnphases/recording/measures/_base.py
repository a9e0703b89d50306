"""The measure protocol: what one kind of measurement needs, keeps and writes.

A measure is bound once to the model's ReLU sites (:meth:`Measure.bind`, where
every check across options happens, before any training), then, at each
measurement, sees the passes it asked for (:meth:`Measure.passes`): its sites'
outputs while each batch is alive (:meth:`Measure.update`), the batch's logits
(:meth:`Measure.update_batch`), the end of each pass (:meth:`Measure.end_pass`),
and finally hands its finished tables to the store (:meth:`Measure.compute`).
What it keeps between batches are sums (:meth:`Measure.sums`: reducible with one
``all_reduce(SUM)``); what a resumed run needs is :meth:`Measure.state_dict`.

A measure owns its tables: it declares each one's columns in ``tables``
(:func:`nnphases.store.register_table`, called in its class body, so that
importing the measure is what makes the table readable with its schema) and
returns their rows from :meth:`Measure.compute`; the store writes, verifies,
reads and compacts any declared table alike. A new measure with a new table is
one new module in this package and touches no other file.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from ...store import RunDir, TableLike, TableSpec
from ..stream import Batch

Pass = Literal["train", "train:batch-stats", "rescore", "rescore:batch-stats", "eval", "eval:batch-stats"]
# The order a measurement runs them in. A ":batch-stats" pass reads the same data as its plain one, with every
# BatchNorm layer normalising by the statistics of the batch it sees (in batches of the users'
# :meth:`Measure.batch_statistics_size`) and leaving its running statistics as they were.
PASSES: tuple[Pass, ...] = (
    "train", "train:batch-stats", "rescore", "rescore:batch-stats", "eval", "eval:batch-stats"
)  # fmt: skip


def base_pass(p: Pass) -> Literal["train", "rescore", "eval"]:
    """The pass ``p`` without its BatchNorm reading: what it is for and which data it reads."""
    return p.split(":")[0]  # type: ignore[return-value]


def batch_statistics(p: Pass) -> bool:
    """Whether pass ``p`` reads with BatchNorm layers normalising by batch statistics."""
    return p.endswith(":batch-stats")


@dataclass(frozen=True)
class Binding:
    """What a measure learns about the model and the data when it is bound."""

    sites: Mapping[str, tuple[int, ...]]  # ReLU site -> per-sample output shape, in forward order
    num_classes: int
    input_shape: tuple[int, ...]
    device: torch.device
    eval_samples: int | None  # None: a stream whose length is learnt in the first pass
    train_samples: int | None  # None: no training subset (or a stream of unknown length)
    has_train: bool
    seed: int
    free_memory: int | None  # bytes free for new tensors on the device, None when unknown
    world: int = 1  # processes measuring shards of the data together (torch.distributed)
    measures: tuple[str, ...] = ()  # the names of every bound measure
    batch_norm: bool = False  # whether the model has BatchNorm layers (running statistics to read with or not)

    def check_sites(self, names: Collection[str] | None, option: str) -> list[str]:
        """``names`` (None: every site) checked against the model's sites, in forward order."""
        if names is None:
            return list(self.sites)
        unknown = [n for n in names if n not in self.sites]
        if unknown:
            raise ValueError(f"{option}: no ReLU site named {unknown}; the model's sites: {list(self.sites)}")
        if not names:
            raise ValueError(f"{option} must name at least one site; the model's sites: {list(self.sites)}")
        return [n for n in self.sites if n in names]

    def check_backend(self, backend: str | None, kernel: str, option: str) -> None:
        """A chosen kernel ``backend`` checked against the model's device when the measure is bound, so that a
        backend that cannot run here is refused before any data pass, with the reason."""
        if backend is None:
            return
        from ... import kernels

        why = kernels.refusal(backend, kernel, self.device.type)
        if why is not None:
            raise ValueError(f"{option} {backend!r} cannot run {kernel} on {self.device}: {why}")


@dataclass(frozen=True)
class PlanRow:
    """One site's share of a measure's memory and disk: bytes on the device while measuring, bytes stored per
    checkpoint."""

    measure: str
    site: str
    nodes: int
    device_bytes: int
    disk_bytes: int


@dataclass
class Output:
    """What a measure hands to the store for one checkpoint: its tables' rows (each a declared table: a pyarrow
    Table or a list of dicts of its columns, or a function returning one that the store calls on the writer's
    thread), and the counts that ``counts.npz`` holds (the one measure that counts gives them)."""

    tables: dict[str, TableLike] = field(default_factory=dict)
    counts: dict[str, np.ndarray] | None = None  # site -> int [C, N] (with class_sizes)
    class_sizes: np.ndarray | None = None


class Measure:
    """Base class of measures. Subclasses set ``name`` and ``Options`` (a frozen dataclass validated by
    :func:`nnphases.options.check`) and override what they use."""

    name: ClassVar[str]
    Options: ClassVar[type]
    # The command-line switch that turns an optional measure on (``--keep-masks``), or None when always on.
    switch: ClassVar[str | None] = None
    order: ClassVar[int] = 100  # where its rows come in plans and its options on the command line
    switch_help: ClassVar[str] = ""
    # The tables this measure writes, declared in its class body with nnphases.store.register_table.
    tables: ClassVar[tuple[TableSpec, ...]] = ()

    def __init__(self, options: Any = None, **kwargs: Any) -> None:
        if options is not None and kwargs:
            raise TypeError(f"{type(self).__name__}: pass options or keywords, not both")
        if options is None:
            options = self.Options(**kwargs)
        elif not isinstance(options, self.Options):
            raise TypeError(
                f"{type(self).__name__} options must be {self.Options.__name__}, got {type(options).__name__}"
            )
        self.options = options
        self.binding: Binding | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"

    def bind(self, binding: Binding) -> None:
        """Check the options against the model's sites and the data; called once, before any measurement."""
        self.binding = binding

    def passes(self) -> dict[Pass, Collection[str]]:
        """The passes this measure needs next, each with the sites whose outputs it wants (may be empty)."""
        return {}

    def batch_statistics_size(self) -> int | None:
        """Samples per batch when this measure reads a ``:batch-stats`` pass (None: it reads none)."""
        return None

    def begin(self, checkpoint: Path | None) -> None:
        """A measurement starts; files of its own may be streamed into the ``checkpoint`` folder being written
        (None in the processes that do not write: the ranks other than 0 under torch.distributed)."""

    def update(self, p: Pass, site: str, z: torch.Tensor, batch: Batch) -> None:
        """One site's output ``z`` ([batch, *shape], detached; reduce it now, never keep it) in pass ``p``."""

    def update_batch(self, p: Pass, batch: Batch, logits: torch.Tensor) -> None:
        """The model's output for ``batch`` in pass ``p``."""

    def end_pass(self, p: Pass, class_sizes: np.ndarray, samples: int) -> None:
        """Pass ``p`` is over; ``class_sizes`` and ``samples`` are what it read."""

    def sums(self, p: Pass) -> dict[str, torch.Tensor]:
        """What pass ``p`` added to this measure's state, as tensors that are sums over samples: across processes
        they are added at the end of the pass, before :meth:`end_pass` (integers exactly in one int64 buffer,
        floats in one float64 buffer: one all_reduce per dtype)."""
        return {}

    def compute(self) -> Output:
        """This measurement's result for the store."""
        return Output()

    def abort(self) -> None:
        """The measurement failed; release what :meth:`begin` opened."""

    def finish(self, run: RunDir) -> None:
        """The run has ended and is marked done; a measure may finish its files (e.g. compact the tables)."""

    def plan(self, num_classes: int, eval_samples: int | None) -> list[PlanRow]:
        """Bytes this measure needs per site: on the device while measuring, on disk per checkpoint."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of this measure (empty when nothing)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def describe(self) -> Any:
        """This measure's options, JSON-ready: a run folder belongs to one setup."""
        from ...options import describe

        return describe(self.options)
