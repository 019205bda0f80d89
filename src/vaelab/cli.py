"""The `vaelab` command: a thin layer over the Python API (`vaelab.api`); both make the same run folders."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import sysconfig
import traceback
import warnings
from pathlib import Path
from typing import Any

from . import __version__
from .config import ConfigError, preset_dict, preset_names
from .errors import VaelabError
from .latents import ACTIVE_THRESHOLD

USER_ERROR = 2  # an error vaelab recognised (a config, a command, a file, the data): one line says what
UNEXPECTED_ERROR = 3  # any other exception: a bug in vaelab, or in a model or plugin of the user's


def _cmd_train(args: argparse.Namespace) -> int:
    from . import api
    from .data import DataError

    try:
        if args.resume:
            if args.preset or args.config or args.out or args.images or args.model:
                raise ConfigError("--resume continues a run with its own config.json; drop --preset, --config, --images, "
                                  "--model and --out (--set may raise train.epochs to train a finished run longer)")
            result = api.resume(args.resume, overrides=args.set + _log_overrides(args.log), data_dir=args.data_dir,
                                log=_rank0_print)
        else:
            result = api.train(args.preset, config=args.config, overrides=args.set + _log_overrides(args.log),
                               out=args.out, data=args.images, data_dir=args.data_dir, log=_rank0_print,
                               model=args.model)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if isinstance(result, api.Sweep):
        _rank0_print(result.table().rstrip("\n"))
    return 0


def _log_overrides(names: list[str]) -> list[str]:
    """--log tensorboard --log mlflow,wandb -> ['log.backends=["tensorboard", "mlflow", "wandb"]']; none: []."""
    backends = [n.strip() for name in names for n in name.split(",") if n.strip()]
    return [f"log.backends={json.dumps(backends)}"] if backends else []
def _cmd_tune(args: argparse.Namespace) -> int:
    from . import api

    if args.worker_index is not None:  # one worker of a study that `vaelab tune` started (run_workers)
        from .tuning import tune

        if not args.resume:
            raise ConfigError("--worker-index: a worker joins a study; give --resume STUDY_DIR")
        cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else None
        tune(None, Path(args.resume), storage=args.storage, resume=True, worker_index=args.worker_index,
             threads=args.threads, cpus=cpus, data_dir=args.data_dir, log=_flushed_print)
        return 0
    if args.resume:
        study = api.tune(resume=args.resume, workers=args.workers, trials=args.trials, storage=args.storage,
                         data_dir=args.data_dir, log=_flushed_print,
                         **({"preset": args.preset, "config": args.config, "overrides": args.set, "out": args.out}
                            if args.preset or args.config or args.set or args.out else {}))
    else:
        study = api.tune(args.preset, config=args.config, overrides=args.set, out=args.out, workers=args.workers,
                         trials=args.trials, storage=args.storage, data_dir=args.data_dir, log=_flushed_print)
    print(study.table().rstrip("\n"))
    return 0


def _flushed_print(text: str) -> None:
    print(text, flush=True)  # workers' lines interleave; each goes out whole, when it is said


def _rank0_print(text: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(text, flush=True)


def _work_dir(args: argparse.Namespace) -> str | Path:
    """The run folder a command writes in: a shipped model (pretrained:NAME) is copied to --out (default
    runs/pretrained-NAME) first, once, and that copy named on one line; any other folder is itself."""
    from .runs import is_pretrained, working_copy

    if not is_pretrained(args.run_dir):
        if args.out is not None:
            raise ConfigError(f"--out: only for a shipped model (pretrained:NAME); {args.run_dir} is written in place")
        return args.run_dir
    path, made = working_copy(args.run_dir, args.out)
    print(f"{args.run_dir}: {'copied to' if made else 'working in its copy'} {path} (the shipped folder is "
          "read-only; --out DIR puts the copy elsewhere)", file=sys.stderr if getattr(args, "json", False) else sys.stdout)
    return path


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate_run
    from .parallel import from_environment
    from .runs import RunFolder
    from .device import resolve_device

    folder = RunFolder(_work_dir(args)).check()
    if args.disentanglement:
        return _evaluate_disentanglement(folder, args)
    parallel, device = from_environment(resolve_device(args.device or "auto", "--device"))
    samples = 5000 if args.samples is None else args.samples
    result = evaluate_run(folder.path, args.split, samples, args.seed, args.memory_mb, progress=not args.json,
                          device=str(device), data_dir=args.data_dir, parallel=parallel, save=False)
    if not parallel.is_main:
        return 0
    # Printed before it is written: a write that fails (a full disk) must not lose minutes of work.
    if args.json:
        keys = ("elbo", "reconstruction", "kl", "nll", "nll_stderr", "k", "n", "active_units", "kl_per_dim",
                "split", "binarization")
        print(json.dumps({key: result[key] for key in keys} | result), flush=True)
    else:
        print(format_evaluation(result), flush=True)
    path = folder.save_evaluation(result)
    if not args.json:
        print(f"  saved in {path}")
    return 0


def _evaluate_disentanglement(folder: Any, args: argparse.Namespace) -> int:
    """`vaelab evaluate RUN --disentanglement`: the scores printed, then kept in the run folder."""
    from .device import resolve_device
    from .evaluate import DISENTANGLEMENT_SAMPLES, evaluate_disentanglement, format_disentanglement

    if args.split != "test" or args.memory_mb is not None:
        raise ConfigError("--disentanglement scores samples of the data's factor grid, not a split, in batches of "
                          "images: drop --split and --memory-mb")
    samples = DISENTANGLEMENT_SAMPLES if args.samples is None else args.samples
    result = evaluate_disentanglement(folder.path, samples, args.seed, progress=not args.json, save=False,
                                      device=str(resolve_device(args.device or "auto", "--device")),
                                      data_dir=args.data_dir)
    # Printed before it is written, as the evaluation is: a failed write must not lose the work.
    print(json.dumps(result) if args.json else format_disentanglement(result), flush=True)
    path = folder.save_disentanglement(result)
    if not args.json:
        print(f"  saved in {path}")
    return 0


def format_evaluation(r: dict) -> str:
    """The evaluation as a short human-readable block; every number in nats per image."""
    from .webpage import pixels_text

    seed = r.get("binarization_seed")  # colour photos are "colour pixels in their levels", not "grey binarization"
    how = pixels_text(r["binarization"], r.get("channels", 1)) + (
        f"; {r['split']} images binarized once with seed {seed}" if seed is not None else "")
    lines = [
        f"{r['data']} {r['split']} split, {r['n']} images, {how}; nats per image, summed over pixels",
        f"  ELBO              {r['elbo']:10.2f}",
        f"    reconstruction  {r['reconstruction']:10.2f}   E_q[log p(x|z)], mean over the K samples",
        f"    KL              {r['kl']:10.2f}   KL(q(z|x) || p(z)), {r.get('kl_estimate') or 'analytic'}",
        f"  NLL               {r['nll']:10.2f} \u00b1 {r['nll_stderr']:.2f}   importance-sampled, K = {r['k']}",
        f"  active units      {r['active_units']:7d} / {r['latent_dim']}   (Cov_x E_q[z_j] > {ACTIVE_THRESHOLD})",
    ]
    if r.get("bits_per_dim") is not None:
        lines.append(f"  bits per dim      {r['bits_per_dim']:10.4f}   NLL / (pixels x ln 2)")
    if r.get("kl_per_dim") is not None:
        lines.append("  KL per dimension  " + " ".join(f"{v:.2f}" for v in r["kl_per_dim"]))
    lines.append(f"  {r['seconds']:.1f} s on {r['device']}")
    return "\n".join(lines)


def _cmd_figures(args: argparse.Namespace) -> int:
    from .api import open_run

    target = open_run(_work_dir(args))
    runs = getattr(target, "members", None) or [target]
    for run in runs:
        if len(runs) > 1:
            print(f"{run.path}:")
        for figure in run.figures(*args.names, **_figure_options(args)):
            note = f"  ({figure.note})" if figure.note else ""
            print(f"{figure.name:16s} {figure.path if figure.path else 'skipped'}{note}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import SHORTER_CLI, write_report

    path = write_report(_work_dir(args), k=args.samples, evaluate=not args.no_evaluate, figures=not args.no_figures,
                        shorter=SHORTER_CLI, **_figure_options(args))
    print(f"report: {path}")
    return 0


def _cmd_explore(args: argparse.Namespace) -> int:
    import webbrowser

    from .api import Run

    path = Run(_work_dir(args)).explore().path
    address = path.resolve().as_uri()
    print(f"explorer: {path}\n  open {address}")
    if args.open and not webbrowser.open(address):
        print("no web browser found to open it; open the address above in one", file=sys.stderr)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .comparison import compare_runs

    print(compare_runs(args.run_dirs, csv=args.csv, sort=args.sort), end="")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from .data import EXPECTED_DIGESTS, DataError, load_dataset

    try:
        raw = load_dataset(args.name, args.data_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if getattr(raw, "factors", None) is not None:  # a set vaelab draws: no download, no digests to pin
        grid = raw.factors
        print(f"{raw.name}: {len(grid)} images {'x'.join(map(str, raw.image_shape))}, factors "
              + ", ".join(f"{name} ({size})" for name, size in zip(grid.names, grid.sizes)) + f"; {raw.source}")
        return 0
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


def _cmd_pretrained(args: argparse.Namespace) -> int:
    from .runs import CARD_TEXT, shipped_run
    from .shipped import listing

    if args.name is None:
        print(listing(), end="")
    else:
        print(shipped_run(args.name).file(CARD_TEXT).read_text(encoding="utf-8"), end="")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    for name in preset_names():
        print(f"{name:24s} {preset_dict(name).get('description', '')}")
    return 0


# Figure options a command line may set, each overriding the run's [figures] config for one call,
# with what each sets (--help shows it).
FIGURE_FLAGS = {
    "samples_n": "samples: an N x N grid",
    "class_samples_n": "class-samples: N samples of each class",
    "reconstructions_n": "reconstructions: N test images",
    "reconstructions_random": "reconstructions: random test images (seeded by --seed), not the first ones",
    "interpolation_pairs": "interpolations: PAIRS pairs of test images, a row each",
    "interpolation_steps": "interpolations: STEPS images along each row",
    "interpolations_random": "interpolations: random test images (seeded by --seed), not the first ones",
    "manifold_n": "manifold: an N x N grid",
    "manifold_range": "manifold: minmax (of the test posterior means) or quantile (of the prior)",
    "manifold_dims": "manifold: the two latent dimensions it sweeps (default 0 1)",
    "manifold_label": "manifold: the label a conditional model decodes with",
    "scatter_method": "latent-scatter beyond 2-D: pca or tsne",
    "tsne_points": "latent-scatter with tsne: the test images it embeds",
    "factor_samples": "traversals-factors, mi-matrix: factor samples the mutual information is estimated from",
    "traversal_steps": "traversals-factors: STEPS images along each latent dimension",
    "seed": "the seed of samples and random test images (and of factor samples)",
}


def _add_figure_flags(parser: argparse.ArgumentParser) -> None:
    """--samples-n N, --manifold-range R, ... from the figure options' own types and defaults."""
    from .figures import FigureContext

    group = parser.add_argument_group("figure options (default: the run's [figures] config, then built-in)")
    fields = {f.name: f for f in dataclasses.fields(FigureContext)}
    for name, text in FIGURE_FLAGS.items():
        flag, kind = "--" + name.replace("_", "-"), fields[name].type
        if kind == "bool":
            group.add_argument(flag, dest=f"fig_{name}", action=argparse.BooleanOptionalAction, default=None,
                               help=text)
        elif kind.startswith("tuple"):
            group.add_argument(flag, dest=f"fig_{name}", type=int, nargs=2, metavar=("I", "J"), help=text)
        else:
            group.add_argument(flag, dest=f"fig_{name}", type={"int": int, "str": str}[kind],
                               metavar=name.split("_")[-1].upper(), help=text)


def _figure_list(width: int = 79) -> str:
    """Every figure of the registry with what it shows, whole sentences wrapped under its name."""
    import textwrap

    from .figures import FIGURES, describe

    lines, column = ["figures:"], max(map(len, FIGURES)) + 1  # every name followed by a space
    for name in FIGURES:
        lines += textwrap.wrap(describe(name), width, initial_indent=f"  {name:{column}s}",
                               subsequent_indent=" " * (column + 2), break_on_hyphens=False)
    return "\n".join(lines)


def _figure_options(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, f"fig_{name}") for name in FIGURE_FLAGS if getattr(args, f"fig_{name}") is not None}


def _positive_mb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of megabytes") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 MB, got {text}")
    return value


RUN_DIR_HELP = "a run folder, or pretrained:NAME: a trained model shipped in the package (see vaelab pretrained)"


def _add_out_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="for a shipped model (pretrained:NAME): the run folder its "
                        "writable copy is made in, once, and this command writes in (default runs/pretrained-NAME)")


def _add_code_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-code-change", action="store_true",
                        help="rebuild a model of your own from its code as it is now, though it changed since training "
                             "(the run folder records it)")


def build_parser() -> argparse.ArgumentParser:
    # every list of choices is its registry's names, so a name added there is offered here
    from .data.catalog import DATASETS
    from .data.sources import NAME_ALIASES
    from .comparison import SORTS
    from .runs import EVALUATION_SPLITS

    parser = argparse.ArgumentParser(prog="vaelab", description="Train, evaluate and explore VAEs.")
    parser.add_argument("--version", action="version", version=f"vaelab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and write a run folder")
    train.add_argument("--preset", help="a shipped preset (default mnist-lab); see `vaelab presets`")
    train.add_argument("--config", help="a TOML or JSON file layered over the preset")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config value, e.g. --set model.latent_dim=10 (repeatable); with "
                            "--resume, how long to train: --set train.epochs=40 trains a finished run longer")
    train.add_argument("--out", help="run folder (default runs/<preset>-<time>)")
    train.add_argument("--data-dir", help="folder with the IDX files or an .npz (else $VAELAB_DATA, cache, download)")
    train.add_argument("--images", metavar="PATH", help="train on your own images: a folder (class sub-folders give "
                       "labels; train/ val/ test/ give splits), an .npy or an .npz (preset default: images)")
    train.add_argument("--model", metavar="FILE.py:CLASS", help="your own model (the vaelab.Model contract; "
                       "package.module:CLASS works too), built with image_shape and [model.args]; see docs/extending.md")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run or sweep where it stopped")
    train.add_argument("--log", action="append", default=[], metavar="BACKEND",
                       help="also log to tensorboard, mlflow or wandb (repeatable, or a comma list): "
                            "sets log.backends; metrics.jsonl is written either way")
    _add_code_flag(train)
    train.set_defaults(func=_cmd_train)

    tune = commands.add_parser("tune", help="search hyperparameters with Optuna ([tune] config section): a study "
                               "folder of trial runs")
    tune.add_argument("--preset", help="a shipped preset (default mnist-lab) the search starts from")
    tune.add_argument("--config", help="a TOML or JSON file layered over the preset, with its [tune] section")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override one config value, e.g. --set tune.trials=32 (repeatable)")
    tune.add_argument("--out", help="study folder (default runs/<preset>-<time>); the same command run again "
                                    "finishes the study in it")
    tune.add_argument("--workers", type=int, help="worker processes on this machine (overrides tune.workers)")
    tune.add_argument("--trials", type=int, help="trials to finish, completed or pruned (overrides tune.trials)")
    tune.add_argument("--storage", metavar="URL", help="Optuna storage (default sqlite in the study folder); "
                      "postgresql://USER:PASSWORD@HOST/DB lets workers on several machines join one study")
    tune.add_argument("--resume", metavar="STUDY_DIR", help="continue a study (or join it: with --storage, on "
                      "another machine, STUDY_DIR named as the study)")
    tune.add_argument("--data-dir", help="folder with the IDX files or an .npz (else $VAELAB_DATA, cache, download)")
    tune.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by run_workers for its workers
    tune.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    tune.add_argument("--cpus", help=argparse.SUPPRESS)
    tune.set_defaults(func=_cmd_tune)

    evaluate = commands.add_parser("evaluate", help="ELBO, importance-sampled NLL, active units of a run; "
                                   "--disentanglement: its scores against the data's factors")
    evaluate.add_argument("run_dir", help=RUN_DIR_HELP)
    evaluate.add_argument("--split", choices=EVALUATION_SPLITS, default=EVALUATION_SPLITS[0])
    evaluate.add_argument("--samples", "-k", type=int, default=None, help="importance samples K (default 5000); "
                          "with --disentanglement, factor samples (default 10000)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--disentanglement", action="store_true",
                          help="score the latent against the data's factors instead (beta-VAE and FactorVAE scores, "
                               "MIG, DCI, SAP, total correlation): for a run on a factor data set such as dsprites")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--memory-mb", type=_positive_mb, default=None,
                          help="memory bound of one chunk of work, in MB (default: sized to a core's L2 cache on a CPU, "
                               "at least 16; 1024 on a GPU)")
    evaluate.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    evaluate.add_argument("--data-dir")
    _add_out_flag(evaluate)
    _add_code_flag(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)

    figures = commands.add_parser("figures", help="draw a run's figures into RUN_DIR/figures",
                                  epilog=_figure_list(), formatter_class=argparse.RawDescriptionHelpFormatter)
    figures.add_argument("run_dir", help=RUN_DIR_HELP)
    figures.add_argument("names", nargs="*", metavar="NAME",
                         help="figures to draw, named below (default: all that apply to the run)")
    _add_figure_flags(figures)
    _add_out_flag(figures)
    _add_code_flag(figures)
    figures.set_defaults(func=_cmd_figures)

    report = commands.add_parser("report", help="write RUN_DIR/report.html, one self-contained page")
    report.add_argument("run_dir", help=RUN_DIR_HELP)
    report.add_argument("--samples", "-k", type=int, default=5000, help="K if an evaluation must be run")
    report.add_argument("--no-evaluate", action="store_true", help="use only evaluations already made")
    report.add_argument("--no-figures", action="store_true", help="use the figures already drawn")
    _add_figure_flags(report)
    _add_out_flag(report)
    _add_code_flag(report)
    report.set_defaults(func=_cmd_report)

    explore = commands.add_parser("explore", help="write RUN_DIR/explorer.html: decode the latent space live")
    explore.add_argument("run_dir", help=RUN_DIR_HELP)
    explore.add_argument("--open", action="store_true", help="open the page in the default browser")
    _add_out_flag(explore)
    _add_code_flag(explore)
    explore.set_defaults(func=_cmd_explore)

    compare = commands.add_parser("compare", help="one table of several runs' metrics and settings")
    compare.add_argument("run_dirs", nargs="+", help="run folders, sweeps, studies or pretrained:NAME")
    compare.add_argument("--csv", action="store_true", help="CSV instead of Markdown")
    compare.add_argument("--sort", choices=list(SORTS), default=None,
                         help="best run first by this validation number (default: the order given)")
    _add_code_flag(compare)
    compare.set_defaults(func=_cmd_compare)

    data = commands.add_parser("data", help="fetch and inspect data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser("fetch", help="fetch, verify and cache a data set")
    fetch.add_argument("name", choices=[*DATASETS, *NAME_ALIASES])
    fetch.add_argument("--data-dir")
    fetch.set_defaults(func=_cmd_data_fetch)
    info = data_commands.add_parser("info", help="show what is cached")
    info.set_defaults(func=_cmd_data_info)

    pretrained = commands.add_parser("pretrained", help="list the trained models shipped in the package, or "
                                     "print one's model card; use one as pretrained:NAME in place of a run folder")
    pretrained.add_argument("name", nargs="?", metavar="NAME", help="print this model's card")
    pretrained.set_defaults(func=_cmd_pretrained)

    presets = commands.add_parser("presets", help="list the shipped presets")
    presets.set_defaults(func=_cmd_presets)
    return parser


def _one_line_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                      line: Any = None) -> None:
    """Warnings as `warning: ...` lines: users need the message, not the source line that raised it."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    if getattr(args, "allow_code_change", False):
        from .usercode import allow_code_changes

        allow_code_changes()
    try:
        return args.func(args)
    except BrokenPipeError:  # `vaelab presets | head -1`: the reader has all it wants
        _silence_stdout()
        return 0
    except KeyboardInterrupt:  # Ctrl-C: the user knows why it stopped; a traceback tells them nothing
        print(("\n" if sys.stderr.isatty() else "") + f"interrupted (vaelab {args.command})", file=sys.stderr)
        return 130
    except (VaelabError, OSError) as err:  # OSError: the user's paths, a full disk, a read-only folder
        if os.environ.get("VAELAB_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    except Exception as err:  # not one vaelab raised for the user to fix: its traceback is needed to fix it
        if os.environ.get("VAELAB_DEBUG"):
            raise
        traceback.print_exception(err, file=sys.stderr)
        print(_unexpected_error_line(err), file=sys.stderr)
        return UNEXPECTED_ERROR


def _unexpected_error_line(err: BaseException) -> str:
    """The last line under an unexpected exception's traceback: whose code raised it, and what to do."""
    frame = _raising_frame(err)
    if frame is not None and not _in_vaelab(frame.filename):
        return (f"error: {type(err).__name__} raised in your code ({frame.filename}, line {frame.lineno}); "
                "the traceback above shows how vaelab got there")
    return (f"internal error: {type(err).__name__}: {err}\n"
            f"  this is a bug in vaelab {__version__}, not a mistake of yours; please report it with the command "
            "you ran and the traceback above (VAELAB_DEBUG=1 lets the exception through to a debugger)")


def _raising_frame(err: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame of vaelab's or the user's own code in the traceback of `err`, passing over
    the standard library's and installed packages' (torch's, say); None if there is none."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if _in_vaelab(frame.filename) or not _in_library(frame.filename):
            return frame
    return None


def _in_library(filename: str) -> bool:
    """Is it the standard library's or an installed package's file?"""
    if filename.startswith("<"):  # <frozen runpy>, <string>
        return True
    path = Path(filename).resolve()
    stdlib = {Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")}
    return bool({"site-packages", "dist-packages"} & set(path.parts)) or any(path.is_relative_to(s) for s in stdlib)


def _in_vaelab(filename: str) -> bool:
    return Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's flush at exit does not raise again on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
