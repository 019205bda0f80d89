"""Evaluation: the ELBO and its terms, the importance-sampled log-likelihood, active units.

Built only on the model's public API (`prior()`, `posterior(x)`, `likelihood(z)`), so every
model variant that has one can be scored. All numbers are nats per image (summed over pixels).

The importance-sampled estimate (Burda et al., 2016) is

    log p(x) ~= log (1/K) sum_k exp(log p(x|z_k) + log p(z_k) - log q(z_k|x)),  z_k ~ q(z|x),

computed for many data points and samples at once, in chunks sized to a memory bound, with
a running log-sum-exp over sample chunks when K alone exceeds the bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Bernoulli, Distribution, Independent, kl_divergence

from .contract import (Model, device_of, encode_mean, kl, latent_size, likelihood, likelihood_name, n_labels,
                       pixel_distribution, posterior)
from .data.views import ImageSet, binarization_seed
from .distributions import Noise, NoisePlayback, log_sum_exp, plain, rsample
from .errors import VaelabError
from .latents import ACTIVE_THRESHOLD, activity_from_sums
from .likelihoods import LIKELIHOOD_HEADS, bits_per_dim
from .nets import BLOCKS
from .parallel import Parallel
from .progress import progress as progress_bar
from .threads import ThreadAdapter


class EvaluationError(VaelabError, ValueError):
    """An evaluation that would report a meaningless number; the message says why and what to do."""


@dataclass
class ChunkPlan:
    points: int  # data points per chunk
    samples: int  # samples of z per chunk (== K unless K alone exceeds the bound)


def decoder_width(model: Model) -> int:
    """The widest hidden product of the decoder, which `plan_chunks` sizes a row by: vaelab's VAE
    knows it from its config (a gated layer's product is twice its units); another model gets 1024."""
    config = getattr(model, "config", None)
    if not hasattr(config, "decoder_hidden"):
        return 1024
    return max([*config.decoder_hidden, 1]) * BLOCKS[getattr(config, "block", "plain")].product_width


def plan_chunks(k: int, n_pixels: int, hidden: int, memory_mb: float) -> ChunkPlan:
    """How many (point, sample) rows fit in `memory_mb`.

    A row holds the decoder's hidden activations and, several times over, its n_pixels outputs
    (logits, the broadcast data, the elementwise log-probabilities), in float32.
    """
    bytes_per_row = 4 * (4 * n_pixels + 2 * hidden + 64)
    rows = max(1, int(memory_mb * 2**20) // bytes_per_row)
    if rows >= k:
        return ChunkPlan(points=rows // k, samples=k)
    return ChunkPlan(points=1, samples=even_chunk(k, rows))


def even_chunk(k: int, rows: int) -> int:
    """Samples per chunk, at most `rows`, for K in chunks of one size: one compiled chunk serves them all.

    The largest divisor of K that fits, where one is at least half the bound (K = 5000 in rows of
    1,165: chunks of 1,000); else (a K with no such divisor, a prime) chunks of ceil(K / chunks),
    the last one shorter, which runs eagerly.
    """
    divisor = next(d for d in range(rows, 0, -1) if k % d == 0)
    if 2 * divisor >= rows:
        return divisor
    return math.ceil(k / math.ceil(k / rows))


def chunk_memory_mb(memory_mb: float | None, device: torch.device) -> float:
    """The memory bound of one chunk: as given, else sized to the CPU's L2 cache, or 1024 MB on a GPU.

    On a CPU the chunk's tensors are read again by the next operation: when one chunk's
    decoder output stays in the core's L2 cache (a chunk of CACHE_CHUNK_FACTOR times the L2,
    of which the logits are about a fifth), that read comes from the cache instead of memory.
    A chunk also pays a fixed cost (its noise drawn, the compiled graph called, the running
    log-sum-exp): below about a thousand samples (CPU_CHUNK_MIN_MB) that costs more than the
    cache saves, so a core with a small L2 (AMD's 512 KB) gets chunks of that size. Much larger
    chunks (above 32 MB) are mapped fresh from the kernel by malloc and paid for page by page
    when first written. GPU memory is cached by torch.
    """
    if memory_mb is not None:
        return memory_mb
    if device.type == "cuda":
        return 1024.0
    return max(CACHE_CHUNK_FACTOR * l2_cache_bytes() / 2**20, CPU_CHUNK_MIN_MB)


CACHE_CHUNK_FACTOR = 8  # a CPU chunk's memory bound in L2 caches (see chunk_memory_mb; benchmarks/nll_speed.py)
CPU_CHUNK_MIN_MB = 16.0  # and at least this: K = 5000 in chunks of 1,000 samples of a 784-pixel image


def l2_cache_bytes() -> int:
    """The L2 cache of one core, from Linux's sysfs; 1 MiB where it cannot be read (another OS)."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2" and (index / "type").read_text().strip() != "Instruction":
                return _cache_size((index / "size").read_text().strip())
        except (OSError, ValueError):
            break
    return 2**20


def _cache_size(text: str) -> int:
    """sysfs's "2048K" or "1M" -> bytes."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


@contextmanager
def flush_subnormals() -> Iterator[None]:
    """Within the block, float results below the smallest normal number (1e-38 in float32) are 0 on this thread.

    A tanh or softplus of a large argument, a log-density far out, computes exp of a large negative
    number on the way: a subnormal result, which x86 CPUs compute in microcode, many times slower.
    Flushed to 0 they change no estimate (they are below 1e-38 of the terms they are added to).
    torch has no way to read the setting, so it is turned off after (torch's default); inside
    `plain_log_probs` it is left alone. Threads of torch's pool keep their own setting.
    """
    if plain() or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def kl_per_dimension(posterior: Distribution, prior: Distribution) -> torch.Tensor | None:
    """(batch, latent) KL of each latent dimension, for factorized q and p; None where it has no closed form."""
    if not (isinstance(posterior, Independent) and isinstance(prior, Independent)):
        return None
    try:
        return kl_divergence(posterior.base_dist, prior.base_dist)
    except NotImplementedError:
        return None


@torch.no_grad()
def importance_log_likelihood(model: Model, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
                              samples_per_chunk: int | None = None, y: torch.Tensor | None = None,
                              q: Distribution | None = None, prior: Distribution | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x) estimate, mean over the K samples of log p(x|z_k)), each (batch,), for x: (batch, n_pixels).

    y: (batch,) labels, for a conditional model (then it is log p(x|y)). q (q(z|x) of these x) and
    prior (the model's prior()), where the caller has them already: an evaluation computes the
    prior once, where a VampPrior runs its encoder on every pseudo-input, and q once per chunk.
    """
    with flush_subnormals():
        q = posterior(model, x, y) if q is None else q
        prior = model.prior() if prior is None else prior
        return _importance_sums(model, x, k, generator, samples_per_chunk or k, y, q, prior)


def _importance_sums(model: Model, x: torch.Tensor, k: int, generator: torch.Generator | None, chunk: int,
                     y: torch.Tensor | None, q: Distribution | None, prior: Distribution,
                     compiled: CompiledChunk | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """importance_log_likelihood's loop over chunks of `chunk` samples; `compiled` runs the chunks it was made for.

    q: q(z|x), made here when an eager chunk first needs it (None: a compiled chunk runs the encoder itself).
    """
    log_sum = torch.full((len(x),), -math.inf, device=x.device)
    reconstruction = torch.zeros(len(x), device=x.device)
    for start in range(0, k, chunk):
        samples = min(chunk, k - start)
        if compiled is not None and samples == compiled.samples:
            chunk_log_sum, chunk_reconstruction = compiled(x, y, generator)
        else:
            q = posterior(model, x, y) if q is None else q
            chunk_log_sum, chunk_reconstruction = chunk_sums(model, x, y, q, prior, generator, samples)
        log_sum = torch.logaddexp(log_sum, chunk_log_sum)
        reconstruction += chunk_reconstruction
    return log_sum - math.log(k), reconstruction / k


def chunk_sums(model: Model, x: torch.Tensor, y: torch.Tensor | None, q: Distribution, prior: Distribution,
               noise: Noise, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of `samples` draws z_k ~ q for each x: (log sum_k w_k, sum_k log p(x|z_k)), each (batch,)."""
    z = rsample(q, (samples,), noise)  # (samples, batch, latent)
    log_px_z = likelihood(model, z, y).log_prob(x)
    log_w = log_px_z + prior.log_prob(z) - q.log_prob(z)
    return log_sum_exp(log_w, 0), log_px_z.sum(0)


# Images whose KL, posterior means and active units an evaluation computes in one pass (at K = 5000 a
# chunk of samples holds one image, and these small passes, one an image, cost a few per cent of its time)
EXTRAS_BLOCK = 64


# evaluate.compile = "auto" compiles the chunks on a CPU where a rank scores this many (image,
# sample) pairs or more: enough for the faster chunks to earn the compile back (benchmarks/nll_speed.py)
AUTO_COMPILE_SAMPLES = 10_000_000


def compiles_scoring(setting: bool | str, device: torch.device, pairs: int) -> bool:
    """Whether an evaluation compiles its chunks (evaluate.compile: true, false or "auto", on a CPU for
    `pairs` (image, sample) pairs or more than AUTO_COMPILE_SAMPLES)."""
    if setting == "auto":
        return device.type == "cpu" and pairs >= AUTO_COMPILE_SAMPLES
    return bool(setting)


class CompiledChunk:
    """`chunk_sums` for chunks of `samples` draws, compiled with `torch.compile`, the noise drawn ahead.

    Built on `training.compiled.NoiseCompiled`: the first call notes the draws q makes, every call
    draws them ahead from the generator (the numbers the eager chunk would draw, in the same order)
    and hands them to the graph; x of another shape (the last, shorter chunk of images) runs
    eagerly, and so does every chunk once compiling has failed (`error` says why). The graph runs
    the encoder on its chunk's images itself, and reads the prior made once for the evaluation.
    """

    def __init__(self, model: Model, prior: Distribution, samples: int) -> None:
        from .training.compiled import NoiseCompiled

        self.samples = samples

        def eager(x: torch.Tensor, y: torch.Tensor | None, noise: Noise, kl_weight: float = 1.0) -> tuple:
            return chunk_sums(model, x, y, posterior(model, x, y), prior, noise, samples)

        def traced(x: torch.Tensor, y: torch.Tensor | None, noise: list[torch.Tensor], kl_weight: torch.Tensor) -> tuple:
            return chunk_sums(model, x, y, posterior(model, x, y), prior, NoisePlayback(noise), samples)

        self._compiled = NoiseCompiled(eager, eager, traced)

    @property
    def error(self) -> str | None:
        return self._compiled.error

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._compiled(x, y, generator)


@torch.no_grad()
def reference_log_likelihood(model: Model, x: torch.Tensor, k: int, generator: torch.Generator | None = None
                             ) -> torch.Tensor:
    """The same estimate, one data point and one sample at a time: slow, plain, for checking."""
    estimates = []
    for x_i in x:
        x_i = x_i[None]
        posterior, prior = model.posterior(x_i), model.prior()
        log_w = []
        for _ in range(k):
            z = rsample(posterior, (), generator)
            log_w.append(model.likelihood(z).log_prob(x_i) + prior.log_prob(z) - posterior.log_prob(z))
        estimates.append(torch.logsumexp(torch.cat(log_w), 0) - math.log(k))
    return torch.stack(estimates)


def _kl_estimate(model: Model, closed: bool, samples: int) -> str:
    """How the KL term was computed, for the printed result: in closed form or by Monte-Carlo."""
    own = getattr(type(model), "kl", None)
    if own is not None and own is not Model.kl and not hasattr(model, "latent"):  # not vaelab's VAE
        return f"the model's own kl() (given {samples} samples of z where it has no closed form)"
    return "analytic" if closed else f"Monte-Carlo over {samples} samples of z"


def _has_closed_form_kl(posterior: Distribution, prior: Distribution) -> bool:
    try:
        kl_divergence(posterior, prior)
    except NotImplementedError:
        return False
    return True


def _bernoulli_pixels(model: Model) -> bool:
    """Does the model's p(x|z) treat pixels as Bernoulli variables?"""
    return isinstance(pixel_distribution(model), Bernoulli)


def check_scorable(config: Any, model: Model | None = None) -> None:
    """Refuse to call a Bernoulli 'likelihood' of grey-level pixels an NLL (a head whose data_range is binary)."""
    bernoulli = (_bernoulli_pixels(model) if config.model.custom and model is not None
                 else LIKELIHOOD_HEADS[config.model.likelihood].data_range == "binary")
    if bernoulli and config.data.binarization == "grey":
        raise EvaluationError(
            "this model scores pixels in their levels (not binarized) with a Bernoulli: a Bernoulli is a "
            "distribution over {0, 1}, "
            "so its 'log-likelihood' of x in (0, 1) is not normalized (it is a cross-entropy, not log p(x)) and "
            "its NLL is not comparable with anything. Train on binarized pixels (data.binarization=dynamic or "
            "static) to report an NLL, or use a density on [0, 1] for them (model.likelihood=gaussian).")


@torch.no_grad()
def evaluate_images(model: Model, images: ImageSet, k: int = 5000, seed: int = 0, memory_mb: float | None = None,
                    progress: bool = False, parallel: Parallel | None = None,
                    threads: int | str | ThreadAdapter = "auto", compile: bool | str = "auto") -> dict[str, Any]:
    """ELBO and terms, NLL with its standard error, active units and KL per dimension over a split.

    Deterministic given `seed` and `memory_mb` (which sets how the work is chunked; unset, see
    `chunk_memory_mb`; the result records it), up to float rounding where the thread count
    changes (`threads`: train.threads, re-decided between chunks; see `vaelab.threads`) or the
    chunks run compiled (`compile`: evaluate.compile, see `compiles_scoring`; the result says
    whether they did). Under torchrun each rank scores its share of the images and the results are combined.
    """
    parallel = parallel or Parallel()
    if k < 1:
        raise EvaluationError(f"K (importance samples) must be >= 1, got {k}")
    if memory_mb is not None and not memory_mb > 0:
        raise EvaluationError(f"the memory bound (--memory-mb, evaluate.memory_mb) must be > 0 MB, got {memory_mb}")
    device = device_of(model)
    memory_mb = chunk_memory_mb(memory_mb, device)
    plan = plan_chunks(k, images.pixels.shape[1], decoder_width(model), memory_mb)
    generator = torch.Generator(device).manual_seed(seed + parallel.rank)
    n = len(images)
    share = parallel.shard(n)
    log_px = torch.empty(share.stop - share.start, device=device, dtype=torch.float64)
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # reconstruction, kl
    kl_dims, mean_sum, mean_sq_sum = None, None, None
    bar = progress_bar(len(log_px), f"evaluating (K={k})", "image", enabled=progress and parallel.is_main)
    adapter = threads if isinstance(threads, ThreadAdapter) else ThreadAdapter(threads)
    closed = True  # the KL in closed form (set per block; a rank without images keeps it)
    with adapter.active(), flush_subnormals():
        prior = model.prior()  # once: the model's weights do not change while it is scored
        compiled = (CompiledChunk(model, prior, plan.samples)
                    if compiles_scoring(compile, device, (share.stop - share.start) * k) else None)
        # The ELBO's terms and the posterior means, per block of images: one small pass for many
        # images, where a chunk of K = 5000 samples holds one image
        block = plan.points * max(1, EXTRAS_BLOCK // plan.points)
        for start in range(share.start, share.stop, block):
            index = slice(start, min(start + block, share.stop))
            x = images.batch(index, generator).to(device)
            y = images.labels[index].to(device) if n_labels(model) else None
            for part in range(0, len(x), plan.points):
                x_part = x[part:part + plan.points]
                y_part = None if y is None else y[part:part + plan.points]
                estimate, reconstruction = _importance_sums(model, x_part, k, generator, plan.samples, y_part,
                                                            None, prior, compiled)
                at = start - share.start + part
                log_px[at:at + len(x_part)] = estimate.double()
                sums[0] += reconstruction.sum().double()
                bar.update(len(x_part))
                adapter.tick()  # between chunks: the thread count follows the other processes' load
            q = posterior(model, x, y)
            closed = _has_closed_form_kl(q, prior)
            z = rsample(q, (min(k, 64),), generator) if not closed else None
            sums[1] += kl(model, q, prior, z).sum().double()
            means = _posterior_mean(model, q, x, y).double().flatten(1)
            mean_sum = means.sum(0) if mean_sum is None else mean_sum + means.sum(0)
            mean_sq_sum = (means**2).sum(0) if mean_sq_sum is None else mean_sq_sum + (means**2).sum(0)
            per_dim = kl_per_dimension(q, prior)
            if per_dim is not None:
                per_dim = per_dim.double().flatten(1).sum(0)
                kl_dims = per_dim if kl_dims is None else kl_dims + per_dim
    bar.close()
    nll = -parallel.gather(log_px)
    for total in (sums, mean_sum, mean_sq_sum) + ((kl_dims,) if kl_dims is not None else ()):
        parallel.sum_(total)
    reconstruction, mean_kl = (sums / n).tolist()
    activity = activity_from_sums(mean_sum, mean_sq_sum, n)
    return {
        "elbo": reconstruction - mean_kl, "reconstruction": reconstruction, "kl": mean_kl,
        "nll": nll.mean().item(), "nll_stderr": (nll.std().item() / math.sqrt(n)) if n > 1 else float("nan"),
        "k": k, "n": n, "memory_mb": memory_mb,
        "active_units": int((activity > ACTIVE_THRESHOLD).sum().item()),
        "unit_activity": activity.tolist(),
        "kl_per_dim": None if kl_dims is None else (kl_dims / n).tolist(),
        "kl_estimate": _kl_estimate(model, closed, min(k, 64)) if n else None,
        "compiled": compiled is not None and compiled.error is None,
    }


def _posterior_mean(model: Model, q: Distribution, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """E_q[z] for the active units; the model's own encode_mean where q has no closed-form mean (a flow)."""
    try:
        return q.mean
    except NotImplementedError:
        return encode_mean(model, x, y)


def evaluate_run(run_dir: str | Path, split: str = "test", k: int = 5000, seed: int = 0,
                 memory_mb: float | None = None, progress: bool = True, data: Any = None, model: Any = None,
                 device: str | None = None, data_dir: str | None = None,
                 parallel: Parallel | None = None, save: bool = True) -> dict[str, Any]:
    """Evaluate a run folder's best weights and return the result; with `save`, also keep it in the folder.

    The result names the weights it scored (`weights_sha256`, see `runs.fingerprint`). `model`, when
    given, must carry `weights_sha256` and `run_config` as `load_run` sets them.
    """
    from .data import load_data
    from .data.views import make_views
    from .runs import EVALUATION_SPLITS, RunFolder, load_run
    from .device import resolve_device

    if split not in EVALUATION_SPLITS:
        raise EvaluationError(f"split must be one of {', '.join(EVALUATION_SPLITS)}, got {split!r}")
    if k < 1:
        raise EvaluationError(f"K (importance samples, --samples) must be >= 1, got {k}")
    folder = RunFolder(run_dir).check()
    torch_device = resolve_device(device or "auto", "--device")
    model = model if model is not None else load_run(folder.path, torch_device)
    config = model.run_config
    check_scorable(config, model)
    if data is None:
        raw = load_data(config.data, data_dir, progress=progress)
        data = make_views(raw, config.data, torch_device)
    started = time.perf_counter()
    result = evaluate_images(model, getattr(data, split), k, seed, memory_mb, progress, parallel,
                             config.train.threads, config.evaluate.compile)
    result |= {
        "split": split, "binarization": config.data.binarization, "data": config.data.name,
        "units": "nats per image (summed over pixels)", "seed": seed,
        "binarization_seed": binarization_seed(config.data, split),
        "likelihood": _likelihood_name(config, model), "latent_dim": _latent_dim(config, model),
        "channels": data.image_shape[0],
        "weights_sha256": getattr(model, "weights_sha256", None), **code_provenance(model),
        "seconds": round(time.perf_counter() - started, 2), "device": str(torch_device),
    }
    if _discrete(config, model):  # a probability of the data as stored: comparable in bits per dimension
        result["bits_per_dim"] = bits_per_dim(result["nll"], getattr(data, split).pixels.shape[1])
    if save and (parallel is None or parallel.is_main):
        folder.save_evaluation(result)
    return result


def _likelihood_name(config: Any, model: Model) -> str:
    """The likelihood's name: the config's head, or for a model of the user's own its distribution's class."""
    if not config.model.custom:
        return config.model.likelihood
    return likelihood_name(model)


def _latent_dim(config: Any, model: Model) -> int:
    return latent_size(model) if config.model.custom else config.model.latent_dim


def _discrete(config: Any, model: Model) -> bool:
    """Is log p(x|z) a log probability mass (so the NLL also reads in bits per dimension)? A model of the
    user's own says so with `discrete_likelihood = True`."""
    if config.model.custom:
        return bool(getattr(model, "discrete_likelihood", False))
    return LIKELIHOOD_HEADS[config.model.likelihood].discrete


def code_provenance(model: Any) -> dict[str, Any]:
    """What a result records of the user's code it came from: the files' digests, and any allowed change."""
    record = getattr(model, "code_sha256", None)
    out: dict[str, Any] = {"code_sha256": record} if record else {}
    if getattr(model, "code_changed", None):
        out["code_changed"] = model.code_changed
    return out


# ---------------------------------------------------------------- disentanglement

DISENTANGLEMENT_SAMPLES = 10_000  # factor samples a score draws by default (`vaelab evaluate --disentanglement`)


class NoFactorsError(EvaluationError):
    """A run whose data has no factor grid (MNIST, a folder of images): nothing to score or draw against."""


def run_factors(data: Any, run_dir: str | Path) -> Any:
    """The FactorGrid of a run's data (`ImageData.factors`); a NoFactorsError naming the run where there is none."""
    grid = getattr(data, "factors", None)
    if grid is None:
        raise _no_factors(run_dir, getattr(data, "name", "?"))
    return grid


def check_run_has_factors(config: Any, run_dir: str | Path) -> None:
    """Refuse, from its config alone, a run whose data has no factors (training records data.factor_names)."""
    if not config.data.factor_names:
        raise _no_factors(run_dir, config.data.name)


def _no_factors(run_dir: str | Path, data_name: str) -> NoFactorsError:
    return NoFactorsError(f"{run_dir}: its data ({data_name}) has no factors; disentanglement is measured on a "
                          "factor data set such as dsprites")


def load_run_data(config: Any, device: torch.device, data_dir: str | None = None, progress: bool = False) -> Any:
    """The run's data in its view (an ImageData), on `device`."""
    from .data import load_data
    from .data.views import make_views

    return make_views(load_data(config.data, data_dir, progress=progress), config.data, device)


class BatchedEncoder:
    """encode(x: (n, pixels) float) -> (n, latent_dim) CPU float posterior means, `batch` images a pass on the
    model's device (what `disentanglement.score_model` and the factor figures encode with)."""

    def __init__(self, model: Model, batch: int = 1000) -> None:
        self.model, self.batch = model, batch

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        device = device_of(self.model)
        x = torch.as_tensor(x, dtype=torch.float32)
        means = [encode_mean(self.model, x[i:i + self.batch].to(device), None).flatten(1).float().cpu()
                 for i in range(0, len(x), self.batch)]
        return torch.cat(means) if means else torch.empty(0, latent_size(self.model))


def evaluate_disentanglement(run_dir: str | Path, samples: int = DISENTANGLEMENT_SAMPLES, seed: int = 0, *,
                             progress: bool = True, data: Any = None, model: Any = None, device: str | None = None,
                             data_dir: str | None = None, save: bool = True) -> dict[str, Any]:
    """Score a run's best weights with `vaelab.disentanglement.score_model` over its data's factor grid.

    The result holds each score with its sample sizes and seed, and names the weights, data and
    factors it scored; with `save`, it is kept as RUN_DIR/disentanglement-n<samples>.json. A run
    whose data has no factors is refused (NoFactorsError) before the model is loaded. `data` (an
    ImageData with `factors`) and `model` (as `load_run` returns it) are used instead of loading them.
    """
    from .device import resolve_device
    from .disentanglement import require_sklearn, score_model
    from .runs import RunFolder, load_run

    if samples < 1:
        raise EvaluationError(f"samples (--samples) must be >= 1 factor samples, got {samples}")
    folder = RunFolder(run_dir).check()
    require_sklearn()  # an optional dependency: its one-line error before any work
    torch_device = resolve_device(device or "auto", "--device")
    config = model.run_config if model is not None else folder.config()
    check_run_has_factors(config, folder.path)  # before the data (dsprites: a 3 GB map) and the model load
    data = load_run_data(config, torch_device, data_dir, progress) if data is None else data
    grid = run_factors(data, folder.path)
    model = model if model is not None else load_run(folder.path, torch_device)
    started = time.perf_counter()
    with torch.no_grad():  # score_model shows its own progress: encoding, then each score's
        scores = score_model(BatchedEncoder(model), grid, samples=samples, seed=seed, progress=progress)
    return _disentanglement_result(folder, scores, grid, data, model, config, samples, seed, started,
                                   torch_device, save)


def _disentanglement_result(folder: Any, scores: dict[str, Any], grid: Any, data: Any, model: Any, config: Any,
                            samples: int, seed: int, started: float, device: torch.device, save: bool) -> dict[str, Any]:
    """The scores with what they describe (weights, data, factors, samples, seed, time), saved when `save`."""
    result = {"samples": samples, "seed": seed} | dict(scores) | {
        "data": getattr(data, "name", config.data.name), "factors": list(grid.names),
        "factor_sizes": [int(s) for s in grid.sizes], "latent_dim": _latent_dim(config, model),
        "weights_sha256": getattr(model, "weights_sha256", None), **code_provenance(model),
        "seconds": round(time.perf_counter() - started, 2), "device": str(device),
    }
    if save:
        folder.save_disentanglement(result)
    return result


# The scores `score_model` returns, in the order the printout, the report and the table show them:
# (key in the result, name as people read it).
SCORE_NAMES = (("beta_vae", "\u03b2-VAE score"), ("factor_vae", "FactorVAE score"), ("mig", "MIG"),
               ("dci_disentanglement", "DCI disentanglement"), ("dci_completeness", "DCI completeness"),
               ("dci_informativeness", "DCI informativeness"), ("sap", "SAP"),
               ("total_correlation", "total correlation (nats)"))


def _score_value(entry: Any) -> float | None:
    """A score as a number: the entry itself, or a dict's "value" / "score" (a score kept with its sample sizes)."""
    if isinstance(entry, dict):
        entry = entry.get("value", entry.get("score"))
    return float(entry) if isinstance(entry, (int, float)) and not isinstance(entry, bool) else None


def flat_scores(result: dict[str, Any] | None) -> dict[str, float | None]:
    """{key of SCORE_NAMES: number or None} from a saved disentanglement result; DCI may be one "dci" entry
    holding its three parts."""
    result = result or {}
    dci = result.get("dci") if isinstance(result.get("dci"), dict) else {}
    out = {}
    for key, _ in SCORE_NAMES:
        part = key.removeprefix("dci_")
        out[key] = _score_value(result[key]) if key in result else (
            _score_value(dci.get(part)) if key.startswith("dci_") else None)
    return out


def format_disentanglement(r: dict[str, Any]) -> str:
    """The scores as a short human-readable block, with the samples and seed they came from."""
    factors = ", ".join(f"{name} ({size})" for name, size in zip(r.get("factors", []), r.get("factor_sizes", [])))
    lines = [f"{r.get('data')}: disentanglement of the {r.get('latent_dim')}-D latent over factors {factors}",
             f"  {r['samples']} factor samples, seed {r['seed']}"]
    for key, name in SCORE_NAMES:
        value = flat_scores(r)[key]
        if value is not None:
            entry = r.get("dci") if key == "dci_disentanglement" else r.get(key)  # DCI's sizes once, on its first line
            lines.append(f"  {name:26s} {value:8.3f}{_sizes_text(entry)}")
    lines.append(f"  {r['seconds']:.1f} s on {r['device']}")
    return "\n".join(lines)


def _sizes_text(entry: Any) -> str:
    """'   (samples 10000, bins 20)': the sizes a score records beside its value (whole numbers but its seed,
    which the block's head gives once), if it does."""
    if not isinstance(entry, dict):
        return ""
    facts = [f"{k.replace('_', ' ')} {v}" for k, v in entry.items() if k != "seed"
             and isinstance(v, int) and not isinstance(v, bool)]
    return f"   ({', '.join(facts)})" if facts else ""
