"""RunDir: the facade over one run folder (see :mod:`nnphases.store` for the layout), tying together the files
that each hold one concern: atomic writes, manifests, counts, tables, masks, compaction, the lock and the reader.

One class of about 450 lines because it is the API: what the Recorder, the readers and the command line call."""

from __future__ import annotations

import json
import math
import os
import pickle
import secrets
import shutil
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..options import check_int, one_line
from . import compaction
from .atomic import atomic_write_bytes, fsync_dir, fsync_tree, mkdirs
from .counts import check_counts, read_counts, write_counts
from .errors import DamagedCheckpoint, DamagedCheckpointWarning, MissingCheckpointFile
from .layout import DAMAGED_PREFIX, MANIFEST, TABLES_DIR, TMP_PREFIX, step_dir_name, step_of
from .lock import RunLock, take_lock
from .manifest import check_file, checkpoint_id, read_compacted, read_manifest, unlisted, write_manifest
from .masks import mask_nodes, read_masks
from .reader import TableReader
from .tables import (
    TableLike,
    declared,
    empty,
    finished,
    float_value,
    required_files,
    table_spec,
    unknown_table,
    write_parquet,
)

if TYPE_CHECKING:
    import pandas


class RunDir:
    """One training run's directory (see the module docstring for the layout); nothing is created until a write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a path, got {path!r}")
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
            # Compare parsed values: tuples become lists, key order is irrelevant. A damaged file is named.
            if self.config == json.loads(text):
                return
            raise ValueError(f"{target} already holds a different configuration (pass overwrite=True to replace it)")
        atomic_write_bytes(target, text.encode())

    @property
    def config(self) -> dict[str, Any]:
        """The configuration read from ``config.json`` (FileNotFoundError when it was never written, ValueError
        naming the file when it is not a JSON object)."""
        path = self.path / "config.json"
        try:
            cfg = json.loads(path.read_text())
        except ValueError as e:  # not JSON, or not text at all
            raise ValueError(f"{path} is damaged ({one_line(e, limit=200)})") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"{path} is damaged (holds a {type(cfg).__name__}, not a JSON object)")
        return cfg

    def mark_done(self, *, compact: bool = False) -> None:
        """Write the ``DONE`` marker (atomically), to be called after the last checkpoint.

        The newest checkpoint is verified first (:meth:`verify`): a run whose newest checkpoint is damaged is
        never marked done (DamagedCheckpoint), so resuming it measures that step again. Then, with ``compact``,
        the finished run's tables are compacted (:meth:`compact`).
        """
        if not isinstance(compact, bool):
            raise TypeError(f"compact must be true or false, got {compact!r}")
        steps = self.completed_steps()
        if steps:
            try:
                self.verify(steps[-1])
            except DamagedCheckpoint as e:
                raise type(e)(
                    e.checkpoint,
                    e.file,
                    f"{e.problem}; the run is not marked done (resume it to measure step {steps[-1]} again)",
                ) from None
        body = {"last_step": steps[-1] if steps else None, "checkpoints": len(steps)}
        atomic_write_bytes(self.path / "DONE", (json.dumps(body) + "\n").encode())
        if compact:
            self.compact()

    @property
    def done(self) -> bool:
        """Whether the run finished (its ``DONE`` marker exists)."""
        return (self.path / "DONE").is_file()

    # -- listing and cleanup ---------------------------------------------------------

    def step_dirs(self) -> dict[int, Path]:
        if not self.checkpoints.is_dir():
            return {}
        out = {}
        for p in self.checkpoints.iterdir():
            step = step_of(p)
            if step is not None and p.is_dir():
                out[step] = p
        return out

    def completed_steps(self) -> list[int]:
        """Steps of the complete checkpoints (renamed ``step-*`` directories), ascending."""
        return sorted(self.step_dirs())

    def checkpoint_path(self, step: int) -> Path:
        """Directory of the complete checkpoint at ``step`` (ValueError when there is none)."""
        step = check_int(step, "step", 0)
        p = self.step_dirs().get(step)
        if p is None:
            steps = self.completed_steps()
            shown = f"{steps[:3]} ... {steps[-3:]}" if len(steps) > 6 else str(steps)
            raise ValueError(f"step {step} has no complete checkpoint in {self.path} (complete steps: {shown})")
        return p

    def lock(self) -> RunLock:
        """Take the run folder's writer lock: one process writes a run at a time.

        An advisory ``fcntl.flock`` on ``RUN/.lock`` (the folder is created if needed), which holds the pid,
        host and start time of the holder; the kernel releases it when the process dies, however it dies.
        Another process holding it raises :class:`RunLocked` naming the folder and the holder. Holds of one
        process are shared (a Recorder left unclosed after an error, e.g. in a notebook, does not lock its own
        process out), so two writers of one folder in one process are not caught. Returns a :class:`RunLock`
        (a context manager); the :class:`~nnphases.recording.recorder.Recorder` holds one for its life.
        """
        return take_lock(self.path)

    def cleanup(self) -> list[Path]:
        """Remove leftovers of interrupted writes and set aside damaged checkpoints at the run's end; return the
        paths removed or set aside.

        Leftovers are ``.tmp-*`` in the run, checkpoint and ``tables/`` folders, and files in ``tables/`` its
        manifest does not name (a compaction killed before its manifest). Then the newest checkpoint is verified
        (:meth:`verify`, checksums included) and, while it is damaged, renamed to
        ``checkpoints/.damaged-step-<step>-<random>`` (kept for inspection, never read, never deleted here) with a
        DamagedCheckpointWarning, and the next older one is verified: a resumed run then continues from the
        newest intact checkpoint and measures the steps set aside again. Damaged checkpoints before an intact one
        stay (only training again could replace them); readers refuse them. Runs under the writer lock
        (:meth:`lock`; shared with this process's own holds), so it never touches another live writer's work:
        RunLocked when another process writes the run.
        """
        if not self.path.is_dir():
            return []
        with self.lock():
            return self.remove_leftovers() + self._set_aside_damaged()

    def _set_aside_damaged(self) -> list[Path]:
        moved = []
        dirs = self.step_dirs()
        for s in sorted(dirs, reverse=True):
            try:
                self._verify(dirs[s])
            except DamagedCheckpoint as e:
                if e.checkpoint != dirs[s]:
                    raise  # the run's compacted tables: setting checkpoints aside would not mend them
                target = self.checkpoints / f"{DAMAGED_PREFIX}{dirs[s].name}-{secrets.token_hex(4)}"
                os.rename(dirs[s], target)
                fsync_dir(self.checkpoints)
                warnings.warn(
                    f"{e}; set aside as {target.name}: step {s} will be measured again",
                    DamagedCheckpointWarning,
                    stacklevel=3,
                )
                moved.append(dirs[s])
                continue
            break
        return moved

    def verify(self, step: int, *, checksums: bool = True) -> None:
        """Check the checkpoint of ``step``; DamagedCheckpoint naming the first damaged file.

        With a manifest: every listed file is there with its size and (``checksums``) crc32, and counts.npz,
        layers.parquet and stats.parquet are listed; a ``state.pt`` may be missing (older states are dropped by
        design), and so may the tables :meth:`compact` moved into the run's compacted files, which are checked
        instead. Without one (written before manifests existed): those files and nodes.parquet exist. Either way
        the counts are read and refused when a count lies outside 0..its class size.
        """
        self._verify(self.checkpoint_path(step), checksums)

    @staticmethod
    def _verify(ckpt: Path, checksums: bool = True) -> None:
        manifest = read_manifest(ckpt)
        if manifest is None:
            # Before manifests existed every checkpoint held these four files.
            for name in ("counts.npz", "nodes.parquet", "layers.parquet", "stats.parquet"):
                if not (ckpt / name).is_file():
                    raise MissingCheckpointFile(ckpt, name, "is missing")
        else:
            for name in ("counts.npz", *required_files()):
                if name not in manifest:
                    raise DamagedCheckpoint(ckpt, MANIFEST, f"does not list {name}")
            run = ckpt.parent.parent
            compacted = read_compacted(run)
            moved: set[str] = set()  # tables whose rows of this checkpoint are in the compacted files
            own = step_of(ckpt)
            step = str(own) if own is not None else ""
            if compacted is not None and compacted["steps"].get(step) == checkpoint_id(manifest):
                for table, spec in compacted["tables"].items():
                    if step in spec["row_groups"]:
                        moved.add(f"{table}.parquet")
                        if spec["file"] is not None:
                            check_file(run / TABLES_DIR, spec["file"], compacted["files"][spec["file"]], checksums)
            for name, entry in manifest.items():
                if (name == "state.pt" or name in moved) and not (ckpt / name).exists():
                    continue
                check_file(ckpt, name, entry, checksums)
        read_counts(ckpt)

    def remove_leftovers(self) -> list[Path]:
        removed = []
        tables = self.path / TABLES_DIR
        try:
            compacted = read_compacted(self.path)
        except DamagedCheckpoint:
            compacted = {"files": None}  # which files it names is unknown: keep every one
        named = compacted["files"] if compacted is not None else {}
        if compacted is None and tables.is_dir():
            self._refuse_lost_compaction(tables)
        for folder in (self.path, self.checkpoints, tables):
            if not folder.is_dir():
                continue
            gone = []
            for p in sorted(folder.iterdir()):
                # In tables/ also the files of a compaction killed before its manifest, or superseded by a later one.
                unnamed = folder == tables and named is not None and p.name != MANIFEST and p.name not in named
                if not (p.name.startswith(TMP_PREFIX) or unnamed):
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                gone.append(p)
            if gone:
                fsync_dir(folder)
            removed += gone
        return removed

    def _refuse_lost_compaction(self, tables: Path) -> None:
        """``tables/`` without its manifest holds either a compaction killed before its manifest (the checkpoints
        still have their own files: the leftovers may go) or the run's tables after the manifest was lost (the
        checkpoints' files were removed: the leftovers are the only copy). DamagedCheckpoint naming the missing
        manifest in the second case, before anything is deleted."""
        if not any(p.suffix == ".parquet" for p in tables.iterdir()):
            return
        for _, ckpt in sorted(self.step_dirs().items()):
            try:
                listed = read_manifest(ckpt) or {}
            except DamagedCheckpoint:
                continue  # its own damage is said when it is verified or read
            gone = sorted(n for n in listed if n.endswith(".parquet") and not (ckpt / n).exists())
            if gone:
                raise DamagedCheckpoint(
                    tables,
                    MANIFEST,
                    f"is missing, but the rows of {ckpt.name} ({', '.join(gone)}) are only in the compacted tables "
                    "beside it; nothing was deleted (restore the manifest from a backup, or move the run aside)",
                )

    # -- compacted tables ------------------------------------------------------------

    def compact(self) -> list[Path]:
        """Gather the finished run's per-checkpoint tables into one Parquet file per table and return those files.

        Each table becomes ``tables/<table>-<id>.parquet`` with a row group per checkpoint in step order (tables
        compacted before are carried over); see :mod:`nnphases.store.compaction` for how a kill at any moment
        leaves every row readable. Node rows are compacted as stored (layers without them are still derived from
        the counts). Runs under the writer lock (RunLocked while another process writes the run); ValueError for a
        run without its ``DONE`` marker; checkpoints written before manifests existed are left as they are; a
        damaged table raises DamagedCheckpoint before anything changes.
        """
        return compaction.compact(self)

    def read_table(self, step: int, table: str) -> pandas.DataFrame:
        """The rows of ``table`` at ``step`` as a DataFrame, as :func:`nnphases.store.runs.read_table` reads them.

        Columns and dtypes of the table's declaration (:data:`nnphases.store.SCHEMAS`); no rows for an optional
        table the checkpoint does not hold. Rows come from the compacted files when the run has them for this
        checkpoint (the file's size is checked and its row group read, whose pages carry their own checksums),
        else from the checkpoint's own file (size and crc32); node rows of layers without stored rows are derived
        from the counts. DamagedCheckpoint names the file at fault.
        """
        if not isinstance(table, str) or not table.isidentifier():
            raise unknown_table(table, declared())
        reader = TableReader(self, whole=False)
        if table_spec(table) is None and table not in reader.tables():
            raise unknown_table(table, reader.tables())
        t = reader.table(check_int(step, "step", 0), table)
        return (t if t is not None else empty(table)).to_pandas()

    # -- writing ---------------------------------------------------------------------

    # -- writing ---------------------------------------------------------------------

    def begin_checkpoint(self, step: int) -> Path:
        """A new temporary folder for the checkpoint of ``step``, for files streamed in while measuring; pass it
        to :meth:`write_checkpoint` (which renames it into place) or to :meth:`abort_checkpoint`."""
        step = check_int(step, "step", 0)
        # The name this store gives the step, not a listing: a run of thousands of checkpoints would stat every
        # one of them at each new checkpoint.
        if (self.checkpoints / step_dir_name(step)).is_dir():
            raise ValueError(f"step {step} is already a complete checkpoint in {self.path}")
        mkdirs(self.checkpoints)
        tmp = self.checkpoints / f"{TMP_PREFIX}{step_dir_name(step)}-{secrets.token_hex(4)}"
        tmp.mkdir()
        return tmp

    def abort_checkpoint(self, tmp: Path) -> None:
        """Remove a checkpoint folder begun with :meth:`begin_checkpoint` that will not be completed."""
        if Path(tmp).parent == self.checkpoints and Path(tmp).name.startswith(TMP_PREFIX):
            shutil.rmtree(tmp, ignore_errors=True)

    def write_checkpoint(
        self,
        step: int,
        epoch: float,
        *,
        seed: int,
        counts: Mapping[str, np.ndarray],
        class_sizes: np.ndarray,
        tables: Mapping[str, TableLike] | None = None,
        state: Mapping[str, Any] | None = None,
        tmp: Path | None = None,
    ) -> Path:
        """Write the checkpoint of ``step`` atomically and return its directory.

        ``counts`` maps layer names (in model order) to int ``[C, N]`` counts and ``class_sizes`` is int ``[C]``:
        ``counts.npz``, from which readers derive the node rows no table holds. ``tables`` maps declared tables
        (:func:`nnphases.store.register_table`; each measure declares its own) to this checkpoint's rows: a pyarrow
        Table or a list of dicts of the declared columns, or a function returning one, called here (on the
        writer's thread when the Recorder writes in the background); the key columns seed, step and epoch are put
        in front, and a required table that no one gave rows is written with none. ``state`` is saved with
        ``torch.save`` and replaces the resume state of older checkpoints. ``tmp``: a folder from
        :meth:`begin_checkpoint` holding files streamed in already (e.g. ``masks.zarr``); it is completed and
        renamed, or removed on error. Raises ValueError for a step that is already complete or for malformed
        inputs, before anything is renamed into place.
        """
        try:
            return self._write_checkpoint(
                step,
                epoch,
                seed=seed,
                counts=counts,
                class_sizes=class_sizes,
                tables=tables or {},
                state=state,
                tmp=tmp,
            )
        except BaseException:
            if tmp is not None:
                self.abort_checkpoint(tmp)
            raise

    def _write_checkpoint(
        self,
        step: int,
        epoch: float,
        *,
        seed: int,
        counts: Mapping[str, np.ndarray],
        class_sizes: np.ndarray,
        tables: Mapping[str, TableLike],
        state: Mapping[str, Any] | None,
        tmp: Path | None,
    ) -> Path:
        step = check_int(step, "step", 0)
        seed = check_int(seed, "seed")
        epoch_f = float_value(epoch, "epoch")
        if not math.isfinite(epoch_f) or epoch_f < 0:
            raise ValueError(f"epoch must be finite and >= 0, got {epoch!r}")
        if (self.checkpoints / step_dir_name(step)).is_dir():  # as begin_checkpoint: one stat, not a listing
            raise ValueError(f"step {step} is already a complete checkpoint in {self.path}")
        layers, sizes = check_counts(counts, class_sizes)
        if state is not None and not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        if not isinstance(tables, Mapping):
            raise TypeError(f"tables must be a dict of table name -> rows, got {type(tables).__name__}")
        # Every table finished first (a measure's deferred rows are computed here; the metric kernels validate the
        # counts against the class sizes), so bad inputs fail before anything touches the disk.
        out = {name: finished(name, rows, seed=seed, step=step, epoch=epoch_f) for name, rows in tables.items()}
        for name in required_files():
            table = name[: -len(".parquet")]
            if table not in out:
                out[table] = empty(table)

        name = step_dir_name(step)
        if tmp is None:
            tmp = self.begin_checkpoint(step)
        try:
            write_counts(tmp / "counts.npz", layers, sizes)
            for table, t in out.items():
                write_parquet(t, tmp / f"{table}.parquet")
            if state is not None:
                import torch  # deferred: reading metrics should not pay for importing torch

                with open(tmp / "state.pt", "wb") as f:
                    try:
                        torch.save(dict(state), f)
                    except (pickle.PicklingError, AttributeError, TypeError) as e:
                        raise TypeError(
                            f"state: the resume state of step {step} cannot be saved ({one_line(e, limit=160)}); "
                            "keep tensors, numbers, strings and lists or dicts of them in it"
                        ) from None
            write_manifest(tmp, step)
            fsync_tree(tmp)
            os.rename(tmp, self.checkpoints / name)
        except BaseException as e:
            # A failed write leaves no garbage behind; a killed one leaves .tmp-*, which cleanup() removes.
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and e.filename is None:
                # A full disk met inside torch.save or a writer that knows no path: name the checkpoint.
                raise OSError(e.errno, e.strerror or str(e), str(self.checkpoints / name)) from None
            raise
        fsync_dir(self.checkpoints)
        if state is not None:
            self._drop_older_states(step)
        return self.checkpoints / name

    def _drop_older_states(self, step: int) -> None:
        # Runs after the new checkpoint is durable and verified, and keeps the newest older state too: if the new
        # checkpoint is damaged later, a resume continues from the one before (cleanup sets the damaged one aside).
        # Sizes, not checksums: the sums were taken from these bytes a moment ago, and summing them again from the
        # page cache would prove no more while doubling the writer's reads.
        self.verify(step, checksums=False)
        dirs = self.step_dirs()
        older = sorted(s for s, p in dirs.items() if s < step and (p / "state.pt").exists())
        for s in older[:-1]:
            (dirs[s] / "state.pt").unlink()
            fsync_dir(dirs[s])

    # -- reading ---------------------------------------------------------------------

    # -- reading ---------------------------------------------------------------------

    def latest_state(self, map_location: Any = None) -> tuple[int, dict[str, Any]] | None:
        """Step and ``torch.load``-ed state of the newest complete checkpoint with an intact ``state.pt``, or None.

        Each ``state.pt`` is checked against its manifest (size and crc32) before it is loaded; a damaged one
        (or, without a manifest, one that cannot be unpickled: truncated, garbage) is passed over with a
        DamagedCheckpointWarning naming it, for the next older state (the two newest are kept). A state whose
        checksum matches but that does not load raises as torch does: the bytes are intact, the environment is
        not. Loaded with ``weights_only=False`` (the state may hold optimiser and RNG objects), so only load run
        directories you trust.
        """
        import torch

        dirs = self.step_dirs()
        for s in sorted(dirs, reverse=True):
            ckpt = dirs[s]
            if not (ckpt / "state.pt").is_file():
                continue
            try:
                manifest = read_manifest(ckpt)
                if manifest is not None:
                    if "state.pt" not in manifest:
                        raise unlisted(ckpt, "state.pt")
                    check_file(ckpt, "state.pt", manifest["state.pt"], checksum=True)
                try:
                    state = torch.load(ckpt / "state.pt", map_location=map_location, weights_only=False)
                except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
                    if manifest is not None:
                        raise
                    raise DamagedCheckpoint(ckpt, "state.pt", f"cannot be loaded ({one_line(e, limit=200)})") from None
                if not isinstance(state, dict):
                    raise DamagedCheckpoint(ckpt, "state.pt", f"holds a {type(state).__name__}, not a dict")
            except DamagedCheckpoint as e:
                warnings.warn(f"{e}; using an older resume state", DamagedCheckpointWarning, stacklevel=2)
                continue
            return s, state
        return None

    def read_counts(self, step: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Counts per layer (int64 ``[C, N]``, in model order) and ``class_sizes`` (int64 ``[C]``) of ``step``.

        ``counts.npz`` is checked against the manifest (size and crc32) and its contents against each other: a
        count outside 0..its class size, or arrays of the wrong shape, raise DamagedCheckpoint.
        """
        return read_counts(self.checkpoint_path(step))

    def mask_nodes(self, step: int) -> dict[str, int]:
        """Each layer with stored masks at ``step`` and its number of nodes, in model order ({} when none were
        kept); from the arrays' metadata, verified against the manifest, without reading their chunks."""
        return mask_nodes(self.checkpoint_path(step))

    def read_masks(
        self, step: int, layer: str | None = None, *, nodes: Any = None, samples: slice | None = None
    ) -> Any:
        """Packed masks of ``step`` (uint8 ``[N, ceil(S/64)*8]``, the layout of ``pack_masks`` over the set).

        Without ``layer``: a dict of every stored layer (in model order; {} when
        none were saved). With ``layer``: that layer's array only, optionally
        restricted to ``nodes`` (a slice or index array) and to ``samples`` (a
        slice ``start:stop`` of sample indices, returned packed as if those
        samples had been packed on their own); only the chunks holding them are
        read.

        Checked against the manifest: every file of each array read is there with its size and no other is;
        crc32 for the metadata always and for the chunks when whole layers are read (a node or sample range
        reads only some chunks, so theirs are not summed). Zarr's own decoding errors and arrays that are not
        uint8 ``[N, 8k]`` raise DamagedCheckpoint too.
        """
        return read_masks(self.checkpoint_path(step), layer, nodes=nodes, samples=samples, where=f"step {step}")
