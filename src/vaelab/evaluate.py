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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Bernoulli, Distribution, Independent, kl_divergence

from .contract import (Model, device_of, encode_mean, kl, latent_size, likelihood, likelihood_name, n_labels,
                       pixel_distribution, posterior)
from .data.views import ImageSet, binarization_seed
from .distributions import rsample
from .errors import VaelabError
from .latents import ACTIVE_THRESHOLD, activity_from_sums
from .likelihoods import LIKELIHOOD_HEADS, bits_per_dim
from .parallel import Parallel
from .progress import progress as progress_bar
from .threads import ThreadAdapter


class EvaluationError(VaelabError, ValueError):
    """An evaluation that would report a meaningless number; the message says why and what to do."""


@dataclass
class ChunkPlan:
    points: int  # data points per chunk
    samples: int  # samples of z per chunk (== K unless K alone exceeds the bound)


def plan_chunks(k: int, n_pixels: int, hidden: int, memory_mb: float) -> ChunkPlan:
    """How many (point, sample) rows fit in `memory_mb`.

    A row holds the decoder's hidden activations and, several times over, its n_pixels outputs
    (logits, the broadcast data, the elementwise log-probabilities), in float32.
    """
    bytes_per_row = 4 * (4 * n_pixels + 2 * hidden + 64)
    rows = max(1, int(memory_mb * 2**20) // bytes_per_row)
    if rows >= k:
        return ChunkPlan(points=rows // k, samples=k)
    return ChunkPlan(points=1, samples=rows)


def chunk_memory_mb(memory_mb: float | None, device: torch.device) -> float:
    """The memory bound of one chunk: as given, else 64 MB on a CPU and 1024 MB on a GPU.

    On a CPU a tensor above 32 MB is mapped fresh from the kernel by malloc and paid for page
    by page when it is first written: with 1024 MB chunks half the time went to page faults
    (an evaluation ran 1.4-1.7x slower than with 64 MB ones). GPU memory is cached by torch.
    """
    if memory_mb is not None:
        return memory_mb
    return 1024.0 if device.type == "cuda" else 64.0


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
                              samples_per_chunk: int | None = None, y: torch.Tensor | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(x) estimate, mean over the K samples of log p(x|z_k)), each (batch,), for x: (batch, n_pixels).

    y: (batch,) labels, for a conditional model (then it is log p(x|y)).
    """
    q, prior = posterior(model, x, y), model.prior()
    chunk = samples_per_chunk or k
    log_sum = torch.full((len(x),), -math.inf, device=x.device)
    reconstruction = torch.zeros(len(x), device=x.device)
    for start in range(0, k, chunk):
        z = rsample(q, (min(chunk, k - start),), generator)  # (s, batch, latent)
        log_px_z = likelihood(model, z, y).log_prob(x)
        log_w = log_px_z + prior.log_prob(z) - q.log_prob(z)
        log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_w, 0))
        reconstruction += log_px_z.sum(0)
    return log_sum - math.log(k), reconstruction / k


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
                    threads: int | str | ThreadAdapter = "auto") -> dict[str, Any]:
    """ELBO and terms, NLL with its standard error, active units and KL per dimension over a split.

    Deterministic given `seed` and `memory_mb` (which sets how the work is chunked; unset, see
    `chunk_memory_mb`; the result records it), up to float rounding where the thread count
    changes (`threads`: train.threads, re-decided between chunks; see `vaelab.threads`). Under
    torchrun each rank scores its share of the images and the results are combined.
    """
    parallel = parallel or Parallel()
    if k < 1:
        raise EvaluationError(f"K (importance samples) must be >= 1, got {k}")
    if memory_mb is not None and not memory_mb > 0:
        raise EvaluationError(f"the memory bound (--memory-mb, evaluate.memory_mb) must be > 0 MB, got {memory_mb}")
    device = device_of(model)
    config = getattr(model, "config", None)  # vaelab's VAE sizes the chunks by its widest decoder layer
    hidden = max([*config.decoder_hidden, 1]) if hasattr(config, "decoder_hidden") else 1024
    memory_mb = chunk_memory_mb(memory_mb, device)
    plan = plan_chunks(k, images.pixels.shape[1], hidden, memory_mb)
    generator = torch.Generator(device).manual_seed(seed + parallel.rank)
    n = len(images)
    share = parallel.shard(n)
    log_px = torch.empty(share.stop - share.start, device=device, dtype=torch.float64)
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # reconstruction, kl
    kl_dims, mean_sum, mean_sq_sum = None, None, None
    bar = progress_bar(len(log_px), f"evaluating (K={k})", "image", enabled=progress and parallel.is_main)
    adapter = threads if isinstance(threads, ThreadAdapter) else ThreadAdapter(threads)
    closed = True  # the KL in closed form (set per chunk; a rank without images keeps it)
    with adapter.active():
        for start in range(share.start, share.stop, plan.points):
            index = slice(start, min(start + plan.points, share.stop))
            x = images.batch(index, generator).to(device)
            y = images.labels[index].to(device) if n_labels(model) else None
            q = posterior(model, x, y)
            estimate, reconstruction = importance_log_likelihood(model, x, k, generator, plan.samples, y)
            log_px[start - share.start:start - share.start + len(x)] = estimate.double()
            prior = model.prior()
            closed = _has_closed_form_kl(q, prior)
            z = rsample(q, (min(k, 64),), generator) if not closed else None
            kl_term = kl(model, q, prior, z)
            sums += torch.stack([reconstruction.sum(), kl_term.sum()]).double()
            means = _posterior_mean(model, q, x, y).double().flatten(1)
            mean_sum = means.sum(0) if mean_sum is None else mean_sum + means.sum(0)
            mean_sq_sum = (means**2).sum(0) if mean_sq_sum is None else mean_sq_sum + (means**2).sum(0)
            per_dim = kl_per_dimension(q, prior)
            if per_dim is not None:
                per_dim = per_dim.double().flatten(1).sum(0)
                kl_dims = per_dim if kl_dims is None else kl_dims + per_dim
            bar.update(len(x))
            adapter.tick()  # between chunks: the thread count follows the other processes' load
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
                             config.train.threads)
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
