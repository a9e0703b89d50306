"""Per-sample records of the evaluation set: whether each sample is predicted right, and its loss, per checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import kernels
from ...options import check, option
from ...store.records import write_records
from ..stream import Batch
from ._base import Binding, Measure, Output, Pass, PlanRow
from .eval_stats import cross_entropy_per_sample


@dataclass(frozen=True)
class RecordsOptions:
    loss_fn: Any = option(
        None,
        help="loss(logits, y) -> per-sample losses [batch]; default: cross-entropy per sample (nnphases run: the "
        "training loss)",
    )

    def __post_init__(self) -> None:
        check(self)
        if self.loss_fn is not None and not callable(self.loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(logits, y), got {self.loss_fn!r}")


class Records(Measure):
    """``records.npz`` in every checkpoint (:mod:`nnphases.store.records`): each evaluation sample's correctness
    as packed bits and its loss as float32, in sample order. Host memory: 4 bytes and 1 bit a sample, filled batch
    by batch (the batches arrive in sample order) and written with the checkpoint."""

    name = "records"
    Options = RecordsOptions
    order = 25
    switch = "keep-records"
    switch_help = "also store each evaluation sample's correctness and loss (records.npz)"

    def bind(self, binding: Binding) -> None:
        super().bind(binding)
        if binding.world > 1:
            raise ValueError(
                f"per-sample records are stored in sample order by one process, but {binding.world} processes "
                "measure shards together; keep records in a run of one process"
            )
        self.loss_fn: Callable = self.options.loss_fn or cross_entropy_per_sample
        self._checkpoint: Path | None = None

    def passes(self) -> dict[Pass, Collection[str]]:
        return {"eval": ()}

    def begin(self, checkpoint: Path | None) -> None:
        self._checkpoint = checkpoint
        self._loss: list[np.ndarray] = []
        self._correct: list[torch.Tensor] = []

    def update_batch(self, p: Pass, batch: Batch, logits: torch.Tensor) -> None:
        if p != "eval":
            return
        loss = self.loss_fn(logits, batch.y)
        if not isinstance(loss, torch.Tensor) or loss.shape != (batch.size,):
            raise TypeError(f"records: loss_fn must return per-sample losses [{batch.size}], got {loss!r:.80}")
        self._loss.append(loss.detach().float().cpu().numpy())
        self._correct.append((logits.argmax(dim=1) == batch.y).cpu())

    def compute(self) -> Output:
        assert self._checkpoint is not None  # bind() refuses a world of several processes: this one writes
        loss = np.concatenate(self._loss) if self._loss else np.zeros(0, np.float32)
        correct = torch.cat(self._correct) if self._correct else torch.zeros(0, dtype=torch.bool)
        packed = kernels.pack_masks(correct.reshape(-1, 1))
        write_records(self._checkpoint, np.asarray(packed).reshape(-1), loss)
        self._loss, self._correct = [], []
        return Output()

    def abort(self) -> None:
        self._loss, self._correct = [], []

    def plan(self, num_classes: int, eval_samples: int | None) -> list[PlanRow]:
        per = (eval_samples or 0) * 4 + -(-(eval_samples or 0) // 64) * 8
        return [PlanRow(self.name, "(per sample)", 1, 0, per)]


MEASURE = Records
