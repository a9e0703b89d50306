"""The ``cuda`` backend: the extension's CUDA launchers, compiled by nvcc at build
time, on torch CUDA tensors, launched on the caller's stream. Reading the
non-finite flag back is the one synchronisation (skipped with check_finite=False);
the metric kernels' one is reading their nine-number result."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

import numpy as np

from .._kinds import Kind
from .._metric_kernels import DEVICE_COUNT_TYPES
from .._segments import build_segments
from .._validate import label_range

if TYPE_CHECKING:
    from .._metric_kernels import DevicePlan

try:
    from ... import _C
except ImportError as e:
    raise ImportError(f"the extension nnphases._C is not built ({e})") from None
if not _C.has_cuda:
    raise ImportError(
        "nnphases._C was built without its CUDA part (no nvcc, or no GPU seen at build time); reinstall with "
        "NNPHASES_CUDA=1"
    )
_why = _C.cuda_device_report()
if _why:
    # The CUDA runtime says "driver version is insufficient" also where no driver is installed at all.
    if "insufficient" in _why and not os.path.exists("/proc/driver/nvidia/version"):
        _why = "no NVIDIA driver on this machine (no GPU, or its driver is not installed)"
    raise ImportError(_why)

import torch  # noqa: E402

if not torch.cuda.is_available():
    raise ImportError(f"torch {torch.__version__} has no CUDA support or sees no GPU")


def _keep(stream: int, *tensors: torch.Tensor) -> None:
    """Tell torch's allocator the tensors are in use on a stream it may not know."""
    if stream != torch.cuda.current_stream().cuda_stream:
        ext = torch.cuda.ExternalStream(stream)
        for t in tensors:
            t.record_stream(ext)


def class_counts(
    acts: torch.Tensor,
    kind: Kind,
    labels: torch.Tensor,
    num_classes: int,
    *,
    check_finite: bool,
    stream: int,
    device: int,
    check_labels: bool = True,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, bool]:
    """Counts added into ``out`` (int32 or int64, contiguous, on acts' device) with atomics of its width;
    without it the launcher zeroes a fresh int64 table on the stream first."""
    samples, nodes = acts.shape
    accumulate = out is not None
    if out is None:
        out = torch.empty((num_classes, nodes), dtype=torch.int64, device=acts.device)
    work = torch.empty(2 * samples + num_classes + 1, dtype=torch.int32, device=acts.device)
    flags = torch.empty(2, dtype=torch.int64, device=acts.device)
    _C.class_counts_cuda(
        acts.data_ptr(),
        kind.code,
        samples,
        nodes,
        acts.stride(0),
        labels.data_ptr(),
        labels.element_size(),
        num_classes,
        out.data_ptr(),
        out.element_size(),
        accumulate,
        work.data_ptr(),
        flags.data_ptr(),
        check_finite,
        device,
        stream,
    )
    _keep(stream, out, work, flags)
    if not (check_finite or check_labels):
        return out, False
    nonfinite, bad_labels = flags.tolist()  # the call's one synchronisation
    if bad_labels and check_labels:
        label_range(labels, num_classes)
    return out, bool(nonfinite)


class_counts.checks_labels = True  # type: ignore[attr-defined]


def pack_masks(
    acts: torch.Tensor, kind: Kind, *, check_finite: bool, stream: int, device: int
) -> tuple[torch.Tensor, bool]:
    samples, nodes = acts.shape
    row_bytes = -(-samples // 64) * 8
    out = torch.empty((nodes, row_bytes), dtype=torch.uint8, device=acts.device)
    flags = torch.empty(1, dtype=torch.int64, device=acts.device)
    _C.pack_masks_cuda(
        acts.data_ptr(),
        kind.code,
        samples,
        nodes,
        acts.stride(0),
        out.data_ptr(),
        row_bytes,
        flags.data_ptr(),
        check_finite,
        device,
        stream,
    )
    _keep(stream, out, flags)
    return out, bool(flags.item()) if check_finite else False


def _segments_on(labels: np.ndarray, num_classes: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The class segments of host ``labels`` (built on the host) on ``device``: class offsets, word indices, and
    the word masks' bits as int64."""
    seg = build_segments(labels, num_classes)
    offsets, word = (torch.from_numpy(x).to(device) for x in (seg.class_offsets, seg.word))
    return offsets, word, torch.from_numpy(seg.mask.view(np.int64)).to(device)


def packed_class_counts(
    packed: torch.Tensor, labels: torch.Tensor, num_classes: int, *, stream: int, device: int
) -> torch.Tensor:
    dev = packed.device
    offsets, word, mask = _segments_on(labels.cpu().numpy(), num_classes, dev)
    packed = packed.contiguous()
    out = torch.empty((num_classes, packed.shape[0]), dtype=torch.int64, device=dev)
    if stream != torch.cuda.current_stream(dev).cuda_stream:
        torch.cuda.current_stream(dev).synchronize()  # the uploads above ran on torch's stream
    _C.packed_class_counts_cuda(
        packed.data_ptr(),
        packed.shape[0],
        packed.shape[1],
        offsets.data_ptr(),
        num_classes,
        word.data_ptr(),
        mask.data_ptr(),
        out.data_ptr(),
        device,
        stream,
    )
    _keep(stream, out, offsets, word, mask, packed)
    return out


# MetricsCount in csrc/cuda/node_metrics.h: the codes follow DEVICE_COUNT_TYPES' order.
_METRIC_COUNTS = {name: code for code, name in enumerate(DEVICE_COUNT_TYPES)}
_METRIC_FIELDS = ("class_fraction", "fraction", "predictability", "informativeness", "h_z_given_y", "h_y_given_z")


def _on_stream(stream: int, device: torch.device):
    """Runs torch's work (uploads, allocations, the read-back) on the launch stream, so that nothing needs an
    extra synchronisation when the caller's stream is not torch's current one (CuPy input)."""
    if stream == torch.cuda.current_stream(device).cuda_stream:
        return contextlib.nullcontext()
    return torch.cuda.stream(torch.cuda.ExternalStream(stream, device=device))


def _last_mask(samples: int) -> int:
    """The bits of a row's last word that hold samples (all of them when the samples fill it)."""
    return (1 << (samples % 64)) - 1 if samples % 64 else (1 << 64) - 1


def mask_overlap(
    a: torch.Tensor,
    b: torch.Tensor,
    samples: int,
    labels: np.ndarray | None,
    num_classes: int,
    *,
    stream: int,
    device: int,
) -> torch.Tensor:
    """-> int64 [2, classes, nodes] on the masks' device: popcounts of A & B, then of A | B, per class (one class
    without labels). The labels are host labels (checked by the caller); their segments are built on the host
    and uploaded, as packed_class_counts does."""
    nodes, row_bytes = a.shape
    with _on_stream(stream, a.device):
        out = torch.empty((2, num_classes, nodes), dtype=torch.int64, device=a.device)
        if labels is None:
            whole_rows = 0  # no segments: one class of every sample, the last word masked
            _C.mask_overlap_cuda(
                a.data_ptr(),
                b.data_ptr(),
                nodes,
                row_bytes,
                whole_rows,
                1,
                whole_rows,
                whole_rows,
                _last_mask(samples),
                out.data_ptr(),
                device,
                stream,
            )
            return out
        offsets, word, mask = _segments_on(labels, num_classes, a.device)
        _C.mask_overlap_cuda(
            a.data_ptr(),
            b.data_ptr(),
            nodes,
            row_bytes,
            offsets.data_ptr(),
            num_classes,
            word.data_ptr(),
            mask.data_ptr(),
            0,
            out.data_ptr(),
            device,
            stream,
        )
    return out


def sample_popcounts(packed: torch.Tensor, samples: int, *, stream: int, device: int) -> torch.Tensor:
    """-> int64 [samples]: the rows with each sample's bit set (the launcher zeroes it on the stream first)."""
    with _on_stream(stream, packed.device):
        out = torch.empty(samples, dtype=torch.int64, device=packed.device)
        _C.sample_popcounts_cuda(
            packed.data_ptr(), packed.shape[0], packed.shape[1], samples, out.data_ptr(), device, stream
        )
    return out


def coactivation(packed: torch.Tensor, samples: int, *, stream: int, device: int) -> torch.Tensor:
    """-> int64 [nodes, nodes]: the samples each pair of rows has in common."""
    nodes = packed.shape[0]
    with _on_stream(stream, packed.device):
        out = torch.empty((nodes, nodes), dtype=torch.int64, device=packed.device)
        _C.coactivation_cuda(packed.data_ptr(), nodes, packed.shape[1], samples, out.data_ptr(), device, stream)
    return out


def sample_agreement(packed: torch.Tensor, idx: np.ndarray, *, stream: int, device: int) -> torch.Tensor:
    """-> int64 [m, m]: Hamming distances between the chosen samples' codes across the rows; ``idx`` are host
    indices, checked by the caller."""
    nodes, m = packed.shape[0], idx.shape[0]
    with _on_stream(stream, packed.device):
        chosen = torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)).to(packed.device)
        codes = torch.empty(m * (-(-nodes // 64)), dtype=torch.int64, device=packed.device)
        out = torch.empty((m, m), dtype=torch.int64, device=packed.device)
        _C.sample_agreement_cuda(
            packed.data_ptr(),
            nodes,
            packed.shape[1],
            chosen.data_ptr(),
            m,
            codes.data_ptr(),
            out.data_ptr(),
            device,
            stream,
        )
    return out


def _metrics(
    counts: torch.Tensor, plan: DevicePlan, out: dict[str, torch.Tensor], stream: int, device: int, dev: torch.device
) -> np.ndarray:
    classes, nodes = counts.shape
    sizes = torch.from_numpy(plan.class_sizes).to(dev)
    blocks = _C.node_metrics_cuda_blocks(nodes)
    work = torch.empty(9 * blocks + 9, dtype=torch.float64, device=dev)  # the blocks' partials, then the result
    _C.node_metrics_cuda(
        counts.data_ptr(),
        _METRIC_COUNTS[str(counts.dtype).replace("torch.", "")],
        classes,
        nodes,
        sizes.data_ptr(),
        plan.total,
        float(plan.present),
        plan.h_y,
        plan.log_k,
        plan.pair_terms,
        {name: t.data_ptr() for name, t in out.items()},
        work.data_ptr(),
        work.data_ptr() + 8 * 9 * blocks,
        device,
        stream,
    )
    return work[9 * blocks :].cpu().numpy()  # the call's one synchronisation: nine numbers


def node_metrics(
    counts: torch.Tensor, plan: DevicePlan, *, stream: int, device: int
) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """The node arrays on the counts' device, and the layer result (whose last entry counts bad counts)."""
    dev = counts.device
    classes, nodes = counts.shape
    with _on_stream(stream, dev):
        out = {name: torch.empty(nodes, dtype=torch.float64, device=dev) for name in _METRIC_FIELDS}
        out["class_fraction"] = torch.empty((classes, nodes), dtype=torch.float64, device=dev)
        out["dead"] = torch.empty(nodes, dtype=torch.bool, device=dev)
        out["always_active"] = torch.empty(nodes, dtype=torch.bool, device=dev)
        result = _metrics(counts, plan, out, stream, device, dev)
    return out, result


def layer_metrics(counts: torch.Tensor, plan: DevicePlan, *, stream: int, device: int) -> np.ndarray:
    """The layer result: sums of f, p, u; how many of each; dead; always active; bad counts."""
    with _on_stream(stream, counts.device):
        return _metrics(counts, plan, {}, stream, device, counts.device)
