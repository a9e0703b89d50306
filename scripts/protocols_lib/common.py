"""What every part of the protocols script shares: the repository, the log, small file helpers, the usage error."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the package need not be installed (the GPU machine runs it from here)

LOG_FILE: Path | None = None  # set by main: every log line also goes there (the archives carry it)


class UsageError(Exception):
    """Bad input: reported as one line naming the argument and the value, exit status 2."""


def log(msg: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if LOG_FILE is not None:
        with open(LOG_FILE, "a") as f:
            f.write(line + "\n")


def read_json(p: Path) -> dict[str, Any]:
    """A JSON file's object, or {} when it is missing or being written (the summary must go on)."""
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def write_text(p: Path, text: str) -> None:
    """``text`` into ``p`` atomically: a reader (or a kill) sees the old file or the new one."""
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


def lines(p: Path) -> list[str]:
    try:
        return p.read_text().splitlines()
    except OSError:
        return []


def tail(p: Path, n: int = 3) -> str:
    """The last ``n`` lines of a log that say something (typer's box drawing left out), in one line."""
    kept = [x for x in lines(p) if x.strip() and x.strip()[0] not in "│╭╰─"]
    return " | ".join(kept[-n:])[-400:]


def processes(n: int) -> str:
    return f"{n} process{'es' if n != 1 else ''}"
