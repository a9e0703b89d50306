"""Tests of nnphases.recording.capture: site discovery and naming, exact activations at
capture time, unchanged outputs, per-channel reduction, site selection and the
forward-hook fallback."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnphases.recording.capture import ReluCapture, Site, find_sites
from nnphases.experiments.models import fc_bn, mlp, resnet10, vgg11

# Only the hook-fallback tests may warn, and they assert it.
pytestmark = pytest.mark.filterwarnings("error")

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, CUDA])]


# --------------------------------------------------------------------------
# Small models with the awkward cases.
# --------------------------------------------------------------------------

class Functional(nn.Module):
    """Every functional spelling of ReLU, the in-place ones included."""

    def __init__(self) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(6, 6) for _ in range(6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fcs[0](x))
        x = torch.relu(self.fcs[1](x))
        x = self.fcs[2](x).relu()
        x = F.relu(self.fcs[3](x), inplace=True)
        x = torch.relu_(self.fcs[4](x))
        x = self.fcs[5](x).relu_()
        return x.sum(dim=1, keepdim=True)


class Twice(nn.Module):
    """One ReLU module called twice, as torchvision's BasicBlock does."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 4)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc2(self.act(self.fc1(x))))


class OverwrittenLater(nn.Module):
    """An in-place ReLU whose output is overwritten in place right after: only an immediate callback sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.fc(x), inplace=True)
        y.mul_(-1.0)
        return y


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it. Also one module called twice and one functional ReLU that hook mode cannot see."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 5)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = -x
        h = self.act(self.fc1(x))
        h = self.act(self.fc2(h))
        return F.relu(h) + 1.0


class ModeDependent(nn.Module):
    """Reads `self.training` in Python: torch.fx bakes the flag into the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = x * 2.0
        return self.relu(self.fc(x))


class MyReLU(nn.ReLU):
    """A ReLU subclass defined outside torch.nn: still one module site."""


class NoRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(6, 3), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def vec(batch: int = 7) -> torch.Tensor:
    return torch.randn(batch, 6)


def img(channels: int = 3) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(3, channels, 32, 32)


# --------------------------------------------------------------------------
# find_sites: names and shapes in forward order.
# --------------------------------------------------------------------------

RESNET_SITES = [("relu", (64, 32, 32))] + [
    (f"layer{k}.0.relu{suffix}", (c, s, s))
    for k, c, s in [(1, 64, 32), (2, 128, 16), (3, 256, 8), (4, 512, 4)]
    for suffix in ("", "_1")
]
VGG_SHAPES = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (256, 8, 8), (512, 4, 4), (512, 4, 4), (512, 2, 2), (512, 2, 2)]

SITES = [
    # (id, model, example input, expected [(name, shape)])
    ("mlp-3x20", lambda: mlp(784, 3, 20, 10), lambda: torch.randn(2, 1, 28, 28),
     [("relu1", (20,)), ("relu2", (20,)), ("relu3", (20,))]),
    ("fc_bn-2", lambda: fc_bn(1024, 2, width=32), lambda: torch.randn(1, 1, 32, 32),
     [("relu1", (32,)), ("relu2", (32,))]),
    ("vgg11", vgg11, img(), list(zip([f"features.{i}" for i in (1, 4, 7, 9, 12, 14, 17, 19)], VGG_SHAPES))),
    ("vgg11-bn", lambda: vgg11(batch_norm=True), img(),
     list(zip([f"features.{i}" for i in (2, 6, 10, 13, 17, 20, 24, 27)], VGG_SHAPES))),
    ("resnet10", resnet10, img(), RESNET_SITES),
    ("functional", Functional, vec,
     [("relu", (6,)), ("relu_1", (6,)), ("relu_2", (6,)), ("relu_3", (6,)), ("relu_", (6,)), ("relu__1", (6,))]),
    ("module-twice", Twice, vec, [("act", (5,)), ("act_1", (4,))]),
    ("relu-subclass", lambda: nn.Sequential(nn.Linear(6, 4), MyReLU()), vec, [("1", (4,))]),
]


@pytest.mark.parametrize("build,example,expected", [s[1:] for s in SITES], ids=[s[0] for s in SITES])
def test_find_sites(build: Callable[[], nn.Module], example: Callable[[], torch.Tensor], expected: list) -> None:
    model = build()
    sites = find_sites(model, example())
    assert sites == [Site(name, shape) for name, shape in expected]
    assert find_sites(model, example()) == sites  # stable across calls


def test_find_sites_leaves_model_state_alone() -> None:
    model = resnet10().train()
    model.layer2.eval()  # a mixed state must survive too
    flags = [m.training for m in model.modules()]
    stats = copy.deepcopy(model.state_dict())
    find_sites(model, torch.randn(1, 3, 32, 32))  # a batch of one needs eval-mode batch norm
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())


def test_site_num_nodes() -> None:
    site = Site("features.4", (128, 16, 16))
    assert site.num_nodes() == 128 * 16 * 16 and site.num_nodes(per_channel=True) == 128
    assert Site("relu1", (320,)).num_nodes(per_channel=True) == 320


# --------------------------------------------------------------------------
# Outputs with capture are bitwise those without, in every mode.
# --------------------------------------------------------------------------

MODELS = [
    ("mlp", lambda: mlp(784, 3, 20, 10), lambda: torch.randn(5, 1, 28, 28)),
    ("fc_bn", lambda: fc_bn(1024, 2, width=32), lambda: torch.randn(5, 1, 32, 32)),
    ("vgg11", vgg11, img()),
    ("vgg11-bn", lambda: vgg11(batch_norm=True), img()),
    ("resnet10", resnet10, img()),
    ("functional", Functional, vec),
    ("module-twice", Twice, vec),
    ("overwritten-later", OverwrittenLater, vec),
    ("mode-dependent", ModeDependent, vec),
]


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("build,example", [m[1:] for m in MODELS], ids=[m[0] for m in MODELS])
def test_logits_unchanged(build: Callable[[], nn.Module], example: Callable[[], torch.Tensor], training: bool, grad: bool) -> None:
    torch.manual_seed(0)
    model = build().train(training)
    twin = copy.deepcopy(model)  # batch-norm statistics move in train mode: compare them too
    x = example()
    calls: list[str] = []
    with torch.set_grad_enabled(grad):
        expected = model(x.clone())
        with ReluCapture(twin, lambda name, acts: calls.append(name)) as capture:
            got = capture(x.clone())
    assert torch.equal(got, expected)
    assert got.requires_grad == expected.requires_grad == grad
    assert calls  # every model here has a site
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name


def test_mode_switch_retraces() -> None:
    model = ModeDependent()
    x = vec()
    with ReluCapture(model, lambda name, acts: None) as capture:
        for training in (True, False, True):
            model.train(training)
            assert torch.equal(capture(x), model(x))


@pytest.mark.parametrize(
    "build,example",
    [(lambda: mlp(784, 2, 16, 10), lambda: torch.randn(4, 784)), (resnet10, img()), (Functional, vec)],
    ids=["mlp", "resnet10", "functional"],
)
def test_gradients_unchanged(build: Callable[[], nn.Module], example: Callable[[], torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = build().train()
    twin = copy.deepcopy(model)
    x = example()
    model(x).square().sum().backward()
    with ReluCapture(twin, lambda name, acts: None) as capture:
        capture(x).square().sum().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad), name


# --------------------------------------------------------------------------
# The callback sees exactly the ReLU outputs, at capture time.
# --------------------------------------------------------------------------

def manual_mlp(model: nn.Sequential, x: torch.Tensor) -> dict[str, torch.Tensor]:
    h = x.flatten(1)
    out = {}
    for i in range(1, 4):
        lin = getattr(model, f"fc{i}")
        h = torch.clamp(F.linear(h, lin.weight, lin.bias), min=0.0)
        out[f"relu{i}"] = h
    return out


def manual_vgg(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    for i, layer in enumerate(model.features):
        x = layer(x)
        if isinstance(layer, nn.ReLU):
            out[f"features.{i}"] = x.clone().flatten(1)
    return out


def manual_resnet(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    x = torch.clamp(model.bn1(model.conv1(x)), min=0.0)
    out["relu"] = x.flatten(1)
    for k in range(1, 5):
        block = getattr(model, f"layer{k}")[0]
        h = torch.clamp(block.bn1(block.conv1(x)), min=0.0)
        out[f"layer{k}.0.relu"] = h.flatten(1)
        identity = block.downsample(x) if block.downsample is not None else x
        x = torch.clamp(block.bn2(block.conv2(h)) + identity, min=0.0)
        out[f"layer{k}.0.relu_1"] = x.flatten(1)
    return out


def manual_functional(model: Functional, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    for fc, name in zip(model.fcs, ["relu", "relu_1", "relu_2", "relu_3", "relu_", "relu__1"]):
        x = torch.clamp(fc(x), min=0.0)
        out[name] = x
    return out


def manual_twice(model: Twice, x: torch.Tensor) -> dict[str, torch.Tensor]:
    h = torch.clamp(model.fc1(x), min=0.0)
    return {"act": h, "act_1": torch.clamp(model.fc2(h), min=0.0)}


def manual_overwritten(model: OverwrittenLater, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"relu": torch.clamp(model.fc(x), min=0.0)}


ACTS = [
    ("mlp-first-bias", lambda: mlp(784, 3, 20, 10), lambda: torch.randn(6, 1, 28, 28), manual_mlp),
    ("mlp-all-bias", lambda: mlp(784, 3, 20, 10, bias="all"), lambda: torch.randn(6, 1, 28, 28), manual_mlp),
    ("vgg11", vgg11, img(), manual_vgg),
    ("vgg11-bn", lambda: vgg11(batch_norm=True), img(), manual_vgg),
    ("resnet10", resnet10, img(), manual_resnet),
    ("functional", Functional, vec, manual_functional),
    ("module-twice", Twice, vec, manual_twice),
    ("overwritten-later", OverwrittenLater, vec, manual_overwritten),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("build,example,manual", [a[1:] for a in ACTS], ids=[a[0] for a in ACTS])
def test_callback_sees_relu_outputs(build: Callable, example: Callable, manual: Callable, device: str) -> None:
    torch.manual_seed(0)
    model = build().eval().to(device)
    x = example().to(device)
    masks: dict[str, torch.Tensor] = {}

    def callback(name: str, acts: torch.Tensor) -> None:
        assert name not in masks, f"{name} called twice in one forward"
        assert acts.dim() == 2 and acts.shape[0] == x.shape[0] and acts.device == x.device
        masks[name] = (acts > 0).cpu()  # reduce now: in-place ops may overwrite acts later

    with torch.no_grad():
        with ReluCapture(model, callback) as capture:
            capture(x)
        expected = {name: (z > 0).cpu() for name, z in manual(model, x).items()}
    assert list(masks) == list(expected)
    for name, mask in expected.items():
        assert torch.equal(masks[name], mask), name
        assert 0 < int(mask.sum()) < mask.numel(), name  # a meaningful check: neither dead nor saturated


@pytest.mark.parametrize("build,example", [m[1:] for m in MODELS[:5]], ids=[m[0] for m in MODELS[:5]])
def test_names_match_find_sites(build: Callable[[], nn.Module], example: Callable[[], torch.Tensor]) -> None:
    model = build().eval()
    x = example()
    sites = find_sites(model, x)
    seen: list[tuple[str, int]] = []
    with torch.no_grad(), ReluCapture(model, lambda name, acts: seen.append((name, acts.shape[1]))) as capture:
        assert capture.site_names == [s.name for s in sites]
        capture(x)
        capture(x)  # same names on every forward
    assert seen == [(s.name, s.num_nodes()) for s in sites] * 2


# --------------------------------------------------------------------------
# per_channel: one node per channel, active when any position is.
# --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "build,example",
    [(vgg11, img()), (resnet10, img()), (lambda: mlp(784, 2, 20, 10), lambda: torch.randn(4, 784))],
    ids=["vgg11", "resnet10", "mlp"],
)
def test_per_channel(build: Callable[[], nn.Module], example: Callable[[], torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = build().eval()
    x = example()
    sites = find_sites(model, x)
    full: dict[str, torch.Tensor] = {}
    channel: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        with ReluCapture(model, lambda n, a: full.__setitem__(n, a.clone())) as capture:
            capture(x)
        with ReluCapture(model, lambda n, a: channel.__setitem__(n, a.clone()), per_channel=True) as capture:
            capture(x)
    for site in sites:
        acts, per = full[site.name], channel[site.name]
        assert per.shape == (x.shape[0], site.num_nodes(per_channel=True))
        by_channel = acts.reshape(x.shape[0], site.shape[0], -1)
        assert torch.equal(per, by_channel.amax(dim=2))
        assert torch.equal(per > 0, (by_channel > 0).any(dim=2))
        if len(site.shape) == 1:  # a Linear site: one node per channel already
            assert torch.equal(per, acts)


# --------------------------------------------------------------------------
# Site selection and errors.
# --------------------------------------------------------------------------

def test_restrict_sites_keeps_forward_order() -> None:
    model = resnet10().eval()
    seen: list[str] = []
    wanted = ["layer3.0.relu_1", "relu", "layer1.0.relu_1"]
    with torch.no_grad(), ReluCapture(model, lambda n, a: seen.append(n), sites=wanted) as capture:
        assert capture.site_names == ["relu", "layer1.0.relu_1", "layer3.0.relu_1"]
        out = capture(torch.randn(2, 3, 32, 32))
    assert seen == ["relu", "layer1.0.relu_1", "layer3.0.relu_1"]
    assert out.shape == (2, 10)


def test_unknown_site_lists_sites() -> None:
    with pytest.raises(ValueError, match=r"layer9\.0\.relu.*'relu', 'layer1\.0\.relu', 'layer1\.0\.relu_1'"):
        ReluCapture(resnet10(), lambda n, a: None, sites=["relu", "layer9.0.relu"])


@pytest.mark.parametrize(
    "sites,error,match",
    [([], ValueError, r"at least one.*relu1"), ("relu1", TypeError, r"sites.*'relu1'")],
    ids=["empty", "bare-string"],
)
def test_bad_sites_argument(sites: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ReluCapture(mlp(784, 2, 20, 10), lambda n, a: None, sites=sites)  # type: ignore[arg-type]


def test_model_without_relu() -> None:
    with pytest.raises(ValueError, match=r"^model has no ReLU"):
        ReluCapture(NoRelu(), lambda n, a: None)


def test_callback_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callback"):
        ReluCapture(mlp(784, 1, 4, 10), None)  # type: ignore[arg-type]


def test_forward_needs_open_capture() -> None:
    capture = ReluCapture(mlp(784, 1, 4, 10), lambda n, a: None)
    with pytest.raises(RuntimeError, match="not open"):
        capture(torch.randn(2, 784))
    with capture:
        capture(torch.randn(2, 784))
    with pytest.raises(RuntimeError, match="not open"):
        capture(torch.randn(2, 784))


def test_direct_model_calls_are_not_captured() -> None:
    model = mlp(784, 2, 8, 10)
    seen: list[str] = []
    with ReluCapture(model, lambda n, a: seen.append(n)):
        model(torch.randn(2, 784))
    assert seen == []


# --------------------------------------------------------------------------
# Forward-hook fallback for models torch.fx cannot trace.
# --------------------------------------------------------------------------

def test_hook_fallback_warns_and_captures_modules() -> None:
    torch.manual_seed(0)
    model = Branchy().eval()
    x = torch.randn(5, 6)
    with pytest.warns(UserWarning, match=r"Branchy.*forward hooks.*functional ReLUs \(F\.relu.*Tensor\.relu"):
        capture = ReluCapture(model, lambda n, a: None)
    assert capture.mode == "hooks"

    masks: dict[str, torch.Tensor] = {}
    with pytest.warns(UserWarning, match="functional ReLUs"):
        capture = ReluCapture(model, lambda n, a: masks.__setitem__(n, a > 0))
    with torch.no_grad(), capture:
        got = capture(x)
        masks_first = dict(masks)
        capture(x)  # the repeat counter restarts on each forward
    expected_logits = model(x)
    assert torch.equal(got, expected_logits)
    xx = -x if x.sum() > 0 else x
    h1 = torch.clamp(model.fc1(xx), min=0.0)
    h2 = torch.clamp(model.fc2(h1), min=0.0)
    assert list(masks_first) == ["act", "act_1"] == list(masks)  # F.relu is not seen
    assert torch.equal(masks_first["act"], h1 > 0) and torch.equal(masks_first["act_1"], h2 > 0)


def test_hook_fallback_find_sites_and_selection() -> None:
    model = Branchy()
    with pytest.warns(UserWarning, match="functional ReLUs"):
        sites = find_sites(model, torch.randn(1, 6))
    assert sites == [Site("act", (5,)), Site("act_1", (5,))]
    seen: list[str] = []
    with pytest.warns(UserWarning, match="functional ReLUs"):
        capture = ReluCapture(model, lambda n, a: seen.append(n), sites=["act_1"])
    with capture:
        capture(torch.randn(3, 6))
    assert seen == ["act_1"]
    with pytest.warns(UserWarning, match="functional ReLUs"), pytest.raises(ValueError, match=r"'fc1'.*\['act'\]"):
        ReluCapture(model, lambda n, a: None, sites=["fc1"])


def test_hook_fallback_without_relu_modules() -> None:
    class OnlyFunctional(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(x) if x.sum() > 0 else x

    with pytest.warns(UserWarning, match="functional ReLUs"), pytest.raises(ValueError, match=r"^model has no ReLU"):
        ReluCapture(OnlyFunctional(), lambda n, a: None)


def test_hooks_removed_on_exit() -> None:
    model = Branchy()
    with pytest.warns(UserWarning):
        capture = ReluCapture(model, lambda n, a: None)
    with capture:
        assert model.act._forward_hooks
    assert not model.act._forward_hooks
