"""The dSprites presets over seeds: MIG and the other scores, mean and spread, as benchmarks/README.md shows them.

Chen et al. (2018) report MIG near 0.2 for the β-VAE and up to about 0.4 for β-TCVAE on dSprites, at
the same β; this trains each preset once per seed (the presets' own time budgets), scores every run
with `vaelab evaluate RUN --disentanglement`, and prints two Markdown tables: one row a run, then
each preset's mean and standard deviation over its seeds.

    python benchmarks/disentanglement_seeds.py [--presets dsprites-btcvae,dsprites-betavae] [--seeds 0,1,2]
                                              [--runs runs/disentanglement-seeds] [--parallel 2]
                                              [--set KEY=VALUE ...] [--out table.md]

Runs go through the CLI, `--parallel` at a time, each pinned to one thread (train.threads=1) so two
side by side on a 2-core machine do not wait on each other's cores. A run folder that already holds
a finished run (summary.json) is not trained again; one already scored is not scored again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SCORES = ("mig", "beta_vae", "factor_vae", "sap", "dci_disentanglement", "dci_completeness",
          "dci_informativeness", "total_correlation")


def vaelab(*args: str) -> None:
    """One CLI command; its output goes to this script's, its failure stops it."""
    subprocess.run([sys.executable, "-m", "vaelab", *args], check=True)


def run_one(preset: str, seed: int, folder: Path, overrides: list[str]) -> dict:
    """Train (unless done) and score (unless done) one seed of one preset; its scores' JSON."""
    if not (folder / "summary.json").is_file():
        sets = [f"train.seed={seed}", "train.threads=1", *overrides]
        vaelab("train", "--preset", preset, "--out", str(folder), *[a for s in sets for a in ("--set", s)])
    scored = sorted(folder.glob("disentanglement*.json"))
    if not scored:
        vaelab("evaluate", str(folder), "--disentanglement")
        scored = sorted(folder.glob("disentanglement*.json"))
    result = json.loads(scored[-1].read_text())
    summary = json.loads((folder / "summary.json").read_text())
    evaluation = summary.get("evaluation") or {}
    return {"preset": preset, "seed": seed, "run": str(folder), "minutes": summary["train_seconds"] / 60,
            "epochs": summary["epochs_run"], "steps": summary["steps"], "test_elbo": summary["test_elbo"],
            "nll": evaluation.get("nll"), "nll_stderr": evaluation.get("nll_stderr"), "k": evaluation.get("k"),
            "weights": summary["weights_sha256"][:16], "scores": flat_scores(result)}


def flat_scores(result: dict) -> dict[str, float]:
    """{score name: value} from the disentanglement JSON (nested dicts flattened with '_')."""
    flat: dict[str, float] = {}
    for name, value in result.get("scores", result).items():
        if isinstance(value, dict) and "score" in value:
            flat[name] = value["score"]
        elif isinstance(value, dict):
            flat |= {f"{name}_{k}": v for k, v in value.items() if isinstance(v, (int, float))}
        elif isinstance(value, (int, float)):
            flat[name] = value
    return flat


def table(rows: list[dict]) -> str:
    """Per preset: each seed's MIG and the mean ± standard deviation of every score."""
    lines = ["| preset | seeds | minutes | MIG per seed | " + " | ".join(SCORES) + " |",
             "|---|---|---|---|" + "---|" * len(SCORES)]
    for preset in dict.fromkeys(r["preset"] for r in rows):
        mine = [r for r in rows if r["preset"] == preset]
        cells = []
        for score in SCORES:
            values = [r["scores"][score] for r in mine if score in r["scores"]]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread}" if values else "–")
        per_seed = ", ".join(f"{r['scores'].get('mig', float('nan')):.3f} (seed {r['seed']})" for r in mine)
        minutes = statistics.mean(r["minutes"] for r in mine)
        lines.append(f"| {preset} | {len(mine)} | {minutes:.1f} | {per_seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_table(rows: list[dict]) -> str:
    """One row a run: its training, test ELBO and NLL, every score, and its weights' fingerprint."""
    lines = ["| preset | seed | epochs (steps) | test ELBO | NLL | MIG | β-VAE | FactorVAE | DCI dis. / comp. / info. "
             "| SAP | TC (nats) | weights |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["scores"]
        elbo = f"{r['test_elbo']:.2f}".replace("-", "−")
        nll = f"{r['nll']:.2f} ± {r['nll_stderr']:.2f} (K = {r['k']})" if r.get("nll") is not None else "–"
        dci = " / ".join(f"{s.get(f'dci_{part}', float('nan')):.3f}"
                         for part in ("disentanglement", "completeness", "informativeness"))
        lines.append(f"| `{r['preset']}` | {r['seed']} | {r['epochs']} ({r['steps']:,}) | {elbo} | {nll} "
                     f"| {s.get('mig', float('nan')):.3f} | {s.get('beta_vae', float('nan')):.3f} "
                     f"| {s.get('factor_vae', float('nan')):.3f} | {dci} | {s.get('sap', float('nan')):.3f} "
                     f"| {s.get('total_correlation', float('nan')):.3f} | `{r['weights']}` |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="dsprites-btcvae,dsprites-betavae")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--runs", default="runs/disentanglement-seeds", help="where the run folders go")
    parser.add_argument("--parallel", type=int, default=2, help="runs trained at once (one thread each)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    parser.add_argument("--out", default="", help="also write the table to this file")
    args = parser.parse_args()

    jobs = [(preset, int(seed)) for seed in args.seeds.split(",") for preset in args.presets.split(",")]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda job: run_one(*job, Path(args.runs) / f"{job[0]}-seed{job[1]}", args.set), jobs))
    text = runs_table(rows) + "\n\n" + table(rows)
    print(text)
    print(f"\n{len(rows)} runs in {(time.perf_counter() - started) / 60:.1f} minutes")
    print(json.dumps(rows, indent=1))
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
