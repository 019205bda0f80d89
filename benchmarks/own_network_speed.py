"""Your own networks as fast as vaelab's: examples/resnet_conv.py against the images-64 preset's conv nets.

All train the `images-64` preset (64x64 colour, latent 64, discretized logistic, batch 64, Adam) on
the same generated images (tests/shapes.py), in one process, the order reversed every round:
vaelab's built-in conv encoder/decoder (conv_channels 32-64-128-256); the same two networks given
by reference as a user's own (model.encoder/model.decoder = FILE.py:CLASS: what the path itself
costs); and the residual networks of examples/resnet_conv.py, whose default width makes their
multiply-adds about the same as the built-in ones.

    python benchmarks/own_network_speed.py [--n 1200] [--rounds 3] [--epochs 1] [--width 22]
        [--compile auto|true|false] [--precision auto float32 ...] [--threads N]

It prints each network's multiply-adds per image (torch's FLOP counter: convolutions and linear
layers; the elementwise work around them is not counted) and parameters, the path each trains on
(network precision, compiled or eager), the wall and CPU seconds of each epoch, the epochs per
second (the best epoch of each) and their ratios to the built-in nets, by wall time and by CPU time
(the process's, which other jobs on a shared machine disturb less). The load average is printed
before, after and each round.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from shapes import draw_shapes  # noqa: E402

from vaelab.config import resolve_config  # noqa: E402
from vaelab.data import load_images  # noqa: E402
from vaelab.data.load import image_options  # noqa: E402
from vaelab.data.views import make_views  # noqa: E402
from vaelab.nets import ConvDecoder, ConvEncoder, count_parameters  # noqa: E402
from vaelab.pipeline import fit_to_images  # noqa: E402
from vaelab.runs import RunFolder  # noqa: E402
from vaelab.training import Trainer  # noqa: E402

EXAMPLE = ROOT / "examples" / "resnet_conv.py"
CHANNELS = [32, 64, 128, 256]  # the images-64 preset's model.conv_channels


class BuiltinAsOwnEncoder(nn.Module):
    """vaelab's own conv encoder of the preset, given as a network of your own (images (batch, C, H, W) in)."""

    def __init__(self, image_shape: tuple[int, int, int], out_features: int) -> None:
        super().__init__()
        self.net = ConvEncoder(image_shape, CHANNELS, out_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images.flatten(1))


class BuiltinAsOwnDecoder(nn.Module):
    """vaelab's own conv decoder of the preset, given as a network of your own."""

    def __init__(self, image_shape: tuple[int, int, int], in_features: int, params_per_pixel: int) -> None:
        super().__init__()
        self.net = ConvDecoder(in_features, image_shape, CHANNELS, params_per_pixel)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def own(encoder: str, decoder: str) -> list[str]:
    return [f"model.encoder={json.dumps(encoder)}", f"model.decoder={json.dumps(decoder)}"]


def contenders(width: int) -> dict[str, list[str]]:
    """name -> the overrides that make it, over the images-64 preset: the built-in conv nets; the same
    networks given by reference as a user's (what the path itself costs); the residual example."""
    here = Path(__file__).resolve()
    return {
        "built-in conv": [],
        "built-in conv as own": own(f"{here}:BuiltinAsOwnEncoder", f"{here}:BuiltinAsOwnDecoder"),
        f"resnet_conv.py (width {width})": own(f"{EXAMPLE}:ResNetEncoder", f"{EXAMPLE}:ResNetDecoder")
        + [f"model.args.width={width}"],
    }


def make_trainer(images, labels, overrides: list[str], tmp: Path) -> Trainer:
    """A Trainer of the images-64 preset over the images, as `vaelab train` would build it (a long run)."""
    config = resolve_config("images-64", overrides=overrides)
    raw = load_images((images, labels), **image_options(config.data))
    config = fit_to_images(config, raw, str(tmp), log=lambda *a: None)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=tmp))
    RunFolder(run_dir / "run").create(config)
    data = make_views(raw, config.data, torch.device("cpu"), config.train.train_subset)
    return Trainer(config, run_dir / "run", data, progress=False, log=lambda *a: None)


def forward_macs(trainer: Trainer) -> tuple[float, float]:
    """Multiply-adds per image of the encoder and of the decoder, one forward pass each."""
    model, x = trainer.model, trainer.data.train.pixels[:2].float()
    counts = []
    with torch.no_grad():
        for net, inputs in ((model.encoder, x), (model.decoder, torch.zeros(2, model.latent.size))):
            with FlopCounterMode(display=False) as counter:
                net(inputs)
            counts.append(counter.get_total_flops() / 2 / 2)
    return counts[0], counts[1]


def timed_epoch(trainer: Trainer) -> tuple[float, float, float]:
    """Wall seconds and CPU seconds (this process's, all its threads) of one training epoch (no validation
    pass), and its train ELBO per image. On a machine others share, CPU time counts this run's work, wall
    time also the waits for a core."""
    start, start_cpu = time.perf_counter(), time.process_time()
    trainer.train_epoch()
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    elbo = trainer.sums[0].item() / len(trainer.data.train)
    trainer.restart_epoch()
    return seconds, cpu, elbo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1200, help="generated images (80 %% train)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per round and contender")
    parser.add_argument("--width", type=int, default=22, help="the residual networks' width (model.args.width)")
    parser.add_argument("--compile", default="auto", choices=["auto", "true", "false"], help="train.compile")
    parser.add_argument("--precision", nargs="+", default=["auto"], choices=["auto", "float32", "bfloat16"],
                        help="train.precision; several: each contender at each, all alternating")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")
    images, labels = draw_shapes(args.n, size=(64, 64), seed=0)
    compile_value = args.compile if args.compile == "auto" else args.compile == "true"
    with tempfile.TemporaryDirectory(prefix="vaelab-own-net-") as tmp:
        os.environ["XDG_CACHE_HOME"] = tmp  # the images' cache stays out of the user's
        trainers = {}
        for precision in args.precision:
            common = [f"train.compile={json.dumps(compile_value)}", f"train.precision={json.dumps(precision)}"]
            suffix = f" [{precision}]" if len(args.precision) > 1 else ""
            for name, extra in contenders(args.width).items():
                trainers[name + suffix] = make_trainer(images, labels, common + extra, Path(tmp))
        for name, trainer in trainers.items():
            encoder, decoder = forward_macs(trainer)
            print(f"{name}: {encoder / 1e6:.1f} M + {decoder / 1e6:.1f} M = {(encoder + decoder) / 1e6:.1f} M "
                  f"multiply-adds per image forward (encoder + decoder), "
                  f"{count_parameters(trainer.model):,} parameters; network products in "
                  f"{trainer.precision_name}, {'compiled' if trainer.step.compiled is not None else 'eager'} step; "
                  f"{len(trainer.data.train)} training images, batch {trainer.config.train.batch_size}")
        for name, trainer in trainers.items():  # warm-up: first calls, compiling if it compiles
            seconds, _, _ = timed_epoch(trainer)
            print(f"{name}: warm-up epoch {seconds:.2f} s {json.dumps(trainer.step.compile_status())}")
        times: dict[str, list[float]] = {name: [] for name in trainers}
        cpu_times: dict[str, list[float]] = {name: [] for name in trainers}
        for round_ in range(args.rounds):
            order = list(trainers) if round_ % 2 == 0 else list(trainers)[::-1]  # alternating
            line = []
            for name in order:
                for _ in range(args.epochs):
                    seconds, cpu, elbo = timed_epoch(trainers[name])
                    times[name].append(seconds)
                    cpu_times[name].append(cpu)
                line.append(f"{name} {seconds:.2f} s, CPU {cpu:.2f} s (train ELBO {elbo:.0f})")
            print(f"round {round_ + 1}: " + "; ".join(line) + f"; load {os.getloadavg()[0]:.2f}")
        for name in trainers:
            print(f"{name}: {1 / min(times[name]):.3f} epochs/s (best epoch {min(times[name]):.2f} s; all "
                  f"{', '.join(f'{t:.2f}' for t in times[name])}); CPU s an epoch: best {min(cpu_times[name]):.2f}, "
                  f"median {sorted(cpu_times[name])[len(cpu_times[name]) // 2]:.2f}")
        for name in trainers:
            builtin = "built-in conv" + name.partition(" [")[1] + name.partition(" [")[2]  # at the same precision
            if name != builtin:
                wall, cpu = (min(t[builtin]) / min(t[name]) for t in (times, cpu_times))
                print(f"ratio {name} / {builtin}, epochs per second: {wall:.3f} (wall, best epochs), "
                      f"{cpu:.3f} (CPU, best)")
    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
