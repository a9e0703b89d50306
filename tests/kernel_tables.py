"""Shared test tables: backends (unavailable ones show as skipped with the reason),
dtypes, and random inputs with the values that trip sign tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from nnphases.kernels._dispatch import BACKENDS, refusal

DTYPES = {
    "bool": torch.bool, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float32": torch.float32, "float64": torch.float64,
}


def backend_params(kernel: str) -> list:
    params = []
    for name, b in BACKENDS.items():
        device = "cuda" if b.device == "cuda" else "cpu"
        why = refusal(name, kernel, device)
        marks = [pytest.mark.skip(reason=f"{name}: {why}")] if why else []
        if device == "cuda":
            marks.append(pytest.mark.cuda)
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def gpu_params(kernel: str) -> list:
    """The GPU rows of :func:`backend_params`: marked ``cuda``, skipped with the reason where unavailable."""
    return [p for p in backend_params(kernel) if device_of(p.values[0]) == "cuda"]


def device_of(backend: str) -> str:
    return "cuda" if BACKENDS[backend].device == "cuda" else "cpu"


def make_acts(rng: np.random.Generator, samples: int, nodes: int, dtype: str, *, special: bool = True,
              density: float = 0.5) -> torch.Tensor:
    """Random activations with about `density` active; with `special`, sprinkles -0.0, +0.0 and
    positive and negative denormals (which must count as z > 0 would)."""
    if dtype == "bool":
        return torch.from_numpy(rng.random((samples, nodes)) < density)
    x = rng.standard_normal((samples, nodes)) + float(np.sqrt(2) * _erfinv(2 * density - 1))
    t = torch.from_numpy(x).to(DTYPES[dtype])
    if special and t.numel():
        tiny = torch.finfo(DTYPES[dtype]).tiny
        pick = torch.from_numpy(rng.integers(0, 12, (samples, nodes)))
        t[pick == 0] = 0.0
        t[pick == 1] = -0.0
        t[pick == 2] = tiny / 4  # positive denormal: active
        t[pick == 3] = -tiny / 4  # negative denormal: inactive
    return t


def _erfinv(y: float) -> float:
    from math import erf

    lo, hi = -6.0, 6.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if erf(mid) < y:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def make_labels(rng: np.random.Generator, samples: int, classes: int, dtype: torch.dtype = torch.int64,
                absent: int = 0) -> torch.Tensor:
    """Labels in [0, classes), leaving the `absent` highest classes without samples."""
    hi = max(1, classes - absent)
    return torch.from_numpy(rng.integers(0, hi, samples)).to(dtype)


def to_backend(t: torch.Tensor, backend: str) -> object:
    """The input as the backend's callers would pass it: torch on the backend's device, CuPy for cupy."""
    if device_of(backend) == "cpu":
        return t
    t = t.cuda()
    if backend == "cupy" and t.dtype != torch.bfloat16:  # CuPy has no bfloat16: those callers pass torch
        import cupy

        return cupy.from_dlpack(t)
    return t


def to_backend_pair(acts: torch.Tensor, labels: torch.Tensor, backend: str) -> tuple[object, object]:
    """Activations and labels from one library, as a caller of that backend holds them."""
    a = to_backend(acts, backend)
    return a, (labels.to(a.device) if isinstance(a, torch.Tensor) else to_backend(labels, backend))


def host(x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    return x.get()


def case_seed(*parts: object) -> int:
    """A seed from a case's parameters that is the same in every process (``hash()`` of strings is salted per
    process, so a failing case could not be replayed)."""
    import zlib

    return zlib.crc32(repr(parts).encode())


CSRC = Path(__file__).resolve().parent.parent / "csrc"
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")


def device_code_compiles(header: str, kernels: list[str], tmp_path: Path) -> None:
    """csrc/cuda/<header> alone, as CuPy's NVRTC gets it (included by a file with nothing else: NVRTC has no
    standard headers), every kernel in ``kernels`` (the names the cupy backend launches) taken by address so that
    each template is instantiated, compiled by nvcc with setup.py's flags for one architecture (sm_90)."""
    text = (CSRC / "cuda" / header).read_text()
    assert not any(line.lstrip().startswith("#include <") for line in text.splitlines()), "NVRTC has no std headers"
    src = tmp_path / "rtc.cu"
    src.write_text(f'#include "cuda/{header}"\n\nvoid* kernels[] = {{\n'
                   + "".join(f"    (void*)&{k},\n" for k in kernels) + "};\n")
    cmd = [shutil.which("nvcc") or "nvcc", "-c", str(src), "-o", str(tmp_path / "rtc.o"), "-O3", "-std=c++17",
           f"-I{CSRC}", "-gencode=arch=compute_90,code=sm_90"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


def with_padding_set(packed: torch.Tensor, samples: int) -> torch.Tensor:
    """The masks with every padding bit set, as a stored mask set may hold them: the kernel must ignore them."""
    bits = np.unpackbits(packed.numpy(), axis=1, bitorder="little")
    bits[:, samples:] = 1
    return torch.from_numpy(np.packbits(bits, axis=1, bitorder="little"))


def gpu_matches_reference(kernel, backend: str, first: torch.Tensor, *rest: object) -> None:
    """``kernel(first, *rest)`` on ``backend``'s arrays (tensors moved there), named and chosen automatically: the
    reference's int64 result, in the caller's kind of array."""
    want = host(kernel(first, *rest, backend="reference"))
    x = to_backend(first, backend)
    args = [to_backend(a, backend) if isinstance(a, torch.Tensor) else a for a in rest]
    for bk in (backend, None):
        got = kernel(x, *args, backend=bk)
        assert type(got) is type(x) and host(got).dtype == np.int64
        np.testing.assert_array_equal(host(got), want)
