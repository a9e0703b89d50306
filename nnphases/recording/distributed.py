"""Measuring across processes: unwrapped models, unpadded shards, and one exact sum reduction.

Under an initialised ``torch.distributed`` process group (torchrun, or a
training framework that launched one), every rank measures its own shard of
the evaluation data and the measures' sums (counts, class sizes, loss sums in
fixed point, correct counts; the fast probes' float64 statistics) are added at
the end of each pass with one ``all_reduce(SUM)`` per dtype (an int64 buffer,
and a float64 one when there are floats). Integer sums do not depend on how the
samples were split, so a world of any size gives the counts, metrics and
statistics of one process, bit for bit; float sums agree to rounding. A
shard must not be padded: ``DistributedSampler`` repeats samples to make the
shards equal, which would count them twice, so it is refused when it pads;
:class:`UnpaddedSampler` is the sampler to use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["world", "unwrap", "UnpaddedSampler", "shard_range", "check_unpadded", "all_reduce_sums", "broadcast_object"]


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module that computes: DistributedDataParallel, DataParallel and ``torch.compile`` wrappers removed, so
    its ReLU sites have the names of a single process's model."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod  # what torch.compile wraps
        else:
            return model


def shard_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous ``[start, stop)`` share of ``n`` samples that ``rank`` of ``size`` measures (no padding:
    shares differ by at most one sample)."""
    return n * rank // size, n * (rank + 1) // size


class UnpaddedSampler(torch.utils.data.Sampler[int]):
    """This rank's contiguous share of ``range(n)``, in order, without padding or repetition: the shards of all
    ranks together are every sample exactly once (unlike ``DistributedSampler``, which pads)."""

    def __init__(self, n: int, rank: int | None = None, size: int | None = None) -> None:
        r, w = world()
        self.n, self.rank, self.size = int(n), r if rank is None else rank, w if size is None else size
        if not 0 <= self.rank < self.size:
            raise ValueError(f"rank must lie in [0, {self.size}), got {self.rank}")

    def __iter__(self) -> Iterator[int]:
        return iter(range(*shard_range(self.n, self.rank, self.size)))

    def __len__(self) -> int:
        a, b = shard_range(self.n, self.rank, self.size)
        return b - a


def check_unpadded(data: Any, name: str) -> None:
    """Refuse a DataLoader whose DistributedSampler pads its shards (it repeats samples, which corrupts exact
    counts)."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    if not isinstance(data, DataLoader):
        return
    sampler = data.sampler if data.batch_sampler is None else getattr(data.batch_sampler, "sampler", data.sampler)
    if isinstance(sampler, DistributedSampler):
        n = len(sampler.dataset)  # type: ignore[arg-type]  # a Dataset need not be Sized; this sampler's is
        if sampler.total_size > n:
            raise ValueError(
                f"{name} uses a DistributedSampler that pads {n} samples to {sampler.total_size} "
                f"(repeating {sampler.total_size - n}), which would count them twice; use "
                "nnphases.recording.distributed.UnpaddedSampler(len(dataset))"
            )
        if sampler.total_size < n:
            raise ValueError(
                f"{name} uses a DistributedSampler with drop_last=True, which leaves out "
                f"{n - sampler.total_size} of the {n} samples so that the shards are equal; every sample must be "
                "measured: use nnphases.recording.distributed.UnpaddedSampler(len(dataset))"
            )
        if sampler.shuffle:
            raise ValueError(
                f"{name} uses a shuffling DistributedSampler; measure every pass in the same order "
                "(nnphases.recording.distributed.UnpaddedSampler)"
            )


def all_reduce_sums(tensors: Sequence[torch.Tensor], device: torch.device) -> None:
    """Add ``tensors`` across the world in place: integer (and bool) sums through one int64 buffer, exact; floating
    sums (a probe's float64 statistics) through one float64 buffer; one all_reduce per kind present."""
    import torch.distributed as dist

    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(torch.float64 if t.is_floating_point() else torch.int64, []).append(t)
    for dtype in (torch.int64, torch.float64):  # the same order on every rank
        ts = groups.get(dtype)
        if not ts:
            continue
        flat = torch.cat([t.detach().reshape(-1).to(device=device, dtype=dtype) for t in ts])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for t in ts:
            k = t.numel()
            t.copy_(flat[offset : offset + k].reshape(t.shape).to(device=t.device, dtype=t.dtype))
            offset += k


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def reduce_device() -> torch.device:
    """Where the reduction buffer lives: NCCL reduces GPU tensors, gloo host ones."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
