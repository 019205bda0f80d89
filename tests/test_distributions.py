"""Densities, KL and sampling checked against torch.distributions and closed forms."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, MixtureSameFamily, Normal, kl_divergence

from vaelab.config import ModelConfig
from vaelab.distributions import (TwoStep, diagonal_normal, log_sum_exp, plain_log_probs, rsample, standard_normal,
                                  uniform_mixture)
from vaelab.likelihoods import BernoulliHead, GaussianHead, fused_bernoulli_log_prob


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


@pytest.mark.parametrize("pixels", [784, 50, 7])  # whole groups of SOFTPLUS_GROUP, and a remainder
def test_fused_bernoulli_log_prob_matches_torch_eager_and_compiled(pixels):
    torch.manual_seed(0)
    logits = torch.randn(300, 2, pixels) * 6
    logits[0, 0, :4] = torch.tensor([-200.0, 200.0, 0.0, -1e-6])[:pixels]  # far out, and at softplus's log 2
    x = torch.bernoulli(torch.full((2, pixels), 0.3))  # one image per column of samples, broadcast
    reference = Bernoulli(logits=logits.double()).log_prob(x.double()).sum(-1)
    for fused in (fused_bernoulli_log_prob, torch.compile(fused_bernoulli_log_prob)):
        ours = fused(logits, x)
        assert ours.shape == (300, 2) and ours.dtype == torch.float32
        # float32 rounding of sums of hundreds of nats
        torch.testing.assert_close(ours.double(), reference, atol=1e-5 * pixels, rtol=1e-6)


def test_bernoulli_head_takes_the_fused_sum_only_in_compiled_scoring():
    torch.manual_seed(0)
    logits, x = torch.randn(50, 3, 784) * 4, torch.bernoulli(torch.full((3, 784), 0.5))
    head = BernoulliHead(ModelConfig(), 784)
    score = torch.compile(lambda logits: head(logits).log_prob(x))
    reference = Bernoulli(logits=logits).log_prob(x).sum(-1)
    with torch.no_grad():
        torch.testing.assert_close(score(logits), reference, atol=2e-3, rtol=1e-5)
    grad_logits = logits.clone().requires_grad_()
    score(grad_logits).sum().backward()  # with gradients: the plain formula, and its gradient x - sigmoid(l)
    torch.testing.assert_close(grad_logits.grad, (x - torch.sigmoid(logits)))


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


def _mixture_case(seed=0, c=7, d=5, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    loc = torch.randn(c, d, generator=gen, dtype=dtype) * 2
    scale = torch.rand(c, d, generator=gen, dtype=dtype) * 1.5 + 0.05
    return uniform_mixture(diagonal_normal(loc, scale))


def test_normal_mixture_log_prob_equals_torchs_mixture_same_family():
    mixture = _mixture_case()
    reference = MixtureSameFamily(mixture.mixture_distribution, mixture.component_distribution)
    z = torch.randn(3, 4, 5, dtype=torch.float64) * 3
    ours = mixture.log_prob(z)
    assert ours.shape == (3, 4)
    torch.testing.assert_close(ours, reference.log_prob(z))
    # by hand: log (1/C) sum_c prod_j N(z_j; m_cj, s_cj)
    normal = mixture.component_distribution.base_dist
    by_hand = torch.logsumexp(Normal(normal.loc, normal.scale).log_prob(z[..., None, :]).sum(-1), -1) - math.log(7)
    torch.testing.assert_close(ours, by_hand)


def test_normal_mixture_gradients_equal_torchs():
    loc = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    log_scale = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    grads = []
    for make in (lambda m: m, lambda m: MixtureSameFamily(m.mixture_distribution, m.component_distribution)):
        mixture = make(uniform_mixture(diagonal_normal(loc, log_scale.exp())))
        grads.append(torch.autograd.grad(mixture.log_prob(z).sum(), (loc, log_scale, z)))
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs)


def test_normal_mixture_float32_stays_close_to_float64():
    mixture64 = _mixture_case(c=500, d=50)
    mixture32 = uniform_mixture(diagonal_normal(mixture64.component_distribution.base_dist.loc.float(),
                                                mixture64.component_distribution.base_dist.scale.float()))
    z = mixture64.sample((200,))
    torch.testing.assert_close(mixture32.log_prob(z.float()).double(), mixture64.log_prob(z), atol=2e-2, rtol=1e-4)


def test_mixture_samples_come_from_the_components_in_their_proportions():
    loc = torch.tensor([[-6.0, 0.0], [6.0, 10.0]])
    mixture = uniform_mixture(diagonal_normal(loc, torch.full((2, 2), 0.5)))
    z = rsample(mixture, (4000,), torch.Generator().manual_seed(3))
    assert z.shape == (4000, 2) and rsample(mixture, (), torch.Generator()).shape == (2,)
    right = z[:, 0] > 0
    assert abs(right.double().mean().item() - 0.5) < 0.04  # fair mixture weights, +- 2.5 standard errors
    torch.testing.assert_close(z[right].mean(0), loc[1], atol=0.05, rtol=0)
    torch.testing.assert_close(z[~right].std(0), torch.full((2,), 0.5), atol=0.03, rtol=0)
    again = rsample(mixture, (4000,), torch.Generator().manual_seed(3))
    assert torch.equal(z, again)


def test_bernoulli_head_with_many_z_per_image_matches_torch():
    # the importance-sampling shape: logits (samples, images, pixels) against x (images, pixels)
    torch.manual_seed(2)
    logits = torch.randn(40, 3, 784) * 6
    x = torch.bernoulli(torch.full((3, 784), 0.3))
    px = BernoulliHead(ModelConfig(), 784)(logits)
    ours = px.log_prob(x)
    reference = Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert ours.shape == (40, 3)
    torch.testing.assert_close(ours, reference)
    with plain_log_probs():
        assert torch.equal(px.log_prob(x), reference)  # the plain path is torch's own


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_sum_exp_equals_torchs(dtype):
    gen = torch.Generator().manual_seed(0)
    values = (torch.randn(6, 500, generator=gen, dtype=dtype) * 300).requires_grad_()  # terms hundreds of nats apart
    ours, theirs = log_sum_exp(values, -1), torch.logsumexp(values, -1)
    torch.testing.assert_close(ours, theirs)
    grad_ours, = torch.autograd.grad(ours.sum(), values)
    grad_theirs, = torch.autograd.grad(theirs.sum(), values)
    torch.testing.assert_close(grad_ours, grad_theirs)  # the softmax
    torch.testing.assert_close(log_sum_exp(values, 0), torch.logsumexp(values, 0))
    inf = math.inf
    special = torch.tensor([[-inf, -inf], [inf, 1.0], [math.nan, 1.0], [-inf, 2.0]], dtype=dtype)
    torch.testing.assert_close(log_sum_exp(special, -1), torch.logsumexp(special, -1), equal_nan=True)


def test_normal_mixture_log_prob_far_from_most_components():
    mixture = _mixture_case(c=500, d=50, dtype=torch.float32)
    reference = MixtureSameFamily(mixture.mixture_distribution, mixture.component_distribution)
    z = torch.randn(20, 50) * 4  # most components hundreds of nats below the nearest
    terms = mixture.component_distribution.log_prob(z[:, None, :])
    assert (terms.amax(-1) - terms.amin(-1)).min() > 200
    torch.testing.assert_close(mixture.log_prob(z), reference.log_prob(z), rtol=1e-5, atol=1e-3)
    with torch.no_grad():  # the product table, made once, gives the same again
        first, again = mixture.log_prob(z), mixture.log_prob(z)
    assert torch.equal(first, again)
    with plain_log_probs():
        assert torch.equal(mixture.log_prob(z), reference.log_prob(z))


def test_two_step_scores_its_own_draw_without_running_the_conditional_again():
    calls = []

    def then(first):
        calls.append(1)
        return diagonal_normal(2 * first, torch.full_like(first, 0.5))

    joint = TwoStep(diagonal_normal(torch.zeros(4, 3), torch.ones(4, 3)), then, 3, 3, first_is_a=True)
    with torch.no_grad():
        z = rsample(joint, (5,), torch.Generator().manual_seed(0))
        ours = joint.log_prob(z)
        assert len(calls) == 1  # the draw's conditional, reused
        recomputed = joint.log_prob(z.clone())
        assert len(calls) == 2
    torch.testing.assert_close(ours, recomputed)
    a, b = z.split(3, -1)
    by_hand = Normal(0.0, 1.0).log_prob(a).sum(-1) + Normal(2 * a, 0.5).log_prob(b).sum(-1)
    torch.testing.assert_close(ours, by_hand)
