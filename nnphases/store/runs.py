"""Reading recorded runs: which folders are runs, their tables across seeds, seed means, layer order, class sizes.

Every reader (``plot``, ``findings``, ``phases``, :func:`nnphases.store.read_table`)
finds its run directories with :func:`run_dirs`, so one argument means the same
runs everywhere: a run directory (``OUT/seed-0``), a folder of them
(``OUT`` holding ``seed-*``), a grid folder (``OUT/<cell>/seed-*``), or a
list of any of these.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from .errors import DamagedCheckpoint, DamagedCheckpointWarning
from .reader import TableReader
from .rundir import RunDir
from .tables import declared, empty, table_spec, unknown_table

__all__ = ["PathLike", "Runs", "run_dirs", "read_table", "layer_order", "class_sizes", "one_setup"]

PathLike = str | os.PathLike[str]
Runs = PathLike | Iterable[PathLike]

# Two levels reach the deepest layout the CLI writes (a grid: OUT/<cell>/seed-*)
# and keep a mistyped path (a home folder) from starting a walk of a whole tree.
_DEPTH = 2


def _find(folder: Path, depth: int) -> list[Path]:
    if (folder / "checkpoints").is_dir():
        return [folder]
    found: list[Path] = []
    if depth < _DEPTH:
        # Hidden entries are never runs: .tmp-* leftovers of atomic writes, .git.
        for child in sorted(c for c in folder.iterdir() if not c.name.startswith(".") and c.is_dir()):
            found += _find(child, depth + 1)
    # A config.json alone marks a run that has not written a checkpoint yet, unless
    # runs lie below it (a sweep folder may keep its own config next to its seeds).
    if not found and (folder / "config.json").is_file():
        return [folder]
    return found


def run_dirs(runs: Runs) -> list[Path]:
    """The run directories named by ``runs``, each once, in the order given (found folders sorted by name).

    ``runs`` is a path or a list of paths. A folder with ``checkpoints/`` is
    a run, and nothing below it is searched. Any other folder is searched
    for runs in its subfolders (hidden ones skipped) by the same rule, at most
    two levels below the path given, which covers ``OUT/seed-*`` and
    ``OUT/<cell>/seed-*``; deeper runs must be named themselves. A folder
    with ``config.json`` but no ``checkpoints/`` and no runs below it is a
    run that has not written a checkpoint yet. A path listed twice (or also
    found under another) counts once. Raises TypeError for a non-path and
    ValueError naming the path for a path that does not exist, a file, or a
    folder with no run; the result of ``run_dirs`` gives itself back.
    """
    if isinstance(runs, (str, os.PathLike)):
        items: list[object] = [runs]
    elif isinstance(runs, Iterable) and not isinstance(runs, bytes):
        items = list(runs)
    else:
        raise TypeError(f"runs must be a path or a list of paths, got {runs!r}")
    if not items:
        raise ValueError("runs must name at least one path, got an empty list")
    out: list[Path] = []
    seen: set[Path] = set()
    for i, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"runs[{i}] must be a path, got {item!r}")
        p = Path(item)
        if not p.exists():
            raise ValueError(f"runs: {str(p)!r} does not exist")
        if not p.is_dir():
            raise ValueError(f"runs: {str(p)!r} is a file, not a run directory or a folder of them")
        found = _find(p, 0)
        if not found:
            raise ValueError(
                f"runs: {str(p)!r} is neither a run directory nor a folder of run directories "
                f"(no checkpoints/ or config.json in it or two levels below)"
            )
        for run in found:
            key = run.resolve()
            if key not in seen:
                seen.add(key)
                out.append(run)
    return out


def read_table(runs: Runs, table: str, *, damaged: Literal["raise", "skip"] = "raise") -> pd.DataFrame:
    """The ``table`` (nodes, layers, stats, probes, ...) of the complete checkpoints of ``runs``, as a DataFrame.

    ``runs`` as for :func:`run_dirs`; ``table`` a declared table
    (:func:`nnphases.store.declared`) or one the runs hold. Rows are sorted by seed and step; within
    a checkpoint they keep the order written (layers in model order, then
    node index; stats as given). Column types follow
    :data:`nnphases.store.SCHEMAS`; an empty result still has every column.
    Checkpoints without an optional table (any but nodes, layers and stats,
    e.g. probes) are skipped for it, unless their manifest lists it. Rows
    come from the run's compacted files (:meth:`RunDir.compact`) where they
    hold the checkpoint, else from the checkpoint's own files; node rows of
    layers written without them (``node_tables``) are derived from the
    counts, the same rows the writer would have stored.

    Every file is verified before it is used (size and crc32 against the
    checkpoint's manifest or the compacted files' manifest; then its
    columns against the schema and its rows against the checkpoint's
    step). ``damaged``:
    ``"raise"`` (default) raises :class:`~nnphases.store.DamagedCheckpoint`
    naming the checkpoint and the file; ``"skip"`` leaves that checkpoint
    out of this table with a :class:`~nnphases.store.DamagedCheckpointWarning`
    naming them.
    """
    if not isinstance(table, str) or not table.isidentifier():
        raise unknown_table(table, declared())
    if damaged not in ("raise", "skip"):
        raise ValueError(f"damaged must be 'raise' or 'skip', got {damaged!r}")
    readers: list[TableReader] = []
    for run in run_dirs(runs):
        try:
            readers.append(TableReader(RunDir(run)))
        except DamagedCheckpoint as e:  # the compacted tables' manifest: no checkpoint can be read safely
            if damaged == "raise":
                raise
            warnings.warn(f"{e}; {run} left out of the {table} table", DamagedCheckpointWarning, stacklevel=2)
    if table_spec(table) is None:
        available = {name for reader in readers for name in reader.tables()} | set(declared())
        if table not in available:
            raise unknown_table(table, available)
    parts = []
    for reader in readers:
        for s in sorted(reader.dirs):
            try:
                t = reader.table(s, table)
                if t is not None:
                    parts.append(t)
            except DamagedCheckpoint as e:
                if damaged == "raise":
                    raise
                warnings.warn(f"{e}; step {s} left out of the {table} table", DamagedCheckpointWarning, stacklevel=2)
    # A table no imported measure declares takes its columns from its files, which may have grown a column.
    t = pa.concat_tables(parts, promote_options="default") if parts else empty(table)
    # Two stable sorts (step, then seed) order by (seed, step) and keep each
    # checkpoint's own row order: layers in model order, not alphabetical.
    order = np.argsort(t.column("step").to_numpy(), kind="stable")
    order = order[np.argsort(t.column("seed").to_numpy()[order], kind="stable")]
    return t.take(pa.array(order, type=pa.int64())).to_pandas()


def layer_order(table: pd.DataFrame) -> list[str]:
    """Layer names in order of first appearance (read_table keeps each checkpoint's model order)."""
    if table.empty or "layer" not in table:
        return []
    return [str(x) for x in pd.unique(table["layer"])]


def class_sizes(run: PathLike) -> np.ndarray:
    """Samples per class (int64 ``[C]``) of the evaluation set, as stored with the run's newest complete checkpoint.

    ``run`` is one run directory. Raises ValueError naming the path when it
    is not a folder or has no complete checkpoint, and
    :class:`~nnphases.store.DamagedCheckpoint` naming the file when that
    checkpoint's counts are damaged.
    """
    if not isinstance(run, (str, os.PathLike)):
        raise TypeError(f"run must be a path, got {run!r}")
    rd = RunDir(run)
    if not rd.path.is_dir():
        raise ValueError(f"run: {str(rd.path)!r} is not a folder")
    steps = rd.completed_steps()
    if not steps:
        raise ValueError(f"run: {str(rd.path)!r} has no complete checkpoint to read class sizes from")
    return rd.read_counts(steps[-1])[1]


# The keys of a run's config.json that differ between the seeds of one setup.
_PER_SEED = ("seed", "seeds")


def one_setup(runs: Runs) -> list[Path]:
    """The run directories of ``runs`` (as :func:`run_dirs`), refused with ValueError when they hold more than one
    setup: means over seeds must not pool the cells of a sweep. Runs compare by their ``config.json`` without the
    seed; a run without one (a Recorder given no config) is a setup of its own only if it differs from another's."""
    dirs = run_dirs(runs)
    setups: dict[str, list[Path]] = {}
    configs: dict[str, dict] = {}
    for d in dirs:
        try:
            cfg = json.loads((d / "config.json").read_text())
        except FileNotFoundError:
            cfg = {}
        except (OSError, ValueError) as e:
            raise ValueError(f"{d / 'config.json'} is damaged ({e})") from None
        body = {k: v for k, v in cfg.items() if k not in _PER_SEED} if isinstance(cfg, dict) else {}
        key = json.dumps(body, sort_keys=True, default=str)
        setups.setdefault(key, []).append(d)
        configs[key] = body
    if len(setups) > 1:
        first, second = list(configs.values())[:2]
        differ = sorted(_differences(first, second))[:4]
        examples = [str(v[0]) for v in list(setups.values())[:2]]
        older = (
            "; where one folder was written by an older nnphases that lacked an option, `nnphases run --resume` "
            "of its run brings its config.json up to date"
            if _missing(first, second)
            else ""
        )
        raise ValueError(
            f"runs: the folders hold {len(setups)} setups (e.g. {examples[0]} and {examples[1]} differ in "
            f"{', '.join(differ) or 'their configuration'}); means over seeds would pool them: read each setup's "
            f"folder on its own{older}"
        )
    return dirs


def _missing(a: object, b: object) -> bool:
    """Whether an option one configuration holds is absent (not merely different) in the other."""
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) != set(b) or any(_missing(a[k], b[k]) for k in a)
    return False


def _differences(a: object, b: object, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
