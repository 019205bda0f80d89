"""What `vaelab train` runs end to end: training, evaluation, figures; and sweeps of such runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, config_from_dict, member_configs, parse_override, toml_value
from .config import _merge as merge_dicts
from .data.catalog import AUTO, BINARY, IMAGES, image_shape, not_binary
from .data.views import binarization_seed
from .progress import count
from .webpage import pixels_text
from .runs import RunFolder, SweepFolder
from .tracking import check_installed

# What a run must reach not to be warned about (`learned_little`): optimizer steps, and a test KL in
# nats per image (a collapsed posterior's is about 0); MIN_STEPS is the images presets' train.min_steps.
FEW_STEPS = 1000
COLLAPSED_KL = 0.5
MIN_STEPS = 2000
MIN_BATCHES = 10  # a user's small set: a batch at most a tenth of its images (`_batch_for_images`)

# Keys a finished or interrupted run may change when it is resumed: how long it trains, what is
# done at the end, how many CPU threads it computes with (the machine's business, not the
# model's) and which trackers it logs to. Anything else would make the checkpoint describe another model.
EXTENDABLE = ("train.epochs", "train.min_steps", "train.max_steps", "train.patience", "train.checkpoint_every",
              "train.time_budget", "train.threads",
              "evaluate.", "figures.", "log.")


def extended_config(config: RunConfig, overrides: list[str]) -> RunConfig:
    """The run's config with `--set` overrides given with --resume; only EXTENDABLE keys may change."""
    values = config.to_dict()
    for text in overrides:
        change = parse_override(text)
        key = text.split("=", 1)[0].strip()
        if not any(key == allowed or (allowed.endswith(".") and key.startswith(allowed)) for allowed in EXTENDABLE):
            raise ConfigError(f"{key}: cannot be changed when resuming (the checkpoint was trained with "
                              f"the run's own value); resumable changes: {', '.join(EXTENDABLE)}")
        values = merge_dicts(values, change)
    return config_from_dict(values)


def train_run(config: RunConfig, run_dir: Path, *, data_dir: str | None = None, resume: bool = False,
              log: Callable[[str], None] = print, raw: Any = None,
              on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train (or resume) one run, then evaluate it and draw its figures as its config says.

    `on_epoch` is called with each epoch's metrics record (see `Trainer.on_epoch`).

    Returns summary.json's contents, with the evaluation (if any) under "evaluation". Resuming a
    run that has finished does nothing (and says how to train it longer) unless its config now
    allows more training.
    """
    from .data import load_data
    from .data.views import make_views
    from .device import resolve_device
    from .parallel import from_environment
    from .training import Trainer

    folder = RunFolder(run_dir)
    if resume:  # before anything is loaded or said about resuming
        folder.refuse_if_locked()
    check_installed(config.log.backends)  # a tracker's missing package: before any work
    parallel, device = from_environment(resolve_device(config.train.device))
    if not parallel.is_main:
        log = _quiet
    if raw is None:
        raw = load_data(config.data, data_dir)
    log(f"data: {raw.name} from {raw.source}")
    if config.data.name == IMAGES and not resume:
        config = fit_to_images(config, raw, data_dir, log)
    if getattr(raw, "factors", None) is not None and not resume:
        config = fit_to_factors(config, raw, log)
    data = make_views(raw, config.data, device, config.train.train_subset)
    if not resume:
        config = fit_batch_to_data(config, len(data.train), log)
    if not resume and (config.model.custom or config.model.encoder or config.model.decoder):
        check_own_code(config, data.image_shape)
    if not resume and parallel.is_main:
        folder.create(config)
    parallel.barrier()
    trainer = Trainer(config, folder.path, data, log=log, parallel=parallel, on_epoch=on_epoch)
    log(f"training on {device}, network products in {trainer.precision_name} "
        f"(train.precision = {toml_value(config.train.precision)})")
    if trainer.epochs > config.train.epochs:
        log(f"train.epochs = {trainer.epochs}: {count(len(data.train), 'training image')} make "
            f"{count(trainer.steps_per_epoch, 'step')} an epoch, and train.min_steps = {config.train.min_steps} "
            f"asks for at least that many steps (train.min_steps=0 keeps train.epochs)")
    if resume and not folder.has_checkpoint():
        log("no checkpoint yet (stopped before its first one): starting from the beginning")
        trainer.forget_partial_metrics()
    elif resume:
        trainer.load_checkpoint()
        if trainer.state.finished and not trainer.reopen():
            summary = folder.raw_summary()
            log(finished_message(folder, config, trainer.state))
            if summary:
                return summary
            log("its summary.json is missing: scoring its best weights again")
        else:
            log(f"resuming at epoch {trainer.state.epoch + 1}, step {trainer.state.step_in_epoch}")
    with trainer.tracker.closing_on_error():  # Ctrl-C or an error: the trackers' runs end as killed or failed
        summary = trainer.fit()
    log(f"stopped: {summary['stop_reason']} ({summary['train_seconds']:.1f} s of training in all)")
    log(describe_elbo(summary, config))
    model = trainer.model
    model.run_config, model.weights_sha256 = config, summary["weights_sha256"]
    _evaluate(folder, config, model, data, parallel, summary, log)
    if parallel.is_main:
        _score_disentanglement(folder, config, model, data, log)
    trainer.tracker.log_evaluation(summary.get("evaluation"))
    warning = learned_little(summary, config, folder.path)
    if warning:
        log(warning)
    if parallel.is_main:
        trainer.tracker.log_figures(_draw(folder, config, model, data, log))
        folder.write_summary(summary)
    trainer.tracker.finish()
    parallel.barrier()
    return summary


def check_own_code(config: RunConfig, image_shape: tuple[int, int, int]) -> None:
    """Build a model of the user's code once before the run folder is made: a model or network that does
    not fit stops with its one line and leaves no folder behind, so the same command runs once it is fixed."""
    import torch

    from .model import build_model

    with torch.random.fork_rng(devices=[]):  # its weights are thrown away; the caller's random state is kept
        build_model(config.model, image_shape)


def fit_to_images(config: RunConfig, raw: Any, data_dir: str | None, log: Callable[[str], None]) -> RunConfig:
    """The config with the facts of a user's images filled in: size, channels, labels, where they are,
    and the binarization and likelihood when they are "auto" (chosen from the pixels, saying why)."""
    from .data import save_arrays
    from .likelihoods import likelihood_for_data

    values = config.to_dict()
    data, model = values["data"], values["model"]
    if data["binarization"] == BINARY and not getattr(raw, "binary", False):
        raise ConfigError(not_binary(raw.name))
    c, h, w = raw.image_shape
    where = data_dir or data["data_dir"]
    data |= {"image_size": [h, w], "channels": c, "label_names": list(raw.label_names),
             "data_dir": str(Path(where).expanduser().resolve()) if where else str(save_arrays(raw))}
    n = {split: len(getattr(raw, f"x_{split}")) for split in ("train", "val", "test")}
    if not n["val"]:  # make_views draws it from the training images
        n["val"] = max(1, round(data["val_fraction"] * n["train"]))
        n["train"] -= n["val"]
    log(f"images: {n['train']} train, {n['val']} val, {n['test']} test, {h}x{w}, "
        f"{'grey' if c == 1 else 'RGB'}; " + (f"{len(raw.label_names)} labels ({', '.join(raw.label_names[:10])}"
                                              f"{', ...' if len(raw.label_names) > 10 else ''})"
                                              if raw.labelled else "no labels"))
    if AUTO in (data["binarization"], model["likelihood"]):
        binarization, likelihood, reason = _binary_defaults(raw) or likelihood_for_data(raw.x_train)
        data["binarization"] = binarization if data["binarization"] == AUTO else data["binarization"]
        model["likelihood"] = likelihood if model["likelihood"] == AUTO else model["likelihood"]
        kept = " (the pixels kept in their levels, not binarized)" if data["binarization"] == "grey" else ""
        log(f"model.likelihood = {toml_value(model['likelihood'])}, data.binarization = "
            f"{toml_value(data['binarization'])}{kept}: {reason}")
    values["train"]["batch_size"] = _batch_for_images(values["train"]["batch_size"], n["train"], log)
    if model["conditional"]:
        if not raw.labelled:
            raise ConfigError("model.conditional: the images have no labels (put each class in its own sub-folder)")
        model["n_classes"] = max(2, len(raw.label_names))
    return config_from_dict(values)


def _binary_defaults(raw: Any) -> Any:
    """The view and likelihood of {0,1} images (dSprites), which `likelihood_for_data` would read as
    near-black grey; None for other data."""
    from .likelihoods import DataDefaults, _defaults

    if not getattr(raw, "binary", False):
        return None
    return DataDefaults(BINARY, _defaults("binary", "").likelihood, "the images are {0,1} (a binary factor data set)")


def fit_to_factors(config: RunConfig, raw: Any, log: Callable[[str], None]) -> RunConfig:
    """The config with the factors of a factor data set (dSprites, ...) recorded in data.factor_names /
    factor_sizes, and "auto" binarization and likelihood chosen for its pixels, saying so. A binary
    set's images are their own binarization whatever data.binarization asked: recorded as "binary"."""
    values = config.to_dict()
    data, model = values["data"], values["model"]
    grid = raw.factors
    data |= {"factor_names": list(grid.names), "factor_sizes": list(grid.sizes)}
    log("factors: " + ", ".join(f"{name} ({size})" for name, size in zip(grid.names, grid.sizes))
        + f"; {count(len(grid), 'image')} in all, trained on all of them")
    asked = data["binarization"]
    if getattr(raw, "binary", False) and asked not in (AUTO, BINARY):
        data["binarization"] = BINARY
        log(f'data.binarization = "binary": the images are {{0,1}}, their own binarization, so they are used as '
            f"they are ({toml_value(asked)} asked for)")
    if AUTO in (data["binarization"], model["likelihood"]):
        from .likelihoods import likelihood_for_data

        # the validation images are a random sample of the grid, already in memory
        defaults = _binary_defaults(raw) or likelihood_for_data(raw.x_val)
        data["binarization"] = defaults.binarization if data["binarization"] == AUTO else data["binarization"]
        model["likelihood"] = defaults.likelihood if model["likelihood"] == AUTO else model["likelihood"]
        log(f"model.likelihood = {toml_value(model['likelihood'])}, data.binarization = "
            f"{toml_value(data['binarization'])}: {defaults.reason}")
    return config_from_dict(values)


def _batch_for_images(batch: int, n_train: int, log: Callable[[str], None]) -> int:
    """A user's small set trains in batches of at most a tenth of its images: 160 images in batches
    of 128 are 2 steps an epoch, and a model learns from steps, not epochs."""
    fitted = min(batch, max(1, n_train // MIN_BATCHES))
    if fitted < batch:
        log(f"train.batch_size = {fitted}: at most a tenth of the {count(n_train, 'training image')}, "
            f"so that an epoch is {count(math.ceil(n_train / fitted), 'step')} ({batch} asked for)")
    return fitted


def fit_batch_to_data(config: RunConfig, n_train: int, log: Callable[[str], None]) -> RunConfig:
    """The config with a batch no larger than the training set (a small set or train.train_subset:
    then every image is in each step), saying so."""
    batch = config.train.batch_size
    if batch <= n_train:
        return config
    log(f"train.batch_size = {n_train}: the {batch} asked for is more than the {count(n_train, 'training image')}")
    values = config.to_dict()
    values["train"]["batch_size"] = n_train
    return config_from_dict(values)


def learned_little(summary: dict[str, Any], config: RunConfig, run_dir: Path) -> str | None:
    """One warning line when a run is too short to have learned (few steps) or its posterior
    collapsed (no active unit, or a KL near 0: every image decodes alike), with what to do."""
    steps, kl = summary["steps"], summary["test_kl"]
    active = (summary.get("evaluation") or {}).get("active_units")
    collapsed = kl < COLLAPSED_KL or active == 0
    few = steps < FEW_STEPS and not config.train.init_from  # a fine-tune started from trained weights
    if not few and not collapsed:
        return None
    found = [f"only {count(steps, 'optimizer step')}"] if few else []
    if collapsed:
        units = f", {active} active units" if active is not None else ""
        found.append(f"the posterior collapsed (test KL {kl:.2f} nats per image{units}), so every image "
                     "decodes alike")
    cap = config.train.max_steps
    more = (f"train.max_steps={max(MIN_STEPS, 2 * cap)}" if cap and steps >= cap
            else f"train.min_steps={max(MIN_STEPS, 2 * steps)}")
    return (f"warning: this model has learned little: {'; '.join(found)}. Train it longer: "
            f"vaelab train --resume {run_dir} --set {more}")


def finished_message(folder: RunFolder, config: RunConfig, state: Any) -> str:
    """That a resumed run has finished, and the --set that would let it train on."""
    cfg = config.train
    if cfg.max_steps and state.global_step >= cfg.max_steps:
        more = f"train.max_steps={2 * cfg.max_steps}"
    elif cfg.patience and state.epochs_since_best >= cfg.patience:
        more = f"train.patience={2 * cfg.patience}"
    elif cfg.time_budget and state.train_seconds >= cfg.time_budget * 60:
        more = f"train.time_budget={2 * cfg.time_budget:g}"
    else:
        more = f"train.epochs={max(2 * state.epoch, state.epoch + 1)}"
    return (f"{folder.path} has finished ({state.stop_reason}); nothing to train. To train it longer: "
            f"vaelab train --resume {folder.path} --set {more}")


def _evaluate(folder: RunFolder, config: RunConfig, model: Any, data: Any, parallel: Any, summary: dict[str, Any],
              log: Callable[[str], None]) -> None:
    """The importance-sampled evaluation the config asks for, logged before it is written."""
    from .evaluate import EvaluationError, evaluate_run

    k = config.evaluate.samples
    if not k:
        return
    log(f"evaluating the test set: {len(data.test)} images, K = {k} importance samples each")
    try:
        result = evaluate_run(folder.path, "test", k, seed=0, memory_mb=config.evaluate.memory_mb, data=data,
                              model=model, parallel=parallel, save=False)
    except EvaluationError as err:
        log(f"no NLL: {err}")
        return
    log(f"test NLL {result['nll']:.2f} \u00b1 {result['nll_stderr']:.2f} nats per image "
        f"(K = {result['k']} importance samples)")
    summary["evaluation"] = result
    if parallel.is_main:
        folder.save_evaluation(result)


def _score_disentanglement(folder: RunFolder, config: RunConfig, model: Any, data: Any,
                           log: Callable[[str], None]) -> None:
    """evaluate.disentanglement factor samples' scores (MIG, DCI, ...), printed before they are kept."""
    from .evaluate import EvaluationError, evaluate_disentanglement, format_disentanglement

    samples = config.evaluate.disentanglement
    if not samples:
        return
    log(f"scoring disentanglement over the factors: {samples} factor samples, seed 0")
    try:
        result = evaluate_disentanglement(folder.path, samples, 0, data=data, model=model, save=False)
    except EvaluationError as err:  # a user's images without factors: the run itself is kept
        log(f"no disentanglement scores: {err}")
        return
    log(format_disentanglement(result))
    folder.save_disentanglement(result)


def _draw(folder: RunFolder, config: RunConfig, model: Any, data: Any,
          log: Callable[[str], None]) -> list[tuple[str, Path | None, str]]:
    from .figures import make_figures

    drawn = make_figures(folder.path, config.figures.names, model=model, data=data)
    for name, path, note in drawn:
        log(f"figure {name}: {path}" if path else f"figure {name}: skipped ({note})")
    return drawn


def _quiet(*args: Any) -> None:
    pass


def describe_elbo(summary: dict[str, Any], config: RunConfig) -> str:
    """The final test ELBO line, saying the units, the binarization and the samples of z."""
    view = config.data.binarization
    seed = binarization_seed(config.data, "test")
    how = (f"{view} binarization, test images binarized once with seed {seed}" if seed is not None
           else pixels_text(view, image_shape(config.data)[0]))
    return (f"test ELBO {summary['test_elbo']:.2f} nats per image (reconstruction "
            f"{summary['test_reconstruction']:.2f}, KL {summary['test_kl']:.2f}; {how}; "
            f"{config.objective.samples} sample(s) of z)")


def sweep_run(config: RunConfig, sweep_dir: Path, *, data_dir: str | None = None,
              log: Callable[[str], None] = print, raw: Any = None) -> str:
    """Train every member into sweep_dir/<member>/ and write the comparison table (table.md, table.csv).

    Run again on the same folder (or with --resume), it finishes what is missing: members already
    finished are kept, an interrupted one is resumed, the others are trained.
    """
    from .data import load_data
    from .comparison import compare_runs

    sweep = SweepFolder(sweep_dir)
    sweep.start(config)
    if raw is None:  # the one loader, so a sweep over a user's images reads them as a single run does
        raw = load_data(config.data, data_dir)
    members = []
    for name, member_config in member_configs(config):
        member = RunFolder(sweep.path / name)
        members.append(member)
        if member.finished():
            log(f"--- sweep member {name}: finished already")
            continue
        log(f"--- sweep member {name}" + (": resuming" if member.exists else ""))
        try:
            train_run(member.config() if member.exists else member_config, member.path, raw=raw, log=log,
                      resume=member.exists)
        except KeyboardInterrupt:
            log(f"to finish the whole sweep and write its table: vaelab train --resume {sweep.path}")
            raise
    table = compare_runs([m.path for m in members])
    sweep.write_table("md", table)
    sweep.write_table("csv", compare_runs([m.path for m in members], csv=True))
    return table

