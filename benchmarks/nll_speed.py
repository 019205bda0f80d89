"""Importance-sampled NLL: vaelab's batched estimator against a one-point-per-loop estimator.

Both run on the same trained model and the same test images, in one process, alternately,
and must agree (up to Monte-Carlo error). The loop is the pattern common VAE libraries use
(pythae's `get_nll`, for one): for each test image, its K samples in mini-batches of 100,
the image repeated and re-encoded for every mini-batch.

    python benchmarks/nll_speed.py [--run RUN_DIR] [--images 100] [--samples 5000] [--repeats 2]
        [--device cpu|cuda] [--json PATH]

Without --run it trains the default preset for 3 epochs first (about 15 s). The last line
of output is `speedup <ratio>` (loop seconds / batched seconds); --json also writes the
numbers to PATH (for benchmarks/gpu.sh).
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

import vaelab
from vaelab.data import load_dataset
from vaelab.data.views import make_views
from vaelab.distributions import rsample
from vaelab.evaluate import evaluate_images


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained run folder (default: train one for 3 epochs)")
    parser.add_argument("--images", type=int, default=100, help="test images scored by both (default 100)")
    parser.add_argument("--samples", type=int, default=5000, help="K importance samples (default 5000)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating timed rounds (default 2)")
    parser.add_argument("--device", default="cpu", help="where both estimators run (default cpu)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()

    device = torch.device(args.device)
    run_dir = trained_run(args.run)
    model = vaelab.load_run(run_dir, device)
    config = model.run_config
    data = make_views(load_dataset(config.data.name, progress=False), config.data, device)
    subset = data.test
    subset = type(subset)(subset.pixels[:args.images], subset.labels[:args.images], subset.resample, subset.binary)
    images = subset.batch(slice(None))

    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"device {device}")
    print(f"model: {run_dir} ({config.name}, latent {config.model.latent_dim}); "
          f"{args.images} test images, K = {args.samples}")
    loop_times, batched_times = [], []
    for round_ in range(args.repeats):
        start = time.perf_counter()
        looped = one_point_per_loop(model, images, args.samples, seed=round_)
        _sync(device)
        loop_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        batched = evaluate_images(model, subset, args.samples, seed=round_)
        _sync(device)
        batched_times.append(time.perf_counter() - start)
        print(f"round {round_ + 1}: loop {loop_times[-1]:7.2f} s (NLL {-looped.mean():.3f})   "
              f"batched {batched_times[-1]:7.2f} s (NLL {batched['nll']:.3f} \u00b1 {batched['nll_stderr']:.3f})")
    loop_s, batched_s = min(loop_times), min(batched_times)
    print(f"one point per loop: {loop_s:.2f} s = {args.images / loop_s:.1f} images/s")
    print(f"batched:            {batched_s:.2f} s = {args.images / batched_s:.1f} images/s")
    print(f"speedup {loop_s / batched_s:.1f}")
    if args.json:
        result = {"device": str(device), "torch": torch.__version__, "run": str(run_dir), "preset": config.name,
                  "latent_dim": config.model.latent_dim, "images": args.images, "samples": args.samples,
                  "loop_seconds": loop_times, "batched_seconds": batched_times,
                  "loop_images_per_s": args.images / loop_s, "batched_images_per_s": args.images / batched_s,
                  "speedup": loop_s / batched_s, "loop_nll": float(-looped.mean()), "batched_nll": batched["nll"],
                  "batched_nll_stderr": batched["nll_stderr"]}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so the clock times the estimate and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
