"""Run directories: crash-safe storage of one training run's checkpoints, metrics and resume state.

One directory holds one training run (one seed)::

    RUN/
      config.json                 resolved configuration (written atomically, first)
      checkpoints/
        step-000000000123/        one complete checkpoint (a directory renamed into place as a whole)
          counts.npz              counts per layer [C, N] in the narrowest unsigned dtype (read as int64): small layers
                                  as "layer:<name>" arrays, large ones blosc-compressed as "blosc:<name>" (uint8
                                  bytes; dtype and shape in the "blosc_layers" JSON entry); "class_sizes" -> [C]
          nodes.parquet           optional: seed, step, epoch, layer, node, f, p, u, h_z_given_y, h_y_given_z, dead,
                                  always_active, for the layers chosen by node_tables (readers derive the others)
          layers.parquet          seed, step, epoch, layer, nodes, f, p, u, dead, always_active
          stats.parquet           seed, step, epoch, split ("train"/"val"), loss, accuracy
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
sample range is read), Parquet columns against :data:`SCHEMAS`, rows against
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
the layers ``node_tables`` asks for (see :data:`NODE_TABLE_MAX_WIDTH`) and
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

from __future__ import annotations

import fcntl
import io
import json
import math
import numbers
import os
import pickle
import re
import secrets
import shutil
import socket
import threading
import time
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import pandas

    from ..kernels.metrics import NodeMetrics

__all__ = ["RunDir", "RunLock", "RunLocked", "DamagedCheckpoint", "MissingCheckpointFile",
           "DamagedCheckpointWarning", "atomic_write_bytes", "read_table", "read_manifest", "read_verified",
           "read_compacted", "output_folder", "TABLES", "SPLITS", "SCHEMAS", "NODE_TABLES", "NODE_TABLE_MAX_WIDTH"]

TABLES = ("nodes", "layers", "stats", "probes")  # probes: optional, only where probes were fitted
SPLITS = ("train", "val")

# Which layers get per-node rows in nodes.parquet: "auto" those of at most NODE_TABLE_MAX_WIDTH nodes.
NODE_TABLES = ("auto", "always", "never")
# The rows cost more than the counts they come from (about 38 bytes a node in Parquet against 11 for 10 classes'
# compressed counts, and most of a checkpoint's host time), and readers derive a missing layer's rows at 1-2x the
# time of reading them (benchmarks/RESULTS.md). So they are written where they are cheap and handy for tools that
# read Parquet directly: fully connected layers (80 to 4,096 nodes in the presets) and per-channel conv sites;
# the per-position maps of conv layers (VGG-11: 2,048 to 65,536 nodes a site) are derived when read.
NODE_TABLE_MAX_WIDTH = 4096

_STEP_DIR = re.compile(r"step-(\d+)")
_TMP_PREFIX = ".tmp-"
_LAYER_KEY = "layer:"
_BLOSC_KEY = "blosc:"
_BLOSC_LAYERS = "blosc_layers"
# A layer's counts are compressed from this size on: below it blosc saves a few KiB, and a plain .npy entry stays
# readable by np.load alone. Blosc takes at most 2 GiB a call.
_COMPRESS_MIN_BYTES = 1 << 16
_COMPRESS_MAX_BYTES = (1 << 31) - (1 << 16)
_REQUIRED_FILES = ("counts.npz", "layers.parquet", "stats.parquet")
_LEGACY_REQUIRED_FILES = ("counts.npz", "nodes.parquet", "layers.parquet", "stats.parquet")  # before manifests
_MANIFEST = "manifest.json"
_TABLES_DIR = "tables"
# In nodes.parquet's schema metadata when some layers were left out (their rows are derived): a file without it
# holds every layer, and readers need nothing else.
_NODES_KEY, _PARTIAL = b"nnphases.nodes", b"partial"
_DAMAGED_PREFIX = ".damaged-"
_LOCK_FILE = ".lock"

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


def output_folder(path: object, name: str) -> Path:
    """``path`` as a folder to write into, checked before anything is loaded or written (nothing is created):
    ValueError naming ``name`` and the path when it is empty, a file, below a file, has a name longer than the
    file system allows, or its nearest existing folder cannot be written; TypeError when it is not a path.
    Without this, a long run would load its data (or train) and only then fail at its first write."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path, got {path!r}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text:
        raise ValueError(f"{name} must name a folder, got {text!r}")
    p = Path(text)
    existing = p.absolute()
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        limit = os.pathconf(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in p.parts:
        if len(os.fsencode(part)) > limit:
            raise ValueError(f"{name} {text!r}: the name {part[:16] + '...'!r} is longer than {limit} bytes, the most "
                             "the file system allows")
    if existing == p.absolute() and not existing.is_dir():
        raise ValueError(f"{name} {text!r} exists and is not a folder")
    if not existing.is_dir():
        raise ValueError(f"{name} {text!r}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {text!r}: {str(existing)!r} cannot be written (permission denied)")
    return p


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


_COUNT_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.int32, np.int64))


def _narrow(counts: np.ndarray, top: int | None = None) -> np.ndarray:
    """Non-negative counts in the narrowest unsigned dtype that holds ``top`` (their maximum when None; the
    writer passes the largest class size, which bounds counts the metric kernels accepted, and so saves a
    pass over the table)."""
    if top is None:
        top = int(counts.max()) if counts.size else 0
    return counts.astype(np.min_scalar_type(top) if top > 0 else np.uint8, copy=False)


def _blosc() -> Any:
    from numcodecs import Blosc  # deferred: numcodecs comes with zarr and is needed only for large layers

    # lz4 on bit-shuffled counts: on a VGG-11-sized checkpoint 0.57 of the plain bytes, written (with the fsync)
    # as fast as the plain file; zstd saved no more and took 2-5x longer (benchmarks/RESULTS.md).
    return Blosc(cname="lz4", clevel=1, shuffle=Blosc.BITSHUFFLE)


def _counts_arrays(layers: Mapping[str, np.ndarray], sizes: np.ndarray) -> dict[str, np.ndarray]:
    """The entries of counts.npz: each layer narrowed, large ones compressed, in model order."""
    arrays: dict[str, np.ndarray] = {}
    compressed: dict[str, dict[str, Any]] = {}
    codec = None
    top = int(sizes.max()) if sizes.size else 0
    for layer, c in layers.items():
        a = _narrow(c, top)
        if _COMPRESS_MIN_BYTES <= a.nbytes <= _COMPRESS_MAX_BYTES:
            codec = codec or _blosc()
            arrays[_BLOSC_KEY + layer] = np.frombuffer(codec.encode(np.ascontiguousarray(a)), np.uint8)
            compressed[layer] = {"dtype": a.dtype.name, "shape": list(a.shape)}
        else:
            arrays[_LAYER_KEY + layer] = a
    arrays["class_sizes"] = sizes
    if compressed:
        arrays[_BLOSC_LAYERS] = np.array(json.dumps(compressed))
    return arrays


def _decode_counts(arrays: Mapping[str, np.ndarray], bad: Any) -> dict[str, np.ndarray]:
    """Layer name -> stored counts (any unsigned or signed integer dtype) from counts.npz's entries, in order."""
    meta: dict[str, Any] = {}
    if _BLOSC_LAYERS in arrays:
        try:
            meta = json.loads(str(arrays[_BLOSC_LAYERS][()]))
        except (ValueError, TypeError) as e:
            raise bad(f"has an unreadable {_BLOSC_LAYERS} entry ({_brief(e)})") from None
        if not isinstance(meta, dict):
            raise bad(f"has an unreadable {_BLOSC_LAYERS} entry (not a JSON object)")
    out: dict[str, np.ndarray] = {}
    codec = None
    for key, a in arrays.items():
        if key.startswith(_LAYER_KEY):
            out[key[len(_LAYER_KEY):]] = a
        elif key.startswith(_BLOSC_KEY):
            name = key[len(_BLOSC_KEY):]
            info = meta.get(name)
            if (not isinstance(info, dict) or info.get("dtype") not in ("uint8", "uint16", "uint32", "uint64")
                    or not isinstance(info.get("shape"), list) or len(info["shape"]) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in info["shape"])):
                raise bad(f"layer {name!r}: {_BLOSC_LAYERS} gives no valid dtype and shape ({info!r:.80})")
            frame = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
            # Blosc trusts its 16-byte header: a frame cut short would be decoded from whatever memory follows
            # it, so its stated compressed size must be the frame's own.
            if frame.size < 16 or int(frame[12:16].view("<u4")[0]) != frame.size:
                stated = int(frame[12:16].view("<u4")[0]) if frame.size >= 16 else None
                raise bad(f"layer {name!r} cannot be decompressed (a frame of {frame.size} bytes whose header "
                          f"states {stated} bytes)")
            codec = codec or _blosc()
            try:
                raw = codec.decode(frame)
            except Exception as e:  # blosc raises RuntimeError or ValueError for bytes it did not write
                raise bad(f"layer {name!r} cannot be decompressed ({_brief(e)})") from None
            dtype = np.dtype(info["dtype"])
            shape = tuple(info["shape"])
            if len(raw) != math.prod(shape) * dtype.itemsize:
                raise bad(f"layer {name!r} decompresses to {len(raw)} bytes, not {info['dtype']} {list(shape)}")
            out[name] = np.frombuffer(raw, dtype).reshape(shape)
    return out


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


# -- damage ----------------------------------------------------------------------------------


class DamagedCheckpoint(ValueError):
    """A file of a complete checkpoint is missing, truncated, altered or impossible; ``checkpoint`` is its folder,
    ``file`` its path inside it, and the one-line message names both."""

    def __init__(self, checkpoint: str | os.PathLike[str], file: str, problem: str) -> None:
        self.checkpoint, self.file, self.problem = Path(checkpoint), file, problem
        self.message = f"damaged checkpoint: {self.checkpoint / file} {problem}"
        super().__init__(self.message)

    def __str__(self) -> str:
        # Defined here: MissingCheckpointFile would otherwise print as an OSError built from these arguments.
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.checkpoint, self.file, self.problem)


class MissingCheckpointFile(DamagedCheckpoint, FileNotFoundError):
    """A file a checkpoint needs (or its manifest lists) does not exist; also a FileNotFoundError."""


class DamagedCheckpointWarning(UserWarning):
    """A damaged checkpoint was passed over (an older resume state used, a checkpoint set aside or skipped)."""


def _brief(e: BaseException) -> str:
    """An exception as one short line (pyarrow and zarr errors run to several)."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def _files_checksum(files: Mapping[str, Any]) -> int:
    return zlib.crc32(json.dumps(files, sort_keys=True, separators=(",", ":")).encode())


def _write_manifest(folder: Path, step: int) -> None:
    """List every file under ``folder`` with its size and crc32 in ``folder/manifest.json``.

    crc32 rather than a cryptographic hash: it guards against damage, not tampering, and runs at memory speed
    (about 4x blake2b), which matters for checkpoints with large masks. The manifest carries a checksum of its
    own list, so a damaged manifest is told apart from a damaged file.
    """
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if rel != _MANIFEST:
                files[rel] = {"size": path.stat().st_size, "crc32": f"{_crc32_file(path):08x}"}
    body = {"format": 1, "step": step, "algorithm": "crc32", "files": files,
            "files_crc32": f"{_files_checksum(files):08x}"}
    with open(folder / _MANIFEST, "w") as f:
        json.dump(body, f, indent=1, sort_keys=True)
        f.write("\n")


def read_manifest(checkpoint: str | os.PathLike[str]) -> dict[str, dict[str, Any]] | None:
    """The files of a checkpoint folder (relative path -> ``{"size", "crc32"}``) from its ``manifest.json``, or None
    for a checkpoint written before manifests existed; DamagedCheckpoint when the manifest itself is damaged."""
    ckpt = Path(checkpoint)
    try:
        raw = (ckpt / _MANIFEST).read_bytes()
    except FileNotFoundError:
        return None

    def bad(problem: str) -> DamagedCheckpoint:
        return DamagedCheckpoint(ckpt, _MANIFEST, problem)

    try:
        body = json.loads(raw)
    except ValueError as e:
        raise bad(f"is not JSON ({_brief(e)})") from None
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(body, dict) or body.get("format") != 1 or not isinstance(files, dict):
        raise bad("is not a format-1 manifest (a dict with format 1 and files)")
    for rel, entry in files.items():
        if (not isinstance(entry, dict) or isinstance(entry.get("size"), bool)
                or not isinstance(entry.get("size"), int) or entry["size"] < 0
                or not isinstance(entry.get("crc32"), str) or not re.fullmatch(r"[0-9a-f]{8}", entry["crc32"])
                or rel.startswith("/") or ".." in rel.split("/")):
            raise bad(f"has a malformed entry {rel!r}: {entry!r:.80}")
    if body.get("files_crc32") != f"{_files_checksum(files):08x}":
        raise bad(f"does not match its own checksum ({body.get('files_crc32')!r:.20})")
    m = _STEP_DIR.fullmatch(ckpt.name)
    if m and body.get("step") != int(m.group(1)):
        raise bad(f"belongs to step {body.get('step')!r}, not to its folder's step {int(m.group(1))}")
    return files


def _unlisted(ckpt: Path, name: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(ckpt, name, f"is not listed in {_MANIFEST}")


def _check_file(ckpt: Path, name: str, entry: Mapping[str, Any], checksum: bool) -> None:
    """Size (and crc32 when ``checksum``) of one file against its manifest entry."""
    path = ckpt / name
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise MissingCheckpointFile(ckpt, name, f"is missing ({_MANIFEST} lists it)") from None
    if size != entry["size"]:
        raise DamagedCheckpoint(ckpt, name, f"has {size} bytes, {_MANIFEST} lists {entry['size']}")
    if checksum:
        crc = f"{_crc32_file(path):08x}"
        if crc != entry["crc32"]:
            raise DamagedCheckpoint(ckpt, name, f"has crc32 {crc}, {_MANIFEST} lists {entry['crc32']}")


def read_verified(checkpoint: str | os.PathLike[str], name: str,
                  manifest: Mapping[str, Mapping[str, Any]] | None) -> bytes:
    """The bytes of the file ``name`` of a checkpoint folder, checked against ``manifest`` (from
    :func:`read_manifest`: size and crc32; None: unchecked); DamagedCheckpoint when they differ or it is missing."""
    ckpt = Path(checkpoint)
    if manifest is not None and name not in manifest:
        if (ckpt / name).exists():
            raise _unlisted(ckpt, name)
        raise MissingCheckpointFile(ckpt, name, "is missing")
    try:
        data = (ckpt / name).read_bytes()
    except FileNotFoundError:
        raise MissingCheckpointFile(ckpt, name, "is missing") from None
    if manifest is not None:
        entry = manifest[name]
        if len(data) != entry["size"]:
            raise DamagedCheckpoint(ckpt, name, f"has {len(data)} bytes, {_MANIFEST} lists {entry['size']}")
        crc = f"{zlib.crc32(data):08x}"
        if crc != entry["crc32"]:
            raise DamagedCheckpoint(ckpt, name, f"has crc32 {crc}, {_MANIFEST} lists {entry['crc32']}")
    return data


def _verify_tree(ckpt: Path, prefix: str, manifest: Mapping[str, Mapping[str, Any]], checksum: Any) -> None:
    """Every file under ``ckpt/prefix`` is listed and every listed one is there, with its size (and crc32 where
    ``checksum(name)`` says so)."""
    listed = {n for n in manifest if n.startswith(prefix)}
    for dirpath, _dirnames, filenames in os.walk(ckpt / prefix):
        for f in filenames:
            rel = (Path(dirpath) / f).relative_to(ckpt).as_posix()
            if rel not in listed:
                raise _unlisted(ckpt, rel)
    for name in sorted(listed):
        _check_file(ckpt, name, manifest[name], checksum(name))


def _read_counts(ckpt: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Counts and class sizes of a checkpoint folder, verified, and refused when a count is outside 0..class size."""
    data = read_verified(ckpt, "counts.npz", read_manifest(ckpt))

    def bad(problem: str) -> DamagedCheckpoint:
        return DamagedCheckpoint(ckpt, "counts.npz", problem)

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile, zlib and format errors: any of them means the bytes are not an npz
        raise bad(f"cannot be read ({_brief(e)})") from None
    stored = _decode_counts(arrays, bad)
    sizes = arrays.get("class_sizes")
    if sizes is None:
        raise bad("holds no class_sizes")
    if sizes.ndim != 1 or sizes.dtype.kind not in "iu" or (sizes < 0).any():
        raise bad(f"class_sizes must be non-negative integers [C], got dtype {sizes.dtype} shape {sizes.shape}")
    sizes = sizes.astype(np.int64)
    counts = {}
    for name, a in stored.items():
        if a.ndim != 2 or a.dtype.kind not in "iu" or a.shape[0] != len(sizes):
            raise bad(f"layer {name!r} must be integer counts [{len(sizes)}, N], got dtype {a.dtype} shape {a.shape}")
        c = a.astype(np.int64)
        outside = (c < 0) | (c > sizes[:, None])
        if outside.any():
            i, j = (int(v) for v in np.argwhere(outside)[0])
            raise bad(f"layer {name!r}: count [{i}, {j}] = {c[i, j]} is outside 0..{sizes[i]} (its class size)")
        counts[name] = c
    return counts, sizes


# -- tables: per checkpoint, compacted, derived ------------------------------------------------


def _conform(t: pa.Table, folder: Path, name: str, table: str, step: int) -> pa.Table:
    """A table as read from a file, checked against :data:`SCHEMAS` and the checkpoint's step; columns added to the
    end of the schema after the file was written are read as nulls."""
    schema = SCHEMAS[table]
    partial = table == "nodes" and (t.schema.metadata or {}).get(_NODES_KEY) == _PARTIAL
    # Schemas only grow at the end, so a file may lack a tail of columns; any other gap is damage.
    present = [n for n in schema.names if n in t.column_names]
    if len(present) <= 3 or present != schema.names[:len(present)]:
        missing = [n for n in schema.names if n not in t.column_names]
        raise DamagedCheckpoint(folder, name, f"lacks the {table} columns {missing}")
    for field in schema:
        if field.name not in t.column_names:
            t = t.append_column(field, pa.nulls(len(t), field.type))
    try:
        t = t.select(schema.names).cast(schema)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise DamagedCheckpoint(folder, name, f"does not match the {table} schema ({_brief(e)})") from None
    steps = t.column("step")
    if steps.null_count or (len(t) and not (steps.to_numpy() == step).all()):
        others = sorted({s for s in steps.to_pylist() if s != step}, key=str)[:3]
        raise DamagedCheckpoint(folder, name, f"holds rows of step {others}, not of its checkpoint's step {step}")
    return t.replace_schema_metadata({_NODES_KEY: _PARTIAL} if partial else None)


def _read_parquet(ckpt: Path, step: int, table: str, manifest: Mapping[str, Mapping[str, Any]] | None) -> pa.Table:
    """One checkpoint's own file of ``table``, verified and checked."""
    name = f"{table}.parquet"
    data = read_verified(ckpt, name, manifest)
    try:
        t = pq.read_table(pa.BufferReader(data))
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError and others for bytes that are not Parquet
        raise DamagedCheckpoint(ckpt, name, f"is not a readable Parquet file ({_brief(e)})") from None
    return _conform(t, ckpt, name, table, step)


def _checkpoint_id(manifest: Mapping[str, Any]) -> str:
    """What a compacted file records of a checkpoint: the checksum of its manifest's list (sizes and crc32 of
    every file), which a checkpoint measured again under the same step does not share unless its files are equal."""
    return f"{_files_checksum(manifest):08x}"


def _compacted_body(steps: Mapping[str, str], tables: Mapping[str, Any], files: Mapping[str, Any]) -> dict[str, Any]:
    listed = {"steps": steps, "tables": tables, "files": files}
    return {"format": 1, "algorithm": "crc32", **listed, "files_crc32": f"{_files_checksum(listed):08x}"}


def read_compacted(run: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``tables/manifest.json`` (see :meth:`RunDir.compact`), checked, or None when the run was never
    compacted; DamagedCheckpoint naming it when it is damaged."""
    folder = Path(run) / _TABLES_DIR
    try:
        raw = (folder / _MANIFEST).read_bytes()
    except FileNotFoundError:
        return None

    def bad(problem: str) -> DamagedCheckpoint:
        return DamagedCheckpoint(folder, _MANIFEST, problem)

    try:
        body = json.loads(raw)
    except ValueError as e:
        raise bad(f"is not JSON ({_brief(e)})") from None
    if (not isinstance(body, dict) or body.get("format") != 1
            or not all(isinstance(body.get(k), dict) for k in ("steps", "tables", "files"))):
        raise bad("is not a format-1 manifest of compacted tables (steps, tables and files)")
    if body.get("files_crc32") != _compacted_body(body["steps"], body["tables"], body["files"])["files_crc32"]:
        raise bad(f"does not match its own checksum ({body.get('files_crc32')!r:.20})")
    for name, entry in body["files"].items():
        if (not isinstance(entry, dict) or "/" in name or not isinstance(entry.get("size"), int)
                or not isinstance(entry.get("crc32"), str)):
            raise bad(f"has a malformed entry {name!r}: {entry!r:.80}")
    for table, spec in body["tables"].items():
        if (not isinstance(spec, dict) or not isinstance(spec.get("row_groups"), dict)
                or (spec.get("file") is not None and spec["file"] not in body["files"])
                or not isinstance(spec.get("partial", []), list)):
            raise bad(f"has a malformed table {table!r}: {spec!r:.80}")
    return body


class _TableReader:
    """One run's tables checkpoint by checkpoint: from its compacted files where they hold the checkpoint, else
    from the checkpoint's own files; node rows of layers neither holds are derived from the counts."""

    def __init__(self, run: RunDir, *, whole: bool = True) -> None:
        self.run = run
        # whole: every row group of a compacted file will be read, so its crc32 is checked once for all; a reader
        # of one checkpoint checks its size and reads its row group, whose pages carry their own checksums.
        self.whole = whole
        self._load()

    def _load(self) -> None:
        self.dirs = self.run._step_dirs()
        self.compacted = read_compacted(self.run.path)
        self._files: dict[str, pq.ParquetFile] = {}

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
        if c is None or manifest is None or c["steps"].get(str(step)) != _checkpoint_id(manifest):
            return None
        spec = c["tables"].get(table)
        return spec if spec is not None and str(step) in spec["row_groups"] else None

    def stored(self, step: int, table: str, ckpt: Path | None = None,
               manifest: Mapping[str, Any] | None = None) -> pa.Table | None:
        """The rows of ``table`` stored for ``step`` (compacted or in the checkpoint; nothing derived), or None when
        none are: an optional table not written, or node rows left to be derived."""
        if ckpt is None:
            ckpt = self.dirs[step]
            manifest = read_manifest(ckpt)
        spec = self.covered(step, table, manifest)
        if spec is not None:
            group = spec["row_groups"][str(step)]
            if group is None:
                return None if table not in ("layers", "stats") else SCHEMAS[table].empty_table()
            return self._row_group(spec["file"], table, step, group)
        name = f"{table}.parquet"
        if (table in ("layers", "stats") or (ckpt / name).exists() or (manifest is not None and name in manifest)
                or (table == "nodes" and manifest is None)):  # before manifests, every checkpoint had node rows
            return _read_parquet(ckpt, step, table, manifest)
        return None

    def _row_group(self, name: str, table: str, step: int, group: Any) -> pa.Table:
        assert self.compacted is not None
        folder = self.run.path / _TABLES_DIR
        entry = self.compacted["files"][name]
        if name not in self._files:
            if self.whole:
                source: Any = pa.BufferReader(read_verified(folder, name, self.compacted["files"]))
            else:
                _check_file(folder, name, entry, checksum=False)
                source = str(folder / name)
            try:
                self._files[name] = pq.ParquetFile(source, page_checksum_verification=True)
            except Exception as e:
                raise DamagedCheckpoint(folder, name, f"is not a readable Parquet file ({_brief(e)})") from None
        f = self._files[name]
        if not isinstance(group, int) or isinstance(group, bool) or not 0 <= group < f.num_row_groups:
            raise DamagedCheckpoint(folder, _MANIFEST, f"names row group {group!r} of {name}, which has "
                                                       f"{f.num_row_groups}")
        try:
            t = f.read_row_group(group)
        except Exception as e:
            raise DamagedCheckpoint(folder, name, f"cannot be read ({_brief(e)})") from None
        if step in self.compacted["tables"][table].get("partial", ()):
            t = t.replace_schema_metadata({_NODES_KEY: _PARTIAL})
        return _conform(t, folder, name, table, step)

    def _nodes(self, step: int, ckpt: Path, manifest: Mapping[str, Any] | None,
               stored: pa.Table | None) -> pa.Table:
        """Node rows of every layer, in the layers table's order: stored ones as stored, the others derived."""
        from .. import kernels  # deferred: the kernels import their backends' modules

        if stored is not None and (stored.schema.metadata or {}).get(_NODES_KEY) != _PARTIAL:
            return stored  # every layer's rows: the other files are not needed
        layers = self.stored(step, "layers", ckpt, manifest)
        assert layers is not None
        names = [str(x) for x in layers.column("layer").to_pylist()]
        widths = layers.column("nodes").to_pylist()
        if not names:
            return SCHEMAS["nodes"].empty_table()
        parts: dict[str, pa.Table] = {}
        if stored is not None and len(stored):
            codes = stored.column("layer").combine_chunks().dictionary_encode()
            index = codes.indices.to_numpy(zero_copy_only=False)
            for k, name in enumerate(codes.dictionary.to_pylist()):
                parts[name] = stored.take(pa.array(np.flatnonzero(index == k)))
            where = (ckpt, "nodes.parquet") if self.covered(step, "nodes", manifest) is None else (
                self.run.path / _TABLES_DIR, self.compacted["tables"]["nodes"]["file"])  # type: ignore[index]
            for name, part in parts.items():
                width = widths[names.index(name)] if name in names else None
                if width is None or len(part) != width:
                    raise DamagedCheckpoint(*where, f"holds {len(part)} rows of layer {name!r}, which has "
                                                    f"{'no' if width is None else width} nodes in layers.parquet")
        missing = [n for n in names if n not in parts]
        if missing:
            counts, sizes = _read_counts(ckpt)
            seed, epoch = int(layers.column("seed")[0].as_py()), float(layers.column("epoch")[0].as_py())
            for name, width in zip(names, widths):
                if name in parts:
                    continue
                c = counts.get(name)
                if c is None or c.shape[1] != width:
                    raise DamagedCheckpoint(ckpt, "counts.npz", f"has no layer {name!r} of {width} nodes "
                                                                "(layers.parquet lists it)")
                parts[name] = _node_rows(seed, step, epoch, name, kernels.node_metrics(c, sizes))
        return pa.concat_tables([parts[n] for n in names]).replace_schema_metadata(None)


# -- one writer per run folder ---------------------------------------------------------------


class RunLocked(ValueError):
    """Another process holds the run folder's writer lock (the message names the folder and the holder)."""


class _Held:
    """This process's flock on one run folder, shared by its RunLock handles."""

    def __init__(self, key: Path, fd: int) -> None:
        self.key, self.fd, self.count, self.pid = key, fd, 1, os.getpid()


_held: dict[Path, _Held] = {}
# Re-entrant: a RunLock's __del__ may run in the garbage collector while this thread holds the guard.
_held_guard = threading.RLock()


class RunLock:
    """A hold on a run folder's writer lock (from :meth:`RunDir.lock`); ``release()``, the end of a ``with``
    block or garbage collection lets go of it, and the kernel does when the process dies."""

    def __init__(self, held: _Held, path: Path) -> None:
        self._held: _Held | None = held
        self.path = path

    @property
    def held(self) -> bool:
        return self._held is not None

    def release(self) -> None:
        """Let go of this hold (later calls do nothing); the lock is free once every hold of the process is."""
        h, self._held = self._held, None
        if h is None:
            return
        with _held_guard:
            h.count -= 1
            if h.count > 0:
                return
            if _held.get(h.key) is h:
                del _held[h.key]
        if h.pid == os.getpid():
            # Unlock explicitly: a child forked meanwhile (a DataLoader worker) shares the descriptor and would
            # otherwise keep the folder locked; a child never unlocks its parent's lock.
            try:
                os.ftruncate(h.fd, 0)
                fcntl.flock(h.fd, fcntl.LOCK_UN)
            except OSError:
                pass
        os.close(h.fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # at interpreter shutdown the modules it needs may be gone; the kernel unlocks anyway
            pass

    def __repr__(self) -> str:
        return f"RunLock({str(self.path)!r}, held={self.held})"


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        return f"pid {int(info['pid'])} on host {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


class RunDir:
    """One training run's directory (see the module docstring for the layout); nothing is created until a write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a path, got {path!r}")
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._compact_when_done = False  # set by write_checkpoint(compact_tables=True), read by mark_done

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
        """The configuration read from ``config.json`` (FileNotFoundError when it was never written, ValueError
        naming the file when it is not a JSON object)."""
        path = self.path / "config.json"
        try:
            cfg = json.loads(path.read_text())
        except ValueError as e:  # not JSON, or not text at all
            raise ValueError(f"{path} is damaged ({_brief(e)})") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"{path} is damaged (holds a {type(cfg).__name__}, not a JSON object)")
        return cfg

    def mark_done(self, *, compact: bool | None = None) -> None:
        """Write the ``DONE`` marker (atomically), to be called after the last checkpoint.

        The newest checkpoint is verified first (:meth:`verify`): a run whose newest checkpoint is damaged is
        never marked done (DamagedCheckpoint), so resuming it measures that step again. Then, with ``compact``
        (None: when a checkpoint was written through this object with ``compact_tables=True``), the finished run's
        tables are compacted (:meth:`compact`).
        """
        if compact is not None and not isinstance(compact, bool):
            raise TypeError(f"compact must be true, false or None, got {compact!r}")
        steps = self.completed_steps()
        if steps:
            try:
                self.verify(steps[-1])
            except DamagedCheckpoint as e:
                raise type(e)(e.checkpoint, e.file, f"{e.problem}; the run is not marked done (resume it to measure "
                              f"step {steps[-1]} again)") from None
        body = {"last_step": steps[-1] if steps else None, "checkpoints": len(steps)}
        atomic_write_bytes(self.path / "DONE", (json.dumps(body) + "\n").encode())
        if compact or (compact is None and self._compact_when_done):
            self.compact()

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

    def lock(self) -> RunLock:
        """Take the run folder's writer lock: one process writes a run at a time.

        An advisory ``fcntl.flock`` on ``RUN/.lock`` (the folder is created if needed), which holds the pid,
        host and start time of the holder; the kernel releases it when the process dies, however it dies.
        Another process holding it raises :class:`RunLocked` naming the folder and the holder. Holds of one
        process are shared (a Recorder left unclosed after an error, e.g. in a notebook, does not lock its own
        process out), so two writers of one folder in one process are not caught. Returns a :class:`RunLock`
        (a context manager); the :class:`~nnphases.recording.recorder.Recorder` holds one for its life.
        """
        _mkdirs(self.path)
        key = self.path.resolve()
        with _held_guard:
            h = _held.get(key)
            if h is not None and h.pid == os.getpid():
                h.count += 1
                return RunLock(h, self.path / _LOCK_FILE)
            fd = os.open(self.path / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise RunLocked(f"run folder {str(self.path)!r} is being written by another process ({holder}); "
                                "one writer per run: wait for it to end or stop it") from None
            except BaseException:
                os.close(fd)
                raise
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            h = _held[key] = _Held(key, fd)
            return RunLock(h, self.path / _LOCK_FILE)

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
            return self._remove_leftovers() + self._set_aside_damaged()

    def _set_aside_damaged(self) -> list[Path]:
        moved = []
        dirs = self._step_dirs()
        for s in sorted(dirs, reverse=True):
            try:
                self._verify(dirs[s])
            except DamagedCheckpoint as e:
                if e.checkpoint != dirs[s]:
                    raise  # the run's compacted tables: setting checkpoints aside would not mend them
                target = self.checkpoints / f"{_DAMAGED_PREFIX}{dirs[s].name}-{secrets.token_hex(4)}"
                os.rename(dirs[s], target)
                _fsync_dir(self.checkpoints)
                warnings.warn(f"{e}; set aside as {target.name}: step {s} will be measured again",
                              DamagedCheckpointWarning, stacklevel=3)
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
            for name in _LEGACY_REQUIRED_FILES:
                if not (ckpt / name).is_file():
                    raise MissingCheckpointFile(ckpt, name, "is missing")
        else:
            for name in _REQUIRED_FILES:
                if name not in manifest:
                    raise DamagedCheckpoint(ckpt, _MANIFEST, f"does not list {name}")
            run = ckpt.parent.parent
            compacted = read_compacted(run)
            moved: set[str] = set()  # tables whose rows of this checkpoint are in the compacted files
            m = _STEP_DIR.fullmatch(ckpt.name)
            step = str(int(m.group(1))) if m else ""
            if compacted is not None and compacted["steps"].get(step) == _checkpoint_id(manifest):
                for table, spec in compacted["tables"].items():
                    if step in spec["row_groups"]:
                        moved.add(f"{table}.parquet")
                        if spec["file"] is not None:
                            _check_file(run / _TABLES_DIR, spec["file"], compacted["files"][spec["file"]], checksums)
            for name, entry in manifest.items():
                if (name == "state.pt" or name in moved) and not (ckpt / name).exists():
                    continue
                _check_file(ckpt, name, entry, checksums)
        _read_counts(ckpt)

    def _remove_leftovers(self) -> list[Path]:
        removed = []
        tables = self.path / _TABLES_DIR
        try:
            compacted = read_compacted(self.path)
        except DamagedCheckpoint:
            compacted = {"files": None}  # which files it names is unknown: keep every one
        named = compacted["files"] if compacted is not None else {}
        for folder in (self.path, self.checkpoints, tables):
            if not folder.is_dir():
                continue
            gone = []
            for p in sorted(folder.iterdir()):
                # In tables/ also the files of a compaction killed before its manifest, or superseded by a later one.
                unnamed = (folder == tables and named is not None and p.name != _MANIFEST and p.name not in named)
                if not (p.name.startswith(_TMP_PREFIX) or unnamed):
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                gone.append(p)
            if gone:
                _fsync_dir(folder)
            removed += gone
        return removed

    # -- compacted tables ------------------------------------------------------------

    def compact(self) -> list[Path]:
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
        with self.lock():
            if not self.done:
                raise ValueError(f"run {str(self.path)!r} is not finished (it has no DONE marker); compact it once "
                                 "it ends")
            self._remove_leftovers()
            reader = _TableReader(self)
            ids = {str(s): _checkpoint_id(m) for s, p in sorted(reader.dirs.items())
                   if (m := read_manifest(p)) is not None}
            if not ids:
                return []
            folder = self.path / _TABLES_DIR
            old = reader.compacted
            if old is not None and old["steps"] == ids and not any(
                    (reader.dirs[int(s)] / f"{t}.parquet").exists() for t in TABLES if t not in old["tables"]
                    for s in ids):
                body = old  # compacted already; a killed compaction may have left files to delete
            else:
                body = self._write_compacted(reader, ids, folder)
            # The compacted files are the run's tables now: the per-checkpoint files they replace can go.
            for s in ids:
                ckpt = reader.dirs[int(s)]
                gone = [p for t in body["tables"] if (p := ckpt / f"{t}.parquet").exists()]
                for p in gone:
                    p.unlink()
                if gone:
                    _fsync_dir(ckpt)
            self._remove_leftovers()  # an earlier compaction's files
            specs = body["tables"]
            return [folder / specs[t]["file"] for t in TABLES if t in specs and specs[t]["file"] is not None]

    def _write_compacted(self, reader: _TableReader, ids: dict[str, str], folder: Path) -> dict[str, Any]:
        """Write, check and commit (by ``tables/manifest.json``) the compacted tables of the checkpoints ``ids``."""
        _mkdirs(folder)
        steps = [int(s) for s in ids]
        specs: dict[str, Any] = {}
        files: dict[str, Any] = {}
        try:
            for table in TABLES:
                spec = _compact_table(reader, table, steps, folder)
                if spec is None:
                    continue
                specs[table] = spec
                if spec["file"] is not None:
                    path = folder / spec["file"]
                    files[spec["file"]] = {"size": path.stat().st_size, "crc32": f"{_crc32_file(path):08x}"}
            _fsync_dir(folder)
            body = _compacted_body(ids, specs, files)
            # Read back through the readers' own path before anything refers to the files.
            check = _TableReader(self)
            check.compacted = body
            for table in specs:
                for s in steps:
                    if not _same_rows(check.stored(s, table), reader.stored(s, table)):
                        raise DamagedCheckpoint(folder, specs[table]["file"] or _MANIFEST, f"does not read back as "
                                                f"the {table} rows of step {s} it was written from")
            atomic_write_bytes(folder / _MANIFEST, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
        except BaseException:
            try:
                self._remove_leftovers()  # files no manifest names
            except (OSError, DamagedCheckpoint):
                pass  # the error that got here matters more; cleanup() removes them later
            raise
        return body

    def read_table(self, step: int, table: str) -> pandas.DataFrame:
        """The rows of ``table`` at ``step`` as a DataFrame, as :func:`nnphases.store.runs.read_table` reads them.

        Columns and dtypes of :data:`SCHEMAS`; no rows for an optional table the checkpoint does not hold. Rows come
        from the compacted files when the run has them for this checkpoint (the file's size is checked and its
        row group read, whose pages carry their own checksums), else from the checkpoint's own file (size and
        crc32); node rows of layers without stored rows are derived from the counts. DamagedCheckpoint names the
        file at fault.
        """
        if not isinstance(table, str) or table not in TABLES:
            raise ValueError(f"table must be one of {', '.join(TABLES)}; got {table!r}")
        t = _TableReader(self, whole=False).table(_int_value(step, "step", 0), table)
        return (t if t is not None else SCHEMAS[table].empty_table()).to_pandas()

    # -- writing ---------------------------------------------------------------------

    def begin_checkpoint(self, step: int) -> Path:
        """A new temporary folder for the checkpoint of ``step``, for files streamed in while measuring; pass it
        to :meth:`write_checkpoint` (which renames it into place) or to :meth:`abort_checkpoint`."""
        step = _int_value(step, "step", 0)
        # The name this store gives the step, not a listing: a run of thousands of checkpoints would stat every
        # one of them at each new checkpoint.
        if (self.checkpoints / _step_dir_name(step)).is_dir():
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
        node_tables: str = "auto",
        node_table_max_width: int = NODE_TABLE_MAX_WIDTH,
        compact_tables: bool = False,
    ) -> Path:
        """Write the checkpoint of ``step`` atomically and return its directory.

        ``counts`` maps layer names (in model order) to int ``[C, N]`` counts
        and ``class_sizes`` is int ``[C]``; layer metrics come from
        :func:`nnphases.kernels.layer_metrics` and the node rows of
        ``nodes.parquet`` from :func:`nnphases.kernels.node_metrics`, for the
        layers ``node_tables`` names: ``"always"`` every layer, ``"never"``
        none (no ``nodes.parquet``), ``"auto"`` those of at most
        ``node_table_max_width`` nodes; readers derive the rest from the
        counts. ``compact_tables``: :meth:`mark_done` on this object then
        also :meth:`compact`-s the run. ``stats`` rows have keys ``split``
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
            if node_tables not in NODE_TABLES:
                raise ValueError(f"node_tables must be one of {', '.join(NODE_TABLES)}; got {node_tables!r}")
            max_width = _int_value(node_table_max_width, "node_table_max_width", 1)
            if not isinstance(compact_tables, bool):
                raise TypeError(f"compact_tables must be true or false, got {compact_tables!r}")
            path = self._write_checkpoint(step, epoch, seed=seed, counts=counts, class_sizes=class_sizes,
                                          stats=stats, masks=masks, state=state, probes=probes,
                                          tables=tables or {}, tmp=tmp, node_tables=node_tables,
                                          max_width=max_width)
            if compact_tables:
                self._compact_when_done = True
            return path
        except BaseException:
            if tmp is not None:
                self.abort_checkpoint(tmp)
            raise

    def _write_checkpoint(self, step: int, epoch: float, *, seed: int, counts: Mapping[str, np.ndarray],
                          class_sizes: np.ndarray, stats: Sequence[Mapping[str, Any]],
                          masks: Mapping[str, np.ndarray] | None, state: Mapping[str, Any] | None,
                          probes: Sequence[Mapping[str, Any]] | None,
                          tables: Mapping[str, Sequence[Mapping[str, Any]]], tmp: Path | None, node_tables: str,
                          max_width: int) -> Path:
        step = _int_value(step, "step", 0)
        seed = _int_value(seed, "seed")
        epoch_f = _float_value(epoch, "epoch")
        if not math.isfinite(epoch_f) or epoch_f < 0:
            raise ValueError(f"epoch must be finite and >= 0, got {epoch!r}")
        if (self.checkpoints / _step_dir_name(step)).is_dir():  # as begin_checkpoint: one stat, not a listing
            raise ValueError(f"step {step} is already a complete checkpoint in {self.path}")
        layers, sizes = self._check_counts(counts, class_sizes)
        stat_rows = self._check_stats(stats)
        mask_arrays = self._check_masks(masks, layers) if masks is not None else None
        if state is not None and not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")

        # Metrics first: the kernels validate counts against class_sizes, so bad inputs fail before anything
        # touches the disk.
        tabled = [name for name, c in layers.items()
                  if node_tables == "always" or (node_tables == "auto" and c.shape[1] <= max_width)]
        out_tables = _metric_tables(step, epoch_f, seed, layers, sizes, stat_rows, tabled)
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
            # and read back as int64: lossless, 4x smaller than int64; large layers compressed by blosc, as fast
            # as writing them plain, where zlib took seconds per VGG-sized checkpoint.
            with open(tmp / "counts.npz", "wb") as f:
                np.savez(f, **_counts_arrays(layers, sizes))
            for table, t in out_tables.items():
                _write_parquet(t, tmp / f"{table}.parquet")
            if mask_arrays:
                _write_masks(tmp / "masks.zarr", mask_arrays)
            if state is not None:
                import torch  # deferred: reading metrics should not pay for importing torch

                with open(tmp / "state.pt", "wb") as f:
                    torch.save(dict(state), f)
            _write_manifest(tmp, step)
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
            # Kept in the type given where the metric kernels read it as it is (int32 accumulators, narrowed
            # tables): a widened copy of a VGG-sized table costs more than its metrics.
            layers[_layer_name(name)] = a if a.dtype in _COUNT_DTYPES else a.astype(np.int64)
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
        # Runs after the new checkpoint is durable and verified, and keeps the newest older state too: if the new
        # checkpoint is damaged later, a resume continues from the one before (cleanup sets the damaged one aside).
        # Sizes, not checksums: the sums were taken from these bytes a moment ago, and summing them again from the
        # page cache would prove no more while doubling the writer's reads.
        self.verify(step, checksums=False)
        dirs = self._step_dirs()
        older = sorted(s for s, p in dirs.items() if s < step and (p / "state.pt").exists())
        for s in older[:-1]:
            (dirs[s] / "state.pt").unlink()
            _fsync_dir(dirs[s])

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

        dirs = self._step_dirs()
        for s in sorted(dirs, reverse=True):
            ckpt = dirs[s]
            if not (ckpt / "state.pt").is_file():
                continue
            try:
                manifest = read_manifest(ckpt)
                if manifest is not None:
                    if "state.pt" not in manifest:
                        raise _unlisted(ckpt, "state.pt")
                    _check_file(ckpt, "state.pt", manifest["state.pt"], checksum=True)
                try:
                    state = torch.load(ckpt / "state.pt", map_location=map_location, weights_only=False)
                except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
                    if manifest is not None:
                        raise
                    raise DamagedCheckpoint(ckpt, "state.pt", f"cannot be loaded ({_brief(e)})") from None
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
        return _read_counts(self.checkpoint_path(step))

    def read_masks(self, step: int, layer: str | None = None, *, nodes: Any = None,
                   samples: slice | None = None) -> Any:
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
        ckpt = self.checkpoint_path(step)
        path = ckpt / "masks.zarr"
        manifest = read_manifest(ckpt)
        if not path.exists():
            if manifest is not None and any(n.startswith("masks.zarr/") for n in manifest):
                raise MissingCheckpointFile(ckpt, "masks.zarr", f"is missing ({_MANIFEST} lists it)")
            if layer is not None:
                raise ValueError(f"step {step} of {self.path} has no stored masks")
            return {}
        import zarr

        if manifest is not None:
            read_verified(ckpt, "masks.zarr/zarr.json", manifest)
        try:
            g = zarr.open_group(str(path), mode="r")
            layers = [str(x) for x in g.attrs["layers"]]
        except Exception as e:  # zarr raises many kinds for a damaged store
            raise DamagedCheckpoint(ckpt, "masks.zarr/zarr.json", f"cannot be read ({_brief(e)})") from None
        if layer is not None and layer not in layers:
            raise ValueError(f"layer {layer!r} has no stored masks at step {step}; stored: {layers}")
        whole = nodes is None and samples is None

        def array(name: str) -> Any:
            key = _mask_array_name(name)
            if manifest is not None:
                _verify_tree(ckpt, f"masks.zarr/{key}/", manifest,
                             lambda n: whole or n.endswith("zarr.json"))
            try:
                arr = g[key]
            except Exception as e:
                raise DamagedCheckpoint(ckpt, f"masks.zarr/{key}", f"cannot be read ({_brief(e)})") from None
            if arr.ndim != 2 or arr.dtype != np.uint8 or arr.shape[1] % 8:
                raise DamagedCheckpoint(ckpt, f"masks.zarr/{key}",
                                        f"must be uint8 [N, 8k], got dtype {arr.dtype} shape {arr.shape}")
            return arr

        def get(name: str, arr: Any, index: Any) -> np.ndarray:
            try:
                return np.asarray(arr[index])
            except IndexError as e:  # the caller's nodes, not the store; zarr's message names neither
                raise IndexError(f"nodes {nodes!r:.80} is outside the {arr.shape[0]} nodes of layer {name!r} ({e})") \
                    from None
            except TypeError:
                raise  # the caller's nodes, not the store
            except Exception as e:
                raise DamagedCheckpoint(ckpt, f"masks.zarr/{_mask_array_name(name)}",
                                        f"cannot be read ({_brief(e)})") from None

        if layer is None:
            return {name: get(name, array(name), ...) for name in layers}
        arr = array(layer)
        rows = slice(None) if nodes is None else nodes
        if samples is None:
            return get(layer, arr, (rows, slice(None)))
        from .masks import take_samples

        if not isinstance(samples, slice) or samples.step not in (None, 1):
            raise ValueError(f"samples must be a slice start:stop, got {samples!r}")
        for bound in (samples.start, samples.stop):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, numbers.Integral)):
                raise TypeError(f"samples bounds must be integers, got {samples!r}")
        # The rows are padded to whole 64-bit words: the slice is taken of the set's own samples (their number is
        # the sum of the class sizes), as a Python slice of them would be, so padding bits are never returned as
        # samples and a negative bound counts from the last real sample.
        total = int(_read_counts(ckpt)[1].sum())
        start, stop, _ = samples.indices(total)
        stop = max(start, stop)
        w0, w1 = start // 64 * 8, -(-stop // 64) * 8
        part = get(layer, arr, (rows, slice(w0, w1)))
        return take_samples(part, start - w0 * 8, stop - w0 * 8)


def _rows_table(table: str, step: int, epoch: float, seed: int, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    names = SCHEMAS[table].names[3:]
    missing = [n for n in names if any(n not in r for r in rows)]
    if missing:
        raise ValueError(f"{table} rows lack the keys {missing}")
    cols: dict[str, Any] = {"seed": [seed] * len(rows), "step": [step] * len(rows), "epoch": [epoch] * len(rows)}
    cols.update({n: [r[n] for r in rows] for n in names})
    return pa.table(cols, schema=SCHEMAS[table])


def _node_rows(seed: int, step: int, epoch: float, layer: str, nm: NodeMetrics) -> pa.Table:
    """One layer's rows of the nodes table: the writer's and the readers' (derived) rows are built here alike."""
    n = int(nm.fraction.shape[0])
    return pa.table({
        "seed": np.full(n, seed, np.int64), "step": np.full(n, step, np.int64), "epoch": np.full(n, epoch, np.float64),
        # One string repeated in C: a Python object per node cost more than the metrics themselves.
        "layer": pa.repeat(pa.scalar(layer, pa.string()), n), "node": np.arange(n, dtype=np.int64),
        "f": nm.fraction, "p": nm.predictability, "u": nm.informativeness,
        "h_z_given_y": nm.h_z_given_y, "h_y_given_z": nm.h_y_given_z,
        "dead": nm.dead, "always_active": nm.always_active,
    }, schema=SCHEMAS["nodes"])


def _metric_tables(step: int, epoch: float, seed: int, layers: dict[str, np.ndarray], sizes: np.ndarray,
                   stat_rows: list[tuple[str, float, float]], tabled: Sequence[str]) -> dict[str, pa.Table]:
    """The layers and stats tables of one checkpoint, and the nodes table of the layers in ``tabled`` (none: no
    nodes table), typed by :data:`SCHEMAS`."""
    from .. import kernels  # deferred: the kernels import their backends' modules

    try:
        # The layer rows come from their own pass whether or not node rows are written, so they do not depend
        # on node_tables; that pass builds no per-node arrays and reads all the layers in one call.
        layer_rows = kernels.layer_metrics(list(layers.values()), sizes)
    except (ValueError, TypeError):
        for name, c in layers.items():  # the error again, from the layer it is in, named
            _named_layer(name, kernels.layer_metrics, c, sizes)
        raise
    node_parts = [_node_rows(seed, step, epoch, name, _named_layer(name, kernels.node_metrics, c, sizes))
                  for name, c in layers.items() if name in tabled]

    def keys(k: int) -> dict[str, np.ndarray]:
        return {"seed": np.full(k, seed, np.int64), "step": np.full(k, step, np.int64),
                "epoch": np.full(k, epoch, np.float64)}

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
    out = {t: pa.table(cols, schema=SCHEMAS[t]) for t, cols in (("layers", layer_cols), ("stats", stat_cols))}
    if node_parts:
        nodes = pa.concat_tables(node_parts)
        if len(node_parts) < len(layers):
            nodes = nodes.replace_schema_metadata({_NODES_KEY: _PARTIAL})
        out = {"nodes": nodes} | out
    return out


def _named_layer(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), with a ValueError or TypeError prefixed by the layer it is about."""
    try:
        return fn(*args)
    except (ValueError, TypeError) as e:
        raise type(e)(f"layer {name!r}: {e}") from None


def _repeated_columns(schema: pa.Schema) -> list[str]:
    # Dictionary pages only for the columns that repeat (keys, names): on float metrics they cost time and grew
    # the file (131,072 node rows: 58 ms and 6.1 MB with every column, 30 ms and 5.2 MB like this).
    return [f.name for f in schema if f.name in ("seed", "step", "epoch") or f.type == pa.string()]


def _write_parquet(t: pa.Table, where: Any) -> None:
    pq.write_table(t, where, use_dictionary=_repeated_columns(t.schema))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _compact_table(reader: _TableReader, table: str, steps: list[int], folder: Path) -> dict[str, Any] | None:
    """Write the stored rows of ``table`` at ``steps`` into one new file of ``folder`` (a row group per step with
    rows) and return its entry for the manifest of compacted tables: the file (None when no step has rows) and each
    step's row group (None: no rows); None when no step holds the table at all."""
    name = f"{table}-{secrets.token_hex(4)}.parquet"
    tmp = folder / f"{_TMP_PREFIX}{name}"
    groups: dict[str, int | None] = {}
    partial: list[int] = []  # steps whose node rows leave out layers (in a file, its schema metadata says so)
    writer = None
    held = False
    written = 0
    try:
        for s in steps:
            t = reader.stored(s, table)
            groups[str(s)] = None
            if t is None:
                continue
            held = True
            if (t.schema.metadata or {}).get(_NODES_KEY) == _PARTIAL:
                partial.append(s)
            if len(t):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, SCHEMAS[table], write_page_checksum=True,
                                              use_dictionary=_repeated_columns(SCHEMAS[table]))
                writer.write_table(t.replace_schema_metadata(None), row_group_size=len(t))
                groups[str(s)] = written
                written += 1
        if writer is not None:
            writer.close()
            writer = None
            _fsync_file(tmp)
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


def _same_rows(a: pa.Table | None, b: pa.Table | None) -> bool:
    """Equal tables, NaN equal to NaN of the same bits (Arrow's equality holds NaN unequal to itself)."""
    if a is None or b is None:
        return a is None and b is None
    if a.schema != b.schema or a.schema.metadata != b.schema.metadata or len(a) != len(b):
        return False
    for x, y in zip(a.columns, b.columns):
        x, y = x.combine_chunks(), y.combine_chunks()
        if pa.types.is_floating(x.type):
            if not x.is_null().equals(y.is_null()):
                return False
            bits = [np.asarray(v.fill_null(0.0)).view(np.uint64) for v in (x, y)]
            if not np.array_equal(*bits):
                return False
        elif not x.equals(y):
            return False
    return True


def _write_masks(path: Path, masks: dict[str, np.ndarray]) -> None:
    import zarr  # deferred: masks are optional and zarr is only needed to store them

    g = zarr.open_group(str(path), mode="w", zarr_format=3, attributes={"layers": list(masks)})
    for name, m in masks.items():
        # About 1 MiB chunks of whole rows: one node's sample set is read in one piece.
        rows = max(1, min(m.shape[0], (1 << 20) // max(1, m.shape[1])))
        g.create_array(_mask_array_name(name), data=np.ascontiguousarray(m),
                       chunks=(rows, max(1, m.shape[1])), attributes={"layer": name})


def read_table(runs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], table: str, *,
               damaged: str = "raise") -> pandas.DataFrame:
    """One table of the complete checkpoints of ``runs`` as a DataFrame: :func:`nnphases.store.runs.read_table`."""
    from .runs import read_table as read  # deferred: nnphases.store.runs imports this module

    return read(runs, table, damaged=damaged)  # type: ignore[arg-type]
