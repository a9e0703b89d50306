"""The Recorder: runs the passes its measures ask for at the scheduled steps of anyone's training loop.

One class of about 600 lines: its methods are the steps of a measurement (binding, passes, reduction across
processes, setup checks, the background write), which share the Recorder's state; the plan, capture, stream and
reduction helpers live in their own modules.

Built from a model, evaluation data (``(x, y)`` tensors, or any re-iterable of
``(x, y)`` batches such as a DataLoader), a schedule, an output folder and a
list of :mod:`measures <nnphases.recording.measures>` (default: sample-set counts and the
evaluation loss and accuracy); call :meth:`Recorder.maybe_measure` after every
optimisation step and :meth:`Recorder.close` at the end. The measures are bound
to the model's ReLU sites once, when the Recorder is built, so every check
across options, the memory and disk plan (:attr:`Recorder.plan`) and its limits
happen before any training. A measurement runs at most three passes in this
order: over the training subset (``train``: probes are fitted, the train loss
is summed), again over it when a probe must score what it fitted
(``rescore``), and over the evaluation data (``eval``). Each site's output
goes to the measures that asked for it while its batch is alive, so memory is
bounded by one batch whatever the data's size; the measures' results are
written as one atomic checkpoint of a :class:`~nnphases.store.RunDir`, on a
background thread by default.
"""

from __future__ import annotations

import contextlib
import functools
import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..options import check, check_int, option
from ..store import RunDir, RunLock, atomic_write_bytes, output_folder
from .capture import SiteTap, find_sites
from .distributed import all_reduce_sums, broadcast_object, reduce_device, unwrap, world
from .measures import PASSES, Measure, Output, Pass, base_pass, default_measures
from .measures.masks import Masks
from .measures.sample_sets import SampleSets
from .norm import batch_norm_layers
from .norm import batch_statistics as batch_statistics_of
from .plan import Plan, bind_measures, make_plan, resume_state_bytes
from .schedule import MAX_STEP, Schedule
from .stream import Batch, Stream, check_class_sizes


@dataclass(frozen=True)
class RecorderOptions:
    batch_size: int = option(1000, min=1, help="evaluation batch size when the data are (x, y) tensors")
    background_writes: bool = option(True, help="write checkpoints on a background thread while training goes on")
    check_plan: bool = option(True, help="refuse a run whose counts or checkpoints cannot fit before training")
    replay: bool = option(
        False,
        help="training restarts from scratch into a folder with checkpoints and reproduces them exactly (seeded, "
        "deterministic): allow it (otherwise refused, so that two runs never mix)",
    )

    def __post_init__(self) -> None:
        check(self)


def _releases_lock_on_failure(init: Callable[..., None]) -> Callable[..., None]:
    """A Recorder that fails to build lets go of its folder's lock at once, not whenever it is garbage-collected
    (a traceback keeps it alive)."""

    @functools.wraps(init)
    def wrapper(self: Recorder, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    return wrapper


class Recorder:
    """Measures ``model`` on ``eval_data`` at the steps of ``schedule`` into the run folder ``out``.

    ``measures``: :class:`~nnphases.recording.measures.Measure` instances (default
    :func:`~nnphases.recording.measures.default_measures`; a :class:`SampleSets` is
    required, it defines the checkpoint). ``train_data``: the training subset
    the probes are fitted on and the train loss is computed over (same forms as
    ``eval_data``). ``num_classes``: default the width of the model's output.
    ``class_sizes``: samples per class of the evaluation data when known (a
    stream's are counted in its first pass and checked against these).
    ``config``: a JSON-ready dict stored as the run's ``config.json``.
    ``options``: :class:`RecorderOptions`. A folder belongs to one setup: a new
    Recorder on a folder holding another setup's measurements, or a finished
    run, is refused (start over with another ``out``, or delete the folder).
    The writing process holds the folder's lock (:meth:`RunDir.lock`) from
    construction to :meth:`close`: a Recorder of another process on the same
    folder is refused (RunLocked) meanwhile.
    """

    _lock: RunLock | None = None  # the writer lock of the folder, held from _claim_folder to close()

    @_releases_lock_on_failure
    def __init__(
        self,
        model: nn.Module,
        eval_data: Any,
        schedule: Schedule,
        out: Any,
        measures: Sequence[Measure] | None = None,
        *,
        train_data: Any = None,
        num_classes: int | None = None,
        class_sizes: Any = None,
        seed: int = 0,
        config: dict | None = None,
        options: RecorderOptions | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a nnphases.recording.schedule.Schedule, got {type(schedule).__name__}")
        self.options = options if options is not None else RecorderOptions()
        if not isinstance(self.options, RecorderOptions):
            raise TypeError(f"options must be RecorderOptions, got {type(self.options).__name__}")
        self.seed = check_int(seed, "seed", 0, MAX_STEP)
        self.rank, self.world = world()
        # A DDP, DataParallel or compiled wrapper shares its parameters with the module it wraps: that module is
        # traced and measured, under the site names of a single process.
        self.model, self.schedule = unwrap(model), schedule
        # A single measure, a string or a class would otherwise be iterated over and fail on its parts.
        if measures is not None and (
            isinstance(measures, (Measure, str, bytes, type)) or not isinstance(measures, Iterable)
        ):
            raise TypeError(
                f"measures must be a list of measures, got {type(measures).__name__}"
                + ("" if not isinstance(measures, (str, bytes)) else f" {measures!r}")
            )
        self.measures = list(default_measures() if measures is None else measures)
        self._check_measures()
        if config is not None:
            if not isinstance(config, dict):
                raise TypeError(f"config must be a dict, got {type(config).__name__}")
            try:
                json.dumps(config)
            except (TypeError, ValueError) as e:
                raise TypeError(f"config must be JSON-ready (dicts, lists, strings, numbers): {e}") from None
        # Checked before the data are read and the model traced: a path that cannot be written fails at once.
        out = output_folder(out, "out")
        shard = (self.rank, self.world)
        self.eval_data = Stream(eval_data, "eval_data", self.options.batch_size, shard)
        self.train_data = (
            Stream(train_data, "train_data", self.options.batch_size, shard) if train_data is not None else None
        )
        if any(m.name == "masks" for m in self.measures):
            self.eval_data.refuse_shuffling("storing masks (bit s is sample s)")
        self.run = RunDir(out)
        if self.run.done:
            raise ValueError(
                f"out {str(self.run.path)!r} holds a finished run (its DONE marker exists); choose "
                "another out, or delete that folder to start over"
            )
        self._setup_model(num_classes, class_sizes)
        if self.rank == 0:  # one process writes; the others measure their shards and add their sums
            self._claim_folder(config)
        self.done_steps = set(self.run.completed_steps()) if self.rank == 0 else set()
        if self.world > 1:
            self.done_steps = set(broadcast_object(sorted(self.done_steps)))
        self._taken: set[int] = set(self.done_steps)
        self._first_step: int | None = None  # the first step this Recorder is asked about
        self._step = 0  # the step being measured
        self._first_digest = 0  # of the current pass's first batch (torch.distributed only)
        self._writer = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnphases-writer")
            if self.options.background_writes
            else None
        )
        self._pending: Future | None = None
        self._closed = False
        self._check_plan()

    # -- binding -------------------------------------------------------------------------------

    def _check_measures(self) -> None:
        names = []
        for i, m in enumerate(self.measures):
            if not isinstance(m, Measure):
                raise TypeError(f"measures[{i}] must be a nnphases.recording.measures.Measure, got {type(m).__name__}")
            names.append(m.name)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"measures: {dup} given more than once; one measure of each kind")
        if not any(isinstance(m, SampleSets) for m in self.measures):
            raise ValueError(f"measures must include SampleSets (its counts define a checkpoint), got {names}")

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _dtype(self) -> torch.dtype | None:
        return next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)

    def _setup_model(self, num_classes: int | None, class_sizes: Any) -> None:
        """Trace the model, learn its sites and output width, and bind every measure (all checks happen here)."""
        self._signature = _structure(self.model)
        dev, dtype = self.device, self._dtype()
        example = self.eval_data.example()
        if dtype is not None and example.is_floating_point() and example.dtype != dtype:
            raise TypeError(
                f"eval_data: x has dtype {example.dtype} but the model computes in {dtype}; convert the "
                "inputs (e.g. .float()) so nothing is cast silently"
            )
        self.input_shape = tuple(example.shape[1:])
        was = self.model.training
        try:
            sites = find_sites(self.model, example.to(dev))
            self.model.eval()
            with torch.no_grad():
                logits = self.model(example.to(dev))
        except RuntimeError as e:
            if "out of memory" in str(e).lower():
                raise
            # Inputs of a shape or dtype the model does not take fail deep in torch with a message that does not
            # say which argument is at fault.
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(
                f"eval_data: the model cannot take x of per-sample shape {tuple(example.shape[1:])} and "
                f"dtype {example.dtype}: {first}"
            ) from e
        finally:
            self.model.train(was)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            what = type(logits).__name__ if not isinstance(logits, torch.Tensor) else f"shape {tuple(logits.shape)}"
            raise TypeError(
                f"model(x) must return logits, a [batch, classes] tensor; it returns {what} (wrap the "
                "model to return the logits)"
            )
        width = int(logits.shape[1])
        if num_classes is None:
            num_classes = width
        num_classes = check_int(num_classes, "num_classes", 2, MAX_STEP)
        if num_classes != width:
            raise ValueError(f"num_classes is {num_classes} but the model's output has {width} columns")
        self.num_classes = num_classes
        known = self.eval_data.class_sizes(num_classes)
        if class_sizes is not None:
            given = np.asarray(class_sizes)
            if given.shape != (num_classes,) or given.dtype.kind not in "iu":
                raise ValueError(f"class_sizes must be {num_classes} integers, got {class_sizes!r:.80}")
            if (negative := np.flatnonzero(given < 0)).size:
                c = int(negative[0])
                raise ValueError(f"class_sizes[{c}] = {int(given[c])} is negative")
            if known is not None and not np.array_equal(given, known):
                raise ValueError(f"class_sizes {given.tolist()} differ from eval_data's labels {known.tolist()}")
            known = given.astype(np.int64)
        if known is not None:
            check_class_sizes(known, "the evaluation set")
        self.class_sizes = known
        if self.train_data is not None:
            self.train_data.class_sizes(num_classes)  # label checks of in-memory training data, up front
        self.sites = {s.name: tuple(s.shape) for s in sites}
        bind_measures(
            self.measures,
            self.sites,
            num_classes=num_classes,
            input_shape=self.input_shape,
            device=dev,
            eval_samples=self.eval_data.samples,
            train_samples=self.train_data.samples if self.train_data is not None else None,
            has_train=self.train_data is not None,
            seed=self.seed,
            world=self.world,
            batch_norm=bool(batch_norm_layers(self.model)),
        )
        self._tap: SiteTap | None = None  # traced at the first measurement: tracing costs more than a measurement

    def _claim_folder(self, config: dict | None) -> None:
        """A folder belongs to one setup: the measures, sites and classes are recorded with the first Recorder."""
        self._lock = self.run.lock()  # one writer per folder: RunLocked while another process writes it
        self.run.cleanup()
        if config is not None:
            self.run.write_config(config)
        setup = {
            "measures": {m.name: m.describe() for m in self.measures},
            "num_classes": self.num_classes,
            "sites": {k: list(v) for k, v in self.sites.items()},
            "seed": self.seed,
        }
        path = self.run.path / "measures.json"
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(
                    f"{path} is damaged ({e}); delete it only if the run's checkpoints are yours"
                ) from None
            old = _with_new_defaults(old, self.measures)
            if old != json.loads(json.dumps(setup)):
                diff = sorted(k for k in setup if old.get(k) != json.loads(json.dumps(setup[k])))
                raise ValueError(
                    f"out {str(self.run.path)!r} holds measurements of another setup ({', '.join(diff)} "
                    "differ); choose another out, or delete that folder to start over"
                )
        else:
            atomic_write_bytes(path, (json.dumps(setup, indent=2, sort_keys=True) + "\n").encode())
        self._check_stored_sizes(self.run.completed_steps())

    def _check_stored_sizes(self, steps: Iterable[int]) -> None:
        """The class sizes of the folder's newest checkpoint must be this evaluation set's (known by now)."""
        steps = sorted(steps)
        if not steps or self.class_sizes is None or self.rank != 0:
            return
        _, stored = self.run.read_counts(steps[-1])
        if not np.array_equal(stored, self.class_sizes):
            raise ValueError(
                f"out {str(self.run.path)!r} was measured on another evaluation set (class sizes "
                f"{stored.tolist()}, now {self.class_sizes.tolist()}); choose another out"
            )

    def _check_plan(self) -> None:
        """Make the plan, and refuse a run that cannot fit (unless told not to check)."""
        self.plan = self._make_plan()
        if self.options.check_plan and self.plan.problems():
            raise ValueError("the run cannot fit: " + "; ".join(self.plan.problems()))

    def _make_plan(self) -> Plan:
        n = self.class_sizes.sum() if self.class_sizes is not None else self.eval_data.samples
        n = int(n) if n is not None else None
        left = sum(1 for s in self.schedule.steps if s not in self.done_steps)
        return make_plan(
            self.measures,
            num_classes=self.num_classes,
            eval_samples=n,
            checkpoints=left,
            device=self.device,
            state_bytes=resume_state_bytes(self.model),
            out=self.run.path,
        )

    # -- measuring -----------------------------------------------------------------------------

    def maybe_measure(self, step: int, state: Callable[[], dict] | None = None) -> bool:
        """Measures if ``step`` is scheduled and not yet measured (a repeated step is a no-op, as under gradient
        accumulation); ``state()`` gives the resume state to keep. Returns whether it measured."""
        step = check_int(step, "step", 0, MAX_STEP)
        self._check_open()
        if self._first_step is None:
            self._first_step = step
            self._check_continues(step)
        if step not in self.schedule or step in self._taken:
            return False
        self.measure(step, state=state() if state else None)
        return True

    def _check_continues(self, step: int) -> None:
        """Training that starts at its beginning (first asked about step 0, or 1 when asked after each optimizer
        step) into a folder with later checkpoints would keep the earlier run's checkpoints and add its own after
        them: one run's numbers under another's. A resume from an older framework checkpoint (a later first step)
        re-trains steps the folder holds and is left to the framework's determinism, as it always was."""
        last = max(self.done_steps, default=None)
        bad = last is not None and step <= 1 and step < last and not self.options.replay and not self._resumable(step)
        if self.world > 1:
            bad = bool(broadcast_object(bad))  # rank 0 sees the files; every rank stops alike
        if bad:
            raise ValueError(
                f"out {str(self.run.path)!r} holds checkpoints up to step {last}, but training is at step {step}: "
                "a run started afresh (or from an older state) would mix two runs' measurements; resume from the "
                f"folder's newest state (RunDir.latest_state), or choose another out"
            )

    def _resumable(self, step: int) -> bool:
        """Whether training at ``step`` continued from a resume state this folder keeps (the step itself or the one
        before: loops ask after their optimizer step)."""
        if self.rank != 0:
            return True
        kept = [s for s in (step, step - 1) if s in self.done_steps]
        return any((self.run.checkpoint_path(s) / "state.pt").is_file() for s in kept)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"this Recorder is closed (the run in {str(self.run.path)!r} is complete); build a "
                "new one with another out to measure more"
            )

    def _refresh(self) -> None:
        """Re-trace and re-bind when the model's modules or parameters were replaced (a new head, fine-tuning):
        a traced graph keeps the modules it was built from."""
        sig = _structure(self.model)
        if sig != self._signature:
            self._setup_model(self.num_classes, self.class_sizes)
        if self._tap is None:
            self._tap = SiteTap(self.model, self._on_site)

    def _on_site(self, name: str, z: torch.Tensor) -> None:
        users = self._users.get(name, ())
        pair = self._fused.get(name)
        if pair is not None and z.device.type == "cpu":
            # Counts and masks of the same nodes from one read of the activations (count_and_pack).
            counts, masks = pair
            masks.add_packed(name, counts.update_and_pack(self._pass_name, name, z, self._batch), self._batch.size)
            users = [m for m in users if m is not counts and m is not masks]
        for m in users:
            m.update(self._pass_name, name, z, self._batch)

    def _fusable(self) -> dict[str, tuple[SampleSets, Masks]]:
        """Sites where a SampleSets and a Masks measure read the same node view with the same backend."""
        out = {}
        for site, users in self._users.items():
            counts = [m for m in users if isinstance(m, SampleSets)]
            masks = [m for m in users if isinstance(m, Masks)]
            if len(counts) == 1 and len(masks) == 1:
                c, k = counts[0].options, masks[0].options
                if c.per_channel == k.per_channel and c.backend == k.backend:
                    out[site] = (counts[0], masks[0])
        return out

    def measure(self, step: int, state: dict | None = None) -> None:
        """One measurement at ``step``: every measure's passes, written as one checkpoint."""
        step = check_int(step, "step", 0, MAX_STEP)
        self._check_open()
        if step in self._taken:
            raise ValueError(f"step {step} is already measured in {str(self.run.path)!r}")
        self._refresh()
        ckpt = self.run.begin_checkpoint(step) if self.rank == 0 else None
        self._step = step
        was_training = self.model.training
        self.model.eval()
        try:
            for m in self.measures:
                m.begin(ckpt)
            for p in PASSES:
                wanted = {m: m.passes().get(p) for m in self.measures}
                users = [m for m, sites in wanted.items() if sites is not None]
                if users:
                    self._run_pass(p, {m: wanted[m] for m in users})  # type: ignore[misc]
            outputs = [m.compute() for m in self.measures]
        except BaseException as e:
            for m in self.measures:
                m.abort()
            if ckpt is not None:
                self.run.abort_checkpoint(ckpt)
            self.flush()  # every measurement taken before the failure is written
            if isinstance(e, FloatingPointError):
                raise FloatingPointError(
                    f"{e} at step {step}; checkpoints up to step {max(self.done_steps, default='none')} are intact"
                ) from None
            raise
        finally:
            self.model.train(was_training)
        self._taken.add(step)
        if self.rank != 0:
            return
        if state is not None:
            kept = {m.name: m.state_dict() for m in self.measures if m.state_dict()}
            state = {**state, "recorder": kept} if kept else state
        job = dict(
            step=step,
            epoch=self.schedule.epoch(step),
            seed=self.seed,
            tmp=ckpt,
            state=_to_host(state) if state is not None else None,
            **_merge(outputs),
        )
        self.flush()  # checkpoints are written in order; the previous one overlapped this measurement
        if self._writer is None:
            self._write(job)
        else:
            self._pending = self._writer.submit(self._write, job)

    @torch.no_grad()
    def _run_pass(self, p: Pass, wanted: dict[Measure, Iterable[str]]) -> None:
        data = self.eval_data if base_pass(p) == "eval" else self.train_data
        assert data is not None
        self._users: dict[str, list[Measure]] = {}
        for m, sites in wanted.items():
            for s in sites:
                self._users.setdefault(s, []).append(m)
        self._fused = self._fusable()
        self._pass_name = p
        chunk = _batch_statistics_size(p, wanted)
        self._first_digest = 0  # of the pass's first batch, under torch.distributed: unsharded data are said
        bad = torch.zeros((), dtype=torch.int64, device=self.device)
        assert self._tap is not None
        failure: BaseException | None = None
        try:
            with self._tap as tap, batch_statistics_of(self.model) if chunk else contextlib.nullcontext():
                for whole in data.batches(self.device, self.num_classes, self._dtype(), self.input_shape):
                    if self.world > 1 and not self._first_digest:
                        self._first_digest = _digest(whole)
                    for batch in _pieces(whole, chunk):
                        self._batch = batch
                        logits = tap(batch.x) if self._users else self.model(batch.x)
                        # One flag on the device, read once per pass: a NaN or inf anywhere reaches the logits.
                        bad |= (~torch.isfinite(logits).all()).to(torch.int64)
                        for m in wanted:
                            m.update_batch(p, batch, logits)
            sizes, samples = data.last_class_sizes, data.last_samples
        except Exception as e:
            if self.world == 1:
                raise
            failure, sizes, samples = e, np.zeros(self.num_classes, dtype=np.int64), 0
        finally:
            self._users = {}
            self._fused = {}
        if self.world > 1:
            sizes, samples, bad = self._reduce(p, wanted, sizes, samples, bad, failure)
        if bool(bad):
            raise FloatingPointError(
                f"the model's outputs are not finite (NaN or inf) in the {p} pass; the run diverged"
            )
        if base_pass(p) == "eval":
            self._check_eval_sizes(sizes)
            expected = self.eval_data.samples
            if expected is not None and samples != expected:
                raise ValueError(
                    f"eval_data: the processes measured {samples} samples together, but the data hold "
                    f"{expected}; every sample must be in exactly one process's shard"
                )
        for m in wanted:
            m.end_pass(p, sizes, samples)

    def _reduce(
        self,
        p: Pass,
        wanted: dict[Measure, Iterable[str]],
        sizes: np.ndarray,
        samples: int,
        bad: torch.Tensor,
        failure: BaseException | None,
    ) -> tuple[np.ndarray, int, torch.Tensor]:
        """Add every process's sums of pass ``p`` with one all_reduce; a failure anywhere stops every process."""
        dev = reduce_device()
        head = torch.tensor([int(failure is not None), samples, *np.asarray(sizes).tolist()], dtype=torch.int64)
        # Every rank's step and a digest of its first samples, each in its own slot: summed, every rank sees all.
        seen = torch.zeros(2, self.world, dtype=torch.int64)
        seen[0, self.rank] = self._step
        seen[1, self.rank] = self._first_digest
        bad = bad.reshape(1)
        sums = [t for m in wanted for t in m.sums(p).values()]
        all_reduce_sums([head, seen, bad, *sums], dev)
        if failure is not None:
            raise failure
        if int(head[0]):
            raise RuntimeError(
                f"another process failed in the {p} pass (its error is in its own output); nothing was written"
            )
        steps = seen[0].tolist()
        if len(set(steps)) > 1:
            raise RuntimeError(
                f"the processes measured different steps together in the {p} pass (steps by rank: {steps}); every "
                "process must measure the same step: call maybe_measure with the same global step everywhere"
            )
        digests = seen[1].tolist()
        if len(set(digests)) == 1 and digests[0] != 0:
            data = "eval_data" if base_pass(p) == "eval" else "train_data"
            raise ValueError(
                f"{data}: all {self.world} processes read the same first samples in the {p} pass, so the counts "
                "would be added world times over; give each process its own shard (DistributedSampler with "
                "shuffle=False, or nnphases.recording.distributed.UnpaddedSampler)"
            )
        return head[2:].numpy(), int(head[1]), bad

    def _check_eval_sizes(self, sizes: np.ndarray) -> None:
        if self.class_sizes is None:
            check_class_sizes(sizes, "the evaluation set")
            self.class_sizes = sizes.astype(np.int64)
            self._check_plan()  # the disk is checked again now that the set's size is known
            self._check_stored_sizes(self.done_steps)
        elif not np.array_equal(sizes, self.class_sizes):
            raise ValueError(
                f"eval_data changed: this pass read class sizes {sizes.tolist()} (total {sizes.sum()}), "
                f"the first {self.class_sizes.tolist()} (total {self.class_sizes.sum()}); the evaluation "
                "data must be the same samples in every pass"
            )

    # -- state and writing ---------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What a resumed run needs of the measures (e.g. warm-started paper probes)."""
        return {m.name: m.state_dict() for m in self.measures if m.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        by_name = {m.name: m for m in self.measures}
        if "paper_probes" in state and "probes" in by_name:  # resume states written before measures existed
            state = {"probes": state}
        for name, s in state.items():
            if name in by_name:
                by_name[name].load_state_dict(s)

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
        """Waits for the last checkpoint, then marks the run complete (written last) and releases the folder's lock;
        later calls do nothing."""
        if self._closed:
            return
        self.flush()
        if self._writer is not None:
            self._writer.shutdown()
        if self.rank == 0:
            self.run.mark_done()
            for m in self.measures:
                m.finish(self.run)
        self._closed = True
        if self._lock is not None:
            self._lock.release()


def _batch_statistics_size(p: Pass, wanted: Iterable[Measure]) -> int | None:
    """Samples per batch in a ``:batch-stats`` pass (None for the other passes): what its users ask for, the same
    for all of them."""
    if base_pass(p) == p:
        return None
    sizes = {m.name: m.batch_statistics_size() for m in wanted}
    asked = {v for v in sizes.values() if v is not None}
    if len(asked) > 1:
        raise ValueError(f"measures read the {p} pass in batches of different sizes: {sizes}")
    if not asked:
        raise ValueError(f"no measure in the {p} pass says its batch size ({sorted(sizes)})")
    return asked.pop()


def _digest(batch: Batch) -> int:
    """A crc32 of the first samples of a batch (inputs and labels), never 0: ranks that read the same samples
    agree on it, ranks with their own shards (almost surely) do not."""
    k = min(batch.size, 8)
    x = batch.x[:k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()  # any dtype
    y = batch.y[:k].detach().cpu().contiguous().numpy().tobytes()
    return zlib.crc32(y, zlib.crc32(x)) | 1 << 32


def _pieces(batch: Batch, size: int | None) -> Iterator[Batch]:
    """``batch`` cut into batches of ``size`` samples (whole when None); a last piece of one sample joins the one
    before it, since batch statistics of one sample are undefined."""
    n = batch.size
    if size is None or n <= size:
        yield batch
        return
    starts = list(range(0, n, size))
    if n - starts[-1] == 1:
        starts.pop()
    for i, a in enumerate(starts):
        b = starts[i + 1] if i + 1 < len(starts) else n
        yield Batch(batch.x[a:b], batch.y[a:b], batch.start + a)


def _merge(outputs: list[Output]) -> dict[str, Any]:
    """The measures' outputs as write_checkpoint's keywords: each table from the one measure that declares it."""
    counts: dict[str, np.ndarray] = {}
    class_sizes = None
    tables: dict[str, Any] = {}
    for o in outputs:
        if o.counts is not None:
            counts.update(o.counts)
            class_sizes = o.class_sizes
        for name, rows in o.tables.items():
            if name in tables:
                raise ValueError(f"two measures wrote the table {name!r}; a table belongs to one measure")
            tables[name] = rows
    return dict(counts=counts, class_sizes=class_sizes, tables=tables)


def _with_new_defaults(old: dict, measures: Sequence[Measure]) -> dict:
    """A stored setup with the options added to the measures since it was written, at their defaults: a run
    begun before an option existed resumed as it was measured."""
    from ..options import describe

    stored = old.get("measures")
    if not isinstance(stored, dict):
        return old
    filled = dict(stored)
    for m in measures:
        if isinstance(stored.get(m.name), dict):
            filled[m.name] = {**describe(type(m.options)()), **stored[m.name]}
    return {**old, "measures": filled}


def _structure(model: nn.Module) -> tuple:
    """Identity of every module, parameter and buffer: a replaced one means the traced graph is stale."""
    return (
        tuple((n, id(m)) for n, m in model.named_modules()),
        tuple((n, id(p)) for n, p in model.named_parameters()),
        tuple((n, id(b)) for n, b in model.named_buffers()),
    )


def _to_host(obj: Any) -> Any:
    """A copy of a (nested) state on the host: tensors cloned to the CPU, so training may go on."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_host(v) for v in obj)
    return obj
