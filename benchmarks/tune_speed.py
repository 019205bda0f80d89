"""`vaelab tune`: trials an hour with 1 worker and with 2, and a study that survives a killed worker.

speed: the same search (the mnist-lab model, a learning rate and a latent size drawn at random)
    run twice, in one run of this script: with 1 worker (torch's threads on every core) and with
    2 (each pinned to its half of the cores). Every trial has the same budget, --steps optimizer
    steps (train.max_steps), so trials an hour compare the work done. Goal on the 2-core machine:
    2 workers >= 1.7x the trials an hour of 1. The wall time of each study includes starting its
    processes and loading the data, as a user's does.

kill: the "Done when" of issue 21: a study of mnist-burda-vae (examples/tune_burda.toml: 2
    workers, --minutes of training a trial) in which one worker is killed with SIGKILL once it is
    --kill-after seconds into a trial; then checks that every trial is accounted for (the killed
    trial FAIL and re-run with the same values, --trials completed or pruned) and trains best.toml
    with `vaelab train --config` for --best-minutes.

    python benchmarks/tune_speed.py speed [--trials 6] [--steps 400] [--data-dir DIR]
    python benchmarks/tune_speed.py kill [--trials 6] [--minutes 3] [--kill-after 60] [--best-minutes 1]

Real MNIST (the vaelab cache, or --data-dir). Needs Optuna: pip install "vaelab[optuna]".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def vaelab(*args: str, data_dir: str | None) -> list[str]:
    return [sys.executable, "-m", "vaelab", *args, *(["--data-dir", data_dir] if data_dir else [])]


def study_trials(study: Path) -> list:
    import optuna

    from vaelab.runs import StudyFolder
    from vaelab.tuning import database_url

    url = database_url(StudyFolder(study).storage())
    return optuna.load_study(study_name=study.resolve().name, storage=url).get_trials()


def timed_study(workers: int, args: argparse.Namespace, root: Path) -> dict:
    """Run one study; its wall seconds, completed trials and trials an hour."""
    study = root / f"speed-{workers}"
    command = vaelab("tune", "--out", str(study), "--workers", str(workers), "--trials", str(args.trials),
                     "--set", "tune.sampler=\"random\"", "--set", f"train.max_steps={args.steps}",
                     "--set", "train.epochs=1000", "--set", "evaluate.samples=0", "--set", "figures.names=[]",
                     "--set", "tune.space={\"optim.lr\" = [\"log\", 1e-4, 3e-3], \"model.latent_dim\" = [\"int\", 2, 16]}",
                     data_dir=args.data_dir)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"vaelab tune with {workers} workers failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    complete = [t for t in study_trials(study) if t.state.name == "COMPLETE"]
    train = [json.loads((study / t.user_attrs["run_dir"] / "summary.json").read_text())["train_seconds"]
             for t in complete]
    return {"workers": workers, "seconds": seconds, "trials": len(complete),
            "per_hour": len(complete) / seconds * 3600, "train_seconds_mean": sum(train) / len(train)}


def speed(args: argparse.Namespace) -> None:
    from vaelab.threads import affinity_cpus

    print(f"{len(affinity_cpus())} CPUs; {args.trials} trials of {args.steps} steps each (mnist-lab, batch 128); "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="tune-speed-") as tmp:
        results = [timed_study(workers, args, Path(tmp)) for workers in (1, 2)]
    for r in results:
        print(f"  {r['workers']} worker(s): {r['trials']} trials in {r['seconds']:.1f} s = {r['per_hour']:.1f} "
              f"trials/hour (training {r['train_seconds_mean']:.1f} s a trial)")
    ratio = results[1]["per_hour"] / results[0]["per_hour"]
    print(f"2 workers / 1 worker: {ratio:.2f}x trials an hour (goal >= 1.7x)")


def _worker_in_trial(study: Path) -> tuple[int, Path] | None:
    """(pid, folder) of a worker mid-trial: a trial folder whose lock is held and whose summary is missing."""
    for folder in sorted(study.glob("trial-*")):
        lock = folder / ".lock"
        if lock.is_file() and not (folder / "summary.json").exists():
            words = lock.read_text().split()
            if words and words[0].isdigit():
                return int(words[0]), folder
    return None


def kill(args: argparse.Namespace) -> None:
    root = Path(args.out or tempfile.mkdtemp(prefix="tune-kill-"))
    root.mkdir(parents=True, exist_ok=True)
    study = root / "burda-tune"
    command = vaelab("tune", "--preset", "mnist-burda-vae", "--config", str(ROOT / "examples" / "tune_burda.toml"),
                     "--out", str(study), "--trials", str(args.trials), "--set", f"train.time_budget={args.minutes}",
                     data_dir=args.data_dir)
    print(" ".join(command[1:]), flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=root)
    while (found := _worker_in_trial(study)) is None or time.perf_counter() - started < args.kill_after:
        if proc.poll() is not None:
            sys.exit("the study ended before a worker could be killed")
        time.sleep(1)
    pid, folder = found
    os.kill(pid, signal.SIGKILL)
    print(f"--- killed worker pid {pid} with SIGKILL {time.perf_counter() - started:.0f} s in, mid-trial in "
          f"{folder.name}", flush=True)
    if proc.wait():
        sys.exit(f"vaelab tune exited with status {proc.returncode}")
    trials = study_trials(study)
    states = [t.state.name for t in trials]
    dead = next(t for t in trials if t.user_attrs.get("run_dir") == folder.name)
    again = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    print(f"{len(trials)} trials: " + ", ".join(f"{states.count(s)} {s.lower()}" for s in sorted(set(states))))
    print(f"killed trial {dead.number}: {dead.state.name}; re-run as trial "
          f"{', '.join(str(t.number) for t in again) or 'NONE'} "
          f"({', '.join(t.state.name for t in again)}), same values: {all(t.params == dead.params for t in again)}")
    ok = (dead.state.name == "FAIL" and len(again) == 1 and again[0].params == dead.params
          and states.count("COMPLETE") + states.count("PRUNED") >= args.trials and "RUNNING" not in states)
    print("every trial accounted for" if ok else "NOT every trial accounted for")
    best = subprocess.run(vaelab("train", "--config", str(study / "best.toml"), "--out", str(root / "best"),
                                 "--set", f"train.time_budget={args.best_minutes}", data_dir=args.data_dir), cwd=root)
    print(f"vaelab train --config {study / 'best.toml'}: exit status {best.returncode}")
    sys.exit(0 if ok and best.returncode == 0 else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    one = modes.add_parser("speed", help="trials an hour, 1 worker against 2")
    one.add_argument("--trials", type=int, default=6)
    one.add_argument("--steps", type=int, default=400, help="optimizer steps a trial (train.max_steps)")
    two = modes.add_parser("kill", help="a mnist-burda-vae study with a worker killed midway")
    two.add_argument("--trials", type=int, default=6)
    two.add_argument("--minutes", type=float, default=3, help="train.time_budget of each trial")
    two.add_argument("--kill-after", type=float, default=60, help="seconds into the study to kill a worker")
    two.add_argument("--best-minutes", type=float, default=1, help="train.time_budget of best.toml's training")
    two.add_argument("--out", help="folder for the study and the best run (default: a new temporary folder)")
    for sub in (one, two):
        sub.add_argument("--data-dir")
    args = parser.parse_args()
    speed(args) if args.mode == "speed" else kill(args)


if __name__ == "__main__":
    main()
