"""The store: crash-safe storage of one training run's checkpoints, tables and resume state, one file per concern.

``layout`` names the folders and files; ``atomic`` writes durably; ``manifest`` lists every file's size and crc32
and checks them; ``counts`` is the counts codec and derives node rows; ``tables`` holds the tables the measures
declare and reads and writes them; ``masks`` streams and reads bit-packed masks; ``reader`` reads one run's tables
wherever their rows are; ``compaction`` gathers them into one file per table; ``lock`` keeps one writer per run;
``rundir`` is the :class:`RunDir` facade over all of them; ``runs`` finds run folders and reads tables across
them; ``errors`` holds what the store raises. The store imports only the kernels (for derived node rows) and
:mod:`nnphases.options`.

One directory holds one training run (one seed)::

    RUN/
      config.json                 resolved configuration (written atomically, first)
      checkpoints/
        step-000000000123/        one complete checkpoint (a directory renamed into place as a whole)
          counts.npz              counts per layer [C, N] in the narrowest unsigned dtype (read as int64): small layers
                                  as "layer:<name>" arrays, large ones blosc-compressed as "blosc:<name>" (uint8
                                  bytes; dtype and shape in the "blosc_layers" JSON entry); "class_sizes" -> [C]
          <table>.parquet         one per table a measure declares (seed, step, epoch, then its own columns):
                                  layers (required) and nodes (optional: the layers SampleSets chose; readers
                                  derive the others from the counts), stats (required), probes, and any new one
          masks.zarr              optional: one uint8 array per layer [N, ceil(S/64)*8] (bit-packed masks), chunked
          state.pt                optional resume state (torch.save of a dict), kept in the two newest checkpoints
          manifest.json           size and crc32 of every file above (masks.zarr's files one by one)
        .tmp-...                  in-progress checkpoint (deleted on resume)
        .damaged-step-...         a damaged checkpoint set aside on resume (kept for inspection, never read)
      tables/                     optional, after RunDir.compact(): one Parquet file per table, a row group per
        <table>-<id>.parquet      checkpoint, and manifest.json (their sizes and crc32, and the checkpoints they
        manifest.json             hold, each by the checksum of its own manifest)
      .lock                       the writer lock (flock), holding the writer's pid and host
      DONE                        written last when the run finished

Nothing is lost when the writer is killed at any moment: a checkpoint is
written into ``checkpoints/.tmp-step-<step>-<random>/``, every file and
directory in it is fsynced, and the directory is renamed to
``step-<step>`` (then ``checkpoints/`` is fsynced), so a ``step-*``
directory is always complete and a ``.tmp-*`` one is garbage that
:meth:`RunDir.cleanup` removes. ``state.pt`` of a checkpoint is deleted
only once two newer checkpoints hold one and the newest is verified, so a
kill never leaves a run without resume state and a damaged newest
checkpoint leaves the state before it.

What a checkpoint holds is written down before the rename: ``manifest.json``
lists every file with its size and crc32 (a checkpoint is never rewritten,
except that its ``state.pt`` may be dropped). Readers verify what they read
and raise :class:`DamagedCheckpoint` (a ValueError; :class:`MissingCheckpointFile`
also a FileNotFoundError) naming the checkpoint and the file: sizes and
checksums of the files they read (mask chunks: sizes only when a node or
sample range is read), Parquet columns against the tables' declarations (:data:`SCHEMAS`), rows against
the folder's step, counts against their class sizes. Checkpoints written
before manifests existed get these structural checks only.
:meth:`RunDir.latest_state` passes over a damaged state for an older one;
:meth:`RunDir.cleanup` sets a damaged newest checkpoint aside so a resumed
run measures it again; :meth:`RunDir.mark_done` refuses to mark a run whose
newest checkpoint is damaged. ``config.json`` and ``DONE`` are single files
written by :func:`atomic_write_bytes` (temp file in the same folder, fsync,
rename, fsync of the folder). Step numbers are zero-padded to 12 digits so
names sort in step order; readers parse the number and do not rely on it.
Parquet columns: seed, step, node (int64), epoch and metrics (float64,
NaN where a metric is undefined), layer and split (string), dead and
always_active (bool per node, int64 counts per layer); ``f``, ``p``, ``u``
are the fraction, predictability and informativeness of
:mod:`nnphases.kernels.metrics`, entropies in nats. Node rows follow the layer
order of ``counts`` (shallowest first, as given) and node index. In
``masks.zarr`` (zarr format 3) each layer's array is named by the
percent-encoded layer name, carries the name in its ``layer`` attribute,
and the group's ``layers`` attribute lists the layers in order. One process
writes a run at a time (:meth:`RunDir.lock`, which the Recorder holds);
readers take no lock and may run alongside it.

Node rows are a pure function of the counts, so ``nodes.parquet`` holds only
the layers SampleSets' ``node_tables`` option asks for and
every reader (:meth:`RunDir.read_table`, :func:`nnphases.store.runs.read_table`)
computes the missing layers' rows from ``counts.npz`` with
:func:`nnphases.kernels.node_metrics`, the function that writes them: the same
rows, dtypes and order either way (bit for bit where the same backend computes
them; a machine without the C++ extension agrees within the kernels' documented
tolerance). :meth:`RunDir.compact` gathers a finished
run's per-checkpoint tables into ``tables/``: the files are written under
temporary names, fsynced, renamed, read back and compared with the rows they
replace, and only then does ``tables/manifest.json`` (written atomically) make
them the run's tables; the per-checkpoint files are deleted after that, so a
kill at any moment leaves every row readable, from one place or the other.
"""

from .atomic import atomic_write_bytes, remove_stale_temporaries
from .errors import DamagedCheckpoint, DamagedCheckpointWarning, MissingCheckpointFile, RunLocked
from .layout import mask_array_name, output_folder
from .lock import RunLock, lock_holder
from .manifest import read_compacted, read_manifest, read_verified
from .records import read_records, write_records
from .rundir import RunDir
from .runs import class_sizes, layer_order, read_table, run_dirs
from .tables import SCHEMAS, TableLike, TableSpec, declared, forget_table, register_table, table_spec

__all__ = [
    "RunDir",
    "RunLock",
    "RunLocked",
    "lock_holder",
    "DamagedCheckpoint",
    "MissingCheckpointFile",
    "DamagedCheckpointWarning",
    "atomic_write_bytes",
    "remove_stale_temporaries",
    "output_folder",
    "mask_array_name",
    "read_records",
    "write_records",
    "read_table",
    "run_dirs",
    "class_sizes",
    "layer_order",
    "read_manifest",
    "read_verified",
    "read_compacted",
    "register_table",
    "forget_table",
    "table_spec",
    "declared",
    "TableSpec",
    "TableLike",
    "SCHEMAS",
]
