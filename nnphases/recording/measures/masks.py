"""Bit-packed activation masks of the chosen ReLU sites, streamed into the checkpoint as batches are measured."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ... import kernels
from ...options import check, option
from ...store.masks import MaskWriter
from ..stream import Batch
from ._base import Binding, Measure, Output, Pass, PlanRow
from .sample_sets import node_view, nodes_of


@dataclass(frozen=True)
class MasksOptions:
    sites: tuple[str, ...] | None = option(
        None, help="ReLU sites whose masks are stored (default: every site)", flag="mask-sites"
    )
    per_channel: bool = option(
        False, help="one bit per channel (active anywhere) instead of per position", flag="mask-per-channel"
    )
    buffer_mib: int = option(
        64, min=1, max=1 << 20, help="host memory for the column buffers of all sites (MiB)", flag="mask-buffer-mib"
    )
    backend: str | None = option(
        None, help="kernel backend for pack_masks (default: the first that works)", flag="mask-backend"
    )

    def __post_init__(self) -> None:
        check(self)
        if self.backend is not None and self.backend not in kernels.BACKENDS:
            raise ValueError(
                f"backend (--mask-backend) must be one of {', '.join(kernels.BACKENDS)}; got {self.backend!r}"
            )


class Masks(Measure):
    """One uint8 ``[nodes, ceil(S/64)*8]`` array per site in ``masks.zarr`` (the layout of ``pack_masks`` over the
    whole evaluation set), written batch by batch: host memory is one column buffer per site whatever ``S``."""

    name = "masks"
    Options = MasksOptions
    order = 20
    switch = "keep-masks"
    switch_help = "also store bit-packed activation masks (masks.zarr)"

    def bind(self, binding: Binding) -> None:
        super().bind(binding)
        if binding.world > 1:
            raise ValueError(
                f"masks are stored by one process, but {binding.world} processes measure together; keep "
                "masks in a run of one process (the counts need no masks)"
            )
        self.sites = binding.check_sites(self.options.sites, "mask_sites")
        binding.check_backend(self.options.backend, "pack_masks", "mask_backend")
        self.nodes = {s: nodes_of(binding.sites[s], self.options.per_channel) for s in self.sites}
        total = sum(self.nodes.values())
        # Every site gets the same column width, so the buffers fill together and all stay within the budget.
        self.cols = int(min(8192, max(8, (self.options.buffer_mib << 20) // max(1, total) // 8 * 8)))
        self._writers: dict[str, MaskWriter] = {}

    def passes(self) -> dict[Pass, Collection[str]]:
        return {"eval": self.sites}

    def begin(self, checkpoint: Path | None) -> None:
        assert checkpoint is not None  # bind() refuses a world of several processes: this one writes
        import zarr

        from ...store import mask_array_name

        self._group = zarr.open_group(
            str(Path(checkpoint) / "masks.zarr"), mode="w", zarr_format=3, attributes={"layers": list(self.sites)}
        )
        from concurrent.futures import ThreadPoolExecutor

        self._io: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnphases-masks")
        self._writers = {
            s: MaskWriter(self._group, mask_array_name(s), n, self.cols, {"layer": s}, self._io)
            for s, n in self.nodes.items()
        }

    def update(self, p: Pass, site: str, z: torch.Tensor, batch: Batch) -> None:
        packed = kernels.pack_masks(
            node_view(z, self.options.per_channel), backend=self.options.backend, check_finite=False
        )
        self.add_packed(site, packed, batch.size)

    def add_packed(self, site: str, packed: torch.Tensor, samples: int) -> None:
        """The site's masks of one batch, packed already (by ``count_and_pack``, when the counts were taken in
        the same pass over the activations)."""
        self._writers[site].append(np.asarray(packed.cpu()), samples)

    def compute(self) -> Output:
        try:
            for w in self._writers.values():
                w.close()
        finally:
            self.abort()
        return super().compute()

    def abort(self) -> None:
        # Nothing may still write into the checkpoint folder once the Recorder removes or renames it.
        io = getattr(self, "_io", None)  # None before begin() and after an abort
        if io is not None:
            io.shutdown(wait=True, cancel_futures=True)
            self._io = None
        self._writers = {}

    def plan(self, num_classes: int, eval_samples: int | None) -> list[PlanRow]:
        per_row = math.ceil(eval_samples / 64) * 8 if eval_samples is not None else 0
        return [PlanRow(self.name, s, n, 0, n * per_row) for s, n in self.nodes.items()]


MEASURE = Masks
