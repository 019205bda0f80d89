"""Sharing the CPU: vaelab's training speed while other processes hold cores, in one run.

(a) One core kept busy by a busy-loop process (not pinned): vaelab with train.threads = "auto"
    against 1 thread and 2 threads pinned. Goal: auto at >= 90 % of the one-thread speed.
(b) Two vaelab trainings at once, each against its speed alone (both "auto"); beside it the
    same pair with 2 threads pinned each, as torch's default would run them. Goal: >= 40 %.

Each training is its own process (a fresh thread pool), training the default model (mnist-lab:
784-512-2, batch 128, eager steps, the default precision) on generated MNIST-shaped images, for
--seconds after one warm-up epoch, through Trainer.train_epoch (so the thread adapter ticks as
in a run). Each round measures every contender, in alternating order, and gives its own ratios
(the contenders of a round ran minutes apart at most, under about the same load from other
jobs); the median round's ratio is the result. The load average is printed with each.

    python benchmarks/shared_cpu.py [--seconds 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np

IMAGES = 3_200  # 25 steps of 128 an epoch: the clock is read at epoch ends, even when steps crawl


def generated_images(n: int, seed: int = 0) -> SimpleNamespace:
    """MNIST-shaped uint8 images: a stroke prototype per label plus noise (no download)."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((10, 28, 28)) > 0.8) * 230

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, count).astype(np.uint8)
        pixels = np.clip(prototypes[labels] + rng.integers(0, 25, (count, 28, 28)), 0, 255).astype(np.uint8)
        return pixels, labels

    (x_train, y_train), (x_test, y_test) = draw(n), draw(1000)
    return SimpleNamespace(name="generated", source="generated", x_train=x_train, y_train=y_train,
                           x_test=x_test, y_test=y_test)


def worker(threads: str, seconds: float) -> None:
    """Train for `seconds` after a warm-up epoch; print steps a second and the thread count as JSON."""
    import torch

    from vaelab.config import resolve_config
    from vaelab.data.views import make_views
    from vaelab.training import Trainer

    config = resolve_config(overrides=[f"train.threads={threads}", "train.compile=false", "data.val_size=1000",
                                       "train.epochs=1000"])
    data = make_views(generated_images(IMAGES + 1000), config.data)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, f"{folder}/run", data, progress=False, log=lambda *a: None)
        with trainer.threads.active():
            trainer.train_epoch()
            trainer.restart_epoch()
            counts, steps, started = [], 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                trainer.train_epoch()
                steps += trainer.state.step_in_epoch
                counts.append(torch.get_num_threads())
                trainer.restart_epoch()
            elapsed = time.perf_counter() - started
    print(json.dumps({"steps_per_s": steps / elapsed, "threads": sorted(set(counts)),
                      "decisions": trainer.threads.decisions}))


def spawn(threads: str, seconds: float) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # the worker's own train.threads decides
    return subprocess.Popen([sys.executable, __file__, "--worker", threads, "--seconds", str(seconds)],
                            stdout=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a worker failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def one_core_busy(seconds: float, order: tuple[str, ...]) -> dict[str, dict]:
    """(a): each thread setting alone beside a busy loop."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # let the busy loop show in /proc/stat
        return {threads: result(spawn(threads, seconds)) for threads in order}
    finally:
        busy.kill()
        busy.wait()


def two_at_once(threads: str, seconds: float) -> list[dict]:
    """(b): two trainings started together."""
    procs = [spawn(threads, seconds), spawn(threads, seconds)]
    return [result(p) for p in procs]


def alone_and_together(seconds: float, flip: bool) -> tuple[dict, list[dict]]:
    """(b): one training alone and two started together (the pair first when `flip`)."""
    def alone() -> dict:
        solo = result(spawn("auto", seconds))
        print(f"  alone (auto): {solo['steps_per_s']:.0f} steps/s, threads {solo['threads']}; {load()}", flush=True)
        return solo

    def together() -> list[dict]:
        pair = two_at_once("auto", seconds)
        print("  two at once (auto): " + ", ".join(f"{p['steps_per_s']:.0f}" for p in pair) + " steps/s, threads "
              + ", ".join(str(p["threads"]) for p in pair) + f"; {load()}", flush=True)
        return pair

    if flip:
        pair = together()
        return alone(), pair
    return alone(), together()


def run_round(seconds: float, flip: bool) -> dict[str, float]:
    """One round of (a) and (b), giving its ratios; `flip` reverses the order of the contenders."""
    busy = one_core_busy(seconds, ("2", "1", "auto") if flip else ("auto", "1", "2"))
    print("  one core busy: " + ", ".join(f"{k}: {v['steps_per_s']:.0f} steps/s (threads {v['threads']})"
                                          for k, v in busy.items()) + f"; {load()}", flush=True)
    solo, pair = alone_and_together(seconds, flip)
    pinned = two_at_once("2", seconds)  # as torch's default runs two trainings on two cores
    print("  two at once (2 threads pinned): " + ", ".join(f"{p['steps_per_s']:.0f}" for p in pinned)
          + f" steps/s; {load()}", flush=True)
    one, alone = busy["1"]["steps_per_s"], solo["steps_per_s"]
    ratios = {"auto/1": busy["auto"]["steps_per_s"] / one, "2/1": busy["2"]["steps_per_s"] / one,
              "pair/solo": min(p["steps_per_s"] for p in pair) / alone,
              "pinned/solo": min(p["steps_per_s"] for p in pinned) / alone}
    print("  ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="timed training per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.seconds)
    print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; {load()}", flush=True)
    rounds = []
    for i in range(args.rounds):
        print(f"round {i + 1}", flush=True)
        rounds.append(run_round(args.seconds, flip=i % 2 == 1))
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(f"(a) one core busy: auto / 1 thread = {median['auto/1']:.2f} (goal >= 0.90); "
          f"2 threads / 1 thread = {median['2/1']:.2f}")
    print(f"(b) two at once, the slower / alone: auto {median['pair/solo']:.2f} (goal >= 0.40); "
          f"2 threads pinned {median['pinned/solo']:.2f}")
    print(f"median of {len(rounds)} rounds; {load()}")


if __name__ == "__main__":
    main()
