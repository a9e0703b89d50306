"""The one place arrays cross: NumPy, PyTorch or CuPy in, a backend's native array
type in between (NumPy for CPU backends, a torch CUDA tensor for ``cuda``, a CuPy
array for ``cupy``), and the caller's kind and device out, via DLPack without
copies. Activations are viewed as unsigned bits of their width before crossing
(CuPy and NumPy have no bfloat16); the only copy the boundary makes is of an
input whose nodes are not adjacent in memory, and the GPU-to-host round trip
when the reference backend is asked to run on GPU data.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

_TORCH_NAMES = {
    "torch.bool": "bool",
    "torch.float16": "float16",
    "torch.bfloat16": "bfloat16",
    "torch.float32": "float32",
    "torch.float64": "float64",
    "torch.int32": "int32",
    "torch.int64": "int64",
    "torch.uint8": "uint8",
    "torch.int16": "int16",
    "torch.int8": "int8",
}
_SIGNED_OF_SIZE = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


@dataclass(frozen=True)
class Array:
    """What the boundary knows of one argument, before anything is converted."""

    obj: Any
    name: str
    lib: str  # "numpy" | "torch" | "cupy"
    device: str  # "cpu" | "cuda"
    device_index: int
    dtype: str  # "float32", "bfloat16", "int64", ...
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements (rounded down where `indexable` is False)
    # Every stride a whole number of elements and the data aligned to the element: the
    # array can be addressed by element index (NumPy and CuPy views, e.g. a field of a
    # structured array, can break both; torch tensors never do).
    indexable: bool = True
    contiguous: bool = True  # C order, dense, indexable
    writable: bool = True

    @property
    def where(self) -> str:
        return "cpu" if self.device == "cpu" else f"cuda:{self.device_index}"


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_cupy(x: Any) -> bool:
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(x, cupy.ndarray)


def _byte_layout(
    shape: tuple[int, ...], byte_strides: tuple[int, ...], item: int, ptr: int
) -> tuple[tuple[int, ...], bool, bool]:
    """Element strides, whether the array is indexable and whether it is C-contiguous, from byte strides.
    Axes of extent 1 take no step, so their stride does not matter (as NumPy's flags say)."""
    indexable = ptr % item == 0 and all(n <= 1 or st % item == 0 for n, st in zip(shape, byte_strides, strict=True))
    contiguous, want = indexable, item
    for n, st in zip(reversed(shape), reversed(byte_strides), strict=True):
        if n == 0:
            contiguous = True
            break
        if n > 1 and st != want:
            contiguous = False
        want *= n
    return tuple(st // item for st in byte_strides), indexable, contiguous


_NUMPY_NAMES: dict[np.dtype, str] = {}


def _numpy_name(dtype: np.dtype) -> str:
    """str(dtype) (``bool`` for NumPy's bool), memoised: str() of a dtype costs microseconds."""
    name = _NUMPY_NAMES.get(dtype)
    if name is None:
        name = "bool" if dtype == np.bool_ else str(dtype)
        if len(_NUMPY_NAMES) < 256:  # structured dtypes are unbounded in number; the plain ones are few
            _NUMPY_NAMES[dtype] = name
    return name


_TORCH_BY_DTYPE: dict[Any, str] = {}


def _torch_name(dtype: Any) -> str:
    name = _TORCH_BY_DTYPE.get(dtype)
    if name is None:
        name = _TORCH_BY_DTYPE[dtype] = _TORCH_NAMES.get(str(dtype), str(dtype).replace("torch.", ""))
    return name


def describe(x: Any, name: str) -> Array:
    """Classifies an argument; raises TypeError naming it if it is not an array."""
    if _is_torch(x):
        if x.layout != sys.modules["torch"].strided:  # sparse and nested tensors have no strided storage to read
            raise TypeError(f"{name} must be a dense tensor, got layout {x.layout} (call .to_dense())")
        dev = x.device
        aligned = x.data_ptr() % x.element_size() == 0  # torch.frombuffer can start anywhere
        return Array(
            x,
            name,
            "torch",
            "cpu" if dev.type == "cpu" else dev.type,
            dev.index or 0,
            _torch_name(x.dtype),
            tuple(x.shape),
            tuple(x.stride()),
            aligned,
            aligned and x.is_contiguous(),
            True,
        )
    if isinstance(x, np.ndarray):
        item = x.itemsize or 1
        flags = x.flags
        if flags.c_contiguous and flags.aligned and x.dtype.alignment == item:
            # The common case, without reading the data pointer through ctypes (a few microseconds a call,
            # paid on every kernel call of a checkpoint's many small layers).
            strides, indexable, contiguous = tuple(st // item for st in x.strides), True, True
        else:
            strides, indexable, contiguous = _byte_layout(x.shape, x.strides, item, x.ctypes.data)
        return Array(
            x,
            name,
            "numpy",
            "cpu",
            0,
            _numpy_name(x.dtype),
            x.shape,
            strides,
            indexable,
            contiguous,
            bool(flags.writeable),
        )
    if _is_cupy(x):
        item = x.itemsize or 1
        strides, indexable, contiguous = _byte_layout(x.shape, x.strides, item, x.data.ptr)
        return Array(
            x,
            name,
            "cupy",
            "cuda",
            x.device.id,
            "bool" if x.dtype == np.bool_ else str(x.dtype),
            x.shape,
            strides,
            indexable,
            contiguous,
            True,
        )
    raise TypeError(f"{name} must be a NumPy array, torch.Tensor or CuPy array, got {type(x).__name__}")


def _rows_ready(a: Array) -> bool:
    """Nodes adjacent in memory, rows whole elements apart in increasing order, data aligned: usable
    without a copy. Anything else (negative or zero strides, strides that are not whole elements) is
    copied once, here, and never reaches native code."""
    if not a.indexable:
        return False
    if len(a.shape) != 2:
        return True
    s, n = a.shape
    return (n <= 1 or a.strides[1] == 1) and (s <= 1 or a.strides[0] >= max(n, 1))


def bits(a: Array) -> Any:
    """The activations as signed integers of their width, in the caller's library."""
    x = a.obj
    size = {"bool": 1, "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}[a.dtype]
    if a.lib == "torch":
        import torch

        x = x.detach()
        if not _rows_ready(a):
            x = x.clone(memory_format=torch.contiguous_format)
        return x.view(getattr(torch, _SIGNED_OF_SIZE[size]))
    if not _rows_ready(a):
        x = x.copy(order="C")  # a fresh, aligned C-order array (ascontiguousarray keeps misaligned data)
    return x.view(_SIGNED_OF_SIZE[size])


def dense(a: Array, align: int) -> Any:
    """The argument as a C-contiguous array of its own library and device whose data is aligned to
    ``align`` bytes, copied only when it is not one already."""
    x = a.obj
    if a.lib == "numpy":
        return dense_host(x, align=align)
    if a.lib == "torch":
        import torch

        x = x.detach()
        ok = x.is_contiguous() and x.data_ptr() % align == 0
        return x if ok else x.clone(memory_format=torch.contiguous_format)
    return x if x.flags.c_contiguous and x.data.ptr % align == 0 else x.copy(order="C")


def dense_host(x: np.ndarray, dtype: Any = None, align: int = 0) -> np.ndarray:
    """x as a C-contiguous host array of ``dtype`` whose data is aligned to ``align`` bytes (default: the
    item size), copied only when it is not one already."""
    y = np.ascontiguousarray(x, dtype=dtype)
    if y.ctypes.data % (align or y.itemsize or 1):
        y = y.copy()
    return y


def to_numpy(x: Any) -> np.ndarray:
    """Host view of a CPU array (no copy); GPU arrays are copied to the host."""
    if isinstance(x, np.ndarray):
        return x
    if _is_torch(x):
        x = x.detach()
        return x.numpy() if x.device.type == "cpu" else x.cpu().numpy()
    return x.get()


def to_torch(x: Any) -> Any:
    import torch

    return x if isinstance(x, torch.Tensor) else torch.from_dlpack(x)


def to_cupy(x: Any) -> Any:
    import cupy

    return x if isinstance(x, cupy.ndarray) else cupy.from_dlpack(x)


def to_native(x: Any, native: str) -> Any:
    return {"numpy": to_numpy, "torch": to_torch, "cupy": to_cupy}[native](x)


def like(result: Any, ref: Array) -> Any:
    """The result as the caller's kind of array on the caller's device."""
    on_host = isinstance(result, np.ndarray)
    if ref.lib == "numpy":
        return to_numpy(result)
    if ref.lib == "torch":
        import torch

        if on_host:
            t = torch.from_numpy(np.ascontiguousarray(result))
            return t if ref.device == "cpu" else t.to(f"cuda:{ref.device_index}")
        return to_torch(result)
    import cupy

    if on_host:
        with cupy.cuda.Device(ref.device_index):
            return cupy.asarray(result)
    return to_cupy(result)


def add_into(out: Array, counts: Any) -> None:
    """out += counts in out's own library, device and dtype (counts is the same kind of array)."""
    table = out.obj
    if out.lib == "torch":
        table.add_(counts.to(table.dtype))
    else:
        table += counts.astype(table.dtype, copy=False)  # in place: `out.obj +=` would assign to the frozen field


def current_stream(ref: Array) -> int:
    """The caller's current CUDA stream handle: torch's for torch input, CuPy's for CuPy input."""
    if ref.lib == "torch":
        import torch

        return torch.cuda.current_stream(ref.device_index).cuda_stream
    import cupy

    with cupy.cuda.Device(ref.device_index):
        return cupy.cuda.get_current_stream().ptr
