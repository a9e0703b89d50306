"""What the store raises and warns: damage named by checkpoint and file, and a run another process writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


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


class RunLocked(ValueError):
    """Another process holds the run folder's writer lock (the message names the folder and the holder)."""
