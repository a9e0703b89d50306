"""Model builders of the two sources, every hidden ReLU a named module.

`mlp` is the network of source 000 (ReLU MLPs, bias only in the first hidden
layer); `fc_bn`, `vgg11` and `resnet10` are the networks of source 002
(fully connected nets with ReLU then batch norm, VGG-11 and ResNet-10 for
32x32 inputs). All return raw logits: the loss decides between MSE on one-hot
targets and softmax/cross-entropy, so a captured forward pass is the same for
both. Each ReLU is an ``nn.ReLU`` module so that `nnphases.recording.capture` names its
sites by module path (``relu1``, ``features.1``, ``layer1.0.relu_1``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from ..options import check_int

__all__ = ["mlp", "fc_bn", "vgg11", "resnet10", "build", "VGG", "ResNet", "BasicBlock", "VGG11_CONFIG"]

BiasMode = Literal["first", "all", "none"]
OutputMode = Literal["identity", "softmax"]

# Numbers are output channels of 3x3 convolutions, "M" a 2x2 max pool
# (configuration "A" of Simonyan & Zisserman, as torchvision spells it).
VGG11_CONFIG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def mlp(
    in_features: int,
    depth: int,
    width: int,
    num_classes: int,
    *,
    bias: BiasMode = "first",
    output: OutputMode = "identity",
) -> nn.Sequential:
    """The ReLU MLP of source 000: ``flatten``, then `depth` hidden layers ``fc{i}`` (Linear, `width` nodes) each
    followed by its own ``relu{i}`` module, then the output Linear ``out`` with no activation. `bias` places biases:
    ``"first"`` (the source's default) on the first Linear only, which is the first hidden layer, or the output layer
    when ``depth == 0`` (a one-layer classifier); ``"all"`` on every Linear including the output; ``"none"`` nowhere.
    `output` records the loss the source pairs with the net (``"identity"``: MSE against one-hot targets;
    ``"softmax"``: softmax then negative log-likelihood, i.e. cross-entropy on the logits) as the attribute
    ``net.output``; it never adds a layer, so logits and captured activations are the same for both. Weights use
    PyTorch's default initialisation."""
    in_features = check_int(in_features, "in_features", 1)
    depth = check_int(depth, "depth", 0)
    width = check_int(width, "width", 1)
    num_classes = check_int(num_classes, "num_classes", 1)
    _check_choice("bias", bias, ("first", "all", "none"))
    _check_choice("output", output, ("identity", "softmax"))
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    fan_in = in_features
    for i in range(1, depth + 1):
        layers[f"fc{i}"] = nn.Linear(fan_in, width, bias=bias == "all" or (bias == "first" and i == 1))
        layers[f"relu{i}"] = nn.ReLU()
        fan_in = width
    layers["out"] = nn.Linear(fan_in, num_classes, bias=bias == "all" or (bias == "first" and depth == 0))
    net = nn.Sequential(layers)
    net.output = output  # type: ignore[assignment]  # Module.__setattr__ is typed for tensors and modules only
    return net


def fc_bn(in_features: int, depth: int, width: int = 256, num_classes: int = 10) -> nn.Sequential:
    """The fully connected nets of source 002: ``flatten``, then `depth` hidden layers of Linear ``fc{i}`` (with
    bias), ``relu{i}`` and ``bn{i}`` (BatchNorm1d), in that order as the paper states ("after each hidden layer we
    applied the ReLU activation and batch-normalization"), then the output Linear ``out``. The ReLU sites therefore
    see pre-normalisation activations."""
    in_features = check_int(in_features, "in_features", 1)
    depth = check_int(depth, "depth", 0)
    width = check_int(width, "width", 1)
    num_classes = check_int(num_classes, "num_classes", 1)
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    fan_in = in_features
    for i in range(1, depth + 1):
        layers[f"fc{i}"] = nn.Linear(fan_in, width)
        layers[f"relu{i}"] = nn.ReLU()
        layers[f"bn{i}"] = nn.BatchNorm1d(width)
        fan_in = width
    layers["out"] = nn.Linear(fan_in, num_classes)
    return nn.Sequential(layers)


class VGG(nn.Module):
    """VGG for 32x32 inputs in torchvision's layout: ``features`` (3x3 convolutions, optional batch norm, in-place
    ReLUs, max pools), ``avgpool``, ``classifier``. The head is a single Linear from the 512 channels left after five
    pools (the common CIFAR variant), not torchvision's 4096-4096 head sized for 224x224 images: every ReLU site is
    then a convolutional one, and the adaptive 1x1 pool, exact on a 1x1 map, only lets larger inputs through."""

    def __init__(
        self,
        config: Sequence[int | str] = VGG11_CONFIG,
        num_classes: int = 10,
        in_channels: int = 3,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            assert isinstance(v, int)
            layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            channels = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(channels, num_classes)
        # torchvision's VGG initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def vgg11(num_classes: int = 10, in_channels: int = 3, *, batch_norm: bool = False) -> VGG:
    """VGG-11 (configuration A) for 32x32 inputs: 8 convolutions, each followed by an in-place ReLU (sites
    ``features.1``, ``features.4``, ... or ``features.2``, ``features.6``, ... with `batch_norm`), 5 max pools and a
    512 -> `num_classes` Linear head (see `VGG`)."""
    num_classes = check_int(num_classes, "num_classes", 1)
    in_channels = check_int(in_channels, "in_channels", 1)
    return VGG(VGG11_CONFIG, num_classes, in_channels, batch_norm)


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: conv-bn-relu, conv-bn, add the (possibly downsampled) input, relu. One
    in-place ``relu`` module is called twice, so a block has two ReLU sites, ``<block>.relu`` and ``<block>.relu_1``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet(nn.Module):
    """ResNet of BasicBlocks for 32x32 inputs in torchvision's layout (``conv1``, ``bn1``, ``relu``, ``layer1`` ...
    ``layer4``, ``avgpool``, ``fc``), with the CIFAR stem: a 3x3 stride-1 convolution and no max pool, so the four
    stages see 32, 16, 8 and 4 pixels a side."""

    def __init__(self, layers: Sequence[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * BasicBlock.expansion, num_classes)
        # torchvision's ResNet initialisation (Linear keeps PyTorch's default).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def resnet10(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-10 for 32x32 inputs: BasicBlocks in stages of [1, 1, 1, 1] (see `ResNet`), 9 ReLU sites: the stem's
    ``relu`` and ``layerK.0.relu``, ``layerK.0.relu_1`` for each stage."""
    num_classes = check_int(num_classes, "num_classes", 1)
    in_channels = check_int(in_channels, "in_channels", 1)
    return ResNet([1, 1, 1, 1], num_classes, in_channels)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "fc_bn": fc_bn,
    "vgg11": vgg11,
    "resnet10": resnet10,
}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build the model called `name` (``"mlp"``, ``"fc_bn"``, ``"vgg11"`` or ``"resnet10"``) with the builder's
    keyword arguments, so that a run's config can name its model as data."""
    try:
        builder = _BUILDERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model name {name!r}; choose one of {sorted(_BUILDERS)}") from None
    return builder(**kwargs)
