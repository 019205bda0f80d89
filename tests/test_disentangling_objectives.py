"""The disentangling objectives: β-TCVAE's estimates of q(z), the capacity's schedule, DIP-VAE's
penalties, checked against brute force on fixed posteriors, and each trained on tiny data."""

import itertools
import math

import pytest
import torch

from vaelab.config import ConfigError, resolve_config
from vaelab.distributions import diagonal_normal, rsample, standard_normal
from vaelab.objectives import (OBJECTIVES, ObjectiveError, aggregate_log_densities, btcvae, mss_log_weights,
                               mws_log_weights, tc_decomposition)

from linear_gaussian import LinearGaussian, sample_data


class TablePosteriors:
    """Data point n (x = [[n]]) has the posterior N(mu[n], diag sigma[n]^2); prior N(0, I)."""

    def __init__(self, n=6, d=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.mu = torch.randn(n, d, generator=g, dtype=torch.float64)
        self.sigma = 0.3 + torch.rand(n, d, generator=g, dtype=torch.float64)
        self.x = torch.arange(n, dtype=torch.float64)[:, None]

    def posterior(self, x):
        rows = x[:, 0].long()
        return diagonal_normal(self.mu[rows], self.sigma[rows])

    def prior(self):
        return standard_normal(self.mu.shape[1], dtype=torch.float64)


def normal_density(z, mu, sigma):
    return math.exp(-0.5 * ((z - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def exact_aggregate(table, z):
    """Brute force: q(z) = 1/N sum_n q(z|x_n), and q(z_k) = 1/N sum_n q(z_k|x_n) per dimension k."""
    n, d = table.mu.shape
    dims = [sum(normal_density(z[k].item(), table.mu[m, k].item(), table.sigma[m, k].item()) for m in range(n)) / n
            for k in range(d)]
    joint = sum(math.prod(normal_density(z[k].item(), table.mu[m, k].item(), table.sigma[m, k].item())
                          for k in range(d)) for m in range(n)) / n
    return joint, dims


def batch_estimates(table, rows, z, sampling):
    """(log q(z_i), log q(z_ik)) of the batch `rows` with its samples z (batch, d), through the objective's code."""
    q = table.posterior(table.x[list(rows)])
    log_w = {"mws": mws_log_weights, "mss": mss_log_weights}[sampling](len(rows), len(table.x), z)
    return aggregate_log_densities(q.base_dist.log_prob(z.unsqueeze(-2)), log_w)


# ---------------------------------------------------------------- β-TCVAE's estimates of q(z)

def test_with_the_whole_data_set_as_the_batch_mws_is_the_exact_log_q_z_less_log_n():
    """MWS weighs every q(z_i|x_j) by 1/(N M): with M = N it is the exact aggregate posterior
    density divided by N, the offset by which MWS underestimates log q(z) (Chen et al.'s MWS)."""
    table = TablePosteriors()
    z = rsample(table.posterior(table.x), (), torch.Generator().manual_seed(1))
    joint, dims = batch_estimates(table, range(6), z, "mws")
    for i in range(6):
        exact_joint, exact_dims = exact_aggregate(table, z[i])
        assert joint[i].item() + math.log(6) == pytest.approx(math.log(exact_joint), abs=1e-9)
        for k in range(3):
            assert dims[i, k].item() + math.log(6) == pytest.approx(math.log(exact_dims[k]), abs=1e-9)


@pytest.mark.parametrize("batch", [2, 3, 6])
def test_mss_estimates_q_z_without_bias_over_the_batches_training_draws(batch):
    """Averaged over every ordered batch (a shuffled data set's batches), the MSS estimate of q(z) at a
    point's sample is the exact aggregate density; MWS's falls short of it."""
    table = TablePosteriors()
    z = rsample(table.posterior(table.x), (), torch.Generator().manual_seed(2))  # one sample per data point
    sums = {s: torch.zeros(6, dtype=torch.float64) for s in ("mss", "mws")}
    dim_sums = torch.zeros(6, 3, dtype=torch.float64)
    counts = torch.zeros(6, dtype=torch.float64)
    for rows in itertools.permutations(range(6), batch):
        for sampling in ("mss", "mws"):
            joint, dims = batch_estimates(table, rows, z[list(rows)], sampling)
            sums[sampling].index_add_(0, torch.tensor(rows), joint.exp())
            if sampling == "mss":
                dim_sums.index_add_(0, torch.tensor(rows), dims.exp())
        counts.index_add_(0, torch.tensor(rows), torch.ones(batch, dtype=torch.float64))
    for n in range(6):
        exact_joint, exact_dims = exact_aggregate(table, z[n])
        assert (sums["mss"][n] / counts[n]).item() == pytest.approx(exact_joint, rel=1e-9)
        torch.testing.assert_close(dim_sums[n] / counts[n], torch.tensor(exact_dims, dtype=torch.float64))
        assert (sums["mws"][n] / counts[n]).item() < exact_joint


@pytest.mark.parametrize("batch", [1, 2, 5, 64])
def test_the_log_weights_of_each_sample_sum_to_one_for_mss_and_to_1_over_n_for_mws(batch):
    n = 1000
    if batch == 1:  # no other image to stratify: MSS is MWS
        torch.testing.assert_close(mss_log_weights(batch, n), mws_log_weights(batch, n))
    else:
        torch.testing.assert_close(torch.logsumexp(mss_log_weights(batch, n), 1), torch.zeros(batch))
    torch.testing.assert_close(torch.logsumexp(mws_log_weights(batch, n), 1), torch.full((batch,), -math.log(n)))
    weights = mss_log_weights(batch, n).exp()
    if batch > 2:  # own 1/N, the next one (N - M)/(N M), the rest 1/M (Chen et al.'s appendix)
        m = batch - 1
        assert weights[0, 0].item() == pytest.approx(1 / n)
        assert weights[0, 1].item() == pytest.approx((n - m) / (n * m))
        assert weights[batch - 1, 0].item() == pytest.approx((n - m) / (n * m))
        assert weights[0, 2].item() == pytest.approx(1 / m)


@pytest.mark.parametrize("sampling", ["mws", "mss"])
def test_mutual_information_tc_and_dimensionwise_kl_add_up_to_the_kl_in_expectation(sampling):
    model = LinearGaussian()
    model.shift = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)  # q is not the exact posterior
    x = sample_data(model, n=8)
    terms = tc_decomposition(model, x, samples=40_000, generator=torch.Generator().manual_seed(0),
                             dataset_size=100, sampling=sampling)
    total = terms.mutual_information + terms.total_correlation + terms.dimensionwise_kl
    torch.testing.assert_close(total.mean(), terms.kl.mean(), atol=0.01, rtol=0)
    torch.testing.assert_close(total, terms.kl, atol=0.03, rtol=0)
    # the parts themselves are not the total: the estimator moves KL between them
    assert terms.total_correlation.abs().mean() > 0.01 and terms.mutual_information.abs().mean() > 0.01


@pytest.mark.parametrize("sampling", ["mws", "mss"])
def test_btcvae_with_every_weight_one_is_the_elbo(sampling):
    model = LinearGaussian()
    x = sample_data(model, n=8)
    # one draw: the objective is the ELBO with the one-sample Monte-Carlo KL, log q(z|x) - log p(z)
    one = btcvae(model, x, generator=torch.Generator().manual_seed(3), dataset_size=50, sampling=sampling)
    z = rsample(model.posterior(x), (1,), torch.Generator().manual_seed(3))
    monte_carlo_kl = (model.posterior(x).log_prob(z) - model.prior().log_prob(z))[0]
    torch.testing.assert_close(one.objective, one.reconstruction - monte_carlo_kl)
    torch.testing.assert_close(one.elbo, one.reconstruction - one.kl)  # the ELBO reported: analytic KL
    # so its expectation is the ELBO's
    many = btcvae(model, x, samples=40_000, generator=torch.Generator().manual_seed(4), dataset_size=50,
                  sampling=sampling)
    torch.testing.assert_close(many.objective, many.elbo, atol=0.05, rtol=0)


def test_btcvae_weighs_each_part_as_configured():
    model = LinearGaussian()
    x = sample_data(model, n=8)
    parts = tc_decomposition(model, x, generator=torch.Generator().manual_seed(5), dataset_size=50)
    out = btcvae(model, x, generator=torch.Generator().manual_seed(5), kl_weight=6.0, dataset_size=50,
                 alpha=0.5, gamma=2.0)
    expected = parts.reconstruction - (0.5 * parts.mutual_information + 6.0 * parts.total_correlation
                                       + 2.0 * parts.dimensionwise_kl)
    torch.testing.assert_close(out.objective, expected)


def test_btcvae_refuses_a_posterior_that_is_not_diagonal():
    from vaelab.config import ModelConfig
    from vaelab.model import VAE

    model = VAE(ModelConfig(latent_dim=2, encoder_hidden=[8], decoder_hidden=[8], latent="categorical"),
                image_shape=(1, 3, 4))
    x = torch.bernoulli(torch.full((4, 12), 0.5))
    with pytest.raises(ObjectiveError, match="not a diagonal distribution"):
        btcvae(model, x, generator=torch.Generator().manual_seed(0), dataset_size=10)


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("override, key", [
    ("objective.btcvae.sampling=\"msw\"", "objective.btcvae.sampling"),
    ("objective.btcvae.alpha=-1", "objective.btcvae.alpha"),
    ("objective.beta=-2", "objective.beta"),
    ("model.latent=\"categorical\"", "model.latent"),
    ("model.latent_dim2=2", "model.latent_dim2"),
])
def test_bad_btcvae_settings_are_one_line_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        resolve_config(overrides=["objective.name=\"btcvae\"", override])
    assert str(err.value).startswith(f"{key}:") and "\n" not in str(err.value)


def test_an_objectives_section_set_for_another_objective_is_an_error():
    with pytest.raises(ConfigError, match=r"^objective.btcvae.sampling: applies to objective.name = \"btcvae\" only"):
        resolve_config(overrides=["objective.btcvae.sampling=\"mss\""])


def test_an_objective_gets_its_sections_settings_as_keywords():
    config = resolve_config(overrides=["objective.name=\"btcvae\"", "objective.btcvae.sampling=\"mss\"",
                                       "objective.beta=6"])
    assert config.objective.keywords() == {"sampling": "mss", "alpha": 1.0, "gamma": 1.0}
    assert "btcvae" in OBJECTIVES and resolve_config().objective.keywords() == {}


# ---------------------------------------------------------------- training

def tiny_trainer(tmp_path, raw, *overrides, name="run"):
    from vaelab.data.views import make_views
    from vaelab.runs import RunFolder
    from vaelab.training import Trainer

    # train.threads pinned: runs compared bit for bit must sum over the same thread count
    config = resolve_config(overrides=["data.val_size=100", "train.batch_size=32", "train.epochs=3",
                                       "model.encoder_hidden=[32]", "model.decoder_hidden=[32]", "model.latent_dim=4",
                                       "train.eval_batch_size=50", "train.threads=1", *overrides])
    RunFolder(tmp_path / name).create(config)
    return Trainer(config, tmp_path / name, make_views(raw, config.data), progress=False, log=lambda *a: None)


BTCVAE = ("objective.name=\"btcvae\"", "objective.beta=4")


@pytest.mark.parametrize("sampling", ["mws", "mss"])
def test_btcvae_trains_on_tiny_data(tmp_path, tiny_raw, sampling):
    from vaelab.storage import read_jsonl
    from vaelab.training import dataset_elbo

    trainer = tiny_trainer(tmp_path, tiny_raw, *BTCVAE, f"objective.btcvae.sampling=\"{sampling}\"")
    assert trainer.step.objective_args["dataset_size"] == len(trainer.data.train) == 500
    before = dataset_elbo(trainer.model, trainer.data.val, 50)
    trainer.fit()
    after = dataset_elbo(trainer.model, trainer.data.val, 50)
    assert after["elbo"] > before["elbo"] + 20
    records = read_jsonl(trainer.run_dir / "metrics.jsonl")
    assert all(math.isfinite(r["train_objective"]) for r in records)
    # beta = 4 on the total correlation: the objective is below the ELBO where the TC estimate is positive
    assert all(r["train_objective"] != r["train_elbo"] for r in records)


@pytest.mark.parametrize("objective, interrupt_at", [
    (BTCVAE + ("objective.btcvae.sampling=\"mss\"",), 19),  # the end of the first epoch (16 steps an epoch)
    (("objective.name=\"capacity\"", "objective.capacity.steps=30", "objective.capacity.gamma=10"), 7),  # C rising
    (("objective.name=\"capacity\"", "objective.capacity.steps=30", "objective.capacity.gamma=10"), 38),  # C held
])
def test_a_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(tmp_path, tiny_raw, objective, interrupt_at):
    from test_train import resumed_like_reference

    resumed_like_reference(lambda name: tiny_trainer(tmp_path, tiny_raw, *objective, name=name), interrupt_at)


# ---------------------------------------------------------------- annealed capacity

@pytest.mark.parametrize("step, c", [(0, 0.0), (40, 10.0), (100, 25.0), (500, 25.0)])
def test_capacity_is_the_reconstruction_less_gamma_times_the_distance_of_the_kl_from_c(step, c):
    from vaelab.objectives import capacity, elbo

    model = LinearGaussian()
    x = sample_data(model, n=8)
    out = capacity(model, x, generator=torch.Generator().manual_seed(0), step=torch.tensor(float(step),
                   dtype=torch.float64), gamma=7.0, max_nats=25.0, steps=100)
    terms = elbo(model, x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.elbo, terms.elbo)  # the ELBO reported as usual
    expected = terms.reconstruction - 7.0 * abs(terms.kl.mean().item() - c)
    torch.testing.assert_close(out.objective, expected)


def test_capacity_without_a_schedule_holds_c_at_its_maximum():
    from vaelab.objectives import capacity

    model = LinearGaussian()
    x = sample_data(model, n=8)
    held = capacity(model, x, generator=torch.Generator().manual_seed(0), step=0, max_nats=3.0, steps=0)
    ended = capacity(model, x, generator=torch.Generator().manual_seed(0), step=10**6, max_nats=3.0, steps=10)
    torch.testing.assert_close(held.objective, ended.objective)


def test_the_training_step_gives_capacity_the_steps_taken_before_each(tmp_path, tiny_raw):
    trainer = tiny_trainer(tmp_path, tiny_raw, "objective.name=\"capacity\"", "objective.capacity.steps=20",
                           "train.epochs=2")
    seen, objective = [], trainer.step.objective

    def recording(*args, step, **kwargs):
        seen.append(step.item())
        return objective(*args, step=step, **kwargs)

    trainer.step.objective = recording
    trainer.fit()
    assert seen == [float(s) for s in range(32)]  # 16 steps an epoch


# ---------------------------------------------------------------- DIP-VAE

def test_dip_covariances_and_penalty_are_the_numpy_ones():
    import numpy as np
    from vaelab.objectives import DIP_TYPES, dip_penalty

    table = TablePosteriors(n=7, d=4)
    q_dims = table.posterior(table.x).base_dist
    mu, sigma = table.mu.numpy(), table.sigma.numpy()
    cov_mu = np.cov(mu, rowvar=False, bias=True)  # the batch's own covariance, 1/N
    expected = {"i": cov_mu, "ii": cov_mu + np.diag((sigma**2).mean(0))}
    for kind, matrix in expected.items():
        mine = DIP_TYPES[kind](q_dims)
        np.testing.assert_allclose(mine.numpy(), matrix, rtol=1e-12, atol=1e-12)
        off = sum(matrix[i, j] ** 2 for i in range(4) for j in range(4) if i != j)
        diagonal = sum((matrix[i, i] - 1) ** 2 for i in range(4))
        assert dip_penalty(mine, 3.0, 0.5).item() == pytest.approx(3.0 * off + 0.5 * diagonal, rel=1e-12)


@pytest.mark.parametrize("kind, lambda_d, expected_d", [("i", None, 20.0), ("ii", None, 2.0), ("i", 0.5, 0.5)])
def test_dipvae_is_the_weighted_elbo_less_the_penalty(kind, lambda_d, expected_d):
    from vaelab.objectives import DIP_TYPES, dip_penalty, dipvae, elbo

    model = LinearGaussian()
    model.stretch = 1.7
    x = sample_data(model, n=8)
    out = dipvae(model, x, generator=torch.Generator().manual_seed(0), kl_weight=3.0, type=kind, lambda_od=2.0,
                 lambda_d=lambda_d)
    terms = elbo(model, x, generator=torch.Generator().manual_seed(0))
    penalty = dip_penalty(DIP_TYPES[kind](model.posterior(x).base_dist), 2.0, expected_d)
    torch.testing.assert_close(out.objective, terms.reconstruction - 3.0 * terms.kl - penalty)
    torch.testing.assert_close(out.elbo, terms.elbo)
    assert penalty.item() > 0.1


@pytest.mark.parametrize("kind", ["i", "ii"])
def test_dipvae_trains_on_tiny_data(tmp_path, tiny_raw, kind):
    from vaelab.training import dataset_elbo

    trainer = tiny_trainer(tmp_path, tiny_raw, "objective.name=\"dipvae\"", f"objective.dipvae.type=\"{kind}\"",
                           "train.epochs=2")
    before = dataset_elbo(trainer.model, trainer.data.val, 50)
    summary = trainer.fit()
    assert dataset_elbo(trainer.model, trainer.data.val, 50)["elbo"] > before["elbo"] + 20
    assert math.isfinite(summary["test_elbo"])


@pytest.mark.parametrize("overrides, key", [
    (("objective.name=\"capacity\"", "objective.beta=4"), "objective.beta"),  # gamma weighs |KL - C|
    (("objective.name=\"capacity\"", "objective.capacity.max_nats=-1"), "objective.capacity.max_nats"),
    (("objective.name=\"capacity\"", "objective.capacity.steps=-5"), "objective.capacity.steps"),
    (("objective.name=\"dipvae\"", "objective.dipvae.type=\"iii\""), "objective.dipvae.type"),
    (("objective.name=\"dipvae\"", "objective.dipvae.lambda_d=-1"), "objective.dipvae.lambda_d"),
    (("objective.name=\"dipvae\"", "model.pseudo_inputs=10"), "model.pseudo_inputs"),
    (("objective.name=\"elbo\"", "objective.dipvae.lambda_od=1"), "objective.dipvae.lambda_od"),
])
def test_bad_capacity_and_dipvae_settings_are_one_line_errors_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        resolve_config(overrides=list(overrides))
    assert str(err.value).startswith(f"{key}:") and "\n" not in str(err.value)
    if key == "objective.beta":
        assert str(err.value).endswith("objective.capacity.gamma weighs |KL - C|, and C's schedule is "
                                       "objective.capacity.steps")


def test_beta_vae_is_the_elbo_with_beta_on_any_data():
    config = resolve_config(overrides=["objective.beta=6"])
    assert config.objective.name == "elbo" and config.objective.keywords() == {}


def test_a_config_file_sets_an_objectives_section_as_a_preset_would(tmp_path):
    import tomllib
    from vaelab.config import config_from_dict, to_toml

    path = tmp_path / "btcvae.toml"
    path.write_text('[objective]\nname = "btcvae"\nbeta = 6\n\n[objective.btcvae]\nsampling = "mss"\n')
    config = resolve_config(config_file=path)
    assert config.objective.beta == 6.0 and config.objective.btcvae.sampling == "mss"
    # written back (config.toml of a run, `vaelab config`) and read again, the same config
    assert config_from_dict(tomllib.loads(to_toml(config.to_dict()))) == config
