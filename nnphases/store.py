"""Run directories: crash-safe storage of one training run's checkpoints, metrics and resume state.

One directory holds one training run (one seed)::

    RUN/
      config.json                 resolved configuration (written atomically, first)
      checkpoints/
        step-000000000123/        one complete checkpoint (a directory renamed into place as a whole)
          counts.npz              counts per layer: key "layer:<name>" -> [C, N] (narrowest unsigned dtype; read as int64); "class_sizes" -> [C]
          nodes.parquet           seed, step, epoch, layer, node, f, p, u, h_z_given_y, h_y_given_z, dead, always_active
          layers.parquet          seed, step, epoch, layer, nodes, f, p, u, dead, always_active
          stats.parquet           seed, step, epoch, split ("train"/"val"), loss, accuracy
          masks.zarr              optional: one uint8 array per layer [N, ceil(S/64)*8] (bit-packed masks), chunked
          state.pt                optional resume state (torch.save of a dict), kept only in the newest checkpoint
        .tmp-...                  in-progress checkpoint (deleted on resume)
      DONE                        written last when the run finished

Nothing is lost when the writer is killed at any moment: a checkpoint is
written into ``checkpoints/.tmp-step-<step>-<random>/``, every file and
directory in it is fsynced, and the directory is renamed to
``step-<step>`` (then ``checkpoints/`` is fsynced), so a ``step-*``
directory is always complete and a ``.tmp-*`` one is garbage that
:meth:`RunDir.cleanup` removes. ``state.pt`` of older checkpoints is deleted
only after the new checkpoint is in place, so a kill never leaves a run
without resume state. ``config.json`` and ``DONE`` are single files
written by :func:`atomic_write_bytes` (temp file in the same folder, fsync,
rename, fsync of the folder). Step numbers are zero-padded to 12 digits so
names sort in step order; readers parse the number and do not rely on it.
Parquet columns: seed, step, node (int64), epoch and metrics (float64,
NaN where a metric is undefined), layer and split (string), dead and
always_active (bool per node, int64 counts per layer); ``f``, ``p``, ``u``
are the fraction, predictability and informativeness of
:mod:`nnphases.metrics`, entropies in nats. Node rows follow the layer
order of ``counts`` (shallowest first, as given) and node index. In
``masks.zarr`` (zarr format 3) each layer's array is named by the
percent-encoded layer name, carries the name in its ``layer`` attribute,
and the group's ``layers`` attribute lists the layers in order. One process
writes a run at a time; readers may run alongside it.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .metrics import LayerMetrics, node_metrics_np

if TYPE_CHECKING:
    import pandas

__all__ = ["RunDir", "atomic_write_bytes", "read_table", "TABLES", "SPLITS", "SCHEMAS"]

TABLES = ("nodes", "layers", "stats", "probes")  # probes: optional, only where probes were fitted
SPLITS = ("train", "val")

_STEP_DIR = re.compile(r"step-(\d+)")
_TMP_PREFIX = ".tmp-"
_LAYER_KEY = "layer:"
_REQUIRED_FILES = ("counts.npz", "nodes.parquet", "layers.parquet", "stats.parquet")

_KEY = [("seed", pa.int64()), ("step", pa.int64()), ("epoch", pa.float64())]
SCHEMAS: dict[str, pa.Schema] = {
    "nodes": pa.schema(_KEY + [
        ("layer", pa.string()), ("node", pa.int64()),
        ("f", pa.float64()), ("p", pa.float64()), ("u", pa.float64()),
        ("h_z_given_y", pa.float64()), ("h_y_given_z", pa.float64()),
        ("dead", pa.bool_()), ("always_active", pa.bool_()),
    ]),
    "layers": pa.schema(_KEY + [
        ("layer", pa.string()), ("nodes", pa.int64()),
        ("f", pa.float64()), ("p", pa.float64()), ("u", pa.float64()),
        ("dead", pa.int64()), ("always_active", pa.int64()),
    ]),
    "stats": pa.schema(_KEY + [
        ("split", pa.string()), ("loss", pa.float64()), ("accuracy", pa.float64()),
    ]),
    "probes": pa.schema(_KEY + [
        ("layer", pa.string()), ("mode", pa.string()),
        ("train_accuracy", pa.float64()), ("test_accuracy", pa.float64()),
        ("reconstruction_mse", pa.float64()), ("reconstruction_nmse", pa.float64()),
        ("ridge", pa.float64()), ("features", pa.int64()), ("reduction", pa.string()),
        ("n_train", pa.int64()), ("n_test", pa.int64()), ("decoder", pa.string()),
    ]),
}


def _fsync_dir(path: Path) -> None:
    # A rename or unlink is durable only once the directory holding the entry is fsynced.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (files written by zarr or pyarrow included)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _mkdirs(path: Path) -> None:
    """Create ``path`` and missing parents, fsyncing each new entry's parent so the directory survives a crash."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        _fsync_dir(d.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader or a crash sees the old file or the new one, never a mix.

    The bytes go to a temporary file in the same folder (``.tmp-<name>-<random>``,
    so the rename never crosses file systems), which is fsynced, renamed over
    ``path``, and followed by an fsync of the folder. On an exception the
    temporary file is removed.
    """
    path = Path(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    _mkdirs(path.parent)
    tmp = path.parent / f"{_TMP_PREFIX}{path.name}-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _int_value(value: object, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _float_value(value: object, name: str) -> float:
    # None stands for "not measured" and becomes NaN, like an undefined metric.
    if value is None:
        return math.nan
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a number, got {value!r}") from None


def _narrow(counts: np.ndarray) -> np.ndarray:
    """Non-negative counts in the narrowest unsigned dtype that holds their maximum."""
    top = int(counts.max()) if counts.size else 0
    return counts.astype(np.min_scalar_type(top) if top > 0 else np.uint8)


def _step_dir_name(step: int) -> str:
    return f"step-{step:012d}"


def _layer_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"layer names must be non-empty strings, got {name!r}")
    return name


def _mask_array_name(layer: str) -> str:
    # Zarr node names may not contain "/", start with "__" or be only dots.
    key = quote(layer, safe="")
    if key.startswith("__") or set(key) == {"."}:
        raise ValueError(f"layer name {layer!r} cannot name a zarr array (starts with '__' or is only dots)")
    return key


mask_array_name = _mask_array_name


def register_table(name: str, schema: pa.Schema) -> None:
    """Declare a table a measure writes (its columns after seed, step, epoch), so readers know its schema."""
    full = pa.schema(_KEY + list(schema))
    if name in SCHEMAS and SCHEMAS[name] != full:
        raise ValueError(f"table {name!r} is already registered with another schema")
    SCHEMAS[name] = full
    if name not in TABLES:
        globals()["TABLES"] = (*TABLES, name)


class RunDir:
    """One training run's directory (see the module docstring for the layout); nothing is created until a write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- configuration and completion -------------------------------------------------

    def write_config(self, cfg: Mapping[str, Any], *, overwrite: bool = False) -> None:
        """Write ``cfg`` as ``config.json`` atomically; an equal existing config is kept, a different one refused.

        Refusing a different configuration (ValueError) keeps a resumed run from
        mixing checkpoints of two setups; ``overwrite=True`` replaces it.
        Values must be JSON-serialisable (TypeError otherwise).
        """
        if not isinstance(cfg, Mapping):
            raise TypeError(f"cfg must be a mapping, got {type(cfg).__name__}")
        text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
        target = self.path / "config.json"
        if target.exists() and not overwrite:
            # Compare parsed values: tuples become lists, key order is irrelevant.
            if json.loads(target.read_text()) == json.loads(text):
                return
            raise ValueError(f"{target} already holds a different configuration (pass overwrite=True to replace it)")
        atomic_write_bytes(target, text.encode())

    @property
    def config(self) -> dict[str, Any]:
        """The configuration read from ``config.json`` (FileNotFoundError when it was never written)."""
        return json.loads((self.path / "config.json").read_text())

    def mark_done(self) -> None:
        """Write the ``DONE`` marker (atomically), to be called after the last checkpoint."""
        steps = self.completed_steps()
        body = {"last_step": steps[-1] if steps else None, "checkpoints": len(steps)}
        atomic_write_bytes(self.path / "DONE", (json.dumps(body) + "\n").encode())

    @property
    def done(self) -> bool:
        """Whether the run finished (its ``DONE`` marker exists)."""
        return (self.path / "DONE").is_file()

    # -- listing and cleanup ---------------------------------------------------------

    def _step_dirs(self) -> dict[int, Path]:
        if not self.checkpoints.is_dir():
            return {}
        out = {}
        for p in self.checkpoints.iterdir():
            m = _STEP_DIR.fullmatch(p.name)
            if m and p.is_dir():
                out[int(m.group(1))] = p
        return out

    def completed_steps(self) -> list[int]:
        """Steps of the complete checkpoints (renamed ``step-*`` directories), ascending."""
        return sorted(self._step_dirs())

    def checkpoint_path(self, step: int) -> Path:
        """Directory of the complete checkpoint at ``step`` (ValueError when there is none)."""
        step = _int_value(step, "step", 0)
        p = self._step_dirs().get(step)
        if p is None:
            steps = self.completed_steps()
            shown = f"{steps[:3]} ... {steps[-3:]}" if len(steps) > 6 else str(steps)
            raise ValueError(f"step {step} has no complete checkpoint in {self.path} (complete steps: {shown})")
        return p

    def cleanup(self) -> list[Path]:
        """Remove leftovers of interrupted writes (``.tmp-*`` in the run and checkpoint folders); return them.

        Call it before resuming, never while another process writes this run.
        """
        removed = []
        for folder in (self.path, self.checkpoints):
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if not p.name.startswith(_TMP_PREFIX):
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
            if removed:
                _fsync_dir(folder)
        return removed

    # -- writing ---------------------------------------------------------------------

    def begin_checkpoint(self, step: int) -> Path:
        """A new temporary folder for the checkpoint of ``step``, for files streamed in while measuring; pass it
        to :meth:`write_checkpoint` (which renames it into place) or to :meth:`abort_checkpoint`."""
        step = _int_value(step, "step", 0)
        if step in self._step_dirs():
            raise ValueError(f"step {step} is already a complete checkpoint in {self.path}")
        _mkdirs(self.checkpoints)
        tmp = self.checkpoints / f"{_TMP_PREFIX}{_step_dir_name(step)}-{secrets.token_hex(4)}"
        tmp.mkdir()
        return tmp

    def abort_checkpoint(self, tmp: Path) -> None:
        """Remove a checkpoint folder begun with :meth:`begin_checkpoint` that will not be completed."""
        if Path(tmp).parent == self.checkpoints and Path(tmp).name.startswith(_TMP_PREFIX):
            shutil.rmtree(tmp, ignore_errors=True)

    def write_checkpoint(
        self,
        step: int,
        epoch: float,
        *,
        seed: int,
        counts: Mapping[str, np.ndarray],
        class_sizes: np.ndarray,
        stats: Sequence[Mapping[str, Any]] = (),
        masks: Mapping[str, np.ndarray] | None = None,
        state: Mapping[str, Any] | None = None,
        probes: Sequence[Mapping[str, Any]] | None = None,
        tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        tmp: Path | None = None,
    ) -> Path:
        """Write the checkpoint of ``step`` atomically and return its directory.

        ``counts`` maps layer names (in model order) to int ``[C, N]`` counts
        and ``class_sizes`` is int ``[C]``; node metrics come from
        :func:`~nnphases.metrics.node_metrics_np` and layer metrics from
        :meth:`LayerMetrics.from_nodes`. ``stats`` rows have keys ``split``
        (one of :data:`SPLITS`), ``loss`` and ``accuracy`` (None -> NaN);
        ``masks`` maps some of the layers to uint8 ``[N, ceil(S/64)*8]``
        packed masks; ``state`` is saved with ``torch.save`` and replaces the
        resume state of older checkpoints; ``probes`` rows (one per layer and
        mode, keys of ``SCHEMAS["probes"]`` after ``epoch``) go to
        ``probes.parquet``; ``tables`` maps other registered tables
        (:func:`register_table`) to their rows. ``tmp``: a folder from
        :meth:`begin_checkpoint` holding files streamed in already (e.g.
        ``masks.zarr``); it is completed and renamed, or removed on error.
        Raises ValueError for a step that is already complete or for malformed
        inputs.
        """
        try:
            return self._write_checkpoint(step, epoch, seed=seed, counts=counts, class_sizes=class_sizes,
                                          stats=stats, masks=masks, state=state, probes=probes,
                                          tables=tables or {}, tmp=tmp)
        except BaseException:
            if tmp is not None:
                self.abort_checkpoint(tmp)
            raise

    def _write_checkpoint(self, step: int, epoch: float, *, seed: int, counts: Mapping[str, np.ndarray],
                          class_sizes: np.ndarray, stats: Sequence[Mapping[str, Any]],
                          masks: Mapping[str, np.ndarray] | None, state: Mapping[str, Any] | None,
                          probes: Sequence[Mapping[str, Any]] | None,
                          tables: Mapping[str, Sequence[Mapping[str, Any]]], tmp: Path | None) -> Path:
        step = _int_value(step, "step", 0)
        seed = _int_value(seed, "seed")
        epoch_f = _float_value(epoch, "epoch")
        if not math.isfinite(epoch_f) or epoch_f < 0:
            raise ValueError(f"epoch must be finite and >= 0, got {epoch!r}")
        if step in self._step_dirs():
            raise ValueError(f"step {step} is already a complete checkpoint in {self.path}")
        layers, sizes = self._check_counts(counts, class_sizes)
        stat_rows = self._check_stats(stats)
        mask_arrays = self._check_masks(masks, layers) if masks is not None else None
        if state is not None and not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")

        # Metrics first: node_metrics_np validates counts against class_sizes,
        # so bad inputs fail before anything touches the disk.
        out_tables = _metric_tables(step, epoch_f, seed, layers, sizes, stat_rows)
        extra = dict(tables)
        if probes:
            extra["probes"] = probes
        for table, rows in extra.items():
            if table in ("nodes", "layers", "stats") or table not in SCHEMAS:
                raise ValueError(f"tables: {table!r} is not a registered extra table ({sorted(SCHEMAS)})")
            if rows:
                out_tables[table] = _rows_table(table, step, epoch_f, seed, rows)

        name = _step_dir_name(step)
        if tmp is None:
            tmp = self.begin_checkpoint(step)
        try:
            # Stored in the narrowest unsigned type that holds them (uint16 for sets under 65,536 samples)
            # and read back as int64: lossless, 4x smaller than int64, and far faster than zlib, which took
            # seconds per VGG-sized checkpoint.
            arrays = {_LAYER_KEY + layer: _narrow(c) for layer, c in layers.items()}
            arrays["class_sizes"] = sizes
            with open(tmp / "counts.npz", "wb") as f:
                np.savez(f, **arrays)
            for table, t in out_tables.items():
                pq.write_table(t, tmp / f"{table}.parquet")
            if mask_arrays:
                _write_masks(tmp / "masks.zarr", mask_arrays)
            if state is not None:
                import torch  # deferred: reading metrics should not pay for importing torch

                with open(tmp / "state.pt", "wb") as f:
                    torch.save(dict(state), f)
            _fsync_tree(tmp)
            os.rename(tmp, self.checkpoints / name)
        except BaseException:
            # A failed write leaves no garbage behind; a killed one leaves .tmp-*, which cleanup() removes.
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.checkpoints)
        if state is not None:
            self._drop_older_states(step)
        return self.checkpoints / name

    @staticmethod
    def _check_counts(counts: Mapping[str, np.ndarray],
                      class_sizes: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if not isinstance(counts, Mapping) or not counts:
            raise ValueError(f"counts must be a non-empty dict of layer name -> [C, N] array, got {counts!r:.80}")
        sizes = np.asarray(class_sizes)
        if sizes.ndim != 1 or sizes.dtype.kind not in "iu":
            raise ValueError(f"class_sizes must be a 1-D integer array, got dtype {sizes.dtype} shape {sizes.shape}")
        layers = {}
        for name, c in counts.items():
            a = np.asarray(c)
            if a.ndim != 2 or a.dtype.kind not in "iu":
                raise ValueError(f"counts[{name!r}] must be a 2-D integer array, got dtype {a.dtype} shape {a.shape}")
            layers[_layer_name(name)] = a.astype(np.int64, copy=False)
        return layers, sizes.astype(np.int64, copy=False)

    @staticmethod
    def _check_stats(stats: Sequence[Mapping[str, Any]]) -> list[tuple[str, float, float]]:
        rows = []
        for i, row in enumerate(stats):
            if not isinstance(row, Mapping):
                raise TypeError(f"stats[{i}] must be a dict, got {type(row).__name__}")
            if set(row) != {"split", "loss", "accuracy"}:
                raise ValueError(f"stats[{i}] must have exactly the keys split, loss, accuracy; got {sorted(row)}")
            if row["split"] not in SPLITS:
                raise ValueError(f"stats[{i}]['split'] must be one of {SPLITS}, got {row['split']!r}")
            rows.append((row["split"], _float_value(row["loss"], f"stats[{i}]['loss']"),
                         _float_value(row["accuracy"], f"stats[{i}]['accuracy']")))
        return rows

    @staticmethod
    def _check_masks(masks: Mapping[str, np.ndarray], layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not isinstance(masks, Mapping):
            raise TypeError(f"masks must be a dict of layer name -> uint8 array, got {type(masks).__name__}")
        out = {}
        width = None
        for name, m in masks.items():
            if name not in layers:
                raise ValueError(f"masks has layer {name!r}, which is not in counts ({list(layers)[:5]})")
            a = np.asarray(m)
            nodes = layers[name].shape[1]
            if a.dtype != np.uint8 or a.ndim != 2 or a.shape[0] != nodes or a.shape[1] % 8:
                raise ValueError(
                    f"masks[{name!r}] must be uint8 [{nodes}, ceil(S/64)*8], got dtype {a.dtype} shape {a.shape}"
                )
            if width is not None and a.shape[1] != width:
                raise ValueError(f"masks[{name!r}] has {a.shape[1]} bytes per row, other layers {width}")
            width = a.shape[1]
            _mask_array_name(name)
            out[name] = a
        return out

    def _drop_older_states(self, step: int) -> None:
        # Runs after the new checkpoint is durable, so some state.pt exists at every instant.
        for s, p in self._step_dirs().items():
            if s < step and (p / "state.pt").exists():
                (p / "state.pt").unlink()
                _fsync_dir(p)

    # -- reading ---------------------------------------------------------------------

    def latest_state(self, map_location: Any = None) -> tuple[int, dict[str, Any]] | None:
        """Step and ``torch.load``-ed state of the newest complete checkpoint with a ``state.pt``, or None.

        Loaded with ``weights_only=False`` (the state may hold optimiser and
        RNG objects), so only load run directories you trust.
        """
        import torch

        dirs = self._step_dirs()
        for s in sorted(dirs, reverse=True):
            p = dirs[s] / "state.pt"
            if p.is_file():
                return s, torch.load(p, map_location=map_location, weights_only=False)
        return None

    def read_counts(self, step: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Counts per layer (int64 ``[C, N]``, in model order) and ``class_sizes`` (int64 ``[C]``) of ``step``."""
        with np.load(self.checkpoint_path(step) / "counts.npz", allow_pickle=False) as z:
            counts = {k[len(_LAYER_KEY):]: z[k].astype(np.int64) for k in z.files if k.startswith(_LAYER_KEY)}
            return counts, z["class_sizes"].astype(np.int64)

    def read_masks(self, step: int, layer: str | None = None, *, nodes: Any = None,
                   samples: slice | None = None) -> Any:
        """Packed masks of ``step`` (uint8 ``[N, ceil(S/64)*8]``, the layout of ``pack_masks`` over the set).

        Without ``layer``: a dict of every stored layer (in model order; {} when
        none were saved). With ``layer``: that layer's array only, optionally
        restricted to ``nodes`` (a slice or index array) and to ``samples`` (a
        slice ``start:stop`` of sample indices, returned packed as if those
        samples had been packed on their own); only the chunks holding them are
        read.
        """
        path = self.checkpoint_path(step) / "masks.zarr"
        if not path.exists():
            if layer is not None:
                raise ValueError(f"step {step} of {self.path} has no stored masks")
            return {}
        import zarr

        g = zarr.open_group(str(path), mode="r")
        layers = list(g.attrs["layers"])
        if layer is None:
            return {name: np.asarray(g[_mask_array_name(name)][...]) for name in layers}
        if layer not in layers:
            raise ValueError(f"layer {layer!r} has no stored masks at step {step}; stored: {layers}")
        arr = g[_mask_array_name(layer)]
        rows = slice(None) if nodes is None else nodes
        if samples is None:
            return np.asarray(arr[rows, :])
        from .packed import take_samples

        total = int(arr.shape[1]) * 8
        if not isinstance(samples, slice) or samples.step not in (None, 1):
            raise ValueError(f"samples must be a slice start:stop, got {samples!r}")
        start, stop, _ = samples.indices(total)
        stop = max(start, stop)
        w0, w1 = start // 64 * 8, -(-stop // 64) * 8
        part = np.asarray(arr[rows, w0:w1])
        return take_samples(part, start - w0 * 8, stop - w0 * 8)


def _rows_table(table: str, step: int, epoch: float, seed: int, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    names = SCHEMAS[table].names[3:]
    missing = [n for n in names if any(n not in r for r in rows)]
    if missing:
        raise ValueError(f"{table} rows lack the keys {missing}")
    cols: dict[str, Any] = {"seed": [seed] * len(rows), "step": [step] * len(rows), "epoch": [epoch] * len(rows)}
    cols.update({n: [r[n] for r in rows] for n in names})
    return pa.table(cols, schema=SCHEMAS[table])


def _metric_tables(step: int, epoch: float, seed: int, layers: dict[str, np.ndarray], sizes: np.ndarray,
                   stat_rows: list[tuple[str, float, float]]) -> dict[str, pa.Table]:
    """The nodes, layers and stats tables of one checkpoint, typed by :data:`SCHEMAS`."""
    node_parts: dict[str, list[np.ndarray]] = {k: [] for k in SCHEMAS["nodes"].names[3:]}
    layer_rows: list[LayerMetrics] = []
    for name, c in layers.items():
        try:
            nm = node_metrics_np(c, sizes)
        except (ValueError, TypeError) as e:
            raise type(e)(f"layer {name!r}: {e}") from None
        n = c.shape[1]
        for key, values in (("layer", np.full(n, name, dtype=object)), ("node", np.arange(n, dtype=np.int64)),
                            ("f", nm.fraction), ("p", nm.predictability), ("u", nm.informativeness),
                            ("h_z_given_y", nm.h_z_given_y), ("h_y_given_z", nm.h_y_given_z),
                            ("dead", nm.dead), ("always_active", nm.always_active)):
            node_parts[key].append(values)
        layer_rows.append(LayerMetrics.from_nodes(nm))

    def keys(k: int) -> dict[str, np.ndarray]:
        return {"seed": np.full(k, seed, np.int64), "step": np.full(k, step, np.int64),
                "epoch": np.full(k, epoch, np.float64)}

    nodes = keys(sum(c.shape[1] for c in layers.values())) | {k: np.concatenate(v) for k, v in node_parts.items()}
    layer_cols = keys(len(layers)) | {
        "layer": list(layers),
        "nodes": [lm.nodes for lm in layer_rows],
        "f": [lm.fraction for lm in layer_rows],
        "p": [lm.predictability for lm in layer_rows],
        "u": [lm.informativeness for lm in layer_rows],
        "dead": [lm.dead for lm in layer_rows],
        "always_active": [lm.always_active for lm in layer_rows],
    }
    stat_cols = keys(len(stat_rows)) | {
        "split": [r[0] for r in stat_rows],
        "loss": np.array([r[1] for r in stat_rows], dtype=np.float64),
        "accuracy": np.array([r[2] for r in stat_rows], dtype=np.float64),
    }
    return {t: pa.table(cols, schema=SCHEMAS[t]) for t, cols in
            (("nodes", nodes), ("layers", layer_cols), ("stats", stat_cols))}


def _write_masks(path: Path, masks: dict[str, np.ndarray]) -> None:
    import zarr  # deferred: masks are optional and zarr is only needed to store them

    g = zarr.open_group(str(path), mode="w", zarr_format=3, attributes={"layers": list(masks)})
    for name, m in masks.items():
        # About 1 MiB chunks of whole rows: one node's sample set is read in one piece.
        rows = max(1, min(m.shape[0], (1 << 20) // max(1, m.shape[1])))
        g.create_array(_mask_array_name(name), data=np.ascontiguousarray(m),
                       chunks=(rows, max(1, m.shape[1])), attributes={"layer": name})


def read_table(runs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], table: str) -> pandas.DataFrame:
    """One table of the complete checkpoints of ``runs`` as a DataFrame: :func:`nnphases.runs.read_table`."""
    from .runs import read_table as read  # deferred: nnphases.runs imports this module

    return read(runs, table)
