"""The backend table and the choice among backends.

A backend is a module defining some kernels under their public names; it is
importable only when its dependency is there, and its ImportError's text is the
reason it is unavailable. ``backend=None`` takes the first backend of the input
device's order that can run the kernel; a named backend is taken exactly, or one
error lists why it (and, for the automatic choice, every candidate) was refused.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Backend:
    name: str
    module: str
    device: str  # "cpu", "cuda" or "any"
    native: str  # array type the backend computes on: "numpy", "torch" or "cupy"


BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("cuda", "nnphases.kernels.impl.cuda", "cuda", "torch"),
        Backend("cupy", "nnphases.kernels.impl.cupy", "cuda", "cupy"),
        Backend("cpp", "nnphases.kernels.impl.cpp", "cpu", "numpy"),
        Backend("numba", "nnphases.kernels.impl.numba", "cpu", "numpy"),
        Backend("reference", "nnphases.kernels.impl.reference", "any", "numpy"),
    )
}

AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("cuda", "cupy", "reference"),
    "cpu": ("cpp", "numba", "reference"),
}

_loaded: dict[str, ModuleType | str] = {}


class BackendError(RuntimeError):
    """No backend could run the request; the message lists each refusal and its reason."""


def load(name: str) -> ModuleType | str:
    """The backend's module, or the reason it cannot be imported."""
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(BACKENDS[name].module)
        except ImportError as e:
            _loaded[name] = str(e) or type(e).__name__
    return _loaded[name]


def refusal(name: str, kernel: str, device: str) -> str | None:
    """Why backend ``name`` cannot run ``kernel`` on ``device`` (another device, not importable here, kernel not
    implemented), or None when it can."""
    b = BACKENDS[name]
    if b.device not in ("any", device):
        return f"runs on {b.device}, the input is on {device}"
    mod = load(name)
    if isinstance(mod, str):
        return mod
    if not callable(getattr(mod, kernel, None)):
        return f"does not implement {kernel}"
    return None


def select(kernel: str, device: str, backend: str | None) -> tuple[Backend, Callable]:
    """The backend and its kernel function for this device (see the module docstring)."""
    if backend is not None and (not isinstance(backend, str) or backend not in BACKENDS):
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} or None, got {backend!r}")
    names = (backend,) if backend else AUTO_ORDER.get(device, ("reference",))
    reasons = []
    for name in names:
        why = refusal(name, kernel, device)
        if why is None:
            mod = load(name)
            assert not isinstance(mod, str)
            return BACKENDS[name], getattr(mod, kernel)
        reasons.append(f"{name}: {why}")
    raise BackendError(f"no backend can run {kernel} on {device}: " + "; ".join(reasons))


def report() -> list[tuple[str, str, str | None]]:
    """(name, device, reason unavailable or None) for every backend, for `nnphases backends`."""
    out = []
    for name, b in BACKENDS.items():
        mod = load(name)
        out.append((name, b.device, mod if isinstance(mod, str) else None))
    return out
