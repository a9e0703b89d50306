"""Loss and accuracy of the model on the evaluation set (and on the training subset when one is given)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from ...options import check, option
from ...store import register_table
from ..stream import Batch
from ._base import Binding, Measure, Output, Pass

_SPLIT = {"train": "train", "eval": "val"}


# Losses are summed in fixed point, as whole units and 2^-32 fractions in two int64 counters, so that the sum is
# exact, independent of batching and of how samples are split across processes (float sums are not).
_SCALE = 2**32
_BUFFER = 1 << 16  # per-sample losses held before they are summed
_LIMIT = 2**30  # a per-sample loss this large is a diverged run; it also keeps the int64 sums from overflowing


@dataclass(frozen=True)
class EvalStatsOptions:
    loss_fn: Any = option(
        None, help="loss(logits, y) -> per-sample losses [batch] (or the batch mean); default: cross-entropy per sample"
    )

    def __post_init__(self) -> None:
        check(self)
        if self.loss_fn is not None and not callable(self.loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(logits, y), got {self.loss_fn!r}")


def cross_entropy_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, y, reduction="none")


STATS = register_table(
    "stats",
    [("split", pa.string()), ("loss", pa.float64()), ("accuracy", pa.float64())],
    required=True,
    choices={"split": ("train", "val")},
)


class EvalStats(Measure):
    """Mean loss and accuracy per split (``stats`` table: ``val`` from the evaluation pass, ``train`` from the
    training subset's first pass). Sums stay on the device as integers (loss in fixed point, correct counts) and
    are read once per pass; a ``loss_fn`` that returns per-sample losses makes the mean independent of the batch
    size and of the number of processes, one returning the batch mean makes it exact per batch."""

    name = "eval_stats"
    Options = EvalStatsOptions
    tables = (STATS,)
    order = 10

    def bind(self, binding: Binding) -> None:
        super().bind(binding)
        self.loss_fn: Callable = self.options.loss_fn or cross_entropy_per_sample
        self._sums: dict[str, torch.Tensor] = {}
        self._rows: list[dict[str, Any]] = []
        self.latest: dict[str, dict[str, float]] = {}  # split -> loss and accuracy of the last measurement

    def passes(self) -> dict[Pass, Collection[str]]:
        assert self.binding is not None
        return {"train": (), "eval": ()} if self.binding.has_train else {"eval": ()}

    def begin(self, checkpoint: object) -> None:
        assert self.binding is not None
        dev = self.binding.device
        # units, 2^-32s, correct, and samples whose loss is not finite or beyond the limit (summed like the rest,
        # so every process of a world sees a divergence anywhere)
        self._sums = {p: torch.zeros(4, dtype=torch.int64, device=dev) for p in _SPLIT}
        # Per-sample losses wait here and are summed in fixed point a buffer at a time: per batch, one copy and
        # the accuracy's three small ops instead of a dozen (on a 9x320 MLP's batches of 1,000 those cost 0.05x
        # of a plain pass).
        self._buffer = torch.empty(_BUFFER, dtype=torch.float64, device=dev)
        self._filled = 0
        self._rows = []

    def update_batch(self, p: Pass, batch: Batch, logits: torch.Tensor) -> None:
        if p not in _SPLIT:
            return
        loss = self.loss_fn(logits, batch.y)
        if not isinstance(loss, torch.Tensor) or loss.shape not in ((), (batch.size,)):
            raise TypeError(f"loss_fn must return per-sample losses [{batch.size}] or their mean, got {loss!r:.80}")
        values = loss.detach().reshape(-1)
        if values.numel() == 1 and batch.size != 1:
            values = values.double() * batch.size  # the batch mean: its sum, exact per batch
        s = self._sums[p]
        s[2] += (logits.argmax(dim=1) == batch.y).sum()
        k = values.numel()
        if self._filled + k > _BUFFER:
            self._fold(p)
        if k > _BUFFER:
            self._add(s, values.double())
            return
        self._buffer[self._filled : self._filled + k].copy_(values)
        self._filled += k

    def _fold(self, p: Pass) -> None:
        """Adds the buffered losses into the sums of pass ``p``."""
        if self._filled:
            self._add(self._sums[p], self._buffer[: self._filled])
            self._filled = 0

    @staticmethod
    def _add(s: torch.Tensor, values: torch.Tensor) -> None:
        bad = ~(values.abs() < _LIMIT)  # NaN too
        s[3] += bad.sum()
        values = torch.where(bad, 0.0, values)  # the pass fails at its end; the sums must not overflow meanwhile
        units = torch.floor(values)
        s[0] += units.to(torch.int64).sum()
        s[1] += torch.floor((values - units) * _SCALE).to(torch.int64).sum()

    def end_pass(self, p: Pass, class_sizes: np.ndarray, samples: int) -> None:
        if p not in _SPLIT:
            return
        self._fold(p)
        units, fraction, correct, bad = (int(v) for v in self._sums[p].tolist())
        if bad:
            raise FloatingPointError(
                f"the {_SPLIT[p]} loss is not finite (or beyond 2^30) for {bad} samples; the run diverged"
            )
        loss = (units * _SCALE + fraction) / _SCALE / max(1, samples)
        self._rows.append({"split": _SPLIT[p], "loss": loss, "accuracy": correct / max(1, samples)})

    def sums(self, p: Pass) -> dict[str, torch.Tensor]:
        if p not in _SPLIT:
            return {}
        self._fold(p)
        return {f"loss_correct:{p}": self._sums[p]}

    def compute(self) -> Output:
        rows = sorted(self._rows, key=lambda r: r["split"] != "val")  # val first, as runs always stored them
        self.latest = {r["split"]: {"loss": r["loss"], "accuracy": r["accuracy"]} for r in rows}
        return Output(tables={"stats": rows})


MEASURE = EvalStats
