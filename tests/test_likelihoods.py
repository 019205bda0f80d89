"""The continuous Bernoulli and discretized logistic heads against closed forms, integrals and sampling."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.distributions import ContinuousBernoulli

from vaelab.config import DataConfig, ModelConfig, choices, resolve_config
from vaelab.data.views import make_views
from vaelab.evaluate import evaluate_images
from vaelab.likelihoods import (
    DISCRETE_LIKELIHOODS,
    LIKELIHOOD_HEADS,
    LOG_SCALE_MAX,
    LOG_SCALE_MIN,
    ContinuousBernoulliHead,
    DiscretizedLogistic,
    DiscretizedLogisticHead,
    _pixel_sample,
    bits_per_dim,
    likelihood_for_data,
    continuous_bernoulli_log_norm,
    continuous_bernoulli_mean,
)
from vaelab.model import VAE

# Near 0 (inside and at the edges of torch's Taylor band |logit| < 0.004 and ours < 0.1), moderate,
# and past torch's float32 clamp of probs at |logit| ~ 16.
CB_LOGITS = [0.0, 1e-6, -1e-3, 0.0039, -0.0041, 0.05, -0.0999, 0.1001, 0.5, -2.0, 7.0,
             -15.0, 20.0, -40.0, 100.0, -300.0]


# ---------------------------------------------------------------- continuous Bernoulli

def cb_log_density_closed_form(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """float64 log[C(lam) lam^x (1 - lam)^(1 - x)], C = 2 artanh(1 - 2 lam) / (1 - 2 lam), C(1/2) = 2."""
    lam = torch.sigmoid(logits.double())
    c = torch.where(lam == 0.5, torch.full_like(lam, 2.0), 2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
    return torch.log(c) + x * torch.log(lam) + (1 - x) * torch.log1p(-lam)


def cb_density_on_grid(logit: float, dtype: torch.dtype, n: int = 100_001) -> tuple[torch.Tensor, torch.Tensor]:
    grid = torch.linspace(0, 1, n, dtype=dtype)
    head = ContinuousBernoulliHead(ModelConfig(), n)
    log_p = head(torch.full((n,), logit, dtype=dtype)).base_dist.log_prob(grid)
    return grid.double(), log_p.double().exp()


def test_cb_log_prob_matches_closed_form():
    torch.manual_seed(0)
    logits = torch.cat([torch.randn(200) * 4, torch.tensor(CB_LOGITS[:-4])])
    x = torch.rand(logits.shape)
    x[:3] = torch.tensor([0.0, 1.0, 0.5])
    ours = ContinuousBernoulliHead(ModelConfig(), len(logits))(logits).base_dist.log_prob(x)
    closed = cb_log_density_closed_form(logits, x.double())
    torch.testing.assert_close(ours.double(), closed, atol=2e-5, rtol=1e-5)
    # closed form at lambda = 1/2: the uniform density, log 1 = 0
    assert ContinuousBernoulliHead(ModelConfig(), 1)(torch.zeros(1)).log_prob(torch.tensor([0.7])).abs() < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("logit", CB_LOGITS)
def test_cb_density_integrates_to_one_and_mean_matches(logit, dtype):
    grid, p = cb_density_on_grid(logit, dtype)
    assert torch.isfinite(p).all()
    # torch's own normalizer gives 0.40 at logit -40 and 0.01 at 300: this check catches that
    torch.testing.assert_close(torch.trapezoid(p, grid).item(), 1.0, atol=2e-4, rtol=0)
    mean = ContinuousBernoulliHead(ModelConfig(), 1)(torch.tensor([logit], dtype=dtype)).mean
    torch.testing.assert_close(mean.double().item(), torch.trapezoid(grid * p, grid).item(), atol=2e-5, rtol=0)


@pytest.mark.parametrize("logit", CB_LOGITS)
def test_cb_mean_matches_closed_form(logit):
    eta = torch.tensor(logit, dtype=torch.float64)
    closed = 0.5 if logit == 0 else (0.5 + 0.5 / torch.tanh(eta / 2) - 1 / eta).item()
    ours = ContinuousBernoulliHead(ModelConfig(), 1)(torch.tensor([logit])).mean.item()
    assert 0 <= ours <= 1
    assert ours == pytest.approx(closed, abs=2e-6)


def test_cb_series_near_zero_match_closed_forms_in_float64():
    # float64 resolves what float32 cannot: the Taylor branches' truncation error (~3e-10 at the switch)
    eta = torch.tensor([1e-3, -0.02, 0.05, -0.0999, 0.0999, 0.1001, -0.3], dtype=torch.float64)
    log_c = torch.log(eta.abs()) - torch.log(torch.tanh(eta.abs() / 2))
    mean = 0.5 + 0.5 / torch.tanh(eta / 2) - 1 / eta
    torch.testing.assert_close(continuous_bernoulli_log_norm(eta), log_c, atol=1e-9, rtol=0)
    torch.testing.assert_close(continuous_bernoulli_mean(eta), mean, atol=1e-9, rtol=0)


def test_cb_agrees_with_torch_where_torch_is_accurate():
    torch.manual_seed(1)
    logits = torch.empty(500).uniform_(0.01, 8) * torch.sign(torch.randn(500))
    x = torch.rand(500)
    ours = ContinuousBernoulliHead(ModelConfig(), 500)(logits)
    reference = ContinuousBernoulli(logits=logits)
    torch.testing.assert_close(ours.base_dist.log_prob(x), reference.log_prob(x), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ours.mean, reference.mean, atol=1e-4, rtol=0)


def test_cb_log_prob_and_gradients_finite_at_extremes():
    logits = torch.tensor([0.0, 1e-8, -1e-8, 0.004, 1e4, -1e4, 1e4, -1e4, 88.0, -88.0], requires_grad=True)
    x = torch.tensor([0.5, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.3, 0.7])
    dist = ContinuousBernoulliHead(ModelConfig(), len(x))(logits)
    per_pixel = dist.base_dist.log_prob(x)
    assert torch.isfinite(per_pixel).all()
    # at the favoured edge the density is C ~ |logit|: log 1e4, not torch's clamped log 16
    assert per_pixel[4].item() == pytest.approx(math.log(1e4), abs=1e-4)
    (per_pixel.sum() + dist.mean.sum()).backward()
    assert torch.isfinite(logits.grad).all()


def test_cb_head_shapes_and_broadcasting():
    torch.manual_seed(2)
    head = ContinuousBernoulliHead(ModelConfig(), 6)
    out, x = torch.randn(5, 3, 6), torch.rand(3, 6)
    dist = head(out)
    assert dist.batch_shape == (5, 3) and dist.event_shape == (6,)
    log_p = dist.log_prob(x)
    assert log_p.shape == (5, 3)
    torch.testing.assert_close(log_p, cb_log_density_closed_form(out, x.double()).sum(-1).float(), atol=1e-4, rtol=1e-5)
    assert dist.mean.shape == (5, 3, 6)
    assert ((dist.mean >= 0) & (dist.mean <= 1)).all()


# ---------------------------------------------------------------- discretized logistic

LEVELS = torch.arange(256, dtype=torch.float64) / 255
EXTREME_LOCS = [0.0, 1e-3, 0.3, 0.5, 0.999, 1.0]
EXTREME_LOG_SCALES = [-100.0, -9.0, LOG_SCALE_MIN, -5.0, -2.0, 0.0, 3.0, LOG_SCALE_MAX, 100.0]


def grid_params(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    loc, log_scale = torch.meshgrid(torch.tensor(EXTREME_LOCS, dtype=dtype),
                                    torch.tensor(EXTREME_LOG_SCALES, dtype=dtype), indexing="ij")
    return loc.flatten(), log_scale.flatten()


def dl_probs_float64(loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """The 256 probabilities as plain float64 CDF differences, (256, ...), same clamp of log s."""
    s = log_scale.double().clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()
    inner = (torch.arange(1, 256, dtype=torch.float64) - 0.5) / 255
    edges = torch.cat([inner.new_tensor([-math.inf]), inner, inner.new_tensor([math.inf])])
    cdf = torch.sigmoid((edges.reshape(-1, *[1] * loc.dim()) - loc.double()) / s)
    return cdf[1:] - cdf[:-1]


def test_dl_probabilities_sum_to_one():
    loc, log_scale = grid_params()
    dist = DiscretizedLogistic(loc, log_scale)
    log_p = dist.log_prob(dist.enumerate_support())
    assert log_p.shape == (256, len(loc))
    assert torch.isfinite(log_p).all()
    total = log_p.double().exp().sum(0)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)


def test_dl_log_prob_matches_float64_cdf_difference():
    torch.manual_seed(3)
    loc, log_scale = torch.rand(300), torch.empty(300).uniform_(-6, 1)
    dist = DiscretizedLogistic(loc, log_scale)
    ours = dist.log_prob(LEVELS.float().reshape(-1, 1)).double()
    reference = dl_probs_float64(loc, log_scale)
    usable = reference > 1e-12  # where a float64 difference of two CDFs still has digits left
    usable[[0, -1]] = False  # away from the edges here; they have their own test
    assert usable.sum() > 10_000
    torch.testing.assert_close(ours[usable], reference[usable].log(), atol=2e-4, rtol=2e-5)


def test_dl_edge_bins_take_the_tails():
    loc = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0])
    log_scale = torch.tensor([-3.0, -1.0, 0.0, -4.0, 1.0])
    dist = DiscretizedLogistic(loc, log_scale)
    s = log_scale.double().exp()
    first = torch.sigmoid((0.5 / 255 - loc.double()) / s)  # P(x <= half a bin)
    last = 1 - torch.sigmoid((1 - 0.5 / 255 - loc.double()) / s)  # P(x > 1 - half a bin)
    torch.testing.assert_close(dist.log_prob(torch.zeros(5)).double(), first.log(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dist.log_prob(torch.ones(5)).double(), last.log(), atol=1e-5, rtol=1e-5)
    # values off the grid are scored as their nearest level
    torch.testing.assert_close(dist.log_prob(torch.full((5,), 0.4 / 255)), dist.log_prob(torch.zeros(5)))


def test_dl_far_tails_are_finite_and_accurate():
    # tight logistics scoring levels ~300 scales away: the CDF difference is ~1e-130, 0 in float32
    loc, log_scale = torch.tensor([0.9, 0.1, 0.0]), torch.tensor([-6.0, -6.0, -6.5])
    x = torch.tensor([25, 230, 200]) / 255
    s = log_scale.exp()
    naive = torch.log(torch.sigmoid((x + 0.5 / 255 - loc) / s) - torch.sigmoid((x - 0.5 / 255 - loc) / s))
    assert not torch.isfinite(naive).any()
    ours = DiscretizedLogistic(loc, log_scale).log_prob(x)
    lower = (x.double() - 0.5 / 255 - loc.double()) / s.double()
    upper = (x.double() + 0.5 / 255 - loc.double()) / s.double()
    # float64 without cancellation: CDF differences in the left tail, survival differences in the right
    left = torch.sigmoid(upper) - torch.sigmoid(lower)
    right = torch.sigmoid(-lower) - torch.sigmoid(-upper)
    reference = torch.where(x < loc, left, right).log()
    assert torch.isfinite(reference).all() and (reference < -250).all()
    torch.testing.assert_close(ours.double(), reference, atol=0, rtol=1e-5)


def test_dl_extreme_parameters_finite_with_finite_gradients():
    n = len(EXTREME_LOCS) * len(EXTREME_LOG_SCALES)
    raw_loc = torch.logit(torch.tensor(EXTREME_LOCS).repeat_interleave(len(EXTREME_LOG_SCALES)), eps=1e-7)
    raw_loc = torch.where(torch.isfinite(raw_loc), raw_loc, raw_loc.sign() * 60)
    out = torch.cat([raw_loc, torch.tensor(EXTREME_LOG_SCALES).repeat(len(EXTREME_LOCS))]).requires_grad_()
    head = DiscretizedLogisticHead(ModelConfig(), n)
    for level in [0, 1, 127, 254, 255]:
        log_p = head(out).log_prob(torch.full((n,), level / 255))
        assert torch.isfinite(log_p).all()
        (grad,) = torch.autograd.grad(log_p, out)
        assert torch.isfinite(grad).all()


def test_dl_gradients_match_finite_differences():
    torch.manual_seed(4)
    out = torch.randn(2 * 5, dtype=torch.float64, requires_grad=True)
    x = torch.tensor([0, 3, 128, 250, 255], dtype=torch.float64) / 255
    head = DiscretizedLogisticHead(ModelConfig(), 5)
    assert torch.autograd.gradcheck(lambda o: head(o).log_prob(x), (out,))


def test_dl_samples_are_levels_with_the_right_frequencies():
    loc = torch.tensor([0.02, 0.5, 0.97, 0.3])
    log_scale = torch.tensor([-3.0, -4.5, -2.0, 1.0])
    dist = DiscretizedLogistic(loc, log_scale)
    n = 200_000
    x = dist.sample((n,), generator=torch.Generator().manual_seed(5))
    assert x.shape == (n, 4)
    assert ((x >= 0) & (x <= 1)).all()
    k = x * 255
    assert (k - k.round()).abs().max() < 1e-4
    counts = torch.nn.functional.one_hot(k.round().long(), 256).sum(0).T.double()  # (256, 4)
    expected = n * dist.log_prob(LEVELS.float().reshape(-1, 1)).double().exp()
    for j in range(4):
        big = expected[:, j] >= 20
        obs = torch.cat([counts[big, j], counts[~big, j].sum().reshape(1)])
        exp = torch.cat([expected[big, j], expected[~big, j].sum().reshape(1)])
        chi2, dof = (((obs - exp) ** 2) / exp.clamp(min=1)).sum().item(), int(big.sum())
        assert chi2 < dof + 6 * math.sqrt(2 * dof) + 10, (j, chi2, dof)


def test_dl_mean_is_the_exact_discrete_mean():
    loc, log_scale = grid_params()
    mean = DiscretizedLogistic(loc, log_scale).mean
    reference = (LEVELS.reshape(-1, 1) * dl_probs_float64(loc, log_scale)).sum(0)
    torch.testing.assert_close(mean.double(), reference, atol=2e-6, rtol=0)
    tight = DiscretizedLogistic(torch.tensor([128 / 255]), torch.tensor([-7.0]))
    torch.testing.assert_close(tight.mean, torch.tensor([128 / 255]), atol=1e-6, rtol=0)


def test_dl_head_layout_shapes_and_broadcasting():
    torch.manual_seed(6)
    n = 7
    head = DiscretizedLogisticHead(ModelConfig(), n)
    out, x = torch.randn(4, 3, 2 * n), torch.randint(0, 256, (3, n)) / 255
    dist = head(out)
    assert head.params_per_pixel == 2
    assert dist.batch_shape == (4, 3) and dist.event_shape == (n,)
    # parameter-major: the first n outputs are the locations, the next n the log-scales
    torch.testing.assert_close(dist.base_dist.loc, torch.sigmoid(out[..., :n]))
    torch.testing.assert_close(dist.base_dist.log_scale, out[..., n:].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))
    log_p = dist.log_prob(x)
    assert log_p.shape == (4, 3)
    reference = dl_probs_float64(torch.sigmoid(out[..., :n]), out[..., n:])  # (256, 4, 3, n)
    picked = reference.gather(0, (x * 255).round().long().expand(1, 4, 3, n)).squeeze(0)
    torch.testing.assert_close(log_p.double(), picked.log().sum(-1), atol=1e-4, rtol=1e-5)
    assert dist.mean.shape == (4, 3, n) and ((dist.mean >= 0) & (dist.mean <= 1)).all()
    assert dist.sample((2,)).shape == (2, 4, 3, n)


# ---------------------------------------------------------------- bits/dim and the registry

def test_bits_per_dim_closed_form():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    assert bits_per_dim(3072 * math.log(256), 3072) == pytest.approx(8.0)  # uniform over 256 levels
    assert bits_per_dim(100.0, 784) == pytest.approx(100 / 784 / 0.6931471805599453)
    with pytest.raises(ValueError):
        bits_per_dim(1.0, 0)


def test_registry_names_data_ranges_and_discreteness():
    assert set(LIKELIHOOD_HEADS) == {"bernoulli", "gaussian", "continuous_bernoulli", "discretized_logistic"}
    ranges = {name: head.data_range for name, head in LIKELIHOOD_HEADS.items()}
    assert ranges == {"bernoulli": "binary", "gaussian": "unit", "continuous_bernoulli": "unit",
                      "discretized_logistic": "8bit"}
    assert DISCRETE_LIKELIHOODS == {"bernoulli", "discretized_logistic"}


@pytest.mark.parametrize("name", sorted(LIKELIHOOD_HEADS))
def test_every_head_works_inside_the_vae(name):
    torch.manual_seed(7)
    config = ModelConfig(likelihood=name, latent_dim=2, encoder_hidden=[8], decoder_hidden=[8])
    model = VAE(config, image_shape=(1, 3, 4))
    x = torch.randint(0, 256, (3, 12)) / 255
    if LIKELIHOOD_HEADS[name].data_range == "binary":
        x = x.round()
    z = model.posterior(x).rsample((5,))
    log_p = model.likelihood(z).log_prob(x)
    assert log_p.shape == (5, 3) and torch.isfinite(log_p).all()
    if name in DISCRETE_LIKELIHOODS:
        assert (log_p <= 0).all()
    mean = model.decode_mean(z)
    assert mean.shape == (5, 3, 12) and ((mean >= 0) & (mean <= 1)).all()


def _odd_colour_raw(n_train=12, n_test=6):
    rng = np.random.default_rng(0)
    return SimpleNamespace(name="odd", source="generated",
                           x_train=rng.integers(0, 256, (n_train, 3, 45, 37), dtype=np.uint8),
                           y_train=np.zeros(n_train, np.uint8),
                           x_test=rng.integers(0, 256, (n_test, 3, 45, 37), dtype=np.uint8),
                           y_test=np.zeros(n_test, np.uint8))


def test_bits_per_dim_counts_every_channel_and_pixel_of_an_odd_colour_image():
    torch.manual_seed(0)
    data = make_views(_odd_colour_raw(), DataConfig(binarization="grey", val_size=4))
    n_dims = data.test.pixels.shape[1]  # what evaluate_run passes to bits_per_dim
    assert n_dims == data.n_pixels == 3 * 45 * 37
    model = VAE(ModelConfig(latent_dim=2, net="conv", conv_channels=[4, 8], likelihood="discretized_logistic"),
                data.image_shape)
    x = data.test.batch(slice(None))
    p = model.likelihood(model.posterior(x).mean)
    assert p.event_shape == (n_dims,)
    per_dim_bits = -p.base_dist.log_prob(x) / math.log(2)  # (images, C*H*W)
    torch.testing.assert_close(torch.tensor([bits_per_dim(-lp, n_dims) for lp in p.log_prob(x).tolist()]),
                               per_dim_bits.mean(-1))
    result = evaluate_images(model, data.test, k=2)
    assert 0 < bits_per_dim(result["nll"], n_dims) < 64


# ---------------------------------------------------------------- a default likelihood from the data

def test_black_and_white_images_get_the_binary_head():
    pixels = np.where(np.random.default_rng(0).random((20, 28, 28)) > 0.7, 255, 0).astype(np.uint8)
    choice = likelihood_for_data(pixels)
    assert choice == ("static", "bernoulli", "the images are black and white (every pixel is 0 or 255)")
    assert LIKELIHOOD_HEADS[choice.likelihood].data_range == "binary"


@pytest.mark.parametrize("shape", [(20, 28, 28), (5, 3, 45, 37)])
def test_grey_and_colour_images_get_the_8bit_head(shape):
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    binarization, likelihood, reason = likelihood_for_data(pixels)
    assert (binarization, likelihood) == ("grey", "discretized_logistic")
    assert LIKELIHOOD_HEADS[likelihood].data_range == "8bit" and likelihood in DISCRETE_LIKELIHOODS
    assert reason.startswith("the pixels take 256 levels") and "bits per dimension" in reason


def test_a_single_grey_level_is_enough_for_the_8bit_head():
    pixels = np.zeros((10, 7, 9), np.uint8)
    pixels[3, 2, 8] = 128
    assert likelihood_for_data(pixels).likelihood == "discretized_logistic"


def test_masks_stored_as_0_and_1_are_grey_but_the_reason_says_how_to_fix_them():
    choice = likelihood_for_data(np.array([[0, 1], [1, 0]], np.uint8))
    assert choice.likelihood == "discretized_logistic" and "scale them to 0 and 255" in choice.reason


@pytest.mark.parametrize("binary", [True, False])
def test_the_choices_make_a_valid_config(binary):
    pixels = np.array([0, 255] if binary else [0, 17, 255], np.uint8)
    binarization, likelihood, _ = likelihood_for_data(pixels)
    assert binarization in choices("data.binarization") and likelihood in choices("model.likelihood")
    resolve_config(overrides=[f"data.binarization={binarization}", f"model.likelihood={likelihood}"])


def test_only_a_bounded_sample_of_the_pixels_is_read():
    pixels = np.zeros(3_000_000, np.uint8)
    values, sampled = _pixel_sample(pixels, 1000)
    assert values.size == 1000 and sampled
    values, sampled = _pixel_sample(torch.from_numpy(pixels), 1000)
    assert values.size == 1000 and sampled and values.dtype == np.uint8
    values, sampled = _pixel_sample(pixels, 3_000_000)
    assert values.size == 3_000_000 and not sampled
    # one grey pixel among millions is missed by a small sample, which the reason says it was
    pixels[1_234_567] = 128
    assert likelihood_for_data(pixels, sample=1000).reason.endswith("(every one of 1,000 pixels drawn at random "
                                                                   "is 0 or 255)")
    assert likelihood_for_data(pixels, sample=len(pixels)).likelihood == "discretized_logistic"


@pytest.mark.parametrize("pixels, message", [
    (np.zeros(4), "uint8"), (torch.zeros(4), "uint8"), (np.zeros(0, np.uint8), "no pixels"),
])
def test_pixels_that_are_not_uint8_or_none_at_all_are_refused(pixels, message):
    with pytest.raises(ValueError, match=message):
        likelihood_for_data(pixels)
