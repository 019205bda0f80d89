"""A VAE whose posterior is a normalizing flow: inverse autoregressive flow steps (Kingma et al., 2016) over
a diagonal Gaussian, as a torch TransformedDistribution, so rsample and log_prob come from torch.

    vaelab train --model examples/flow_posterior.py:FlowVAE --set model.args.latent=8 --set model.args.flows=2

KL(q || p) has no closed form for a flow: vaelab estimates it from the sampled z (log q(z) - log p(z)).
"""

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal, Transform, TransformedDistribution, constraints

import vaelab


class IAFStep(Transform):
    """y = g * z + (1 - g) * m, where m and the gate's logit are linear in z_<i (z_>i if `reverse`), plus
    a shift from x. The Jacobian is triangular: log |det| = sum_i log g_i; it is inverted exactly in D passes."""

    domain = codomain = constraints.real_vector
    bijective = True

    def __init__(self, weight, shift, reverse=False):  # weight: (2D, D); shift: (..., 2D)
        super().__init__()
        mask = torch.ones(weight.shape[1], weight.shape[1], device=weight.device).tril(-1)  # output i reads j < i
        self.weight, self.shift = weight * (mask.T if reverse else mask).repeat(2, 1), shift

    def _gate(self, z):
        m, logit = (z @ self.weight.T + self.shift).chunk(2, dim=-1)
        return m, logit + 2.0  # starts near the identity: gate sigmoid(2) = 0.88

    def _call(self, z):
        m, logit = self._gate(z)
        return torch.sigmoid(logit) * z + (1 - torch.sigmoid(logit)) * m

    def _inverse(self, y):
        z = torch.zeros_like(y)
        for _ in range(y.shape[-1]):  # pass k gets z_k right: each output reads only the inputs before it
            m, logit = self._gate(z)
            z = (y - (1 - torch.sigmoid(logit)) * m) / torch.sigmoid(logit)
        return z

    def log_abs_det_jacobian(self, z, y):
        return nn.functional.logsigmoid(self._gate(z)[1]).sum(-1)


class FlowVAE(vaelab.Model):
    def __init__(self, image_shape=(1, 28, 28), latent=8, hidden=512, flows=2):
        super().__init__(image_shape)
        pixels, self.latent, self.flows = image_shape[0] * image_shape[1] * image_shape[2], latent, flows
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, (2 + 2 * flows) * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, pixels))
        self.flow_weights = nn.Parameter(torch.zeros(flows, 2 * latent, latent))
        self.register_buffer("zero", torch.zeros(latent))

    def prior(self):
        return Independent(Normal(self.zero, 1.0), 1)

    def posterior(self, x, y=None):  # the encoder gives the base's mean and log-variance, and each step's shift
        out = self.network(self.encoder, x)
        mu, log_var, shifts = out[..., :self.latent], out[..., self.latent:2 * self.latent], out[..., 2 * self.latent:]
        base = Independent(Normal(mu, torch.exp(0.5 * log_var)), 1)
        steps = zip(self.flow_weights, shifts.chunk(self.flows, -1))
        return TransformedDistribution(base, [IAFStep(w, s, reverse=i % 2 == 1) for i, (w, s) in enumerate(steps)])

    def likelihood(self, z, y=None):
        return Independent(Bernoulli(logits=self.network(self.decoder, z)), 1)

    @torch.no_grad()
    def encode_mean(self, x, y=None):  # q has no closed-form mean: the base's mean through the flow stands in
        q = self.posterior(x)
        z = q.base_dist.mean
        for step in q.transforms:
            z = step(z)
        return z
