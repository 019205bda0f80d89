"""Distributions the model is built from, all `torch.distributions` objects.

What torch lacks is here: sampling with an explicit `torch.Generator` (torch's `rsample`
draws from the global RNG, and vaelab keeps no global random state so that a run can be
resumed exactly), and noise that can be drawn ahead of a compiled function (`NoiseRecorder`,
`NoisePlayback`): `torch.compile` cannot trace a draw from a `torch.Generator`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributions import (Bernoulli, Categorical, Distribution, Independent, Laplace, MixtureSameFamily,
                                 Normal, OneHotCategorical, RelaxedOneHotCategorical, TransformedDistribution,
                                 constraints)


_PLAIN: list[bool] = [False]  # inside `plain_log_probs`


@contextmanager
def plain_log_probs() -> Iterator[None]:
    """Within the block, vaelab's distributions score with torch's own formulas, for checking.

    `NormalMixture.log_prob` is `MixtureSameFamily.log_prob`, `log_sum_exp` is `torch.logsumexp`,
    `TwoStep.log_prob` runs its conditional again, and `likelihoods.BernoulliImage.log_prob` is
    `Independent(Bernoulli).log_prob`: what an evaluation computes without vaelab's fast paths.
    """
    saved, _PLAIN[0] = _PLAIN[0], True
    try:
        yield
    finally:
        _PLAIN[0] = saved


def plain() -> bool:
    """Inside `plain_log_probs`?"""
    return _PLAIN[0]


def compiled_scoring() -> bool:
    """Inside a graph torch.compile traces without gradients (compiled scoring), outside `plain_log_probs`?

    There `nets.Linear`, `nets.Tanh` and `likelihoods.BernoulliImage` take forms written for the
    compiler to fuse into fewer passes over memory: the same functions to float32 rounding.
    """
    # gradients first: training calls this in every layer's forward, and they end the test there
    return not torch.is_grad_enabled() and torch.compiler.is_compiling() and not plain()


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    """N(loc, diag scale^2) over the last dimension; log_prob sums over it.

    Argument checks are off: they would synchronise with the device on every step.
    """
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


def normal_from_log_var(params: torch.Tensor, bounds: Sequence[float] = ()) -> Independent:
    """N(mu, diag sigma^2) from params (..., 2 d) = (mu, log sigma^2), the log-variance clipped to
    `bounds` = (low, high) when given (no gradient beyond them, as a hardtanh)."""
    mu, log_var = params.chunk(2, dim=-1)
    if bounds:
        log_var = log_var.clamp(*bounds)
    return diagonal_normal(mu, torch.exp(0.5 * log_var))


class NormalMixture(MixtureSameFamily):
    """A mixture of C diagonal Gaussians over d dimensions (batch_shape (), event_shape (d,)).

    torch's `MixtureSameFamily.log_prob` broadcasts z against every component, (..., C, d) numbers
    and as many again for their gradient; expanding the square, sum_j (z_j - m_cj)^2 / s_cj^2 =
    z^2 . (1/s_c^2) - 2 z . (m_c/s_c^2) + sum_j m_cj^2/s_cj^2, turns every component's log-density
    into one matrix product, [z^2, z] (..., 2d) by (2d, C) plus a constant per component, what a
    VampPrior needs at every training step and for every importance sample. Same value otherwise.
    """

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """z: (..., d) -> (...,)."""
        if plain():
            return super().log_prob(z)
        table, constant = self.product_table()
        flat = z.reshape(-1, z.shape[-1])
        terms = torch.addmm(constant, torch.cat([flat * flat, flat], -1), table)  # (n, C)
        return log_sum_exp(terms, -1).reshape(z.shape[:-1])

    def product_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(table (2d, C), constant (C,)): log w_c + log N(z; m_c, s_c) = [z^2, z] @ table + constant.

        Made once per mixture without gradients: an evaluation scores millions of z against one prior.
        """
        if torch.is_grad_enabled():
            return self._product_table()
        if getattr(self, "_table", None) is None:
            self._table = self._product_table()
        return self._table

    def _product_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        normal = self.component_distribution.base_dist  # loc, scale: (C, d)
        precision = normal.scale.reciprocal().square()
        weighted_loc = normal.loc * precision
        log_norm = normal.scale.log().sum(-1) + 0.5 * normal.loc.shape[-1] * math.log(2 * math.pi)
        log_weights = torch.log_softmax(self.mixture_distribution.logits, -1)
        constant = log_weights - log_norm - 0.5 * (normal.loc * weighted_loc).sum(-1)
        return torch.cat([-0.5 * precision, weighted_loc], -1).T, constant


# Terms this many nats below the largest are left out of `log_sum_exp`: their share, < e^-80 each,
# is far below float32's (and float64's) rounding of the sum.
LOG_SUM_EXP_FLOOR = 80.0


def log_sum_exp(values: torch.Tensor, dim: int) -> torch.Tensor:
    """torch.logsumexp(values, dim), the terms far below the largest left out (see LOG_SUM_EXP_FLOOR).

    exp of a number below about -87 is a subnormal float32 (or 0), which x86 CPUs compute in
    microcode, many times slower than a normal one: a mixture's far components, hundreds of nats
    down, made torch.logsumexp the slowest part of a VampPrior's log-density. The same value
    (and gradient, the softmax) to float rounding; -inf, inf and NaN as torch gives them.
    """
    if plain():
        return torch.logsumexp(values, dim)
    top = values.detach().amax(dim, keepdim=True)
    finite = torch.isfinite(top)
    shift = torch.where(finite, top, torch.zeros_like(top))
    total = (values - shift).clamp_min(-LOG_SUM_EXP_FLOOR).exp().sum(dim, keepdim=True).log() + shift
    return torch.where(finite, total, top).squeeze(dim)


def uniform_mixture(components: Independent) -> NormalMixture:
    """(1/C) sum_c components[c]: diagonal Gaussians with batch_shape (C,), event (d,) -> batch_shape ()."""
    loc = components.base_dist.loc
    weights = torch.zeros(loc.shape[0], device=loc.device, dtype=loc.dtype)
    return NormalMixture(Categorical(logits=weights, validate_args=False), components, validate_args=False)


def standard_normal(dim: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Independent:
    """The prior N(0, I) over `dim` latent dimensions."""
    zeros = torch.zeros(dim, device=device, dtype=dtype)
    return diagonal_normal(zeros, torch.ones_like(zeros))


# ---------------------------------------------------------------- noise: drawn now, or drawn ahead

NOISE_KINDS: dict[str, str] = {"normal": "randn", "uniform": "rand"}  # kind -> torch's function, looked up when drawn


def _draw(kind: str, shape: torch.Size, generator: torch.Generator | None, device: torch.device,
          dtype: torch.dtype) -> torch.Tensor:
    return getattr(torch, NOISE_KINDS[kind])(shape, generator=generator, device=device, dtype=dtype)


class NoiseRecorder:
    """Draws from `generator` as it is asked, and notes each draw: `draws`, [(kind, shape, dtype, device)].

    A later call that asks for the same draws can have them drawn ahead (`draw_ahead`) and
    replayed (`NoisePlayback`): the same numbers from the same stream, in the same order.
    """

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.draws: list[tuple[str, torch.Size, torch.dtype, torch.device]] = []

    def draw(self, kind: str, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        self.draws.append((kind, torch.Size(shape), like.dtype, like.device))
        return _draw(kind, shape, self.generator, like.device, like.dtype)


def draw_ahead(draws: list[tuple[str, torch.Size, torch.dtype, torch.device]],
               generator: torch.Generator | None) -> list[torch.Tensor]:
    """The noise a `NoiseRecorder` noted, drawn now from `generator` in the same order."""
    return [_draw(kind, shape, generator, device, dtype) for kind, shape, dtype, device in draws]


class NoisePlayback:
    """Hands out noise drawn ahead, in the order it was drawn; a draw of another shape is an error."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors, self.position = tensors, 0

    def draw(self, kind: str, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        if self.position >= len(self.tensors) or self.tensors[self.position].shape != shape:
            raise RuntimeError(f"noise draw {self.position} asks for {kind} noise of shape {tuple(shape)}, "
                               "which the recorded call did not draw there")
        self.position += 1
        return self.tensors[self.position - 1]


Noise = torch.Generator | NoiseRecorder | NoisePlayback | None


def _noise(kind: str, shape: torch.Size, like: torch.Tensor, generator: Noise) -> torch.Tensor:
    """Standard normal or U[0, 1) noise of `shape`, on like's device and dtype."""
    if isinstance(generator, (NoiseRecorder, NoisePlayback)):
        return generator.draw(kind, shape, like)
    return _draw(kind, shape, generator, like.device, like.dtype)


# ---------------------------------------------------------------- sampling with a generator

def _reparameterized_normal(dist: Normal, shape: torch.Size, generator: Noise) -> torch.Tensor:
    return dist.loc + dist.scale * _noise("normal", shape, dist.loc, generator)


def _bernoulli(dist: Bernoulli, shape: torch.Size, generator: torch.Generator | None) -> torch.Tensor:
    return torch.bernoulli(dist.probs.expand(shape), generator=generator)


def _uniform(shape: torch.Size, like: torch.Tensor, generator: Noise) -> torch.Tensor:
    """U(0,1) kept away from 0 and 1, where the inverse CDFs below are infinite."""
    tiny = torch.finfo(like.dtype).tiny
    return _noise("uniform", shape, like, generator).clamp(tiny, 1.0 - torch.finfo(like.dtype).eps)


def _laplace_inverse_cdf(dist: Laplace, shape: torch.Size, generator: Noise) -> torch.Tensor:
    """z = F^-1(u) = loc - scale * sign(u - 1/2) * log(1 - 2|u - 1/2|): differentiable in loc and scale.

    |u - 1/2| is kept at most 1/2 - eps: u = tiny (torch.rand returns 0 once in 2^24 float32 draws)
    rounds to u - 1/2 = -1/2 exactly, where log(1 - 2|u - 1/2|) = -inf.
    """
    bound = 0.5 - torch.finfo(dist.loc.dtype).eps
    v = (_uniform(shape, dist.loc, generator) - 0.5).clamp(-bound, bound)
    return dist.loc - dist.scale * v.sign() * torch.log1p(-2 * v.abs())


def _gumbel(shape: torch.Size, like: torch.Tensor, generator: Noise) -> torch.Tensor:
    return -torch.log(-torch.log(_uniform(shape, like, generator)))


def _gumbel_softmax(dist: RelaxedOneHotCategorical, shape: torch.Size, generator: Noise) -> torch.Tensor:
    """softmax((logits + Gumbel noise) / temperature): the reparameterized relaxed one-hot sample.

    Entries are kept at least sqrt(tiny) of the dtype (1e-19 in float32): at low temperatures an
    entry underflows to exactly 0, where the relaxed density's log_prob (which takes log z) is NaN,
    and with it an IWAE weight; at `tiny` itself its gradient, ~1/z, overflows.
    """
    logits = dist.logits
    z = torch.softmax((logits + _gumbel(shape, logits, generator)) / dist.temperature, -1)
    return z.clamp_min(torch.finfo(z.dtype).tiny ** 0.5)


def _gumbel_max(dist: OneHotCategorical, shape: torch.Size, generator: Noise) -> torch.Tensor:
    """A hard one-hot sample: the argmax of logits + Gumbel noise (not differentiable)."""
    logits = dist.logits
    index = (logits + _gumbel(shape, logits, generator)).argmax(-1)
    return nn.functional.one_hot(index, logits.shape[-1]).to(logits.dtype)


def _mixture(dist: MixtureSameFamily, shape: torch.Size, generator: Noise) -> torch.Tensor:
    """A component drawn by Gumbel-max over the mixture's logits, then a draw of that component:
    reparameterized in the components' parameters (not in the mixture weights)."""
    logits = dist.mixture_distribution.logits  # (*batch, C)
    sample_shape = shape[:len(shape) - len(dist.batch_shape) - len(dist.event_shape)]
    index = (logits + _gumbel(sample_shape + logits.shape, logits, generator)).argmax(-1)  # (*sample, *batch)
    components = rsample(dist.component_distribution, sample_shape, generator)  # (*sample, *batch, C, *event)
    event_dims = len(dist.event_shape)
    index = index.reshape(*index.shape, 1, *([1] * event_dims))
    index = index.expand(*index.shape[:-event_dims - 1], 1, *components.shape[index.dim() - event_dims:])
    return components.gather(index.dim() - event_dims - 1, index).squeeze(index.dim() - event_dims - 1)


def _transformed(dist: TransformedDistribution, shape: torch.Size, generator: Noise) -> torch.Tensor:
    """A draw of the base distribution pushed through the transforms (a normalizing flow): reparameterized
    wherever the base is, since the transforms are differentiable."""
    sample_shape = shape[:len(shape) - len(dist.batch_shape) - len(dist.event_shape)]
    z = rsample(dist.base_dist, sample_shape, generator)
    for transform in dist.transforms:
        z = transform(z)
    return z


SAMPLERS: dict[type[Distribution], Callable[[Distribution, torch.Size, Noise], torch.Tensor]] = {
    Normal: _reparameterized_normal,
    Bernoulli: _bernoulli,
    Laplace: _laplace_inverse_cdf,
    RelaxedOneHotCategorical: _gumbel_softmax,
    OneHotCategorical: _gumbel_max,
    MixtureSameFamily: _mixture,
    NormalMixture: _mixture,
    TransformedDistribution: _transformed,
}


def rsample(dist: Distribution, sample_shape: tuple[int, ...] = (), generator: Noise = None) -> torch.Tensor:
    """Like `dist.rsample(sample_shape)`, but drawing noise from `generator` (or a recorder or playback).

    What an objective of your own (`vaelab.register_objective`) samples with, from the `generator` it is
    given, so that runs stay reproducible, resume exactly and compile. Normal, Laplace, Bernoulli,
    (relaxed) one-hot categorical, mixtures of those and `TransformedDistribution`s over them (flows),
    each possibly inside `Independent`; a distribution of your own can define
    `rsample_with(sample_shape, generator)` using `vaelab.rsample` on its parts.

    Returns (*sample_shape, *dist.batch_shape, *dist.event_shape); reparameterized (gradients
    reach the parameters) wherever the distribution allows it.
    """
    if hasattr(dist, "rsample_with"):
        return dist.rsample_with(torch.Size(sample_shape), generator)
    base = dist
    while isinstance(base, Independent):
        base = base.base_dist
    sampler = next((SAMPLERS[cls] for cls in type(base).__mro__ if cls in SAMPLERS), None)  # subclasses too
    if sampler is None:
        raise TypeError(f"vaelab cannot draw from a {type(base).__name__} with its random generator: use one of "
                        f"{', '.join(sorted(c.__name__ for c in SAMPLERS))} (or a TransformedDistribution of one), "
                        "or give the distribution rsample_with(sample_shape, generator)")
    shape = dist._extended_shape(torch.Size(sample_shape))
    return sampler(base, shape, generator)


def diagonal_laplace(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    """Independent Laplace(loc, scale) over the last dimension."""
    return Independent(Laplace(loc, scale, validate_args=False), 1, validate_args=False)


class TwoStep(Distribution):
    """A joint distribution over z = [a, b] drawn in two steps: one part first, the other given it.

    `first` is the distribution of the part drawn first; `then(part)` the conditional of the
    other. `first_is_a` says which slot of z the first part fills. For Burda et al.'s
    two-stochastic-layer VAE: q(z1, z2 | x) = q(z1|x) q(z2|z1) (first_is_a), and
    p(z1, z2) = p(z2) p(z1|z2) (not first_is_a), with z = [z1, z2] in both.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, first: Distribution, then: Callable[[torch.Tensor], Distribution], size_a: int,
                 size_b: int, first_is_a: bool) -> None:
        self.first, self.then, self.first_is_a = first, then, first_is_a
        self.sizes = (size_a, size_b)
        self._drawn: tuple[torch.Tensor, Distribution] | None = None  # the last z drawn, and its conditional
        super().__init__(first.batch_shape, torch.Size([size_a + size_b]), validate_args=False)

    def _join(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return torch.cat([first, second] if self.first_is_a else [second, first], -1)

    def _split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = z.split(self.sizes, -1)
        return (a, b) if self.first_is_a else (b, a)

    def rsample_with(self, sample_shape: torch.Size, generator: Noise) -> torch.Tensor:
        first = rsample(self.first, sample_shape, generator)
        then = self.then(first)
        z = self._join(first, rsample(then, (), generator))
        # without gradients (scoring), log_prob of this very z (an importance weight) reuses the
        # conditional instead of running its network again
        self._drawn = None if torch.is_grad_enabled() else (z, then)
        return z

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.rsample_with(torch.Size(sample_shape), None)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        first, second = self._split(z)
        drawn = self._drawn
        then = drawn[1] if drawn is not None and drawn[0] is z and not plain() else self.then(first)
        return self.first.log_prob(first) + then.log_prob(second)

    @property
    def mean(self) -> torch.Tensor:
        """The ancestral mean: the first part's mean, then the conditional mean given it (not E[z] exactly)."""
        first = self.first.mean
        return self._join(first, self.then(first).mean)
