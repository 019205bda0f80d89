"""Importance-sampled NLL: how near the machine's float32 peak vaelab scores, and with what estimate.

On one trained model and the same test images, in one process, alternately:
- `fast`: `evaluate_images` as `vaelab evaluate` runs it (chunks sized to the L2 cache, the
  prior computed once, vaelab's log-densities, subnormal results flushed to zero);
- `plain`: the same evaluation inside `vaelab.distributions.plain_log_probs()` (torch's own
  log-densities), in the 64 MB chunks the CPU used before: what scoring cost without the fast paths;
- `compiled` (with --compile): `fast` with its chunks compiled (`evaluate.compile = true`, what
  "auto" does for the whole test set at K = 5000); a warm-up fills torch's compile caches first.
  Every evaluation traces its graph again (a second or two, once per evaluation, however many
  images it scores), so its rate is the steady one a whole test set runs at: in each round the
  same evaluation of the first image alone is timed too, and the rate is (N - 1) images over the
  difference;
- `loop` (with --loop): a one-point-per-loop estimator, the pattern common VAE libraries use
  (pythae's `get_nll`, for one): each image's K samples in mini-batches of 100, the image
  repeated and re-encoded for every mini-batch.
All must agree up to Monte-Carlo error: the NLLs are printed with their standard errors.

The work is counted by torch's own FLOP counter (`torch.utils.flop_counter.FlopCounterMode`, the
matrix products) over one chunk of the scoring computation, per importance sample; the peak is
a 2048 x 2048 float32 matrix product on the same threads, measured in every round.

    python benchmarks/nll_speed.py [--run RUN_DIR] [--images 100] [--samples 5000] [--repeats 2]
        [--threads 1] [--device cpu|cuda] [--compile] [--loop] [--json PATH]

Without --run it trains the default preset for 3 epochs first (about 15 s). The last line of
output is `speedup <ratio>` (plain seconds / fast seconds); --json also writes the numbers to
PATH (for benchmarks/gpu.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import vaelab
from vaelab.contract import posterior
from vaelab.data import load_dataset
from vaelab.data.views import make_views
from vaelab.distributions import plain_log_probs, rsample
from vaelab.evaluate import chunk_memory_mb, decoder_width, evaluate_images, importance_log_likelihood, plan_chunks

PLAIN_MEMORY_MB = 64.0  # the CPU's chunk bound before chunks were sized to the cache (a GPU's is unchanged)


@torch.no_grad()
def one_point_per_loop(model, images: torch.Tensor, k: int, batch: int = 100, seed: int = 0) -> torch.Tensor:
    """log p(x) per image, one image at a time, its K samples in mini-batches of `batch`."""
    generator = torch.Generator(images.device).manual_seed(seed)  # a CUDA draw needs a CUDA generator
    estimates = []
    for x in images:
        log_w = []
        for _ in range(math.ceil(k / batch)):
            x_rep = x.expand(batch, -1)
            posterior = model.posterior(x_rep)
            z = rsample(posterior, (), generator)
            log_w.append(model.likelihood(z).log_prob(x_rep) + model.prior().log_prob(z) - posterior.log_prob(z))
        estimates.append(torch.logsumexp(torch.cat(log_w)[:k], 0) - math.log(k))
    return torch.stack(estimates)


def trained_run(run: str | None) -> Path:
    if run:
        return Path(run)
    from vaelab.cli import main

    out = Path(tempfile.mkdtemp(prefix="vaelab-bench-")) / "run"
    main(["train", "--set", "train.epochs=3", "--out", str(out)])
    return out


@torch.no_grad()
def flops_per_sample(model, x: torch.Tensor, samples: int) -> float:
    """Floating-point operations per importance sample, by torch's counter, over one chunk of `samples`."""
    q, prior = posterior(model, x[:1]), model.prior()
    generator = torch.Generator(x.device).manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        importance_log_likelihood(model, x[:1], samples, generator, samples, q=q, prior=prior)
    return counter.get_total_flops() / samples


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the best of `repeats` float32 n x n matrix products: the peak the threads reach."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = math.inf
    for _ in range(repeats + 1):  # the first warms up
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained run folder (default: train one for 3 epochs)")
    parser.add_argument("--images", type=int, default=100, help="test images scored by each (default 100)")
    parser.add_argument("--samples", type=int, default=5000, help="K importance samples (default 5000)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed rounds (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for everything timed (default 1)")
    parser.add_argument("--device", default="cpu", help="where the estimators run (default cpu)")
    parser.add_argument("--compile", action="store_true", help="also time the fast path with compiled chunks")
    parser.add_argument("--loop", action="store_true", help="also time the one-point-per-loop estimator")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    run_dir = trained_run(args.run)
    model = vaelab.load_run(run_dir, device)
    config = model.run_config
    data = make_views(load_dataset(config.data.name, progress=False), config.data, device)
    subset = data.test
    subset = type(subset)(subset.pixels[:args.images], subset.labels[:args.images], subset.resample, subset.binary)
    images = subset.batch(slice(None))

    plan = plan_chunks(args.samples, images.shape[1], decoder_width(model), chunk_memory_mb(None, device))
    flops = flops_per_sample(model, images, plan.samples)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {args.threads} threads, "
          f"torch {torch.__version__}, device {device}")
    print(f"model: {run_dir} ({config.name}, latent {config.model.latent_dim}); {args.images} test images, "
          f"K = {args.samples}; {flops / 1e6:.3f} MFLOP a sample; fast chunks of {plan.points} images x "
          f"{plan.samples} samples ({chunk_memory_mb(None, device):.1f} MB)")
    contenders = ("fast", "plain") + (("compiled",) if args.compile else ()) + (("loop",) if args.loop else ())
    first = type(subset)(subset.pixels[:1], subset.labels[:1], subset.resample, subset.binary)
    if args.compile:  # the first compile, outside the clock
        if args.images < 2:
            parser.error("--compile times N - 1 images against one: give --images 2 or more")
        evaluate_images(model, first, args.samples, threads=args.threads, compile=True)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    estimates: dict[str, tuple[float, float]] = {}
    peaks: list[float] = []
    for round_ in range(args.repeats):
        peaks.append(matmul_peak(device))
        line = [f"round {round_ + 1}: peak {peaks[-1]:6.1f} GFLOP/s"]
        for name in contenders:
            start = time.perf_counter()
            if name == "loop":
                looped = -one_point_per_loop(model, images, args.samples, seed=round_).double()
                result = {"nll": looped.mean().item(), "nll_stderr": looped.std().item() / math.sqrt(len(looped))}
            elif name == "plain":
                with plain_log_probs():
                    result = evaluate_images(model, subset, args.samples, seed=round_, threads=args.threads,
                                             memory_mb=PLAIN_MEMORY_MB if device.type == "cpu" else None)
            else:
                result = evaluate_images(model, subset, args.samples, seed=round_, threads=args.threads,
                                         compile=name == "compiled")
            _sync(device)
            seconds = time.perf_counter() - start
            if name == "compiled":  # less the tracing: the same evaluation of one image (see the docstring)
                start = time.perf_counter()
                evaluate_images(model, first, args.samples, seed=round_, threads=args.threads, compile=True)
                _sync(device)
                seconds = (seconds - (time.perf_counter() - start)) * args.images / (args.images - 1)
            times[name].append(seconds)
            estimates[name] = (result["nll"], result["nll_stderr"])
            line.append(f"{name} {times[name][-1]:7.2f} s (NLL {result['nll']:.3f} \u00b1 {result['nll_stderr']:.3f})")
        print("   ".join(line))
    peak = max(peaks)
    summary = {}
    for name, seconds in times.items():
        if not seconds:
            continue
        rate = args.images / min(seconds)
        gflops = rate * args.samples * flops / 1e9
        summary[name] = {"seconds": seconds, "images_per_s": rate, "gflop_per_s": gflops, "share_of_peak": gflops / peak}
        print(f"{name:6s} {rate:8.2f} images/s at K = {args.samples}  {gflops:7.1f} GFLOP/s  "
              f"{100 * gflops / peak:5.1f} % of the {peak:.1f} GFLOP/s peak   NLL {estimates[name][0]:.3f} "
              f"\u00b1 {estimates[name][1]:.3f}")
    speedup = min(times["plain"]) / min(times["fast"])
    print(f"speedup {speedup:.2f}")
    if args.json:
        result = {"device": str(device), "torch": torch.__version__, "run": str(run_dir), "preset": config.name,
                  "latent_dim": config.model.latent_dim, "images": args.images, "samples": args.samples,
                  "threads": args.threads, "flops_per_sample": flops, "peak_gflop_per_s": peak,
                  "chunk": {"points": plan.points, "samples": plan.samples}, "speedup": speedup,
                  "contenders": summary, "nll": {name: {"nll": nll, "stderr": se} for name, (nll, se) in estimates.items()}}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so the clock times the estimate and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
