"""The ELBO estimator, on models where log p(x) is known in closed form."""

import pytest
import torch

from vaelab.config import ModelConfig
from vaelab.model import VAE
from vaelab.distributions import rsample
from vaelab.latents import kl_terms
from vaelab.objectives import elbo, weighted_elbo

from linear_gaussian import LinearGaussian, sample_data


def test_elbo_equals_log_marginal_at_the_exact_posterior():
    model = LinearGaussian()
    x = sample_data(model)
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
    x = sample_data(model)
    model.shift = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    model.stretch = 1.5
    terms = elbo(model, x, samples=20_000, generator=torch.Generator().manual_seed(0))
    gap = model.log_marginal(x) - terms.elbo
    assert torch.all(gap > 0.01), gap


def test_elbo_terms_shapes_and_samples_average():
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=4, encoder_hidden=[16], decoder_hidden=[16]), image_shape=(1, 4, 5))
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
    model = VAE(ModelConfig(latent_dim=2, encoder_hidden=[8], decoder_hidden=[8]), image_shape=(1, 3, 4))
    x = torch.bernoulli(torch.full((4, 12), 0.5))
    (-elbo(model, x).elbo.mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.any(p.grad != 0), name


@pytest.mark.parametrize("extra", [{}, {"latent": "laplace"}, {"prior": "laplace"}, {"latent_dim2": 2}],
                         ids=["normal", "laplace-posterior", "laplace-prior", "two-layers"])
def test_one_sample_elbo_is_the_r_sample_estimator_at_r_1(extra):
    """samples=1 skips the sample dimension; it must draw the same z and give the same terms."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=3, encoder_hidden=[8], decoder_hidden=[8], **extra), image_shape=(1, 3, 4))
    x = torch.bernoulli(torch.full((6, 12), 0.3))
    one = elbo(model, x, samples=1, generator=torch.Generator().manual_seed(5))
    q = model.posterior(x)
    z = rsample(q, (1,), torch.Generator().manual_seed(5))  # (1, batch, latent)
    reconstruction = model.likelihood(z).log_prob(x).mean(0)
    kl = model.kl(q, model.prior(), z)  # analytic, or Monte-Carlo over this z (two layers)
    torch.testing.assert_close(one.reconstruction, reconstruction)
    torch.testing.assert_close(one.kl, kl)
    assert one.kl.shape == (6,)
    if "latent_dim2" in extra:  # no closed form: the one-sample estimate over the same z
        with pytest.raises(NotImplementedError):
            kl_terms(q, model.prior())


def test_weighted_elbo_is_the_elbo_at_weight_one_and_weights_the_kl_otherwise():
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=2, encoder_hidden=[8], decoder_hidden=[8]), image_shape=(1, 3, 4))
    x = torch.bernoulli(torch.full((4, 12), 0.5))
    at_one = weighted_elbo(model, x, generator=torch.Generator().manual_seed(1), kl_weight=1.0)
    torch.testing.assert_close(at_one.objective, at_one.reconstruction - at_one.kl)
    beta = weighted_elbo(model, x, generator=torch.Generator().manual_seed(1), kl_weight=4.0)
    torch.testing.assert_close(beta.objective, beta.reconstruction - 4.0 * beta.kl)
    torch.testing.assert_close(beta.elbo, at_one.elbo)
