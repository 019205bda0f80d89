"""Neural networks that map data to distribution parameters and back."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}


def init_linear(layer: nn.Linear, scheme: str, std: float = 0.01) -> None:
    """Glorot-uniform weights, or N(0, std^2) weights as the Stanford assignment asks; zero biases."""
    if scheme == "glorot":
        nn.init.xavier_uniform_(layer.weight)
    elif scheme == "normal":
        nn.init.normal_(layer.weight, 0.0, std)
    else:
        raise ValueError(f"unknown init {scheme!r} (known: glorot, normal)")
    nn.init.zeros_(layer.bias)


class MLP(nn.Sequential):
    """in_features -> hidden... -> out_features, with `activation` between layers and none at the end.

    Input (..., in_features), output (..., out_features): leading dimensions (samples, batch)
    pass through unchanged.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int,
                 activation: str = "relu", init: str = "glorot", init_std: float = 0.01) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r} (known: {', '.join(ACTIVATIONS)})")
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            linear = nn.Linear(n_in, n_out)
            init_linear(linear, init, init_std)
            layers.append(linear)
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features

    @property
    def last(self) -> nn.Linear:
        return self[-1]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
