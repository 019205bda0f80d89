"""The model's public API: torch distributions with the documented shapes."""

import math

import pytest
import torch
from torch.distributions import Distribution

from vaelab.config import ModelConfig
from vaelab.model import VAE
from vaelab.nets import MLP


def test_public_api_returns_distributions_with_summed_log_prob():
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=3, encoder_hidden=[32], decoder_hidden=[32]))
    x = torch.bernoulli(torch.full((7, 784), 0.2))
    prior, posterior = model.prior(), model.posterior(x)
    assert all(isinstance(d, Distribution) for d in (prior, posterior))
    assert prior.event_shape == (3,) and posterior.batch_shape == (7,) and posterior.event_shape == (3,)
    z = posterior.rsample((2,))
    likelihood = model.likelihood(z)
    assert likelihood.batch_shape == (2, 7) and likelihood.event_shape == (784,)
    log_w = likelihood.log_prob(x) + prior.log_prob(z) - posterior.log_prob(z)
    assert log_w.shape == (2, 7) and torch.all(torch.isfinite(log_w))
    mean = model.decode_mean(z)
    assert mean.shape == (2, 7, 784) and mean.min() >= 0 and mean.max() <= 1


@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus", "elu"])
def test_mlp_layers_and_activation(activation):
    net = MLP(10, [20, 30], 4, activation=activation)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(10, 20), (20, 30), (30, 4)]
    assert sum(type(m).__name__.lower() == activation for m in net) == 2


def test_normal_init_has_requested_std_and_zero_bias():
    torch.manual_seed(0)
    net = MLP(784, [512], 4, init="normal", init_std=0.01)
    weight = net[0].weight
    assert abs(weight.std().item() - 0.01) < 5e-4 and abs(weight.mean().item()) < 5e-4
    assert torch.all(net[0].bias == 0)


def test_glorot_init_bounds():
    torch.manual_seed(0)
    net = MLP(784, [512], 4)
    bound = (6 / (784 + 512)) ** 0.5
    assert net[0].weight.abs().max() <= bound and net[0].weight.abs().max() > 0.9 * bound


def test_gaussian_model_has_learned_variance():
    model = VAE(ModelConfig(likelihood="gaussian", gaussian_variance="per_pixel"))
    names = [n for n, _ in model.named_parameters()]
    assert "head.raw_sigma" in names
    x = torch.rand(3, 784)
    assert model.likelihood(model.posterior(x).mean).log_prob(x).shape == (3,)


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_mixed_precision_rounds_only_the_network_products(net):
    torch.manual_seed(0)
    model = VAE(ModelConfig(net=net, latent_dim=4, encoder_hidden=[64], decoder_hidden=[64]))
    x = (torch.rand(8, 784) < 0.3).float()
    q32 = model.posterior(x)
    p32 = model.likelihood(q32.mean)
    with model.mixed_precision(torch.bfloat16):
        q16 = model.posterior(x)
        p16 = model.likelihood(q16.mean)
        log_px = p16.log_prob(x)
    assert model.network_dtype is None  # restored after the block
    assert q16.mean.dtype == p16.mean.dtype == log_px.dtype == torch.float32
    assert not torch.equal(q16.mean, q32.mean)  # the products were rounded...
    torch.testing.assert_close(q16.mean, q32.mean, atol=0.05, rtol=0.05)  # ...to bfloat16's 8 bits
    torch.testing.assert_close(log_px, p32.log_prob(x), atol=2.0, rtol=0.01)


@pytest.mark.parametrize("layers", ["one", "bottom-up", "top-down"])
def test_vampprior_is_the_mixture_of_the_pseudo_inputs_posteriors(layers):
    torch.manual_seed(0)
    two_layers = layers != "one"
    extra = ({"latent_dim2": 2, "encoder_hidden2": [8], "decoder_hidden2": [8], "inference": layers}
             if two_layers else {})
    model = VAE(ModelConfig(latent_dim=3, encoder_hidden=[16], decoder_hidden=[16], pseudo_inputs=4, **extra))
    pseudo = torch.rand(4, 784)
    model.init_pseudo_inputs(pseudo)
    torch.testing.assert_close(torch.sigmoid(model.pseudo_logits), pseudo.clamp(0.02, 0.98))
    prior = model.prior()
    assert prior.event_shape == (model.latent_dim,) and prior.batch_shape == ()
    z = prior.sample((6,))
    q = model.posterior(pseudo.clamp(0.02, 0.98))  # the pseudo-inputs' own posteriors
    if two_layers:  # p(z1, z2) = (1/C) sum_c q(z2 | E[z1|u_c]) p(z1|z2), or q(z2 | u_c) top-down
        z1, z2 = z.split([3, 2], -1)
        upper = model.top.upper_posterior(q.first.mean) if layers == "bottom-up" else q.first
        log_p2 = torch.logsumexp(upper.log_prob(z2[:, None, :]), -1) - math.log(4)
        by_hand = log_p2 + model.top._normal(model.top.down(z2)).log_prob(z1)
    else:
        by_hand = torch.logsumexp(q.log_prob(z[:, None, :]), -1) - math.log(4)
    torch.testing.assert_close(prior.log_prob(z), by_hand, atol=1e-4, rtol=1e-5)
    # gradients reach the pseudo-inputs through the prior
    prior.log_prob(z).sum().backward()
    assert model.pseudo_logits.grad.abs().sum() > 0



@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_two_layer_posterior_factorizes_in_its_inference_order_and_the_decoder_reads_its_layers(inference):
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=3, latent_dim2=2, encoder_hidden=[16], decoder_hidden=[16],
                            encoder_hidden2=[8], decoder_hidden2=[8], inference=inference))
    x = (torch.rand(4, 784) < 0.3).float()
    q = model.posterior(x)
    z = q.rsample((5,))  # (5, 4, 3 + 2), z = [z1, z2] in both orders
    z1, z2 = z.split([3, 2], -1)
    params = model.encoder(x)
    if inference == "bottom-up":  # q(z1|x) q(z2|z1)
        by_hand = (model.latent.posterior(params).log_prob(z1)
                   + model.top._normal(model.top.up(z1)).log_prob(z2))
    else:  # q(z2|x) q(z1|x, z2), both from the encoder's output for x
        by_hand = (model.top._normal(model.top.up(params)).log_prob(z2)
                   + model.latent.posterior(model.top.merge(torch.cat([params.expand(5, -1, -1), z2], -1))).log_prob(z1))
    torch.testing.assert_close(q.log_prob(z), by_hand)
    # the top-down decoder reads z2 as well as z1; the bottom-up one z1 only
    moved = torch.cat([z1, z2 + 1.0], -1)
    differs = not torch.equal(model.likelihood(z).log_prob(x), model.likelihood(moved).log_prob(x))
    assert differs == (inference == "top-down")
    assert model.decoder[0].in_features == (5 if inference == "top-down" else 3)
    # a training step's gradient reaches every network
    (model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("inference", ["bottom-up", "top-down"])
def test_log_var_bounds_clip_every_gaussian_of_a_two_layer_model_and_nothing_inside_them(inference):
    def model_with(bounds):
        torch.manual_seed(0)
        model = VAE(ModelConfig(latent_dim=3, latent_dim2=2, encoder_hidden=[16], decoder_hidden=[16],
                                encoder_hidden2=[8], decoder_hidden2=[8], inference=inference,
                                pseudo_inputs=4, log_var_bounds=bounds))
        with torch.no_grad():  # outputs far from 0, so that log-variances fall beyond [-1, 0.5]
            for net in (model.encoder.net, model.top.up, model.top.down):
                net.last.weight.mul_(20)
        return model
    free, clipped, wide = model_with([]), model_with([-1.0, 0.5]), model_with([-1e3, 1e3])
    x = (torch.rand(6, 784) < 0.3).float()
    z1, z2 = torch.randn(3, 6, 3), torch.randn(3, 6, 2)

    def scales(model):
        """sigma of q(z1|.), q(z2|.), p(z1|z2) for x's samples."""
        params, top = model.encoder(x), model.top
        if inference == "bottom-up":
            q1, q2 = model.latent.posterior(params), top.upper_posterior(z1)
        else:
            q2 = top._normal(top.up(params))
            q1 = model.latent.posterior(top.merge(torch.cat([params.expand(3, -1, -1), z2], -1)))
        return [d.base_dist.scale for d in (q1, q2, top._normal(top.down(z2)))]

    low, high = math.exp(-0.5), math.exp(0.25)  # sigma = exp(log_var / 2)
    assert any(((s < low) | (s > high)).any() for s in scales(free))  # the bounds have work to do
    for s in scales(clipped):
        assert ((s >= low * (1 - 1e-6)) & (s <= high * (1 + 1e-6))).all()
    for a, b in zip(scales(free), scales(wide)):  # inside the bounds nothing changes
        torch.testing.assert_close(a, b)
    # the whole model's densities and its VampPrior stay finite and trainable under the bounds
    q = clipped.posterior(x)
    z = q.rsample((5,))
    (clipped.likelihood(z).log_prob(x) + clipped.prior().log_prob(z) - q.log_prob(z)).mean().backward()
    assert clipped.pseudo_logits.grad.abs().sum() > 0


def test_a_bottom_up_model_orders_its_parameters_as_checkpoints_have_them():
    # Adam's state in a checkpoint is stored by parameter position: q(z2|z1)'s network before p(z1|z2)'s
    model = VAE(ModelConfig(latent_dim=3, latent_dim2=2, encoder_hidden2=[8], decoder_hidden2=[8]))
    names = [name for name, _ in model.named_parameters() if name.startswith("top.")]
    assert names == [f"top.{net}.{i}.{kind}" for net in ("up", "down") for i in (0, 2) for kind in ("weight", "bias")]
