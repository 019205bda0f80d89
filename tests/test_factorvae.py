"""FactorVAE: its discriminator's TC estimate, the permutation, training beside the VAE, exact resume."""

import math

import pytest
import torch

from test_train import assert_same_tensors, make_trainer, resumed_like_reference
from vaelab.cli import main
from vaelab.config import ConfigError, resolve_config
from vaelab.factorvae import Adversary, Discriminator, density_ratio, permute_dims
from vaelab.objectives import OBJECTIVES
from vaelab.runs import DISCRIMINATOR, RunFolderError
from vaelab.storage import load_tensors, read_jsonl

FACTORVAE = ("objective.name=factorvae", "objective.factorvae.discriminator_hidden=[64,64]", "objective.factorvae.gamma=1",
             "objective.factorvae.discriminator_lr=3e-3")


def test_the_permutation_keeps_each_marginal_and_breaks_the_pairing():
    z = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    z[:, 1] = z[:, 0]  # two dimensions equal: a pairing the permutation must break
    permuted = permute_dims(z, torch.Generator().manual_seed(1))
    for j in range(4):
        assert torch.equal(permuted[:, j].sort().values, z[:, j].sort().values), j
    assert (permuted[:, 0] != permuted[:, 1]).float().mean() > 0.9
    assert torch.equal(permuted, permute_dims(z, torch.Generator().manual_seed(1)))  # the run's stream decides


def gaussian_tc_estimate(rho: float, steps: int = 600) -> float:
    """Train a small discriminator on a 2-D Gaussian of correlation rho through `Adversary.step`,
    then estimate TC on fresh samples."""
    generator = torch.Generator().manual_seed(0)
    cholesky = torch.linalg.cholesky(torch.tensor([[1.0, rho], [rho, 1.0]]))
    draw = lambda n: torch.randn(n, 2, generator=generator) @ cholesky.T  # noqa: E731
    adversary = Adversary(2, [64, 64], lr=2e-3, device=torch.device("cpu"), seed=0)
    for _ in range(steps):
        z = draw(256)
        adversary.step(z, density_ratio(adversary.discriminator, z), generator, len(z))
    with torch.no_grad():
        return density_ratio(adversary.discriminator, draw(20_000)).mean().item()


@pytest.fixture
def one_thread():
    """Small products on one thread: on a loaded machine two threads made them wait many times longer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_the_tc_estimate_matches_the_closed_form_of_a_correlated_gaussian(rho, one_thread):
    # TC of a Gaussian = -0.5 log det(its correlation matrix): 0 at rho = 0, 0.511 nats at rho = 0.8
    exact = -0.5 * math.log(1 - rho**2)
    assert gaussian_tc_estimate(rho) == pytest.approx(exact, abs=0.08)


def test_the_vae_step_moves_no_weight_of_the_discriminator(tiny_raw):
    trainer_config = resolve_config(overrides=[*FACTORVAE, "model.encoder_hidden=[16]", "model.decoder_hidden=[16]"])
    from vaelab.model import build_model
    model = build_model(trainer_config.model, (1, 28, 28))
    discriminator = Discriminator(trainer_config.model.latent_dim, [8])
    x = torch.rand(16, 784).round()
    terms = OBJECTIVES["factorvae"](model, x, discriminator=discriminator, gamma=5.0)
    (-terms.objective.sum()).backward()
    assert all(p.grad is None for p in discriminator.parameters())
    assert torch.allclose(terms.objective, terms.elbo - 5.0 * terms.tc)
    assert terms.z.shape == (16, trainer_config.model.latent_dim)


def test_a_tiny_factorvae_run_trains_and_its_discriminator_beats_chance(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, *FACTORVAE, "optim.lr=5e-3")
    untrained = {k: v.clone() for k, v in trainer.adversary.discriminator.state_dict().items()}
    summary = trainer.fit()
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    assert records[-1]["val_elbo"] > records[0]["val_elbo"] + 20
    assert all(math.isfinite(r["train_tc"]) and 0 <= r["discriminator_accuracy"] <= 1 for r in records)
    assert records[-1]["discriminator_accuracy"] > 0.55  # codes of 10 prototypes are far from factorial
    assert records[-1]["train_tc"] > 0.03
    # the final discriminator is in the run folder, and it is the trained one
    saved, metadata = load_tensors(trainer.run_dir / DISCRIMINATOR)
    assert metadata["format"] == "vaelab-discriminator"
    for key, value in trainer.adversary.discriminator.state_dict().items():
        assert torch.equal(saved[key], value), key
    assert any(not torch.equal(saved[k], v) for k, v in untrained.items())
    assert summary["compiled_step"] is False


@pytest.mark.parametrize("interrupt_at", [7, 19, 45])  # mid-epoch, the end of the first epoch (19 steps), later
def test_an_interrupted_and_resumed_factorvae_run_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path, tiny_raw,
                                                                                             interrupt_at):
    reference, second = resumed_like_reference(
        lambda name: make_trainer(tmp_path, tiny_raw, *FACTORVAE, name=name), interrupt_at)
    assert_same_tensors(reference.adversary.discriminator.state_dict(), second.adversary.discriminator.state_dict())
    saved, resumed = (t.adversary.optimizer.state_dict()["state"] for t in (reference, second))
    assert saved.keys() == resumed.keys()
    for index, moments in saved.items():
        assert_same_tensors(moments, resumed[index])


def test_a_factorvae_config_will_not_resume_from_a_checkpoint_without_a_discriminator(tmp_path, tiny_raw):
    plain = make_trainer(tmp_path, tiny_raw, "train.epochs=1")
    plain.fit()
    factorvae = make_trainer(tmp_path, tiny_raw, *FACTORVAE, name="other")
    factorvae.run_dir = plain.run_dir
    with pytest.raises(RunFolderError, match="no discriminator"):
        factorvae.load_checkpoint()


@pytest.mark.parametrize("overrides, key", [
    (["objective.name=factorvae", "objective.factorvae.gamma=-1"], "objective.factorvae.gamma"),
    (["objective.name=factorvae", "objective.factorvae.discriminator_hidden=[]"], "objective.factorvae.discriminator_hidden"),
    (["objective.name=factorvae", "objective.factorvae.discriminator_hidden=[0]"], "objective.factorvae.discriminator_hidden"),
    (["objective.name=factorvae", "objective.factorvae.discriminator_lr=0"], "objective.factorvae.discriminator_lr"),
    (["objective.name=factorvae", "objective.samples=2"], "objective.samples"),
    (["objective.factorvae.gamma=10"], "objective.factorvae.gamma"),  # set for the elbo objective, where it means nothing
    (["objective.factorvae.discriminator_lr=1e-3"], "objective.factorvae.discriminator_lr"),
    (["objective.name=factorvae", "train.compile=true"], "train.compile"),
    (["objective.name=factorvae", "model.latent=categorical"], "model.latent"),
    (["objective.name=factorvae", "model.latent_dim2=2"], "model.latent_dim2"),
])
def test_factorvae_config_errors_are_one_line_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as caught:
        resolve_config(overrides=overrides)
    message = str(caught.value)
    assert message.startswith(f"{key}:") and "\n" not in message


def test_the_cli_refuses_a_compiled_factorvae_on_one_line(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--set", "objective.name=factorvae",
                 "--set", "train.compile=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.compile" in err and "factorvae" in err


def test_compile_auto_trains_factorvae_eagerly(tmp_path, tiny_raw):
    trainer = make_trainer(tmp_path, tiny_raw, *FACTORVAE, "train.compile=auto", "train.max_steps=6000")
    assert trainer.step.compiled is None and trainer.adversary is not None
