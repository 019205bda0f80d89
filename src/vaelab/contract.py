"""The model contract: what vaelab needs of a model to train, score, draw and explore it.

A model is a `torch.nn.Module` with three methods, each returning a `torch.distributions` object:

    prior()                 p(z)     log_prob(z) -> (...)        z: (..., *event_shape)
    posterior(x, y=None)    q(z|x)   batch_shape (batch,)        x: (batch, C*H*W) in [0, 1]
    likelihood(z, y=None)   p(x|z)   log_prob(x) -> (...)        its event is the pixels

`Model` is a small base class that adds the optional parts with defaults (`kl`, `decode_mean`,
`encode_mean`, `n_labels`, `image_shape`, mixed precision); any module with the three methods
works too, since the functions here supply the defaults for a module that lacks them.
`check_model` runs two images through a model once and says, in one line, what does not fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, Independent, kl_divergence

from .distributions import rsample
from .errors import VaelabError


class ModelError(VaelabError, ValueError):
    """A model that does not meet the contract; the message says what it returned and what is needed."""


class Model(nn.Module):
    """Base class of vaelab models: implement `prior`, `posterior` and `likelihood`.

    A conditional model sets `n_labels` (the number of classes) and takes the labels y, (batch,)
    integers, in `posterior(x, y)` and `likelihood(z, y)`.
    """

    n_labels: int = 0

    def __init__(self, image_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.network_dtype: torch.dtype | None = None  # set by `mixed_precision`, during training steps

    def prior(self) -> Distribution:
        raise NotImplementedError("a vaelab.Model defines prior() -> p(z)")

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        raise NotImplementedError("a vaelab.Model defines posterior(x) -> q(z|x)")

    def likelihood(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        raise NotImplementedError("a vaelab.Model defines likelihood(z) -> p(x|z)")

    def kl(self, posterior: Distribution, prior: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
        """KL(q || p) per data point, (batch,): analytic where torch has it, else Monte-Carlo over z."""
        return kl_terms(posterior, prior, z)

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x|z]: (..., C*H*W) in [0, 1]; what the figures and the explorer show."""
        return self.likelihood(z, y).mean

    @torch.no_grad()
    def encode_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean, flattened: (batch, latent size)."""
        return self.posterior(x, y).mean.flatten(1)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @contextmanager
    def mixed_precision(self, dtype: torch.dtype | None) -> Iterator[None]:
        """Within the block, `network` multiplies in `dtype` (autocast; None: float32).

        Training steps use it; the distributions and their log-probabilities stay float32, since
        `network` hands its outputs back as float32.
        """
        saved, self.network_dtype = self.network_dtype, dtype
        try:
            yield
        finally:
            self.network_dtype = saved

    def network(self, net: nn.Module, *inputs: torch.Tensor | None) -> torch.Tensor:
        """net(*inputs), in the training precision inside `mixed_precision`, the output as float32."""
        if self.network_dtype is None:
            return net(*inputs)
        with torch.autocast(inputs[0].device.type, dtype=self.network_dtype):
            out = net(*inputs)
        return out.float()


def kl_terms(posterior: Distribution, prior: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
    """KL(q || p) per data point, (batch,): analytic where torch has it, else Monte-Carlo over z (S, batch, ...)."""
    try:
        return kl_divergence(posterior, prior)
    except NotImplementedError:
        if z is None:
            raise
        return (posterior.log_prob(z) - prior.log_prob(z)).mean(0)


# ---------------------------------------------------------------- the optional parts, for any module

def posterior(model: Any, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
    """q(z|x[, y]); an unconditional model is called without y (its posterior may take x alone)."""
    return model.posterior(x) if y is None else model.posterior(x, y)


def likelihood(model: Any, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
    return model.likelihood(z) if y is None else model.likelihood(z, y)


def kl(model: Any, q: Distribution, p: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
    """The model's own KL where it has one, else `kl_terms`."""
    return model.kl(q, p, z) if hasattr(model, "kl") else kl_terms(q, p, z)


def n_labels(model: Any) -> int:
    """How many classes a conditional model takes (0: unconditional)."""
    return int(getattr(model, "n_labels", 0) or 0)


@torch.no_grad()
def decode_mean(model: Any, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    if hasattr(model, "decode_mean"):
        return model.decode_mean(z) if y is None else model.decode_mean(z, y)
    return likelihood(model, z, y).mean


@torch.no_grad()
def encode_mean(model: Any, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    if hasattr(model, "encode_mean"):
        return model.encode_mean(x) if y is None else model.encode_mean(x, y)
    return posterior(model, x, y).mean.flatten(1)


def device_of(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def mixed_precision(model: Any, dtype: torch.dtype | None) -> Any:
    """The model's mixed-precision block, or float32 throughout for a model that has none."""
    return model.mixed_precision(dtype) if hasattr(model, "mixed_precision") else nullcontext()


def latent_shape(model: Any) -> tuple[int, ...]:
    """The event shape of z, as the prior gives it: (latent,) or (variables, categories)."""
    return tuple(model.prior().event_shape)


def latent_size(model: Any) -> int:
    """Entries of z flattened: what encode_mean returns per image."""
    return math.prod(latent_shape(model))


@torch.no_grad()
def pixel_distribution(model: Any) -> Distribution:
    """The distribution of one pixel under p(x|z) at a z from the prior (Independent unwrapped)."""
    y = torch.zeros(1, dtype=torch.long, device=device_of(model)) if n_labels(model) else None
    px = likelihood(model, model.prior().sample((1,)), y)
    while isinstance(px, Independent):
        px = px.base_dist
    return px


def likelihood_name(model: Any) -> str:
    """How tables and pages name a model's p(x|z): its `likelihood_name`, else its pixels' distribution."""
    return getattr(model, "likelihood_name", None) or type(pixel_distribution(model)).__name__


# ---------------------------------------------------------------- the check when a model is built

def _need(ok: bool, who: str, message: str) -> None:
    if not ok:
        raise ModelError(f"{who}: {message}")


def _shape(t: Any) -> str:
    return f"({', '.join(str(s) for s in t.shape)})" if isinstance(t, torch.Tensor) else type(t).__name__


def check_model(model: Any, image_shape: tuple[int, int, int], who: str = "model") -> None:
    """Run two images through the model and stop with one line where it breaks the contract.

    Checks: it is an nn.Module with parameters and the three methods; each returns a Distribution;
    z drawn from q(z|x) has a batch of 2; q, p(z) and p(x|z) score it to shape (2,) (log_prob
    summed over the latent dimensions and over the pixels).
    """
    _need(isinstance(model, nn.Module), who, f"is a {type(model).__name__}, not a torch.nn.Module")
    for method in ("prior", "posterior", "likelihood"):
        _need(callable(getattr(model, method, None)), who, f"has no {method}() method (see vaelab.Model)")
    _need(any(True for _ in model.parameters()), who, "has no parameters to train")
    device = device_of(model)
    x = torch.rand(2, math.prod(image_shape), device=device).round()
    y = torch.zeros(2, dtype=torch.long, device=device) if n_labels(model) else None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _check_outputs(model, x, y, who)
    finally:
        model.train(was_training)


def _check_outputs(model: Any, x: torch.Tensor, y: torch.Tensor | None, who: str) -> None:
    q = posterior(model, x, y)
    _need(isinstance(q, Distribution), who, f"posterior(x) returned a {type(q).__name__}; it must return a "
          "torch.distributions.Distribution")
    try:
        z = rsample(q)  # as training draws it: from vaelab's generator
    except TypeError as err:
        raise ModelError(f"{who}: posterior(x): {err}") from None
    _need(z.shape[:1] == (2,), who, f"posterior(x) for x of shape {_shape(x)} drew z of shape {_shape(z)}; "
          "its batch_shape must be (batch,)")
    p = model.prior()
    _need(isinstance(p, Distribution), who, f"prior() returned a {type(p).__name__}, not a Distribution")
    px = likelihood(model, z, y)
    _need(isinstance(px, Distribution), who, f"likelihood(z) returned a {type(px).__name__}, not a Distribution")
    for name, value, sums_over in (("posterior(x).log_prob(z)", q.log_prob(z), "the latent dimensions"),
                                   ("prior().log_prob(z)", p.log_prob(z), "the latent dimensions"),
                                   ("likelihood(z).log_prob(x)", px.log_prob(x), "the pixels")):
        _need(value.shape == (2,), who, f"{name} returned shape {_shape(value)} for a batch of 2; it must sum over "
              f"{sums_over} to (batch,): wrap the distribution in torch.distributions.Independent(d, 1)")
    _need(px.mean.shape[-1] == x.shape[-1], who, f"likelihood(z).mean has shape {_shape(px.mean)}; it must end "
          f"in the {x.shape[-1]} pixels of an image")
