"""Every layout the kernels promise to accept, exactly equal to the reference on a dense copy:
NumPy views whose byte strides are not whole elements (fields of structured arrays, rows 13
bytes apart), misaligned data, negative strides (``a[::-1]``), zero strides
(``np.broadcast_to``, ``expand``) and overlapping rows, for the activations, the labels and
the packed masks, with and without the non-finite check. The boundary copies such arrays
once; the extension refuses them outright if one ever reaches it."""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import pytest
import torch

import nnphases.kernels as K
from kernel_tables import backend_params, device_of, host, make_acts, make_labels

CC_CPU = [p for p in backend_params("class_counts") if device_of(p.values[0]) == "cpu"]
PM_CPU = [p for p in backend_params("pack_masks") if device_of(p.values[0]) == "cpu"]
PCC_CPU = [p for p in backend_params("packed_class_counts") if device_of(p.values[0]) == "cpu"]
CC_GPU = [p for p in backend_params("class_counts") if device_of(p.values[0]) == "cuda"]
NUMPY_DTYPES = ["bool", "float16", "float32", "float64"]
SHAPES = [(1, 1), (2, 3), (33, 3), (130, 17), (300, 64), (70, 129)]
SHAPE_IDS = [f"S{s}-N{n}" for s, n in SHAPES]
C = 5


def seed_of(*parts: object) -> int:
    """A seed from a case's parameters, the same in every process (hash() of str is salted)."""
    return zlib.crc32(repr(parts).encode())


# ------------------------------------------------------------------------- layouts
def struct_field(x: np.ndarray) -> np.ndarray:
    """x's values as a field next to a 0xFF byte in a structured array: every byte stride is
    item + 1 times something, not a whole number of elements (a misread sees the 0xFF bytes)."""
    rec = np.zeros(x.shape, dtype=[("a", x.dtype), ("b", "u1")])
    rec["a"], rec["b"] = x, 0xFF
    return rec["a"]


def struct_rows(x: np.ndarray) -> np.ndarray:
    """A sub-array field next to a 0xFF byte: adjacent elements, rows `row bytes + 1` apart."""
    rec = np.zeros(x.shape[0], dtype=[("a", x.dtype, x.shape[1:]), ("b", "u1")])
    rec["a"], rec["b"] = x, 0xFF
    return rec["a"]


def odd_rows(x: np.ndarray, gap: int = 1) -> np.ndarray:
    """Rows `gap` bytes further apart than their length (13 bytes for 3 float32 nodes), built over a
    0xFF-filled byte buffer with explicit strides."""
    s, n = x.shape
    row = n * x.itemsize + gap
    buf = np.full(s * row + x.itemsize, 0xFF, np.uint8)
    for i in range(s):
        buf[i * row:i * row + n * x.itemsize] = np.frombuffer(x[i].tobytes(), np.uint8)
    return np.ndarray(x.shape, dtype=x.dtype, buffer=buf, strides=(row, x.itemsize))


def misaligned(x: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of x starting one byte past an 8-byte boundary."""
    buf = np.zeros(x.nbytes + 16, np.uint8)
    skip = (1 - buf.ctypes.data) % 8
    y = buf[skip:skip + x.nbytes].view(x.dtype).reshape(x.shape)
    y[...] = x
    return y


def overlapping(x: np.ndarray) -> np.ndarray:
    """Row r is x.flat[r : r + nodes]: every row overlaps the next (row stride one element)."""
    s, n = x.shape
    flat = x.reshape(-1)[:s + n - 1].copy() if x.size >= s + n - 1 else np.resize(x.reshape(-1), s + n - 1)
    return np.lib.stride_tricks.sliding_window_view(flat, n)


ACTS_LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "struct-field": struct_field,
    "struct-rows": struct_rows,
    "rows-13-bytes": odd_rows,
    "struct-field-transposed": lambda x: struct_field(np.ascontiguousarray(x.T)).T,
    "struct-field-reversed": lambda x: struct_field(x)[::-1],
    "misaligned": misaligned,
    "reversed-rows": lambda x: x[::-1],
    "reversed-nodes": lambda x: x[:, ::-1],
    "reversed-both": lambda x: x[::-1, ::-1],
    "every-other-reversed": lambda x: np.repeat(x, 2, axis=0)[::-2],
    "broadcast-row": lambda x: np.broadcast_to(x[:1], x.shape),
    "broadcast-column": lambda x: np.broadcast_to(x[:, :1], x.shape),
    "broadcast-scalar": lambda x: np.broadcast_to(x[:1, :1], x.shape),
    "overlapping-rows": overlapping,
}
LABEL_LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "dense": lambda y: y,
    "struct-field": struct_field,
    "bytes-apart": lambda y: odd_rows(y[:, None], gap=1)[:, 0],
    "misaligned": misaligned,
    "reversed": lambda y: y[::-1],
    "every-other-reversed": lambda y: np.repeat(y, 2)[::-2],
    "broadcast": lambda y: np.broadcast_to(y[:1], y.shape),
}


def expect_weird(layout: str, v: np.ndarray) -> None:
    """Guards against a layout that silently came out ordinary (e.g. a one-element axis)."""
    item = v.itemsize
    if layout.startswith(("struct", "rows-13", "bytes-apart")) and v.size > 1 and v.shape[0] > 1 and item > 1:
        assert any(st % item for st in v.strides), (layout, v.strides)
    if layout == "misaligned" and item > 1:
        assert v.ctypes.data % item, layout


def random_acts(shape: tuple[int, int], dtype: str, seed: int) -> np.ndarray:
    return make_acts(np.random.default_rng(seed), *shape, dtype).numpy()


def random_labels(samples: int, dtype: str, seed: int) -> np.ndarray:
    return make_labels(np.random.default_rng(seed), samples, C).numpy().astype(dtype)


def reference(acts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The reference backend on dense copies of the views."""
    return K.class_counts(acts.copy(order="C"), labels.copy(order="C"), C, backend="reference",
                          check_finite=False)


# ----------------------------------------------------------------- class_counts, acts
@pytest.mark.parametrize("backend", CC_CPU)
@pytest.mark.parametrize("check_finite", [True, False], ids=["checked", "unchecked"])
@pytest.mark.parametrize("layout", list(ACTS_LAYOUTS))
@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_class_counts_acts_layouts(backend, shape, dtype, layout, check_finite):
    seed = seed_of(shape, dtype, layout)
    v = ACTS_LAYOUTS[layout](random_acts(shape, dtype, seed))
    expect_weird(layout, v)
    lab = random_labels(shape[0], "int64", seed + 1)
    want = reference(v, lab)
    got = K.class_counts(v, lab, C, backend=backend, check_finite=check_finite)
    np.testing.assert_array_equal(got, want)
    out = np.ones((C, shape[1]), np.int32)
    K.class_counts(v, lab, C, backend=backend, check_finite=check_finite, out=out)
    np.testing.assert_array_equal(out, want + 1)


@pytest.mark.parametrize("backend", CC_CPU)
@pytest.mark.parametrize("layout", list(LABEL_LAYOUTS))
@pytest.mark.parametrize("label_dtype", ["int32", "int64"])
@pytest.mark.parametrize("shape", SHAPES[1:], ids=SHAPE_IDS[1:])
def test_class_counts_label_layouts(backend, shape, label_dtype, layout):
    seed = seed_of(shape, label_dtype, layout)
    acts = random_acts(shape, "float32", seed)
    y = LABEL_LAYOUTS[layout](random_labels(shape[0], label_dtype, seed + 1))
    expect_weird(layout, y)
    want = reference(acts, y)
    np.testing.assert_array_equal(K.class_counts(acts, y, C, backend=backend, check_finite=False), want)
    np.testing.assert_array_equal(K.class_counts(struct_field(acts), y, C, backend=backend), want)


@pytest.mark.parametrize("backend", CC_CPU)
@pytest.mark.parametrize("layout", list(LABEL_LAYOUTS)[1:])
def test_label_layouts_still_range_checked(backend, layout):
    y = random_labels(40, "int32", 3)
    y[0] = C  # every layout keeps element 0 somewhere: broadcast makes every label C
    v = LABEL_LAYOUTS[layout](y)
    i = int(np.flatnonzero(v.copy() >= C)[0])
    with pytest.raises(ValueError, match=rf"labels\[{i}\] = {C} is outside \[0, num_classes={C}\)"):
        K.class_counts(random_acts((40, 3), "float32", 4), v, C, backend=backend)


# ----------------------------------------------------------------- torch layouts
def torch_misaligned(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor over a bytearray, one byte past an element boundary (torch.frombuffer)."""
    item = t.element_size()
    raw = t.contiguous().view(torch.uint8).reshape(-1).numpy().tobytes()
    buf = bytearray(len(raw) + 16)
    base = np.frombuffer(buf, np.uint8).ctypes.data
    skip = (1 - base) % 8 if item > 1 else 0
    buf[skip:skip + len(raw)] = raw
    m = torch.frombuffer(buf, dtype=t.dtype, offset=skip, count=t.numel()).reshape(t.shape)
    if item > 1:
        assert m.data_ptr() % item
    return m


TORCH_LAYOUTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "expand-row": lambda t: t[:1].expand(t.shape),
    "expand-column": lambda t: t[:, :1].expand(t.shape),
    "misaligned": torch_misaligned,
    "transposed-expand": lambda t: t[:1].t().expand(t.shape[1], t.shape[0]).t(),
}


@pytest.mark.parametrize("backend", CC_CPU)
@pytest.mark.parametrize("layout", list(TORCH_LAYOUTS))
@pytest.mark.parametrize("dtype", ["bool", "float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_class_counts_torch_layouts(backend, shape, dtype, layout):
    rng = np.random.default_rng(seed_of(shape, dtype, layout))
    t = TORCH_LAYOUTS[layout](make_acts(rng, *shape, dtype))
    lab = make_labels(rng, shape[0], C)
    want = K.class_counts(t.contiguous().clone(), lab, C, backend="reference").numpy()
    np.testing.assert_array_equal(K.class_counts(t, lab, C, backend=backend).numpy(), want)
    out = torch.zeros((C, shape[1]), dtype=torch.int32)
    assert K.class_counts(t, torch_misaligned(lab), C, backend=backend, out=out) is out
    np.testing.assert_array_equal(out.numpy(), want)


# ----------------------------------------------------------------- pack_masks
@pytest.mark.parametrize("backend", PM_CPU)
@pytest.mark.parametrize("check_finite", [True, False], ids=["checked", "unchecked"])
@pytest.mark.parametrize("layout", list(ACTS_LAYOUTS))
@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_pack_masks_layouts(backend, shape, dtype, layout, check_finite):
    v = ACTS_LAYOUTS[layout](random_acts(shape, dtype, seed_of(shape, dtype, layout, 1)))
    expect_weird(layout, v)
    want = K.pack_masks(v.copy(order="C"), backend="reference", check_finite=False)
    np.testing.assert_array_equal(K.pack_masks(v, backend=backend, check_finite=check_finite), want)


# ----------------------------------------------------------------- packed_class_counts
PACKED_LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "struct-rows": struct_rows,
    "rows-13-bytes": odd_rows,
    "misaligned": misaligned,
    "reversed-rows": lambda p: p[::-1].copy()[::-1],
    "reversed-bytes": lambda p: p[:, ::-1].copy()[:, ::-1],
    "fortran": np.asfortranarray,
    "broadcast-row": lambda p: np.broadcast_to(p[:1], p.shape),
}


@pytest.mark.parametrize("backend", PCC_CPU)
@pytest.mark.parametrize("layout", list(PACKED_LAYOUTS))
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_packed_class_counts_layouts(backend, shape, layout):
    seed = seed_of(shape, layout)
    packed = K.pack_masks(random_acts(shape, "float32", seed), backend="reference")
    v = PACKED_LAYOUTS[layout](packed)
    if layout == "misaligned":
        assert v.ctypes.data % 8
    lab = random_labels(shape[0], "int32", seed + 1)
    want = K.packed_class_counts(v.copy(order="C"), lab, C, backend="reference")
    np.testing.assert_array_equal(K.packed_class_counts(v, lab, C, backend=backend), want)
    np.testing.assert_array_equal(K.packed_class_counts(v, struct_field(lab), C, backend=backend), want)


# ----------------------------------------------------------------- the native guard
@pytest.mark.parametrize("layout", ["struct-field", "struct-rows", "rows-13-bytes", "misaligned"])
def test_extension_refuses_unindexable_views(layout):
    """Were a view to slip past the boundary, the extension raises instead of misreading it."""
    _C = pytest.importorskip("nnphases._C")
    v = ACTS_LAYOUTS[layout](random_acts((33, 3), "float32", 0)).view(np.uint32)
    lab = np.zeros(33, np.int32)
    with pytest.raises(ValueError, match="adjacent, aligned nodes"):
        _C.class_counts(v, 3, lab, 1, np.zeros((1, 3), np.int64), False, 1, 0)
    with pytest.raises(ValueError, match="adjacent, aligned nodes"):
        _C.pack_masks(v, 3, np.zeros((3, 8), np.uint8), False, 1)


# ----------------------------------------------------------------- GPU layouts
GPU_TORCH_LAYOUTS = ["expand-row", "expand-column", "transposed-expand"]
GPU_CUPY_LAYOUTS = ["reversed-rows", "reversed-nodes", "reversed-both", "every-other-reversed", "broadcast-row",
                    "broadcast-column"]


def check_gpu(backend: str, v: object, y: object, dense: np.ndarray, lab: np.ndarray) -> None:
    want = reference(dense, lab)
    np.testing.assert_array_equal(host(K.class_counts(v, y, C, backend=backend)), want)
    np.testing.assert_array_equal(host(K.pack_masks(v, backend=backend)), K.pack_masks(dense, backend="reference"))


@pytest.mark.parametrize("backend", CC_GPU)
@pytest.mark.parametrize("layout", GPU_TORCH_LAYOUTS)
@pytest.mark.parametrize("dtype", ["bool", "float16", "bfloat16", "float32", "float64"])
def test_gpu_torch_layouts(backend, dtype, layout):
    rng = np.random.default_rng(5)
    t = TORCH_LAYOUTS[layout](make_acts(rng, 300, 64, dtype).cuda())
    lab = make_labels(rng, 300, C)
    dense = t.cpu().contiguous()
    want = K.class_counts(dense, lab, C, backend="reference").numpy()
    np.testing.assert_array_equal(host(K.class_counts(t, lab.cuda(), C, backend=backend)), want)
    np.testing.assert_array_equal(host(K.pack_masks(t, backend=backend)), host(K.pack_masks(dense, backend="reference")))


@pytest.mark.parametrize("backend", CC_GPU)
@pytest.mark.parametrize("layout", GPU_CUPY_LAYOUTS)
@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_gpu_cupy_layouts(backend, dtype, layout):
    """CuPy views with negative and zero strides (which DLPack cannot hand to torch): copied at the boundary."""
    cupy = pytest.importorskip("cupy")
    x = random_acts((300, 64), dtype, 5)
    lab = random_labels(300, "int64", 6)
    v = ACTS_LAYOUTS[layout](cupy.asarray(x))  # NumPy's functions dispatch to CuPy's
    assert isinstance(v, cupy.ndarray)
    check_gpu(backend, v, cupy.asarray(lab[::-1])[::-1], ACTS_LAYOUTS[layout](x).copy(order="C"), lab)


def torch_packed(packed: np.ndarray, layout: str) -> torch.Tensor:
    """The packed masks on the GPU in a torch layout with the same values (torch has no negative strides)."""
    t = torch.from_numpy(packed).cuda()
    if layout == "misaligned":  # contiguous, starting 3 bytes into an allocation
        flat = torch.zeros(t.numel() + 8, dtype=torch.uint8, device="cuda")
        flat[3:3 + t.numel()] = t.reshape(-1)
        v = flat[3:3 + t.numel()].view(t.shape)
        assert v.data_ptr() % 8 and v.is_contiguous()
        return v
    if layout == "transposed":
        return t.t().contiguous().t()
    if layout == "column-step":
        return torch.repeat_interleave(t, 2, dim=1)[:, ::2]
    return t[:1].expand(t.shape)  # broadcast-row


@pytest.mark.parametrize("backend", [p for p in backend_params("packed_class_counts") if device_of(p.values[0]) == "cuda"])
@pytest.mark.parametrize("layout", ["misaligned", "transposed", "column-step", "broadcast-row"])
def test_gpu_packed_layouts(backend, layout):
    """Packed rows are read as 64-bit words on the GPU too: any layout or byte offset is made dense first."""
    packed = K.pack_masks(random_acts((300, 20), "float32", 8), backend="reference")
    lab = random_labels(300, "int64", 9)
    v = torch_packed(packed, layout)
    want = K.packed_class_counts(v.cpu().contiguous().numpy(), lab, C, backend="reference")
    got = K.packed_class_counts(v, torch.from_numpy(lab).cuda(), C, backend=backend)
    np.testing.assert_array_equal(host(got), want)
