"""Packing as it goes: one tar.gz per group of jobs with the small files only, and what a run has reached.

The archives take the layer, stats and probes tables of complete checkpoints, run configurations, markers,
figures, findings and logs; never nodes.parquet, counts.npz, masks or state.pt. Each is rewritten atomically after
every event, so a hard timeout still leaves results.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nnphases.store import RunDir

from .common import read_json
from .timing import STEP_DIR

TABLES = {"layers.parquet", "stats.parquet", "probes.parquet"}
META = {"run.json", "config.json", "DONE", "findings.txt"}
FIGURES = {".png", ".svg"}
MAX_TABLE = 4 << 20  # bytes; larger files are left out and listed in the summary
MAX_FIGURE = 4 << 20
MAX_LOG = 256 << 10  # a longer log goes in as its tail
MAX_ARCHIVE = 15 << 20  # the device returns files of at most 16 MiB; SVGs are dropped first above this


def small_files(root: Path, folder: Path) -> Iterator[tuple[Path, str]]:
    """(file, why it is left out or "") for everything under ``folder`` that the archives take."""
    if not folder.is_dir():
        return
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        parts = rel.parts
        if "checkpoints" in parts:
            i = parts.index("checkpoints")
            if len(parts) != i + 3 or not STEP_DIR.fullmatch(parts[i + 1]) or p.name not in TABLES:
                continue
            yield p, ("" if _size(p) <= MAX_TABLE else f"{_size(p)} bytes")
        elif p.name in META or p.suffix == ".log":
            yield p, ""
        elif p.suffix in FIGURES:
            yield p, ("" if _size(p) <= MAX_FIGURE else f"{_size(p)} bytes")


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except FileNotFoundError:
        return 0


def write_archive(path: Path, root: Path, folders: list[Path], leave_svg: bool = False) -> list[str]:
    """Writes ``path`` (tar.gz, atomically) with the small files under ``folders``; returns what was left out."""
    left = []
    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for folder in folders:
            for p, why in small_files(root, folder):
                rel = str(p.relative_to(root))
                if why or (leave_svg and p.suffix == ".svg"):
                    left.append(f"{rel} ({why or 'SVG dropped to keep the archive under its size limit'})")
                    continue
                try:
                    if p.suffix == ".log" and _size(p) > MAX_LOG:
                        data = p.read_bytes()[-MAX_LOG:]
                        info = tarfile.TarInfo(rel)
                        info.size, info.mtime = len(data), int(p.stat().st_mtime)
                        tar.addfile(info, io.BytesIO(data))
                    else:
                        tar.add(p, arcname=rel, recursive=False)
                except FileNotFoundError:
                    continue
    if tmp.stat().st_size > MAX_ARCHIVE and not leave_svg:
        tmp.unlink()
        return write_archive(path, root, folders, leave_svg=True)
    os.replace(tmp, path)
    return left


def reached(path: Path) -> dict[str, Any]:
    """Last complete checkpoint of a run directory: step, epoch, checkpoints, done."""
    run = RunDir(path)
    steps = run.completed_steps()
    spe = read_json(path / "config.json").get("steps_per_epoch")
    return {"checkpoints": len(steps), "step": steps[-1] if steps else None,
            "epoch": round(steps[-1] / spe, 6) if steps and spe else None, "done": run.done}
