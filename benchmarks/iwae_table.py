"""Burda, Grosse & Salakhutdinov (2016), Table 1, reproduced with vaelab's presets.

Dynamically binarized MNIST, test NLL (nats) with K = 5000 importance samples:

    one stochastic layer:  VAE 86.76   IWAE k=5 85.54   IWAE k=50 84.78
    two stochastic layers: VAE 85.33   IWAE k=50 82.90

Their schedule: 3^i passes at learning rate 1e-3 * 10^(-i/7) for i = 0..7 (3280 passes),
Adam (beta1 0.9, beta2 0.999, eps 1e-4), batch 20. `--scale s` runs stage i for
max(1, round(3^i * s)) epochs (s = 1 is the paper's schedule; on a CPU use e.g. 0.001);
`--stages n` keeps stages 0..n-1 only.

    python benchmarks/iwae_table.py [--scale 1] [--eval-k 5000] [--rows vae1,iwae5,iwae50,vae2,iwae50-2]
                                    [--out benchmarks/iwae_table.md] [--runs runs/iwae-table]

It writes a Markdown table beside the paper's numbers, with epochs, wall time and device.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from vaelab.config import resolve_config
from vaelab.data import load_dataset
from vaelab.pipeline import train_run
from vaelab.training import schedule_epochs

TWO_LAYERS = ["model.latent_dim=100", "model.latent_dim2=50", "model.encoder_hidden2=[100, 100]",
              "model.decoder_hidden2=[100, 100]"]
ROWS = {  # name: (label, paper NLL, overrides of the mnist-iwae preset)
    "vae1": ("1 stochastic layer, VAE (k = 1)", 86.76, ["objective.name=elbo", "objective.samples=1"]),
    "iwae5": ("1 stochastic layer, IWAE k = 5", 85.54, ["objective.samples=5"]),
    "iwae50": ("1 stochastic layer, IWAE k = 50", 84.78, ["objective.samples=50"]),
    "vae2": ("2 stochastic layers, VAE (k = 1)", 85.33,
             ["objective.name=elbo", "objective.samples=1", *TWO_LAYERS]),
    "iwae50-2": ("2 stochastic layers, IWAE k = 50", 82.90, ["objective.samples=50", *TWO_LAYERS]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="schedule scale (1 = the paper's 3280 epochs)")
    parser.add_argument("--stages", type=int, default=8, help="schedule stages i = 0..stages-1 (the paper: 8)")
    parser.add_argument("--eval-k", type=int, default=5000, help="importance samples of the test NLL")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"which rows ({', '.join(ROWS)})")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/iwae_table.md")
    parser.add_argument("--runs", default="runs/iwae-table", help="where the runs are written")
    args = parser.parse_args()

    raw = load_dataset("mnist", progress=False)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else (
        f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)")
    lines = [
        f"Test NLL on dynamically binarized MNIST, K = {args.eval_k} importance samples, nats per image; "
        f"schedule scale {args.scale:g}, stages 0..{args.stages - 1}; {device}; torch {torch.__version__}.",
        "",
        "| model | paper | vaelab | epochs | train time | eval time |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.rows.split(","):
        label, paper, overrides = ROWS[name]
        base = resolve_config("mnist-iwae", overrides=[f"optim.schedule_scale={args.scale}"])
        epochs = schedule_epochs(base.optim, args.stages)
        config = resolve_config("mnist-iwae", overrides=[
            *overrides, f"optim.schedule_scale={args.scale}", f"train.epochs={epochs}",
            f"evaluate.samples={args.eval_k}", f"train.device={args.device}", "figures.names=[]"])
        run_dir = Path(args.runs) / f"{name}-scale{args.scale:g}"
        started = time.perf_counter()
        summary = train_run(config, run_dir, raw=raw)
        evaluation = summary["evaluation"]
        lines.append(f"| {label} | {paper:.2f} | {evaluation['nll']:.2f} \u00b1 {evaluation['nll_stderr']:.2f} | "
                     f"{summary['epochs_run']} | {summary['train_seconds']:.0f} s | {evaluation['seconds']:.0f} s |")
        print(lines[-1], f"({time.perf_counter() - started:.0f} s in all)")
    table = "\n".join(lines) + "\n"
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
