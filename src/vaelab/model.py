"""The VAE: prior p(z), encoder q(z|x), decoder p(x|z), each a `torch.distributions` object.

Anyone can score a model without vaelab's internals:

    q = model.posterior(x); z = q.rsample()
    log_w = model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution

from .config import ModelConfig
from .distributions import LIKELIHOOD_HEADS, diagonal_normal, standard_normal
from .nets import MLP


class VAE(nn.Module):
    """x: (batch, n_pixels) -> q(z|x) over (batch, latent_dim); z: (..., latent_dim) -> p(x|z)."""

    def __init__(self, config: ModelConfig, n_pixels: int = 784) -> None:
        super().__init__()
        self.config = config
        self.n_pixels = n_pixels
        self.latent_dim = config.latent_dim
        head_cls = LIKELIHOOD_HEADS[config.likelihood]
        net = dict(activation=config.activation, init=config.init, init_std=config.init_std)
        self.encoder = MLP(n_pixels, config.encoder_hidden, 2 * config.latent_dim, **net)
        self.decoder = MLP(config.latent_dim, config.decoder_hidden, n_pixels * head_cls.params_per_pixel, **net)
        self.head = head_cls(config, n_pixels)

    @property
    def device(self) -> torch.device:
        return self.decoder.last.weight.device

    def prior(self) -> Distribution:
        """p(z) = N(0, I); batch_shape (), event_shape (latent_dim,)."""
        weight = self.decoder.last.weight
        return standard_normal(self.latent_dim, weight.device, weight.dtype)

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x) = N(mu(x), diag sigma^2(x)); x: (batch, n_pixels) -> batch_shape (batch,)."""
        mu, log_var = self.encoder(x).chunk(2, dim=-1)
        return diagonal_normal(mu, torch.exp(0.5 * log_var))

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z); z: (..., latent_dim) -> batch_shape (...), event_shape (n_pixels,)."""
        return self.head(self.decoder(z))

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z]: (..., latent_dim) -> (..., n_pixels) in [0, 1]; what the figures show."""
        return self.likelihood(z).mean

    @torch.no_grad()
    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean: (batch, n_pixels) -> (batch, latent_dim)."""
        return self.posterior(x).mean
