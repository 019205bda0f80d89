"""Latent families: what the encoder's outputs mean, the prior, and the KL between them.

Each family turns the encoder output (..., n_params) into q(z|x), gives the prior p(z), and
computes KL(q || p) per data point: analytic where torch has the closed form, Monte-Carlo
over the drawn z otherwise. Registered in `LATENT_FAMILIES`. A family's `kind` says what its z
is to the figures and the explorer: "continuous" (a vector) or "categorical" (one-hot variables
side by side); one that does not say is continuous (`latent_kind`).

`unit_activity` says how much each latent unit's posterior mean varies over the data, the one
measure of active units that evaluations and figures share.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Distribution, Independent, OneHotCategorical, RelaxedOneHotCategorical

from .config import ModelConfig
from .contract import kl_terms  # noqa: F401  (re-exported: the families' KL)
from .distributions import diagonal_laplace, diagonal_normal, normal_from_log_var


# model.prior -> (loc, scale) -> the standard prior of continuous latents
def normal_prior(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    return diagonal_normal(loc, scale)


def laplace_prior(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    return diagonal_laplace(loc, scale)


normal_prior.display_name = "N(0, I)"  # how figures and pages write the prior (a plugin may set its own)
laplace_prior.display_name = "Laplace(0, 1)"

PRIORS: dict[str, Callable[[torch.Tensor, torch.Tensor], Independent]] = {
    "normal": normal_prior,
    "laplace": laplace_prior,
}


def prior_display_name(name: str) -> str:
    """The standard prior `name` as figures write it: its entry's `display_name`, else the name itself."""
    return getattr(PRIORS[name], "display_name", name)


def standard_prior(name: str, dim: int, device: torch.device, dtype: torch.dtype) -> Independent:
    """N(0, I) or Laplace(0, 1) (PRIORS[name]) over `dim` dimensions."""
    zeros = torch.zeros(dim, device=device, dtype=dtype)
    return PRIORS[name](zeros, torch.ones_like(zeros))


class GaussianLatent(nn.Module):
    """q(z|x) = N(mu, diag sigma^2) from (mu, log sigma^2); prior N(0, I) or Laplace(0, 1)."""

    params_text = "mean and log-variance"  # what the encoder's outputs are, for error messages
    kind = "continuous"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dim, self.prior_name = config.latent_dim, config.prior
        self.n_params, self.size = 2 * config.latent_dim, config.latent_dim
        self.log_var_bounds = tuple(config.log_var_bounds)
        self._priors: dict[tuple[torch.device, torch.dtype], Distribution] = {}  # fixed: built once per device

    def posterior(self, params: torch.Tensor) -> Distribution:
        return normal_from_log_var(params, self.log_var_bounds)

    def prior(self, device: torch.device, dtype: torch.dtype) -> Distribution:
        key = (torch.device(device), dtype)
        if key not in self._priors:
            self._priors[key] = standard_prior(self.prior_name, self.dim, device, dtype)
        return self._priors[key]

    def kl(self, posterior: Distribution, prior: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
        return kl_terms(posterior, prior, z)

    def flatten(self, z: torch.Tensor) -> torch.Tensor:
        return z


class LaplaceLatent(GaussianLatent):
    """q(z|x) = Laplace(loc, scale) from (loc, log scale), sampled by the inverse CDF (Stanford §4a)."""

    params_text = "location and log-scale"

    def posterior(self, params: torch.Tensor) -> Distribution:
        loc, log_scale = params.chunk(2, dim=-1)
        return diagonal_laplace(loc, torch.exp(log_scale))


class CategoricalLatent(nn.Module):
    """latent_dim categorical variables of `categories` classes side by side (Stanford §4b).

    Training: relaxed one-hot samples (Gumbel-softmax) at the current temperature. Evaluation
    (module in eval mode): hard one-hot samples. The prior is uniform; the KL is the discrete
    KL(Cat(q) || Uniform) in both modes (Jang et al., 2017).
    """

    params_text = "the logits of each variable's categories"
    kind = "categorical"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.variables, self.categories = config.latent_dim, config.categories
        self.n_params = self.size = config.latent_dim * config.categories
        self.register_buffer("temperature", torch.tensor(config.temperature))

    def start_epoch(self, epoch: int) -> None:
        """The Gumbel-softmax temperature of this epoch (annealed: `temperature_at`)."""
        self.temperature.fill_(temperature_at(self.config, epoch))

    def _logits(self, params: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(params.unflatten(-1, (self.variables, self.categories)), -1)

    def _family(self, logits: torch.Tensor) -> Distribution:
        if self.training:
            return Independent(RelaxedOneHotCategorical(self.temperature, logits=logits, validate_args=False), 1)
        return Independent(OneHotCategorical(logits=logits, validate_args=False), 1)

    def posterior(self, params: torch.Tensor) -> Distribution:
        """params (..., variables * categories) -> event (variables, categories)."""
        return self._family(self._logits(params))

    def prior(self, device: torch.device, dtype: torch.dtype) -> Distribution:
        uniform = torch.full((self.variables, self.categories), -math.log(self.categories), device=device, dtype=dtype)
        return self._family(uniform)

    def kl(self, posterior: Distribution, prior: Distribution, z: torch.Tensor | None = None) -> torch.Tensor:
        """sum over variables of sum_c q_c (log q_c - log p_c), (batch,)."""
        q_logits, p_logits = _logits_of(posterior), _logits_of(prior)
        return (q_logits.exp() * (q_logits - p_logits)).sum((-1, -2))

    def flatten(self, z: torch.Tensor) -> torch.Tensor:
        return z.flatten(-2)


def _logits_of(dist: Distribution) -> torch.Tensor:
    base = dist.base_dist if isinstance(dist, Independent) else dist
    return base.logits


LATENT_FAMILIES: dict[str, type[nn.Module]] = {
    "normal": GaussianLatent,
    "laplace": LaplaceLatent,
    "categorical": CategoricalLatent,
}


def latent_kind(latent: nn.Module) -> str:
    """"continuous" or "categorical": the family's `kind` (continuous for a family that does not say)."""
    return getattr(latent, "kind", "continuous")


# A unit is active when its activity exceeds this (Burda et al., 2016): a unit whose posterior mean
# hardly moves with x carries next to nothing about x. Evaluations and figures count with it alike.
ACTIVE_THRESHOLD = 0.01


def unit_activity(means: torch.Tensor) -> torch.Tensor:
    """(n, latent) posterior means E_q[z|x] of n images -> (latent,) float64 activity Cov_x(E_q[z_j|x]):
    the variance of each mean over these n images (divided by n, not n - 1: it describes them, it does
    not estimate a larger population)."""
    means = means.double()
    return activity_from_sums(means.sum(0), (means**2).sum(0), len(means))


def activity_from_sums(total: torch.Tensor, total_of_squares: torch.Tensor, n: int) -> torch.Tensor:
    """`unit_activity` from running sums over n images of the posterior means and of their squares,
    which is what an evaluation that streams over its images (and over ranks) can keep."""
    return total_of_squares / n - (total / n) ** 2


def temperature_at(config: ModelConfig, epoch: int) -> float:
    """The Gumbel-softmax temperature for `epoch` (0-based): exponential decay to a floor."""
    return max(config.temperature_min, config.temperature * math.exp(-config.temperature_decay * epoch))
