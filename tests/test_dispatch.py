"""The choice among backends: the automatic order, refusals with their reasons, the
fallbacks when the extension or Numba cannot be imported (in a fresh interpreter),
the backend report and CLI, and results in the caller's kind of array."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import nnphases.kernels as K
from kernel_tables import backend_params, device_of, make_acts, make_labels
from nnphases.kernels import _dispatch
from nnphases.kernels._dispatch import AUTO_ORDER, BACKENDS, refusal

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ["class_counts", "pack_masks", "packed_class_counts"]
ALL_NAMES = ["cuda", "cupy", "cpp", "numba", "reference"]


def small_inputs(lib: str = "torch"):
    rng = np.random.default_rng(0)
    a = make_acts(rng, 100, 7, "float32")
    lab = make_labels(rng, 100, 4)
    if lib == "numpy":
        return a.numpy(), lab.numpy()
    return a, lab


def expected_counts(a: np.ndarray, lab: np.ndarray, c: int) -> np.ndarray:
    want = np.zeros((c, a.shape[1]), np.int64)
    np.add.at(want, lab, a > 0)
    return want


def call(kernel: str, a, lab, **kw):
    if kernel == "class_counts":
        return K.class_counts(a, lab, 4, **kw)
    if kernel == "pack_masks":
        return K.pack_masks(a, **kw)
    return K.packed_class_counts(K.pack_masks(a, backend="reference"), lab, 4, **kw)


# ------------------------------------------------------------------ automatic choice
@pytest.mark.parametrize("kernel", KERNELS)
def test_auto_on_cpu_selects_cpp(kernel):
    if refusal("cpp", kernel, "cpu"):
        pytest.skip(f"cpp: {refusal('cpp', kernel, 'cpu')}")
    b, fn = _dispatch.select(kernel, "cpu", None)
    assert b.name == "cpp"
    assert fn.__module__ == "nnphases.kernels.impl.cpp"


@pytest.mark.parametrize("kernel", KERNELS)
def test_auto_on_cpu_calls_cpp(kernel, monkeypatch):
    """Through the public API: the cpp kernel is the one that runs for backend=None."""
    if refusal("cpp", kernel, "cpu"):
        pytest.skip(f"cpp: {refusal('cpp', kernel, 'cpu')}")
    mod = _dispatch.load("cpp")
    real = getattr(mod, kernel)
    seen = []

    def spy(*args, **kwargs):
        seen.append(kernel)
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, kernel, spy)
    a, lab = small_inputs()
    call(kernel, a, lab)
    assert seen == [kernel]


def test_auto_order():
    assert AUTO_ORDER["cpu"] == ("cpp", "numba", "reference")
    assert AUTO_ORDER["cuda"] == ("cuda", "cupy", "reference")


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_unavailable_backend_names_itself_and_its_reason(name, kernel):
    device = device_of(name)
    why = refusal(name, kernel, device)
    if why is None:
        pytest.skip(f"{name} is available here")
    with pytest.raises(K.BackendError, match=rf"{name}: {re.escape(why)}"):
        _dispatch.select(kernel, device, name)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_available_backend_is_selected(name, kernel):
    device = device_of(name)
    why = refusal(name, kernel, device)
    if why is not None:
        pytest.skip(f"{name}: {why}")
    b, fn = _dispatch.select(kernel, device, name)
    assert b.name == name and callable(fn)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", ["cuda", "cupy"])
def test_gpu_backend_with_cpu_input(name, kernel):
    """Through the public API, whether or not a GPU is there."""
    a, lab = small_inputs()
    with pytest.raises(K.BackendError, match=rf"{name}: runs on cuda, the input is on cpu"):
        call(kernel, a, lab, backend=name)
    with pytest.raises(K.BackendError, match=rf"{name}: runs on cuda"):
        call(kernel, a.numpy(), lab.numpy(), backend=name)


# The popcount kernels on packed masks: each call on the masks of small_inputs (100 samples, 7 nodes).
POPCOUNT_CALLS = {
    "mask_overlap": lambda p, **kw: K.mask_overlap(p, p, 100, **kw),
    "sample_popcounts": lambda p, **kw: K.sample_popcounts(p, 100, **kw),
    "coactivation": lambda p, **kw: K.coactivation(p, 100, **kw),
    "sample_agreement": lambda p, **kw: K.sample_agreement(p, 100, np.array([0, 99]), **kw),
}


@pytest.mark.parametrize("kernel", list(POPCOUNT_CALLS))
@pytest.mark.parametrize("name", ["cuda", "cupy"])
def test_gpu_backend_with_cpu_masks(name, kernel):
    packed = K.pack_masks(small_inputs()[0], backend="reference")
    with pytest.raises(K.BackendError, match=rf"^no backend can run {kernel} on cpu: {name}: runs on cuda, the input"):
        POPCOUNT_CALLS[kernel](packed, backend=name)


@pytest.mark.parametrize("kernel", KERNELS + list(POPCOUNT_CALLS))
@pytest.mark.parametrize("name", ["cuda", "cupy"])
def test_gpu_backends_define_every_gpu_kernel(name, kernel):
    """Read from the module's source, so that it holds where the backend cannot be imported: GPU input never falls
    to the reference for want of a kernel, only for want of a GPU backend (whose refusal says why)."""
    tree = ast.parse((ROOT / "nnphases" / "kernels" / "impl" / f"{name}.py").read_text())
    assert kernel in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    why = refusal(name, kernel, "cuda")
    assert why is None or "does not implement" not in why


@pytest.mark.parametrize("kernel", list(POPCOUNT_CALLS))
def test_auto_on_gpu_takes_the_first_gpu_backend_that_runs(kernel):
    """cuda, then cupy, then the reference (here, without either, the reference)."""
    want = next(n for n in AUTO_ORDER["cuda"] if refusal(n, kernel, "cuda") is None)
    assert _dispatch.select(kernel, "cuda", None)[0].name == want


def test_auto_refusal_lists_every_candidate(monkeypatch):
    """When nothing in the order can run, one error lists each candidate and its reason."""
    monkeypatch.setitem(AUTO_ORDER, "cpu", ("cuda", "cupy"))
    with pytest.raises(K.BackendError, match=r"cuda: runs on cuda.*; cupy: runs on cuda"):
        K.class_counts(*small_inputs(), 4)


def test_backend_error_is_a_runtime_error():
    assert issubclass(K.BackendError, RuntimeError)


# ----------------------------------------------------------------- report and the CLI
def test_backends_lists_all_five():
    rows = K.backends()
    assert [r[0] for r in rows] == ALL_NAMES
    for name, device, why in rows:
        assert device == BACKENDS[name].device
        assert why is None or (isinstance(why, str) and why)
    assert dict((r[0], r[2]) for r in rows)["reference"] is None


def test_cli_backends():
    r = subprocess.run([sys.executable, "-m", "nnphases.cli", "backends"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for name, _, why in K.backends():
        line = next((ln for ln in r.stdout.splitlines() if ln.split()[:1] == [name]), None)
        assert line is not None, f"{name} missing from:\n{r.stdout}"
        assert ("available" in line and "unavailable" not in line) if why is None else "unavailable" in line
    assert "automatic order on cpu: cpp > numba > reference" in r.stdout


# ---------------------------------------------------------- blocked imports, fresh interpreter
def run_python(code: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=240,
                       cwd=ROOT)
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


CHECK_COUNTS = """
        import numpy as np
        rng = np.random.default_rng(0)
        a = rng.standard_normal((300, 9)).astype(np.float32)
        lab = rng.integers(0, 5, 300).astype(np.int32)
        want = np.zeros((5, 9), np.int64)
        np.add.at(want, lab, a > 0)
"""  # indented as the snippets below, which textwrap.dedent strips together


def test_without_extension():
    r = run_python("""
        import sys
        sys.modules["nnphases._C"] = None
        import nnphases
        import nnphases.kernels as K
    """ + CHECK_COUNTS + """
        got = nnphases.class_counts(a, lab, 5)
        assert isinstance(got, np.ndarray) and got.dtype == np.int64
        assert (got == want).all(), (got, want)
        p = nnphases.pack_masks(a)
        assert (nnphases.packed_class_counts(p, lab, 5) == want).all()
        try:
            nnphases.class_counts(a, lab, 5, backend="cpp")
        except K.BackendError as e:
            print("CPP-REFUSED:", e)
        else:
            raise SystemExit("backend='cpp' ran without the extension")
        print("REPORT:", dict((n, w) for n, _, w in K.backends()))
    """)
    assert re.search(r"CPP-REFUSED: .*cpp: .*nnphases\._C", r.stdout), r.stdout
    report = r.stdout.split("REPORT:")[1]
    assert "'cpp': None" not in report and "'reference': None" in report


def test_without_numba():
    r = run_python("""
        import sys
        sys.modules["numba"] = None
        import nnphases
        import nnphases.kernels as K
    """ + CHECK_COUNTS + """
        assert (nnphases.class_counts(a, lab, 5, backend="cpp") == want).all()
        assert (nnphases.class_counts(a, lab, 5) == want).all()
        try:
            nnphases.class_counts(a, lab, 5, backend="numba")
        except K.BackendError as e:
            print("NUMBA-REFUSED:", e)
        else:
            raise SystemExit("backend='numba' ran without numba")
    """)
    assert re.search(r"NUMBA-REFUSED: .*numba: .*numba", r.stdout), r.stdout


def test_without_extension_or_numba_falls_back_to_reference():
    r = run_python("""
        import sys
        sys.modules["nnphases._C"] = None
        sys.modules["numba"] = None
        import nnphases
        from nnphases.kernels import _dispatch
    """ + CHECK_COUNTS + """
        assert (nnphases.class_counts(a, lab, 5) == want).all()
        print("CHOSEN:", _dispatch.select("class_counts", "cpu", None)[0].name)
    """)
    assert "CHOSEN: reference" in r.stdout


# ------------------------------------------------------------ results in the caller's kind
@pytest.mark.parametrize("backend", [pytest.param(None, id="auto")]
                         + [p for p in backend_params("class_counts") if p.values[0] in ("cpp", "numba", "reference")])
@pytest.mark.parametrize("lib", ["numpy", "torch"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_result_kind_follows_input(kernel, lib, backend):
    a, lab = small_inputs(lib)
    if kernel == "packed_class_counts":
        packed = K.pack_masks(a, backend="reference")
        assert type(packed) is type(a)
        got = K.packed_class_counts(packed, lab, 4, backend=backend)
    else:
        got = call(kernel, a, lab, backend=backend)
    kind = np.ndarray if lib == "numpy" else torch.Tensor
    assert isinstance(got, kind)
    if lib == "torch":
        assert got.device.type == "cpu"
    a_np = np.asarray(a)
    lab_np = np.asarray(lab)
    got_np = got.numpy() if lib == "torch" else got
    if kernel == "pack_masks":
        assert got_np.dtype == np.uint8 and got_np.shape == (7, 16)
        np.testing.assert_array_equal(np.unpackbits(got_np, axis=1, bitorder="little")[:, :100], (a_np > 0).T)
    else:
        assert got_np.dtype == np.int64 and got_np.shape == (4, 7)
        np.testing.assert_array_equal(got_np, expected_counts(a_np, lab_np, 4))


@pytest.mark.parametrize("backend", [p for p in backend_params("class_counts") if device_of(p.values[0]) == "cuda"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_result_kind_follows_gpu_input(kernel, backend):
    a, lab = small_inputs()
    a, lab = a.cuda(), lab.cuda()
    if backend == "cupy":
        import cupy

        a, lab = cupy.from_dlpack(a), cupy.from_dlpack(lab)
    got = call(kernel, a, lab, backend=backend)
    assert type(got) is type(a)
    auto = call(kernel, a, lab)
    assert type(auto) is type(a)
