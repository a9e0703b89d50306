# Type stub of the native extension (csrc/bindings.cpp). Arrays are NumPy buffers
# already validated by nnphases.kernels; CUDA entry points take device pointers.
import numpy as np

has_cuda: bool
direct_table_bytes: int

# out: int32 or int64 [num_classes, nodes], C-contiguous; the counts are added into it.
def class_counts(
    acts: np.ndarray,
    kind: int,
    labels: np.ndarray,
    num_classes: int,
    out: np.ndarray,
    check_finite: bool,
    threads: int,
    strategy: int,
) -> bool: ...
def pack_masks(acts: np.ndarray, kind: int, out: np.ndarray, check_finite: bool, threads: int) -> bool: ...
def packed_class_counts(
    packed: np.ndarray,
    class_offsets: np.ndarray,
    seg_word: np.ndarray,
    seg_mask: np.ndarray,
    out: np.ndarray,
    threads: int,
) -> None: ...
def mask_overlap(
    a: np.ndarray,
    b: np.ndarray,
    class_offsets: np.ndarray,
    seg_word: np.ndarray | None,
    seg_mask: np.ndarray | None,
    last_mask: int,
    inter: np.ndarray,
    uni: np.ndarray,
    threads: int,
) -> None: ...
def sample_popcounts(packed: np.ndarray, samples: int, out: np.ndarray, threads: int, strategy: int) -> bool: ...
def coactivation(packed: np.ndarray, samples: int, out: np.ndarray, threads: int) -> None: ...
def sample_agreement(packed: np.ndarray, idx: np.ndarray, out: np.ndarray, threads: int) -> None: ...
def popcount_probe(data: np.ndarray, repeats: int, threads: int) -> int: ...

# counts: C-contiguous [C, N] of count_type 'B', 'H', 'I', 'i' or 'q'; out: field name -> float64 / bool array of
# nnphases.kernels.metrics.NodeMetrics, every field; returns True when a count is out of range; see csrc/ops.h.
def node_metrics(
    counts: np.ndarray,
    count_type: str,
    class_sizes: np.ndarray,
    pairs: np.ndarray,
    table_offset: np.ndarray,
    hz_table: np.ndarray | None,
    h_y: float,
    log_k: float,
    out: dict[str, np.ndarray],
    threads: int,
) -> bool: ...

# tables: L C-contiguous [C, N_l] tables, count_types one code each; entropy: the entropy column of
# node_metrics' pairs, contiguous; use_tables, use_hz bool [L]; sums float64 [L, 2],
# node_counts int64 [L, 2], class_sums int64 [L, C]; returns the first table with a count out of range, or -1.
def layer_metrics(
    tables: list[np.ndarray],
    count_types: str,
    class_sizes: np.ndarray,
    entropy: np.ndarray,
    table_offset: np.ndarray,
    hz_table: np.ndarray | None,
    use_tables: np.ndarray,
    use_hz: np.ndarray,
    sums: np.ndarray,
    node_counts: np.ndarray,
    class_sums: np.ndarray,
    threads: int,
) -> int: ...
def count_and_pack(
    acts: np.ndarray,
    kind: int,
    labels: np.ndarray,
    num_classes: int,
    out: np.ndarray,
    packed: np.ndarray,
    check_finite: bool,
    threads: int,
) -> bool: ...
def stream_read(data: np.ndarray, threads: int) -> int: ...
def cuda_device_report() -> str: ...
def class_counts_cuda(
    acts: int,
    kind: int,
    samples: int,
    nodes: int,
    row_stride: int,
    labels: int,
    label_bytes: int,
    num_classes: int,
    out: int,
    out_bytes: int,
    accumulate: bool,
    work: int,
    flags: int,
    check_finite: bool,
    device: int,
    stream: int,
) -> None: ...
def pack_masks_cuda(
    acts: int,
    kind: int,
    samples: int,
    nodes: int,
    row_stride: int,
    out: int,
    row_bytes: int,
    flags: int,
    check_finite: bool,
    device: int,
    stream: int,
) -> None: ...
def packed_class_counts_cuda(
    packed: int,
    nodes: int,
    row_bytes: int,
    class_offsets: int,
    num_classes: int,
    seg_word: int,
    seg_mask: int,
    out: int,
    device: int,
    stream: int,
) -> None: ...

# The popcount kernels' launchers (csrc/cuda/): device pointers of packed masks read as 64-bit words; see csrc/ops.h.
# mask_overlap_cuda: seg_word 0 means whole rows (one class, the last word under last_mask).
def mask_overlap_cuda(
    a: int,
    b: int,
    nodes: int,
    row_bytes: int,
    class_offsets: int,
    num_classes: int,
    seg_word: int,
    seg_mask: int,
    last_mask: int,
    out: int,
    device: int,
    stream: int,
) -> None: ...
def sample_popcounts_cuda(
    packed: int, nodes: int, row_bytes: int, samples: int, out: int, device: int, stream: int
) -> None: ...
def coactivation_cuda(
    packed: int, nodes: int, row_bytes: int, samples: int, out: int, device: int, stream: int
) -> None: ...
def sample_agreement_cuda(
    packed: int, nodes: int, row_bytes: int, idx: int, m: int, codes: int, out: int, device: int, stream: int
) -> None: ...
def node_metrics_cuda_blocks(nodes: int) -> int: ...
def node_metrics_cuda(
    counts: int,
    count_code: int,
    classes: int,
    nodes: int,
    class_sizes: int,
    total: int,
    present: float,
    h_y: float,
    log_k: float,
    pair_terms: bool,
    out: dict[str, int],
    partials: int,
    result: int,
    device: int,
    stream: int,
) -> None: ...
