"""Reading a model with its BatchNorm layers normalising by batch statistics, without changing the model.

The released code of source 002 reads its probes' activations with the network in training mode, so BatchNorm
divides by the statistics of each batch of 128 rather than by its running averages. :func:`batch_statistics` gives
that reading and nothing else: only BatchNorm layers change mode (dropout and everything else stay as they are),
and their running statistics are not updated (the released code updates them as a side effect, which would change
the network's own later evaluations).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["batch_norm_layers", "batch_statistics"]


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers (1d, 2d, 3d, lazy and synchronised)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[int]:
    """Within the block every BatchNorm layer of ``model`` normalises by the statistics of the batch it sees and
    updates no running statistics; afterwards each layer's mode is as it was. Yields the number of layers."""
    layers: list[nn.modules.batchnorm._BatchNorm] = batch_norm_layers(model)
    saved = [(m, m.training, m.track_running_stats) for m in layers]
    try:
        for m in layers:
            # Training mode without tracking: batch statistics, and F.batch_norm receives no running buffers.
            m.training = True
            m.track_running_stats = False
        yield len(layers)
    finally:
        for m, training, track in saved:
            m.training, m.track_running_stats = training, track
