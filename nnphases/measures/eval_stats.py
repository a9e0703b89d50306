"""Loss and accuracy of the model on the evaluation set (and on the training subset when one is given)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..options import check, option
from ..stream import Batch
from ._base import Binding, Measure, Output, Pass

_SPLIT = {"train": "train", "eval": "val"}


@dataclass(frozen=True)
class EvalStatsOptions:
    loss_fn: Any = option(None, help="loss(logits, y) -> mean over the batch (default: cross-entropy)")

    def __post_init__(self) -> None:
        check(self)
        if self.loss_fn is not None and not callable(self.loss_fn):
            raise TypeError(f"loss_fn must be callable as loss_fn(logits, y), got {self.loss_fn!r}")


class EvalStats(Measure):
    """Mean loss and accuracy per split (``stats`` table: ``val`` from the evaluation pass, ``train`` from the
    training subset's first pass), summed on the device and read once per pass."""

    name = "eval_stats"
    Options = EvalStatsOptions
    order = 10

    def bind(self, binding: Binding) -> None:
        super().bind(binding)
        self.loss_fn: Callable = self.options.loss_fn or nn.functional.cross_entropy
        self._sums: dict[str, torch.Tensor] = {}
        self._rows: list[dict[str, Any]] = []

    def passes(self) -> dict[Pass, Collection[str]]:
        assert self.binding is not None
        return {"train": (), "eval": ()} if self.binding.has_train else {"eval": ()}

    def begin(self, checkpoint: object) -> None:
        assert self.binding is not None
        dev = self.binding.device
        self._sums = {p: torch.zeros(2, dtype=torch.float64, device=dev) for p in _SPLIT}
        self._rows = []

    def update_batch(self, p: Pass, batch: Batch, logits: torch.Tensor) -> None:
        if p not in _SPLIT:
            return
        loss = self.loss_fn(logits, batch.y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError(f"loss_fn must return a scalar tensor (the batch mean), got {loss!r:.80}")
        correct = (logits.argmax(dim=1) == batch.y).sum()
        s = self._sums[p]
        s[0] += loss.detach().double() * batch.size
        s[1] += correct

    def end_pass(self, p: Pass, class_sizes: np.ndarray, samples: int) -> None:
        if p not in _SPLIT:
            return
        loss_sum, correct = self._sums[p].tolist()
        loss = loss_sum / max(1, samples)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the {_SPLIT[p]} loss is not finite ({loss}); the run diverged")
        self._rows.append({"split": _SPLIT[p], "loss": loss, "accuracy": correct / max(1, samples)})

    def sums(self) -> dict[str, torch.Tensor]:
        return {f"loss_correct:{p}": s for p, s in self._sums.items()}

    def compute(self) -> Output:
        rows = sorted(self._rows, key=lambda r: r["split"] != "val")  # val first, as runs always stored them
        return Output(tables={"stats": rows})


MEASURE = EvalStats
