"""What `vaelab train` runs end to end: training, evaluation, figures; and sweeps of such runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import RunConfig, config_from_dict, parse_override
from .config import _merge as merge_dicts
from .io import write_json


def train_run(config: RunConfig, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
              log: Callable[[str], None] = print, raw: Any = None) -> dict[str, Any]:
    """Train (or resume) one run, then evaluate it and draw its figures as its config says.

    Returns summary.json's contents, with the evaluation (if any) under "evaluation".
    """
    from .data import load_dataset
    from .data.views import make_views
    from .evaluate import EvaluationError, evaluate_run
    from .plots import make_figures
    from .parallel import from_environment
    from .train import CHECKPOINT, Trainer, prepare_run_dir, resolve_device

    parallel, device = from_environment(resolve_device(config.train.device))
    if not parallel.is_main:
        log = _quiet
    if raw is None:
        raw = load_dataset(config.data.name, data_dir or config.data.data_dir)
    log(f"data: {raw.name} from {raw.source}")
    data = make_views(raw, config.data, device, config.train.train_subset)
    if not resume and parallel.is_main:
        prepare_run_dir(run_dir, config)
    parallel.barrier()
    trainer = Trainer(config, run_dir, data, log=log, parallel=parallel)
    log(f"training on {device}, network products in {trainer.precision_name} "
        f"(train.precision = {config.train.precision!r})")
    if resume and not (run_dir / CHECKPOINT).exists():
        log("no checkpoint yet (stopped before its first one): starting from the beginning")
        trainer.forget_partial_metrics()
    elif resume:
        trainer.load_checkpoint()
        log(f"run already finished ({trainer.state.stop_reason}); scoring and drawing its best weights"
            if trainer.state.finished else
            f"resuming at epoch {trainer.state.epoch + 1}, step {trainer.state.step_in_epoch}")
    started = time.perf_counter()
    summary = trainer.fit()
    summary["train_seconds"] = round(time.perf_counter() - started, 1)
    log(f"stopped: {summary['stop_reason']} ({summary['train_seconds']:.1f} s)")
    log(describe_elbo(summary, config))
    model = trainer.model
    model.run_config = config
    if config.evaluate.samples:
        try:
            summary["evaluation"] = evaluate_run(run_dir, "test", config.evaluate.samples, seed=0,
                                                 memory_mb=config.evaluate.memory_mb, data=data, model=model,
                                                 parallel=parallel)
            evaluation = summary["evaluation"]
            log(f"test NLL {evaluation['nll']:.2f} \u00b1 {evaluation['nll_stderr']:.2f} nats per image "
                f"(K = {evaluation['k']} importance samples)")
        except EvaluationError as err:
            log(f"no NLL: {err}")
    if parallel.is_main:
        for name, path, note in make_figures(run_dir, config.figures.names, model=model, data=data,
                                             **config.figures.options()):
            log(f"figure {name}: {path}" if path else f"figure {name}: skipped ({note})")
        write_json(run_dir / "summary.json", summary)
    parallel.barrier()
    return summary


def _quiet(*args: Any) -> None:
    pass


def describe_elbo(summary: dict[str, Any], config: RunConfig) -> str:
    """The final test ELBO line, saying the units, the binarization and the samples of z."""
    view = config.data.binarization
    how = (f"{view} binarization, test images binarized once with seed "
           f"{config.data.eval_seed if view == 'dynamic' else config.data.static_seed + 2}"
           if view != "grey" else "grey-level pixels")
    return (f"test ELBO {summary['test_elbo']:.2f} nats per image (reconstruction "
            f"{summary['test_reconstruction']:.2f}, KL {summary['test_kl']:.2f}; {how}; "
            f"{config.objective.samples} sample(s) of z)")


def member_configs(config: RunConfig) -> list[tuple[str, RunConfig]]:
    """(folder name, config) of each sweep member: the sweep's config with the member's overrides."""
    members = []
    base = config.to_dict()
    base["sweep"] = {"members": []}
    for member in config.sweep.members:
        values = base
        for text in member.split(";"):
            values = merge_dicts(values, parse_override(text.strip()))
        name = "_".join(text.strip().split(".")[-1] for text in member.split(";"))
        members.append((name, config_from_dict(values)))
    return members


def sweep_run(config: RunConfig, sweep_dir: Path, *, data_dir: str | None = None,
              log: Callable[[str], None] = print, raw: Any = None) -> str:
    """Train every member into sweep_dir/<member>/ and write the comparison table (table.md, table.csv)."""
    from .data import load_dataset
    from .io import atomic_write_bytes
    from .report import compare_runs

    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json(sweep_dir / "sweep.json", config.to_dict())
    if raw is None:
        raw = load_dataset(config.data.name, data_dir or config.data.data_dir)
    run_dirs = []
    for name, member in member_configs(config):
        log(f"--- sweep member {name}")
        run_dirs.append(sweep_dir / name)
        train_run(member, sweep_dir / name, raw=raw, log=log)
    table = compare_runs(run_dirs)
    atomic_write_bytes(sweep_dir / "table.md", table.encode())
    atomic_write_bytes(sweep_dir / "table.csv", compare_runs(run_dirs, csv=True).encode())
    return table
