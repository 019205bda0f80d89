"""Distributions the model is built from, all `torch.distributions` objects.

Two things torch lacks are here: sampling with an explicit `torch.Generator` (torch's
`rsample` draws from the global RNG, and vaelab keeps no global random state so that a run
can be resumed exactly), and the decoder heads that turn network outputs into a likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from .config import ModelConfig


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    """N(loc, diag scale^2) over the last dimension; log_prob sums over it.

    Argument checks are off: they would synchronise with the device on every step.
    """
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


def standard_normal(dim: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Independent:
    """The prior N(0, I) over `dim` latent dimensions."""
    zeros = torch.zeros(dim, device=device, dtype=dtype)
    return diagonal_normal(zeros, torch.ones_like(zeros))


# ---------------------------------------------------------------- sampling with a generator

def _reparameterized_normal(dist: Normal, shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
    eps = torch.randn(shape, generator=generator, device=dist.loc.device, dtype=dist.loc.dtype)
    return dist.loc + dist.scale * eps


def _bernoulli(dist: Bernoulli, shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
    return torch.bernoulli(dist.probs.expand(shape), generator=generator)


SAMPLERS: dict[type[Distribution], Callable[[Distribution, torch.Size, torch.Generator | None], torch.Tensor]] = {
    Normal: _reparameterized_normal,
    Bernoulli: _bernoulli,
}


def rsample(dist: Distribution, sample_shape: tuple[int, ...] = (),
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Like `dist.rsample(sample_shape)`, but drawing noise from `generator`.

    Returns (*sample_shape, *dist.batch_shape, *dist.event_shape); reparameterized (gradients
    reach the parameters) wherever the distribution allows it.
    """
    base = dist
    while isinstance(base, Independent):
        base = base.base_dist
    sampler = SAMPLERS.get(type(base))
    if sampler is None:
        raise TypeError(f"no generator-aware sampler for {type(base).__name__}; register one in SAMPLERS")
    shape = dist._extended_shape(torch.Size(sample_shape))
    return sampler(base, shape, generator)


# ---------------------------------------------------------------- decoder heads

class BernoulliHead(nn.Module):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(f_i(z))), scored on logits (stable log-sigmoid)."""

    params_per_pixel = 1

    def __init__(self, config: ModelConfig, n_pixels: int) -> None:
        super().__init__()

    def forward(self, out: torch.Tensor) -> Independent:
        """out: (..., n_pixels) logits."""
        # validate_args=False also lets grey targets through, the "BCE" some courses train with.
        return BernoulliImage(Bernoulli(logits=out, validate_args=False), 1, validate_args=False)


class BernoulliImage(Independent):
    """Independent Bernoulli pixels whose log_prob is computed as x . logits - sum softplus(logits).

    The same value as torch's (log sigmoid(l) = l - softplus(l)), in one dot product and one
    softplus instead of an elementwise cross-entropy: the importance-sampled NLL evaluates this
    for millions of (image, z) pairs, and it is half of that work.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """value: (..., n_pixels), broadcast against the logits (..., n_pixels) -> (...)."""
        logits = self.base_dist.logits
        return torch.einsum("...p,...p->...", logits, value.to(logits.dtype)) - nn.functional.softplus(logits).sum(-1)


class GaussianHead(nn.Module):
    """p(x|z) = prod_i N(x_i; sigmoid(f_i(z)), sigma^2), sigma fixed, shared or per pixel.

    A learned sigma is min_sigma + softplus(raw): it cannot collapse to zero, where the
    density of a grey-level pixel would be unbounded.
    """

    params_per_pixel = 1

    def __init__(self, config: ModelConfig, n_pixels: int) -> None:
        super().__init__()
        self.mode = config.gaussian_variance
        self.min_sigma = config.min_sigma
        start = config.gaussian_sigma - config.min_sigma
        raw = math.log(math.expm1(start)) if start > 0 else -20.0  # softplus^-1(start)
        size = {"fixed": 1, "shared": 1, "per_pixel": n_pixels}[self.mode]
        value = torch.full((size,), raw)
        if self.mode == "fixed":
            self.register_buffer("raw_sigma", value)
        else:
            self.raw_sigma = nn.Parameter(value)

    @property
    def sigma(self) -> torch.Tensor:
        """(1,) or (n_pixels,)."""
        return self.min_sigma + nn.functional.softplus(self.raw_sigma)

    def forward(self, out: torch.Tensor) -> Independent:
        """out: (..., n_pixels) pre-sigmoid means."""
        mean = torch.sigmoid(out)
        return diagonal_normal(mean, self.sigma.expand_as(mean))


LIKELIHOOD_HEADS: dict[str, type[nn.Module]] = {
    "bernoulli": BernoulliHead,
    "gaussian": GaussianHead,
}
