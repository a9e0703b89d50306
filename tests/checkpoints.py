"""Writing a checkpoint in a test as the Recorder's built-in measures would, from counts and rows made by hand.

``RunDir.write_checkpoint`` takes finished tables; this helper builds them with the measures' own public
functions (SampleSets' tables from the counts, EvalStats' and Probes' rows as given) and streams masks with the
writer the Masks measure uses, so store tests exercise the same code paths as a recorded run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnphases.recording.measures.sample_sets import SampleSetsOptions, sample_set_tables
from nnphases.store import RunDir, TableLike, mask_array_name
from nnphases.store.masks import MaskWriter


def write_masks(folder: Path, masks: Mapping[str, np.ndarray]) -> None:
    """Stream packed masks (uint8 ``[N, 8k]`` a layer) into ``folder/masks.zarr`` as the Masks measure does."""
    import zarr

    group = zarr.open_group(str(folder / "masks.zarr"), mode="w", zarr_format=3, attributes={"layers": list(masks)})
    for name, m in masks.items():
        w = MaskWriter(group, mask_array_name(name), m.shape[0], max(8, m.shape[1]), {"layer": name})
        w.append(np.ascontiguousarray(m), m.shape[1] * 8)
        w.close()


def write_checkpoint(run: RunDir, step: Any, epoch: Any, *, seed: Any, counts: Mapping[str, np.ndarray],
                     class_sizes: np.ndarray, stats: Sequence[Mapping[str, Any]] = (),
                     masks: Mapping[str, np.ndarray] | None = None, state: Any = None,
                     probes: Sequence[Mapping[str, Any]] | None = None,
                     tables: Mapping[str, TableLike] | None = None, **sample_sets: Any) -> Path:
    """One checkpoint with SampleSets' tables (``sample_sets``: its node-table options), the ``stats`` and
    ``probes`` rows and any other ``tables``, and ``masks`` streamed into the folder first."""
    options = SampleSetsOptions(**sample_sets)
    given: dict[str, TableLike] = {}
    if isinstance(counts, Mapping):
        given.update(sample_set_tables(dict(counts), np.asarray(class_sizes), node_tables=options.node_tables,
                                       node_table_max_width=options.node_table_max_width))
    given["stats"] = list(stats)
    if probes:
        given["probes"] = list(probes)
    given.update(tables or {})
    tmp = None
    if masks:
        tmp = run.begin_checkpoint(step)
        try:
            write_masks(tmp, masks)
        except BaseException:
            run.abort_checkpoint(tmp)
            raise
    return run.write_checkpoint(step, epoch, seed=seed, counts=counts, class_sizes=class_sizes, tables=given,
                                state=state, tmp=tmp)
