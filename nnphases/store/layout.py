"""Where things are in a run folder: the names of its folders and files, and checks of the paths it is given.

See :mod:`nnphases.store` for the layout these names build."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

STEP_DIR = re.compile(r"step-(\d+)")
TMP_PREFIX = ".tmp-"
MANIFEST = "manifest.json"
TABLES_DIR = "tables"
DAMAGED_PREFIX = ".damaged-"
LOCK_FILE = ".lock"


def step_dir_name(step: int) -> str:
    return f"step-{step:012d}"


def step_of(folder: Path) -> int | None:
    """The step a ``step-*`` folder name gives, or None for another name."""
    m = STEP_DIR.fullmatch(folder.name)
    return int(m.group(1)) if m else None


def layer_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"layer names must be non-empty strings, got {name!r}")
    return name


def mask_array_name(layer: str) -> str:
    # Zarr node names may not contain "/", start with "__" or be only dots.
    key = quote(layer, safe="")
    if key.startswith("__") or set(key) == {"."}:
        raise ValueError(f"layer name {layer!r} cannot name a zarr array (starts with '__' or is only dots)")
    return key


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
    if "\0" in text:
        raise ValueError(f"{name} {text!r} holds a NUL byte, which no file name may contain")
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
            raise ValueError(
                f"{name} {text!r}: the name {part[:16] + '...'!r} is longer than {limit} bytes, the most "
                "the file system allows"
            )
    if existing == p.absolute() and not existing.is_dir():
        raise ValueError(f"{name} {text!r} exists and is not a folder")
    if not existing.is_dir():
        raise ValueError(f"{name} {text!r}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {text!r}: {str(existing)!r} cannot be written (permission denied)")
    return p
