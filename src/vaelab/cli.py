"""The `vaelab` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import ConfigError, preset_dict, preset_names, resolve_config
from .parallel import ParallelError
from .train import NonFiniteError


def _cmd_train(args: argparse.Namespace) -> int:
    from .data import DataError
    from .pipeline import sweep_run, train_run
    from .train import new_run_dir, read_run_config, resolve_device

    if args.resume:
        if args.preset or args.config or args.set or args.out:
            raise ConfigError("--resume continues a run with its own config.json; "
                              "drop --preset, --config, --set and --out")
        run_dir = Path(args.resume)
        config = read_run_config(run_dir)
    else:
        config = resolve_config(args.preset, args.config, args.set)
        run_dir = Path(args.out) if args.out else new_run_dir(config)
    resolve_device(config.train.device)  # fail before any work
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(f"vaelab train: preset {config.name!r}, run folder {run_dir}")
    try:
        if config.sweep.members:
            print(sweep_run(config, run_dir, data_dir=args.data_dir), end="")
        else:
            train_run(config, run_dir, data_dir=args.data_dir, resume=bool(args.resume))
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate_run
    from .parallel import from_environment
    from .train import resolve_device

    parallel, device = from_environment(resolve_device(args.device or "auto"))
    result = evaluate_run(args.run_dir, args.split, args.samples, args.seed, args.memory_mb,
                          progress=not args.json, device=str(device), data_dir=args.data_dir, parallel=parallel)
    if not parallel.is_main:
        return 0
    if args.json:
        keys = ("elbo", "reconstruction", "kl", "nll", "nll_stderr", "k", "n", "active_units", "kl_per_dim",
                "split", "binarization")
        print(json.dumps({key: result[key] for key in keys} | result))
        return 0
    print(format_evaluation(result))
    return 0


def format_evaluation(r: dict) -> str:
    """The evaluation as a short human-readable block; every number in nats per image."""
    seed = r.get("binarization_seed")
    how = f"{r['binarization']} binarization" + (f"; {r['split']} images binarized once with seed {seed}"
                                                  if seed is not None else "")
    lines = [
        f"{r['data']} {r['split']} split, {r['n']} images ({how}); nats per image, summed over pixels",
        f"  ELBO              {r['elbo']:10.2f}",
        f"    reconstruction  {r['reconstruction']:10.2f}   E_q[log p(x|z)], mean over the K samples",
        f"    KL              {r['kl']:10.2f}   KL(q(z|x) || p(z)), analytic",
        f"  NLL               {r['nll']:10.2f} \u00b1 {r['nll_stderr']:.2f}   importance-sampled, K = {r['k']}",
        f"  active units      {r['active_units']:7d} / {r['latent_dim']}   (Cov_x E_q[z_j] > 0.01)",
    ]
    if r.get("bits_per_dim") is not None:
        lines.append(f"  bits per dim      {r['bits_per_dim']:10.4f}   NLL / (pixels x ln 2)")
    if r.get("kl_per_dim") is not None:
        lines.append("  KL per dimension  " + " ".join(f"{v:.2f}" for v in r["kl_per_dim"]))
    lines.append(f"  {r['seconds']:.1f} s on {r['device']}")
    return "\n".join(lines)


def _cmd_figures(args: argparse.Namespace) -> int:
    from .plots import make_figures

    for name, path, note in make_figures(args.run_dir, args.names or None):
        print(f"{name:16s} {path if path else 'skipped'}{'  (' + note + ')' if note else ''}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.run_dir, k=args.samples, evaluate=not args.no_evaluate)
    print(f"report: {path}")
    return 0


def _cmd_explore(args: argparse.Namespace) -> int:
    import webbrowser

    from .explorer import write_explorer

    path = write_explorer(args.run_dir)
    print(f"explorer: {path}")
    if args.open:
        webbrowser.open(path.resolve().as_uri())
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .report import compare_runs

    print(compare_runs(args.run_dirs, csv=args.csv), end="")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from .data import EXPECTED_DIGESTS, DataError, load_dataset

    try:
        raw = load_dataset(args.name, args.data_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pinned = raw.name in EXPECTED_DIGESTS
    status = "verified" if pinned else "NOT PINNED (structure checked only)"
    print(f"{raw.name}: served by {raw.source}")
    for key, digest in raw.digests.items():
        print(f"  {key:8s} {str(getattr(raw, key).shape):20s} sha256 {digest}  {status}")
    if not pinned:
        entries = "".join(f'        "{key}": "{digest}",\n' for key, digest in raw.digests.items())
        print(f"\nno pinned digests for {raw.name}; once this copy is confirmed good, pin them in "
              f"EXPECTED_DIGESTS (src/vaelab/data/sources.py):\n"
              f'    "{raw.name}": {{\n{entries}    }},')
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    from .data import cache_info, default_cache_dir

    entries = cache_info()
    if not entries:
        print(f"nothing cached in {default_cache_dir()}")
    for entry in entries:
        print("  ".join(f"{k}={v}" for k, v in entry.items()))
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    for name in preset_names():
        print(f"{name:24s} {preset_dict(name).get('description', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaelab", description="Train, evaluate and explore VAEs.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and write a run folder")
    train.add_argument("--preset", help="a shipped preset (default mnist-lab); see `vaelab presets`")
    train.add_argument("--config", help="a TOML or JSON file layered over the preset")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config value, e.g. --set model.latent_dim=10 (repeatable)")
    train.add_argument("--out", help="run folder (default runs/<preset>-<time>)")
    train.add_argument("--data-dir", help="folder with the IDX files or an .npz (else $VAELAB_DATA, cache, download)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run where it stopped")
    train.set_defaults(func=_cmd_train)

    evaluate = commands.add_parser("evaluate", help="ELBO, importance-sampled NLL, active units of a run")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--split", choices=["test", "val"], default="test")
    evaluate.add_argument("--samples", "-k", type=int, default=5000, help="importance samples K (default 5000)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--memory-mb", type=float, default=None,
                          help="memory bound of one chunk of work (default 64 on a CPU, 1024 on a GPU)")
    evaluate.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    evaluate.add_argument("--data-dir")
    evaluate.set_defaults(func=_cmd_evaluate)

    figures = commands.add_parser("figures", help="draw a run's figures into RUN_DIR/figures")
    figures.add_argument("run_dir")
    figures.add_argument("names", nargs="*", help="samples, reconstructions, interpolations, latent-scatter, "
                                                  "manifold, curves, kl-per-dim (default: all)")
    figures.set_defaults(func=_cmd_figures)

    report = commands.add_parser("report", help="write RUN_DIR/report.html, one self-contained page")
    report.add_argument("run_dir")
    report.add_argument("--samples", "-k", type=int, default=5000, help="K if an evaluation must be run")
    report.add_argument("--no-evaluate", action="store_true", help="use only evaluations already made")
    report.set_defaults(func=_cmd_report)

    explore = commands.add_parser("explore", help="write RUN_DIR/explorer.html: decode the latent space live")
    explore.add_argument("run_dir")
    explore.add_argument("--open", action="store_true", help="open the page in the default browser")
    explore.set_defaults(func=_cmd_explore)

    compare = commands.add_parser("compare", help="one table of several runs' metrics and settings")
    compare.add_argument("run_dirs", nargs="+")
    compare.add_argument("--csv", action="store_true", help="CSV instead of Markdown")
    compare.set_defaults(func=_cmd_compare)

    data = commands.add_parser("data", help="fetch and inspect data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser("fetch", help="fetch, verify and cache a data set")
    fetch.add_argument("name", choices=["mnist", "fashion-mnist", "cifar10", "cifar-10"])
    fetch.add_argument("--data-dir")
    fetch.set_defaults(func=_cmd_data_fetch)
    info = data_commands.add_parser("info", help="show what is cached")
    info.set_defaults(func=_cmd_data_info)

    presets = commands.add_parser("presets", help="list the shipped presets")
    presets.set_defaults(func=_cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileExistsError, FileNotFoundError, ValueError, OSError, NonFiniteError,
            ParallelError) as err:
        if os.environ.get("VAELAB_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2

