"""Test NLL against minutes of training: one preset trained for several time budgets.

A preset with a time budget fits its learning-rate schedule to that budget (warm-up, then a
cosine that ends when the budget does), so "the NLL after m minutes" means a run given m
minutes, not the m-th minute of a longer run. Each budget is its own run, scored on the full
test set (binarized once with seed 1234) with K importance samples:

    python benchmarks/nll_curve.py --preset mnist-burda-vae --minutes 5 15 --eval-k 1000
    python benchmarks/nll_curve.py --preset mnist-burda-vae --minutes 45 --eval-k 5000 --threads 1

It prints a Markdown table (minutes, epochs, training seconds, test ELBO, NLL +- standard error,
K, the weights' fingerprint) and, with --runs-from, adds finished runs of the same preset
instead of training them again (their current evaluation, as `vaelab compare` reads it).
"""

from __future__ import annotations

import argparse
import os

import vaelab
from vaelab.runs import NotARunError


def row(run: vaelab.Run, minutes: float) -> str:
    """One Markdown row for a finished, evaluated run."""
    summary = run.summary
    evaluation = run.evaluation() or {}
    nll, se = evaluation.get("nll"), evaluation.get("nll_stderr")
    nll_text = f"{nll:.2f} ± {se:.2f}" if nll is not None else "(not evaluated)"
    return (f"| {minutes:g} | {summary['epochs_run']} | {summary['train_seconds']:.0f} | "
            f"{summary.get('test_elbo', float('nan')):.2f} | {nll_text} | {evaluation.get('k', '')} | "
            f"`{str(summary.get('weights_sha256', ''))[:12]}` | {run.path} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mnist-burda-vae")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 15.0], help="time budgets, one run each")
    parser.add_argument("--eval-k", type=int, default=1000, help="importance samples of each run's test NLL")
    parser.add_argument("--threads", default="fixed", help="train.threads (1 when another job holds a core)")
    parser.add_argument("--runs", default="runs/nll-curve", help="where the runs are written")
    parser.add_argument("--runs-from", nargs="*", default=[], metavar="RUN",
                        help="finished runs of the preset to add as rows (their own budget and evaluation)")
    args = parser.parse_args()
    if any(not m > 0 for m in args.minutes):
        parser.error("--minutes: every budget must be > 0")

    rows = []
    for path in args.runs_from:
        try:
            run = vaelab.open_run(path)
        except NotARunError as err:
            parser.error(f"--runs-from: {err}")
        rows.append((run.config.train.time_budget, row(run, run.config.train.time_budget)))
    for minutes in args.minutes:
        out = os.path.join(args.runs, f"{args.preset}-{minutes:g}min")
        run = vaelab.train(args.preset, out=out, overrides=[
            f"train.time_budget={minutes}", f"evaluate.samples={args.eval_k}", f"train.threads={args.threads}",
            "figures.names=[]"])
        rows.append((minutes, row(run, minutes)))
    print(f"\n{args.preset}: test NLL against minutes of training (nats per image)\n")
    print("| minutes | epochs | training s | test ELBO | test NLL | K | weights | run |")
    print("|---|---|---|---|---|---|---|---|")
    for _, text in sorted(rows):
        print(text)


if __name__ == "__main__":
    main()
