"""The ELBO estimator, on models where log p(x) is known in closed form."""

import torch
from torch.distributions import MultivariateNormal

from vaelab.config import ModelConfig
from vaelab.distributions import diagonal_normal, standard_normal
from vaelab.model import VAE
from vaelab.objectives import elbo


class LinearGaussian:
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I); W has orthogonal columns, so p(z|x) is diagonal.

    p(x) = N(b, W W^T + s^2 I); p(z|x) = N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^-1.
    """

    def __init__(self, latent=3, dim=6, s=0.5, seed=0):
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, latent, generator=g, dtype=torch.float64))
        self.W = q * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)[:latent]
        self.b = torch.randn(dim, generator=g, dtype=torch.float64)
        self.s, self.latent, self.dim = s, latent, dim
        self.shift = torch.zeros(latent, dtype=torch.float64)  # moves q away from the exact posterior
        self.stretch = 1.0

    def prior(self):
        return standard_normal(self.latent, dtype=torch.float64)

    def likelihood(self, z):
        mean = z @ self.W.T + self.b
        return diagonal_normal(mean, torch.full_like(mean, self.s))

    def exact_posterior_params(self, x):
        S_diag = 1.0 / (1.0 + (self.W**2).sum(0) / self.s**2)
        mean = ((x - self.b) @ self.W) * S_diag / self.s**2
        return mean, S_diag.sqrt().expand_as(mean)

    def posterior(self, x):
        mean, std = self.exact_posterior_params(x)
        return diagonal_normal(mean + self.shift, std * self.stretch)

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.dim, dtype=torch.float64)
        return MultivariateNormal(self.b, cov).log_prob(x)


def _data(model, n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent, generator=g, dtype=torch.float64)
    return z @ model.W.T + model.b + model.s * torch.randn(n, model.dim, generator=g, dtype=torch.float64)


def test_elbo_equals_log_marginal_at_the_exact_posterior():
    model = LinearGaussian()
    x = _data(model)
    q = model.posterior(x)
    z = q.sample((4,))
    # With q = p(z|x), log p(x,z) - log q(z|x) = log p(x) for every z.
    log_w = model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(log_w, model.log_marginal(x).expand(4, -1), atol=1e-9, rtol=0)
    # The estimator (analytic KL, sampled reconstruction) is unbiased for that value.
    terms = elbo(model, x, samples=200_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms.elbo, model.log_marginal(x), atol=0.02, rtol=0)
    torch.testing.assert_close(terms.elbo, terms.reconstruction - terms.kl)


def test_elbo_is_below_log_marginal_elsewhere():
    model = LinearGaussian()
    x = _data(model)
    model.shift = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    model.stretch = 1.5
    terms = elbo(model, x, samples=20_000, generator=torch.Generator().manual_seed(0))
    gap = model.log_marginal(x) - terms.elbo
    assert torch.all(gap > 0.01), gap


def test_elbo_terms_shapes_and_samples_average():
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=4, encoder_hidden=[16], decoder_hidden=[16]), n_pixels=20)
    x = torch.bernoulli(torch.full((5, 20), 0.5))
    one = elbo(model, x, samples=1, generator=torch.Generator().manual_seed(0))
    many = elbo(model, x, samples=5000, generator=torch.Generator().manual_seed(0))
    assert one.elbo.shape == one.reconstruction.shape == one.kl.shape == (5,)
    torch.testing.assert_close(one.kl, many.kl)  # analytic: no sampling noise
    # the r-sample reconstruction term is the mean over draws of log p(x|z)
    q = model.posterior(x)
    z = q.mean.expand(3, 5, 4)
    assert model.likelihood(z).log_prob(x).shape == (3, 5)


def test_elbo_gradients_reach_encoder_and_decoder():
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=2, encoder_hidden=[8], decoder_hidden=[8]), n_pixels=12)
    x = torch.bernoulli(torch.full((4, 12), 0.5))
    (-elbo(model, x).elbo.mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.any(p.grad != 0), name
