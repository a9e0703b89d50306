"""Compaction: a finished run's per-checkpoint tables gathered into one Parquet file per table (``tables/``).

The files are written under temporary names, fsynced, renamed, read back and compared with the rows they replace,
and only then does ``tables/manifest.json`` (written atomically) make them the run's tables; the per-checkpoint
files are deleted after that, so a kill at any moment leaves every row readable, from one place or the other."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from .atomic import atomic_write_bytes, fsync_dir, fsync_file, mkdirs
from .errors import DamagedCheckpoint
from .layout import MANIFEST, TABLES_DIR, TMP_PREFIX
from .manifest import checkpoint_id, compacted_body, crc32_file, read_manifest
from .reader import TableReader
from .tables import NODES_KEY, PARTIAL, repeated_columns, same_rows

if TYPE_CHECKING:
    from .rundir import RunDir


def compact(run: RunDir) -> list[Path]:
    """Gather the finished run's per-checkpoint tables into one Parquet file per table and return those files.

    Each table becomes ``tables/<table>-<id>.parquet`` with a row group per checkpoint in step order (tables
    compacted before are carried over). The files are written under temporary names, fsynced and renamed,
    then read back and compared with the rows they replace; ``tables/manifest.json`` (sizes and crc32 of the
    files, each checkpoint's row group, each checkpoint's own manifest checksum) is then written atomically,
    and from that moment readers take those checkpoints' rows from the compacted files; only then are the
    per-checkpoint table files deleted, and the files of an earlier compaction. A kill at any moment leaves
    every row readable from one place or the other, and compacting again finishes the work. Node rows are
    compacted as stored (layers without them are still derived from the counts). Runs under the writer lock
    (RunLocked while another process writes the run); ValueError for a run without its ``DONE`` marker;
    checkpoints written before manifests existed are left as they are; a damaged table raises
    DamagedCheckpoint before anything changes.
    """
    with run.lock():
        if not run.done:
            raise ValueError(f"run {str(run.path)!r} is not finished (it has no DONE marker); compact it once it ends")
        run.remove_leftovers()
        reader = TableReader(run)
        ids = {str(s): checkpoint_id(m) for s, p in sorted(reader.dirs.items()) if (m := read_manifest(p)) is not None}
        if not ids:
            return []
        tables = reader.tables()
        folder = run.path / TABLES_DIR
        old = reader.compacted
        if (
            old is not None
            and old["steps"] == ids
            and not any(
                (reader.dirs[int(s)] / f"{t}.parquet").exists() for t in tables if t not in old["tables"] for s in ids
            )
        ):
            body = old  # compacted already; a killed compaction may have left files to delete
        else:
            body = _write_compacted(run, reader, ids, folder)
        # The compacted files are the run's tables now: the per-checkpoint files they replace can go.
        for s in ids:
            ckpt = reader.dirs[int(s)]
            gone = [p for t in body["tables"] if (p := ckpt / f"{t}.parquet").exists()]
            for p in gone:
                p.unlink()
            if gone:
                fsync_dir(ckpt)
        run.remove_leftovers()  # an earlier compaction's files
        specs = body["tables"]
        return [folder / specs[t]["file"] for t in tables if t in specs and specs[t]["file"] is not None]


def _write_compacted(run: RunDir, reader: TableReader, ids: dict[str, str], folder: Path) -> dict[str, Any]:
    """Write, check and commit (by ``tables/manifest.json``) the compacted tables of the checkpoints ``ids``."""
    mkdirs(folder)
    steps = [int(s) for s in ids]
    specs: dict[str, Any] = {}
    files: dict[str, Any] = {}
    try:
        for table in reader.tables():
            spec = compact_table(reader, table, steps, folder)
            if spec is None:
                continue
            specs[table] = spec
            if spec["file"] is not None:
                path = folder / spec["file"]
                files[spec["file"]] = {"size": path.stat().st_size, "crc32": f"{crc32_file(path):08x}"}
        fsync_dir(folder)
        body = compacted_body(ids, specs, files)
        # Read back through the readers' own path before anything refers to the files.
        check = TableReader(run)
        check.compacted = body
        for table in specs:
            for s in steps:
                if not same_rows(check.stored(s, table), reader.stored(s, table)):
                    raise DamagedCheckpoint(
                        folder,
                        specs[table]["file"] or MANIFEST,
                        f"does not read back as the {table} rows of step {s} it was written from",
                    )
        atomic_write_bytes(folder / MANIFEST, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
    except BaseException:
        try:
            run.remove_leftovers()  # files no manifest names
        except (OSError, DamagedCheckpoint):
            pass  # the error that got here matters more; cleanup() removes them later
        raise
    return body


def compact_table(reader: TableReader, table: str, steps: list[int], folder: Path) -> dict[str, Any] | None:
    """Write the stored rows of ``table`` at ``steps`` into one new file of ``folder`` (a row group per step with
    rows) and return its entry for the manifest of compacted tables: the file (None when no step has rows) and each
    step's row group (None: no rows); None when no step holds the table at all."""
    name = f"{table}-{secrets.token_hex(4)}.parquet"
    tmp = folder / f"{TMP_PREFIX}{name}"
    groups: dict[str, int | None] = {}
    partial: list[int] = []  # steps whose node rows leave out layers (in a file, its schema metadata says so)
    writer = None
    schema = None
    held = False
    written = 0
    try:
        for s in steps:
            t = reader.stored(s, table)
            groups[str(s)] = None
            if t is None:
                continue
            held = True
            if (t.schema.metadata or {}).get(NODES_KEY) == PARTIAL:
                partial.append(s)
            if len(t):
                if writer is None:
                    schema = t.schema.remove_metadata()
                    writer = pq.ParquetWriter(
                        tmp, schema, write_page_checksum=True, use_dictionary=repeated_columns(schema)
                    )
                writer.write_table(t.replace_schema_metadata(None), row_group_size=len(t))
                groups[str(s)] = written
                written += 1
        if writer is not None:
            writer.close()
            writer = None
            fsync_file(tmp)
            os.rename(tmp, folder / name)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    if not held:
        return None
    spec = {"file": name if any(g is not None for g in groups.values()) else None, "row_groups": groups}
    return spec | ({"partial": partial} if partial else {})
