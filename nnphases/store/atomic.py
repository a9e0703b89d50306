"""Durable writes: a rename or a new file survives a crash only once it and its folder are fsynced."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .layout import TMP_PREFIX


def fsync_dir(path: Path) -> None:
    # A rename or unlink is durable only once the directory holding the entry is fsynced.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (files written by zarr or pyarrow included)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            fsync_file(Path(dirpath) / name)
        fsync_dir(Path(dirpath))


def mkdirs(path: Path) -> None:
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
        fsync_dir(d.parent)


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
    mkdirs(path.parent)
    tmp = path.parent / f"{TMP_PREFIX}{path.name}-{secrets.token_hex(4)}"
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
    fsync_dir(path.parent)


def remove_stale_temporaries(folder: str | os.PathLike[str], older_than_s: float = 600.0) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write_bytes` that a killed writer left in ``folder`` (those not
    modified for ``older_than_s`` seconds: a live writer's are seconds old); return them."""
    import time

    gone = []
    now = time.time()
    for p in Path(folder).glob(f"{TMP_PREFIX}*"):
        try:
            if p.is_file() and now - p.stat().st_mtime > older_than_s:
                p.unlink()
                gone.append(p)
        except FileNotFoundError:
            continue  # another process removed or renamed it meanwhile
    return gone
