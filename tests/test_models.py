"""Tests of nnphases.experiments.models: output shapes, layer layout, bias placement, `build`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from nnphases.experiments.models import BasicBlock, build, fc_bn, mlp, resnet10, vgg11

# (id, builder, input shape, logits shape)
SHAPES: list[tuple[str, Callable[[], nn.Module], tuple[int, ...], tuple[int, ...]]] = [
    ("mlp-2x20-mnist28", lambda: mlp(784, 2, 20, 10), (5, 1, 28, 28), (5, 10)),
    ("mlp-9x320-mnist28", lambda: mlp(784, 9, 320, 10, output="softmax"), (3, 1, 28, 28), (3, 10)),
    ("mlp-5x80-cifar32", lambda: mlp(3 * 32 * 32, 5, 80, 100, bias="all"), (2, 3, 32, 32), (2, 100)),
    ("mlp-depth0", lambda: mlp(784, 0, 1, 10), (4, 1, 28, 28), (4, 10)),
    ("fc_bn-2-gray32", lambda: fc_bn(32 * 32, 2), (4, 1, 32, 32), (4, 10)),
    ("fc_bn-4-cifar32", lambda: fc_bn(3 * 32 * 32, 4, width=64, num_classes=100), (4, 3, 32, 32), (4, 100)),
    ("vgg11-cifar32", lambda: vgg11(), (2, 3, 32, 32), (2, 10)),
    ("vgg11-bn-cifar32", lambda: vgg11(batch_norm=True), (2, 3, 32, 32), (2, 10)),
    ("vgg11-gray32-100", lambda: vgg11(num_classes=100, in_channels=1), (2, 1, 32, 32), (2, 100)),
    ("resnet10-cifar32", lambda: resnet10(), (2, 3, 32, 32), (2, 10)),
    ("resnet10-gray32-100", lambda: resnet10(num_classes=100, in_channels=1), (2, 1, 32, 32), (2, 100)),
]


@pytest.mark.parametrize("builder,in_shape,out_shape", [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_output_shape(builder: Callable[[], nn.Module], in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
    model = builder().eval()
    with torch.no_grad():
        assert model(torch.randn(in_shape)).shape == out_shape


BIAS = [
    # (id, bias, depth, expected bias flags of the Linear layers, output last)
    ("first-3", "first", 3, [True, False, False, False]),
    ("all-3", "all", 3, [True, True, True, True]),
    ("none-3", "none", 3, [False, False, False, False]),
    ("first-1", "first", 1, [True, False]),
    ("first-0", "first", 0, [True]),  # the only Linear is the first
    ("none-0", "none", 0, [False]),
]


@pytest.mark.parametrize("bias,depth,expected", [b[1:] for b in BIAS], ids=[b[0] for b in BIAS])
def test_mlp_bias_placement(bias: str, depth: int, expected: list[bool]) -> None:
    model = mlp(784, depth, 20, 10, bias=bias)  # type: ignore[arg-type]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [lin.bias is not None for lin in linears] == expected


def test_mlp_layout() -> None:
    model = mlp(784, 3, 20, 10, output="softmax")
    assert list(dict(model.named_children())) == ["flatten", "fc1", "relu1", "fc2", "relu2", "fc3", "relu3", "out"]
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) == 3  # separate modules: one site each
    assert model.output == "softmax"
    assert mlp(784, 1, 20, 10).output == "identity"
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [20, 20, 20, 10]


def test_fc_bn_layout() -> None:
    model = fc_bn(1024, 2, width=256)
    kinds = [type(m) for _, m in model.named_children()]
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Linear]
    assert model.fc1.out_features == 256 and model.out.in_features == 256


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_vgg11_layout(batch_norm: bool) -> None:
    model = vgg11(batch_norm=batch_norm)
    count = lambda kind: sum(isinstance(m, kind) for m in model.features)  # noqa: E731
    assert count(nn.Conv2d) == 8 and count(nn.ReLU) == 8 and count(nn.MaxPool2d) == 5
    assert count(nn.BatchNorm2d) == (8 if batch_norm else 0)
    assert all(m.inplace for m in model.features if isinstance(m, nn.ReLU))
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 512


def test_resnet10_layout() -> None:
    model = resnet10()
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 4
    assert [len(getattr(model, f"layer{k}")) for k in range(1, 5)] == [1, 1, 1, 1]
    assert all(isinstance(b.relu, nn.ReLU) and b.relu.inplace for b in blocks)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    # 3 convolutions more than 4 blocks of two: the stem and 3 downsampling shortcuts.
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 1 + 2 * 4 + 3


@pytest.mark.parametrize(
    "name,kwargs,kind",
    [
        ("mlp", dict(in_features=784, depth=2, width=20, num_classes=10), nn.Sequential),
        ("fc_bn", dict(in_features=1024, depth=2), nn.Sequential),
        ("vgg11", dict(batch_norm=True), nn.Module),
        ("resnet10", dict(num_classes=100), nn.Module),
    ],
    ids=["mlp", "fc_bn", "vgg11", "resnet10"],
)
def test_build(name: str, kwargs: dict, kind: type) -> None:
    assert isinstance(build(name, **kwargs), kind)


def test_build_unknown_name_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"'vgg16'.*fc_bn.*mlp.*resnet10.*vgg11"):
        build("vgg16")


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: mlp(784, 2, 20, 10, bias="last"), r"bias.*'last'"),
        (lambda: mlp(784, 2, 20, 10, output="sigmoid"), r"output.*'sigmoid'"),
        (lambda: mlp(784, -1, 20, 10), r"depth.*-1"),
        (lambda: mlp(784, 2, 0, 10), r"width.*0"),
        (lambda: fc_bn(0, 2), r"in_features.*0"),
        (lambda: vgg11(num_classes=0), r"num_classes.*0"),
        (lambda: resnet10(in_channels=0), r"in_channels.*0"),
    ],
    ids=["bias", "output", "depth", "width", "in_features", "num_classes", "in_channels"],
)
def test_invalid_arguments_name_argument_and_value(call: Callable[[], nn.Module], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
