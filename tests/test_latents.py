"""Latent families, the samplers behind them and the two-step joint, against closed forms and Monte-Carlo.

Monte-Carlo checks use a fixed generator and a tolerance of a few standard errors of the estimate,
so a wrong constant (a factor of 2 in a scale, a missing term in a KL) fails by many of them.
"""

import itertools
import math

import pytest
import torch
from torch.distributions import (
    Independent,
    Laplace,
    MultivariateNormal,
    Normal,
    OneHotCategorical,
    RelaxedOneHotCategorical,
    kl_divergence,
)

from vaelab.config import ModelConfig
from vaelab.distributions import TwoStep, diagonal_laplace, diagonal_normal, rsample
from vaelab.model import VAE
from vaelab.latents import (
    LATENT_FAMILIES,
    CategoricalLatent,
    GaussianLatent,
    ACTIVE_THRESHOLD,
    LaplaceLatent,
    activity_from_sums,
    kl_terms,
    standard_prior,
    temperature_at,
    unit_activity,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _assert_within_se(estimate, standard_error, target, n_se=5.0):
    """|estimate - target| < n_se standard errors (elementwise), with a floor for float error."""
    gap = (estimate - target).abs()
    allowed = n_se * standard_error + 1e-9
    assert torch.all(gap < allowed), f"gap {gap} > {n_se} SE {allowed}: estimate {estimate}, target {target}"


def _monte_carlo_kl(q, p, n=200_000, seed=0):
    """E_q[log q(z) - log p(z)] from n draws, and its standard error, each (batch,)."""
    z = rsample(q, (n,), _gen(seed))
    ratio = q.log_prob(z) - p.log_prob(z)
    return ratio.mean(0), ratio.std(0) / math.sqrt(n), z


# ---------------------------------------------------------------- continuous KLs

def _encoder_output(dim, batch=4, seed=0):
    """Encoder outputs (batch, 2 * dim): locations in [-2, 2], log scales in [-1.5, 1]."""
    g = _gen(seed)
    loc = torch.rand(batch, dim, generator=g, dtype=F64) * 4 - 2
    log_scale = torch.rand(batch, dim, generator=g, dtype=F64) * 2.5 - 1.5
    return torch.cat([loc, log_scale], -1)


@pytest.mark.parametrize("latent", ["normal", "laplace"])
@pytest.mark.parametrize("prior", ["normal", "laplace"])
def test_latent_kl_is_analytic_and_matches_monte_carlo(latent, prior):
    config = ModelConfig(latent=latent, prior=prior, latent_dim=3)
    family = LATENT_FAMILIES[latent](config)
    q = family.posterior(_encoder_output(3))
    p = family.prior(torch.device("cpu"), F64)
    base_q = q.base_dist
    assert type(base_q) is {"normal": Normal, "laplace": Laplace}[latent]
    assert type(p.base_dist) is {"normal": Normal, "laplace": Laplace}[prior]
    torch.testing.assert_close(p.base_dist.loc, torch.zeros(3, dtype=F64))
    torch.testing.assert_close(p.base_dist.scale, torch.ones(3, dtype=F64))
    kl = family.kl(q, p)  # no z: must be the closed form, or this raises
    assert kl.shape == (4,)
    mc, se, _ = _monte_carlo_kl(q, p)
    _assert_within_se(mc, se, kl)


@pytest.mark.parametrize("pair", [(Normal, Normal), (Laplace, Laplace), (Laplace, Normal), (Normal, Laplace)])
def test_kl_terms_closed_forms_for_non_standard_priors(pair):
    """kl_terms(q, p) for p with its own location and scale, against Monte-Carlo."""
    (Q, P), g = pair, _gen(1)
    make = {Normal: diagonal_normal, Laplace: diagonal_laplace}
    q = make[Q](torch.randn(3, 2, generator=g, dtype=F64), torch.rand(3, 2, generator=g, dtype=F64) + 0.3)
    p = make[P](torch.randn(2, generator=g, dtype=F64), torch.rand(2, generator=g, dtype=F64) + 0.5)
    kl = kl_terms(q, p)
    mc, se, _ = _monte_carlo_kl(q, p, seed=2)
    _assert_within_se(mc, se, kl)


def test_normal_laplace_kl_against_hand_closed_form():
    """KL(N(mu, s^2) || Laplace(m, b)) = -H(N) + log 2b + E|z - m| / b, E|z - m| the folded-normal mean."""
    mu, s = torch.tensor([0.7, -1.2, 0.0], dtype=F64), torch.tensor([0.4, 1.5, 2.0], dtype=F64)
    m, b = torch.tensor([-0.3, 0.5, 0.0], dtype=F64), torch.tensor([1.3, 0.6, 1.0], dtype=F64)
    d = mu - m
    folded = s * math.sqrt(2 / math.pi) * torch.exp(-d**2 / (2 * s**2)) + d * torch.erf(d / (s * math.sqrt(2)))
    closed = (-0.5 * torch.log(2 * math.pi * math.e * s**2) + torch.log(2 * b) + folded / b).sum()
    torch.testing.assert_close(kl_terms(diagonal_normal(mu, s), diagonal_laplace(m, b)), closed)


def test_kl_terms_falls_back_to_monte_carlo_over_z():
    """Without a closed form (a two-step joint) the KL is the mean over z of log q - log p."""
    q = _two_step(first_is_a=True)
    p = TwoStep(diagonal_normal(torch.zeros(A_SIZE, dtype=F64), torch.ones(A_SIZE, dtype=F64)),
                lambda z: diagonal_normal(0.5 * z @ MAP.T, torch.ones(B_SIZE, dtype=F64)), A_SIZE, B_SIZE,
                first_is_a=True)
    with pytest.raises(NotImplementedError):
        kl_terms(q, p)
    z = rsample(q, (7,), _gen(0))
    torch.testing.assert_close(kl_terms(q, p, z), (q.log_prob(z) - p.log_prob(z)).mean(0))


def test_standard_prior_rejects_unknown_name():
    with pytest.raises(KeyError):
        standard_prior("cauchy", 2, torch.device("cpu"), torch.float32)


# ---------------------------------------------------------------- Laplace inverse-CDF sampling

def test_laplace_inverse_cdf_moments_median_and_mad():
    loc = torch.tensor([0.5, -3.0, 10.0], dtype=F64)
    scale = torch.tensor([0.2, 1.0, 4.0], dtype=F64)
    n = 400_000
    z = rsample(Laplace(loc, scale), (n,), _gen(3))
    assert z.shape == (n, 3) and torch.all(torch.isfinite(z))
    # mean loc; variance 2 b^2 (fourth central moment 24 b^4); median loc; E|z - loc| = b
    _assert_within_se(z.mean(0), (2 * scale**2 / n).sqrt(), loc)
    _assert_within_se(z.var(0), (20 * scale**4 / n).sqrt(), 2 * scale**2)
    _assert_within_se(z.median(0).values, scale / math.sqrt(n), loc)
    _assert_within_se((z - loc).abs().mean(0), scale / math.sqrt(n), scale)
    # the sign is symmetric: half the draws on each side of loc
    _assert_within_se((z > loc).to(F64).mean(0), torch.full((3,), 0.5 / math.sqrt(n), dtype=F64),
                      torch.full((3,), 0.5, dtype=F64))


def test_laplace_inverse_cdf_gradients():
    n = 400_000
    loc = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    scale = torch.tensor([0.5, 3.0], dtype=F64, requires_grad=True)

    def draw():
        return rsample(diagonal_laplace(loc, scale), (n,), _gen(4))

    # d/db E|z - loc| = E|z - loc| / b = 1; d/dloc E|z - c| at c = loc = E sign(z - loc) = 0
    (draw() - loc.detach()).abs().mean(0).sum().backward()
    _assert_within_se(scale.grad, torch.full((2,), 1 / math.sqrt(n), dtype=F64), torch.ones(2, dtype=F64))
    _assert_within_se(loc.grad, torch.full((2,), 1 / math.sqrt(n), dtype=F64), torch.zeros(2, dtype=F64))
    loc.grad = scale.grad = None
    # d/dloc E z = 1 exactly; d/db E (z - loc)^2 = d/db 2 b^2 = 4 b (per-draw 2 (z - loc)^2 / b: sd 2 sqrt(5) b)
    draw().mean(0).sum().backward()
    torch.testing.assert_close(loc.grad, torch.ones(2, dtype=F64))
    scale.grad = None
    (draw() - loc.detach()).pow(2).mean(0).sum().backward()
    _assert_within_se(scale.grad, 2 * math.sqrt(5) * scale.detach() / math.sqrt(n), 4 * scale.detach())


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("u", [0.0, 1.0 - 2.0**-24])
def test_laplace_samples_finite_at_the_ends_of_the_uniform(monkeypatch, dtype, u):
    """torch.rand can return exactly 0 (once in 2^24 float32 draws): the sample must stay finite."""
    real_rand = torch.rand

    def fixed_rand(shape, generator=None, device=None, dtype=None):
        return torch.full(shape, u, device=device, dtype=dtype)

    monkeypatch.setattr(torch, "rand", fixed_rand)
    z = rsample(diagonal_laplace(torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)), (2,))
    monkeypatch.setattr(torch, "rand", real_rand)
    assert torch.all(torch.isfinite(z)), z
    # far in the tails, on the side the uniform says
    assert torch.all(z.sign() == (-1 if u < 0.5 else 1)) and torch.all(z.abs() > 10)


def test_laplace_latent_posterior_reads_loc_and_log_scale():
    family = LaplaceLatent(ModelConfig(latent="laplace", latent_dim=2))
    params = torch.tensor([[0.3, -0.4, math.log(2.0), math.log(0.5)]])
    q = family.posterior(params)
    assert isinstance(q.base_dist, Laplace) and q.event_shape == (2,)
    torch.testing.assert_close(q.base_dist.loc, torch.tensor([[0.3, -0.4]]))
    torch.testing.assert_close(q.base_dist.scale, torch.tensor([[2.0, 0.5]]))


def test_gaussian_latent_posterior_reads_mu_and_log_variance():
    family = GaussianLatent(ModelConfig(latent_dim=2))
    q = family.posterior(torch.tensor([[0.3, -0.4, math.log(4.0), math.log(0.25)]]))
    torch.testing.assert_close(q.base_dist.scale, torch.tensor([[2.0, 0.5]]))  # sigma = exp(log_var / 2)


# ---------------------------------------------------------------- Gumbel-softmax and Gumbel-max

LOGITS = torch.tensor([[2.0, 0.0, -1.0, 0.5], [-3.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=F64)


def _chi_square_p_value(one_hot, probs):
    """One-hot draws (n, rows, C) against class probabilities (rows, C): the chi-square test's p-value."""
    n = one_hot.shape[0]
    expected = n * probs
    statistic = ((one_hot.sum(0) - expected) ** 2 / expected).sum()
    df = probs.shape[0] * (probs.shape[1] - 1)
    return torch.special.gammaincc(torch.tensor(df / 2, dtype=F64), statistic / 2).item()


@pytest.mark.parametrize("temperature", [0.1, 1.0, 5.0])
def test_gumbel_softmax_samples_lie_on_the_simplex(temperature):
    z = rsample(RelaxedOneHotCategorical(torch.tensor(temperature, dtype=F64), logits=LOGITS), (1000,), _gen(5))
    assert z.shape == (1000, 3, 4)
    assert torch.all(z >= 0) and torch.all(z <= 1)
    torch.testing.assert_close(z.sum(-1), torch.ones(1000, 3, dtype=F64))
    if temperature >= 1:  # relaxed, not one-hot (at 0.1, float64 rounds many draws to exactly one-hot)
        assert torch.all(z.max(-1).values < 1)


def test_gumbel_softmax_concentrates_on_one_hot_as_temperature_falls():
    biggest = {}
    for temperature in (5.0, 1.0, 0.1, 0.01):
        z = rsample(RelaxedOneHotCategorical(torch.tensor(temperature, dtype=F64), logits=LOGITS), (20_000,), _gen(6))
        biggest[temperature] = z.max(-1).values.mean().item()
    assert biggest[5.0] < biggest[1.0] < biggest[0.1] < biggest[0.01]
    assert biggest[0.01] > 0.99 and biggest[5.0] < 0.6
    # the relaxed sample's argmax is the Gumbel-max draw: classes come with frequencies softmax(logits)
    hard = torch.nn.functional.one_hot(z.argmax(-1), 4).to(F64)
    assert _chi_square_p_value(hard, LOGITS.softmax(-1)) > 1e-4


def test_gumbel_softmax_is_differentiable_in_the_logits():
    logits = LOGITS.clone().requires_grad_(True)
    z = rsample(RelaxedOneHotCategorical(torch.tensor(0.5, dtype=F64), logits=logits), (100,), _gen(7))
    z[..., 0].sum().backward()
    assert torch.all(torch.isfinite(logits.grad)) and logits.grad.abs().sum() > 0


def test_relaxed_log_prob_stays_finite_at_low_temperature_in_float32():
    """Peaked logits at tau = 0.5 underflow softmax entries to 0; the density must still be scored."""
    logits = (torch.randn(64, 10, generator=_gen(16)) * 20).requires_grad_(True)
    q = RelaxedOneHotCategorical(torch.tensor(0.5), logits=logits)
    z = rsample(q, (200,), _gen(17))
    assert torch.all(z > 0)
    torch.testing.assert_close(z.sum(-1), torch.ones(200, 64))
    log_q = q.log_prob(z)
    prior = RelaxedOneHotCategorical(torch.tensor(0.5), logits=torch.zeros(10))
    ratio = log_q - prior.log_prob(z)
    assert torch.all(torch.isfinite(ratio))
    ratio.sum().backward()
    assert torch.all(torch.isfinite(logits.grad))


def test_gumbel_max_class_frequencies_are_softmax_of_the_logits():
    n = 200_000
    z = rsample(OneHotCategorical(logits=LOGITS), (n,), _gen(8))
    assert z.shape == (n, 3, 4)
    assert torch.all((z == 0) | (z == 1)) and torch.all(z.sum(-1) == 1)
    assert _chi_square_p_value(z, LOGITS.softmax(-1)) > 1e-4
    # and the test has the power to see a wrong distribution: the same draws against uniform classes
    assert _chi_square_p_value(z, torch.full_like(LOGITS, 0.25)) < 1e-10


def _categorical(train, variables=3, categories=4, temperature=0.7):
    family = CategoricalLatent(ModelConfig(latent="categorical", latent_dim=variables, categories=categories,
                                           temperature=temperature, temperature_min=0.1))
    return family.train(train)


def test_categorical_kl_is_its_definition_and_torch_in_eval_mode():
    params = torch.randn(5, 12, generator=_gen(9), dtype=F64) * 2
    q_probs = params.unflatten(-1, (3, 4)).softmax(-1)
    definition = (q_probs * torch.log(q_probs / 0.25)).sum((-1, -2))
    kls = {}
    for train in (True, False):
        family = _categorical(train)
        q, p = family.posterior(params), family.prior(torch.device("cpu"), F64)
        kls[train] = family.kl(q, p)
        torch.testing.assert_close(kls[train], definition)
    family = _categorical(False)
    q, p = family.posterior(params), family.prior(torch.device("cpu"), F64)
    torch.testing.assert_close(kls[False], kl_divergence(q, p))
    reference = kl_divergence(Independent(OneHotCategorical(logits=params.unflatten(-1, (3, 4))), 1),
                              Independent(OneHotCategorical(probs=torch.full((3, 4), 0.25, dtype=F64)), 1))
    torch.testing.assert_close(kls[False], reference)
    assert torch.all(kls[False] >= 0)
    # zero exactly at the uniform posterior
    torch.testing.assert_close(family.kl(family.posterior(torch.zeros(2, 12, dtype=F64)), p),
                               torch.zeros(2, dtype=F64))


def test_categorical_train_mode_is_relaxed_and_eval_mode_hard():
    params = torch.randn(5, 12, generator=_gen(10), requires_grad=True)
    family = _categorical(True, temperature=0.7)
    q, p = family.posterior(params), family.prior(torch.device("cpu"), torch.float32)
    assert isinstance(q.base_dist, RelaxedOneHotCategorical) and isinstance(p.base_dist, RelaxedOneHotCategorical)
    assert q.base_dist.temperature.item() == pytest.approx(0.7)
    assert q.batch_shape == (5,) and q.event_shape == (3, 4) and p.event_shape == (3, 4)
    z = rsample(q, (6,), _gen(11))
    assert z.shape == (6, 5, 3, 4) and torch.all(z.max(-1).values < 1)
    torch.testing.assert_close(z.sum(-1), torch.ones(6, 5, 3))
    z[..., 0].sum().backward()
    assert params.grad.abs().sum() > 0  # reparameterized
    assert torch.all(torch.isfinite(q.log_prob(z) - p.log_prob(z)))
    assert family.flatten(z).shape == (6, 5, 12)

    family.eval()
    q, p = family.posterior(params), family.prior(torch.device("cpu"), torch.float32)
    assert isinstance(q.base_dist, OneHotCategorical) and isinstance(p.base_dist, OneHotCategorical)
    z = rsample(q, (6,), _gen(11))
    assert torch.all((z == 0) | (z == 1)) and torch.all(z.sum(-1) == 1)
    torch.testing.assert_close(p.log_prob(z), torch.full((6, 5), 3 * math.log(0.25)))


def test_temperature_buffer_is_what_the_posterior_uses():
    family = _categorical(True, temperature=1.0)
    family.temperature.fill_(0.25)
    assert family.posterior(torch.zeros(1, 12)).base_dist.temperature.item() == 0.25


def test_temperature_at_decays_exponentially_to_the_floor():
    config = ModelConfig(latent="categorical", temperature=2.0, temperature_min=0.5, temperature_decay=0.1)
    taus = [temperature_at(config, epoch) for epoch in range(40)]
    assert taus[0] == 2.0
    assert taus[3] == pytest.approx(2.0 * math.exp(-0.3))
    assert all(a >= b for a, b in itertools.pairwise(taus))
    floor_epoch = math.ceil(math.log(4.0) / 0.1)  # 2 e^(-0.1 t) = 0.5
    assert taus[floor_epoch - 1] > 0.5 and all(t == 0.5 for t in taus[floor_epoch:])
    constant = ModelConfig(latent="categorical", temperature=1.5, temperature_min=0.5, temperature_decay=0.0)
    assert {temperature_at(constant, e) for e in range(10)} == {1.5}


# ---------------------------------------------------------------- TwoStep

A_SIZE, B_SIZE = 2, 3
MAP = torch.tensor([[1.0, -0.5], [0.3, 2.0], [0.0, 0.7]], dtype=F64)  # (B_SIZE, A_SIZE)
OFFSET = torch.tensor([0.2, -1.0, 0.5], dtype=F64)
FIRST_LOC = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=F64)  # batch of 2
FIRST_SCALE = torch.tensor([0.8, 1.5], dtype=F64)
THEN_SCALE = torch.tensor([0.3, 0.6, 1.1], dtype=F64)


def _linear_then(first):
    return diagonal_normal(first @ MAP.T + OFFSET, THEN_SCALE.expand(*first.shape[:-1], -1))


def _two_step(first_is_a):
    """first ~ N(FIRST_LOC, diag FIRST_SCALE^2); second | first ~ N(MAP first + OFFSET, diag THEN_SCALE^2)."""
    first = diagonal_normal(FIRST_LOC, FIRST_SCALE.expand_as(FIRST_LOC))
    sizes = (A_SIZE, B_SIZE) if first_is_a else (B_SIZE, A_SIZE)
    return TwoStep(first, _linear_then, *sizes, first_is_a=first_is_a)


def _joint_normal(first_is_a):
    """The same chain as one multivariate normal over z in the TwoStep's slot order."""
    s1 = torch.diag(FIRST_SCALE**2)
    cov = torch.cat([torch.cat([s1, s1 @ MAP.T], 1),
                     torch.cat([MAP @ s1, MAP @ s1 @ MAP.T + torch.diag(THEN_SCALE**2)], 1)], 0)
    mean = torch.cat([FIRST_LOC, FIRST_LOC @ MAP.T + OFFSET], -1)
    if not first_is_a:  # z = [second, first]
        order = torch.cat([torch.arange(A_SIZE, A_SIZE + B_SIZE), torch.arange(A_SIZE)])
        mean, cov = mean[..., order], cov[order][:, order]
    return MultivariateNormal(mean, cov)


@pytest.mark.parametrize("first_is_a", [True, False])
def test_two_step_log_prob_is_the_sum_of_its_steps(first_is_a):
    joint = _two_step(first_is_a)
    z = torch.randn(4, 2, A_SIZE + B_SIZE, generator=_gen(12), dtype=F64)
    first, second = (z[..., :A_SIZE], z[..., A_SIZE:]) if first_is_a else (z[..., B_SIZE:], z[..., :B_SIZE])
    expected = joint.first.log_prob(first) + _linear_then(first).log_prob(second)
    torch.testing.assert_close(joint.log_prob(z), expected)
    assert joint.batch_shape == (2,) and joint.event_shape == (A_SIZE + B_SIZE,)


@pytest.mark.parametrize("first_is_a", [True, False])
def test_two_step_linear_gaussian_chain_is_a_multivariate_normal(first_is_a):
    joint, reference = _two_step(first_is_a), _joint_normal(first_is_a)
    z = torch.randn(6, 2, A_SIZE + B_SIZE, generator=_gen(13), dtype=F64) * 2
    torch.testing.assert_close(joint.log_prob(z), reference.log_prob(z))
    # and its draws have the joint's mean and covariance
    n = 200_000
    draws = rsample(joint, (n,), _gen(14))
    assert draws.shape == (n, 2, A_SIZE + B_SIZE)
    sd = reference.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    _assert_within_se(draws.mean(0), sd / math.sqrt(n), reference.mean)
    centred = draws - reference.mean
    empirical_cov = torch.einsum("nbi,nbj->bij", centred, centred) / n
    torch.testing.assert_close(empirical_cov, reference.covariance_matrix.expand(2, -1, -1), atol=0.06, rtol=0.02)
    torch.testing.assert_close(joint.mean[..., :A_SIZE] if first_is_a else joint.mean[..., B_SIZE:], FIRST_LOC)


def test_two_step_rsample_shape_gradients_and_generator():
    loc = FIRST_LOC.clone().requires_grad_(True)
    joint = TwoStep(diagonal_normal(loc, FIRST_SCALE.expand_as(loc)), _linear_then, A_SIZE, B_SIZE, True)
    a = rsample(joint, (5, 3), _gen(15))
    assert a.shape == (5, 3, 2, A_SIZE + B_SIZE)
    assert torch.equal(a, rsample(joint, (5, 3), _gen(15)))
    assert joint.rsample((4,)).shape == (4, 2, A_SIZE + B_SIZE)
    a[..., A_SIZE:].sum().backward()  # the second part depends on loc through the first
    torch.testing.assert_close(loc.grad, torch.full_like(loc, 15.0) * MAP.sum(0))


def test_gaussian_prior_is_built_once_per_device_and_dtype():
    model = VAE(ModelConfig(latent_dim=3, encoder_hidden=[4], decoder_hidden=[4]), image_shape=(1, 2, 2))
    assert model.prior() is model.prior()
    model.double()
    prior = model.prior()
    assert prior.mean.dtype == torch.float64 and prior.mean.shape == (3,)
    torch.testing.assert_close(prior.stddev, torch.ones(3, dtype=torch.float64))


def test_unit_activity_is_the_variance_of_the_means_over_the_data():
    generator = torch.Generator().manual_seed(0)
    scales, offsets = torch.tensor([2.0, 0.5, 0.05, 0.0, 1.0]), torch.tensor([0.0, 3.0, -1.0, 5.0, 40.0])
    means = torch.randn(700, 5, generator=generator) * scales + offsets
    activity = unit_activity(means)
    assert activity.shape == (5,) and activity.dtype == torch.float64
    torch.testing.assert_close(activity, torch.var(means, dim=0, unbiased=False).double(), rtol=1e-5, atol=1e-6)
    assert (activity > ACTIVE_THRESHOLD).tolist() == [True, True, False, False, True]
    # An evaluation keeps sums over chunks of images (and ranks), not the means: the same activity.
    chunks = means.double().split(128)
    total, total_of_squares = sum(c.sum(0) for c in chunks), sum((c**2).sum(0) for c in chunks)
    torch.testing.assert_close(activity_from_sums(total, total_of_squares, len(means)), activity)
