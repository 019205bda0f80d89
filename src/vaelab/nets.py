"""Neural networks that map data to distribution parameters and back."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .config import ConfigError
from .conv_shapes import conv_misfit, conv_sides
from .distributions import compiled_scoring


class Linear(nn.Linear):
    """nn.Linear, its bias added apart from the product in compiled scoring (`distributions.compiled_scoring`).

    A compiled CPU graph runs nn.Linear as addmm, which first copies the bias into every row of
    the output; a product and an addition let the compiler add the bias inside the next layer's
    fused pass (the activation, or the Bernoulli log-density of the logits) instead.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if compiled_scoring():
            return torch.matmul(x, self.weight.t()) + self.bias
        return super().forward(x)


class Tanh(nn.Tanh):
    """nn.Tanh, written through exp in compiled scoring (`distributions.compiled_scoring`).

    tanh(a) = sign(a) (1 - e) / (1 + e) with e = exp(-2|a|) in (0, 1]: the same function to about
    1e-7 (tests/test_nets.py checks it against torch.tanh), which a compiled CPU kernel computes
    with one vectorized exp and a division, several times faster than its vectorized tanh: after
    the matrix products, the hidden layers' tanh is the largest cost of importance-sampled scoring.
    Training and eager code call torch.tanh.
    """

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if compiled_scoring():
            e = torch.exp(-2 * a.abs())
            return torch.copysign((1 - e) / (1 + e), a)
        return torch.tanh(a)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": Tanh,
    "softplus": nn.Softplus,
    # ELU (Clevert et al., 2016): the negative side saturates at -alpha like tanh, the positive side
    # does not, so products stay in their linear range; it trains mnist-vampprior's MLPs faster than tanh
    "elu": nn.ELU,
}


# model.init -> (weight, init_std) -> weights drawn in place: Glorot-uniform, or N(0, std^2) as the
# Stanford assignment asks
INITS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "glorot": lambda weight, std: nn.init.xavier_uniform_(weight),
    "normal": lambda weight, std: nn.init.normal_(weight, 0.0, std),
}


def init_linear(layer: nn.Linear, scheme: str, std: float = 0.01) -> None:
    """The weights by `scheme` (a key of INITS); zero biases."""
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r} (known: {', '.join(INITS)})")
    INITS[scheme](layer.weight, std)
    nn.init.zeros_(layer.bias)


def plain_block(n_in: int, n_out: int, activation: str) -> list[nn.Module]:
    """h = activation(W x + b)."""
    return [Linear(n_in, n_out), ACTIVATIONS[activation]()]


def gated_block(n_in: int, n_out: int, activation: str) -> list[nn.Module]:
    """h = (W x + b) * sigmoid(V x + c), the gated linear unit (Dauphin et al., 2017).

    Tomczak & Welling's VampPrior MLPs are built of these. [W; V] is one Linear of 2 n_out outputs
    (one product instead of two), and nn.GLU multiplies its first half by the sigmoid of its
    second. The gate is the nonlinearity: `activation` is not used.
    """
    return [Linear(n_in, 2 * n_out), nn.GLU(dim=-1)]


class Block(NamedTuple):
    """A kind of hidden layer: what builds it and what others need to know of it."""
    build: Callable[[int, int, str], list[nn.Module]]  # (n_in, n_out, activation) -> its modules, its Linear first
    product_width: int  # the Linear's outputs per unit: scoring sizes its chunks by the widest product
    units: Callable[[str], str]  # model.activation -> what its units are called (the explorer page's header)


# model.block -> the kind of every fully connected hidden layer
BLOCKS: dict[str, Block] = {
    "plain": Block(plain_block, 1, lambda activation: activation),
    "gated": Block(gated_block, 2, lambda activation: "gated"),
}


class MLP(nn.Sequential):
    """in_features -> hidden... -> out_features: hidden layers of `block`, a Linear at the end.

    Input (..., in_features), output (..., out_features): leading dimensions (samples, batch)
    pass through unchanged.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int,
                 activation: str = "relu", init: str = "glorot", init_std: float = 0.01,
                 block: str = "plain") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r} (known: {', '.join(ACTIVATIONS)})")
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r} (known: {', '.join(BLOCKS)})")
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes, hidden):
            modules = BLOCKS[block].build(n_in, n_out, activation)
            init_linear(modules[0], init, init_std)  # each layer drawn as it is made: a seed's weights stay as they were
            layers += modules
        layers.append(Linear(sizes[-1], out_features))
        init_linear(layers[-1], init, init_std)
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features

    @property
    def last(self) -> nn.Linear:
        return self[-1]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_conv_fits(h: int, w: int, layers: int) -> None:
    """Refuse, naming model.conv_channels, images with a side that `layers` halvings would take to 0."""
    misfit = conv_misfit(h, w, layers)
    if misfit:
        raise ConfigError(f"model.conv_channels: {misfit}")


class ConvEncoder(nn.Module):
    """Image (..., C*H*W) -> (..., out_features): stride-2 4x4 convolutions halve the sides, then a linear layer.

    Any H x W whose sides survive the halvings (`check_conv_fits`); sides follow `conv_sides`.
    `extra` features (e.g. a one-hot label) join after the convolutions, before the linear layer.
    """

    def __init__(self, image_shape: tuple[int, int, int], channels: Sequence[int], out_features: int,
                 activation: str = "relu", extra: int = 0) -> None:
        super().__init__()
        c, h, w = image_shape
        check_conv_fits(h, w, len(channels))
        layers: list[nn.Module] = []
        for n_in, n_out in zip([c, *channels[:-1]], channels):
            layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), ACTIVATIONS[activation]()]
        self.convs = nn.Sequential(*layers)
        self.image_shape = image_shape
        self.flat = channels[-1] * conv_sides(h, len(channels))[-1] * conv_sides(w, len(channels))[-1]
        self.linear = nn.Linear(self.flat + extra, out_features)

    @property
    def last(self) -> nn.Linear:
        return self.linear

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        lead = x.shape[:-1]
        features = self.convs(x.reshape(-1, *self.image_shape)).flatten(1)
        if extra is not None:
            features = torch.cat([features, extra.reshape(-1, extra.shape[-1])], -1)
        return self.linear(features).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """z (..., in_features) -> (..., params * C*H*W), parameter-major, through transposed convolutions.

    Each transposed convolution gives back the size one encoder step took: from s_{i+1} = floor(s_i/2) it
    makes 2 s_{i+1} + output_padding = s_i with output_padding = s_i mod 2 (see `conv_sides`).
    """

    def __init__(self, in_features: int, image_shape: tuple[int, int, int], channels: Sequence[int],
                 params_per_pixel: int, activation: str = "relu") -> None:
        super().__init__()
        c, h, w = image_shape
        check_conv_fits(h, w, len(channels))
        reversed_channels = list(reversed(channels))
        # (height, width) coarsest first: s_L where the linear layer starts, then what each layer makes
        targets = list(zip(conv_sides(h, len(channels)), conv_sides(w, len(channels))))[::-1]
        self.start = (reversed_channels[0], *targets[0])
        self.linear = nn.Sequential(nn.Linear(in_features, math.prod(self.start)), ACTIVATIONS[activation]())
        layers: list[nn.Module] = []
        outs = [*reversed_channels[1:], c * params_per_pixel]
        for i, (n_in, n_out) in enumerate(zip(reversed_channels, outs)):
            layers.append(_upsample(n_in, n_out, targets[i + 1]))
            if i < len(outs) - 1:
                layers.append(ACTIVATIONS[activation]())
        self.deconvs = nn.Sequential(*layers)

    @property
    def last(self) -> nn.ConvTranspose2d:
        return self.deconvs[-1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        maps = self.deconvs(self.linear(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start))
        return maps.reshape(*lead, -1)  # (params*C, H, W) flattened: parameter-major


def _upsample(n_in: int, n_out: int, target: tuple[int, int]) -> nn.ConvTranspose2d:
    """A 4x4 stride-2 transposed convolution from floor(h/2) x floor(w/2) to exactly h x w.

    output_padding adds no parameters, so at even sides the layer is the one the divisible-only
    rule built, and old checkpoints load unchanged.
    """
    h, w = target
    return nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1, output_padding=(h % 2, w % 2))
