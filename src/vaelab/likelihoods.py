"""Decoder heads: network outputs -> p(x|z), a `torch.distributions` object over the image.

Each head takes the decoder's output (..., params_per_pixel * n_pixels), parameters laid out
parameter-major, and returns a distribution whose log_prob sums over the pixels and whose
`.mean` is E[x|z] in [0, 1].

Each head also says what data it scores (`data_range`) and whether its log_prob is a log
probability mass (`discrete`) or a log density: only the former gives an NLL >= 0 and a
meaningful bits/dim. `DISCRETE_LIKELIHOODS` collects the discrete ones by name.

A head the explorer page can run in JavaScript declares it on its own class (a subclass that
changes the head must declare it again, or the page would draw the parent's mean):
`explorer_type`, the page's name for its decoder mean (None: the page cannot compute it, and
images are decoded ahead by PyTorch), `explorer_mean`, that mean in words, and
`explorer_params`, the constants the page needs for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Literal, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.distributions import Bernoulli, ContinuousBernoulli, Distribution, Independent, constraints
from torch.nn import functional as F

from .config import ModelConfig
from .distributions import compiled_scoring, diagonal_normal, plain

DataRange = Literal["binary", "unit", "8bit"]
"""What a head scores: "binary" x in {0, 1} (binarized data); "unit" any x in [0, 1] (grey levels
x/255 treated as continuous, log_prob is a density); "8bit" x in {k/255 : k = 0..255}
(log_prob is a log probability mass)."""


class BernoulliHead(nn.Module):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(f_i(z))), scored on logits (stable log-sigmoid)."""

    params_per_pixel = 1
    data_range: DataRange = "binary"
    discrete = True
    explorer_type: str | None = "bernoulli"
    explorer_mean = "sigmoid of the logits"

    def __init__(self, config: ModelConfig, n_pixels: int) -> None:
        super().__init__()

    def forward(self, out: torch.Tensor) -> Independent:
        """out: (..., n_pixels) logits."""
        # validate_args=False also lets grey targets through, the "BCE" some courses train with.
        return BernoulliImage(Bernoulli(logits=out, validate_args=False), 1, validate_args=False)


class BernoulliImage(Independent):
    """Independent Bernoulli pixels whose log_prob is computed as x . logits - sum softplus(logits).

    The same value as torch's (log sigmoid(l) = l - softplus(l)), for many z per image in one
    dot product and one softplus instead of an elementwise cross-entropy: the importance-sampled
    NLL evaluates this for millions of (image, z) pairs, and it is half of that work.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """value: (..., n_pixels), broadcast against the logits (..., n_pixels) -> (...)."""
        if plain():
            return super().log_prob(value)
        logits = self.base_dist.logits
        value = value.to(logits.dtype)
        if logits[..., 0].numel() > value[..., 0].numel():
            if compiled_scoring():
                return fused_bernoulli_log_prob(logits, value)
            # several z per image: one matrix-vector product per image
            dot = torch.einsum("...p,...p->...", logits, value)
            return dot - nn.functional.softplus(logits).sum(-1)
        # one z per image (einsum would run a batch of 1x1 products, a loop on a CPU): torch's
        # fused cross-entropy on logits is the same value, one kernel forward and one backward
        logits, value = torch.broadcast_tensors(logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


SOFTPLUS_GROUP = 16  # factors in (1, 2] multiplied before one log: at most 2^16, far from float32's 2^128


def fused_bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """sum_i x_i l_i - softplus(l_i) over the last dim, written for the compiler to fuse into few passes.

    softplus(l) = max(l, 0) + log(1 + exp(-|l|)), and the second terms of SOFTPLUS_GROUP pixels
    are summed as the log of their product: one exp per pixel and one log per group, where
    softplus takes an exp and a log1p per pixel, most of the importance-sampled NLL's time
    besides the matrix products. Each factor lies in (1, 2], so a product neither overflows nor
    loses more than a few float32 roundings. logits: (..., n), value: broadcast to it -> (...).
    """
    n = logits.shape[-1]
    whole = n - n % SOFTPLUS_GROUP
    factors = 1 + torch.exp(-logits.abs())
    grouped = factors[..., :whole].unflatten(-1, (whole // SOFTPLUS_GROUP, SOFTPLUS_GROUP)).prod(-1).log().sum(-1)
    rest = factors[..., whole:].log().sum(-1)
    return (logits * value - logits.clamp_min(0)).sum(-1) - grouped - rest


# model.gaussian_variance -> how many sigmas a head over n_pixels holds ("fixed": a buffer, the others learned)
GAUSSIAN_VARIANCES: dict[str, Callable[[int], int]] = {
    "fixed": lambda n_pixels: 1,
    "shared": lambda n_pixels: 1,
    "per_pixel": lambda n_pixels: n_pixels,
}


class GaussianHead(nn.Module):
    """p(x|z) = prod_i N(x_i; sigmoid(f_i(z)), sigma^2), sigma fixed, shared or per pixel.

    A learned sigma is min_sigma + softplus(raw): it cannot collapse to zero, where the
    density of a grey-level pixel would be unbounded.
    """

    params_per_pixel = 1
    data_range: DataRange = "unit"
    discrete = False
    explorer_type: str | None = "gaussian"  # sigma does not enter the mean
    explorer_mean = "sigmoid of the decoder output (the Gaussian's mean)"

    def __init__(self, config: ModelConfig, n_pixels: int) -> None:
        super().__init__()
        self.mode = config.gaussian_variance
        self.min_sigma = config.min_sigma
        start = config.gaussian_sigma - config.min_sigma
        raw = math.log(math.expm1(start)) if start > 0 else -20.0  # softplus^-1(start)
        size = GAUSSIAN_VARIANCES[self.mode](n_pixels)
        value = torch.full((size,), raw)
        if self.mode == "fixed":
            self.register_buffer("raw_sigma", value)
        else:
            self.raw_sigma = nn.Parameter(value)

    @property
    def sigma(self) -> torch.Tensor:
        """(1,) or (n_pixels,)."""
        return self.min_sigma + nn.functional.softplus(self.raw_sigma)

    def forward(self, out: torch.Tensor) -> Independent:
        """out: (..., n_pixels) pre-sigmoid means."""
        mean = torch.sigmoid(out)
        return diagonal_normal(mean, self.sigma.expand_as(mean))


# ---------------------------------------------------------------- continuous Bernoulli

# Below this |logit| the closed forms cancel catastrophically (0/0 at 0); their Taylor series
# to the terms kept are exact to ~1e-10 there.
_CB_TAYLOR_BELOW = 0.1


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda), lambda = sigmoid(logits), from the logits; (...) -> (...).

    C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) = eta / tanh(eta / 2) for eta = logits,
    even in eta, so with a = |eta|: log C = log a - log(1 - e^-a) + log(1 + e^-a).
    """
    a = logits.abs()
    small = a < _CB_TAYLOR_BELOW
    safe = torch.where(small, torch.ones_like(a), a)  # keeps NaN out of the unused branch's gradient
    exact = torch.log(safe) - torch.log(-torch.expm1(-safe)) + F.softplus(-safe)
    taylor = math.log(2.0) + a**2 / 12 - 7 * a**4 / 1440
    return torch.where(small, taylor, exact)


def continuous_bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] = 1/2 + 1 / (2 tanh(eta / 2)) - 1/eta for eta = logits; (...) -> (...) in [0, 1]."""
    small = logits.abs() < _CB_TAYLOR_BELOW
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = 0.5 + 0.5 / torch.tanh(safe / 2) - 1 / safe
    taylor = 0.5 + logits / 12 - logits**3 / 720
    return torch.where(small, taylor, exact)


class StableContinuousBernoulli(ContinuousBernoulli):
    """torch's ContinuousBernoulli with the log-normalizer and mean computed from the logits.

    torch computes both from probs clamped to [eps, 1 - eps]: past |logits| ~ 16 (float32) its
    log C stops growing, so the density no longer integrates to 1 (to ~0.4 at |logits| = 40)
    and its mean freezes at 0.937 / 0.063; near the Taylor band around probs = 0.5 its mean is
    off by ~3e-3. Both enter log_prob and the figures, so both are replaced. cdf, icdf, sample
    and variance are still torch's, accurate for |logits| up to ~10.
    """

    def _cont_bern_log_norm(self) -> torch.Tensor:
        return continuous_bernoulli_log_norm(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        return continuous_bernoulli_mean(self.logits)


class ContinuousBernoulliHead(nn.Module):
    """p(x|z) = prod_i CB(x_i; sigmoid(f_i(z))), a normalized density for grey levels in [0, 1].

    Loaiza-Ganem & Cunningham (2019): the Bernoulli log-likelihood of grey data plus the
    log-normalizer log C(lambda) it lacks. E[x|z] is not sigmoid(f(z)); `.mean` gives the true one.
    """

    params_per_pixel = 1
    data_range: DataRange = "unit"
    discrete = False
    explorer_type: str | None = "continuous_bernoulli"  # 1/2 + 1/(2 tanh(eta/2)) - 1/eta
    explorer_mean = "the continuous Bernoulli's mean (not sigmoid of the logits)"
    explorer_params: ClassVar[dict[str, float]] = {"taylor_below": _CB_TAYLOR_BELOW}

    def __init__(self, config: ModelConfig, n_pixels: int) -> None:
        super().__init__()

    def forward(self, out: torch.Tensor) -> Independent:
        """out: (..., n_pixels) logits."""
        return Independent(StableContinuousBernoulli(logits=out, validate_args=False), 1, validate_args=False)


# ---------------------------------------------------------------- discretized logistic

# PixelCNN++ clamps log s at -7 on data in [-1, 1]; on [0, 1] the same scale in bins (0.12 of a
# bin) is -7 - log 2. Below it the model can grow arbitrarily confident and training unstable.
LOG_SCALE_MIN = -7.0 - math.log(2.0)
# Above this the two edge bins hold all but ~1e-5 of the mass; the cap keeps 1/s from
# underflowing (log s > ~80 in float32), where the interior log-probabilities would be -inf.
LOG_SCALE_MAX = 10.0


class DiscretizedLogistic(Distribution):
    """A logistic(loc, s) rounded to the levels {k / (n_levels - 1)}, the edge levels taking the tails.

    P(k) = sigma((x + h - loc)/s) - sigma((x - h - loc)/s), x = k/(n_levels-1), h = half a bin,
    except P(0) = sigma((h - loc)/s) and P(last) = 1 - sigma((1 - h - loc)/s)
    (Kingma et al. 2016, Salimans et al. 2017, one component). loc, log_scale: (...) -> batch_shape
    (...), event_shape (); log s is clamped to [LOG_SCALE_MIN, LOG_SCALE_MAX].
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {
        "loc": constraints.real, "log_scale": constraints.real}
    support = constraints.unit_interval  # really the grid of levels; torch has no such constraint
    has_enumerate_support = True

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, n_levels: int = 256,
                 validate_args: bool | None = None) -> None:
        self.loc, log_scale = torch.broadcast_tensors(loc, log_scale)
        self.log_scale = log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        self.n_levels = n_levels
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """value: (...) broadcast against batch_shape, snapped to the nearest level -> (...)."""
        if self._validate_args:
            self._validate_sample(value)
        top = self.n_levels - 1
        k = torch.round(value * top).clamp(0, top)
        # In bin units, so that bin k's upper edge and bin k+1's lower edge are the same float:
        # in [0, 1] units their rounding differs by ~1e-4 / s, and sum P(k) misses 1 by ~1e-5.
        loc = self.loc * top
        inv_s = torch.exp(-self.log_scale) / top
        upper = ((k + 0.5) - loc) * inv_s
        lower = ((k - 0.5) - loc) * inv_s
        log_cdf_upper = F.logsigmoid(upper)  # the first bin: everything below its upper edge
        log_sf_lower = F.logsigmoid(-lower)  # the last bin: everything above its lower edge
        # sigma(u) - sigma(l) = sigma(u) sigma(-l) (1 - e^-(u - l)): exact, and never the difference
        # of two nearly equal numbers, so no PixelCNN++ bin-centre fallback is needed in the tails.
        log_gap = torch.log(-torch.expm1(-inv_s))  # u - l = bin width / s
        interior = log_cdf_upper + log_sf_lower + log_gap
        return torch.where(k == 0, log_cdf_upper, torch.where(k == top, log_sf_lower, interior))

    @property
    def mean(self) -> torch.Tensor:
        """The exact mean of the levels, (...) in [0, 1].

        E[x] = sum_{j >= 1} P(x >= x_j) * bin width, and P(x >= x_j) = sigma((loc - lower edge_j)/s).
        A loop over the edges keeps memory at one batch_shape tensor instead of (..., n_levels).
        """
        top = self.n_levels - 1
        loc = self.loc * top  # bin units, as in log_prob
        inv_s = torch.exp(-self.log_scale) / top
        total = torch.zeros_like(self.loc)
        for j in range(1, self.n_levels):
            total = total + torch.sigmoid((loc - (j - 0.5)) * inv_s)
        return total / top

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = (),
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(*sample_shape, *batch_shape) levels k/(n_levels-1): an inverse-CDF logistic draw, rounded."""
        shape = self._extended_shape(torch.Size(sample_shape))
        top = self.n_levels - 1
        with torch.no_grad():
            u = torch.rand(shape, generator=generator, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(min=torch.finfo(u.dtype).tiny)  # rand can return 0
            y = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return torch.round(y * top).clamp(0, top) / top

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        """The levels, (n_levels, *batch_shape) (or (n_levels, 1, ..., 1) if not expand)."""
        levels = torch.arange(self.n_levels, dtype=self.loc.dtype, device=self.loc.device) / (self.n_levels - 1)
        levels = levels.reshape((-1,) + (1,) * len(self.batch_shape))
        return levels.expand((-1,) + self.batch_shape) if expand else levels


class DiscretizedLogisticHead(nn.Module):
    """p(x|z) = prod_i DiscretizedLogistic(x_i; sigmoid(f_i(z)), g_i(z)), for 8-bit pixels k/255.

    out = [f | g], parameter-major: the location pre-sigmoid, then the log-scale. log_prob is a
    log probability, so its NLL converts to bits/dim (`bits_per_dim`).
    """

    params_per_pixel = 2
    data_range: DataRange = "8bit"
    discrete = True
    explorer_type: str | None = "discretized_logistic"
    explorer_mean = "the exact mean of the discretized logistic over its 256 levels"
    explorer_params: ClassVar[dict[str, float]] = {"n_levels": 256, "log_scale_min": LOG_SCALE_MIN,
                                                   "log_scale_max": LOG_SCALE_MAX}

    def __init__(self, config: ModelConfig, n_pixels: int) -> None:
        super().__init__()
        self.n_pixels = n_pixels

    def forward(self, out: torch.Tensor) -> Independent:
        """out: (..., 2 * n_pixels) -> batch_shape (...), event_shape (n_pixels,)."""
        raw_loc, log_scale = out.split(self.n_pixels, dim=-1)
        base = DiscretizedLogistic(torch.sigmoid(raw_loc), log_scale, validate_args=False)
        return Independent(base, 1, validate_args=False)


def bits_per_dim(nll_nats_per_image: float, n_dims: int) -> float:
    """NLL in nats per image -> bits per dimension: nll / (n_dims ln 2).

    Only meaningful for discrete likelihoods (`DISCRETE_LIKELIHOODS`), whose NLL is -log of a
    probability. A density's NLL on [0, 1] can be negative and is not comparable: it would need
    uniform dequantization and + n_dims * ln 256 first.
    """
    if n_dims <= 0:
        raise ValueError(f"n_dims must be positive, got {n_dims}")
    return nll_nats_per_image / (n_dims * math.log(2.0))


LIKELIHOOD_HEADS: dict[str, type[nn.Module]] = {
    "bernoulli": BernoulliHead,
    "gaussian": GaussianHead,
    "continuous_bernoulli": ContinuousBernoulliHead,
    "discretized_logistic": DiscretizedLogisticHead,
}

DISCRETE_LIKELIHOODS: frozenset[str] = frozenset(name for name, head in LIKELIHOOD_HEADS.items() if head.discrete)
"""Likelihood names whose log_prob is a log probability mass: NLL >= 0, bits/dim meaningful."""


# ---------------------------------------------------------------- a default from the data

# The data view (data.binarization) that hands a head its kind of data, the 0..255 pixels being
# black and white or grey: binary pixels are binarized once ("static"), which leaves 0 and 255
# exactly as they are, where "dynamic" would redraw the same 0s and 1s every epoch; 8-bit pixels
# are kept as their levels ("grey"), which a discrete head scores as they are stored.
VIEW_FOR_DATA_RANGE: dict[DataRange, str] = {"binary": "static", "8bit": "grey"}

PIXEL_SAMPLE = 4_000_000
"""At most this many pixel values are read by `likelihood_for_data`, so its cost does not grow with
the data. Grey pixels rarer than about one in a million may all be missed; the reason then says
that it looked at a sample."""


class DataDefaults(NamedTuple):
    """What `likelihood_for_data` chooses: data.binarization, model.likelihood, and why, in words."""

    binarization: str
    likelihood: str
    reason: str


def likelihood_for_data(pixels: np.ndarray | torch.Tensor, sample: int = PIXEL_SAMPLE) -> DataDefaults:
    """The data view and the discrete likelihood that fit uint8 pixels 0..255 (any shape), with the reason.

    Black-and-white images (every pixel 0 or 255) get the head whose `data_range` is "binary",
    any others the "8bit" one: both discrete, so their NLL is in nats and converts to bits/dim.
    At most `sample` values are read (a fixed-seed random draw when there are more).
    """
    values, sampled = _pixel_sample(pixels, sample)
    levels = np.flatnonzero(np.bincount(values, minlength=256))
    seen = f"every one of {values.size:,} pixels drawn at random" if sampled else "every pixel"
    if set(levels.tolist()) <= {0, 255}:
        return _defaults("binary", f"the images are black and white ({seen} is 0 or 255)")
    reason = "the pixels take 256 levels: a discrete likelihood on 0..255 gives an NLL in nats and bits per dimension"
    if levels[-1] == 1:  # 0/1 masks stored as uint8 read as near-black grey, not as black and white
        reason += f"; {seen} is 0 or 1, nearly black on 0..255: if these are masks, scale them to 0 and 255"
    return _defaults("8bit", reason)


def _defaults(data_range: DataRange, reason: str) -> DataDefaults:
    """The first discrete head, in LIKELIHOOD_HEADS order, that scores `data_range` data."""
    name = next(name for name, head in LIKELIHOOD_HEADS.items() if head.data_range == data_range and head.discrete)
    return DataDefaults(VIEW_FOR_DATA_RANGE[data_range], name, reason)


def _pixel_sample(pixels: np.ndarray | torch.Tensor, limit: int) -> tuple[np.ndarray, bool]:
    """(at most `limit` of the values, flat uint8; whether they are a sample rather than all of them).

    The sample is drawn at random, not every k-th value: a stride can line up with the rows and
    read one column, often a blank border. Sorted positions read a memory-mapped file in order.
    """
    if limit < 1:
        raise ValueError(f"sample must be >= 1, got {limit}")
    flat = pixels.detach().reshape(-1) if isinstance(pixels, torch.Tensor) else np.asarray(pixels).reshape(-1)
    if flat.dtype not in (np.uint8, torch.uint8):
        raise ValueError(f"pixels must be uint8 0..255, got {flat.dtype}")
    if len(flat) == 0:
        raise ValueError("no pixels to choose a likelihood from")
    sampled = len(flat) > limit
    if sampled:
        index = np.sort(np.random.default_rng(0).integers(len(flat), size=limit))
        flat = flat[torch.from_numpy(index).to(flat.device)] if isinstance(flat, torch.Tensor) else flat[index]
    values = flat.cpu().numpy() if isinstance(flat, torch.Tensor) else flat
    return values, sampled
