"""What the examples needed of the core: flows sampled from vaelab's generator (`vaelab.rsample`), a posterior
vaelab cannot sample refused when the model is built, a user's networks told the sizes they must fit, the
evaluation of a posterior without a closed-form mean, and no half-made run folder after a model that does not fit."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.distributions import (AffineTransform, Bernoulli, Gamma, Independent, Normal, TanhTransform,
                                 TransformedDistribution)

import vaelab
from tiny_runs import tiny_data  # noqa: F401  (fixture)
from vaelab.config import resolve_config
from vaelab.distributions import diagonal_normal, rsample
from vaelab.evaluate import evaluate_images
from vaelab.model import VAE


def test_rsample_of_a_flow_is_its_base_draw_through_the_transforms():
    base = diagonal_normal(torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.3]))
    transforms = [AffineTransform(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0]), event_dim=1), TanhTransform()]
    q = TransformedDistribution(base, transforms)
    z = rsample(q, (4,), torch.Generator().manual_seed(0))
    expected = rsample(base, (4,), torch.Generator().manual_seed(0)) * torch.tensor([0.5, 3.0]) + torch.tensor([1, 2])
    torch.testing.assert_close(z, torch.tanh(expected))
    assert z.shape == (4, 2) and torch.isfinite(q.log_prob(z)).all()
    wrapped = Independent(TransformedDistribution(Normal(torch.zeros(3, 2), 1.0), [TanhTransform()]), 1)
    assert rsample(wrapped, (5,), torch.Generator().manual_seed(0)).shape == (5, 3, 2)


def test_rsample_of_a_flow_is_reparameterized():
    loc = torch.zeros(3, requires_grad=True)
    q = TransformedDistribution(diagonal_normal(loc, torch.ones(3)), [TanhTransform()])
    rsample(q, (2,), torch.Generator().manual_seed(0)).sum().backward()
    assert loc.grad.abs().sum() > 0


def test_rsample_names_what_it_can_draw_from():
    with pytest.raises(TypeError, match="cannot draw from a Gamma.*Normal.*rsample_with"):
        rsample(Gamma(torch.ones(1), torch.ones(1)))


def test_vaelab_rsample_is_public():
    assert "rsample" in vaelab.__all__ and vaelab.rsample is rsample


class GammaPosterior(vaelab.Model):
    """A model whose posterior vaelab cannot draw from with its generator."""

    def __init__(self, image_shape=(1, 28, 28)):
        super().__init__(image_shape)
        self.net = nn.Linear(784, 2)
        self.register_buffer("zero", torch.zeros(2))

    def prior(self):
        return Independent(Normal(self.zero, 1.0), 1)

    def posterior(self, x, y=None):
        return Independent(Gamma(nn.functional.softplus(self.net(x)) + 0.1, 1.0), 1)

    def likelihood(self, z, y=None):
        return Independent(Bernoulli(logits=z.sum(-1, keepdim=True).expand(*z.shape[:-1], 784)), 1)


def test_a_posterior_vaelab_cannot_sample_is_refused_when_the_model_is_checked():
    with pytest.raises(vaelab.ModelError, match=r"^model: posterior\(x\): vaelab cannot draw from a Gamma"):
        vaelab.check_model(GammaPosterior(), (1, 28, 28))


class SizedEncoder(nn.Module):
    def __init__(self, image_shape, out_features, latent_dim, n_labels, width=4):
        super().__init__()
        self.seen = {"image_shape": image_shape, "out_features": out_features, "latent_dim": latent_dim,
                     "n_labels": n_labels, "width": width}
        c, h, w = image_shape
        self.net = nn.Sequential(nn.Linear(c * h * w + n_labels, width), nn.ReLU(), nn.Linear(width, out_features))

    def forward(self, images, labels=None):  # labels: one-hot, (batch, n_labels), for a conditional model
        x = images.flatten(1)
        return self.net(x if labels is None else torch.cat([x, labels], -1))


class SizedDecoder(nn.Module):
    def __init__(self, image_shape, in_features, params_per_pixel):
        super().__init__()
        self.seen = {"in_features": in_features, "params_per_pixel": params_per_pixel}
        c, h, w = image_shape
        self.net = nn.Sequential(nn.Linear(in_features, params_per_pixel * c * h * w),
                                 nn.Unflatten(1, (params_per_pixel * c, h, w)))

    def forward(self, z):
        return self.net(z)


@pytest.mark.parametrize("overrides, encoder, decoder", [
    ([], {"out_features": 6, "latent_dim": 3, "n_labels": 0}, {"in_features": 3, "params_per_pixel": 1}),
    (["model.likelihood=\"discretized_logistic\"", "data.binarization=\"grey\"", "model.conditional=true"],
     {"out_features": 6, "latent_dim": 3, "n_labels": 10}, {"in_features": 13, "params_per_pixel": 2}),
    (["model.latent=\"categorical\"", "model.categories=4"], {"out_features": 12, "latent_dim": 3, "n_labels": 0},
     {"in_features": 12, "params_per_pixel": 1}),
])
def test_own_networks_are_told_the_sizes_they_must_fit(overrides, encoder, decoder):
    config = resolve_config(overrides=[f"model.encoder={json.dumps(f'{__file__}:SizedEncoder')}",
                                       f"model.decoder={json.dumps(f'{__file__}:SizedDecoder')}",
                                       "model.latent_dim=3", "model.args.width=5", *overrides])
    model = VAE(config.model, (1, 28, 28))  # the file runs as a module of its own: its classes, not these
    assert model.encoder.net.seen == {"image_shape": (1, 28, 28), "width": 5, **encoder}
    assert model.decoder.net.seen == decoder


class FlowModel(vaelab.Model):
    """q(z|x): a Gaussian through tanh, which has no closed-form mean; encode_mean stands in for it."""

    def __init__(self, image_shape=(1, 4, 4)):
        super().__init__(image_shape)
        self.net = nn.Linear(16, 4)
        self.register_buffer("zero", torch.zeros(2))

    def prior(self):
        return Independent(Normal(self.zero, 1.0), 1)

    def posterior(self, x, y=None):
        mu, log_sigma = self.net(x).chunk(2, -1)
        return TransformedDistribution(diagonal_normal(mu, log_sigma.exp()), [TanhTransform(cache_size=1)])

    def likelihood(self, z, y=None):
        return Independent(Bernoulli(logits=z.repeat_interleave(8, -1)), 1)

    def encode_mean(self, x, y=None):
        return torch.tanh(self.net(x).chunk(2, -1)[0])


class Images:
    """What evaluate_images reads of a split: pixels, labels, len() and batch()."""

    def __init__(self, pixels):
        self.pixels, self.labels = pixels, torch.zeros(len(pixels), dtype=torch.long)

    def __len__(self):
        return len(self.pixels)

    def batch(self, index, generator):
        return self.pixels[index]


def test_a_flow_posterior_is_evaluated_with_its_encode_mean_and_a_monte_carlo_kl():
    torch.manual_seed(0)
    result = evaluate_images(FlowModel(), Images(torch.rand(20, 16).round()), k=8, threads="fixed")
    assert result["kl_per_dim"] is None and result["kl"] > 0 and len(result["unit_activity"]) == 2


WRONG_DECODER = '''
from torch import nn


class Decoder(nn.Module):
    def __init__(self, image_shape, in_features, outputs=100):
        super().__init__()
        self.net = nn.Linear(in_features, outputs)

    def forward(self, z):
        return self.net(z)
'''


def test_a_network_that_does_not_fit_leaves_no_run_folder_so_the_same_command_runs_once_fixed(tmp_path, tiny_data,
                                                                                               capsys):
    from vaelab import cli

    path = tmp_path / "nets.py"
    path.write_text(WRONG_DECODER)
    run = tmp_path / "run"
    args = ["train", "--set", f"model.decoder={json.dumps(f'{path}:Decoder')}", "--set", "data.val_size=100",
            "--set", "train.batch_size=50", "--set", "train.max_steps=2", "--set", "figures.names=[]",
            "--out", str(run)]
    assert cli.main(args) == 2
    assert "error: model.decoder: returned 100 values per z" in capsys.readouterr().err
    assert not run.exists()
    assert cli.main([*args, "--set", "model.args.outputs=784"]) == 0
    assert (run / "model.safetensors").is_file()
