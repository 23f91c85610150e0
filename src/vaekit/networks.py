"""Encoder and decoder bodies: MLP for vectors, convolutional for images, picked from the data shape.

Every body takes an optional condition c (B, F), a one-hot label, concatenated to its first dense layer's input;
none knows which family or likelihood it serves.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import ModelConfig
from .errors import VaekitError


# model.activation's choices: the non-linearity after every hidden layer of the encoder and decoder bodies
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU, "gelu": nn.GELU,
                                           "softplus": nn.Softplus, "tanh": nn.Tanh}


def _mlp(widths: list[int], activation: str = "relu") -> list[nn.Module]:
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out), ACTIVATIONS[activation]()]
    return layers


def _join(h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    return h if c is None else torch.cat([h, c.to(h.dtype)], dim=1)


class MLPEncoder(nn.Sequential):
    def __init__(self, data_shape: tuple[int, ...], hidden_dims: tuple[int, ...], out_features: int,
                 condition_features: int = 0, activation: str = "relu") -> None:
        widths = [math.prod(data_shape) + condition_features, *hidden_dims]
        super().__init__(nn.Flatten(), *_mlp(widths, activation), nn.Linear(widths[-1], out_features))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        h = _join(x.flatten(1), c)
        for layer in list(self)[1:]:
            h = layer(h)
        return h


class MLPDecoder(nn.Sequential):
    """Outputs (B, param_channels * C, ...) in the data's own shape. A condition enters every dense layer, so the
    decoder can lean on the label rather than on label information leaked into z."""

    def __init__(self, data_shape: tuple[int, ...], hidden_dims: tuple[int, ...], latent_dim: int, param_channels: int,
                 condition_features: int = 0, activation: str = "relu") -> None:
        widths = [latent_dim, *reversed(hidden_dims)]
        out_shape = (param_channels * data_shape[0], *data_shape[1:])
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths, [*widths[1:], math.prod(out_shape)]):
            layers += [nn.Linear(width_in + condition_features, width_out), ACTIVATIONS[activation]()]
        super().__init__(*layers[:-1], nn.Unflatten(1, out_shape))
        self.conditioned = condition_features > 0

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if not self.conditioned:
            return super().forward(z)
        h = z
        for layer in self:
            h = layer(_join(h, c) if isinstance(layer, nn.Linear) else h)
        return h


def _conv_sizes(size: int, depth: int) -> list[int]:
    """Spatial sizes through stride-2, kernel-4, padding-1 convolutions: n -> n // 2."""
    sizes = [size]
    for _ in range(depth):
        sizes.append(sizes[-1] // 2)
    return sizes


def downsampling_convs(in_channels: int, channels: tuple[int, ...], activation: str = "relu") -> list[nn.Module]:
    """Stride-2, kernel-4 convolutions to each of `channels`, each followed by the activation: n -> n // 2 per
    layer."""
    widths = [in_channels, *channels]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), ACTIVATIONS[activation]()]
    return layers


def upsampling_convs(data_shape: tuple[int, ...], channels: tuple[int, ...], param_channels: int,
                     activation: str = "relu") -> list[nn.Module]:
    """The mirror of downsampling_convs, from channels[-1] back to the image's size with param_channels per image
    channel; output_padding restores odd sizes exactly (28 -> 14 -> 7 -> 3 and back). Activations between, none
    after."""
    out_channels, height, width = data_shape
    hs, ws = _conv_sizes(height, len(channels)), _conv_sizes(width, len(channels))
    widths = [*reversed(channels), out_channels * param_channels]
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        level = len(channels) - 1 - i  # sizes index of the layer's output
        padding = (hs[level] - 2 * hs[level + 1], ws[level] - 2 * ws[level + 1])
        layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, output_padding=padding))
        if i < len(channels) - 1:
            layers.append(ACTIVATIONS[activation]())
    return layers


class ConvEncoder(nn.Module):
    def __init__(self, data_shape: tuple[int, ...], channels: tuple[int, ...], hidden: int, out_features: int,
                 condition_features: int = 0, activation: str = "relu") -> None:
        super().__init__()
        in_channels, height, width = data_shape
        self.convs = nn.Sequential(*downsampling_convs(in_channels, channels, activation))
        h, w = _conv_sizes(height, len(channels))[-1], _conv_sizes(width, len(channels))[-1]
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * h * w + condition_features, hidden),
                                  ACTIVATIONS[activation](), nn.Linear(hidden, out_features))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(_join(self.convs(x).flatten(1), c))


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder (see upsampling_convs)."""

    def __init__(self, data_shape: tuple[int, ...], channels: tuple[int, ...], hidden: int, latent_dim: int, param_channels: int,
                 condition_features: int = 0, activation: str = "relu") -> None:
        super().__init__()
        _, height, width = data_shape
        hs, ws = _conv_sizes(height, len(channels)), _conv_sizes(width, len(channels))
        self.head = nn.Sequential(  # a condition enters both dense layers (see MLPDecoder)
            nn.Linear(latent_dim + condition_features, hidden), ACTIVATIONS[activation](),
            nn.Linear(hidden + condition_features, channels[-1] * hs[-1] * ws[-1]), ACTIVATIONS[activation](),
            nn.Unflatten(1, (channels[-1], hs[-1], ws[-1])),
        )
        self.convs = nn.Sequential(*upsampling_convs(data_shape, channels, param_channels, activation))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        h = z
        for layer in self.head:
            h = layer(_join(h, c) if isinstance(layer, nn.Linear) else h)
        return self.convs(h)


def resolve_network(cfg: ModelConfig) -> str:
    is_image = len(cfg.data_shape) == 3
    if cfg.network == "auto":
        fits = is_image and bool(cfg.hidden_dims) and min(cfg.data_shape[1:]) >= max(8, 2 ** len(cfg.conv_channels))
        return "conv" if fits else "mlp"
    if cfg.network == "conv":
        if not cfg.hidden_dims:
            raise VaekitError("--network conv needs a dense width after the convolutions: give --hidden-dims, e.g. 256")
        if not is_image:
            raise VaekitError(
                f"--network conv needs image data (C, H, W), got shape {cfg.data_shape}: use --network mlp"
            )
        if min(cfg.data_shape[1:]) < 2 ** len(cfg.conv_channels):
            raise VaekitError(
                f"images of {cfg.data_shape[1]}x{cfg.data_shape[2]} are too small for {len(cfg.conv_channels)} "
                "stride-2 convolutions: use fewer --conv-channels or --network mlp"
            )
    return cfg.network


def build_networks(cfg: ModelConfig, posterior_features: int, latent_features: int, param_channels: int,
                   condition_features: int = 0) -> tuple[nn.Module, nn.Module]:
    """encoder: (x, c) -> posterior parameters (B, posterior_features); decoder: (z, c) -> likelihood parameters,
    z of latent_features; c the condition (B, condition_features) or None."""
    if not cfg.data_shape:
        raise VaekitError("model.data_shape is empty: build the model from a data set (vaekit fills it in)")
    if resolve_network(cfg) == "conv":
        hidden = cfg.hidden_dims[-1]
        return (
            ConvEncoder(cfg.data_shape, cfg.conv_channels, hidden, posterior_features, condition_features,
                        cfg.activation),
            ConvDecoder(cfg.data_shape, cfg.conv_channels, hidden, latent_features, param_channels, condition_features,
                        cfg.activation),
        )
    return (
        MLPEncoder(cfg.data_shape, cfg.hidden_dims, posterior_features, condition_features, cfg.activation),
        MLPDecoder(cfg.data_shape, cfg.hidden_dims, latent_features, param_channels, condition_features,
                   cfg.activation),
    )
