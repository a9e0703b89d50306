"""What both probe modes share: the error type, input checks and the reconstruction normaliser."""

from __future__ import annotations

import math

import torch


class ProbeError(ValueError):
    """A probe cannot produce a meaningful number (too few samples, a singular or non-finite solve, bad data)."""


def check_finite(name: str, t: torch.Tensor) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ProbeError(f"{name} contains non-finite values (NaN or inf)")


def check_batch(
    acts: torch.Tensor,
    labels: torch.Tensor,
    inputs: torch.Tensor,
    num_classes: int,
    input_shape: tuple[int, ...],
    device: torch.device,
) -> torch.Tensor:
    """Validate one probe batch (finite values, label shape and range, input size per sample) and return its
    labels as int64 on ``device``."""
    check_finite("acts", acts)
    check_finite("inputs", inputs)
    b = acts.shape[0]
    if labels.shape != (b,):
        raise ValueError(f"labels must have shape ({b},), got {tuple(labels.shape)}")
    dim = math.prod(input_shape)
    if inputs.shape[0] != b or math.prod(inputs.shape[1:]) != dim:
        raise ValueError(
            f"inputs must be [{b}, *{tuple(input_shape)}] ({dim} values per sample), got shape {tuple(inputs.shape)}"
        )
    y = labels.detach().to(device, torch.int64)
    if b and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]")
    return y


class Moments:
    """Per-dimension mean and M2 of a stream, merged batch by batch (Chan et al.) to avoid cancellation."""

    def __init__(self, r: int, device: torch.device) -> None:
        self.n = 0
        self.mean = torch.zeros(r, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(r, dtype=torch.float64, device=device)

    def add(self, r: torch.Tensor) -> None:
        nb = r.shape[0]
        if nb == 0:
            return
        bmean = r.mean(0)
        self._merge(nb, bmean, ((r - bmean) ** 2).sum(0))

    def _merge(self, nb: int, bmean: torch.Tensor, bm2: torch.Tensor) -> None:
        if nb == 0:
            return
        tot = self.n + nb
        delta = bmean - self.mean
        self.mean = self.mean + delta * (nb / tot)
        self.m2 = self.m2 + bm2 + delta**2 * (self.n * nb / tot)
        self.n = tot

    def packed(self, rank: int, world: int) -> torch.Tensor:
        """This stream's ``(n, mean, M2)`` in row ``rank`` of a float64 table of ``world`` rows, the others zero:
        summed across processes (adding zeros is exact) it holds every process's row for :meth:`merge_packed`.
        Sums of r and r^2 would reduce to one row but cancel when the mean is large against the spread."""
        r = self.mean.numel()
        t = torch.zeros(world, 1 + 2 * r, dtype=torch.float64, device=self.mean.device)
        t[rank, 0] = self.n  # exact in float64 below 2**53 samples
        t[rank, 1 : 1 + r] = self.mean
        t[rank, 1 + r :] = self.m2
        return t

    def merge_packed(self, table: torch.Tensor) -> None:
        """Become the merge of every row of ``table`` (:meth:`packed`, summed across processes), in rank order:
        every process computes the same moments."""
        r = self.mean.numel()
        self.n = 0
        self.mean, self.m2 = torch.zeros_like(self.mean), torch.zeros_like(self.m2)
        for row in table:
            self._merge(int(row[0]), row[1 : 1 + r], row[1 + r :])

    def normalised(self, mse: float) -> float | None:
        """``mse`` over the mean per-dimension population variance of the stream (1 - R^2); None if it is 0."""
        total_var = float(self.m2.sum()) / self.n if self.n else 0.0
        return mse / (total_var / self.m2.numel()) if total_var > 0 else None
