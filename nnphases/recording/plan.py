"""The plan of a run: the device memory and disk its measures will take, as a value.

A plan is a pure function of the bound measures (each returns its rows from
:meth:`~nnphases.recording.measures.Measure.plan`), the checkpoints left in the
schedule, the size of the resume state and what is free on the device and on
the output's disk. The :class:`~nnphases.recording.recorder.Recorder` makes its
plan with :func:`make_plan` and refuses a run that cannot fit; ``nnphases
plan`` and ``nnphases run`` make the same plan from measures bound with
:func:`bind_measures`, without a Recorder or a run folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .measures import Binding, Measure, PlanRow

__all__ = ["Plan", "make_plan", "bind_measures", "format_bytes", "free_memory", "free_disk", "resume_state_bytes"]


@dataclass(frozen=True)
class Plan:
    """Memory and disk a run will take, per site and measure: device bytes while measuring, bytes stored per
    checkpoint, and the disk of every checkpoint left in the schedule."""

    rows: tuple[PlanRow, ...]
    checkpoints: int
    eval_samples: int | None
    free_device: int | None
    free_disk: int | None
    device: str
    state_bytes: int = 0
    notes: tuple[str, ...] = field(default=())
    out: str | None = None  # the folder written, named when its disk is too small

    @property
    def device_bytes(self) -> int:
        return sum(r.device_bytes for r in self.rows)

    @property
    def checkpoint_bytes(self) -> int:
        return sum(r.disk_bytes for r in self.rows)

    @property
    def disk_bytes(self) -> int:
        return self.checkpoint_bytes * self.checkpoints + self.state_bytes

    def problems(self) -> list[str]:
        """Why the run cannot fit, each with the numbers and the ways out (empty when it fits)."""
        out = []
        if self.free_device is not None and self.device_bytes > 0.9 * self.free_device:
            out.append(
                f"the measures need {format_bytes(self.device_bytes)} on {self.device} while measuring but "
                f"{format_bytes(self.free_device)} is free; count per channel (per_channel), measure fewer "
                "sites, or probe fewer layers"
            )
        if self.free_disk is not None and self.disk_bytes > self.free_disk:
            out.append(
                f"{self.checkpoints} checkpoints of {format_bytes(self.checkpoint_bytes)} take "
                f"{format_bytes(self.disk_bytes)} but {format_bytes(self.free_disk)} is free on the disk of "
                f"{self.out if self.out is not None else 'the output'}; keep no masks (or fewer mask sites), "
                "measure fewer sites, or measure fewer steps (fewer per decade)"
            )
        return out

    def verdict(self) -> str:
        """``fits``, or ``does not fit: `` and the problems."""
        problems = self.problems()
        return "does not fit: " + "; ".join(problems) if problems else "fits"

    def summary(self) -> str:
        """The totals in one line: device memory, disk per checkpoint and in all, and what is free."""
        samples = "unknown until the first pass" if self.eval_samples is None else f"{self.eval_samples:,}"
        return (
            f"total: {format_bytes(self.device_bytes)} on {self.device} while measuring (free: "
            f"{format_bytes(self.free_device)}); {format_bytes(self.checkpoint_bytes)} per checkpoint x "
            f"{self.checkpoints} checkpoints + resume state {format_bytes(self.state_bytes)} = "
            f"{format_bytes(self.disk_bytes)} on disk (free: {format_bytes(self.free_disk)}); evaluation "
            f"samples: {samples}"
        )

    def seeds_summary(self, seeds: int) -> str:
        """The disk of ``seeds`` runs of this plan, each in its own folder, in one line."""
        return f"{seeds} seed{'s' if seeds > 1 else ''}: {format_bytes(self.disk_bytes * seeds)} on disk in all"

    def __str__(self) -> str:
        lines = [f"{'measure':12s} {'site':28s} {'nodes':>9s} {'device':>10s} {'per ckpt':>10s}"]
        for r in self.rows:
            lines.append(
                f"{r.measure:12s} {r.site[:28]:28s} {r.nodes:9d} {format_bytes(r.device_bytes):>10s} "
                f"{format_bytes(r.disk_bytes):>10s}"
            )
        lines.append(self.summary())
        lines.extend(self.notes)
        return "\n".join(lines)


def make_plan(
    measures: Sequence[Measure],
    *,
    num_classes: int,
    eval_samples: int | None,
    checkpoints: int,
    device: torch.device,
    state_bytes: int,
    out: Path,
) -> Plan:
    """The plan of bound ``measures`` over ``checkpoints`` checkpoints written under ``out`` (which need not exist:
    its nearest existing folder's disk is the one asked)."""
    rows = tuple(r for m in measures for r in m.plan(num_classes, eval_samples))
    notes = (
        ()
        if eval_samples is not None
        else ("the evaluation set's size is learnt in the first pass; the disk is checked again then",)
    )
    return Plan(
        rows, checkpoints, eval_samples, free_memory(device), free_disk(out), str(device), state_bytes, notes, str(out)
    )


def bind_measures(
    measures: Sequence[Measure],
    sites: Mapping[str, tuple[int, ...]],
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    device: torch.device,
    eval_samples: int | None,
    train_samples: int | None,
    has_train: bool,
    seed: int,
    world: int = 1,
    batch_norm: bool = False,
) -> Binding:
    """Bind every measure to the model's ReLU ``sites`` (each checks its options against them once)."""
    binding = Binding(
        sites=dict(sites),
        num_classes=num_classes,
        input_shape=input_shape,
        device=device,
        eval_samples=eval_samples,
        train_samples=train_samples,
        has_train=has_train,
        seed=seed,
        free_memory=free_memory(device),
        measures=tuple(m.name for m in measures),
        world=world,
        batch_norm=batch_norm,
    )
    for m in measures:
        m.bind(binding)
    return binding


def resume_state_bytes(model: nn.Module) -> int:
    """The resume state kept in the two newest checkpoints: the model, an optimiser with about two moments per
    parameter, and RNG state."""
    return 2 * 3 * sum(p.numel() * p.element_size() for p in model.parameters())


def format_bytes(n: int | None) -> str:
    """Bytes in the largest binary unit that keeps one digit before the point (``unknown`` for None)."""
    if n is None:
        return "unknown"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (MemAvailable on a Linux host), or None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def free_disk(path: Path) -> int | None:
    """Bytes free on the disk that would hold ``path`` (its nearest existing folder's), or None when unknown."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None
