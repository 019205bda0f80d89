"""A model whose log p(x) and exact posterior are known in closed form, for checking estimators."""

import torch
from torch.distributions import MultivariateNormal

from vaelab.distributions import diagonal_normal, standard_normal


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


def sample_data(model, n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent, generator=g, dtype=torch.float64)
    return z @ model.W.T + model.b + model.s * torch.randn(n, model.dim, generator=g, dtype=torch.float64)
