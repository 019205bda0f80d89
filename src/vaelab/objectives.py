"""Training objectives, per data point, in nats per image (summed over pixels).

Registered by name in `OBJECTIVES`; each returns `ObjectiveTerms`, whose `objective` is what
training maximizes and whose ELBO terms are what the logs report.

An objective is called as fn(model, x, samples, generator, y, kl_weight, **keywords), the
keywords being its config section's (`objective.btcvae`, ...) and `objective.args`. One that
needs what only the training loop knows names it in `fn.needs`, and the training step supplies
it as a keyword (`TRAINING_CONTEXT`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
import torch

from torch.distributions import Distribution, Independent

from .contract import Model, kl, likelihood, posterior
from .distributions import Noise, rsample
from .errors import VaelabError

# What the training step supplies to an objective that names it in its `needs`:
#   "dataset_size": int, the number of training images (N of β-TCVAE's estimates of q(z));
#   "step": 0-d float tensor, the optimizer steps taken before this one (the capacity's schedule).
# Both are known at every step of a resumed run as of an uninterrupted one, so such objectives resume exactly.
TRAINING_CONTEXT = ("dataset_size", "step")


class ObjectiveError(VaelabError, ValueError):
    """A model the objective cannot score (e.g. β-TCVAE with a posterior that is not diagonal)."""
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
    return elbo_of(model, posterior(model, x, y), x, samples, generator, y)


def elbo_of(model: Model, q: Distribution, x: torch.Tensor, samples: int = 1, generator: Noise = None,
            y: torch.Tensor | None = None) -> ElboTerms:
    """`elbo` with the posterior q(z|x) already computed (an objective that needs q itself too)."""
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


def dreg_log_weights(model: Model, x: torch.Tensor, k: int, generator: Noise = None,
                     y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`log_weights` whose log-sum-exp has the doubly reparameterized gradient (DReG; Tucker et al., 2019).

    Same values; the gradient reaching q's parameters through z_k is weighted by w~_k^2 (w~ = the
    normalized weights) and the score term, q's own dependence on its parameters at a fixed z, is
    gone: the same gradient in expectation, with less variance, which grows as k grows. The decoder's
    and the prior's gradients are IWAE's, draw for draw. Costs a forward pass without gradients,
    to know w~ before the pass that scales by it.
    """
    q, prior = posterior(model, x, y), model.prior()
    z = rsample(q, (k,), generator)
    fixed = z.detach()
    at_fixed = q.log_prob(fixed)  # q's parameters alone: adding it (worth 0) cancels the score term of -log q
    with torch.no_grad():
        normalized = torch.softmax(likelihood(model, fixed, y).log_prob(x) + prior.log_prob(fixed)
                                   - at_fixed, 0)  # w~ (k, batch)
    path = fixed + normalized.unsqueeze(-1) * (z - fixed)  # z's value; w~_k times its gradient to q's parameters
    log_px_z = likelihood(model, path, y).log_prob(x)
    log_ratio = q.log_prob(path) - prior.log_prob(path)
    return log_px_z - log_ratio + (at_fixed - at_fixed.detach()), log_px_z, log_ratio


# objective.iwae.gradient: the estimator of the IWAE bound's gradient
IWAE_GRADIENTS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {
    "reparameterized": log_weights,
    "dreg": dreg_log_weights,
}


def iwae_bound(model: Model, x: torch.Tensor, k: int = 50, generator: Noise = None,
               y: torch.Tensor | None = None, kl_weight: float = 1.0,
               gradient: str = "reparameterized") -> ObjectiveTerms:
    """The importance-weighted bound log (1/k) sum_k w_k (Burda et al., 2016); k = 1 is the ELBO.

    The ELBO terms reported beside it are the k-sample Monte-Carlo averages. `gradient`: how its
    gradient is estimated (`IWAE_GRADIENTS`); the value is the same.
    """
    weights = IWAE_GRADIENTS[gradient] if torch.is_grad_enabled() else log_weights  # no gradient: one pass
    log_w, log_px_z, log_ratio = weights(model, x, k, generator, y)
    bound = torch.logsumexp(log_w, 0) - math.log(k)
    reconstruction, kl_term = log_px_z.mean(0), log_ratio.mean(0)
    return ObjectiveTerms(reconstruction - kl_term, reconstruction, kl_term, bound)


iwae_bound.takes_kl_weight = False  # beta and KL warm-up mean nothing for it (config checks this)
# Validation scores it, and keeps the weights of its best, by this k-sample bound and not by the ELBO:
# as IWAE training tightens the bound, the ELBO of the same weights falls, so the ELBO would keep early epochs.
iwae_bound.validated_by_bound = True


def validation_bound_k(name: str, samples: int) -> int:
    """k of the bound validation selects weights by for objective `name` (see `iwae_bound`), or 0:
    the ELBO, for objectives whose target is the ELBO or a penalized one."""
    return samples if getattr(OBJECTIVES[name], "validated_by_bound", False) else 0


# ---------------------------------------------------------------- β-TCVAE (Chen et al., 2018)

def per_dimension(dist: Distribution, what: str) -> Distribution:
    """The per-dimension distribution inside a diagonal one, batch shape (..., d): Independent(base, 1)
    unwrapped. The KL decompositions and covariance penalties below need it."""
    if isinstance(dist, Independent) and dist.reinterpreted_batch_ndims == 1 \
            and dist.base_dist.event_shape == () and len(dist.base_dist.batch_shape) >= 1:
        return dist.base_dist
    raise ObjectiveError(f"{what} is a {type(dist).__name__}, not a diagonal distribution over a latent vector "
                         "(Independent(Normal or Laplace, 1)): this objective needs one (model.latent = "
                         "\"normal\" or \"laplace\", one stochastic layer, no VampPrior)")


def mws_log_weights(batch: int, dataset_size: int, like: torch.Tensor | None = None) -> torch.Tensor:
    """Minibatch-weighted sampling (Chen et al., 2018): every entry log 1/(N M).

    (batch, batch) log-weights w[i, j] of q(z_i | x_j) in the estimate q(z_i) ~ sum_j exp(w[i, j]) q(z_i | x_j).
    Biased: where the posteriors do not overlap, log q(z) comes out log M too low. On `like`'s
    device, in its dtype (default float32).
    """
    return _full((batch, batch), -math.log(dataset_size * batch), like)


def _full(shape: tuple[int, ...], value: float, like: torch.Tensor | None) -> torch.Tensor:
    if like is None:
        return torch.full(shape, value)
    return torch.full(shape, value, dtype=like.dtype, device=like.device)


def mss_log_weights(batch: int, dataset_size: int, like: torch.Tensor | None = None) -> torch.Tensor:
    """Minibatch-stratified sampling (Chen et al., 2018, appendix), (batch, batch) log-weights.

    With M = batch - 1 others beside the sample's own x_i: 1/N on q(z_i | x_i), (N - M)/(N M) on one
    other (here the next in the batch, x_{i+1 mod batch}) and 1/M on the remaining M - 1. The weights
    sum to 1, and since a shuffled batch's others are equally likely to be any of the N - 1 other
    images, the estimate of q(z_i) itself (not its log) is unbiased. The authors' code indexes the
    flattened matrix with stride `batch` where the diagonal's is `batch + 1`, so its weights miss
    the diagonal (rtqichen/beta-tcvae, pull request #1); these are the appendix's. A batch of one has no others: its weight is MWS's, 1/N.
    """
    n, m = dataset_size, batch - 1
    if m == 0:
        return mws_log_weights(batch, dataset_size, like)
    own = torch.eye(batch, dtype=torch.bool, device=None if like is None else like.device)
    stratum = own.roll(1, dims=1)  # [i, i + 1 mod batch]
    weights = _full((batch, batch), -math.log(m), like)
    weights = torch.where(stratum, math.log((n - m) / (n * m)), weights)
    return torch.where(own, -math.log(n), weights)


# objective.btcvae.sampling: how a minibatch estimates the aggregate posterior q(z) = 1/N sum_n q(z|x_n)
TC_SAMPLINGS: dict[str, Callable[..., torch.Tensor]] = {
    "mws": mws_log_weights,
    "mss": mss_log_weights,
}


def aggregate_log_densities(pairwise: torch.Tensor, log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q(z_i), log q(z_ik)) estimated from the batch's posteriors: (..., batch) and (..., batch, d).

    pairwise: (..., batch i, batch j, d), log q(z_ik | x_j), each sample's density under every posterior
    in the batch, per dimension; log_w: (batch, batch) log-weights (`TC_SAMPLINGS`).
    """
    joint = torch.logsumexp(log_w + pairwise.sum(-1), dim=-1)
    marginals = torch.logsumexp(log_w.unsqueeze(-1) + pairwise, dim=-2)
    return joint, marginals


@dataclass
class TcTerms(ElboTerms):
    """The KL's decomposition (Chen et al., 2018), each (batch,), Monte-Carlo over the drawn z:
    mutual_information + total_correlation + dimensionwise_kl = log q(z|x) - log p(z), whose
    expectation is the ELBO's KL."""

    mutual_information: torch.Tensor  # log q(z|x) - log q(z)
    total_correlation: torch.Tensor  # log q(z) - sum_k log q(z_k)
    dimensionwise_kl: torch.Tensor  # sum_k log q(z_k) - log p(z_k)


def tc_decomposition(model: Model, x: torch.Tensor, samples: int = 1, generator: Noise = None,
                     y: torch.Tensor | None = None, *, dataset_size: int, sampling: str = "mws") -> TcTerms:
    """The ELBO's terms and the KL's three parts, with q(z) estimated on the batch (`TC_SAMPLINGS`).

    x: (batch, n_pixels); `dataset_size` (N) is the number of images the batches are drawn from.
    The (samples, batch, batch, d) log-densities of each drawn z under each posterior of the batch
    come from the posterior's own per-dimension `log_prob`, broadcast.
    """
    if dataset_size < len(x):
        raise ObjectiveError(f"a batch of {len(x)} images cannot be drawn from {dataset_size} (dataset_size)")
    q = posterior(model, x, y)
    q_dims = per_dimension(q, "the posterior q(z|x)")
    prior = model.prior()
    p_dims = per_dimension(prior, "the prior p(z)")
    z = rsample(q, (samples,), generator)  # (r, batch, d)
    reconstruction = likelihood(model, z, y).log_prob(x).mean(0)
    kl_term = kl(model, q, prior, z)
    log_w = TC_SAMPLINGS[sampling](len(x), dataset_size, z)
    log_qz, log_qz_dims = aggregate_log_densities(q_dims.log_prob(z.unsqueeze(-2)), log_w)
    log_qz_x = q.log_prob(z)  # (r, batch)
    log_pz_dims = p_dims.log_prob(z)  # (r, batch, d)
    return TcTerms(reconstruction - kl_term, reconstruction, kl_term,
                   (log_qz_x - log_qz).mean(0), (log_qz - log_qz_dims.sum(-1)).mean(0),
                   (log_qz_dims - log_pz_dims).sum(-1).mean(0))


def btcvae(model: Model, x: torch.Tensor, samples: int = 1, generator: Noise = None, y: torch.Tensor | None = None,
           kl_weight: float | torch.Tensor = 1.0, *, dataset_size: int, sampling: str = "mws",
           alpha: float = 1.0, gamma: float = 1.0) -> ObjectiveTerms:
    """β-TCVAE (Chen et al., 2018): reconstruction - (alpha MI + beta TC + gamma dimension-wise KL).

    beta is `kl_weight` (objective.beta, through its warm-up; the authors' code can anneal it too);
    at alpha = beta = gamma = 1 the objective is the ELBO with a Monte-Carlo KL. The ELBO terms
    reported beside it are the usual ones (analytic KL), so logs compare with other objectives.
    """
    terms = tc_decomposition(model, x, samples, generator, y, dataset_size=dataset_size, sampling=sampling)
    penalty = alpha * terms.mutual_information + kl_weight * terms.total_correlation \
        + gamma * terms.dimensionwise_kl
    return ObjectiveTerms(terms.elbo, terms.reconstruction, terms.kl, terms.reconstruction - penalty)


btcvae.needs = ("dataset_size",)
btcvae.diagonal_latent = True  # config checks the model's latent settings (`per_dimension`)


# ---------------------------------------------------------------- annealed capacity (Burgess et al., 2018)

def capacity(model: Model, x: torch.Tensor, samples: int = 1, generator: Noise = None, y: torch.Tensor | None = None,
             kl_weight: float | torch.Tensor = 1.0, *, step: float | torch.Tensor = 0.0, gamma: float = 1000.0,
             max_nats: float = 25.0, steps: int = 100_000) -> ObjectiveTerms:
    """Burgess et al. (2018): reconstruction - gamma |KL - C|, the capacity C rising linearly
    from 0 to `max_nats` over `steps` optimizer steps (then held; steps = 0: C = max_nats throughout).

    `step` is the optimizer steps taken before this one (the training step supplies it). The KL
    is the batch's mean, as in the paper's objective (an expectation over the data inside |.|)
    and the reference code; every image carries the batch's penalty, so the batch's mean objective
    is mean reconstruction - gamma |mean KL - C|. (Under torchrun: each rank's share of the batch.)
    """
    terms = elbo(model, x, samples, generator, y)
    step = torch.as_tensor(step, dtype=terms.kl.dtype, device=terms.kl.device)
    c = max_nats * torch.clamp(step / steps, max=1.0) if steps else torch.full_like(step, max_nats)
    penalty = gamma * (terms.kl.mean() - c).abs()
    return ObjectiveTerms(terms.elbo, terms.reconstruction, terms.kl, terms.reconstruction - penalty)


capacity.needs = ("step",)
capacity.takes_kl_weight = False  # config refuses objective.beta and KL warm-up, saying:
capacity.kl_weight_note = "objective.capacity.gamma weighs |KL - C|, and C's schedule is objective.capacity.steps"


# ---------------------------------------------------------------- DIP-VAE I and II (Kumar et al., 2018)

def covariance_of_means(q_dims: Distribution) -> torch.Tensor:
    """DIP-VAE I's matrix: Cov_p(x)[mu(x)] over the batch, (d, d), with 1/batch (the batch's own covariance).

    q_dims: the per-dimension posterior (`per_dimension`), batch shape (batch, d).
    """
    centered = q_dims.mean - q_dims.mean.mean(0)
    return centered.T @ centered / len(centered)


def covariance_of_aggregate(q_dims: Distribution) -> torch.Tensor:
    """DIP-VAE II's matrix: Cov_q(z)[z] = E_p(x)[Sigma(x)] + Cov_p(x)[mu(x)] over the batch, (d, d)."""
    return covariance_of_means(q_dims) + torch.diag(q_dims.variance.mean(0))


# objective.dipvae.type: the covariance matrix whose off-diagonal entries are pushed to 0 and diagonal to 1
DIP_TYPES: dict[str, Callable[[Distribution], torch.Tensor]] = {
    "i": covariance_of_means,
    "ii": covariance_of_aggregate,
}


def dip_penalty(covariance: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2 (Kumar et al., 2018), 0-d."""
    diagonal = torch.diagonal(covariance)
    off = covariance - torch.diag(diagonal)
    return lambda_od * (off**2).sum() + lambda_d * ((diagonal - 1) ** 2).sum()


def dip_lambda_d(type: str, lambda_od: float, lambda_d: float | None) -> float:
    """lambda_d as set, or by Kumar et al.'s rule: 10 lambda_od for DIP-VAE I, lambda_od for II
    (disentanglement_lib's lambda_d_factor 10 and 1)."""
    if lambda_d is not None:
        return lambda_d
    return (10.0 if type == "i" else 1.0) * lambda_od


def dipvae(model: Model, x: torch.Tensor, samples: int = 1, generator: Noise = None, y: torch.Tensor | None = None,
           kl_weight: float | torch.Tensor = 1.0, *, type: str = "i", lambda_od: float = 10.0,
           lambda_d: float | None = None) -> ObjectiveTerms:
    """DIP-VAE (Kumar et al., 2018): reconstruction - kl_weight KL - the batch's covariance penalty.

    Type "i" penalizes Cov[mu(x)], "ii" Cov_q(z) = E[Sigma] + Cov[mu] (`DIP_TYPES`, `dip_penalty`);
    lambda_d None: Kumar et al.'s rule (`dip_lambda_d`). Every image carries the batch's penalty.
    """
    q = posterior(model, x, y)
    covariance = DIP_TYPES[type](per_dimension(q, "the posterior q(z|x)"))
    terms = elbo_of(model, q, x, samples, generator, y)
    penalty = dip_penalty(covariance, lambda_od, dip_lambda_d(type, lambda_od, lambda_d))
    return ObjectiveTerms(terms.elbo, terms.reconstruction, terms.kl,
                          terms.reconstruction - kl_weight * terms.kl - penalty)


dipvae.diagonal_latent = True
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
    "btcvae": btcvae,
    "capacity": capacity,
    "dipvae": dipvae,
    "factorvae": factor_vae,
}
