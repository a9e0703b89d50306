"""An independent transcription of the released layer-probe procedure of Schneider & Prabhushankar.

The paper "Understanding and Leveraging the Learning Phases of Neural Networks" comes with code
(github.com/JohnTailor/LearnPhase: ``mainMet.py``, ``models.py``, ``cladec.py``, ``dutils.py``). At every
measurement, for every tracked layer, that code

1. reads the layer's activations of the training data (shuffled batches of 128) and of the test data (in order,
   batches of 128) while the network is in *train mode*, so BatchNorm normalises with the statistics of each batch
   (``mainMet.getActs``; ``addTrackedMetrics`` calls ``getAcc(..., setTrain=True)``, which leaves the network in
   train mode just before ``getLayMet`` reads the activations);
2. trains an evaluation classifier, Flatten + Linear(F, classes), with SGD (lr 0.01, momentum 0.9, weight decay 0)
   for 20 epochs on the training activations and reports its argmax accuracy on test and training activations
   (``models.getEvCl``, ``models.getEvClassifier``, ``evOpt = ('S', 20, 0.01, 0.0)``);
3. trains a linear decoder, Linear(F, C*H*W) reshaped to the image, with Adam (lr 3e-4, weight decay 1e-5: the
   values hard-coded in ``cladec.trainClaPlane``, which ignores the lr of ``claOpt``) for 20 epochs with an MSE
   loss against the standardised input images (``cladec.LinDecNet``, ``linCla=1``, ``claOpt = ('A', 20, ...)``)
   and reports the decoder's error on the test data.

This module writes that procedure again, from the description above, for a test to compare against: pure torch and
numpy, nothing imported from ``nnphases``.

Where this transcription departs from the released code, and why:

* Mixed precision is ignored. The released code runs every forward pass under ``torch.cuda.amp.autocast`` (float16)
  and steps its optimisers through a ``GradScaler``; it also stores the data sets as float16
  (``dutils.getFullDS``). Here everything is float32 on the CPU, so there is no autocast and no gradient scaling.
* The caller's model is never changed. The released code reads the activations through the live network in train
  mode, so every measurement updates the BatchNorm running statistics with the training *and the test* batches
  (a side effect that later changes the network's eval-mode predictions). Here the activations are read through a
  ``copy.deepcopy`` of ``prefix``; the caller's running statistics and ``training`` flag stay as they were.
* ``read_mode`` is an addition: "train" (batch statistics, as released) or "eval" (running statistics; the released
  code has no such choice).
* Activations are read under ``torch.no_grad()``; the released code tracks gradients and calls ``.detach()`` on the
  output. The numbers are the same.
* All randomness is seeded. The released code shuffles with the global, unseeded RNG and re-initialises the probe
  modules it built once with ``reset_parameters`` (``weight_reset``); here the shuffles come from a local
  ``torch.Generator`` seeded with ``seed``, and the probes are built fresh (PyTorch's default initialisation, which
  is what ``reset_parameters`` draws as well) inside a ``torch.random.fork_rng()`` block seeded with ``seed``, so the
  same seed replays exactly and the caller's global RNG is left untouched.
* The network's inputs and the decoder's targets are separate. In the released code the data are standardised once
  when loaded (``dutils.getFullDS``), and that one standardised tensor is both the network's input and the decoder's
  target. Here ``prefix`` receives ``train_x``/``test_x`` exactly as given (the caller's network takes them as they
  are), and only the decoder's targets are standardised, with the ``mean`` and ``std`` passed in. (Passing
  standardised inputs with ``mean=0, std=1`` reproduces the released arrangement.)
* The reconstruction error is reported as a normalised MSE. The released ``cladec.getMSE`` returns the *sum over
  test batches* of each batch's mean squared error (it never divides by the number of batches), so its value grows
  with the size of the test set. Here ``reconstruction_nmse = mse / v``, with ``mse`` the mean squared error over
  all test samples and input dimensions and ``v`` the mean over input dimensions of the test targets' population
  variance, i.e. ``1 - R^2`` of the decoder on the test data.
* Accuracies are the exact fraction ``correct / total``; the released ``models.getAcc`` returns
  ``round(correct / (total + 1e-6), 5)``.
* Only the three numbers above are computed: the released ``getLayMet`` also reports the evaluation classifier's
  losses, the decoder's running training loss and a transfer-task classifier, none of which is transcribed here.
* Data preparation is the caller's business: the released code zooms (Fashion-)MNIST to 32x32 and standardises it
  (FashionMNIST: mean 0.281, std 0.352, ``dutils.getnorm``) before any of the above.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["released_probes", "classifier_lr", "read_activations"]

#: Settings of the released configuration (``mainMet.py``, the ``cfg`` at the bottom of the file).
CLASSIFIER_LR = 0.01  # evOpt[2]
CLASSIFIER_MOMENTUM = 0.9  # hard-coded in models.getEvClassifier
CLASSIFIER_WEIGHT_DECAY = 0.0  # evOpt[3]
DECODER_LR = 3e-4  # hard-coded in cladec.trainClaPlane (claOpt[2] = 0.003 is not used)
DECODER_WEIGHT_DECAY = 1e-5  # hard-coded in cladec.trainClaPlane (claOpt[3] = 0.0 is not used)


def classifier_lr(epoch: int, epochs: int = 20, lr: float = 0.01) -> float:
    """The evaluation classifier's learning rate during ``epoch`` (0-based) of ``epochs``.

    The released ``getEvClassifier`` multiplies the learning rate by 0.1 at the *end* of every epoch ``e`` for which
    ``(epochs < 16 and e == int(epochs * 3 / 4))`` or ``(e + 1) % (epochs // 3 + epochs // 10 + 2) == 0``.
    For the released ``epochs = 20`` the period is ``20 // 3 + 20 // 10 + 2 = 6 + 2 + 2 = 10`` and the first
    clause never applies, so the rate is multiplied by 0.1 after epoch 9 and after epoch 19: epochs 0-9 train with
    0.01, epochs 10-19 with 0.001, and the drop after epoch 19 (the last one) has no effect.

    The drops are applied by repeated multiplication, as the released code does in place, so the floating-point
    values are the same.
    """
    period = epochs // 3 + epochs // 10 + 2
    rate = lr
    for finished in range(epoch):  # every drop decided at the end of an earlier epoch
        if (epochs < 16 and finished == int(epochs * 3 / 4)) or (finished + 1) % period == 0:
            rate *= 0.1
    return rate


def _batches(n: int, batch: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``: a fresh permutation from ``generator``, or in order if it is None.

    The last batch may be smaller (DataLoader's default ``drop_last=False``, as released).
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    yield from torch.split(order, batch)


def read_activations(module: nn.Module, x: torch.Tensor, *, batch: int = 128, read_mode: str = "train") -> torch.Tensor:
    """The activations ``module(x)``, read in consecutive batches of ``batch`` rows of ``x``, without gradients.

    ``read_mode`` "train" puts the copy in train mode (BatchNorm normalises with each batch's statistics, dropout is
    active: the state of the released network when it reads activations); "eval" uses the running statistics.
    Reads a deep copy, so ``module`` itself (its running statistics and its ``training`` flag) is not changed.
    Shuffling, if wanted, is the caller's: permute ``x`` before calling.
    """
    if read_mode not in ("train", "eval"):
        raise ValueError(f"read_mode must be 'train' or 'eval', not {read_mode!r}")
    reader = copy.deepcopy(module)
    reader.train(read_mode == "train")
    with torch.no_grad():
        return torch.cat([reader(x[idx]) for idx in _batches(len(x), batch, None)])


def _train_classifier(
    train_acts: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    *,
    epochs: int,
    batch: int,
    generator: torch.Generator,
) -> nn.Module:
    """Flatten + Linear(F, num_classes), trained as ``models.getEvClassifier`` trains it."""
    features = train_acts[0].numel()
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))  # default PyTorch init
    optimiser = torch.optim.SGD(
        classifier.parameters(), lr=CLASSIFIER_LR, momentum=CLASSIFIER_MOMENTUM, weight_decay=CLASSIFIER_WEIGHT_DECAY
    )
    loss_fn = nn.CrossEntropyLoss()
    classifier.train()
    for epoch in range(epochs):
        for group in optimiser.param_groups:  # the released in-place drops, computed per epoch
            group["lr"] = classifier_lr(epoch, epochs, CLASSIFIER_LR)
        for idx in _batches(len(train_acts), batch, generator):
            optimiser.zero_grad()
            loss_fn(classifier(train_acts[idx]), train_y[idx]).backward()
            optimiser.step()
    classifier.eval()
    return classifier


def _accuracy(classifier: nn.Module, acts: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Fraction of rows whose argmax logit is the label (the classifier is in eval mode)."""
    correct = 0
    with torch.no_grad():
        for idx in _batches(len(acts), batch, None):
            correct += int((classifier(acts[idx]).argmax(dim=1) == y[idx]).sum())
    return correct / len(acts)


def _train_decoder(
    train_acts: torch.Tensor,
    train_targets: torch.Tensor,
    *,
    epochs: int,
    batch: int,
    generator: torch.Generator,
) -> nn.Module:
    """One Linear from the flattened activations to the flattened image, reshaped (``cladec.LinDecNet``), trained
    as ``cladec.trainClaPlane`` trains it: Adam, lr 3e-4, weight decay 1e-5, MSE, no learning-rate decay (its
    ``decay`` call only acts on SGD settings, and ``claOpt`` names Adam)."""
    image_shape = tuple(train_targets.shape[1:])
    decoder = nn.Sequential(
        nn.Flatten(),
        nn.Linear(train_acts[0].numel(), train_targets[0].numel()),  # default PyTorch init
        nn.Unflatten(1, image_shape),
    )
    optimiser = torch.optim.Adam(decoder.parameters(), lr=DECODER_LR, weight_decay=DECODER_WEIGHT_DECAY)
    loss_fn = nn.MSELoss()
    decoder.train()
    for _ in range(epochs):
        for idx in _batches(len(train_acts), batch, generator):
            optimiser.zero_grad()
            loss_fn(decoder(train_acts[idx]), train_targets[idx]).backward()
            optimiser.step()
    decoder.eval()
    return decoder


def _reconstruction_nmse(decoder: nn.Module, acts: torch.Tensor, targets: torch.Tensor, batch: int) -> float:
    """``1 - R^2``: the MSE over all samples and dimensions over the mean per-dimension (population) variance."""
    with torch.no_grad():
        predicted = torch.cat([decoder(acts[idx]) for idx in _batches(len(acts), batch, None)])
        flat_targets = targets.reshape(len(targets), -1).double()
        mse = (predicted.reshape(len(predicted), -1).double() - flat_targets).pow(2).mean()
        variance = flat_targets.var(dim=0, unbiased=False).mean()
    return float(mse / variance)


def released_probes(
    prefix: torch.nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    num_classes: int,
    mean: float,
    std: float,
    seed: int = 0,
    batch: int = 128,
    classifier_epochs: int = 20,
    decoder_epochs: int = 20,
    read_mode: str = "train",
) -> dict[str, float]:
    """Measure one layer as the released code does at one measurement.

    ``prefix`` is the network up to and including the measured layer (``prefix(x)`` gives the activations
    ``[B, ...]``); ``train_x``/``test_x`` are its raw inputs ``[N, C, H, W]`` (float32), ``train_y``/``test_y``
    the int64 labels. ``mean`` and ``std`` standardise the decoder's targets only. Returns ``test_accuracy``,
    ``train_accuracy`` (of the evaluation classifier) and ``reconstruction_nmse`` (of the decoder, on the test data).
    """
    devices = [train_x.device] if train_x.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)  # initialisation (and dropout while reading)
        if train_x.is_cuda:
            with torch.cuda.device(train_x.device):
                torch.cuda.manual_seed(seed)
        shuffles = torch.Generator(device="cpu").manual_seed(seed)  # every shuffle

        # 1. Activations. The training data come out of a shuffled loader, so they are read in shuffled batches (the
        # batch composition matters in train mode); the training set is kept in that order from here on.
        order = torch.randperm(len(train_x), generator=shuffles).to(train_x.device)
        train_x, train_y = train_x[order], train_y[order]
        train_acts = read_activations(prefix, train_x, batch=batch, read_mode=read_mode).float()
        test_acts = read_activations(prefix, test_x, batch=batch, read_mode=read_mode).float()

        # 2. Evaluation classifier.
        classifier = _train_classifier(
            train_acts, train_y, num_classes, epochs=classifier_epochs, batch=batch, generator=shuffles
        )
        test_accuracy = _accuracy(classifier, test_acts, test_y, batch)
        train_accuracy = _accuracy(classifier, train_acts, train_y, batch)

        # 3. Decoder, against the standardised inputs.
        train_targets = (train_x.float() - mean) / std
        test_targets = (test_x.float() - mean) / std
        decoder = _train_decoder(train_acts, train_targets, epochs=decoder_epochs, batch=batch, generator=shuffles)
        nmse = _reconstruction_nmse(decoder, test_acts, test_targets, batch)

    return {"test_accuracy": test_accuracy, "train_accuracy": train_accuracy, "reconstruction_nmse": nmse}
