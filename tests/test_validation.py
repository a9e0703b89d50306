"""Bad input at the boundary: every row builds one bad call and names the exception and a
regex its message must match (the argument and the offending value). The table runs on
every backend (validation does not depend on which one is asked for) and, for the CPU
backends, once more with the kernel replaced by a tripwire, to show the check ran before
any native code. Then non-finite activations: NonFiniteError by default on every
backend, and with check_finite=False the counts of z > 0 (+inf active, NaN and -inf
not). GPU backends check labels in their own pass and, with check_labels=False, leave
out-of-range samples out of the counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nnphases.kernels as K
from kernel_tables import backend_params, device_of, host, make_acts, make_labels, to_backend, to_backend_pair
from nnphases.kernels import NonFiniteError

HAS_CUDA = torch.cuda.is_available()

# Backends to cross the table with: the automatic choice, then every backend (GPU ones
# are skipped with their reason where unavailable).
BACKENDS = [pytest.param(None, id="auto")] + backend_params("class_counts")
CPU_BACKENDS = [p for p in BACKENDS if p.values[0] is None or device_of(p.values[0]) == "cpu"]


# ----------------------------------------------------------------- inputs per backend
def on(t: torch.Tensor, bk: str | None) -> object:
    """A CPU tensor as the asked-for backend's callers hold it (CPU torch for auto)."""
    return t if bk is None else to_backend(t, bk)


def acts(s: int = 12, n: int = 3, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (torch.arange(s * n, dtype=torch.float64).reshape(s, n) % 5 - 2).to(dtype)


def labels(values: list[int] | None = None, s: int = 12, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    return torch.tensor(values if values is not None else [i % 10 for i in range(s)], dtype=dtype)


def packed(s: int = 70, n: int = 3) -> torch.Tensor:
    """pack_masks's layout, built without the kernels (the tripwire below replaces them)."""
    bits = np.zeros((n, -(-s // 64) * 64), dtype=bool)
    bits[:, :s] = (acts(s, n) > 0).numpy().T
    return torch.from_numpy(np.packbits(bits, axis=1, bitorder="little"))


def zeros(shape: tuple[int, ...] = (10, 3), dtype: torch.dtype = torch.int64) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype)


def misaligned(shape: tuple[int, int] = (10, 3)) -> np.ndarray:
    """A C-contiguous, writable int64 table whose data starts one byte past an 8-byte boundary."""
    buf = np.zeros(shape[0] * shape[1] * 8 + 16, np.uint8)
    skip = (1 - buf.ctypes.data) % 8  # the byte just past an 8-byte boundary
    x = buf[skip:skip + shape[0] * shape[1] * 8].view(np.int64).reshape(shape)
    assert x.ctypes.data % 8 == 1 and x.flags.c_contiguous and x.flags.writeable
    return x


def readonly(shape: tuple[int, int] = (10, 3)) -> np.ndarray:
    x = np.zeros(shape, np.int64)
    x.flags.writeable = False
    return x


def bad_at(i: int, value: int, s: int = 12, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    lab = labels(s=s, dtype=dtype)
    lab[i] = value
    return lab


CC, PM, PCC = K.class_counts, K.pack_masks, K.packed_class_counts

# (id, call(bk), exception, message regex). Every call passes backend=bk.
BAD = [
    # labels out of range: the first bad index and its value, and the range
    ("cc-label-negative", lambda bk: CC(on(acts(), bk), on(bad_at(5, -1), bk), 10, backend=bk),
     ValueError, r"labels\[5\] = -1 is outside \[0, num_classes=10\)"),
    ("cc-label-eq-C", lambda bk: CC(on(acts(), bk), on(bad_at(7, 10), bk), 10, backend=bk),
     ValueError, r"labels\[7\] = 10 is outside \[0, num_classes=10\)"),
    ("cc-label-int32-max", lambda bk: CC(on(acts(), bk), on(bad_at(2, 2**31 - 1, dtype=torch.int32), bk), 10,
                                         backend=bk),
     ValueError, r"labels\[2\] = 2147483647 is outside \[0, num_classes=10\)"),
    # an int64 label that an int32 cast would wrap into range (2**33 + 1 -> 1)
    ("cc-label-int64-wraps", lambda bk: CC(on(acts(), bk), on(bad_at(3, 2**33 + 1), bk), 10, backend=bk),
     ValueError, r"labels\[3\] = 8589934593 is outside \[0, num_classes=10\)"),
    ("cc-label-int64-negative-wraps", lambda bk: CC(on(acts(), bk), on(bad_at(4, -(2**32) + 2), bk), 10, backend=bk),
     ValueError, r"labels\[4\] = -4294967294 is outside \[0, num_classes=10\)"),
    ("cc-label-first-of-two", lambda bk: CC(on(acts(), bk), on(labels([0, 1, 2, 99, 4, -7, 0, 1, 2, 3, 4, 5]), bk), 10,
                                            backend=bk),
     ValueError, r"labels\[3\] = 99 is outside \[0, num_classes=10\)"),
    ("pcc-label-negative", lambda bk: PCC(on(packed(), bk), on(bad_at(69, -2, s=70), bk), 10, backend=bk),
     ValueError, r"labels\[69\] = -2 is outside \[0, num_classes=10\)"),
    ("pcc-label-eq-C", lambda bk: PCC(on(packed(), bk), on(bad_at(0, 3, s=70), bk), 3, backend=bk),
     ValueError, r"labels\[0\] = 3 is outside \[0, num_classes=3\)"),
    # out: the accumulator's dtype, shape, layout, writability, library and device
    ("cc-out-float32", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, out=on(zeros(dtype=torch.float32), bk),
                                     backend=bk),
     TypeError, r"out has dtype float32; supported: int32, int64"),
    ("cc-out-float64", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, out=on(zeros(dtype=torch.float64), bk),
                                     backend=bk),
     TypeError, r"out has dtype float64; supported: int32, int64"),
    ("cc-out-int16", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, out=on(zeros(dtype=torch.int16), bk),
                                   backend=bk),
     TypeError, r"out has dtype int16; supported: int32, int64"),
    ("cc-out-uint8", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, out=on(zeros(dtype=torch.uint8), bk),
                                   backend=bk),
     TypeError, r"out has dtype uint8; supported: int32, int64"),
    ("cc-out-big-endian", lambda bk: CC(acts().numpy(), labels().numpy(), 10, out=np.zeros((10, 3), ">i8"),
                                        backend=bk),
     TypeError, r"out has dtype >i8; supported: int32, int64"),
    ("cc-out-nodes", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, out=on(zeros((10, 4)), bk), backend=bk),
     ValueError, r"out has shape \(10, 4\) but the counts are \[num_classes, nodes\] = \(10, 3\)"),
    ("cc-out-classes", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, out=on(zeros((9, 3)), bk), backend=bk),
     ValueError, r"out has shape \(9, 3\) but the counts are \[num_classes, nodes\] = \(10, 3\)"),
    ("cc-out-transposed-shape", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, out=on(zeros((3, 10)), bk),
                                              backend=bk),
     ValueError, r"out has shape \(3, 10\) but the counts are \[num_classes, nodes\] = \(10, 3\)"),
    ("cc-out-1d", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, out=on(zeros((30,)), bk), backend=bk),
     ValueError, r"out has shape \(30,\) but the counts are \[num_classes, nodes\] = \(10, 3\)"),
    ("cc-out-column-step", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, out=on(zeros((10, 6)), bk)[:, ::2],
                                         backend=bk),
     ValueError, r"out must be C-contiguous and aligned, got byte strides \(48, 16\) for shape \(10, 3\)"),
    ("cc-out-transposed", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, out=on(zeros((3, 10)), bk).T,
                                        backend=bk),
     ValueError, r"out must be C-contiguous and aligned, got byte strides \(8, 80\) for shape \(10, 3\)"),
    ("cc-out-fortran", lambda bk: CC(acts().numpy(), labels().numpy(), 10, out=np.zeros((10, 3), np.int32, order="F"),
                                     backend=bk),
     ValueError, r"out must be C-contiguous and aligned, got byte strides \(4, 40\)"),
    ("cc-out-broadcast", lambda bk: CC(acts().numpy(), labels().numpy(), 10,
                                       out=np.broadcast_to(np.zeros(3, np.int64), (10, 3)), backend=bk),
     ValueError, r"out must be C-contiguous and aligned, got byte strides \(0, 8\)"),
    ("cc-out-misaligned", lambda bk: CC(acts().numpy(), labels().numpy(), 10, out=misaligned(), backend=bk),
     ValueError, r"out must be C-contiguous and aligned, got byte strides \(24, 8\) for shape \(10, 3\)"),
    ("cc-out-read-only", lambda bk: CC(acts().numpy(), labels().numpy(), 10, out=readonly(), backend=bk),
     ValueError, r"out is read-only"),
    ("cc-torch-acts-numpy-out", lambda bk: CC(acts(), labels(), 10, out=np.zeros((10, 3), np.int64), backend=bk),
     ValueError, r"out is a numpy array on cpu but acts is a torch array on cpu"),
    ("cc-numpy-acts-torch-out", lambda bk: CC(acts().numpy(), labels().numpy(), 10, out=zeros(), backend=bk),
     ValueError, r"out is a torch array on cpu but acts is a numpy array on cpu"),
    ("cc-out-list", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, out=[[0] * 3] * 10, backend=bk),
     TypeError, r"out must be a NumPy array, torch.Tensor or CuPy array, got list"),
    ("cc-acts-on-cpu-out-on-cuda", lambda bk: CC(acts(), labels(), 10, out=zeros().cuda(), backend=bk),
     ValueError, r"out is a torch array on cuda:0 but acts is a torch array on cpu"),
    ("cc-acts-on-cuda-out-on-cpu", lambda bk: CC(acts().cuda(), labels().cuda(), 10, out=zeros(), backend=bk),
     ValueError, r"out is a torch array on cpu but acts is a torch array on cuda:0"),
    # shapes
    ("cc-labels-length", lambda bk: CC(on(acts(12), bk), on(labels(s=11), bk), 10, backend=bk),
     ValueError, r"labels has 11 entries but acts has 12 samples"),
    ("cc-acts-1d", lambda bk: CC(on(acts()[:, 0], bk), on(labels(), bk), 10, backend=bk),
     ValueError, r"acts must be 2-D.*got 1-D with shape \(12,\)"),
    ("cc-acts-3d", lambda bk: CC(on(acts().reshape(12, 3, 1), bk), on(labels(), bk), 10, backend=bk),
     ValueError, r"acts must be 2-D.*got 3-D with shape \(12, 3, 1\)"),
    ("pm-acts-1d", lambda bk: PM(on(acts()[:, 0], bk), backend=bk),
     ValueError, r"acts must be 2-D.*got 1-D with shape \(12,\)"),
    ("pm-acts-3d", lambda bk: PM(on(acts().reshape(2, 6, 3), bk), backend=bk),
     ValueError, r"acts must be 2-D.*got 3-D with shape \(2, 6, 3\)"),
    ("cc-labels-2d", lambda bk: CC(on(acts(), bk), on(labels().reshape(12, 1), bk), 10, backend=bk),
     ValueError, r"labels must be 1-D.*\(12, 1\)"),
    ("pcc-labels-2d", lambda bk: PCC(on(packed(), bk), on(labels(s=70).reshape(70, 1), bk), 10, backend=bk),
     ValueError, r"labels must be 1-D.*\(70, 1\)"),
    # dtypes
    ("cc-acts-int32", lambda bk: CC(on(acts(dtype=torch.int32), bk), on(labels(), bk), 10, backend=bk),
     TypeError, r"acts has dtype int32"),
    ("cc-acts-complex64", lambda bk: CC(on(acts(dtype=torch.complex64), bk), on(labels(), bk), 10, backend=bk),
     TypeError, r"acts has dtype complex64"),
    ("pm-acts-int32", lambda bk: PM(on(acts(dtype=torch.int32), bk), backend=bk),
     TypeError, r"acts has dtype int32"),
    ("pm-acts-complex128", lambda bk: PM(on(acts(dtype=torch.complex128), bk), backend=bk),
     TypeError, r"acts has dtype complex128"),
    ("cc-labels-float32", lambda bk: CC(on(acts(), bk), on(labels().float(), bk), 10, backend=bk),
     TypeError, r"labels has dtype float32"),
    ("cc-labels-uint8", lambda bk: CC(on(acts(), bk), on(labels().to(torch.uint8), bk), 10, backend=bk),
     TypeError, r"labels has dtype uint8"),
    ("pcc-labels-float32", lambda bk: PCC(on(packed(), bk), on(labels(s=70).float(), bk), 10, backend=bk),
     TypeError, r"labels has dtype float32"),
    ("pcc-packed-float32", lambda bk: PCC(on(packed().float(), bk), on(labels(s=70), bk), 10, backend=bk),
     TypeError, r"packed has dtype float32"),
    ("pcc-packed-int8", lambda bk: PCC(on(packed().view(torch.int8), bk), on(labels(s=70), bk), 10, backend=bk),
     TypeError, r"packed has dtype int8"),
    ("pcc-packed-width-narrow", lambda bk: PCC(on(packed(70)[:, :8].contiguous(), bk), on(labels(s=70), bk), 10,
                                               backend=bk),
     ValueError, r"packed has 8 bytes per node but 70 labels need .* = 16"),
    ("pcc-packed-width-wide", lambda bk: PCC(on(packed(70), bk), on(labels(s=64), bk), 10, backend=bk),
     ValueError, r"packed has 16 bytes per node but 64 labels need .* = 8"),
    ("pcc-packed-1d", lambda bk: PCC(on(packed()[0], bk), on(labels(s=70), bk), 10, backend=bk),
     ValueError, r"packed must be 2-D.*\(16,\)"),
    # num_classes
    ("cc-C-0", lambda bk: CC(on(acts(), bk), on(labels(), bk), 0, backend=bk),
     ValueError, r"num_classes must be .*got 0\b"),
    ("cc-C-negative", lambda bk: CC(on(acts(), bk), on(labels(), bk), -3, backend=bk),
     ValueError, r"num_classes must be .*got -3\b"),
    ("cc-C-float", lambda bk: CC(on(acts(), bk), on(labels(), bk), 2.5, backend=bk),
     TypeError, r"num_classes must be an int, got 2\.5"),
    ("cc-C-bool", lambda bk: CC(on(acts(), bk), on(labels(), bk), True, backend=bk),
     TypeError, r"num_classes must be an int, got True"),
    ("cc-C-str", lambda bk: CC(on(acts(), bk), on(labels(), bk), "10", backend=bk),
     TypeError, r"num_classes must be an int, got '10'"),
    ("cc-C-too-big", lambda bk: CC(on(acts(), bk), on(labels(), bk), 2**31, backend=bk),
     ValueError, r"num_classes must be .*got 2147483648"),
    ("pcc-C-0", lambda bk: PCC(on(packed(), bk), on(labels(s=70), bk), 0, backend=bk),
     ValueError, r"num_classes must be .*got 0\b"),
    ("pcc-C-float", lambda bk: PCC(on(packed(), bk), on(labels(s=70), bk), 2.5, backend=bk),
     TypeError, r"num_classes must be an int, got 2\.5"),
    # threads and strategy
    ("cc-threads-0", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, backend=bk, threads=0),
     ValueError, r"threads must be a positive int or None, got 0\b"),
    ("cc-threads-negative", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, backend=bk, threads=-1),
     ValueError, r"threads must be a positive int or None, got -1\b"),
    ("cc-threads-float", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, backend=bk, threads=1.5),
     TypeError, r"threads must be a positive int or None, got 1\.5"),
    ("pm-threads-0", lambda bk: PM(on(acts(), bk), backend=bk, threads=0),
     ValueError, r"threads must be a positive int or None, got 0\b"),
    ("pcc-threads-negative", lambda bk: PCC(on(packed(), bk), on(labels(s=70), bk), 10, backend=bk, threads=-1),
     ValueError, r"threads must be a positive int or None, got -1\b"),
    ("cc-strategy-fast", lambda bk: CC(on(acts(), bk), on(labels(), bk), 10, backend=bk, strategy="fast"),
     ValueError, r"strategy must be .*got 'fast'"),
    # libraries and non-arrays
    ("cc-numpy-acts-torch-labels", lambda bk: CC(acts().numpy(), labels(), 10, backend=bk),
     ValueError, r"labels is a torch array on cpu but acts is a numpy array"),
    ("cc-torch-acts-numpy-labels", lambda bk: CC(acts(), labels().numpy(), 10, backend=bk),
     ValueError, r"labels is a numpy array on cpu but acts is a torch array"),
    ("pcc-numpy-packed-torch-labels", lambda bk: PCC(packed().numpy(), labels(s=70), 10, backend=bk),
     ValueError, r"labels is a torch array on cpu but packed is a numpy array"),
    ("cc-acts-list", lambda bk: CC(acts().tolist(), on(labels(), bk), 10, backend=bk),
     TypeError, r"acts must be a NumPy array, torch.Tensor or CuPy array, got list"),
    ("pm-acts-list", lambda bk: PM(acts().tolist(), backend=bk),
     TypeError, r"acts must be a NumPy array, torch.Tensor or CuPy array, got list"),
    ("cc-labels-list", lambda bk: CC(on(acts(), bk), labels().tolist(), 10, backend=bk),
     TypeError, r"labels must be a NumPy array, torch.Tensor or CuPy array, got list"),
    ("pcc-packed-bytes", lambda bk: PCC(bytes(48), on(labels(s=70), bk), 10, backend=bk),
     TypeError, r"packed must be a NumPy array, torch.Tensor or CuPy array, got bytes"),
    ("cc-acts-on-cuda-labels-on-cpu", lambda bk: CC(acts().cuda(), labels(), 10, backend=bk),
     ValueError, r"labels is a torch array on cpu but acts is a torch array on cuda:0"),
    ("cc-acts-on-cpu-labels-on-cuda", lambda bk: CC(acts(), labels().cuda(), 10, backend=bk),
     ValueError, r"labels is a torch array on cuda:0 but acts is a torch array on cpu"),
]
NEEDS_CUDA = {"cc-acts-on-cuda-labels-on-cpu", "cc-acts-on-cpu-labels-on-cuda", "cc-acts-on-cpu-out-on-cuda",
              "cc-acts-on-cuda-out-on-cpu"}


def _rows() -> list:
    rows = []
    for rid, call, exc, rx in BAD:
        marks = [pytest.mark.skipif(not HAS_CUDA, reason="torch sees no CUDA device")] if rid in NEEDS_CUDA else []
        rows.append(pytest.param(call, exc, rx, id=rid, marks=marks))
    return rows


@pytest.mark.parametrize("bk", BACKENDS)
@pytest.mark.parametrize("call, exc, rx", _rows())
def test_bad_input(call, exc, rx, bk):
    with pytest.raises(exc, match=rx):
        call(bk)


@pytest.fixture
def tripwire(monkeypatch):
    """Replaces every kernel the dispatcher hands out with one that fails the test if it runs."""
    real = K.select
    ran = []

    def guarded(kernel, device, backend):
        b, fn = real(kernel, device, backend)

        def kernel_ran(*args, **kwargs):
            ran.append((b.name, kernel))
            raise AssertionError(f"the {b.name} kernel {kernel} ran on invalid input")

        kernel_ran.checks_labels = getattr(fn, "checks_labels", False)
        return b, kernel_ran

    monkeypatch.setattr(K, "select", guarded)
    return ran


@pytest.mark.parametrize("bk", CPU_BACKENDS)
@pytest.mark.parametrize("call, exc, rx", _rows())
def test_bad_input_raises_before_the_kernel(call, exc, rx, bk, tripwire):
    with pytest.raises(exc, match=rx):
        call(bk)
    assert tripwire == []


@pytest.mark.parametrize("bk", CPU_BACKENDS)
def test_tripwire_fires_on_valid_input(bk, tripwire):
    """The control for the test above: valid input does reach the (replaced) kernel."""
    with pytest.raises(AssertionError, match="ran on invalid input"):
        CC(acts(), labels(), 10, backend=bk)
    assert tripwire and tripwire[0][1] == "class_counts"


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend must be one of cuda, cupy, cpp, numba, reference or None, "
                                         r"got 'gpu'"):
        CC(acts(), labels(), 10, backend="gpu")
    with pytest.raises(ValueError, match=r"got 'gpu'"):
        PM(acts(), backend="gpu")
    with pytest.raises(ValueError, match=r"got 'gpu'"):
        PCC(packed(), labels(s=70), 10, backend="gpu")


@pytest.mark.parametrize("bk", CPU_BACKENDS)
def test_cpu_always_checks_labels(bk):
    """check_labels=False is a GPU option; on the CPU a bad label still raises."""
    with pytest.raises(ValueError, match=r"labels\[5\] = -1 is outside \[0, num_classes=10\)"):
        CC(acts(), bad_at(5, -1), 10, backend=bk, check_labels=False, check_finite=False)


def test_node_metrics_class_sizes_length():
    counts = np.array([[1, 2], [0, 3], [2, 2]], dtype=np.int64)
    with pytest.raises(ValueError, match=r"class_sizes has 2 entries but counts has 3 classes"):
        K.node_metrics(counts, np.array([5, 5], dtype=np.int64))
    with pytest.raises(ValueError, match=r"class_sizes"):
        K.layer_metrics(counts, np.array([5, 5, 5, 5], dtype=np.int64))


# ------------------------------------------------------------------------ non-finite
FLOATS = ["float16", "bfloat16", "float32", "float64"]
NONFINITE = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf}


def with_value(dtype: str, value: float, where: tuple[int, int], s: int = 70, n: int = 9) -> torch.Tensor:
    rng = np.random.default_rng(17)
    a = make_acts(rng, s, n, dtype)
    a[where] = value
    return a


@pytest.mark.parametrize("bk", backend_params("class_counts"))
@pytest.mark.parametrize("where", [(37, 5), (0, 0), (69, 8)], ids=["middle", "first", "last"])
@pytest.mark.parametrize("value", list(NONFINITE), ids=list(NONFINITE))
@pytest.mark.parametrize("dtype", FLOATS)
def test_class_counts_nonfinite_raises(bk, dtype, value, where):
    a = with_value(dtype, NONFINITE[value], where)
    lab = make_labels(np.random.default_rng(1), 70, 4)
    x, y = to_backend_pair(a, lab, bk)
    with pytest.raises(NonFiniteError, match=r"acts contains NaN or infinite values \(class_counts\)"):
        K.class_counts(x, y, 4, backend=bk)


@pytest.mark.parametrize("bk", backend_params("pack_masks"))
@pytest.mark.parametrize("where", [(37, 5), (0, 0), (69, 8)], ids=["middle", "first", "last"])
@pytest.mark.parametrize("value", list(NONFINITE), ids=list(NONFINITE))
@pytest.mark.parametrize("dtype", FLOATS)
def test_pack_masks_nonfinite_raises(bk, dtype, value, where):
    a = with_value(dtype, NONFINITE[value], where)
    with pytest.raises(NonFiniteError, match=r"acts contains NaN or infinite values \(pack_masks\)"):
        K.pack_masks(to_backend(a, bk), backend=bk)


def test_nonfinite_error_is_a_value_error():
    assert issubclass(NonFiniteError, ValueError)


def mixed_nonfinite(dtype: str, s: int = 130, n: int = 11) -> torch.Tensor:
    """Random activations with NaN, +inf and -inf in about a sixth of the entries each."""
    rng = np.random.default_rng(23)
    a = make_acts(rng, s, n, dtype)
    pick = torch.from_numpy(rng.integers(0, 6, (s, n)))
    a[pick == 0] = math.nan
    a[pick == 1] = math.inf
    a[pick == 2] = -math.inf
    return a


def by_hand(a: torch.Tensor, lab: torch.Tensor, c: int) -> np.ndarray:
    """z > 0 in float64, per class: NaN and -inf inactive, +inf active."""
    act = (a.double() > 0).numpy()
    want = np.zeros((c, a.shape[1]), np.int64)
    for s, k in enumerate(lab.tolist()):
        want[k] += act[s]
    return want


@pytest.mark.parametrize("bk", backend_params("class_counts"))
@pytest.mark.parametrize("dtype", FLOATS)
def test_class_counts_nonfinite_unchecked(bk, dtype):
    a = mixed_nonfinite(dtype)
    lab = make_labels(np.random.default_rng(2), 130, 5)
    want = by_hand(a, lab, 5)
    assert want.sum() > 0 and np.isinf(a.double().numpy()).any()
    np.testing.assert_array_equal(host(K.class_counts(a, lab, 5, backend="reference", check_finite=False)), want)
    x, y = to_backend_pair(a, lab, bk)
    np.testing.assert_array_equal(host(K.class_counts(x, y, 5, backend=bk, check_finite=False)), want)


@pytest.mark.parametrize("bk", backend_params("pack_masks"))
@pytest.mark.parametrize("dtype", FLOATS)
def test_pack_masks_nonfinite_unchecked(bk, dtype):
    a = mixed_nonfinite(dtype)
    want = (a.double() > 0).numpy()
    got = host(K.pack_masks(to_backend(a, bk), backend=bk, check_finite=False))
    np.testing.assert_array_equal(got, host(K.pack_masks(a, backend="reference", check_finite=False)))
    np.testing.assert_array_equal(np.unpackbits(got, axis=1, bitorder="little")[:, :130], want.T)


# ------------------------------------------------------------------------ GPU labels
GPU_BACKENDS = [p for p in backend_params("class_counts") if device_of(p.values[0]) == "cuda"]


@pytest.mark.parametrize("bk", GPU_BACKENDS)
@pytest.mark.parametrize("check_finite", [True, False], ids=["finite-checked", "finite-unchecked"])
@pytest.mark.parametrize("index, value", [(0, -1), (345, 7), (999, 2**31 - 1), (500, -(2**31))],
                         ids=["first-negative", "eq-C", "int32-max", "int32-min"])
def test_gpu_label_out_of_range(bk, index, value, check_finite):
    rng = np.random.default_rng(4)
    a = make_acts(rng, 1000, 40, "float32")
    lab = make_labels(rng, 1000, 7, torch.int32)
    lab[index] = value
    x, y = to_backend_pair(a, lab, bk)
    with pytest.raises(ValueError, match=rf"labels\[{index}\] = {value} is outside \[0, num_classes=7\)"):
        K.class_counts(x, y, 7, backend=bk, check_finite=check_finite)


@pytest.mark.parametrize("bk", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", ["bool", "float16", "bfloat16", "float32", "float64"])
def test_gpu_unchecked_labels_are_left_out(bk, dtype):
    rng = np.random.default_rng(8)
    s, c = 3000, 9
    a = make_acts(rng, s, 70, dtype)
    lab = make_labels(rng, s, c, torch.int32)
    bad = torch.from_numpy(rng.random(s) < 0.1)
    lab[bad] = torch.from_numpy(rng.choice([-1, -(2**31), c, c + 1, 2**31 - 1], int(bad.sum()))).to(torch.int32)
    good = ~bad
    want = host(K.class_counts(a[good], lab[good], c, backend="reference", check_finite=False))
    x, y = to_backend_pair(a, lab, bk)
    got = K.class_counts(x, y, c, backend=bk, check_finite=False, check_labels=False)
    np.testing.assert_array_equal(host(got), want)


@pytest.mark.parametrize("bk", [p for p in backend_params("packed_class_counts") if device_of(p.values[0]) == "cuda"])
def test_gpu_packed_label_out_of_range(bk):
    rng = np.random.default_rng(9)
    a = make_acts(rng, 300, 20, "float32")
    lab = make_labels(rng, 300, 5)
    lab[123] = 5
    p = K.pack_masks(a, backend="reference")
    with pytest.raises(ValueError, match=r"labels\[123\] = 5 is outside \[0, num_classes=5\)"):
        K.packed_class_counts(to_backend(p, bk), to_backend(lab, bk), 5, backend=bk)
