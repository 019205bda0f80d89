"""Densities, KL and sampling checked against torch.distributions and closed forms."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vaelab.config import ModelConfig
from vaelab.distributions import diagonal_normal, rsample, standard_normal
from vaelab.likelihoods import BernoulliHead, GaussianHead


def test_bernoulli_head_matches_torch_and_closed_form():
    torch.manual_seed(0)
    logits = torch.randn(6, 784) * 4
    x = torch.bernoulli(torch.full((6, 784), 0.3))
    head = BernoulliHead(ModelConfig(), 784)
    ours = head(logits).log_prob(x)
    reference = Bernoulli(logits=logits).log_prob(x).sum(-1)
    closed = (x * torch.nn.functional.logsigmoid(logits) + (1 - x) * torch.nn.functional.logsigmoid(-logits)).sum(-1)
    assert ours.shape == (6,)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours, closed)


def test_bernoulli_head_is_finite_where_log_sigmoid_overflows():
    logits = torch.tensor([[-200.0, 200.0, -200.0, 200.0]])
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    naive = (x * torch.log(torch.sigmoid(logits)) + (1 - x) * torch.log(1 - torch.sigmoid(logits))).sum()
    ours = BernoulliHead(ModelConfig(), 4)(logits).log_prob(x)
    assert not torch.isfinite(naive)  # the seeds' log(sigmoid(.)) gives -inf here
    torch.testing.assert_close(ours, torch.tensor([-400.0]))


@pytest.mark.parametrize("mode", ["fixed", "shared", "per_pixel"])
def test_gaussian_head_matches_torch_and_closed_form(mode):
    torch.manual_seed(1)
    config = ModelConfig(likelihood="gaussian", gaussian_variance=mode, gaussian_sigma=0.2, min_sigma=1e-3)
    head = GaussianHead(config, 10)
    out, x = torch.randn(3, 10), torch.rand(3, 10)
    sigma = head.sigma
    torch.testing.assert_close(sigma, torch.full_like(sigma, 0.2))
    mean = torch.sigmoid(out)
    reference = Normal(mean, 0.2).log_prob(x).sum(-1)
    closed = (-0.5 * ((x - mean) / 0.2) ** 2 - math.log(0.2) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(head(out).log_prob(x), reference)
    torch.testing.assert_close(head(out).log_prob(x), closed)
    learned = [p for p in head.parameters()]
    assert len(learned) == (0 if mode == "fixed" else 1)
    if mode == "per_pixel":
        assert learned[0].shape == (10,)


def test_gaussian_sigma_never_below_floor():
    head = GaussianHead(ModelConfig(gaussian_sigma=0.5, min_sigma=0.01), 4)
    with torch.no_grad():
        head.raw_sigma.fill_(-1e4)
    assert torch.all(head.sigma >= 0.01)


def test_analytic_kl_matches_closed_form_and_monte_carlo():
    torch.manual_seed(2)
    mu, log_var = torch.randn(5, 3), torch.randn(5, 3)
    q = diagonal_normal(mu, torch.exp(0.5 * log_var))
    p = standard_normal(3)
    kl = kl_divergence(q, p)
    closed = 0.5 * (log_var.exp() + mu**2 - 1 - log_var).sum(-1)  # log sigma^2, not log mu
    torch.testing.assert_close(kl, closed)
    z = rsample(q, (200_000,), torch.Generator().manual_seed(0))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(monte_carlo, closed, atol=0.03, rtol=0.01)


def test_rsample_moments_shape_and_gradients():
    loc = torch.tensor([1.0, -2.0], requires_grad=True)
    scale = torch.tensor([0.5, 3.0], requires_grad=True)
    q = diagonal_normal(loc, scale)
    z = rsample(q, (400_000,), torch.Generator().manual_seed(3))
    assert z.shape == (400_000, 2)
    torch.testing.assert_close(z.mean(0), loc.detach(), atol=0.02, rtol=0)
    torch.testing.assert_close(z.var(0), scale.detach() ** 2, atol=0.0, rtol=0.01)
    z.pow(2).mean(0).sum().backward()  # E[z^2] = loc^2 + scale^2
    torch.testing.assert_close(loc.grad, 2 * loc.detach(), atol=0.03, rtol=0)
    torch.testing.assert_close(scale.grad, 2 * scale.detach(), atol=0.03, rtol=0.01)


def test_rsample_is_reproducible_from_the_generator():
    q = diagonal_normal(torch.zeros(4), torch.ones(4))
    a = rsample(q, (3,), torch.Generator().manual_seed(7))
    b = rsample(q, (3,), torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_rsample_refuses_unknown_distribution():
    with pytest.raises(TypeError, match="Gamma"):
        rsample(torch.distributions.Gamma(torch.ones(1), torch.ones(1)))
