"""Sharing the CPU: vaelab's training speed while other processes hold cores, in one run.

(a) One core kept busy by a busy-loop process (not pinned): vaelab with the default
    train.threads = "start" and with "auto", against 1 thread and 2 threads pinned.
    Goal: the default at >= 90 % of the one-thread speed.
(b) Two vaelab trainings started together, the slower of the two against one training alone with
    the same setting: the default ("start"), "auto", and 2 threads pinned each (as torch's own
    count runs them). Goal: the default's pair each >= 40 % of alone.
(c) A late neighbour: a training with 2 threads (what the default takes when it starts alone on an
    idle machine; pinned, so that outside load does not change the case), and a default training
    started once the first is timing; the first's speed while the second is timed, against 2
    threads alone (no goal: a default run keeps its count, see vaelab.threads).
(d) With --omp VAR=VALUE: whether OpenMP threads that spin less when idle would help (torch's CPU
    build uses GNU OpenMP, which reads OMP_WAIT_POLICY=PASSIVE or GOMP_SPINCOUNT=N from the
    environment when torch loads it): (c) with both trainings under VAR=VALUE, and 2 threads alone
    under it, against (c) and 2 threads alone as torch runs them.

Each training is its own process (a fresh thread pool), training the default model (mnist-lab:
784-512-2, batch 128, eager steps, the default precision) on generated MNIST-shaped images, for
--seconds after one warm-up epoch, through Trainer.train_epoch (so the thread adapter decides
and ticks as in a run). Each round measures every contender, in alternating order, and gives its
own ratios (the contenders of a round ran minutes apart at most, under about the same load from
other jobs); the median round's ratio is the result. The load average is printed with each.

    python benchmarks/shared_cpu.py [--seconds 6] [--rounds 3] [--omp OMP_WAIT_POLICY=PASSIVE]
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


def worker(threads: str, seconds: float, until: str | None = None) -> None:
    """Train for `seconds` after a warm-up epoch (or until the file `until` exists). Prints "timing" when
    the timed part starts, then as JSON: steps a second, the thread counts, and (wall time, steps so
    far) at each epoch's end."""
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
            print("timing", flush=True)
            counts, steps, started = [], 0, time.perf_counter()
            marks = [(time.time(), 0)]
            while not os.path.exists(until) if until else time.perf_counter() - started < seconds:
                trainer.train_epoch()
                steps += trainer.state.step_in_epoch
                marks.append((time.time(), steps))
                counts.append(torch.get_num_threads())
                trainer.restart_epoch()
            elapsed = time.perf_counter() - started
    print(json.dumps({"steps_per_s": steps / elapsed, "threads": sorted(set(counts)),
                      "decisions": trainer.threads.decisions, "marks": marks}))


def spawn(threads: str, seconds: float, until: str | None = None, env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ) | (env or {})
    env.pop("OMP_NUM_THREADS", None)  # the worker's own train.threads decides
    return subprocess.Popen([sys.executable, __file__, "--worker", threads, "--seconds", str(seconds),
                             *(["--until", until] if until else [])], stdout=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a worker failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def speed_between(marks: list[list[float]], start: float, stop: float) -> float:
    """Steps a second over the wall-clock span [start, stop], from (time, steps) marks, interpolated."""
    times, steps = [m[0] for m in marks], [m[1] for m in marks]
    return float(np.interp(stop, times, steps) - np.interp(start, times, steps)) / max(stop - start, 1e-9)


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def steps(r: dict) -> str:
    return f"{r['steps_per_s']:.0f} (threads {r['threads']})"


def one_core_busy(seconds: float, order: tuple[str, ...]) -> dict[str, dict]:
    """(a): each thread setting alone beside a busy loop."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # let the busy loop show in /proc/stat
        return {threads: result(spawn(threads, seconds)) for threads in order}
    finally:
        busy.kill()
        busy.wait()


def alone_and_together(threads: str, seconds: float, flip: bool) -> tuple[dict, list[dict]]:
    """(b): one training alone and two started together (the pair first when `flip`)."""
    def alone() -> dict:
        return result(spawn(threads, seconds))

    def together() -> list[dict]:
        procs = [spawn(threads, seconds), spawn(threads, seconds)]
        return [result(p) for p in procs]

    if flip:
        pair = together()
        solo = alone()
    else:
        solo = alone()
        pair = together()
    print(f"  {threads}: alone {steps(solo)}; two at once " + ", ".join(steps(p) for p in pair)
          + f" steps/s; {load()}", flush=True)
    return solo, pair


def late_neighbour(seconds: float, env: dict | None = None) -> tuple[dict, dict, float]:
    """(c): the first training's result, the second's, and the first's speed while the second was timed."""
    with tempfile.TemporaryDirectory() as folder:
        stop = os.path.join(folder, "stop")
        first = spawn("2", seconds, until=stop, env=env)
        first.stdout.readline()  # "timing": it has decided its count and trains
        second = result(spawn("start", seconds, env=env))
        open(stop, "w").close()
        first_result = result(first)
    marks = second["marks"]
    return first_result, second, speed_between(first_result["marks"], marks[0][0], marks[-1][0])


def with_omp(seconds: float, flip: bool, solo: dict, env: dict[str, str]) -> dict[str, float]:
    """(d): the late neighbour and 2 threads alone under `env`, against `solo` (2 threads alone as they are)."""
    if flip:
        lone = result(spawn("2", seconds, env=env))
        _, second, during = late_neighbour(seconds, env)
    else:
        _, second, during = late_neighbour(seconds, env)
        lone = result(spawn("2", seconds, env=env))
    print(f"  {' '.join(f'{k}={v}' for k, v in env.items())}: late neighbour, the first (2 threads) {during:.0f} "
          f"steps/s while the second trained {steps(second)}; 2 threads alone {steps(lone)}; {load()}", flush=True)
    return {"omp late/solo": during / solo["steps_per_s"], "omp 2 alone/2 alone": lone["steps_per_s"]
            / solo["steps_per_s"]}


def run_round(seconds: float, flip: bool, omp: dict[str, str] | None = None) -> dict[str, float]:
    """One round of (a), (b), (c) (and (d)), giving its ratios; `flip` reverses the order of the contenders."""
    order = ("2", "1", "auto", "start") if flip else ("start", "auto", "1", "2")
    busy = one_core_busy(seconds, order)
    print("  one core busy: " + ", ".join(f"{k}: {steps(v)}" for k, v in busy.items()) + f" steps/s; {load()}",
          flush=True)
    pairs = {threads: alone_and_together(threads, seconds, flip) for threads in order if threads != "1"}
    first, second, during = late_neighbour(seconds)
    print(f"  late neighbour: the first (2 threads) {during:.0f} steps/s while the second trained {steps(second)} "
          f"({first['steps_per_s']:.0f} steps/s over its whole time); {load()}",
          flush=True)
    one = busy["1"]["steps_per_s"]
    ratios = {f"{k}/1": busy[k]["steps_per_s"] / one for k in ("start", "auto", "2")}
    ratios |= {f"pair/solo {k}": min(p["steps_per_s"] for p in pair) / solo["steps_per_s"]
               for k, (solo, pair) in pairs.items()}
    ratios["late/solo"] = during / pairs["2"][0]["steps_per_s"]
    if omp:
        ratios |= with_omp(seconds, flip, pairs["2"][0], omp)
    print("  ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="timed training per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--omp", metavar="VAR=VALUE", help="(d): also measure under this OpenMP setting, "
                        "e.g. OMP_WAIT_POLICY=PASSIVE or GOMP_SPINCOUNT=10000")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--until", help=argparse.SUPPRESS)
    args = parser.parse_args()
    omp = dict([args.omp.split("=", 1)]) if args.omp else None
    if args.worker:
        return worker(args.worker, args.seconds, args.until)
    print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; {load()}", flush=True)
    rounds = []
    for i in range(args.rounds):
        print(f"round {i + 1}", flush=True)
        rounds.append(run_round(args.seconds, flip=i % 2 == 1, omp=omp))
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(f"(a) one core busy, against 1 thread: start (the default) {median['start/1']:.2f} (goal >= 0.90); "
          f"auto {median['auto/1']:.2f}; 2 threads {median['2/1']:.2f}")
    print(f"(b) two at once, the slower against alone: start (the default) {median['pair/solo start']:.2f} "
          f"(goal >= 0.40); auto {median['pair/solo auto']:.2f}; 2 threads pinned {median['pair/solo 2']:.2f}")
    print(f"(c) a late neighbour, the first (2 threads) against 2 threads alone: {median['late/solo']:.2f}")
    if omp:
        print(f"(d) {args.omp}: a late neighbour, the first against 2 threads alone: "
              f"{median['omp late/solo']:.2f} (as torch runs: {median['late/solo']:.2f}); 2 threads alone, "
              f"under it against as torch runs: {median['omp 2 alone/2 alone']:.2f}")
    print(f"median of {len(rounds)} rounds; {load()}")


if __name__ == "__main__":
    main()
