"""The two protocols of source 002's trained probes: as its text states them, and as its authors' released code runs
them. ``docs/probe_protocols.md`` puts every setting side by side, with where the released code sets it.

A protocol fixes the classifier's and the decoder's training; :class:`~nnphases.probes.PaperProbe` takes one by
name and lets any setting be overridden. How the activations are read (BatchNorm with running or batch statistics)
is not part of the probe: the Recorder reads them (``Probes`` option ``bn``), and the ``code`` protocol's default
there is batch statistics, as the released code reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Protocol", "PROTOCOLS", "protocol", "released_lr_drops"]


def released_lr_drops(epochs: int) -> tuple[int, ...]:
    """The epochs (counted from 1) after which the released code's evaluation classifier multiplies its learning
    rate by 0.1, for a run of ``epochs`` epochs: every ``epochs // 3 + epochs // 10 + 2`` epochs, and, in runs
    shorter than 16 epochs, also after epoch ``int(epochs * 3 / 4) + 1``. For 20 epochs: after epochs 10 and 20."""
    period = epochs // 3 + epochs // 10 + 2
    drops = {e for e in range(1, epochs + 1) if e % period == 0}
    if epochs < 16:
        drops.add(int(epochs * 3 / 4) + 1)
    return tuple(sorted(d for d in drops if d <= epochs))


@dataclass(frozen=True)
class Protocol:
    """How the trained probes are trained. ``classifier_lr_drops``: epochs (from 1) after which the classifier's
    learning rate is multiplied by 0.1 (None: the released code's rule for ``classifier_epochs``,
    :func:`released_lr_drops`). ``standardize_targets``: the decoder learns the inputs standardised per channel
    with the training inputs' mean and standard deviation (the reconstruction error is reported in the inputs'
    own units either way)."""

    name: str
    classifier_epochs: int
    classifier_lr: float
    classifier_momentum: float
    classifier_lr_drops: tuple[int, ...] | None
    decoder: str  # "auto" (dense, or conv for conv layers of image inputs), "dense", "conv", "linear", "cladec"
    decoder_epochs: int
    decoder_lr: float
    decoder_weight_decay: float
    standardize_targets: bool
    batch: int

    def with_overrides(self, overrides: dict[str, Any]) -> Protocol:
        """This protocol with the given settings replaced (None values ignored)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def lr_drops(self) -> tuple[int, ...]:
        if self.classifier_lr_drops is None:
            return released_lr_drops(self.classifier_epochs)
        return self.classifier_lr_drops


PROTOCOLS: dict[str, Protocol] = {
    # The paper's text: a dense classifier trained 20 epochs by SGD at lr 0.003, a decoder shaped like an
    # auto-encoder's trained 30 epochs by Adam at lr 3e-4; nothing said about momentum, schedules or scaling.
    "text": Protocol(
        name="text",
        classifier_epochs=20,
        classifier_lr=0.003,
        classifier_momentum=0.0,
        classifier_lr_drops=(),
        decoder="auto",
        decoder_epochs=30,
        decoder_lr=3e-4,
        decoder_weight_decay=0.0,
        standardize_targets=False,
        batch=128,
    ),
    # The authors' released code: SGD at lr 0.01 with momentum 0.9 and lr x0.1 after epochs 10 and 20, a linear
    # decoder trained 20 epochs by Adam at lr 3e-4 with weight decay 1e-5 on standardised inputs, batches of 128.
    "code": Protocol(
        name="code",
        classifier_epochs=20,
        classifier_lr=0.01,
        classifier_momentum=0.9,
        classifier_lr_drops=None,
        decoder="linear",
        decoder_epochs=20,
        decoder_lr=3e-4,
        decoder_weight_decay=1e-5,
        standardize_targets=True,
        batch=128,
    ),
}


def protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name]
