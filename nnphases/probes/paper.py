"""Paper-mode probes: the source's protocol, a trained dense classifier and a trained auto-encoder decoder.

The source retrains both auxiliary models from scratch at every measurement step, on the layer's activations
over the training data held in memory: the classifier is one dense layer on the flattened activations, trained
20 epochs by SGD at lr 0.003 on cross-entropy; the decoder is shaped like a standard auto-encoder's decoder,
trained 30 epochs by Adam at lr 3e-4 on the input's mean squared error. Here the decoder is

- ``dense`` (fully connected layers): Linear(F, 256) -> ReLU -> Linear(256, input size);
- ``conv`` (conv layers [C, h, w] and image inputs [Cin, H, W]): Conv2d(C, 64, 1) -> ReLU, then one
  ConvTranspose2d(kernel 4, stride 2) -> ReLU per doubling of the resolution with the channels halved each time
  (at least 16), a bilinear resize when H is not h times a power of two, and a final Conv2d(3x3) to Cin.

The source does not give its decoder's widths; 64 channels at the bottleneck keep a CPU measurement affordable
and are a parameter (``channels``). With ``warm_start`` a probe starts from the previous step's trained models
instead of from scratch (the issue's option; the source retrains). Results have the keys of
:meth:`nnphases.probes.RidgeProbe.result` and the same normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._common import Moments, ProbeError, check_batch

__all__ = ["PaperProbe", "train_paper_probes", "conv_decoder", "dense_decoder", "DECODERS"]

DECODERS = ("auto", "dense", "conv")
# Rows per forward pass when scoring stored activations: bounds the memory of an evaluation.
_SCORE_BATCH = 4096


def dense_decoder(features: int, input_dim: int, hidden: int = 256) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, input_dim))


def conv_decoder(act_shape: tuple[int, int, int], input_shape: tuple[int, int, int], channels: int = 64) -> nn.Module:
    """Transposed-convolution decoder from [C, h, w] activations to [Cin, H, W] inputs (see the module text)."""
    (c, h, w), (cin, hi, wi) = act_shape, input_shape
    layers: list[nn.Module] = [nn.Conv2d(c, channels, 1), nn.ReLU()]
    ch, size = channels, h
    while size * 2 <= hi:
        nxt = max(16, ch // 2)
        layers += [nn.ConvTranspose2d(ch, nxt, 4, stride=2, padding=1), nn.ReLU()]
        ch, size = nxt, size * 2
    if (size, w * (size // h)) != (hi, wi):
        layers.append(nn.Upsample(size=(hi, wi), mode="bilinear", align_corners=False))
    layers.append(nn.Conv2d(ch, cin, 3, padding=1))
    return nn.Sequential(*layers)


def _train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: Callable,
    x: torch.Tensor,
    target: torch.Tensor,
    epochs: int,
    batch: int,
    gen: torch.Generator,
    what: str,
) -> None:
    """Minibatch training, shuffled each epoch by ``gen``; a non-finite loss raises ProbeError."""
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=gen).split(batch):
            idx = idx.to(x.device)
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), target[idx])
            loss.backward()
            opt.step()
        if not math.isfinite(float(loss.detach())):
            raise ProbeError(f"paper-mode {what} diverged (loss {float(loss.detach())})")
    model.eval()


class PaperProbe:
    """Source-protocol probes of one layer, fed like :class:`~nnphases.probes.RidgeProbe`.

    :meth:`update_train` keeps the training batches (float32, on ``device``), :meth:`fit` trains the
    classifier and the decoder on them, scores the training accuracy and frees them, :meth:`update_test`
    scores test batches, :meth:`result` reports. :meth:`score_train` is a no-op (``scores_in_fit``): the
    training accuracy comes from the kept activations. ``act_shape``/``input_shape`` are per sample.
    ``warm_start`` (a fitted PaperProbe or its :meth:`state`) initialises the models from it when the
    shapes agree. ``decoder="auto"`` picks ``conv`` for [C, h, w] activations of [Cin, H, W] inputs, else ``dense``.
    ``reduce`` (a :class:`RidgeProbe` or a callable [B, ...] -> [B, F]) maps activations to features for
    the classifier and a dense decoder. Training is deterministic for ``seed`` and leaves the global RNG as
    it was. Memory: the training activations and inputs, ``n_train * (prod(act_shape) + prod(input_shape))``
    float32 values, until :meth:`fit` returns.
    """

    scores_in_fit = True

    def __init__(
        self,
        act_shape: tuple[int, ...],
        num_classes: int,
        input_shape: tuple[int, ...],
        *,
        classifier_epochs: int = 20,
        classifier_lr: float = 0.003,
        decoder_epochs: int = 30,
        decoder_lr: float = 3e-4,
        batch: int = 128,
        decoder: str = "auto",
        hidden: int = 256,
        channels: int = 64,
        reduce: Any = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        warm_start: PaperProbe | dict | None = None,
    ) -> None:
        for name, val in (
            ("classifier_epochs", classifier_epochs),
            ("decoder_epochs", decoder_epochs),
            ("batch", batch),
            ("num_classes", num_classes),
            ("hidden", hidden),
            ("channels", channels),
        ):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        for name, rate in (("classifier_lr", classifier_lr), ("decoder_lr", decoder_lr)):
            if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
                raise ValueError(f"{name} must be a positive float, got {rate!r}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.act_shape, self.input_shape = tuple(act_shape), tuple(input_shape)
        if decoder == "auto":
            decoder = "conv" if len(self.act_shape) == 3 and len(self.input_shape) == 3 and reduce is None else "dense"
        if decoder == "conv" and (len(self.act_shape) != 3 or len(self.input_shape) != 3 or reduce is not None):
            raise ValueError(
                f"decoder='conv' needs unreduced conv activations [C, h, w] and image inputs "
                f"[C, H, W]; got act_shape={self.act_shape}, input_shape={self.input_shape}"
                f"{', with reduce' if reduce is not None else ''}"
            )
        if reduce is None:
            self._features: Callable[[torch.Tensor], torch.Tensor] = lambda a: a.reshape(a.shape[0], -1)
            self.reduction: str | None = "none"  # None until fit() reads a RidgeProbe's choice
        elif hasattr(reduce, "reduce") and hasattr(reduce, "reduction"):  # a RidgeProbe: its reduction
            self._features, self.reduction = reduce.reduce, None
            self._reducer = reduce
        elif callable(reduce):
            self._features, self.reduction = reduce, "custom"
        else:
            raise ValueError(f"reduce must be a RidgeProbe, a callable or None, got {reduce!r}")
        self.num_classes, self.decoder = num_classes, decoder
        self.classifier_epochs, self.classifier_lr = classifier_epochs, float(classifier_lr)
        self.decoder_epochs, self.decoder_lr = decoder_epochs, float(decoder_lr)
        self.batch, self.hidden, self.channels, self.seed = batch, hidden, channels, seed
        self.device = torch.device(device)
        self.input_dim = math.prod(self.input_shape)
        self.warm_start = warm_start.state() if isinstance(warm_start, PaperProbe) else warm_start
        self.classifier: nn.Module | None = None
        self.decoder_model: nn.Module | None = None
        self._acts: list[torch.Tensor] = []
        self._inputs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self.n_train = 0
        self.features: int | None = None
        self.train_accuracy: float | None = None
        self._test_n = self._test_correct = 0
        self._test_sse = 0.0
        self._test_moments = Moments(self.input_dim, self.device)

    def _prepare(
        self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = acts.shape[0]
        if tuple(acts.shape[1:]) != self.act_shape and math.prod(acts.shape[1:]) != math.prod(self.act_shape):
            raise ValueError(f"acts must be [B, *{self.act_shape}], got shape {tuple(acts.shape)}")
        y = check_batch(acts, labels, inputs, self.num_classes, self.input_shape, self.device)
        a = acts.detach().to(self.device, torch.float32).reshape(b, *self.act_shape)
        r = inputs.detach().to(self.device, torch.float32).reshape(b, *self.input_shape)
        return a, y, r

    def update_train(self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> None:
        """Keep one training batch (copied: the caller's buffers may be reused)."""
        if self.classifier is not None:
            raise RuntimeError("update_train after fit(); create a new PaperProbe to refit")
        a, y, r = self._prepare(acts, labels, inputs)
        self._acts.append(a.clone())
        self._labels.append(y.clone())
        self._inputs.append(r.clone())
        self.n_train += a.shape[0]

    def score_train(self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> None:
        """Nothing to do: :meth:`fit` scores the training accuracy on the kept activations."""

    def _feats(self, a: torch.Tensor) -> torch.Tensor:
        return self._features(a).to(self.device, torch.float32)

    def _decoder_in(self, a: torch.Tensor) -> torch.Tensor:
        return a if self.decoder == "conv" else self._feats(a)

    def _target(self, r: torch.Tensor) -> torch.Tensor:
        return r if self.decoder == "conv" else r.reshape(r.shape[0], -1)

    def _build(self, features: int) -> tuple[nn.Module, nn.Module]:
        """The classifier and the decoder, also kept as ``self.classifier`` and ``self.decoder_model``."""
        self.classifier = classifier = nn.Linear(features, self.num_classes)
        decoder_model: nn.Module
        if self.decoder == "conv":
            act, inp = self.act_shape, self.input_shape
            assert len(act) == 3 and len(inp) == 3  # __init__ takes the conv decoder only for [C, H, W] shapes
            self.decoder_model = decoder_model = conv_decoder(act, inp, self.channels)
        else:
            self.decoder_model = decoder_model = dense_decoder(features, self.input_dim, self.hidden)
        prev = self.warm_start
        if prev is not None and prev["features"] == features and prev["decoder"] == self.decoder:
            classifier.load_state_dict(prev["classifier"])
            decoder_model.load_state_dict(prev["decoder_model"])
        classifier.to(self.device)
        decoder_model.to(self.device)
        return classifier, decoder_model

    def _models(self, what: str) -> tuple[nn.Module, nn.Module]:
        """The trained classifier and decoder; RuntimeError before :meth:`fit`."""
        if self.classifier is None:
            raise RuntimeError(f"{what} needs fit() first")
        assert self.decoder_model is not None  # _build makes both
        return self.classifier, self.decoder_model

    def fit(self) -> None:
        """Train the classifier and the decoder on the kept batches, score the training accuracy, free them."""
        if self.n_train < 2:
            raise ProbeError(f"cannot fit: need at least 2 training samples, got n_train={self.n_train}")
        acts, y, r = torch.cat(self._acts), torch.cat(self._labels), torch.cat(self._inputs)
        self._acts, self._labels, self._inputs = [], [], []
        feats = self._feats(acts)
        self.features = feats.shape[1]
        if self.reduction is None:
            self.reduction = str(self._reducer.reduction)
        fork = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork), torch.enable_grad():
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            classifier, decoder_model = self._build(self.features)
            _train(
                classifier,
                torch.optim.SGD(classifier.parameters(), lr=self.classifier_lr),
                nn.functional.cross_entropy,
                feats,
                y,
                self.classifier_epochs,
                self.batch,
                gen,
                "classifier",
            )
            _train(
                decoder_model,
                torch.optim.Adam(decoder_model.parameters(), lr=self.decoder_lr),
                nn.functional.mse_loss,
                self._decoder_in(acts),
                self._target(r),
                self.decoder_epochs,
                self.batch,
                gen,
                "decoder",
            )
        with torch.no_grad():
            correct = sum(
                int((classifier(f).argmax(1) == t).sum())
                for f, t in zip(feats.split(_SCORE_BATCH), y.split(_SCORE_BATCH), strict=True)
            )
        self.train_accuracy = correct / self.n_train
        self.warm_start = None  # keep no chain of earlier probes alive

    def state(self) -> dict | None:
        """The trained models (CPU copies) for ``warm_start`` of a later probe; None before :meth:`fit`."""
        if self.classifier is None:
            return None
        classifier, decoder_model = self._models("state")
        return {
            "features": self.features,
            "decoder": self.decoder,
            "classifier": {k: v.detach().cpu().clone() for k, v in classifier.state_dict().items()},
            "decoder_model": {k: v.detach().cpu().clone() for k, v in decoder_model.state_dict().items()},
        }

    @torch.no_grad()
    def update_test(self, acts: torch.Tensor, labels: torch.Tensor, inputs: torch.Tensor) -> None:
        """Accumulate the test accuracy, the reconstruction squared error and the test inputs' moments."""
        classifier, decoder_model = self._models("update_test")
        a, y, r = self._prepare(acts, labels, inputs)
        for ab, yb, rb in zip(a.split(_SCORE_BATCH), y.split(_SCORE_BATCH), r.split(_SCORE_BATCH), strict=True):
            self._test_correct += int((classifier(self._feats(ab)).argmax(1) == yb).sum())
            err = decoder_model(self._decoder_in(ab)).double() - self._target(rb).double()
            self._test_sse += float((err**2).sum())
            self._test_moments.add(rb.reshape(rb.shape[0], -1).double())
        self._test_n += a.shape[0]

    def result(self) -> dict[str, Any]:
        if self.classifier is None:
            raise RuntimeError("result needs fit() first")
        if self._test_n == 0:
            raise ProbeError("no test data scored (n_test=0); call update_test first")
        mse = self._test_sse / (self._test_n * self.input_dim)
        acc = self._test_correct / self._test_n
        if not math.isfinite(mse):
            raise ProbeError("paper-mode decoder gives non-finite reconstructions")
        return {
            "test_accuracy": acc,
            "train_accuracy": self.train_accuracy,
            "reconstruction_mse": mse,
            "reconstruction_nmse": self._test_moments.normalised(mse),
            "ridge": None,
            "ridge_search": None,
            "features": self.features,
            "reduction": self.reduction,
            "decoder": self.decoder,
            "n_train": self.n_train,
            "n_test": self._test_n,
        }


def train_paper_probes(
    train_acts: torch.Tensor,
    train_y: torch.Tensor,
    train_inputs: torch.Tensor,
    test_acts: torch.Tensor,
    test_y: torch.Tensor,
    test_inputs: torch.Tensor,
    num_classes: int,
    **options: Any,
) -> dict[str, Any]:
    """Paper-mode probes on in-memory activations in one call: :class:`PaperProbe` fed with all of them.

    ``options`` are :class:`PaperProbe`'s keywords (epochs, learning rates, ``batch``, ``decoder``,
    ``reduce``, ``seed``, ``device``...). Returns the keys of :meth:`PaperProbe.result`.
    """
    if train_acts.shape[0] < 2:
        raise ProbeError(f"cannot fit: need at least 2 training samples, got n_train={train_acts.shape[0]}")
    if test_acts.shape[0] < 1:
        raise ProbeError("no test data (n_test=0)")
    if tuple(train_inputs.shape[1:]) != tuple(test_inputs.shape[1:]):
        raise ValueError(
            f"train_inputs and test_inputs differ per sample: {tuple(train_inputs.shape[1:])} vs "
            f"{tuple(test_inputs.shape[1:])}"
        )
    probe = PaperProbe(tuple(train_acts.shape[1:]), num_classes, tuple(train_inputs.shape[1:]), **options)
    probe.update_train(train_acts, train_y, train_inputs)
    probe.fit()
    probe.update_test(test_acts, test_y, test_inputs)
    return probe.result()
