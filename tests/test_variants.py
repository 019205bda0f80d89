"""Model variants and objectives: IWAE against the ELBO and closed forms, and every variant through the public API."""

import math

import pytest
import torch
from linear_gaussian import LinearGaussian, sample_data
from torch.distributions import Laplace, Normal

from vaelab.config import ModelConfig
from vaelab.distributions import rsample
from vaelab.model import VAE
from vaelab.nets import MLP, ConvDecoder, ConvEncoder
from vaelab.objectives import OBJECTIVES, elbo, iwae_bound, log_weights, weighted_elbo

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _perturbed_linear_gaussian():
    model = LinearGaussian()
    model.shift = torch.tensor([0.4, -0.3, 0.2], dtype=F64)
    model.stretch = 1.6
    return model


def _closed_form_elbo(model, x):
    """E_q[log p(x|z)] - KL(q || N(0, I)) for the linear-Gaussian model and its diagonal-normal q."""
    q = model.posterior(x)
    mu, var = q.base_dist.loc, q.base_dist.scale**2
    residual = x - mu @ model.W.T - model.b
    trace = (var * (model.W**2).sum(0)).sum(-1)  # tr(W diag(var) W^T)
    reconstruction = (-0.5 * model.dim * math.log(2 * math.pi * model.s**2)
                      - ((residual**2).sum(-1) + trace) / (2 * model.s**2))
    kl = 0.5 * (var + mu**2 - 1 - var.log()).sum(-1)
    return reconstruction - kl


def _tiny_vae(**overrides):
    torch.manual_seed(0)
    values = {"latent_dim": 3, "encoder_hidden": [16], "decoder_hidden": [16]}
    values.update(overrides)
    return VAE(ModelConfig(**values), image_shape=(1, 4, 5))


# ---------------------------------------------------------------- IWAE and the ELBO

def test_iwae_with_one_sample_is_the_monte_carlo_kl_elbo_on_the_same_noise():
    linear = _perturbed_linear_gaussian()
    vae = _tiny_vae()
    for model, x in ((linear, sample_data(linear)), (vae, torch.bernoulli(torch.full((5, 20), 0.4)))):
        iwae = iwae_bound(model, x, 1, _gen(3))
        plain = elbo(model, x, 1, _gen(3))
        # the same generator draws the same z: identical reconstruction terms
        torch.testing.assert_close(iwae.reconstruction, plain.reconstruction, rtol=0, atol=0)
        posterior, prior = model.posterior(x), model.prior()
        z = rsample(posterior, (1,), _gen(3))
        by_hand = (model.likelihood(z).log_prob(x) + prior.log_prob(z) - posterior.log_prob(z))[0]
        torch.testing.assert_close(iwae.objective, by_hand)
        mc_kl = (posterior.log_prob(z) - prior.log_prob(z)).mean(0)
        torch.testing.assert_close(iwae.objective, plain.reconstruction - mc_kl)
        torch.testing.assert_close(iwae.objective, iwae.elbo)  # k = 1: the bound is its own ELBO
        torch.testing.assert_close(iwae.kl, mc_kl)
        # the ELBO's own KL is the analytic one, which the single-draw MC KL scatters around
        assert not torch.equal(plain.kl, mc_kl)


def test_iwae_one_sample_and_elbo_agree_in_expectation_with_the_closed_form():
    model = _perturbed_linear_gaussian()
    x = sample_data(model)
    closed = _closed_form_elbo(model, x)
    repeats = 50_000
    bound = iwae_bound(model, x.repeat(repeats, 1), 1, _gen(4)).objective.reshape(repeats, -1)
    _assert_mean_near(bound, closed)
    plain = elbo(model, x, repeats, _gen(5))  # analytic KL, sampled reconstruction
    torch.testing.assert_close(plain.kl, 0.5 * (model.posterior(x).variance + model.posterior(x).mean ** 2 - 1
                                                - model.posterior(x).variance.log()).sum(-1))
    log_px_z = model.likelihood(rsample(model.posterior(x), (repeats,), _gen(5))).log_prob(x)
    _assert_mean_near(log_px_z - plain.kl, closed)
    torch.testing.assert_close(plain.elbo, (log_px_z - plain.kl).mean(0))


def _assert_mean_near(draws, target, n_se=5.0):
    """draws (R, batch): their mean is within n_se standard errors of target (batch,)."""
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
    assert torch.all((mean - target).abs() < n_se * se), (mean, target, se)


def test_iwae_bound_grows_with_k_towards_log_marginal():
    model = _perturbed_linear_gaussian()
    x = sample_data(model)
    log_px = model.log_marginal(x)
    repeats = 2000
    means, ses = {}, {}
    for k in (1, 5, 50):
        bound = iwae_bound(model, x.repeat(repeats, 1), k, _gen(k)).objective.reshape(repeats, -1)
        means[k], ses[k] = bound.mean(0), bound.std(0) / math.sqrt(repeats)
    elbo_closed = _closed_form_elbo(model, x)
    assert torch.all(elbo_closed < log_px - 0.05)  # the perturbed q is visibly off
    for small, large in ((1, 5), (5, 50)):
        margin = means[large] - means[small]
        assert torch.all(margin > 4 * (ses[small] ** 2 + ses[large] ** 2).sqrt()), (small, large, margin)
    assert torch.all(means[1] - elbo_closed < 5 * ses[1])
    assert torch.all(means[50] < log_px + 5 * ses[50])  # still a lower bound
    # and k = 50 closes most of the ELBO's gap
    assert torch.all(log_px - means[50] < 0.5 * (log_px - elbo_closed))


def test_log_weights_are_log_joint_minus_log_q():
    model = _perturbed_linear_gaussian()
    x = sample_data(model)
    log_w, log_px_z, log_ratio = log_weights(model, x, 4, _gen(6))
    z = rsample(model.posterior(x), (4,), _gen(6))
    torch.testing.assert_close(log_px_z, model.likelihood(z).log_prob(x))
    torch.testing.assert_close(log_w, log_px_z + model.prior().log_prob(z) - model.posterior(x).log_prob(z))
    torch.testing.assert_close(log_w, log_px_z - log_ratio)
    bound = iwae_bound(model, x, 4, _gen(6)).objective
    torch.testing.assert_close(bound, torch.logsumexp(log_w, 0) - math.log(4))


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 4.0])
def test_weighted_elbo_is_reconstruction_minus_beta_kl(beta):
    model = _tiny_vae()
    x = torch.bernoulli(torch.full((5, 20), 0.4))
    terms = weighted_elbo(model, x, 2, _gen(7), kl_weight=beta)
    plain = elbo(model, x, 2, _gen(7))
    torch.testing.assert_close(terms.objective, plain.reconstruction - beta * plain.kl)
    torch.testing.assert_close(terms.elbo, plain.elbo)  # what the logs report is the true ELBO
    torch.testing.assert_close(terms.kl, plain.kl)
    assert OBJECTIVES["elbo"] is weighted_elbo and OBJECTIVES["iwae"] is iwae_bound


def test_iwae_gradients_are_finite_and_reach_every_parameter():
    model = _tiny_vae(latent_dim=2)
    x = torch.bernoulli(torch.full((6, 20), 0.4))
    (-iwae_bound(model, x, 8, _gen(8)).objective.mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.all(torch.isfinite(p.grad)), name
        assert torch.any(p.grad != 0), name


# ---------------------------------------------------------------- every variant through the public API

LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")


def _variants():
    out = []
    for latent, priors in (("normal", ("normal", "laplace")), ("laplace", ("normal", "laplace")),
                           ("categorical", ("normal",))):
        for prior in priors:
            for net in ("mlp", "conv"):
                for conditional in (False, True):
                    for dim2 in ((0, 3) if latent == "normal" else (0,)):
                        for likelihood in LIKELIHOODS:
                            out.append((latent, prior, net, conditional, dim2, likelihood, (1, 28, 28)))
    for latent in ("normal", "laplace", "categorical"):
        for likelihood in ("gaussian", "discretized_logistic"):
            for conditional in (False, True):
                out.append((latent, "normal", "conv", conditional, 0, likelihood, (3, 32, 32)))
    return out


def _variant_id(v):
    latent, prior, net, conditional, dim2, likelihood, shape = v
    return (f"{latent}-{prior}-{net}{'-cond' if conditional else ''}{f'-top{dim2}' if dim2 else ''}"
            f"-{likelihood}-{shape[0]}x{shape[1]}")


def _images(likelihood, shape, batch, seed=0):
    n = shape[0] * shape[1] * shape[2]
    u = torch.rand(batch, n, generator=_gen(seed))
    if likelihood == "bernoulli":
        return (u < 0.3).float()
    if likelihood == "discretized_logistic":
        return torch.round(u * 255) / 255
    return u


def _call(method, *args, y=None):
    return method(*args) if y is None else method(*args, y)


@pytest.mark.parametrize("variant", _variants(), ids=_variant_id)
def test_variant_builds_trains_and_scores(variant):
    latent, prior, net, conditional, dim2, likelihood, shape = variant
    config = ModelConfig(latent=latent, prior=prior, net=net, conditional=conditional, latent_dim2=dim2,
                         likelihood=likelihood, latent_dim=2, categories=3, n_classes=3, encoder_hidden=[8],
                         decoder_hidden=[8], encoder_hidden2=[6], decoder_hidden2=[6], conv_channels=[3, 4])
    config.validate()
    torch.manual_seed(0)
    model = VAE(config, shape)
    batch, samples = 3, 2
    x = _images(likelihood, shape, batch)
    y = torch.tensor([0, 2, 1]) if conditional else None
    n_pixels = shape[0] * shape[1] * shape[2]

    # training: forward and backward through both objectives
    model.train()
    for name, k in (("elbo", 1), ("iwae", 3)):
        model.zero_grad()
        terms = OBJECTIVES[name](model, x, k, _gen(1), y)
        for value in (terms.objective, terms.elbo, terms.reconstruction, terms.kl):
            assert value.shape == (batch,) and torch.all(torch.isfinite(value)), (name, value)
        (-terms.objective.mean()).backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.all(torch.isfinite(p.grad)), (name, pname)
        for part in (model.encoder, model.decoder):
            assert any(torch.any(p.grad != 0) for p in part.parameters()), name

    # scoring with torch.distributions only, in both modes
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            q, p = _call(model.posterior, x, y=y), model.prior()
            assert q.batch_shape == (batch,) and p.batch_shape == () and q.event_shape == p.event_shape
            z = q.sample((samples,))
            assert z.shape == (samples, batch, *q.event_shape)
            likelihood_ = _call(model.likelihood, z, y=y)
            assert likelihood_.batch_shape == (samples, batch) and likelihood_.event_shape == (n_pixels,)
            log_w = likelihood_.log_prob(x) + p.log_prob(z) - q.log_prob(z)
            assert log_w.shape == (samples, batch) and torch.all(torch.isfinite(log_w)), (training, log_w)
            kl = model.kl(q, p, z)
            assert kl.shape == (batch,) and torch.all(torch.isfinite(kl))
            mean = _call(model.decode_mean, z, y=y)
            assert mean.shape == (samples, batch, n_pixels) and mean.min() >= 0 and mean.max() <= 1
            code = _call(model.encode_mean, x, y=y)
            assert code.shape == (batch, model.latent_dim) and torch.all(torch.isfinite(code))
            terms = elbo(model, x, samples, _gen(2), y)
            assert torch.all(torch.isfinite(terms.elbo))
            if latent == "categorical" and not training:
                assert torch.all((z == 0) | (z == 1))  # hard one-hot draws at evaluation


def test_categorical_encode_mean_is_the_class_probabilities_in_both_modes():
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent="categorical", latent_dim=2, categories=3, encoder_hidden=[8],
                            decoder_hidden=[8]), (1, 4, 5))
    x = torch.rand(4, 20)
    probs = model.encoder(x).unflatten(-1, (2, 3)).softmax(-1).flatten(-2).detach()
    torch.testing.assert_close(model.train().encode_mean(x), probs)
    torch.testing.assert_close(model.eval().encode_mean(x), probs)


def test_categorical_iwae_is_finite_with_peaked_posteriors():
    """Training a categorical model with the IWAE bound scores relaxed draws; peaked q must not give NaN."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent="categorical", latent_dim=4, categories=10, temperature=0.5,
                            encoder_hidden=[8], decoder_hidden=[8]), (1, 4, 5)).train()
    with torch.no_grad():
        model.encoder.last.bias.copy_(torch.randn(40) * 30)
    x = torch.bernoulli(torch.full((16, 20), 0.4))
    terms = iwae_bound(model, x, 20, _gen(11))
    assert torch.all(torch.isfinite(terms.objective))
    (-terms.objective.mean()).backward()
    assert all(torch.all(torch.isfinite(p.grad)) for p in model.parameters())


# ---------------------------------------------------------------- two stochastic layers

@pytest.mark.parametrize("prior", ["normal", "laplace"])
def test_two_layer_model_reads_z1_and_scores_both_layers(prior):
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=2, latent_dim2=3, prior=prior, encoder_hidden=[8], decoder_hidden=[8],
                            encoder_hidden2=[6], decoder_hidden2=[6]), (1, 4, 5))
    x = torch.rand(4, 20)
    assert model.latent_dim == 5
    q, p = model.posterior(x), model.prior()
    assert q.event_shape == p.event_shape == (5,) and q.batch_shape == (4,)
    z = q.sample((3,))
    z1, z2 = z[..., :2], z[..., 2:]
    # the decoder reads z1 only
    base = model.likelihood(z).log_prob(x)
    torch.testing.assert_close(model.likelihood(torch.cat([z1, z2 + 1.0], -1)).log_prob(x), base)
    assert not torch.allclose(model.likelihood(torch.cat([z1 + 1.0, z2], -1)).log_prob(x), base)

    def normal_from(params):
        mu, log_var = params.chunk(2, -1)
        return Normal(mu, (0.5 * log_var).exp())

    # q(z1, z2 | x) = q(z1|x) q(z2|z1) and p(z1, z2) = p(z2) p(z1|z2), z = [z1, z2]
    q1 = normal_from(model.encoder(x))
    expected_q = q1.log_prob(z1).sum(-1) + normal_from(model.top.up(z1)).log_prob(z2).sum(-1)
    p2 = Normal(0.0, 1.0) if prior == "normal" else Laplace(0.0, 1.0)
    expected_p = p2.log_prob(z2).sum(-1) + normal_from(model.top.down(z2)).log_prob(z1).sum(-1)
    torch.testing.assert_close(q.log_prob(z), expected_q)
    torch.testing.assert_close(p.log_prob(z), expected_p)
    # no closed form: the KL is the mean over the draws of log q - log p
    torch.testing.assert_close(model.kl(q, p, z), (expected_q - expected_p).mean(0))
    # draws: z1 from q(z1|x), z2 from the standard prior
    n = 20_000
    with torch.no_grad():
        posterior_draws = rsample(q, (n,), _gen(9))
        prior_draws = rsample(p, (n,), _gen(10))
    sd = q1.scale.detach()
    assert torch.all((posterior_draws[..., :2].mean(0) - q1.loc.detach()).abs() < 5 * sd / math.sqrt(n))
    variance = 1.0 if prior == "normal" else 2.0
    assert torch.all(prior_draws[..., 2:].mean(0).abs() < 5 * math.sqrt(variance / n))
    assert torch.all((prior_draws[..., 2:].var(0) - variance).abs() < 0.1 * variance)


# ---------------------------------------------------------------- conditional models

def _conditional_vae(net="mlp"):
    torch.manual_seed(0)
    config = ModelConfig(latent_dim=2, encoder_hidden=[16], decoder_hidden=[16], conditional=True, n_classes=4,
                         net=net, conv_channels=[4])
    return VAE(config, (1, 4, 6))


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_conditional_model_needs_labels(net):
    model = _conditional_vae(net)
    x = torch.rand(3, 24)
    with pytest.raises(ValueError, match="pass the labels"):
        model.posterior(x)
    with pytest.raises(ValueError, match="pass the labels"):
        model.likelihood(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="pass the labels"):
        elbo(model, x)


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_labels_change_encoder_and_decoder_outputs(net):
    model = _conditional_vae(net)
    x, z = torch.rand(3, 24), torch.randn(5, 3, 2)
    y0, y1 = torch.tensor([0, 1, 2]), torch.tensor([3, 3, 0])
    a, b = model.decode_mean(z, y0), model.decode_mean(z, y1)
    assert a.shape == (5, 3, 24)
    assert torch.all((a - b).abs().amax(-1) > 1e-6)  # every image changes with its label
    torch.testing.assert_close(model.decode_mean(z, y0), a)  # same labels, same output
    # one label per image: each image decodes as in a batch holding only it and its label
    for i in range(3):
        torch.testing.assert_close(model.decode_mean(z[:, i:i + 1], y0[i:i + 1]), a[:, i:i + 1])
        torch.testing.assert_close(model.encode_mean(x[i:i + 1], y0[i:i + 1]), model.encode_mean(x, y0)[i:i + 1])
    assert torch.all((model.encode_mean(x, y0) - model.encode_mean(x, y1)).abs().amax(-1) > 1e-6)


def test_unconditional_model_ignores_labels():
    model = _tiny_vae()
    x = torch.rand(2, 20)
    torch.testing.assert_close(model.encode_mean(x, torch.tensor([1, 2])), model.encode_mean(x))


# ---------------------------------------------------------------- output bias

def _train_mean(n, seed=0):
    mean = torch.rand(n, generator=_gen(seed))
    mean[:3] = torch.tensor([0.0, 1.0, 1e-5])  # clamped to [1e-3, 1 - 1e-3]
    return mean


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "discretized_logistic"])
def test_init_output_bias_mlp_sets_the_logit_of_the_mean(likelihood):
    model = _tiny_vae(likelihood=likelihood)
    mean = _train_mean(20)
    bias_before = model.decoder.last.bias.detach().clone()
    model.init_output_bias(mean)
    clamped = mean.clamp(1e-3, 1 - 1e-3)
    bias = model.decoder.last.bias.detach()
    torch.testing.assert_close(bias[:20], torch.logit(clamped))
    torch.testing.assert_close(bias[20:], bias_before[20:])  # other parameter blocks untouched
    with torch.no_grad():
        model.decoder.last.weight.zero_()
    out = model.decoder(torch.randn(4, 3))
    torch.testing.assert_close(torch.sigmoid(out[..., :20]), clamped.expand(4, -1))
    if likelihood != "discretized_logistic":  # its mean is the levels' mean, not sigmoid(loc)
        torch.testing.assert_close(model.decode_mean(torch.randn(4, 3)), clamped.expand(4, -1))


@pytest.mark.parametrize("likelihood", ["gaussian", "discretized_logistic"])
def test_init_output_bias_conv_sets_one_bias_per_channel(likelihood):
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=2, net="conv", conv_channels=[4], likelihood=likelihood), (3, 4, 6))
    mean = _train_mean(72, seed=1)
    last = model.decoder.last
    before = last.bias.detach().clone()
    model.init_output_bias(mean)
    expected = torch.logit(mean.clamp(1e-3, 1 - 1e-3)).reshape(3, 24).mean(1)
    torch.testing.assert_close(last.bias[:3].detach(), expected)
    torch.testing.assert_close(last.bias[3:].detach(), before[3:])
    with torch.no_grad():
        last.weight.zero_()
    # the bias lands on the first parameter block, channel by channel, in the image's (C, H, W) order
    out = model.decoder(torch.randn(5, 2))[..., :72].reshape(5, 3, 24)
    torch.testing.assert_close(out, expected[:, None].expand(5, 3, 24))


# ---------------------------------------------------------------- networks and shapes

def _output_shapes(module):
    """Records the output shape of every call to `module`."""
    shapes = []
    module.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    return shapes


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (2, 12, 20)])
def test_conv_encoder_and_decoder_shapes_with_sample_dims(shape):
    torch.manual_seed(0)
    c, h, w = shape
    n = c * h * w
    encoder = ConvEncoder(shape, [4, 8], 6, extra=2)
    feature_maps = _output_shapes(encoder.convs)
    x, extra = torch.rand(4, 3, n), torch.rand(4, 3, 2)
    out = encoder(x, extra)
    assert feature_maps[0] == (12, 8, h // 4, w // 4)  # each stride-2 layer halves both sides
    assert out.shape == (4, 3, 6)
    # leading dims are kept apart: each (s, b) is encoded on its own
    torch.testing.assert_close(out[2, 1], encoder(x[2, 1:2], extra[2, 1:2])[0])
    assert encoder.flat == 8 * (shape[1] // 4) * (shape[2] // 4)
    decoder = ConvDecoder(5, shape, [4, 8], params_per_pixel=2)
    decoded_maps = _output_shapes(decoder.last)
    z = torch.randn(4, 3, 5)
    maps = decoder(z)
    assert decoded_maps[0] == (12, 2 * c, h, w)  # (params * C, H, W): the image's own orientation
    assert maps.shape == (4, 3, 2 * n)
    torch.testing.assert_close(maps[3, 0], decoder(z[3, 0:1])[0])
    assert decoder(torch.randn(5)).shape == (2 * n,)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_conv_vae_likelihood_and_posterior_shapes(shape):
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=4, net="conv", conv_channels=[4, 8], likelihood="gaussian"), shape)
    n = shape[0] * shape[1] * shape[2]
    q = model.posterior(torch.rand(3, n))
    assert q.batch_shape == (3,) and q.event_shape == (4,)
    p = model.likelihood(torch.randn(2, 3, 4))
    assert p.batch_shape == (2, 3) and p.event_shape == (n,)


def test_mlp_keeps_leading_dims():
    net = MLP(5, [7], 3)
    z = torch.randn(4, 2, 5)
    out = net(z)
    assert out.shape == (4, 2, 3)
    torch.testing.assert_close(out[1, 1], net(z[1, 1]))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 20, 32)])
def test_conv_sides_too_small_for_the_layers_raise_naming_conv_channels(shape):
    channels = [4, 8, 16, 16, 16]  # 5 stride-2 layers: sides need at least 32 (28 and 20 are less)
    with pytest.raises(ValueError, match=r"model\.conv_channels"):
        ConvEncoder(shape, channels, 4)
    with pytest.raises(ValueError, match=r"model\.conv_channels"):
        ConvDecoder(4, shape, channels, 1)
    with pytest.raises(ValueError, match=r"model\.conv_channels"):
        VAE(ModelConfig(net="conv", conv_channels=channels), shape)
    VAE(ModelConfig(net="conv", conv_channels=[4, 8, 16]), shape)  # 28 and 20 are not divisible by 8: fine now


@pytest.mark.parametrize("extra, text", [
    ({}, "the VampPrior of 4 pseudo-inputs"),
    ({"latent_dim2": 2, "encoder_hidden2": [8], "decoder_hidden2": [8]},
     "p(z2) p(z1|z2) with p(z2) = the VampPrior of 4 pseudo-inputs"),
])
def test_figure_titles_name_the_vampprior(extra, text):
    from vaelab.config import ModelConfig
    from vaelab.figures.variants import prior_text
    from vaelab.model import VAE

    model = VAE(ModelConfig(latent_dim=3, encoder_hidden=[8], decoder_hidden=[8], pseudo_inputs=4, **extra))
    assert prior_text(model) == text


def _iwae_gradients(model, x, k, gradient, seed):
    """The gradient of the summed IWAE bound, parameter by parameter, for one seed's draws."""
    model.zero_grad()
    iwae_bound(model, x, k, _gen(seed), gradient=gradient).objective.sum().backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("vamp", [False, True])
def test_dreg_is_the_iwae_gradient_in_expectation_with_less_variance_and_the_same_bound(vamp):
    torch.manual_seed(0)
    two_layer = {"latent_dim2": 2, "encoder_hidden2": [4], "decoder_hidden2": [4], "pseudo_inputs": 3}
    model = VAE(ModelConfig(latent_dim=2, encoder_hidden=[8], decoder_hidden=[8], **(two_layer if vamp else {})),
                (1, 4, 5))
    x = torch.bernoulli(torch.full((2, 20), 0.4))
    k, groups, rows = 10, 24, 400
    plain = iwae_bound(model, x, k, _gen(1))
    dreg = iwae_bound(model, x, k, _gen(1), gradient="dreg")
    torch.testing.assert_close(dreg.objective, plain.objective)  # the same bound, the same draws
    # Encoder: q's parameters, which the VampPrior's prior shares. Everything else (decoder, p(z1|z2),
    # the pseudo-inputs) gets IWAE's gradient, draw for draw.
    encoder = [n for n, _ in model.named_parameters() if n.startswith(("encoder.", "top.up."))]
    differences, variances = [], {"reparameterized": 0.0, "dreg": 0.0}
    means = {g: [] for g in variances}
    for seed in range(groups):
        batch = x.repeat(rows, 1)  # each row its own k draws
        by = {g: _iwae_gradients(model, batch, k, g, 100 + seed) for g in variances}
        for name in by["dreg"]:
            if name not in encoder:
                torch.testing.assert_close(by["dreg"][name], by["reparameterized"][name], rtol=1e-4, atol=1e-3)
        differences.append(torch.cat([(by["dreg"][n] - by["reparameterized"][n]).flatten() for n in encoder]))
        for g in variances:
            means[g].append(torch.cat([by[g][n].flatten() for n in encoder]))
    d = torch.stack(differences)  # (groups, encoder weights): paired, the same draws for both
    t = d.mean(0) / (d.std(0) / math.sqrt(groups) + 1e-12)
    assert t.abs().max() < 5.0, t.abs().max()  # no bias: within 5 standard errors in every weight
    spread = {g: torch.stack(m).var(0).sum() for g, m in means.items()}
    assert spread["dreg"] < 0.8 * spread["reparameterized"], spread
