"""Race vaelab against pythae: the same network, the same wall-clock budget, one NLL estimator.

Both libraries train Burda et al.'s one-stochastic-layer VAE (encoder 784-200-200 tanh -> a
Gaussian latent of 50 as mean and log-variance, decoder 50-200-200 tanh -> 784 Bernoulli logits)
with the one-sample ELBO and Adam (beta2 0.999, eps 1e-4), for `--minutes` of training each, one
after the other on the same CPU threads (`--threads`). Then vaelab's own importance-sampled NLL
(`vaelab.evaluate.evaluate_images`, the function `vaelab evaluate` calls) scores both models on
the same test images: the first `--test-images` MNIST test images, binarized once with
vaelab's fixed evaluation seed (data.eval_seed = 1234), K = `--eval-k` samples of z per image.

"Each its own natural way" means what a user of each library would write:

- vaelab: `vaelab.train("mnist-burda-vae")`, its preset for this network, with
  train.time_budget = the minutes: batch 500, lr 3e-3 warmed up then a cosine fitted to the
  budget (vaelab stops itself and plans the schedule from its pace), the weights validated, kept
  and scored an exponential moving average. Everything else is vaelab's default: dynamically
  binarized training images, Glorot init with the output bias at the logit of the data mean, the
  step compiled on a CPU (train.compile = "auto"), bfloat16 products where the CPU has them,
  fused Adam, the validation ELBO of the 10,000 held-out images after every epoch, the best
  weights kept. `--vaelab-set KEY=VALUE` adds any other config key (e.g. train.batch_size=100
  and optim.lr=1e-3 race pythae at its own batch and rate).
- pythae: its `VAE` with a custom `BaseEncoder`/`BaseDecoder` of that shape, at `--batch-size`
  and `--lr` (default 100 and 1e-3, the usual choice for this network; pythae's own defaults,
  batch 64 and lr 1e-4, would train slower),
  reconstruction_loss="bce", trained by its `TrainingPipeline` (a `BaseTrainer`) on the training
  images binarized once with a fixed seed (vaelab's `static` view; pythae has no dynamic
  binarization) as float arrays of shape (N, 1, 28, 28), with the same held-out images as its
  eval_data (it keeps the model of the best eval loss). PyTorch's default init, a constant
  learning rate (pythae has no time budget to fit a schedule to), its DataLoader, progress bars
  and console logs, on the CPU (no_cuda). pythae's "bce" loss is `binary_cross_entropy` on
  probabilities, so its decoder ends in a sigmoid; the NLL reads the logits before it.

The budget: vaelab stops itself (train.time_budget). pythae has no time budget, so a
`TrainingCallback` checks the clock after every optimizer step and, once the minutes are spent,
raises a private exception that ends `train()`; the cut epoch is then finished as pythae
finishes an epoch and as vaelab finishes its own cut epoch: pythae's `eval_step` scores it and
its model is kept if its eval loss is the best. Both sides' training seconds run from the start
of their training loop to the end of that last validation (vaelab's summary `train_seconds`),
data preparation excluded; epochs are optimizer steps over steps per epoch, so a cut epoch counts
as the part of it that ran.

Install pythae for this script only (it is no dependency of vaelab), then race:

    pip install -c constraints.txt -r benchmarks/requirements-race.txt
    python benchmarks/race.py --out race-1.json                           # 5 min each, vaelab first
    python benchmarks/race.py --order pythae-first --out race-2.json      # the other order
    python benchmarks/race.py --minutes 0.2 --test-images 200 --eval-k 20 # a smoke run, about 1 min

The goal: pythae's NLL at least 2 nats above vaelab's, and vaelab at least 3x pythae's epochs
per second. Scoring 10,000 images with K = 1,000 (the default; `vaelab evaluate` uses 5,000)
takes a few minutes a side on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

import vaelab
from vaelab.data import load_data
from vaelab.data.views import ImageSet, make_views
from vaelab.evaluate import evaluate_images

try:
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig
    from pythae.trainers.training_callbacks import ProgressBarCallback, TrainingCallback
except ImportError as err:  # the script is useless without it; the message says how to get it
    raise SystemExit(f"benchmarks/race.py needs pythae ({err}): "
                     "pip install -c constraints.txt -r benchmarks/requirements-race.txt") from err

PRESET = "mnist-burda-vae"  # vaelab's own recipe for this network (batch 500, warm-up + cosine, EMA)
PYTHAE_VERSION = importlib.metadata.version("pythae")  # pythae itself has no __version__
LATENT, HIDDEN, IMAGE_SHAPE = 50, (200, 200), (1, 28, 28)
GOAL_NATS, GOAL_SPEEDUP = 2.0, 3.0
EPOCH_CAP = 10_000  # train.epochs: high enough that only the budget ends either side's training
PROGRESS_EVERY = 5.0  # seconds between pythae's progress lines (vaelab prints its own)


# -- the command line

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget of each side (default 5)")
    parser.add_argument("--batch-size", type=int, default=100, help="pythae's batch (vaelab: its preset's)")
    parser.add_argument("--lr", type=float, default=1e-3, help="pythae's Adam lr (vaelab: its preset's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of both sides (default 1)")
    parser.add_argument("--order", choices=["vaelab-first", "pythae-first"], default="vaelab-first")
    parser.add_argument("--seed", type=int, default=0, help="weight init, data order and noise of both sides")
    parser.add_argument("--test-images", type=int, default=10_000, help="the first N MNIST test images")
    parser.add_argument("--eval-k", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--train-subset", type=int, default=0, help="train on the first N images only (smoke runs)")
    parser.add_argument("--val-images", type=int, default=10_000,
                        help="held-out images validated after each epoch (data.val_size; default vaelab's 10,000)")
    parser.add_argument("--vaelab-set", action="append", default=[], metavar="KEY=VALUE",
                        help="another vaelab config override (repeatable), after the race's own")
    parser.add_argument("--workdir", default="runs/race", help="where both sides' run folders go")
    parser.add_argument("--out", help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if not args.minutes > 0:  # vaelab reads a budget of 0 as none: it would train its 10,000 epochs
        parser.error(f"--minutes must be > 0, got {args.minutes:g}")
    for name in ("batch_size", "threads", "test_images", "eval_k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def vaelab_overrides(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides of the mnist-burda-vae preset that make vaelab's side of the race."""
    return [
        f"train.time_budget={args.minutes}", f"train.epochs={EPOCH_CAP}",
        f"train.threads={args.threads}", f"train.seed={args.seed}", f"train.train_subset={args.train_subset}",
        f"data.val_size={args.val_images}", "train.device=cpu",
        "evaluate.samples=0", "figures.names=[]",  # the race scores both sides itself, alike
        *args.vaelab_set,
    ]


# -- pythae's networks and the adapter that gives its model vaelab's API

def tanh_mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with tanh between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(n_in, n_out)] + ([nn.Tanh()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class RaceEncoder(BaseEncoder):
    """x -> hidden tanh layers -> (mean, log-variance) of q(z|x), as pythae's VAE reads them."""

    def __init__(self, n_pixels: int = 784, hidden: Sequence[int] = HIDDEN, latent: int = LATENT) -> None:
        super().__init__()
        # one output layer of 2 * latent, split in two, as vaelab's Gaussian latent is made
        self.net = tanh_mlp([n_pixels, *hidden, 2 * latent])

    def forward(self, x: torch.Tensor) -> ModelOutput:
        mean, log_var = self.net(x.reshape(len(x), -1)).chunk(2, dim=-1)
        return ModelOutput(embedding=mean, log_covariance=log_var)


class RaceDecoder(BaseDecoder):
    """z -> hidden tanh layers -> Bernoulli logits; pythae gets their sigmoid, which its "bce" loss needs."""

    def __init__(self, latent: int = LATENT, hidden: Sequence[int] = HIDDEN,
                 image_shape: Sequence[int] = IMAGE_SHAPE) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = tanh_mlp([latent, *hidden, math.prod(self.image_shape)])

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """(..., n_pixels): the network's output before pythae's sigmoid."""
        return self.net(z)

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=torch.sigmoid(self.logits(z)).reshape(len(z), *self.image_shape))


def pythae_model(seed: int, n_pixels: int = 784, hidden: Sequence[int] = HIDDEN, latent: int = LATENT,
                 image_shape: Sequence[int] = IMAGE_SHAPE) -> VAE:
    """pythae's VAE with the race's networks, its weights drawn from `seed` (PyTorch's default init)."""
    torch.manual_seed(seed)
    config = VAEConfig(input_dim=tuple(image_shape), latent_dim=latent, reconstruction_loss="bce")
    return VAE(config, encoder=RaceEncoder(n_pixels, hidden, latent),
               decoder=RaceDecoder(latent, hidden, image_shape))


class PythaeAdapter:
    """A trained pythae VAE behind vaelab's model API (`prior()`, `posterior(x)`, `likelihood(z)`),
    so that vaelab's NLL estimator scores it exactly as it scores vaelab's own model."""

    def __init__(self, model: VAE) -> None:
        self.model = model.eval()
        self.image_shape = tuple(model.model_config.input_dim)
        self.latent = model.model_config.latent_dim

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for x: (batch, n_pixels): pythae's encoder gives the mean and the log-variance."""
        out = self.model.encoder(x.reshape(len(x), *self.image_shape))
        scale = torch.exp(0.5 * out.log_covariance)  # as pythae's VAE samples z
        return Independent(Normal(out.embedding, scale, validate_args=False), 1, validate_args=False)

    def prior(self) -> Distribution:
        """p(z) = N(0, I), which pythae's VAE KL term assumes."""
        weight = next(self.model.decoder.parameters())
        zeros = torch.zeros(self.latent, device=weight.device, dtype=weight.dtype)
        return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1, validate_args=False)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for z: (..., latent) -> event (n_pixels,).

        Built on the logits, not on the sigmoid pythae trains through: Bernoulli(probs=p) clamps p
        to [1.2e-7, 1 - 1.2e-7] (a pixel's loss capped at 15.9 nats) and float32's sigmoid is 1.0
        exactly above a logit of about 17, so the probabilities would misstate confident pixels.
        """
        logits = self.model.decoder.logits(z.reshape(-1, self.latent))
        logits = logits.reshape(*z.shape[:-1], logits.shape[-1])
        return Independent(Bernoulli(logits=logits, validate_args=False), 1, validate_args=False)


# -- pythae's clock

class _BudgetSpent(Exception):
    """Raised from the callback to end pythae's train() when the budget is spent."""


class BudgetClock(TrainingCallback):
    """Counts pythae's optimizer steps and epochs, prints progress, and stops training at the budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.steps, self.epoch = seconds, 0, 0
        self.best_eval_loss = math.inf
        self.started = self.last_line = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def on_train_begin(self, training_config: BaseTrainerConfig, **kwargs: Any) -> None:
        self.started = self.last_line = time.perf_counter()

    def on_epoch_begin(self, training_config: BaseTrainerConfig, **kwargs: Any) -> None:
        self.epoch = kwargs.get("epoch", self.epoch + 1)

    def on_train_step_end(self, training_config: BaseTrainerConfig, **kwargs: Any) -> None:
        self.steps += 1  # called after each optimizer step, as vaelab checks its budget
        elapsed = self.elapsed()
        if time.perf_counter() - self.last_line >= PROGRESS_EVERY:
            self.last_line = time.perf_counter()
            print(f"pythae: epoch {self.epoch}, {self.steps} steps, {elapsed:.0f} of {self.seconds:.0f} s",
                  flush=True)
        if elapsed >= self.seconds:
            raise _BudgetSpent

    def on_log(self, training_config: BaseTrainerConfig, logs: dict[str, float], **kwargs: Any) -> None:
        # after each whole epoch: the eval loss pythae compared to keep its best model
        self.best_eval_loss = min(self.best_eval_loss, logs.get("eval_epoch_loss", math.inf))


def finish_cut_epoch(trainer: Any, clock: BudgetClock) -> VAE:
    """End the epoch the budget cut as pythae ends an epoch: eval_step, and keep the model if it is
    the best so far; returns the model pythae keeps. Closes the progress bars the epoch left open."""
    loss = trainer.eval_step(clock.epoch)
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressBarCallback):
            callback.on_epoch_end(trainer.training_config)
    # pythae holds the model it keeps as trainer._best_model until train() saves it at its end
    if loss < clock.best_eval_loss or not hasattr(trainer, "_best_model"):
        clock.best_eval_loss = loss
        return copy.deepcopy(trainer.model)
    return trainer._best_model


# -- the two sides

def load_images(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    """vaelab's MNIST: the test and validation images as vaelab scores and validates them (binarized
    once with data.eval_seed), and pythae's training images binarized once (vaelab's static view)."""
    raw = load_data(config.data)
    evaluated = make_views(raw, config.data)
    static = make_views(raw, dataclasses.replace(config.data, binarization="static"), train_subset=args.train_subset)
    n = min(args.test_images, len(evaluated.test))
    test = ImageSet(evaluated.test.pixels[:n], evaluated.test.labels[:n], resample=False, binary=True)
    return {"test": test, "train_images": len(static.train), "pythae_train": as_pythae_array(static.train),
            "pythae_eval": as_pythae_array(evaluated.val)}


def as_pythae_array(images: ImageSet) -> np.ndarray:
    """(N, 1, 28, 28) float32 in {0, 1}: the array pythae's pipeline takes (its MNIST examples' form)."""
    return images.batch(slice(None)).numpy().reshape(-1, *IMAGE_SHAPE)


def train_vaelab(args: argparse.Namespace, train_images: int, work: Path) -> tuple[dict[str, Any], Any]:
    """vaelab's side: one `vaelab.train` call; its run summary gives the steps and training seconds."""
    overrides = vaelab_overrides(args)
    print(f"\n== vaelab: {PRESET} " + " ".join(f"--set {o}" for o in overrides), flush=True)
    load_before = os.getloadavg()[0]
    run = vaelab.train(PRESET, overrides=overrides, out=work / "vaelab")
    summary = run.summary
    steps_per_epoch = math.ceil(train_images / run.config.train.batch_size)  # its last batch is a short one too
    side = {
        "steps": summary["steps"], "steps_per_epoch": steps_per_epoch,
        "epochs": summary["steps"] / steps_per_epoch, "epochs_run": summary["epochs_run"],
        "train_seconds": summary["train_seconds"], "stop_reason": summary["stop_reason"],
        "weights": summary["weights"], "network_precision": summary["network_precision"],
        "load_average": [load_before, os.getloadavg()[0]], "run_dir": str(run.path),
    }
    return side, run.model


def train_pythae(args: argparse.Namespace, images: dict[str, Any], config: Any, work: Path
                 ) -> tuple[dict[str, Any], VAE]:
    """pythae's side: its TrainingPipeline with the same Adam, stopped by the clock at the budget."""
    optim = config.optim
    training = BaseTrainerConfig(
        output_dir=str(work / "pythae"), num_epochs=EPOCH_CAP, seed=args.seed, no_cuda=True,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        optimizer_cls="Adam", learning_rate=args.lr,
        optimizer_params={"betas": (0.9, optim.beta2), "eps": optim.eps, "weight_decay": optim.weight_decay})
    print(f"\n== pythae {PYTHAE_VERSION}: VAE(bce), Adam lr {args.lr:g} eps {optim.eps:g}, "
          f"batch {args.batch_size}, {args.minutes:g} min", flush=True)
    pipeline = TrainingPipeline(model=pythae_model(args.seed), training_config=training)
    clock = BudgetClock(args.minutes * 60)
    load_before = os.getloadavg()[0]
    try:
        pipeline(train_data=images["pythae_train"], eval_data=images["pythae_eval"], callbacks=[clock])
        model = pipeline.trainer._best_model  # every epoch ran before the budget: what pythae kept
    except _BudgetSpent:
        model = finish_cut_epoch(pipeline.trainer, clock)
    seconds = clock.elapsed()
    steps_per_epoch = len(pipeline.trainer.train_loader)
    print(f"pythae: stopped after {clock.steps} steps, {seconds:.1f} s of training", flush=True)
    side = {
        "steps": clock.steps, "steps_per_epoch": steps_per_epoch, "epochs": clock.steps / steps_per_epoch,
        "epochs_run": clock.epoch, "train_seconds": seconds,
        "stop_reason": f"time budget of {args.minutes:g} min spent", "weights": "best eval loss",
        "network_precision": "float32", "load_average": [load_before, os.getloadavg()[0]],
        "run_dir": str(pipeline.trainer.training_dir),
    }
    return side, model


# -- scoring and the result

def score(name: str, model: Any, test: ImageSet, args: argparse.Namespace) -> dict[str, Any]:
    """vaelab's importance-sampled NLL of the test images, with the same seed for both sides."""
    print(f"\n== scoring {name}: {len(test)} test images, K = {args.eval_k}", flush=True)
    started = time.perf_counter()
    result = evaluate_images(model, test, k=args.eval_k, seed=0, progress=True, threads=args.threads)
    keep = ("nll", "nll_stderr", "elbo", "reconstruction", "kl", "active_units", "k", "n")
    return {key: result[key] for key in keep} | {"eval_seconds": time.perf_counter() - started}


def compare(sides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The differences the goal is stated in, and whether each is met."""
    ours, theirs = sides["vaelab"], sides["pythae"]
    for side in sides.values():
        side["epochs_per_second"] = side["epochs"] / side["train_seconds"]
    nats = theirs["nll"] - ours["nll"]
    speedup = ours["epochs_per_second"] / theirs["epochs_per_second"]
    return {
        "nll_pythae_minus_vaelab": nats,
        # the two estimates share their images, so their errors are positively correlated and
        # this (the unpaired error of a difference) is an upper bound on the true one
        "nll_difference_stderr": math.hypot(ours["nll_stderr"], theirs["nll_stderr"]),
        "epochs_per_second_ratio": speedup,
        "goal": {"nats": GOAL_NATS, "speedup": GOAL_SPEEDUP,
                 "nats_met": nats >= GOAL_NATS, "speedup_met": speedup >= GOAL_SPEEDUP},
    }


def table(sides: dict[str, dict[str, Any]], difference: dict[str, Any]) -> str:
    """The result as the lines the script prints."""
    k = sides["vaelab"]["k"]
    lines = [f"{'side':8} {'epochs':>8} {'train s':>8} {'epochs/s':>9} {f'test NLL (K={k})':>18} "
             f"{'test ELBO':>10} {'load avg':>11}"]
    for name, s in sides.items():
        lines.append(f"{name:8} {s['epochs']:8.2f} {s['train_seconds']:8.1f} {s['epochs_per_second']:9.4f} "
                     f"{s['nll']:10.2f} \u00b1 {s['nll_stderr']:5.2f} {s['elbo']:10.2f} "
                     f"{s['load_average'][0]:5.2f}-{s['load_average'][1]:<5.2f}")
    met = {True: "met", False: "not met"}
    goal = difference["goal"]
    lines += [
        f"NLL(pythae) - NLL(vaelab): {difference['nll_pythae_minus_vaelab']:.2f} nats "
        f"(\u00b1 {difference['nll_difference_stderr']:.2f} at most); goal >= {GOAL_NATS:g}: {met[goal['nats_met']]}",
        f"epochs/s vaelab / pythae: {difference['epochs_per_second_ratio']:.2f}x; "
        f"goal >= {GOAL_SPEEDUP:g}x: {met[goal['speedup_met']]}",
    ]
    return "\n".join(lines)


def settings(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    """What the race ran with and where, for the JSON."""
    return {
        "minutes": args.minutes, "pythae_batch_size": args.batch_size, "pythae_lr": args.lr,
        "vaelab_batch_size": config.train.batch_size, "vaelab_lr": config.optim.lr, "adam_eps": config.optim.eps,
        "adam_beta2": config.optim.beta2, "threads": args.threads, "order": args.order, "seed": args.seed,
        "test_images": args.test_images, "eval_k": args.eval_k, "train_subset": args.train_subset,
        "val_images": args.val_images, "vaelab_overrides": vaelab_overrides(args),
        "vaelab": vaelab.__version__, "pythae": PYTHAE_VERSION, "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "test_binarization_seed": config.data.eval_seed,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)  # pythae computes with torch's count; vaelab pins the same one
    config = vaelab.make_config(PRESET, overrides=vaelab_overrides(args))
    work = Path(args.workdir) / time.strftime("%Y%m%d-%H%M%S")
    images = load_images(args, config)
    order = ["vaelab", "pythae"] if args.order == "vaelab-first" else ["pythae", "vaelab"]
    runs = {"vaelab": lambda: train_vaelab(args, images["train_images"], work),
            "pythae": lambda: train_pythae(args, images, config, work)}
    trained = {name: runs[name]() for name in order}
    sides = {}
    for name in ("vaelab", "pythae"):  # scored after both trained, so neither score slows a race
        side, model = trained[name]
        model = PythaeAdapter(model) if name == "pythae" else model
        sides[name] = side | score(name, model, images["test"], args)
    difference = compare(sides)
    print("\n" + table(sides, difference), flush=True)
    result = {"settings": settings(args, config), "sides": sides, "difference": difference}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
