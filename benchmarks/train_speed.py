"""Training speed: vaelab against the canonical PyTorch example VAE, alternately, in one run.

The example is written out here as it is usually run: 784-400-20-400-784 with ReLU,
sigmoid output scored by BCE with reduction='sum', Adam 1e-3, batch 128, fed by a
DataLoader (shuffle=True) over an in-memory TensorDataset of the 60,000 training images.
vaelab trains the same architecture and batch with its own loop (data on the device,
binarized there, no DataLoader, metrics read once an epoch), configured as a long run: on a
CPU that compiles its step (train.compile = "auto"), so the script times it eagerly too, and
prints what the compile cost, paid once before the timed epochs.

    python benchmarks/train_speed.py [--epochs 2] [--rounds 2] [--device cpu|cuda] [--compile]
        [--compile-mode default|reduce-overhead|max-autotune] [--eager] [--images N] [--json PATH]

It prints seconds per epoch for each, vaelab's achieved GFLOP/s against a matrix-product
rate measured in the same run, and last `speedup <ratio>` (example s/epoch / vaelab s/epoch,
vaelab as its defaults run it). --json also writes those numbers to PATH, for
benchmarks/gpu.sh; --images times epochs over the first N training images only (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vaelab.config import resolve_config
from vaelab.data import load_dataset
from vaelab.data.views import make_views
from vaelab.runs import RunFolder
from vaelab.training import Trainer
from vaelab.training.compiled import COMPILE_MODES

HIDDEN, LATENT, BATCH = 400, 20, 128


class ExampleVAE(nn.Module):
    """The PyTorch example's model."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, HIDDEN), nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)
        self.fc3, self.fc4 = nn.Linear(LATENT, HIDDEN), nn.Linear(HIDDEN, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def example_epoch(model: ExampleVAE, optimizer: torch.optim.Optimizer, loader: DataLoader,
                  device: torch.device) -> float:
    """One epoch of the example's training loop; returns its mean loss (nats per image)."""
    model.train()
    total = 0.0
    for (data,) in loader:
        data = data.to(device)
        optimizer.zero_grad()
        recon, mu, logvar = model(data)
        bce = F.binary_cross_entropy(recon, data.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = bce + kld
        loss.backward()
        total += loss.item()
        optimizer.step()
    return total / len(loader.dataset)


def flops_per_epoch(n: int) -> float:
    """Multiply-adds x 2 of one epoch: forward, and backward without the input's gradient."""
    layers = [(784, HIDDEN), (HIDDEN, 2 * LATENT), (LATENT, HIDDEN), (HIDDEN, 784)]
    forward = sum(2 * a * b for a, b in layers)
    backward = 2 * forward - 2 * 784 * HIDDEN  # weight grads everywhere, input grads but for x
    return n * (forward + backward)


def matmul_rate(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a float32 square matrix product on `device`."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    (a @ b).sum().item()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        c = a @ b
    _sync(device)
    c.sum().item()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per round and contender")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true",
                        help="vaelab with train.compile = true (on a GPU; a CPU compiles long runs by default)")
    parser.add_argument("--compile-mode", default="default", choices=COMPILE_MODES,
                        help="train.compile_mode of a compiled step (reduce-overhead: CUDA graphs)")
    parser.add_argument("--eager", action="store_true",
                        help="vaelab with train.compile = false only (a CPU would otherwise compile, costing seconds)")
    parser.add_argument("--images", type=int, default=0,
                        help="time epochs over the first N training images (default 0: all 60,000)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    if args.compile and args.eager:
        parser.error("--compile and --eager exclude each other")
    device = torch.device(args.device)

    raw = load_dataset("mnist", progress=False)
    images = torch.from_numpy(raw.x_train).float().div(255).reshape(-1, 784)
    if args.images:  # vaelab's trainers take the same first N (train.train_subset)
        images = images[:args.images]
    loader = DataLoader(TensorDataset(images), batch_size=BATCH, shuffle=True)
    torch.manual_seed(0)
    example = ExampleVAE().to(device)
    example_opt = torch.optim.Adam(example.parameters(), lr=1e-3)

    compile_setting = True if args.compile else False if args.eager else "auto"
    trainers = {"vaelab": _trainer(raw, args, "auto", compile_setting)}  # the default path
    if trainers["vaelab"].step.compiled is not None:  # compiled: show the eager step beside it
        trainers["vaelab eager"] = _trainer(raw, args, "auto", False)
    if trainers["vaelab"].network_dtype is not None:  # mixed precision: show float32 beside it
        trainers["vaelab float32"] = _trainer(raw, args, "float32", compile_setting)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"device {device}, {torch.get_num_threads()} CPU threads")
    for name, trainer in trainers.items():
        print(f"{name}: network products in {trainer.network_dtype or torch.float32}, "
              f"{'compiled' if trainer.step.compiled is not None else 'eager'} step")
    rate = matmul_rate(device)
    print(f"float32 matrix product: {rate:.0f} GFLOP/s")
    example_epoch(example, example_opt, loader, device)  # warm-up, all
    compile_notes: dict[str, dict] = {}
    for name, trainer in trainers.items():
        seconds, _ = _timed_epoch(trainer)
        status = trainer.step.compile_status()
        compile_notes[name] = status
        if "compile_seconds" in status:
            print(f"{name}: warm-up epoch {seconds:.1f} s, of which compiling {status['compile_seconds']:.1f} s")
        elif "compile_error" in status:
            print(f"{name}: could not compile ({status['compile_error']}), timed eager")
    times: dict[str, list[float]] = {"example": [], **{name: [] for name in trainers}}
    elbo: dict[str, float] = {}
    for round_ in range(args.rounds):
        for _ in range(args.epochs):
            start = time.perf_counter()
            loss = example_epoch(example, example_opt, loader, device)
            _sync(device)
            times["example"].append(time.perf_counter() - start)
        for name, trainer in trainers.items():
            for _ in range(args.epochs):
                seconds, elbo[name] = _timed_epoch(trainer)
                times[name].append(seconds)
        line = ", ".join(f"{name} {sum(t[-args.epochs:]) / args.epochs:.3f}" for name, t in times.items())
        print(f"round {round_ + 1} (s/epoch): {line}; example loss {loss:.1f} (BCE on grey pixels), "
              + ", ".join(f"{name} train ELBO {value:.1f}" for name, value in elbo.items()))
    work = flops_per_epoch(len(trainers["vaelab"].data.train))
    best = {name: min(t) for name, t in times.items()}
    for name, seconds in best.items():
        gflops = work / seconds / 1e9
        print(f"{name + ':':16s}{seconds:.3f} s/epoch, {gflops:.0f} GFLOP/s ({gflops / rate:.0%} of the float32 "
              f"matrix-product rate), {best['example'] / seconds:.2f}x the example")
    example_s, vaelab_s = best["example"], best["vaelab"]
    print(f"speedup {example_s / vaelab_s:.2f}")
    if args.json:
        result = {
            "device": str(device), "torch": torch.__version__, "machine": platform.machine(),
            "cpu_threads": torch.get_num_threads(), "epochs": args.epochs, "rounds": args.rounds,
            "train_images": len(images), "batch_size": BATCH, "compile_mode": args.compile_mode,
            "matmul_gflops": rate, "seconds_per_epoch": best, "all_seconds": times,
            "speedup_over_example": {name: best["example"] / seconds for name, seconds in best.items()},
            "speedup": example_s / vaelab_s, "train_elbo": elbo, "example_loss": loss,
            "contenders": {name: {"compiled": trainer.step.compiled is not None,
                                  "network_dtype": str(trainer.network_dtype or torch.float32),
                                  **compile_notes.get(name, {})} for name, trainer in trainers.items()},
        }
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")


def _trainer(raw, args: argparse.Namespace, precision: str, compile_setting: bool | str) -> Trainer:
    """vaelab on the example's architecture and batch (no validation split to speak of), a long run."""
    overrides = [f"model.encoder_hidden=[{HIDDEN}]", f"model.decoder_hidden=[{HIDDEN}]",
                 f"model.latent_dim={LATENT}", f"train.batch_size={BATCH}", "data.val_size=1",
                 f"train.epochs={10**6}", f"train.device={args.device}", f"train.precision={precision}",
                 f"train.compile={json.dumps(compile_setting)}", f"train.compile_mode={json.dumps(args.compile_mode)}",
                 f"train.train_subset={args.images}"]
    config = resolve_config("mnist-lab", overrides=overrides)
    run_dir = Path(tempfile.mkdtemp(prefix="vaelab-speed-")) / "run"
    RunFolder(run_dir).create(config)
    data = make_views(raw, config.data, torch.device(args.device), config.train.train_subset)
    return Trainer(config, run_dir, data, progress=False, log=lambda *a: None)


def _timed_epoch(trainer: Trainer) -> tuple[float, float]:
    """Seconds of one training epoch of vaelab's loop (without its validation pass), and its train ELBO."""
    start = time.perf_counter()
    trainer.train_epoch()
    _sync(trainer.device)
    seconds = time.perf_counter() - start
    elbo = trainer.sums[0].item() / len(trainer.data.train)
    trainer.restart_epoch()
    return seconds, elbo


if __name__ == "__main__":
    main()
