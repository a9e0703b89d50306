"""counts.npz: the per-class counts of a checkpoint's layers, and the node rows derived from them.

Counts are stored in the narrowest unsigned dtype that holds them (uint16 for sets under 65,536 samples) and read
back as int64: lossless and 4x smaller than int64. Small layers are ``layer:<name>`` arrays (readable by
``np.load`` alone); large ones are blosc-compressed ``blosc:<name>`` uint8 frames, their dtype and shape in the
``blosc_layers`` JSON entry, as fast to write as plain arrays where zlib took seconds per VGG-sized checkpoint.
``class_sizes`` is int64 ``[C]``.

Node rows are a pure function of the counts, so ``nodes.parquet`` holds only the layers a measure chose to store
(SampleSets' ``node_tables`` option) and every reader computes the missing layers' rows here, with
:func:`nnphases.kernels.node_metrics`, the function that writes them: the same rows, dtypes and order either way.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..options import one_line
from .errors import DamagedCheckpoint
from .layout import layer_name
from .manifest import read_manifest, read_verified
from .tables import NODES_KEY, PARTIAL, register_table

if TYPE_CHECKING:
    from ..kernels.metrics import NodeMetrics

LAYER_KEY = "layer:"
BLOSC_KEY = "blosc:"
BLOSC_LAYERS = "blosc_layers"
# A layer's counts are compressed from this size on: below it blosc saves a few KiB, and a plain .npy entry stays
# readable by np.load alone. Blosc takes at most 2 GiB a call.
COMPRESS_MIN_BYTES = 1 << 16
COMPRESS_MAX_BYTES = (1 << 31) - (1 << 16)

NODES = register_table(
    "nodes",
    [
        ("layer", pa.string()),
        ("node", pa.int64()),
        ("f", pa.float64()),
        ("p", pa.float64()),
        ("u", pa.float64()),
        ("h_z_given_y", pa.float64()),
        ("h_y_given_z", pa.float64()),
        ("dead", pa.bool_()),
        ("always_active", pa.bool_()),
    ],
)

COUNT_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.int32, np.int64))


def narrow(counts: np.ndarray, top: int | None = None) -> np.ndarray:
    """Non-negative counts in the narrowest unsigned dtype that holds ``top`` (their maximum when None; the
    writer passes the largest class size, which bounds counts the metric kernels accepted, and so saves a
    pass over the table)."""
    if top is None:
        top = int(counts.max()) if counts.size else 0
    return counts.astype(np.min_scalar_type(top) if top > 0 else np.uint8, copy=False)


def blosc() -> Any:
    from numcodecs import Blosc  # deferred: numcodecs comes with zarr and is needed only for large layers

    # lz4 on bit-shuffled counts: on a VGG-11-sized checkpoint 0.57 of the plain bytes, written (with the fsync)
    # as fast as the plain file; zstd saved no more and took 2-5x longer (benchmarks/RESULTS.md).
    return Blosc(cname="lz4", clevel=1, shuffle=Blosc.BITSHUFFLE)


def encode_counts(layers: Mapping[str, np.ndarray], sizes: np.ndarray) -> dict[str, np.ndarray]:
    """The entries of counts.npz: each layer narrowed, large ones compressed, in model order."""
    arrays: dict[str, np.ndarray] = {}
    compressed: dict[str, dict[str, Any]] = {}
    codec = None
    top = int(sizes.max()) if sizes.size else 0
    for layer, c in layers.items():
        a = narrow(c, top)
        if COMPRESS_MIN_BYTES <= a.nbytes <= COMPRESS_MAX_BYTES:
            codec = codec or blosc()
            arrays[BLOSC_KEY + layer] = np.frombuffer(codec.encode(np.ascontiguousarray(a)), np.uint8)
            compressed[layer] = {"dtype": a.dtype.name, "shape": list(a.shape)}
        else:
            arrays[LAYER_KEY + layer] = a
    arrays["class_sizes"] = sizes
    if compressed:
        arrays[BLOSC_LAYERS] = np.array(json.dumps(compressed))
    return arrays


def decode_counts(arrays: Mapping[str, np.ndarray], bad: Any) -> dict[str, np.ndarray]:
    """Layer name -> stored counts (any unsigned or signed integer dtype) from counts.npz's entries, in order."""
    meta: dict[str, Any] = {}
    if BLOSC_LAYERS in arrays:
        try:
            meta = json.loads(str(arrays[BLOSC_LAYERS][()]))
        except (ValueError, TypeError) as e:
            raise bad(f"has an unreadable {BLOSC_LAYERS} entry ({one_line(e, limit=200)})") from None
        if not isinstance(meta, dict):
            raise bad(f"has an unreadable {BLOSC_LAYERS} entry (not a JSON object)")
    out: dict[str, np.ndarray] = {}
    codec = None
    for key, a in arrays.items():
        if key.startswith(LAYER_KEY):
            out[key[len(LAYER_KEY) :]] = a
        elif key.startswith(BLOSC_KEY):
            name = key[len(BLOSC_KEY) :]
            info = meta.get(name)
            if (
                not isinstance(info, dict)
                or info.get("dtype") not in ("uint8", "uint16", "uint32", "uint64")
                or not isinstance(info.get("shape"), list)
                or len(info["shape"]) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in info["shape"])
            ):
                raise bad(f"layer {name!r}: {BLOSC_LAYERS} gives no valid dtype and shape ({info!r:.80})")
            frame = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
            # Blosc trusts its 16-byte header: a frame cut short would be decoded from whatever memory follows
            # it, so its stated compressed size must be the frame's own.
            if frame.size < 16 or int(frame[12:16].view("<u4")[0]) != frame.size:
                stated = int(frame[12:16].view("<u4")[0]) if frame.size >= 16 else None
                raise bad(
                    f"layer {name!r} cannot be decompressed (a frame of {frame.size} bytes whose header "
                    f"states {stated} bytes)"
                )
            codec = codec or blosc()
            try:
                raw = codec.decode(frame)
            except Exception as e:  # blosc raises RuntimeError or ValueError for bytes it did not write
                raise bad(f"layer {name!r} cannot be decompressed ({one_line(e, limit=200)})") from None
            dtype = np.dtype(info["dtype"])
            shape = tuple(info["shape"])
            if len(raw) != math.prod(shape) * dtype.itemsize:
                raise bad(f"layer {name!r} decompresses to {len(raw)} bytes, not {info['dtype']} {list(shape)}")
            out[name] = np.frombuffer(raw, dtype).reshape(shape)
    return out


def write_counts(path: Path, layers: Mapping[str, np.ndarray], sizes: np.ndarray) -> None:
    """Write ``counts.npz`` (checked counts, as :func:`check_counts` returns them)."""
    with open(path, "wb") as f:
        # Every entry is a number or string array (the names are prefixed, none is "allow_pickle"): no pickles.
        np.savez(f, allow_pickle=False, **encode_counts(layers, sizes))


def check_counts(counts: Mapping[str, np.ndarray], class_sizes: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A writer's counts and class sizes checked for shape and dtype (their values are checked by the metric
    kernels that read them): layer name -> ``[C, N]`` integers kept in their dtype where it is one the kernels
    read as it is, and int64 class sizes."""
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
        layers[layer_name(name)] = a if a.dtype in COUNT_DTYPES else a.astype(np.int64)
    return layers, sizes.astype(np.int64, copy=False)


def read_counts(ckpt: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Counts and class sizes of a checkpoint folder, verified, and refused when a count is outside 0..class size."""
    data = read_verified(ckpt, "counts.npz", read_manifest(ckpt))

    def bad(problem: str) -> DamagedCheckpoint:
        return DamagedCheckpoint(ckpt, "counts.npz", problem)

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile, zlib and format errors: any of them means the bytes are not an npz
        raise bad(f"cannot be read ({one_line(e, limit=200)})") from None
    stored = decode_counts(arrays, bad)
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


def node_rows(seed: int, step: int, epoch: float, layer: str, nm: NodeMetrics) -> pa.Table:
    """One layer's rows of the nodes table: the writer's and the readers' (derived) rows are built here alike."""
    n = int(nm.fraction.shape[0])
    return pa.table(
        {
            "seed": np.full(n, seed, np.int64),
            "step": np.full(n, step, np.int64),
            "epoch": np.full(n, epoch, np.float64),
            # One string repeated in C: a Python object per node cost more than the metrics themselves.
            "layer": pa.repeat(pa.scalar(layer, pa.string()), n),
            "node": np.arange(n, dtype=np.int64),
            "f": nm.fraction,
            "p": nm.predictability,
            "u": nm.informativeness,
            "h_z_given_y": nm.h_z_given_y,
            "h_y_given_z": nm.h_y_given_z,
            "dead": nm.dead,
            "always_active": nm.always_active,
        },
        schema=NODES.schema,
    )


def node_columns(layers: Mapping[str, np.ndarray], sizes: np.ndarray, tabled: Sequence[str]) -> pa.Table | None:
    """The nodes table's own columns (key columns left out) for the layers in ``tabled``, marked partial when
    they are not all the layers; None when ``tabled`` is empty (no nodes table)."""
    from .. import kernels  # deferred: the kernels import their backends' modules

    parts = [
        node_rows(0, 0, 0.0, name, named_layer(name, kernels.node_metrics, c, sizes))
        for name, c in layers.items()
        if name in tabled
    ]
    if not parts:
        return None
    t = pa.concat_tables(parts).drop_columns(["seed", "step", "epoch"])
    return t.replace_schema_metadata({NODES_KEY: PARTIAL} if len(parts) < len(layers) else None)


def derive_nodes(
    counts: Mapping[str, np.ndarray],
    sizes: np.ndarray,
    layer: str,
    width: int,
    *,
    ckpt: Path,
    seed: int,
    step: int,
    epoch: float,
) -> pa.Table:
    """The node rows of ``layer`` derived from a checkpoint's counts (DamagedCheckpoint when they lack it)."""
    from .. import kernels

    c = counts.get(layer)
    if c is None or c.shape[1] != width:
        raise DamagedCheckpoint(
            ckpt, "counts.npz", f"has no layer {layer!r} of {width} nodes (layers.parquet lists it)"
        )
    return node_rows(seed, step, epoch, layer, kernels.node_metrics(c, sizes))


def named_layer(name: str, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), with a ValueError or TypeError prefixed by the layer it is about."""
    try:
        return fn(*args)
    except (ValueError, TypeError) as e:
        raise type(e)(f"layer {name!r}: {e}") from None
