"""Find every ReLU call site of a model and stream its output to a callback.

torch.fx traces the model and each ReLU call (an ``nn.ReLU`` module, also
in place; ``torch.relu``, ``torch.relu_``, ``F.relu``, ``F.relu_``;
``Tensor.relu``, ``Tensor.relu_``) is followed by a tap that hands the output
to the callback at once, during the forward pass: in-place ReLUs and later
in-place ops overwrite the tensor, so the callback must reduce it (``acts >
0``, counts) before returning and never keep a reference. A model that does
not trace (data-dependent control flow) falls back to forward hooks on
``nn.ReLU`` modules, with a warning that functional ReLUs are then unseen.

Site names follow torchvision's feature extraction: a module call is named by
the module's dotted path (``features.1``, ``layer1.0.relu``), its second and
later calls in one forward pass get ``_1``, ``_2`` ... (``layer1.0.relu_1``);
a functional call keeps its torch.fx node name (``relu``, ``relu_1``). Names
depend only on the model's code and structure, so they are the same on every
call and in every run.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["Site", "Callback", "find_sites", "ReluCapture", "SiteTap"]

Callback = Callable[[str, torch.Tensor], None]

_RELU_FUNCTIONS = (torch.relu, torch.relu_, F.relu, F.relu_)
_RELU_METHODS = ("relu", "relu_")
_FUNCTIONAL_NAMES = "F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_"
_TAP = "_nnphases_relu_tap"
_REPEAT = re.compile(r"^(.*)_(\d+)$")


class Site(NamedTuple):
    """A ReLU call site: its `name` and the `shape` of one sample's activation there, e.g. ``(64, 16, 16)`` after a
    convolution or ``(320,)`` after a Linear layer."""

    name: str
    shape: tuple[int, ...]

    def num_nodes(self, per_channel: bool = False) -> int:
        """Number of nodes the site contributes: every feature (C*H*W for a convolution), or with `per_channel` one
        per channel (dimension 1 of the batched output), matching the columns `ReluCapture` hands to its callback."""
        if per_channel and len(self.shape) > 1:
            return self.shape[0]
        return math.prod(self.shape)


class _Tracer(fx.Tracer):
    # nn.ReLU subclasses defined outside torch.nn would otherwise be traced
    # through and show up as anonymous functional calls.
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.ReLU) or super().is_leaf_module(m, module_qualified_name)


class _Tap(nn.Module):
    """Graph node inserted after a ReLU node: passes the ReLU output to `emit` and returns it unchanged."""

    def __init__(self, emit: Callable[[str, torch.Tensor], None]) -> None:
        super().__init__()
        self.emit = emit

    def forward(self, x: torch.Tensor, name: str) -> torch.Tensor:
        self.emit(name, x)
        return x


def _is_relu(node: fx.Node, root: nn.Module) -> bool:
    if node.op == "call_module":
        return isinstance(root.get_submodule(str(node.target)), nn.ReLU)
    if node.op == "call_function":
        return any(node.target is f for f in _RELU_FUNCTIONS)
    if node.op == "call_method":
        return node.target in _RELU_METHODS
    return False


def _name_relu_nodes(graph: fx.Graph, root: nn.Module) -> list[tuple[fx.Node, str]]:
    """The graph's ReLU nodes in execution order, named: module calls first (path, then path_1, path_2 ... for
    repeated calls), then functional calls by node name, a suffix added only where a name is already taken."""
    relus = [n for n in graph.nodes if _is_relu(n, root)]
    names: dict[fx.Node, str] = {}
    taken: set[str] = set()

    def claim(node: fx.Node, base: str, k: int) -> int:
        name = base if k == 0 else f"{base}_{k}"
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        names[node] = name
        taken.add(name)
        return k

    # Module paths are claimed first, then repeated module calls, then
    # functional calls, so module sites are named as torchvision names them
    # whatever functional calls the model also makes.
    module_nodes = [n for n in relus if n.op == "call_module"]
    for n in module_nodes:
        if str(n.target) not in taken:
            claim(n, str(n.target), 0)
    calls: dict[str, int] = {}
    for n in module_nodes:
        if n not in names:
            target = str(n.target)
            calls[target] = claim(n, target, calls.get(target, 0) + 1)
    for n in relus:
        if n not in names:
            # fx names repeated calls relu, relu_1, ...: on a clash, continue
            # that numbering rather than append a second suffix.
            match = _REPEAT.match(n.name)
            claim(n, match.group(1), int(match.group(2))) if match else claim(n, n.name, 0)
    return [(n, names[n]) for n in relus]


def _mode_key(model: nn.Module) -> tuple[bool, ...]:
    # torch.fx bakes Python-level reads of `self.training` into the graph, so
    # each combination of training flags gets its own trace.
    return tuple(m.training for m in model.modules())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class _ReluTap:
    """Machinery shared by `ReluCapture` and `find_sites`: traces `model` (or falls back to hooks), validates
    `sites`, and calls `_on_relu(name, output)` for each selected ReLU call made through `forward` while open."""

    def __init__(self, model: nn.Module, sites: Iterable[str] | None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.mode: Literal["fx", "hooks"]
        self._graphs: dict[tuple[bool, ...], fx.GraphModule] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._calls: dict[str, int] = {}
        self._running = False
        self._open = False
        self._selected: frozenset[str] | None = None
        try:
            tracer = _Tracer()
            graph = tracer.trace(model)
        except Exception as exc:  # any tracing failure: fx raises TraceError, TypeError, RuntimeError ...
            self.mode = "hooks"
            self._modules = {p: m for p, m in model.named_modules() if isinstance(m, nn.ReLU)}
            warnings.warn(
                f"torch.fx cannot trace {type(model).__name__} ({_first_line(exc)}); capturing with forward "
                f"hooks on nn.ReLU modules, which cannot see functional ReLUs ({_FUNCTIONAL_NAMES})",
                stacklevel=3,
            )
            if not self._modules:
                raise ValueError(f"model has no ReLU module ({type(model).__name__}, hook mode)") from None
            known = list(self._modules)
        else:
            self.mode = "fx"
            known = [name for _, name in _name_relu_nodes(graph, tracer.root)]
            if not known:
                raise ValueError(f"model has no ReLU ({type(model).__name__}): nothing to capture")
            self._trace_key = _mode_key(model)
            self._first_graph: tuple[fx.Graph, nn.Module] | None = (graph, tracer.root)
        self.site_names = self._select(known, sites)

    def _select(self, known: list[str], sites: Iterable[str] | None) -> list[str]:
        if sites is None:
            return known
        if isinstance(sites, str):
            raise TypeError(f"sites must be an iterable of site names, got the string {sites!r}")
        wanted = list(dict.fromkeys(sites))
        if not wanted:
            raise ValueError(f"sites must name at least one site, got {wanted!r}; the model's sites: {known}")
        unknown = [s for s in wanted if not self._is_known(s, known)]
        if unknown:
            raise ValueError(f"sites {unknown!r} are not ReLU sites of the model; its sites: {known}")
        self._selected = frozenset(wanted)
        if self.mode == "fx":
            return [s for s in known if s in self._selected]
        return wanted

    def _is_known(self, name: str, known: list[str]) -> bool:
        if name in known:
            return True
        # Hook mode learns repeated calls (path_1, ...) only while running.
        match = _REPEAT.match(name)
        return self.mode == "hooks" and match is not None and match.group(1) in known

    def _graph_module(self) -> fx.GraphModule:
        key = _mode_key(self.model)
        gm = self._graphs.get(key)
        if gm is not None:
            return gm
        if self._first_graph is not None and key == self._trace_key:
            graph, root = self._first_graph
            self._first_graph = None
        else:
            tracer = _Tracer()
            graph, root = tracer.trace(self.model), tracer.root
        named = _name_relu_nodes(graph, root)
        # The GraphModule shares the model's submodules, parameters and
        # buffers: training the model updates what the capture runs.
        gm = fx.GraphModule(root, graph, type(self.model).__name__)
        gm.add_submodule(_TAP, _Tap(self._on_relu))
        for node, name in named:
            if self._selected is not None and name not in self._selected:
                continue
            with gm.graph.inserting_after(node):
                tap = gm.graph.call_module(_TAP, (node, name))

            # Later ops consume the tap's output (the same tensor), which pins
            # the tap before any of them, in-place ops included.
            def other_than_tap(user: fx.Node, tap: fx.Node = tap) -> bool:
                return user is not tap

            node.replace_all_uses_with(tap, delete_user_cb=other_than_tap)
        gm.graph.lint()
        gm.recompile()
        self._graphs[key] = gm
        return gm

    def _on_module(self, path: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if not self._running:
                return
            k = self._calls.get(path, 0)
            self._calls[path] = k + 1
            name = path if k == 0 else f"{path}_{k}"
            if self._selected is None or name in self._selected:
                self._on_relu(name, output)

        return hook

    def _on_relu(self, name: str, output: torch.Tensor) -> None:
        raise NotImplementedError

    def __enter__(self) -> _ReluTap:
        if self._open:
            raise RuntimeError("this capture is already open; nested `with` blocks are not supported")
        if self.mode == "hooks":
            self._handles = [m.register_forward_hook(self._on_module(p)) for p, m in self._modules.items()]
        self._open = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._open = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model on `args` and `kwargs`, calling back at each selected ReLU site; returns exactly what the
        model returns."""
        if not self._open:
            raise RuntimeError("capture is not open: call it inside `with ReluCapture(...) as capture:`")
        if self.mode == "fx":
            return self._graph_module()(*args, **kwargs)
        self._calls = {}
        self._running = True
        try:
            return self.model(*args, **kwargs)
        finally:
            self._running = False

    __call__ = forward


class ReluCapture(_ReluTap):
    """Context manager that runs `model` and hands each ReLU site's output, per batch, to ``callback(name, acts)``
    during the forward pass. `acts` is the detached output reshaped to ``[batch, nodes]``: by default one node per
    feature (C*H*W for a convolution); with `per_channel` one node per channel (dimension 1), its value the ``amax``
    over positions, which is > 0 exactly when the channel is active at some position, since a ReLU output is >= 0.
    `acts` may be a view of a tensor that an in-place op overwrites right after the callback returns: reduce it at
    once (``acts > 0``, counts), never keep it, and never modify it. `sites` restricts the capture to those names (an
    unknown one raises ValueError listing the model's sites); the others cost nothing. Only calls through
    ``capture(x)`` (`forward`) inside the ``with`` block are seen; outputs are bitwise those of ``model(x)``, in
    train or eval mode, with or without gradients, on any device. The model is traced with torch.fx when created (a
    model without ReLU raises ValueError); one that does not trace is captured with forward hooks on its ``nn.ReLU``
    modules, with a warning that functional ReLUs are missed (`mode` says which). `site_names` lists the captured
    sites in forward order (in hook mode, the selected names or the ReLU module paths, repeated calls being
    discovered while running)."""

    def __init__(
        self,
        model: nn.Module,
        callback: Callback,
        *,
        per_channel: bool = False,
        sites: Iterable[str] | None = None,
    ) -> None:
        if not callable(callback):
            raise TypeError(f"callback must be callable as callback(name, acts), got {callback!r}")
        super().__init__(model, sites)
        self.callback = callback
        self.per_channel = bool(per_channel)

    def __enter__(self) -> ReluCapture:
        super().__enter__()
        return self

    def _on_relu(self, name: str, output: torch.Tensor) -> None:
        z = output.detach()
        batch = z.shape[0] if z.dim() else 1
        if self.per_channel and z.dim() > 2:
            acts = z.reshape(batch, z.shape[1], math.prod(z.shape[2:])).amax(dim=2)
        else:
            # Explicit sizes, not -1, so an empty batch reshapes too.
            acts = z.reshape(batch, math.prod(z.shape[1:]))
        self.callback(name, acts)


class SiteTap(_ReluTap):
    """Like :class:`ReluCapture`, but hands ``callback(name, z)`` each selected site's output as the model made
    it (detached, per-sample shape intact, e.g. ``[batch, C, H, W]``), so that several consumers can each take
    the view they need (per-node counts, per-channel counts, probes of the whole map). The same rules hold:
    reduce `z` at once, never keep or modify it."""

    def __init__(self, model: nn.Module, callback: Callback, *, sites: Iterable[str] | None = None) -> None:
        if not callable(callback):
            raise TypeError(f"callback must be callable as callback(name, z), got {callback!r}")
        super().__init__(model, sites)
        self.callback = callback

    def __enter__(self) -> SiteTap:
        super().__enter__()
        return self

    def _on_relu(self, name: str, output: torch.Tensor) -> None:
        self.callback(name, output.detach())


class _ShapeRecorder(_ReluTap):
    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, None)
        self.sites: dict[str, Site] = {}

    def _on_relu(self, name: str, output: torch.Tensor) -> None:
        self.sites.setdefault(name, Site(name, tuple(output.shape[1:])))


def find_sites(model: nn.Module, example_input: torch.Tensor | tuple[Any, ...]) -> list[Site]:
    """Every ReLU call site of `model`, in forward order, with the shape of one sample's activation, found by running
    `example_input` (a tuple is unpacked as positional arguments) once. The run is made in eval mode under
    ``torch.no_grad`` so that batch-norm statistics stay untouched and a batch of one is accepted; every module's
    training flag is restored afterwards. A model that torch.fx cannot trace is searched with forward hooks, with the
    same warning as `ReluCapture`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        recorder = _ShapeRecorder(model)
        with recorder, torch.no_grad():
            recorder(*args)
    finally:
        for m, flag in flags:
            m.training = flag
    return list(recorder.sites.values())
