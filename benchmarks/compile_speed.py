"""The training step eager against compiled (train.compile), per preset, alternately in one process.

    python benchmarks/compile_speed.py [--presets mnist-lab mnist-iwae] [--rounds 6] [--steps 100]

For each preset it builds two trainers on real MNIST (the same seed; `train.compile` false and
true), prints what compiling cost, then times blocks of steps of each in turn and prints the
milliseconds per step (median over the rounds) and the median of the per-round ratios. Ends
with `speedup <preset> <ratio>` lines.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vaelab.config import resolve_config
from vaelab.data import load_dataset
from vaelab.data.views import make_views
from vaelab.device import resolve_device
from vaelab.runs import RunFolder
from vaelab.training import Trainer


def _trainer(raw, preset: str, compiled: bool, extra: list[str]) -> Trainer:
    overrides = ["data.val_size=1", "train.epochs=1000", f"train.compile={str(compiled).lower()}", *extra]
    config = resolve_config(preset, overrides=overrides)
    run_dir = Path(tempfile.mkdtemp(prefix="vaelab-compile-")) / "run"
    RunFolder(run_dir).create(config)
    data = make_views(raw, config.data, resolve_device(config.train.device))
    return Trainer(config, run_dir, data, progress=False, log=lambda *a: None)


def _stepper(trainer: Trainer):
    images = trainer._epoch_images()
    batch = trainer.config.train.batch_size
    full = len(images) // batch

    def steps(start: int, n: int) -> float:
        began = time.perf_counter()
        for i in range(start, start + n):
            j = i % full
            trainer.step(images.batch(slice(j * batch, (j + 1) * batch)), None, batch)
            trainer.state.global_step += 1
        return (time.perf_counter() - began) / n * 1e3

    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["mnist-lab", "mnist-iwae"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=100, help="steps per timed block")
    parser.add_argument("--set", action="append", default=[], help="override for every preset, key=value")
    args = parser.parse_args()
    raw = load_dataset("mnist", progress=False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    results = {}
    for preset in args.presets:
        eager, compiled = (_trainer(raw, preset, c, args.set) for c in (False, True))
        run = {"eager": _stepper(eager), "compiled": _stepper(compiled)}
        run["eager"](0, 5)
        start = time.perf_counter()
        run["compiled"](0, 5)
        status = compiled.step.compile_status()
        failed = f"; could not compile: {status['compile_error']}" if "compile_error" in status else ""
        print(f"{preset}: first 5 compiled steps {time.perf_counter() - start:.1f} s "
              f"(compiling {status.get('compile_seconds', 0):.1f} s){failed}")
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for r in range(args.rounds):
            for name, steps in run.items():
                times[name].append(steps(5 + r * args.steps, args.steps))
        ratio = statistics.median(e / c for e, c in zip(times["eager"], times["compiled"]))
        print(f"{preset}: eager {statistics.median(times['eager']):.2f} ms/step, compiled "
              f"{statistics.median(times['compiled']):.2f} ms/step (batch {eager.config.train.batch_size})")
        results[preset] = ratio
    for preset, ratio in results.items():
        print(f"speedup {preset} {ratio:.2f}")


if __name__ == "__main__":
    main()
