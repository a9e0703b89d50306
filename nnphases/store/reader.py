"""Reading one run's tables checkpoint by checkpoint, wherever their rows are: in the run's compacted files when
those hold the checkpoint, else in the checkpoint's own files; node rows that neither holds are derived from the
counts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..options import one_line
from .counts import NODES, derive_nodes, read_counts
from .errors import DamagedCheckpoint, MissingCheckpointFile
from .layout import MANIFEST, TABLES_DIR
from .manifest import check_file, checkpoint_id, read_compacted, read_manifest, read_verified
from .tables import NODES_KEY, PARTIAL, arrow_owned, conform, declared, empty, ordered, read_parquet, table_spec

if TYPE_CHECKING:
    from .rundir import RunDir


def is_required(table: str) -> bool:
    """Whether every checkpoint holds ``table``'s rows (an empty table when it had none)."""
    spec = table_spec(table)
    return spec is not None and spec.required


class TableReader:
    """One run's tables checkpoint by checkpoint: from its compacted files where they hold the checkpoint, else
    from the checkpoint's own files; node rows of layers neither holds are derived from the counts."""

    def __init__(self, run: RunDir, *, whole: bool = True) -> None:
        self.run = run
        # whole: every row group of a compacted file will be read, so its crc32 is checked once for all; a reader
        # of one checkpoint checks its size and reads its row group, whose pages carry their own checksums.
        self.whole = whole
        self._load()

    def _load(self) -> None:
        self.dirs = self.run.step_dirs()
        self.compacted = read_compacted(self.run.path)
        self._files: dict[str, pq.ParquetFile] = {}

    def tables(self) -> list[str]:
        """The run's tables: the declared ones and any other its checkpoints or compacted files hold."""
        found: set[str] = set(declared())
        for ckpt in self.dirs.values():
            manifest = read_manifest(ckpt)
            listed = manifest if manifest is not None else {p.name: None for p in ckpt.glob("*.parquet")}
            found.update(n[: -len(".parquet")] for n in listed if "/" not in n and n.endswith(".parquet"))
        if self.compacted is not None:
            found.update(self.compacted["tables"])
        return ordered(found)

    def table(self, step: int, table: str) -> pa.Table | None:
        """The rows of ``table`` at ``step`` (None: an optional table the checkpoint does not hold)."""
        try:
            return self._table(step, table)
        except MissingCheckpointFile:
            # Readers take no lock: a compaction may have moved the rows meanwhile. Look once more.
            if read_compacted(self.run.path) == self.compacted:
                raise
            self._load()
            return self._table(step, table)

    def _table(self, step: int, table: str) -> pa.Table | None:
        ckpt = self.dirs.get(step)
        if ckpt is None:
            ckpt = self.run.checkpoint_path(step)  # ValueError naming the complete steps
        manifest = read_manifest(ckpt)
        stored = self.stored(step, table, ckpt, manifest)
        if table != "nodes":
            return stored
        return self._nodes(step, ckpt, manifest, stored)

    def covered(self, step: int, table: str, manifest: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The compacted table that holds ``step``'s rows of ``table``, or None."""
        c = self.compacted
        if c is None or manifest is None or c["steps"].get(str(step)) != checkpoint_id(manifest):
            return None
        spec = c["tables"].get(table)
        return spec if spec is not None and str(step) in spec["row_groups"] else None

    def stored(
        self, step: int, table: str, ckpt: Path | None = None, manifest: Mapping[str, Any] | None = None
    ) -> pa.Table | None:
        """The rows of ``table`` stored for ``step`` (compacted or in the checkpoint; nothing derived), or None when
        none are: an optional table not written, or node rows left to be derived."""
        if ckpt is None:
            ckpt = self.dirs[step]
            manifest = read_manifest(ckpt)
        spec = self.covered(step, table, manifest)
        if spec is not None:
            group = spec["row_groups"][str(step)]
            if group is None:
                return empty(table) if is_required(table) else None
            return self._row_group(spec["file"], table, step, group)
        name = f"{table}.parquet"
        if (
            is_required(table)
            or (ckpt / name).exists()
            or (manifest is not None and name in manifest)
            or (table == "nodes" and manifest is None)
        ):  # before manifests, every checkpoint had node rows
            return read_parquet(ckpt, step, table, manifest)
        return None

    def _row_group(self, name: str, table: str, step: int, group: Any) -> pa.Table:
        assert self.compacted is not None
        folder = self.run.path / TABLES_DIR
        entry = self.compacted["files"][name]
        if name not in self._files:
            if self.whole:
                source: Any = pa.BufferReader(arrow_owned(read_verified(folder, name, self.compacted["files"])))
            else:
                check_file(folder, name, entry, checksum=False)
                source = str(folder / name)
            try:
                self._files[name] = pq.ParquetFile(source, page_checksum_verification=True)
            except Exception as e:
                raise DamagedCheckpoint(
                    folder, name, f"is not a readable Parquet file ({one_line(e, limit=200)})"
                ) from None
        f = self._files[name]
        if not isinstance(group, int) or isinstance(group, bool) or not 0 <= group < f.num_row_groups:
            raise DamagedCheckpoint(
                folder, MANIFEST, f"names row group {group!r} of {name}, which has {f.num_row_groups}"
            )
        try:
            t = f.read_row_group(group)
        except Exception as e:
            raise DamagedCheckpoint(folder, name, f"cannot be read ({one_line(e, limit=200)})") from None
        if step in self.compacted["tables"][table].get("partial", ()):
            t = t.replace_schema_metadata({NODES_KEY: PARTIAL})
        return conform(t, folder, name, table, step)

    def _nodes(self, step: int, ckpt: Path, manifest: Mapping[str, Any] | None, stored: pa.Table | None) -> pa.Table:
        """Node rows of every layer, in the layers table's order: stored ones as stored, the others derived."""
        if stored is not None and (stored.schema.metadata or {}).get(NODES_KEY) != PARTIAL:
            return stored  # every layer's rows: the other files are not needed
        layers = self.stored(step, "layers", ckpt, manifest)
        assert layers is not None
        names = [str(x) for x in layers.column("layer").to_pylist()]
        widths = layers.column("nodes").to_pylist()
        if not names:
            return NODES.schema.empty_table()
        parts: dict[str, pa.Table] = {}
        if stored is not None and len(stored):
            codes = stored.column("layer").combine_chunks().dictionary_encode()
            index = codes.indices.to_numpy(zero_copy_only=False)
            for k, name in enumerate(codes.dictionary.to_pylist()):
                parts[name] = stored.take(pa.array(np.flatnonzero(index == k)))
            spec = self.covered(step, "nodes", manifest)
            where: tuple[Path, str] = (
                (ckpt, "nodes.parquet") if spec is None else (self.run.path / TABLES_DIR, spec["file"])
            )
            for name, part in parts.items():
                width = widths[names.index(name)] if name in names else None
                if width is None or len(part) != width:
                    raise DamagedCheckpoint(
                        *where,
                        f"holds {len(part)} rows of layer {name!r}, which has "
                        f"{'no' if width is None else width} nodes in layers.parquet",
                    )
        missing = [n for n in names if n not in parts]
        if missing:
            counts, sizes = read_counts(ckpt)
            seed, epoch = int(layers.column("seed")[0].as_py()), float(layers.column("epoch")[0].as_py())
            for name, width in zip(names, widths, strict=True):
                if name not in parts:
                    parts[name] = derive_nodes(counts, sizes, name, width, ckpt=ckpt, seed=seed, step=step, epoch=epoch)
        return pa.concat_tables([parts[n] for n in names]).replace_schema_metadata(None)
