"""A VAE from scratch: the three methods of the vaelab.Model contract, each a torch distribution.

    vaelab train --model examples/minimal_vae.py:MinimalVAE --set model.args.latent=8
"""

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal

import vaelab


class MinimalVAE(vaelab.Model):
    def __init__(self, image_shape=(1, 28, 28), latent=2, hidden=512):
        super().__init__(image_shape)
        pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, pixels))
        self.register_buffer("zero", torch.zeros(latent))  # follows the model to its device

    def prior(self):  # p(z) = N(0, I)
        return Independent(Normal(self.zero, 1.0), 1)

    def posterior(self, x, y=None):  # q(z|x) = N(mu(x), sigma(x)^2), x: (batch, pixels) in [0, 1]
        mu, log_var = self.network(self.encoder, x).chunk(2, dim=-1)
        return Independent(Normal(mu, torch.exp(0.5 * log_var)), 1)

    def likelihood(self, z, y=None):  # p(x|z): a Bernoulli per pixel, on logits
        return Independent(Bernoulli(logits=self.network(self.decoder, z)), 1)
