"""Bit-packed masks on disk: streamed in as batches are measured, read back by layer, nodes or samples.

The stored layout is :func:`nnphases.kernels.pack_masks`' for the whole
evaluation set, whatever the batch size: row ``d`` holds bit ``s % 8`` of byte
``s // 8`` for sample ``s``, padded to whole little-endian 64-bit words. A
batch of ``b`` samples arrives packed on its own (its own padding), so it is
shifted into place as 64-bit words (never unpacked to one byte per bit) in a
column buffer of ``cols`` bytes per node; whole buffers go to the zarr array as
whole shards (one shard spans every node and ``cols`` bytes of samples, split
into ~1 MiB chunks along the nodes so a node range reads little), so memory
stays at one buffer per site whatever the number of samples, and no write ever
touches a shard twice. One thread writes; the array is resized as it grows, since
a stream's length is learnt only at its end.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np

from ..options import one_line
from .counts import read_counts
from .errors import DamagedCheckpoint, MissingCheckpointFile
from .layout import MANIFEST, mask_array_name
from .manifest import read_manifest, read_verified, verify_tree

__all__ = ["MaskWriter", "read_masks", "mask_nodes", "take_samples"]

_CHUNK_BYTES = 1 << 20


def take_samples(packed: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Samples ``[start, stop)`` of packed rows ``packed`` (uint8 ``[N, bytes]``, whole 64-bit words) in the same
    layout, as if packed on their own: uint8 ``[N, ceil((stop - start) / 64) * 8]``."""
    words = np.ascontiguousarray(packed).view(np.uint64)
    w0, r = divmod(start, 64)
    n_out = -(-(stop - start) // 64)
    part = words[:, w0 : w0 + n_out + 1]
    if r:
        lo = part[:, :n_out] >> np.uint64(r)
        hi = np.zeros_like(lo)
        nxt = part[:, 1 : n_out + 1]
        hi[:, : nxt.shape[1]] = nxt << np.uint64(64 - r)
        out = lo | hi
    else:
        out = part[:, :n_out].copy()
    tail = (stop - start) % 64
    if tail and n_out:
        out[:, -1] &= np.uint64((1 << tail) - 1)
    return np.ascontiguousarray(out).view(np.uint8)


class MaskWriter:
    """Streams one site's packed masks into a new zarr array ``name`` of ``group`` (``nodes`` rows), ``cols``
    bytes of samples (a multiple of 8) per shard column."""

    def __init__(
        self, group: Any, name: str, nodes: int, cols: int, attributes: dict[str, Any], executor: Any = None
    ) -> None:
        if cols < 8 or cols % 8:
            raise ValueError(f"cols must be a positive multiple of 8 bytes, got {cols}")
        rows = max(1, min(nodes, _CHUNK_BYTES // cols))
        shard_rows = -(-nodes // rows) * rows
        self.array = group.create_array(
            name,
            shape=(nodes, 0),
            dtype=np.uint8,
            chunks=(rows, cols),
            shards=(shard_rows, cols),
            fill_value=0,
            attributes=attributes,
        )
        self.nodes, self.cols = nodes, cols
        self._words = cols // 8
        self._buf = np.zeros((nodes, self._words + 1), dtype=np.uint64)
        self._scratch = np.empty_like(self._buf)
        self._bits = 0  # valid bits in the buffer
        self.written = 0  # bytes per row handed to the array
        self.samples = 0
        # Whole shard columns are compressed and written on ``executor`` (one thread, so in order) while the next
        # batches are measured; at most one column per site waits there, so memory stays at two buffers per site.
        self._executor = executor
        self._pending: Any = None

    def append(self, packed: np.ndarray, samples: int) -> None:
        """Add one batch: ``packed`` uint8 ``[nodes, ceil(samples / 64) * 8]`` as pack_masks gives it."""
        if packed.shape != (self.nodes, -(-samples // 64) * 8):
            raise ValueError(f"packed masks must be [{self.nodes}, {-(-samples // 64) * 8}], got {packed.shape}")
        pos = 0  # samples of this batch already buffered
        words = np.ascontiguousarray(packed).view(np.uint64)
        tail = samples % 64
        clean = not tail or not (words[:, -1] >> np.uint64(tail)).any()  # padding bits zero, as pack_masks leaves them
        while pos < samples:
            n = min(self._words * 64 - self._bits, samples - pos)
            # A batch starts on a word of its own with its padding bits zero (pack_masks' layout), so unless it
            # is split across two buffers its words are ORed into place as they are, shifted by the buffer's
            # bit offset: no copy of the batch and no zeroed temporary.
            part = words if pos == 0 and n == samples and clean else take_samples(packed, pos, pos + n).view(np.uint64)
            self._or_into(part, self._bits)
            self._bits += n
            pos += n
            if self._bits == self._words * 64:
                self._flush(self._words)
        self.samples += samples

    def _or_into(self, part: np.ndarray, bit: int) -> None:
        """ORs ``part`` (uint64 ``[nodes, k]``) into the buffer from bit ``bit`` on, in two passes through one
        reused scratch array: the low bits of each word shifted up, the high bits into the next word."""
        w0, r = divmod(bit, 64)
        k = min(part.shape[1], self._buf.shape[1] - w0)
        if k <= 0:
            return
        scratch = self._scratch[:, :k]
        np.left_shift(part[:, :k], np.uint64(r), out=scratch)
        np.bitwise_or(self._buf[:, w0 : w0 + k], scratch, out=self._buf[:, w0 : w0 + k])
        if r:
            k1 = min(part.shape[1], self._buf.shape[1] - w0 - 1)
            if k1 > 0:
                scratch = self._scratch[:, :k1]
                np.right_shift(part[:, :k1], np.uint64(64 - r), out=scratch)
                np.bitwise_or(self._buf[:, w0 + 1 : w0 + 1 + k1], scratch, out=self._buf[:, w0 + 1 : w0 + 1 + k1])

    def _flush(self, nwords: int) -> None:
        start, end = self.written, self.written + nwords * 8
        block = np.ascontiguousarray(self._buf[:, :nwords]).view(np.uint8)  # a copy: the buffer is reused
        self.wait()
        if self._executor is None:
            self._write(start, end, block)
        else:
            self._pending = self._executor.submit(self._write, start, end, block)
        self.written = end
        self._buf[:, :] = 0
        self._bits = 0

    def _write(self, start: int, end: int, block: np.ndarray) -> None:
        self.array.resize((self.nodes, end))
        self.array[:, start:end] = block

    def wait(self) -> None:
        """Wait for the column being written, if any, and raise its error."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        """Write what is buffered (the last, partial shard column, padded to whole words) and wait for it."""
        if self._bits:
            self._flush(-(-self._bits // 64))
        self.wait()
        if self.written != -(-self.samples // 64) * 8:
            raise AssertionError(f"masks: wrote {self.written} bytes per row for {self.samples} samples")


def _open(ckpt: Path) -> tuple[Any, list[str], Any] | None:
    """(the masks' zarr group, its layers, the checkpoint's manifest), or None when the checkpoint kept no masks;
    the group's metadata verified against the manifest."""
    path = ckpt / "masks.zarr"
    manifest = read_manifest(ckpt)
    if not path.exists():
        if manifest is not None and any(n.startswith("masks.zarr/") for n in manifest):
            raise MissingCheckpointFile(ckpt, "masks.zarr", f"is missing ({MANIFEST} lists it)")
        return None
    import zarr

    if manifest is not None:
        read_verified(ckpt, "masks.zarr/zarr.json", manifest)
    try:
        g = zarr.open_group(str(path), mode="r")
        stored = g.attrs["layers"]
        if not isinstance(stored, list):
            raise TypeError(f"its layers attribute is not a list: {stored!r:.80}")
        layers = [str(x) for x in stored]
    except Exception as e:  # zarr raises many kinds for a damaged store
        raise DamagedCheckpoint(ckpt, "masks.zarr/zarr.json", f"cannot be read ({one_line(e, limit=200)})") from None
    return g, layers, manifest


def _array(ckpt: Path, g: Any, name: str, manifest: Any, whole: bool) -> Any:
    """Layer ``name``'s array, its files checked against the manifest (the chunks' checksums too when ``whole``)."""
    import zarr

    key = mask_array_name(name)
    if manifest is not None:
        verify_tree(ckpt, f"masks.zarr/{key}/", manifest, lambda n: whole or n.endswith("zarr.json"))
    try:
        arr = g[key]
    except Exception as e:
        raise DamagedCheckpoint(ckpt, f"masks.zarr/{key}", f"cannot be read ({one_line(e, limit=200)})") from None
    if not isinstance(arr, zarr.Array):
        raise DamagedCheckpoint(ckpt, f"masks.zarr/{key}", "is a group, not an array")
    if arr.ndim != 2 or arr.dtype != np.uint8 or arr.shape[1] % 8:
        raise DamagedCheckpoint(
            ckpt, f"masks.zarr/{key}", f"must be uint8 [N, 8k], got dtype {arr.dtype} shape {arr.shape}"
        )
    return arr


def mask_nodes(ckpt: Path) -> dict[str, int]:
    """Each layer with stored masks in the checkpoint folder ``ckpt`` and its number of nodes (rows), in model
    order, from the arrays' metadata (verified; no chunk is read); {} when it kept no masks."""
    opened = _open(ckpt)
    if opened is None:
        return {}
    g, layers, manifest = opened
    return {name: int(_array(ckpt, g, name, manifest, whole=False).shape[0]) for name in layers}


def read_masks(
    ckpt: Path, layer: str | None = None, *, nodes: Any = None, samples: slice | None = None, where: str | None = None
) -> Any:
    """The packed masks of the checkpoint folder ``ckpt``, verified against its manifest (see
    :meth:`nnphases.store.RunDir.read_masks`); ``where`` names the checkpoint in messages (default: its folder)."""
    where = where or repr(str(ckpt))
    opened = _open(ckpt)
    if opened is None:
        if layer is not None:
            raise ValueError(f"{where} has no stored masks")
        return {}
    g, layers, manifest = opened
    if layer is not None and layer not in layers:
        raise ValueError(f"layer {layer!r} has no stored masks at {where}; stored: {layers}")
    whole = nodes is None and samples is None

    def array(name: str) -> Any:
        return _array(ckpt, g, name, manifest, whole)

    def get(name: str, arr: Any, index: Any) -> np.ndarray:
        try:
            return np.asarray(arr[index])
        except IndexError as e:  # the caller's nodes, not the store; zarr's message names neither
            raise IndexError(
                f"nodes {nodes!r:.80} is outside the {arr.shape[0]} nodes of layer {name!r} ({e})"
            ) from None
        except TypeError:
            raise  # the caller's nodes, not the store
        except Exception as e:
            raise DamagedCheckpoint(
                ckpt, f"masks.zarr/{mask_array_name(name)}", f"cannot be read ({one_line(e, limit=200)})"
            ) from None

    if layer is None:
        return {name: get(name, array(name), ...) for name in layers}
    arr = array(layer)
    rows = slice(None) if nodes is None else nodes
    if samples is None:
        return get(layer, arr, (rows, slice(None)))
    if not isinstance(samples, slice) or samples.step not in (None, 1):
        raise ValueError(f"samples must be a slice start:stop, got {samples!r}")
    for bound in (samples.start, samples.stop):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, numbers.Integral)):
            raise TypeError(f"samples bounds must be integers, got {samples!r}")
    # The rows are padded to whole 64-bit words: the slice is taken of the set's own samples (their number is
    # the sum of the class sizes), as a Python slice of them would be, so padding bits are never returned as
    # samples and a negative bound counts from the last real sample.
    total = int(read_counts(ckpt)[1].sum())
    start, stop, _ = samples.indices(total)
    stop = max(start, stop)
    w0, w1 = start // 64 * 8, -(-stop // 64) * 8
    part = get(layer, arr, (rows, slice(w0, w1)))
    return take_samples(part, start - w0 * 8, stop - w0 * 8)
