"""Kernel benchmarks on this machine (``nnphases bench``): every kernel on every backend that runs here, each
result checked against the reference backend, each timing next to the memory bandwidth measured in the same run.

The yardsticks live here and ``benchmarks/`` imports them: :func:`read_bandwidth` (a streaming read of the
kernel's own input on the CPU) and :func:`copy_bandwidth` (a device-to-device copy on a GPU, bytes read plus
written). A kernel's share of the bandwidth is its input bytes per second over the yardstick.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .. import kernels

__all__ = ["read_bandwidth", "copy_bandwidth", "Row", "run", "format_report", "KERNELS"]

KERNELS = ("class_counts", "pack_masks", "packed_class_counts", "node_metrics", "layer_metrics")

# (samples, nodes, classes) of the activation kernels and (classes, nodes, samples per class) of the metric ones:
# an MNIST-sized evaluation set at a 4,096-node layer, and a VGG-11-sized checkpoint's worth of counts.
_ACTS = {False: (60000, 4096, 10), True: (2048, 512, 10)}
_COUNTS = {False: (10, 524_288, 1000), True: (10, 8192, 100)}


def read_bandwidth(x: torch.Tensor | np.ndarray, threads: int | None = None) -> float | None:
    """Bytes per second of a streaming read of ``x`` on the host (best of 3), the yardstick of the CPU kernels;
    None when the C++ extension, which holds the probe, is not built. ``numpy.sum`` is no probe: it is
    compute-bound well below the read bandwidth."""
    try:
        from .. import _C
    except ImportError:
        return None
    if isinstance(x, torch.Tensor):
        arr = x.detach().numpy().view(np.uint8) if x.dtype != torch.bool else x.numpy().view(np.uint8)
    else:
        arr = np.ascontiguousarray(x).view(np.uint8)
    arr = arr.reshape(-1)
    best = math.inf
    for _ in range(3):
        a = time.perf_counter()
        _C.stream_read(arr, threads or 0)
        best = min(best, time.perf_counter() - a)
    return arr.nbytes / best


def popcount_rate(threads: int | None = None) -> float | None:
    """64-bit words per second this CPU popcounts on ``threads`` threads (default: every core), each over its own
    128 KiB cache-resident buffer, best of 5: the yardstick of ``coactivation``. None without the C++ extension."""
    try:
        from .. import _C
    except ImportError:
        return None
    n = threads or (os.cpu_count() or 1)
    buf = np.random.default_rng(0).integers(0, 2**63, 16384, dtype=np.uint64)
    repeats = 20000  # about 0.1 s a try: thread start-up and timer noise stay small
    best = math.inf
    for _ in range(5):
        a = time.perf_counter()
        _C.popcount_probe(buf, repeats, n)
        best = min(best, time.perf_counter() - a)
    return n * buf.size * repeats / best


def copy_bandwidth(nbytes: int = 1 << 30, device: str | torch.device = "cuda") -> float:
    """Bytes read plus written per second by a device-to-device copy of ``nbytes`` on a GPU (best of 10)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / _best(lambda: dst.copy_(src), 10, gpu=True)


def _best(fn: Callable[[], object], repeats: int, gpu: bool = False, warm: bool = False) -> float:
    """Fewest seconds of ``fn()`` over ``repeats`` calls (GPU work waited for), after one warm-up call unless
    ``warm``: Numba and NVRTC compile outside the timing."""
    if not warm:
        fn()
    best = math.inf
    for _ in range(repeats):
        if gpu:
            torch.cuda.synchronize()
        a = time.perf_counter()
        fn()
        if gpu:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - a)
    return best


@dataclass
class Row:
    """One kernel on one backend: elements are activations (class_counts, pack_masks), sample bits
    (packed_class_counts) or counts (node_metrics, layer_metrics); ``of_bandwidth`` is the input's bytes per
    second over the yardstick of its device measured in this run (None without one)."""

    kernel: str
    backend: str
    device: str
    shape: str
    elements: int
    bytes: int
    seconds: float
    elements_per_s: float
    bytes_per_s: float
    of_bandwidth: float | None
    check: str  # "ok", or what differs from the reference backend


def _same(got: Any, want: Any) -> str:
    a = got.cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    b = want.cpu().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    if a.shape != b.shape or not np.array_equal(a, b):
        bad = int(np.count_nonzero(a != b)) if a.shape == b.shape else -1
        return f"differs from reference ({'shape ' + str(a.shape) if bad < 0 else f'{bad} entries'})"
    return "ok"


def _host(x: Any) -> np.ndarray:
    """A NumPy copy of a host or device array (torch, CuPy) or scalar."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else x)


def _close_metrics(got: Any, want: Any, classes: int) -> str:
    # The documented agreement of the native metric kernels with NumPy's: fractions and flags identical, the
    # entropies, p and u within 8 eps max(1, log C), NaN on the same nodes.
    tol = 8 * np.finfo(np.float64).eps * max(1.0, math.log(classes))
    for name in (
        "fraction",
        "predictability",
        "informativeness",
        "h_z_given_y",
        "h_y_given_z",
        "dead",
        "always_active",
        "nodes",
    ):
        if not hasattr(want, name):
            continue
        a, b = _host(getattr(got, name)), _host(getattr(want, name))
        # A layer's fraction is a mean, summed in another order than NumPy's: exact only node by node.
        exact = name in ("dead", "always_active", "nodes") or (name == "fraction" and a.ndim == 1)
        if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=0 if exact else tol, equal_nan=True):
            return f"{name} differs from reference beyond {0 if exact else tol:.1e}"
    return "ok"


def _inputs(quick: bool, seed: int = 0) -> dict[str, Any]:
    samples, nodes, classes = _ACTS[quick]
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn((samples, nodes), generator=g)
    labels = torch.randint(0, classes, (samples,), generator=g)
    c, n, size = _COUNTS[quick]
    rng = np.random.default_rng(seed)
    sizes = np.full(c, size, np.int64)
    # Binomial counts of nodes whose fractions spread over 0..1, a few dead and a few always active.
    # int32: the accumulators the Recorder hands to a checkpoint.
    counts = rng.binomial(sizes[:, None], rng.random(n)[None, :]).astype(np.int32)
    counts[:, : n // 50] = 0
    counts[:, n // 50 : n // 25] = sizes[:, None]
    return {"acts": acts, "labels": labels, "classes": classes, "counts": counts, "sizes": sizes}


def _bound(kernel: Callable[..., Any], *args: Any) -> Callable[[str], Any]:
    """``kernel(*args)`` on the backend it is given."""
    return lambda backend: kernel(*args, backend=backend)


def run(quick: bool = False, repeats: int = 3, gpu: bool | None = None) -> dict[str, Any]:
    """Every kernel on every backend that runs here, checked and timed; the report as JSON-ready data: the machine,
    the bandwidths, the backends (with why the others are unavailable) and one :class:`Row` per kernel and
    backend. ``quick``: small inputs (seconds in all). ``gpu``: None measures GPU backends when torch sees a GPU."""
    if not isinstance(quick, bool):
        raise TypeError(f"quick must be true or false, got {quick!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    gpu = torch.cuda.is_available() if gpu is None else gpu
    data = _inputs(quick)
    listing = kernels.backends()
    devices = ["cpu"] + (["cuda"] if gpu else [])
    report: dict[str, Any] = {
        "machine": _machine(gpu),
        "quick": quick,
        "backends": [{"name": n, "device": d, "available": why is None, "reason": why} for n, d, why in listing],
        "bandwidth": {},
        "rows": [],
        "skipped": [],
    }
    if gpu:
        report["bandwidth"]["cuda"] = {
            "bytes_per_s": copy_bandwidth((64 << 20) if quick else (1 << 30)),
            "what": "device-to-device copy, bytes read plus written",
        }
    acts, labels, classes = data["acts"], data["labels"], data["classes"]
    ref_counts = kernels.class_counts(acts, labels, classes, backend="reference")
    ref_packed = kernels.pack_masks(acts, backend="reference")
    for device in devices:
        on = [n for n, d, why in listing if why is None and d in (device, "any")]
        x = acts if device == "cpu" else acts.to(device)
        y = labels if device == "cpu" else labels.to(device)
        packed = ref_packed if device == "cpu" else ref_packed.to(device)
        shape = f"{x.shape[0]}x{x.shape[1]} float32, {classes} classes"
        cases = [
            ("class_counts", _bound(kernels.class_counts, x, y, classes), ref_counts, x, shape),
            ("pack_masks", _bound(kernels.pack_masks, x), ref_packed, x, shape),
            (
                "packed_class_counts",
                _bound(kernels.packed_class_counts, packed, y, classes),
                ref_counts,
                packed,
                f"{packed.shape[0]}x{packed.shape[1]} packed uint8, {classes} classes",
            ),
        ]
        for kernel, fn, want, source, shape in cases:
            bw = _bandwidth(report, device, source)
            for b in on:
                if device != "cpu" and b == "reference":
                    continue  # the host oracle, timed in the CPU rows
                _time(report, kernel, b, device, shape, x.numel(), source, fn, want, _same, bw, repeats)
    host_counts, sizes = data["counts"], data["sizes"]
    want_nodes = kernels.node_metrics(host_counts, sizes, backend="reference")
    want_layer = kernels.layer_metrics(host_counts, sizes, backend="reference")
    for device in devices:  # the metrics where the counts are: GPU counts stay on their device
        on = [n for n, d, why in listing if why is None and d == device]
        counts = host_counts if device == "cpu" else torch.from_numpy(host_counts).to(device)
        shape = f"{counts.shape[0]}x{counts.shape[1]} int32 counts"
        bw = _bandwidth(report, device, counts)
        for kernel, want in (("node_metrics", want_nodes), ("layer_metrics", want_layer)):
            fn = getattr(kernels, kernel)
            for b in on + (["reference"] if device == "cpu" else []):
                _time(
                    report,
                    kernel,
                    b,
                    device,
                    shape,
                    math.prod(counts.shape),
                    counts,
                    _bound(fn, counts, sizes),
                    want,
                    lambda g, w: _close_metrics(g, w, host_counts.shape[0]),
                    bw,
                    repeats,
                )
    report["ok"] = all(r["check"] == "ok" for r in report["rows"])
    return report


def _bandwidth(report: dict[str, Any], device: str, source: Any) -> float | None:
    if device != "cpu":
        return report["bandwidth"]["cuda"]["bytes_per_s"]
    bw = read_bandwidth(source)
    if bw is not None:
        cpu = report["bandwidth"].setdefault(
            "cpu", {"what": "streaming read of each input, all cores", "bytes_per_s": bw}
        )
        cpu["bytes_per_s"] = max(cpu["bytes_per_s"], bw)
    return bw


def _time(
    report: dict[str, Any],
    kernel: str,
    backend: str,
    device: str,
    shape: str,
    elements: int,
    source: Any,
    fn: Callable[[str], Any],
    want: Any,
    check: Callable[[Any, Any], str],
    bw: float | None,
    repeats: int,
) -> None:
    gpu = device != "cpu"
    try:
        # The first call warms up (and for the reference, far slower, is its one timing).
        first = time.perf_counter()
        got = fn(backend)
        if gpu:
            torch.cuda.synchronize()
        first = time.perf_counter() - first
    except kernels.BackendError as e:  # the backend lacks this kernel (or this device)
        report["skipped"].append({"kernel": kernel, "backend": backend, "device": device, "reason": str(e)})
        return
    verdict = check(got, want)
    sec = first if backend == "reference" else _best(lambda: fn(backend), repeats, gpu=gpu, warm=True)
    nbytes = source.numel() * source.element_size() if isinstance(source, torch.Tensor) else source.nbytes
    report["rows"].append(
        asdict(
            Row(
                kernel,
                backend,
                device,
                shape,
                elements,
                nbytes,
                sec,
                elements / sec,
                nbytes / sec,
                nbytes / sec / bw if bw else None,
                verdict,
            )
        )
    )


def _machine(gpu: bool) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if gpu else None,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def format_report(report: dict[str, Any]) -> str:
    """The report as one table, with the machine, the bandwidths and the backends that did not run."""
    m = report["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores"
        + (f", {m['gpu']}" if m["gpu"] else ", no GPU")
        + (" (quick sizes)" if report["quick"] else "")
    ]
    for device, bw in report["bandwidth"].items():
        lines.append(f"bandwidth {device}: {bw['bytes_per_s'] / 1e9:.1f} GB/s ({bw['what']})")
    lines.append(
        f"{'kernel':20s} {'backend':10s} {'device':6s} {'shape':32s} {'ms':>9s} {'Gelem/s':>8s} "
        f"{'GB/s':>7s} {'of bw':>6s}  check"
    )
    for r in report["rows"]:
        share = f"{r['of_bandwidth']:6.2f}" if r["of_bandwidth"] is not None else f"{'-':>6s}"
        lines.append(
            f"{r['kernel']:20s} {r['backend']:10s} {r['device']:6s} {r['shape']:32s} "
            f"{r['seconds'] * 1e3:9.2f} {r['elements_per_s'] / 1e9:8.2f} {r['bytes_per_s'] / 1e9:7.1f} "
            f"{share}  {r['check']}"
        )
    for b in report["backends"]:
        if not b["available"]:
            lines.append(f"not run: {b['name']} ({b['device']}): {b['reason']}")
    for s in report["skipped"]:
        lines.append(f"not run: {s['kernel']} on {s['backend']} ({s['device']}): {s['reason']}")
    return "\n".join(lines)
