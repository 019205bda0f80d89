"""The importance-sampled log-likelihood and the evaluation report."""

import math

import pytest
import torch

from linear_gaussian import LinearGaussian, sample_data
from vaelab.config import DataConfig, ModelConfig, RunConfig
from vaelab.data.views import make_views
from vaelab.distributions import plain_log_probs, rsample
from vaelab.evaluate import (CACHE_CHUNK_FACTOR, CPU_CHUNK_MIN_MB, EvaluationError, _cache_size, check_scorable, chunk_memory_mb, compiles_scoring,
                             decoder_width, evaluate_images, importance_log_likelihood, l2_cache_bytes, plan_chunks,
                             reference_log_likelihood)
from vaelab.model import VAE
from vaelab.objectives import elbo


def repeated_estimate(model, x, k, repeats, seed=0):
    """Mean and standard error over `repeats` independent K-sample estimates, per data point."""
    xs = x.repeat(repeats, 1)
    estimate, _ = importance_log_likelihood(model, xs, k, torch.Generator().manual_seed(seed))
    estimate = estimate.reshape(repeats, len(x))
    return estimate.mean(0), estimate.std(0) / math.sqrt(repeats)


def off_posterior_model():
    model = LinearGaussian()
    model.shift = torch.tensor([0.4, -0.3, 0.2], dtype=torch.float64)
    model.stretch = 1.4
    return model


def test_k1_equals_the_elbo_in_expectation():
    model = off_posterior_model()
    x = sample_data(model, n=4)
    mean, stderr = repeated_estimate(model, x, k=1, repeats=40_000)
    reference = elbo(model, x, samples=200_000, generator=torch.Generator().manual_seed(1)).elbo
    assert torch.all((mean - reference).abs() < 4 * stderr + 0.01), (mean, reference, stderr)
    assert torch.all(reference < model.log_marginal(x) - 0.05)  # the gap is there to close


def test_expectation_grows_with_k_and_reaches_log_p_x():
    model = off_posterior_model()
    x = sample_data(model, n=4)
    exact = model.log_marginal(x)
    means = []
    for k in (1, 4, 32, 256):
        mean, stderr = repeated_estimate(model, x, k, repeats=4000, seed=k)
        means.append(mean)
        assert torch.all(mean <= exact + 4 * stderr), k  # a lower bound in expectation
    for smaller, larger in zip(means, means[1:]):
        assert torch.all(larger > smaller)
    converged, _ = importance_log_likelihood(model, x, 200_000, torch.Generator().manual_seed(5))
    torch.testing.assert_close(converged, exact, atol=0.01, rtol=0)


def test_exact_posterior_gives_log_p_x_for_any_k():
    model = LinearGaussian()
    x = sample_data(model)
    estimate, _ = importance_log_likelihood(model, x, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(estimate, model.log_marginal(x), atol=1e-9, rtol=0)


def test_batched_estimator_agrees_with_a_per_point_loop():
    # Small weights make q close to the prior and log p(x|z) nearly flat in z, so both
    # estimators have almost no Monte-Carlo noise, while the data points' values differ by
    # many nats: mixing points up in the batched arithmetic could not go unnoticed.
    torch.manual_seed(0)
    config = ModelConfig(latent_dim=2, encoder_hidden=[16], decoder_hidden=[16], init="normal", init_std=0.05)
    model = VAE(config, image_shape=(1, 5, 6))
    with torch.no_grad():
        model.decoder.last.bias.normal_(0, 2)
    x = torch.bernoulli(torch.full((6, 30), 0.4))
    batched, _ = importance_log_likelihood(model, x, 300, torch.Generator().manual_seed(0), samples_per_chunk=70)
    looped = reference_log_likelihood(model, x, 300, torch.Generator().manual_seed(1))
    assert batched.max() - batched.min() > 5
    torch.testing.assert_close(batched, looped, atol=0.02, rtol=0)
    # The same on a model with a real posterior, where the loop is exact by construction.
    linear = LinearGaussian()
    xs = sample_data(linear, n=5)
    batched, _ = importance_log_likelihood(linear, xs, 50, torch.Generator().manual_seed(0), samples_per_chunk=7)
    looped = reference_log_likelihood(linear, xs, 50, torch.Generator().manual_seed(1))
    torch.testing.assert_close(batched, looped, atol=1e-9, rtol=0)
    torch.testing.assert_close(batched, linear.log_marginal(xs), atol=1e-9, rtol=0)


def test_chunk_plan_respects_the_memory_bound():
    plan = plan_chunks(5000, 784, 512, memory_mb=64)
    assert plan.samples == 5000 or plan.points == 1
    big = plan_chunks(10, 784, 512, memory_mb=64)
    assert big.samples == 10 and big.points > 100
    tiny = plan_chunks(5000, 784, 512, memory_mb=1)
    assert tiny.points == 1 and tiny.samples < 5000


@pytest.fixture
def tiny_data(tiny_raw):
    return make_views(tiny_raw, DataConfig(val_size=100))


def test_evaluate_images_reports_every_term(tiny_data):
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=3, encoder_hidden=[32], decoder_hidden=[32]))
    result = evaluate_images(model, tiny_data.test, k=50, seed=0, memory_mb=1)
    assert result["k"] == 50 and result["n"] == 100
    assert result["elbo"] == pytest.approx(result["reconstruction"] - result["kl"])
    assert result["nll"] <= -result["elbo"] + 0.5  # the K=50 bound is tighter than the ELBO
    assert sum(result["kl_per_dim"]) == pytest.approx(result["kl"], rel=1e-5)
    assert 0 < result["nll_stderr"] < 10
    again = evaluate_images(model, tiny_data.test, k=50, seed=0, memory_mb=1)
    assert again == result  # deterministic given the seed
    assert result["kl_estimate"] == "analytic"


def test_the_result_says_when_the_kl_is_a_monte_carlo_estimate(tiny_data):
    from vaelab.cli import format_evaluation

    model = VAE(ModelConfig(latent_dim=3, latent_dim2=2, encoder_hidden=[16], decoder_hidden=[16]))
    result = evaluate_images(model, tiny_data.test, k=10)
    assert result["kl_estimate"] == "Monte-Carlo over 10 samples of z"  # two layers: no closed form
    text = format_evaluation(result | {"data": "tiny", "split": "test", "binarization": "dynamic", "latent_dim": 5,
                                       "seconds": 1.0, "device": "cpu"})
    assert "KL(q(z|x) || p(z)), Monte-Carlo over 10 samples of z" in text and "analytic" not in text


def test_active_units_count_dimensions_the_encoder_uses(tiny_data):
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=4, encoder_hidden=[32], decoder_hidden=[32]))
    with torch.no_grad():
        last = model.encoder.last
        last.weight *= 20  # spread the posterior means well beyond 0.01 variance
        last.weight[1] = 0  # mean of dimension 1 no longer depends on x: an inactive unit
        last.weight[3] = 0
    result = evaluate_images(model, tiny_data.test, k=2)
    assert result["active_units"] == 2
    assert result["unit_activity"][1] == pytest.approx(0.0, abs=1e-9)


def test_bernoulli_nll_of_grey_pixels_is_refused():
    config = RunConfig(data=DataConfig(binarization="grey"), model=ModelConfig(likelihood="bernoulli"))
    with pytest.raises(EvaluationError, match="not normalized.*binarization=dynamic"):
        check_scorable(config)
    check_scorable(RunConfig(data=DataConfig(binarization="grey"), model=ModelConfig(likelihood="gaussian")))


def test_chunk_memory_defaults_by_device_and_is_recorded(tiny_data):
    cpu = chunk_memory_mb(None, torch.device("cpu"))
    assert cpu == max(CACHE_CHUNK_FACTOR * l2_cache_bytes() / 2**20, CPU_CHUNK_MIN_MB)  # sized to the L2 cache
    assert cpu < 32  # and below malloc's 32 MB mmap ceiling per tensor
    assert chunk_memory_mb(None, torch.device("cuda")) == 1024.0
    assert chunk_memory_mb(3.0, torch.device("cpu")) == 3.0
    model = VAE(ModelConfig(latent_dim=2, encoder_hidden=[16], decoder_hidden=[16]))
    assert evaluate_images(model, tiny_data.test, k=20, seed=0)["memory_mb"] == cpu
    assert evaluate_images(model, tiny_data.test, k=20, seed=0, memory_mb=1)["memory_mb"] == 1


def test_cache_sizes_read_as_sysfs_writes_them():
    assert _cache_size("2048K") == 2 * 2**20 and _cache_size("1M") == 2**20 and _cache_size("512") == 512
    assert 2**14 <= l2_cache_bytes() <= 2**30


@pytest.mark.parametrize("memory_mb", [4, 16, 18, 36])
def test_chunks_split_k_evenly(memory_mb):
    # every chunk of one size, so that the compiled chunk serves them all
    plan = plan_chunks(5000, 784, 200, memory_mb=memory_mb)
    rows = memory_mb * 2**20 // (4 * (4 * 784 + 2 * 200 + 64))
    assert plan.points == 1 and 5000 % plan.samples == 0 and rows / 2 <= plan.samples <= rows


def test_chunks_are_planned_by_the_widest_decoder_product():
    assert decoder_width(VAE(ModelConfig(latent_dim=2, decoder_hidden=[64, 200]))) == 200
    assert decoder_width(VAE(ModelConfig(latent_dim=2, decoder_hidden=[64, 200], block="gated"))) == 400  # [W; V]
    assert decoder_width(LinearGaussian()) == 1024  # a model without vaelab's config


def test_the_cpu_floor_gives_chunks_of_a_thousand_samples():
    assert plan_chunks(5000, 784, 200, memory_mb=CPU_CHUNK_MIN_MB).samples == 1000


def test_k_without_a_divisor_near_the_bound_ends_with_one_shorter_chunk():
    plan = plan_chunks(4999, 784, 200, memory_mb=16)  # 4999 = 4999 * 1: a prime
    chunks = math.ceil(4999 / plan.samples)
    assert plan.samples <= 1165 and plan.samples * chunks - 4999 < chunks


@pytest.mark.parametrize("block", [1, 7])
def test_the_elbo_terms_per_block_of_images_are_those_per_image(tiny_data, block, monkeypatch):
    # a closed-form KL draws nothing: the same draws for the NLL, whatever images share a block,
    # and the last block shorter than the others (100 images in blocks of 7)
    import vaelab.evaluate as evaluate

    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=3, encoder_hidden=[16], decoder_hidden=[16])).eval()
    whole = evaluate_images(model, tiny_data.test, k=300, seed=2, memory_mb=0.5)
    monkeypatch.setattr(evaluate, "EXTRAS_BLOCK", block)
    parts = evaluate_images(model, tiny_data.test, k=300, seed=2, memory_mb=0.5)
    for key in ("nll", "nll_stderr", "elbo", "reconstruction", "kl"):
        assert parts[key] == pytest.approx(whole[key], abs=1e-6), key
    assert parts["unit_activity"] == pytest.approx(whole["unit_activity"], abs=1e-7)  # float32 products of other batch sizes
    assert parts["kl_per_dim"] == pytest.approx(whole["kl_per_dim"], abs=1e-6)


# ---------------------------------------------------------------- the fast path against the plain one

def _tiny_models():
    torch.manual_seed(0)
    one_layer = VAE(ModelConfig(latent_dim=3, encoder_hidden=[16], decoder_hidden=[16]))
    vamp = VAE(ModelConfig(latent_dim=3, latent_dim2=2, encoder_hidden=[16], decoder_hidden=[16],
                           encoder_hidden2=[8], decoder_hidden2=[8], pseudo_inputs=5))
    top_down = VAE(ModelConfig(latent_dim=3, latent_dim2=2, encoder_hidden=[16], decoder_hidden=[16],
                               encoder_hidden2=[8], decoder_hidden2=[8], pseudo_inputs=5, inference="top-down"))
    with torch.no_grad():  # spread the pseudo-inputs' posteriors, so the mixture's components differ by many nats
        vamp.pseudo_logits.normal_(0, 3)
        top_down.pseudo_logits.normal_(0, 3)
    return {"one layer": one_layer, "two layers, VampPrior": vamp, "top-down, VampPrior": top_down}


@pytest.mark.parametrize("name", ["one layer", "two layers, VampPrior", "top-down, VampPrior"])
def test_fast_scoring_gives_the_plain_estimate(tiny_data, name):
    model = _tiny_models()[name].eval()
    # the same seed and chunks: the same draws, so only float rounding may differ
    fast = evaluate_images(model, tiny_data.test, k=200, seed=3, memory_mb=2)
    with plain_log_probs():
        plain = evaluate_images(model, tiny_data.test, k=200, seed=3, memory_mb=2)
    assert fast["nll"] == pytest.approx(plain["nll"], abs=1e-4)
    assert fast["elbo"] == pytest.approx(plain["elbo"], abs=1e-4)
    # the default chunks (sized to the cache) draw in another order: within the standard error
    default = evaluate_images(model, tiny_data.test, k=200, seed=3)
    assert abs(default["nll"] - plain["nll"]) < 2 * plain["nll_stderr"]


@pytest.mark.parametrize("name", ["two layers, VampPrior", "top-down, VampPrior"])
def test_fast_importance_weights_equal_torchs_distributions_one_by_one(name):
    # each log-weight of the fast path against the plain one, for the same z
    model = _tiny_models()[name].eval()
    x = torch.bernoulli(torch.full((3, 784), 0.3))
    with torch.no_grad():
        q, prior = model.posterior(x), model.prior()
        z = rsample(q, (50,), torch.Generator().manual_seed(0))
        fast = model.likelihood(z).log_prob(x) + prior.log_prob(z) - q.log_prob(z)
        with plain_log_probs():
            plain = model.likelihood(z).log_prob(x) + prior.log_prob(z) - q.log_prob(z)
    assert fast.shape == (50, 3)
    torch.testing.assert_close(fast, plain, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["two layers, VampPrior", "top-down, VampPrior"])
def test_vampprior_estimate_agrees_with_the_one_point_loop(name):
    model = _tiny_models()[name].eval()
    x = torch.bernoulli(torch.full((3, 784), 0.3))
    batched, _ = importance_log_likelihood(model, x, 2000, torch.Generator().manual_seed(0), samples_per_chunk=300)
    looped = reference_log_likelihood(model, x, 2000, torch.Generator().manual_seed(1))
    with plain_log_probs():
        plain, _ = importance_log_likelihood(model, x, 2000, torch.Generator().manual_seed(0), samples_per_chunk=300)
    torch.testing.assert_close(batched, plain, atol=1e-4, rtol=0)
    torch.testing.assert_close(batched, looped, atol=0.3, rtol=0)  # Monte-Carlo error of K = 2000


def test_a_vampprior_model_is_scored_through_its_mixture_prior(tiny_data):
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=3, encoder_hidden=[32], decoder_hidden=[32], pseudo_inputs=5)).eval()
    result = evaluate_images(model, tiny_data.test, k=50, seed=0, memory_mb=1)
    assert result["kl_per_dim"] is None  # a mixture prior does not split over dimensions
    assert result["kl"] > 0 and result["nll"] <= -result["elbo"] + 0.5
    # the estimator against a direct one: log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), all K at once
    x = tiny_data.test.batch(slice(0, 100), torch.Generator().manual_seed(0))
    with torch.no_grad():
        q = model.posterior(x)
        z = q.sample((2000,))
        log_w = model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)
        direct = -(torch.logsumexp(log_w, 0) - math.log(2000)).mean().item()
    assert result["nll"] == pytest.approx(direct, abs=0.5)


@pytest.mark.parametrize("activation, block", [("relu", "plain"), ("tanh", "plain"), ("elu", "gated")])
def test_compiled_chunks_give_the_eager_estimate(tiny_data, activation, block):
    # tanh: compiled, vaelab's Tanh and the Bernoulli head take their exp-written forms (nets, likelihoods)
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=3, latent_dim2=2, encoder_hidden=[16], decoder_hidden=[16],
                            encoder_hidden2=[8], decoder_hidden2=[8], pseudo_inputs=5, activation=activation,
                            block=block)).eval()
    eager = evaluate_images(model, tiny_data.test, k=100, seed=1, memory_mb=1, compile=False)
    compiled = evaluate_images(model, tiny_data.test, k=100, seed=1, memory_mb=1, compile=True)
    assert compiled["compiled"] and not eager["compiled"]
    assert compiled["nll"] == pytest.approx(eager["nll"], abs=1e-4)  # the same draws: float rounding only
    assert compiled["elbo"] == pytest.approx(eager["elbo"], abs=1e-4)


def test_auto_compiles_only_long_cpu_evaluations():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compiles_scoring("auto", cpu, 10_000 * 5000)  # the test set at K = 5000
    assert not compiles_scoring("auto", cpu, 100 * 5000)
    assert not compiles_scoring("auto", cuda, 10_000 * 5000)
    assert compiles_scoring(True, cuda, 1) and not compiles_scoring(False, cpu, 10**9)
