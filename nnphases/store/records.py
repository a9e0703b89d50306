"""records.npz: one checkpoint's per-sample records of the evaluation set, in sample order.

``correct``: whether the model's prediction was right, bit-packed as one row of :func:`nnphases.kernels.pack_masks`
(bit ``s % 8`` of byte ``s // 8``, padded to whole 64-bit words), so a million samples take 125 KiB; ``loss``:
each sample's loss as float32 (4 bytes a sample: float16's 11-bit mantissa would round losses near 1 to about
1e-3 and overflow beyond 65,504, while float32 keeps 7 significant digits of any loss a run survives);
``samples``: their number. Written atomically into the checkpoint folder, so its manifest covers it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..options import one_line
from .atomic import atomic_write_bytes
from .errors import DamagedCheckpoint, MissingCheckpointFile
from .manifest import read_manifest, read_verified

__all__ = ["RECORDS", "write_records", "read_records"]

RECORDS = "records.npz"


def write_records(ckpt: Path, correct_packed: np.ndarray, loss: np.ndarray) -> None:
    """``correct_packed`` uint8 ``[ceil(S / 64) * 8]`` and ``loss`` float32 ``[S]`` into ``ckpt/records.npz``."""
    samples = int(loss.shape[0])
    if correct_packed.dtype != np.uint8 or correct_packed.shape != (-(-samples // 64) * 8,):
        raise ValueError(
            f"correct must be uint8 [{-(-samples // 64) * 8}], got {correct_packed.dtype} {correct_packed.shape}"
        )
    buf = io.BytesIO()
    np.savez(buf, correct=correct_packed, loss=loss.astype(np.float32, copy=False), samples=np.int64(samples))
    atomic_write_bytes(Path(ckpt) / RECORDS, buf.getvalue())


def read_records(ckpt: Path) -> tuple[np.ndarray, np.ndarray]:
    """(correct bool ``[S]``, loss float32 ``[S]``) of the checkpoint folder ``ckpt``, checked against its manifest;
    DamagedCheckpoint naming the file when it is damaged, FileNotFoundError when the run kept no records."""
    ckpt = Path(ckpt)
    if not (ckpt / RECORDS).exists():
        manifest = read_manifest(ckpt)
        if manifest is not None and RECORDS in manifest:
            raise MissingCheckpointFile(ckpt, RECORDS, "is missing (manifest.json lists it)")
        raise FileNotFoundError(f"{ckpt} holds no per-sample records (record them with --keep-records)")
    data = read_verified(ckpt, RECORDS, read_manifest(ckpt))
    try:
        with np.load(io.BytesIO(data)) as z:
            samples, packed, loss = int(z["samples"]), z["correct"], z["loss"]
    except Exception as e:  # numpy raises many kinds for a damaged archive
        raise DamagedCheckpoint(ckpt, RECORDS, f"cannot be read ({one_line(e, limit=200)})") from None
    if loss.shape != (samples,) or loss.dtype != np.float32 or packed.shape != (-(-samples // 64) * 8,):
        raise DamagedCheckpoint(ckpt, RECORDS, f"holds arrays of the wrong shape for {samples} samples")
    correct = np.unpackbits(packed, bitorder="little")[:samples].astype(bool)
    return correct, loss
