"""The Recorder: sample-set measurements at scheduled steps of anyone's training loop.

Built from a model, an evaluation set, the number of classes, a schedule and an
output folder; call :meth:`Recorder.maybe_measure` after every optimisation step
and :meth:`Recorder.close` at the end. A measurement is one pass over the
evaluation set in batches: every ReLU site's output goes straight into
:func:`nnphases.kernels.class_counts` (and :func:`~nnphases.kernels.pack_masks`
when masks are kept) while the batch is alive, so memory is bounded by one batch
whatever the set's size; the same pass gives the validation loss and accuracy.
Counts are summed as int64 on the model's device and written, with their
metrics, as one atomic checkpoint of a :class:`~nnphases.store.RunDir`.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import warnings

from . import kernels
from .capture import ReluCapture, find_sites
from .schedule import Schedule
from .store import RunDir


# The probe method each capture pass feeds: fit on training data, score it, then score the test data.
_PROBE_UPDATE = {"fit": "update_train", "score": "score_train", "val": "update_test"}
_PROBE_MODES = {"fast": ("fast",), "paper": ("paper",), "both": ("fast", "paper")}


class Recorder:
    """Measures the ReLU sample sets of ``model`` on ``x``/``y`` at the steps of ``schedule``.

    ``loss_fn(logits, y) -> scalar`` gives the validation loss (mean over the set);
    ``train_eval`` (optional ``(x, y)``) adds train loss/accuracy on that subset at each
    measurement. ``keep_masks`` stores bit-packed activation masks; ``per_channel``
    counts conv channels instead of channel-positions (see :class:`ReluCapture`).
    ``background_writes`` computes the metrics and writes each checkpoint on one background thread while
    training goes on (in order, atomically; the resume state is copied to the host first): on a GPU the
    writing, not the measuring, is the cost. A write error is raised at the next measurement or at close.
    ``probes`` (True for every site, or a list of site names) fits probes (class read-out and input
    reconstruction, :mod:`nnphases.probes`) on ``train_eval`` at each measurement and scores them in the same
    validation pass that feeds the counts. ``probe_mode``: ``"fast"`` (closed-form ridge; its train accuracy
    comes from the training features kept in memory, or from a second pass over ``train_eval`` when they would
    take more than a quarter of the free memory), ``"paper"`` (the source's trained classifier and decoder, on the
    activations of ``train_eval`` held in memory; checked against the free memory before anything runs) or
    ``"both"`` (rows of each mode). ``probe_features``: fast mode's feature cap (wider layers are reduced).
    ``paper_layers``: with ``probe_mode="both"``, the sites that also get paper-mode probes (default: all the
    probed sites; paper mode costs far more). ``probe_warm_start``: paper-mode models start from the previous
    measurement's. ``paper_options``: keywords for :class:`~nnphases.probes.PaperProbe` (epochs, learning
    rates, ``channels``...); ``fast_options``: keywords for :class:`~nnphases.probes.RidgeProbe`
    (``decoder="random-features"``, ``decoder_width``...).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, schedule: Schedule,
                 out: Any, *, seed: int = 0, batch_size: int = 1000, loss_fn: Callable | None = None,
                 train_eval: tuple[torch.Tensor, torch.Tensor] | None = None, keep_masks: bool = False,
                 per_channel: bool = False, sites: list[str] | None = None, backend: str | None = None,
                 config: dict | None = None, background_writes: bool = True,
                 probes: bool | list[str] = False, probe_mode: str = "fast", probe_features: int = 2048,
                 probe_warm_start: bool = False, paper_options: dict | None = None,
                 paper_layers: list[str] | None = None, fast_options: dict | None = None) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"y has {y.shape[0]} labels but x has {x.shape[0]} samples")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model, self.x, self.y = model, x, y.to(torch.int64)
        self.num_classes = kernels._validate.num_classes_value(num_classes)
        kernels._validate.label_range(self.y, self.num_classes)
        sizes = torch.bincount(self.y.cpu(), minlength=self.num_classes)
        missing = (sizes == 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"the evaluation set has no samples of classes {missing}; every class needs samples "
                             "for the class-conditional metrics (use a stratified split)")
        self.class_sizes = sizes.numpy().astype(np.int64)
        self.schedule, self.seed, self.batch_size = schedule, seed, batch_size
        self.loss_fn = loss_fn or nn.functional.cross_entropy
        self.train_eval, self.keep_masks = train_eval, keep_masks
        self.per_channel, self.sites, self.backend = per_channel, sites, backend
        self.run = RunDir(out)
        self.run.cleanup()
        if config is not None:
            self.run.write_config(config)
        self.done_steps = set(self.run.completed_steps())
        self._capture: ReluCapture | None = None  # built once: tracing the model costs more than a measurement
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnphases-writer") \
            if background_writes else None
        self._pending: Future | None = None
        if probes and train_eval is None:
            raise ValueError("probes need training data: pass train_eval=(x, y)")
        if probe_mode not in _PROBE_MODES:
            raise ValueError(f"probe_mode must be one of {list(_PROBE_MODES)}, got {probe_mode!r}")
        self.probe_modes = _PROBE_MODES[probe_mode]
        self.probe_features, self.probe_warm_start = probe_features, probe_warm_start
        self.paper_options = dict(paper_options or {})
        self.fast_options = dict(fast_options or {})
        self._phase = "val"
        self._probes: dict[str, list[tuple[str, Any]]] = {}  # site -> [(mode, probe)]
        self._probe_errors: dict[tuple[str, str], str] = {}
        self._last_paper: dict[str, dict] = {}  # site -> the previous measurement's paper probe state (warm start)
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.probe_layers: list[str] = self._probe_sites(probes, paper_layers) if probes else []
        if self.probe_layers:  # the probes' own checks of their options, before any training
            from .probes import PaperProbe, RidgeProbe

            if "fast" in self.probe_modes:
                RidgeProbe(1, self.num_classes, 1, **self.fast_options)
            if "paper" in self.probe_modes:
                PaperProbe((1,), self.num_classes, (1,), **self.paper_options)
        self._counts: dict[str, torch.Tensor] = {}
        self._masks: dict[str, list] = {}

    def _on_relu(self, name: str, acts: torch.Tensor) -> None:
        for _, probe in self._probes.get(name, ()):  # probes see every pass; the counts only the validation pass
            update = getattr(probe, _PROBE_UPDATE[self._phase])
            update(acts.reshape(acts.shape[0], *self._shapes[name]), self._labels, self._inputs)
        if self._phase != "val":
            return
        # Labels were validated once in __init__; a NaN or inf in any ReLU output reaches the logits, and a
        # non-finite loss stops the measurement before anything is written. So the kernels skip their own
        # checks, which on a GPU would each cost a synchronisation per site and batch.
        c = kernels.class_counts(acts, self._labels, self.num_classes, backend=self.backend, check_finite=False,
                                 check_labels=False)
        self._counts[name] = self._counts[name] + c if name in self._counts else c
        if self.keep_masks:
            packed = kernels.pack_masks(acts, backend=self.backend, check_finite=False)
            self._masks.setdefault(name, []).append((packed, acts.shape[0]))

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def maybe_measure(self, step: int, state: Callable[[], dict] | None = None) -> bool:
        """Measures if ``step`` is scheduled and not yet stored; ``state()`` gives the resume state to keep."""
        if step not in self.schedule or step in self.done_steps:
            return False
        self.measure(step, state=state() if state else None)
        return True

    @torch.no_grad()
    def _pass(self, x: torch.Tensor, y: torch.Tensor, capture: ReluCapture | None) -> tuple[float, float]:
        dev = self.device
        loss_sum, correct = 0.0, 0
        for s in range(0, x.shape[0], self.batch_size):
            xb = x[s:s + self.batch_size].to(dev, non_blocking=True)
            yb = y[s:s + self.batch_size].to(dev, non_blocking=True)
            self._labels, self._inputs = yb, xb
            logits = capture(xb) if capture is not None else self.model(xb)
            loss_sum += float(self.loss_fn(logits, yb)) * xb.shape[0]
            correct += int((logits.argmax(dim=1) == yb).sum())
        return loss_sum / max(1, x.shape[0]), correct / max(1, x.shape[0])

    def measure(self, step: int, state: dict | None = None) -> None:
        """One measurement at ``step``: counts, metrics and stats, written as one checkpoint."""
        self._counts, self._masks = {}, {}
        counts, masks = self._counts, self._masks
        was_training = self.model.training
        self.model.eval()
        try:
            if self._capture is None:
                self._capture = ReluCapture(self.model, self._on_relu, per_channel=self.per_channel, sites=self.sites)
            probe_rows: list[dict] = []
            with self._capture as cap:
                train_stats = None
                if self.probe_layers:
                    self._new_probes()
                    self._phase = "fit"
                    train_stats = self._pass(*self.train_eval, cap)
                    self._fit_probes()
                    if any(not getattr(p, "scores_in_fit", False) for ps in self._probes.values() for _, p in ps):
                        self._phase = "score"
                        self._pass(*self.train_eval, cap)
                self._phase = "val"
                val_loss, val_acc = self._pass(self.x, self.y, cap)
                probe_rows = self._probe_rows()
            stats = [{"split": "val", "loss": val_loss, "accuracy": val_acc}]
            if self.train_eval is not None:
                tr_loss, tr_acc = train_stats or self._pass(*self.train_eval, None)
                stats.append({"split": "train", "loss": tr_loss, "accuracy": tr_acc})
        finally:
            self.model.train(was_training)
        if not all(np.isfinite(s["loss"]) for s in stats):
            self.flush()  # every measurement taken before the divergence is written
            raise FloatingPointError(f"loss is not finite at step {step} ({stats}); the run diverged. "
                                     f"Checkpoints up to step {max(self.done_steps, default='none')} are intact")
        if state is not None and self._last_paper:
            state = {**state, "recorder": self.state_dict()}
        job = dict(step=step, epoch=self.schedule.epoch(step), seed=self.seed,
                   counts={k: v.cpu().numpy() for k, v in counts.items()}, class_sizes=self.class_sizes,
                   stats=stats,
                   masks={k: _join_masks(v, self.x.shape[0]) for k, v in masks.items()} if self.keep_masks else None,
                   state=_to_host(state) if state is not None else None, probes=probe_rows or None)
        self.flush()
        if self._writer is None:
            self._write(job)
        else:
            self._pending = self._writer.submit(self._write, job)

    def _probe_sites(self, probes: bool | list[str], paper_layers: list[str] | None) -> list[str]:
        """The sites to probe, checked against the model (and, for paper mode, against the free memory)."""
        self._shapes = {site.name: tuple(site.shape) for site in find_sites(self.model, self.x[:2].to(self.device))}
        names = list(self._shapes) if probes is True else list(probes)
        unknown = [n for n in names if n not in self._shapes]
        if unknown:
            raise ValueError(f"probes: no ReLU site named {unknown}; the model's sites: {list(self._shapes)}")
        self.paper_layers = list(names) if paper_layers is None else list(paper_layers)
        if paper_layers is not None:
            if self.probe_modes != ("fast", "paper"):
                raise ValueError(f"paper_layers={paper_layers!r} needs probe_mode='both'")
            outside = [n for n in paper_layers if n not in names]
            if outside:
                raise ValueError(f"paper_layers: {outside} are not among the probed sites {names}")
        # Fast probes keep their reduced training features to score the train accuracy without a second pass
        # over train_eval, when those take at most a quarter of the free memory.
        n = self.train_eval[0].shape[0]  # type: ignore[index]
        kept = 8 * n * sum(min(int(np.prod(self._shapes[s])), self.probe_features) + 1 for s in names)
        free = _free_memory(self.device)
        self._keep_features = free is not None and kept <= free // 4
        if "paper" in self.probe_modes:
            per_sample = sum(int(np.prod(self._shapes[s])) + int(np.prod(self.x.shape[1:]))
                             for s in self.paper_layers)
            need = 4 * n * per_sample
            if free is not None and need > 0.8 * free:
                raise ValueError(
                    f"paper-mode probes keep the activations of {n} training samples at sites {self.paper_layers} "
                    f"in memory: {need / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB is free on {self.device}; probe fewer "
                    "layers (probes=[...]), score fewer training samples (train_eval) or use probe_mode='fast'")
        return names

    def _new_probes(self) -> None:
        from .probes import PaperProbe, RidgeProbe

        input_dim = int(np.prod(self.x.shape[1:]))
        self._probes, self._probe_errors = {}, {}
        for n in self.probe_layers:
            shape = self._shapes[n]
            self._probes[n] = []
            if "fast" in self.probe_modes:
                self._probes[n].append(("fast", RidgeProbe(int(np.prod(shape)), self.num_classes, input_dim,
                                                           max_features=self.probe_features, device=self.device,
                                                           act_shape=shape, keep_features=self._keep_features,
                                                           **self.fast_options)))
            if "paper" in self.probe_modes and n in self.paper_layers:
                prev = self._last_paper.get(n) if self.probe_warm_start else None
                self._probes[n].append(("paper", PaperProbe(shape, self.num_classes, tuple(self.x.shape[1:]),
                                                            seed=self.seed, device=self.device, warm_start=prev,
                                                            **self.paper_options)))

    def _fit_probes(self) -> None:
        from .probes import ProbeError

        for name, probes in self._probes.items():
            kept = []
            for mode, probe in probes:
                try:
                    probe.fit()
                except ProbeError as e:  # say so, and store NaN rather than a meaningless number
                    warnings.warn(f"{mode}-mode probe for layer {name!r} cannot be fitted: {e}", stacklevel=3)
                    self._probe_errors[(name, mode)] = str(e)
                    continue
                kept.append((mode, probe))
                if mode == "paper" and self.probe_warm_start:
                    self._last_paper[name] = probe.state()
            self._probes[name] = kept

    def _probe_rows(self) -> list[dict]:
        rows = []
        for name, probes in self._probes.items():
            for mode, probe in probes:
                r = probe.result()
                rows.append({"layer": name, "mode": mode, **{k: _num(r.get(k)) for k in (
                    "train_accuracy", "test_accuracy", "reconstruction_mse", "reconstruction_nmse", "ridge")},
                    "features": int(r["features"]), "reduction": str(r["reduction"]),
                    "n_train": int(r["n_train"]), "n_test": int(r["n_test"]), "decoder": str(r["decoder"])})
        for (name, mode), err in self._probe_errors.items():
            rows.append({"layer": name, "mode": mode, "train_accuracy": float("nan"), "test_accuracy": float("nan"),
                         "reconstruction_mse": float("nan"), "reconstruction_nmse": float("nan"),
                         "ridge": float("nan"), "features": 0, "reduction": "failed: " + err[:200], "n_train": 0,
                         "n_test": 0, "decoder": ""})
        return rows

    def state_dict(self) -> dict:
        """What a resumed run needs of the Recorder: the paper probes' models when they warm-start."""
        return {"paper_probes": self._last_paper}

    def load_state_dict(self, state: dict) -> None:
        self._last_paper = dict(state.get("paper_probes", {}))

    def _write(self, job: dict) -> None:
        step = job.pop("step")
        self.run.write_checkpoint(step, job.pop("epoch"), **job)
        self.done_steps.add(step)

    def flush(self) -> None:
        """Waits for the checkpoint being written, if any, and raises its error."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        """Waits for the last checkpoint, then marks the run complete (written last)."""
        self.flush()
        if self._writer is not None:
            self._writer.shutdown()
        self.run.mark_done()


def _free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (MemAvailable on a Linux host), or None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _num(v: Any) -> float:
    """A probe result as a float; None (undefined, e.g. constant test inputs) becomes NaN."""
    return float("nan") if v is None else float(v)


def _to_host(obj: Any) -> Any:
    """A copy of a (nested) state on the host: tensors cloned to the CPU, so training may go on."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_host(v) for v in obj)
    return obj


def _join_masks(parts: list, samples: int) -> np.ndarray:
    """Per-batch packed masks joined along samples into pack_masks' layout for the whole set (each batch's
    padding bits dropped, the whole row padded to 64-bit words)."""
    rows = [np.unpackbits(np.asarray(p.cpu() if isinstance(p, torch.Tensor) else p), axis=1,
                          bitorder="little")[:, :n] for p, n in parts]
    bits = np.concatenate(rows, axis=1)
    padded = np.zeros((bits.shape[0], -(-samples // 64) * 64), dtype=np.uint8)
    padded[:, :bits.shape[1]] = bits
    return np.packbits(padded, axis=1, bitorder="little")
