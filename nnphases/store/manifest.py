"""Manifests: every file of a checkpoint (and of a run's compacted tables) with its size and crc32.

crc32 rather than a cryptographic hash: it guards against damage, not tampering, and runs at memory speed (about
4x blake2b), which matters for checkpoints with large masks. A manifest carries a checksum of its own list, so a
damaged manifest is told apart from a damaged file."""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..options import one_line
from .errors import DamagedCheckpoint, MissingCheckpointFile
from .layout import MANIFEST, TABLES_DIR, step_of


def crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def files_checksum(files: Mapping[str, Any]) -> int:
    return zlib.crc32(json.dumps(files, sort_keys=True, separators=(",", ":")).encode())


def write_manifest(folder: Path, step: int) -> None:
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
            if rel != MANIFEST:
                files[rel] = {"size": path.stat().st_size, "crc32": f"{crc32_file(path):08x}"}
    body = {
        "format": 1,
        "step": step,
        "algorithm": "crc32",
        "files": files,
        "files_crc32": f"{files_checksum(files):08x}",
    }
    with open(folder / MANIFEST, "w") as f:
        json.dump(body, f, indent=1, sort_keys=True)
        f.write("\n")


def _check_legacy(ckpt: Path) -> None:
    """A checkpoint without a manifest is one written before manifests existed only if no older checkpoint of its
    run has one: runs started then and continued since hold older checkpoints without manifests and newer ones with
    them, never the other way round. A newer one without it lost its manifest: DamagedCheckpoint (its checksums
    would be off otherwise). The oldest checkpoints of a run cannot be told apart from an older version's."""
    own = step_of(ckpt)
    if own is None or not ckpt.parent.is_dir():
        return
    for sibling in ckpt.parent.iterdir():
        step = step_of(sibling)
        if step is not None and step < own and (sibling / MANIFEST).is_file():
            raise DamagedCheckpoint(
                ckpt,
                MANIFEST,
                f"is missing, but the older checkpoint {sibling.name} has one: its files cannot be verified",
            )


def _load(folder: Path) -> tuple[Any, Callable[[str], DamagedCheckpoint]] | None:
    """The parsed ``folder/manifest.json`` and a maker of the DamagedCheckpoint naming it; None when it does not
    exist (a checkpoint written before manifests, a run never compacted)."""
    try:
        raw = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None

    def bad(problem: str) -> DamagedCheckpoint:
        return DamagedCheckpoint(folder, MANIFEST, problem)

    try:
        return json.loads(raw), bad
    except ValueError as e:
        raise bad(f"is not JSON ({one_line(e, limit=200)})") from None


def read_manifest(checkpoint: str | os.PathLike[str]) -> dict[str, dict[str, Any]] | None:
    """The files of a checkpoint folder (relative path -> ``{"size", "crc32"}``) from its ``manifest.json``, or None
    for a checkpoint written before manifests existed; DamagedCheckpoint when the manifest itself is damaged."""
    ckpt = Path(checkpoint)
    loaded = _load(ckpt)
    if loaded is None:
        _check_legacy(ckpt)
        return None
    body, bad = loaded
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(body, dict) or body.get("format") != 1 or not isinstance(files, dict):
        raise bad("is not a format-1 manifest (a dict with format 1 and files)")
    for rel, entry in files.items():
        if (
            not isinstance(entry, dict)
            or isinstance(entry.get("size"), bool)
            or not isinstance(entry.get("size"), int)
            or entry["size"] < 0
            or not isinstance(entry.get("crc32"), str)
            or not re.fullmatch(r"[0-9a-f]{8}", entry["crc32"])
            or rel.startswith("/")
            or ".." in rel.split("/")
        ):
            raise bad(f"has a malformed entry {rel!r}: {entry!r:.80}")
    if body.get("files_crc32") != f"{files_checksum(files):08x}":
        raise bad(f"does not match its own checksum ({body.get('files_crc32')!r:.20})")
    own = step_of(ckpt)
    if own is not None and body.get("step") != own:
        raise bad(f"belongs to step {body.get('step')!r}, not to its folder's step {own}")
    return files


def unlisted(ckpt: Path, name: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(ckpt, name, f"is not listed in {MANIFEST}")


def check_file(ckpt: Path, name: str, entry: Mapping[str, Any], checksum: bool) -> None:
    """Size (and crc32 when ``checksum``) of one file against its manifest entry."""
    path = ckpt / name
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise MissingCheckpointFile(ckpt, name, f"is missing ({MANIFEST} lists it)") from None
    if size != entry["size"]:
        raise DamagedCheckpoint(ckpt, name, f"has {size} bytes, {MANIFEST} lists {entry['size']}")
    if checksum:
        crc = f"{crc32_file(path):08x}"
        if crc != entry["crc32"]:
            raise DamagedCheckpoint(ckpt, name, f"has crc32 {crc}, {MANIFEST} lists {entry['crc32']}")


def read_verified(
    checkpoint: str | os.PathLike[str], name: str, manifest: Mapping[str, Mapping[str, Any]] | None
) -> bytes:
    """The bytes of the file ``name`` of a checkpoint folder, checked against ``manifest`` (from
    :func:`read_manifest`: size and crc32; None: unchecked); DamagedCheckpoint when they differ or it is missing."""
    ckpt = Path(checkpoint)
    if manifest is not None and name not in manifest:
        if (ckpt / name).exists():
            raise unlisted(ckpt, name)
        raise MissingCheckpointFile(ckpt, name, "is missing")
    try:
        data = (ckpt / name).read_bytes()
    except FileNotFoundError:
        raise MissingCheckpointFile(ckpt, name, "is missing") from None
    if manifest is not None:
        entry = manifest[name]
        if len(data) != entry["size"]:
            raise DamagedCheckpoint(ckpt, name, f"has {len(data)} bytes, {MANIFEST} lists {entry['size']}")
        crc = f"{zlib.crc32(data):08x}"
        if crc != entry["crc32"]:
            raise DamagedCheckpoint(ckpt, name, f"has crc32 {crc}, {MANIFEST} lists {entry['crc32']}")
    return data


def verify_tree(ckpt: Path, prefix: str, manifest: Mapping[str, Mapping[str, Any]], checksum: Any) -> None:
    """Every file under ``ckpt/prefix`` is listed and every listed one is there, with its size (and crc32 where
    ``checksum(name)`` says so)."""
    listed = {n for n in manifest if n.startswith(prefix)}
    for dirpath, _dirnames, filenames in os.walk(ckpt / prefix):
        for f in filenames:
            rel = (Path(dirpath) / f).relative_to(ckpt).as_posix()
            if rel not in listed:
                raise unlisted(ckpt, rel)
    for name in sorted(listed):
        check_file(ckpt, name, manifest[name], checksum(name))


def checkpoint_id(manifest: Mapping[str, Any]) -> str:
    """What a compacted file records of a checkpoint: the checksum of its manifest's list (sizes and crc32 of
    every file), which a checkpoint measured again under the same step does not share unless its files are equal."""
    return f"{files_checksum(manifest):08x}"


def compacted_body(steps: Mapping[str, str], tables: Mapping[str, Any], files: Mapping[str, Any]) -> dict[str, Any]:
    listed = {"steps": steps, "tables": tables, "files": files}
    return {"format": 1, "algorithm": "crc32", **listed, "files_crc32": f"{files_checksum(listed):08x}"}


def read_compacted(run: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``tables/manifest.json`` (see :meth:`RunDir.compact`), checked, or None when the run was never
    compacted; DamagedCheckpoint naming it when it is damaged."""
    folder = Path(run) / TABLES_DIR
    loaded = _load(folder)
    if loaded is None:
        return None
    body, bad = loaded
    if (
        not isinstance(body, dict)
        or body.get("format") != 1
        or not all(isinstance(body.get(k), dict) for k in ("steps", "tables", "files"))
    ):
        raise bad("is not a format-1 manifest of compacted tables (steps, tables and files)")
    if body.get("files_crc32") != compacted_body(body["steps"], body["tables"], body["files"])["files_crc32"]:
        raise bad(f"does not match its own checksum ({body.get('files_crc32')!r:.20})")
    for name, entry in body["files"].items():
        if (
            not isinstance(entry, dict)
            or "/" in name
            or not isinstance(entry.get("size"), int)
            or not isinstance(entry.get("crc32"), str)
        ):
            raise bad(f"has a malformed entry {name!r}: {entry!r:.80}")
    for table, spec in body["tables"].items():
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("row_groups"), dict)
            or (spec.get("file") is not None and spec["file"] not in body["files"])
            or not isinstance(spec.get("partial", []), list)
        ):
            raise bad(f"has a malformed table {table!r}: {spec!r:.80}")
    return body
