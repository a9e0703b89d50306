"""nnphases: how every layer of a PyTorch model learns, phase by phase.

Importing never fails for a missing extension, Numba or CuPy: the kernels'
backends load on first use and say why one is unavailable
(``nnphases backends``)."""

from .kernels import class_counts, layer_metrics, node_metrics, pack_masks, packed_class_counts

__version__ = "0.1.0"
__all__ = ["class_counts", "pack_masks", "packed_class_counts", "node_metrics", "layer_metrics", "__version__"]
