"""Training objectives, per data point, in nats per image (summed over pixels).

Registered by name in `OBJECTIVES`; each returns `ObjectiveTerms`, whose `objective` is what
training maximizes and whose ELBO terms are what the logs report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
import torch

from .contract import Model, kl, likelihood, posterior
from .distributions import Noise, rsample
from .factorvae import density_ratio


@dataclass
class ElboTerms:
    """Per-example terms, each (batch,): elbo = reconstruction - kl."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor  # Monte-Carlo estimate of E_q[log p(x|z)]
    kl: torch.Tensor  # KL(q(z|x) || p(z)): analytic where it has a closed form


@dataclass
class ObjectiveTerms(ElboTerms):
    objective: torch.Tensor  # what training maximizes, (batch,)

    def totals(self) -> torch.Tensor:
        """(4,): elbo, reconstruction, kl and objective, each summed over the batch (a training epoch's sums)."""
        return torch.stack([self.elbo, self.reconstruction, self.kl, self.objective]).sum(1)


def elbo(model: Model, x: torch.Tensor, samples: int = 1, generator: Noise = None,
         y: torch.Tensor | None = None) -> ElboTerms:
    """The reparameterized ELBO estimate with `samples` (r) draws of z per data point.

    x: (batch, n_pixels); y: (batch,) labels for a conditional model. The KL term is analytic
    for Gaussian q and prior, so then only the reconstruction term carries Monte-Carlo noise.
    """
    q = posterior(model, x, y)
    if samples == 1:  # the usual case, without a sample dimension to add and average away
        z = rsample(q, (), generator)  # (batch, latent): the same draws as shape (1, batch, latent)
        reconstruction = likelihood(model, z, y).log_prob(x)
        z = z.unsqueeze(0)
    else:
        z = rsample(q, (samples,), generator)  # (r, batch, latent)
        reconstruction = likelihood(model, z, y).log_prob(x).mean(0)
    kl_term = kl(model, q, model.prior(), z)
    return ElboTerms(reconstruction - kl_term, reconstruction, kl_term)


def weighted_elbo(model: Model, x: torch.Tensor, samples: int = 1, generator: Noise = None,
                  y: torch.Tensor | None = None, kl_weight: float | torch.Tensor = 1.0) -> ObjectiveTerms:
    """reconstruction - kl_weight * KL: the ELBO at weight 1, beta-VAE and KL warm-up otherwise.

    kl_weight may be a 0-d tensor (a compiled step takes it so, to keep one graph while it changes).
    """
    terms = elbo(model, x, samples, generator, y)
    at_one = not isinstance(kl_weight, torch.Tensor) and kl_weight == 1.0
    objective = terms.elbo if at_one else terms.reconstruction - kl_weight * terms.kl
    return ObjectiveTerms(terms.elbo, terms.reconstruction, terms.kl, objective)


def log_weights(model: Model, x: torch.Tensor, k: int, generator: Noise = None,
                y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log w, log p(x|z), log q(z|x) - log p(z)) for k samples z ~ q(z|x), each (k, batch)."""
    q = posterior(model, x, y)
    z = rsample(q, (k,), generator)
    log_px_z = likelihood(model, z, y).log_prob(x)
    log_ratio = q.log_prob(z) - model.prior().log_prob(z)
    return log_px_z - log_ratio, log_px_z, log_ratio


def iwae_bound(model: Model, x: torch.Tensor, k: int = 50, generator: Noise = None,
               y: torch.Tensor | None = None, kl_weight: float = 1.0) -> ObjectiveTerms:
    """The importance-weighted bound log (1/k) sum_k w_k (Burda et al., 2016); k = 1 is the ELBO.

    The ELBO terms reported beside it are the k-sample Monte-Carlo averages.
    """
    log_w, log_px_z, log_ratio = log_weights(model, x, k, generator, y)
    bound = torch.logsumexp(log_w, 0) - math.log(k)
    reconstruction, kl_term = log_px_z.mean(0), log_ratio.mean(0)
    return ObjectiveTerms(reconstruction - kl_term, reconstruction, kl_term, bound)


iwae_bound.takes_kl_weight = False  # beta and KL warm-up mean nothing for it (config checks this)


@dataclass
class FactorVaeTerms(ObjectiveTerms):
    z: torch.Tensor  # (batch, latent): the codes drawn, which the discriminator trains on next
    tc: torch.Tensor  # (batch,): the discriminator's estimate of log q(z) / prod_j q(z_j) at each code


def factor_vae(model: Model, x: torch.Tensor, samples: int = 1, generator: Noise = None,
               y: torch.Tensor | None = None, kl_weight: float | torch.Tensor = 1.0, *,
               discriminator: torch.nn.Module, gamma: float) -> FactorVaeTerms:
    """FactorVAE (Kim & Mnih, 2018): reconstruction - kl_weight * KL - gamma * TC, TC estimated by
    `discriminator` (held fixed here; vaelab.factorvae.Adversary trains it after the step).

    One z per image (config refuses objective.samples > 1); x: (batch, n_pixels).
    """
    q = posterior(model, x, y)
    z = rsample(q, (), generator)
    reconstruction = likelihood(model, z, y).log_prob(x)
    kl_term = kl(model, q, model.prior(), z.unsqueeze(0))
    codes = z.flatten(1)
    tc = density_ratio(discriminator, codes.float(), frozen=True)
    objective = reconstruction - kl_weight * kl_term - gamma * tc
    return FactorVaeTerms(reconstruction - kl_term, reconstruction, kl_term, objective, codes, tc)


factor_vae.adversary = True  # trains a discriminator beside the model (training.step, config check this)


OBJECTIVES: dict[str, Callable[..., ObjectiveTerms]] = {
    "elbo": weighted_elbo,
    "iwae": iwae_bound,
    "factorvae": factor_vae,
}
