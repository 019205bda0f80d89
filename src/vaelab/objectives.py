"""Training objectives, per data point, in nats per image (summed over pixels)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import kl_divergence

from .distributions import rsample
from .model import VAE


@dataclass
class ElboTerms:
    """Per-example terms, each (batch,): elbo = reconstruction - kl."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor  # Monte-Carlo estimate of E_q[log p(x|z)]
    kl: torch.Tensor  # KL(q(z|x) || p(z)), analytic


def elbo(model: VAE, x: torch.Tensor, samples: int = 1,
         generator: torch.Generator | None = None) -> ElboTerms:
    """The reparameterized ELBO estimate with `samples` (r) draws of z per data point.

    x: (batch, n_pixels). The KL term is analytic for Gaussian q and prior, so only the
    reconstruction term carries Monte-Carlo noise.
    """
    posterior = model.posterior(x)
    z = rsample(posterior, (samples,), generator)  # (r, batch, latent)
    reconstruction = model.likelihood(z).log_prob(x).mean(0)
    kl = kl_divergence(posterior, model.prior())
    return ElboTerms(reconstruction - kl, reconstruction, kl)
