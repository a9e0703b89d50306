"""The trained decoders of the probe protocols: from a layer's activations back to the network's input.

- ``dense``: Linear(F, 256) -> ReLU -> Linear(256, input size), the paper text's "auto-encoder-style decoder" for
  fully connected layers (the text gives no widths);
- ``conv``: for conv layers [C, h, w] and image inputs [Cin, H, W]: Conv2d(C, 64, 1) -> ReLU, then one
  ConvTranspose2d(kernel 4, stride 2) -> ReLU per doubling of the resolution with the channels halved each time
  (at least 16), a bilinear resize when H is not h times a power of two, and a final Conv2d(3x3) to Cin;
- ``linear``: one Linear from the flattened activations to the flattened input, the decoder the authors' released
  code uses by default (its ``LinDecNet``);
- ``cladec``: the released code's transposed-convolution decoder (its ``ClaDecNet``) for square image inputs whose
  side is a power-of-two multiple of the layer's: a dense layer (fully connected layers, or 1x1 maps) or a 3x3 conv
  (larger maps) with ReLU, then ConvTranspose2d(kernel 4, stride 2) -> ReLU layers with 64 * 2**(j-1) channels
  down to 64, and a last ConvTranspose2d to the input's channels; every doubling but the last has its own layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["DECODERS", "dense_decoder", "conv_decoder", "linear_decoder", "cladec_decoder", "build_decoder"]

DECODERS = ("auto", "dense", "conv", "linear", "cladec")


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


class _Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


def linear_decoder(features: int, input_shape: tuple[int, ...]) -> nn.Module:
    """One Linear layer from ``features`` values to the input, reshaped to ``input_shape`` (flattened inputs stay
    flat)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(features, math.prod(input_shape)), _Reshape(tuple(input_shape)))


def cladec_decoder(act_shape: tuple[int, ...], input_shape: tuple[int, ...], channel_mult: int = 64) -> nn.Module:
    """The released code's ClaDec decoder (see the module text) from activations of per-sample ``act_shape``
    ([F] or [C, s, s]) to square images ``input_shape`` = [Cin, S, S] with S / s a power of two (s = 1 for [F])."""
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ValueError(f"decoder 'cladec' needs square image inputs [C, S, S], got input shape {tuple(input_shape)}")
    cin, side = input_shape[0], input_shape[1]
    dense = len(act_shape) == 1 or (len(act_shape) == 3 and act_shape[1] == act_shape[2] == 1)
    if not dense and (len(act_shape) != 3 or act_shape[1] != act_shape[2]):
        raise ValueError(f"decoder 'cladec' needs [F] or square [C, s, s] activations, got {tuple(act_shape)}")
    spatial = 1 if dense else act_shape[1]
    ratio = side // spatial
    if ratio * spatial != side or ratio & (ratio - 1):
        raise ValueError(
            f"decoder 'cladec' needs the input side {side} to be a power-of-two multiple of the activations' "
            f"side {spatial}"
        )
    doublings = ratio.bit_length() - 1  # the released code's round(log2(ratio) - 1), plus its last layer
    features = math.prod(act_shape)
    layers: list[nn.Module] = []
    if doublings == 0:  # the same resolution: one 3x3 conv to the input's channels, no nonlinearity
        return nn.Conv2d(act_shape[0], cin, 3, padding=1)
    if dense:
        width = max(features, channel_mult)
        layers += [nn.Flatten(), nn.Linear(features, width), nn.ReLU(), _Reshape((width, 1, 1))]
    else:
        width = act_shape[0]
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    for j in range(doublings - 1, 0, -1):
        out = channel_mult * 2 ** (j - 1)
        layers += [nn.ConvTranspose2d(width, out, 4, stride=2, padding=1), nn.ReLU()]
        width = out
    layers.append(nn.ConvTranspose2d(width, cin, 4, stride=2, padding=1))
    return nn.Sequential(*layers)


def build_decoder(
    kind: str,
    features: int,
    act_shape: tuple[int, ...],
    input_shape: tuple[int, ...],
    *,
    hidden: int = 256,
    channels: int = 64,
) -> nn.Module:
    """The decoder called ``kind`` (not ``auto``), from ``features`` reduced values (dense, linear) or from the
    activations of per-sample ``act_shape`` (conv, cladec) to inputs of ``input_shape``. Dense and linear decoders
    give flat outputs; conv and cladec give images."""
    if kind == "dense":
        return dense_decoder(features, math.prod(input_shape), hidden)
    if kind == "linear":
        return linear_decoder(features, (math.prod(input_shape),))
    if kind == "conv":
        if len(act_shape) != 3 or len(input_shape) != 3:
            raise ValueError(f"decoder 'conv' needs [C, h, w] activations and [C, H, W] inputs, got {act_shape}")
        return conv_decoder(act_shape, input_shape, channels)
    if kind == "cladec":
        return cladec_decoder(act_shape, input_shape)
    raise ValueError(f"decoder must be one of {DECODERS[1:]}, got {kind!r}")
