"""benchmarks/race.py: the adapter that lets vaelab's NLL score a pythae model computes the
densities pythae's model defines, pythae stops at the budget, and a tiny race ends with both
sides scored. pythae is installed for the benchmark only, so without it these tests skip."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("pythae", reason="pythae is the race's opponent, installed for the benchmark only: "
                                     "pip install -c constraints.txt -r benchmarks/requirements-race.txt")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "race.py"


def _load_race():
    """benchmarks/ is no package: load the script as a module."""
    spec = importlib.util.spec_from_file_location("race", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


race = _load_race()


@pytest.fixture
def tiny():
    """A random pythae VAE over 6 pixels (one hidden layer of 4, latent 3), some images and z's."""
    model = race.pythae_model(seed=3, n_pixels=6, hidden=(4,), latent=3, image_shape=(1, 2, 3)).eval()
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 6, generator=generator) < 0.5).float()
    z = torch.randn(7, 5, 3, generator=generator)  # (samples, images, latent), as the NLL estimator draws
    return model, race.PythaeAdapter(model), x, z


def test_posterior_is_the_normal_of_the_encoders_mean_and_log_variance(tiny):
    model, adapter, x, z = tiny
    with torch.no_grad():
        mean, log_var = model.encoder.net(x).double().chunk(2, dim=-1)
        squared = (z.double() - mean) ** 2 / log_var.exp()
        by_hand = (-0.5 * math.log(2 * math.pi) - 0.5 * log_var - 0.5 * squared).sum(-1)
        computed = adapter.posterior(x).log_prob(z)
    assert computed.shape == (7, 5)
    torch.testing.assert_close(computed.double(), by_hand, rtol=1e-5, atol=1e-5)


def test_likelihood_is_the_bernoulli_of_the_decoders_sigmoid(tiny):
    model, adapter, x, z = tiny
    with torch.no_grad():
        p = torch.sigmoid(model.decoder.net(z).double())
        by_hand = (x * p.log() + (1 - x) * (1 - p).log()).sum(-1)
        computed = adapter.likelihood(z).log_prob(x)
        # what pythae trains on is that same sigmoid, in its image shape
        torch.testing.assert_close(model.decoder(z[0])["reconstruction"].reshape(5, 6).double(), p[0])
    assert computed.shape == (7, 5)
    torch.testing.assert_close(computed.double(), by_hand, rtol=1e-5, atol=1e-5)


def test_confident_pixels_are_scored_from_the_logits_not_clamped_probabilities(tiny):
    """A logit of -40: p(x=1) = e^-40, 40 nats; float32's sigmoid, or torch's clamped probs, say otherwise."""
    model, adapter, _, _ = tiny
    with torch.no_grad():
        last = model.decoder.net[-1]
        last.weight.zero_()
        last.bias.fill_(-40.0)
        log_px = adapter.likelihood(torch.zeros(1, 3)).log_prob(torch.ones(1, 6))
    torch.testing.assert_close(log_px, torch.tensor([-6 * 40.0]), rtol=1e-5, atol=1e-3)


def test_the_adapter_scores_what_pythaes_loss_trains(tiny):
    """pythae's own reconstruction and KL terms are the adapter's -log p(x|z) and KL(q || p)."""
    model, adapter, x, z = tiny
    with torch.no_grad():
        out = model.encoder(x.reshape(5, 1, 2, 3))
        recon = model.decoder(z[0])["reconstruction"]
        _, recon_loss, kl = model.loss_function(recon, x.reshape(5, 1, 2, 3), out.embedding, out.log_covariance, z[0])
        posterior, prior = adapter.posterior(x), adapter.prior()
        torch.testing.assert_close(recon_loss, -adapter.likelihood(z[0]).log_prob(x).mean())
        torch.testing.assert_close(kl, torch.distributions.kl_divergence(posterior, prior).mean())


def test_vaelabs_estimator_scores_the_adapter(tiny):
    """The adapter meets the API evaluate_images needs; a discrete model's NLL is positive."""
    from vaelab.data.views import ImageSet
    from vaelab.evaluate import evaluate_images

    _, adapter, x, _ = tiny
    images = ImageSet(x.to(torch.uint8), torch.zeros(5, dtype=torch.long), resample=False, binary=True)
    result = evaluate_images(adapter, images, k=16, seed=0, threads=1)
    assert result["n"] == 5 and result["k"] == 16
    assert 0 < result["nll"] < math.inf and result["nll"] <= -result["elbo"] + 1.0


def test_the_clock_stops_pythae_once_the_budget_is_spent():
    clock = race.BudgetClock(seconds=3600)
    clock.on_train_begin(None)
    clock.on_epoch_begin(None, epoch=1)
    clock.on_train_step_end(None)  # well within the budget: training goes on
    clock.seconds = 0.0
    with pytest.raises(race._BudgetSpent):
        clock.on_train_step_end(None)
    assert clock.steps == 2 and clock.epoch == 1


@pytest.mark.slow
def test_a_tiny_race_scores_both_sides(tmp_path, mnist_dir):
    """3 s of training a side on 500 images, 50 test images at K = 5 (about 15 s on 2 busy cores)."""
    out = tmp_path / "race.json"
    environ = os.environ | {"PYTHONPATH": str(ROOT / "src"), "VAELAB_DATA": str(mnist_dir), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--minutes", "0.05", "--test-images", "50", "--eval-k", "5",
         "--train-subset", "500", "--val-images", "500", "--vaelab-set", "train.compile=false",
         "--order", "pythae-first", "--workdir", str(tmp_path / "runs"), "--out", str(out)],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    batches = {"vaelab": 500 // 500, "pythae": 500 // 100}  # its preset's batch of 500; pythae's --batch-size 100
    for name, side in result["sides"].items():
        assert side["steps_per_epoch"] == batches[name] and side["steps"] > 0, name
        assert side["epochs"] == pytest.approx(side["steps"] / batches[name])
        assert 3.0 <= side["train_seconds"] < 60, name  # the budget was spent, and not far overrun
        assert side["epochs_per_second"] == pytest.approx(side["epochs"] / side["train_seconds"])
        assert side["n"] == 50 and side["k"] == 5 and 0 < side["nll"] < math.inf, name
        assert side["stop_reason"] == "time budget of 0.05 min spent", name
    vaelab_side, pythae_side = result["sides"]["vaelab"], result["sides"]["pythae"]
    assert result["difference"]["nll_pythae_minus_vaelab"] == pytest.approx(pythae_side["nll"] - vaelab_side["nll"])
    assert result["difference"]["epochs_per_second_ratio"] == pytest.approx(
        vaelab_side["epochs_per_second"] / pythae_side["epochs_per_second"])
    assert vaelab_side["weights"] == "ema" and result["settings"]["pythae"] == importlib.metadata.version("pythae")
    assert "NLL(pythae) - NLL(vaelab)" in done.stdout and "epochs/s vaelab / pythae" in done.stdout
