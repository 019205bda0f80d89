"""The Python API: train, open, evaluate, draw, report and explore runs from a notebook or a script.

    import vaelab
    run = vaelab.train("mnist-lab", epochs=5)        # a preset, overrides as keywords or a dict
    run.evaluate(samples=1000)                        # the same result the CLI prints as JSON, kept in the run
    run.evaluate_disentanglement()                    # MIG, DCI, SAP, ... over the data's factors (dsprites)
    run.figure("manifold")                            # shown inline in Jupyter, saved as PNG
    run.report()                                      # report.html, shown inline in Jupyter
    run.model.posterior(x)                            # the model's torch.distributions API
    run = vaelab.open_run("runs/x")                   # any folder the CLI made, sweeps and studies included
    run = vaelab.open_run("pretrained:mnist-2d")      # a trained model shipped in the package (a copy in runs/)
    study = vaelab.tune(config="search.toml", out="runs/search")  # a hyperparameter search ([tune], Optuna)

The `vaelab` command is a thin layer over these functions, so both make the same run folders.
Objects display themselves in Jupyter through its rich-display hooks (`_repr_png_`,
`_repr_html_`); nothing here imports Jupyter.
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, resolve_config
from .runs import (RunFolder, StudyFolder, SweepFolder, check_new_folder, is_pretrained, load_run, new_run_dir,
                   open_folder, refuse_shipped_resume, working_copy)


def keyword_overrides(keywords: Mapping[str, Any]) -> list[str]:
    """`epochs=5` -> ["train.epochs=5"]; a bare key must name one config field, a dotted key names it fully."""
    fields = _config_fields()
    overrides = []
    for key, value in keywords.items():
        if "." not in key:
            homes = fields.get(key, [])
            if len(homes) != 1:
                which = ("no config key has that name" if not homes else "several config keys have that name: "
                         + ", ".join(f"{h}.{key}" for h in homes))
                raise ConfigError(f"{key}: {which}; pass the dotted key, e.g. overrides={{'section.{key}': value}}")
            key = f"{homes[0]}.{key}" if homes[0] else key
        if isinstance(value, Mapping) and value:  # a table (model.args): one override per entry
            overrides += keyword_overrides({f"{key}.{name}": item for name, item in value.items()})
        else:
            overrides.append(f"{key}={json.dumps(value)}")  # JSON scalars and lists read back as TOML
    return overrides


def _config_fields() -> dict[str, list[str]]:
    """Field name -> the config sections that have a field of that name ("" for top-level keys)."""
    homes: dict[str, list[str]] = {}
    for section in dataclasses.fields(RunConfig):
        factory = section.default_factory
        names = [f.name for f in dataclasses.fields(factory)] if dataclasses.is_dataclass(factory) else [None]
        for name in names:
            home, key = (section.name, name) if name else ("", section.name)
            homes.setdefault(key, []).append(home)
    return homes


def make_config(preset: str | None = None, config: str | Path | None = None,
                overrides: Mapping[str, Any] | list[str] | None = None, **keywords: Any) -> RunConfig:
    """The run config: a preset (default mnist-lab), a TOML/JSON file over it, then overrides.

    `overrides` is {"model.latent_dim": 10} or ["model.latent_dim=10"]; keywords are single
    field names (epochs=5, latent_dim=10, lr=1e-3) when the name belongs to one section.
    """
    texts = list(overrides) if isinstance(overrides, list) else keyword_overrides(overrides or {})
    return resolve_config(preset, config, texts + keyword_overrides(keywords))


def _log_argument(log: Callable[[str], None] | str | list[str]) -> tuple[Callable[[str], None], list[str]]:
    """`log`: the function that prints progress lines, or the trackers to log to as `--log` takes them
    ("tensorboard", ["mlflow", "wandb"]): then (print, the log.backends override)."""
    if callable(log):
        return log, []
    names = [log] if isinstance(log, str) else list(log)
    return print, [f"log.backends={json.dumps([n.strip() for name in names for n in name.split(',') if n.strip()])}"]


def _code_overrides(model: Any, model_args: Mapping[str, Any] | None, encoder: Any, decoder: Any) -> list[str]:
    """model=, encoder=, decoder= (a class, an object or "FILE.py:CLASS") and model_args= as config overrides."""
    from .usercode import ref_for

    given = {"model.custom": model, "model.encoder": encoder, "model.decoder": decoder}
    texts = [f"{key}={json.dumps(ref_for(obj, key))}" for key, obj in given.items() if obj is not None]
    return texts + keyword_overrides({"model.args": dict(model_args)} if model_args else {})


def train(preset: str | None = None, *, config: str | Path | None = None,
          overrides: Mapping[str, Any] | list[str] | None = None, out: str | Path | None = None,
          data: Any = None, data_dir: str | None = None, log: Callable[[str], None] | str | list[str] = print,
          model: Any = None, model_args: Mapping[str, Any] | None = None, encoder: Any = None,
          decoder: Any = None, **keywords: Any) -> Run | Sweep:
    """Train a preset (default mnist-lab; "images" when `data` is given) into a new run folder and
    return it; a sweep preset trains all its members. Evaluation and figures follow as the config
    says, as with `vaelab train`.

    data: your own images: a folder, an .npy/.npz file, or in memory an array or tensor of images
    ((N, H, W), (N, H, W, C) or (N, C, H, W), uint8 or floats in [0, 1]) or a pair (images, labels).
    model: your own model (the vaelab.Model contract): a class, "FILE.py:CLASS", or an object (which
    only this Python process can rebuild); encoder, decoder: your networks inside vaelab's VAE. Each
    class is built with image_shape=(C, H, W) and the keywords of model_args it takes.
    log: a function given each progress line (default print), or trackers to log to: log=["tensorboard"]
    is overrides={"log.backends": ["tensorboard"]}.
    """
    from .data import load_images
    from .data.load import image_options
    from .pipeline import sweep_run, train_run
    from .device import resolve_device
    from .tracking import check_installed
    from .usercode import record_code

    raw, texts = None, list(overrides) if isinstance(overrides, list) else keyword_overrides(overrides or {})
    log, backends = _log_argument(log)
    texts = _code_overrides(model, model_args, encoder, decoder) + texts + backends
    in_memory = data is not None and not isinstance(data, (str, Path))
    if data is not None:
        preset = preset or "images"
        texts = ['data.name="images"'] + texts
        if not in_memory:
            texts.insert(1, f"data.data_dir={json.dumps(str(data))}")
    run_config = record_code(make_config(preset, config, texts, **keywords))
    run_dir = Path(out) if out is not None else new_run_dir(run_config)
    check_new_folder(run_dir, sweep=bool(run_config.sweep.members))  # fail before any work
    resolve_device(run_config.train.device)
    check_installed(run_config.log.backends)
    if in_memory:
        raw = load_images(data, **image_options(run_config.data))
    log(f"vaelab train: preset {run_config.name!r}, run folder {run_dir}")
    if run_config.sweep.members:
        sweep_run(run_config, run_dir, data_dir=data_dir, log=log)
        return Sweep(run_dir)
    train_run(run_config, run_dir, data_dir=data_dir, log=log, raw=raw)
    return Run(run_dir)



def resume(path: str | Path, *, overrides: Mapping[str, Any] | list[str] | None = None, data_dir: str | None = None,
           log: Callable[[str], None] | str | list[str] = print, allow_code_change: bool = False,
           **keywords: Any) -> Run | Sweep:
    """Continue an interrupted run or sweep; overrides of its length (epochs=40) train a finished run longer.

    A run of your own model code resumes only with the code it was trained with, unless
    `allow_code_change` (then the run records the change and the new digests).
    """
    from .pipeline import extended_config, sweep_run, train_run
    from .usercode import allow_code_changes

    if allow_code_change:
        allow_code_changes()
    refuse_shipped_resume(path)
    folder = open_folder(path)
    if isinstance(folder, StudyFolder):
        raise ConfigError(f"{folder.path} is a study (vaelab tune); continue it with vaelab tune --resume {folder.path}")
    # Another process training here: refuse before saying anything about resuming or touching config.json.
    for run in folder.members() if isinstance(folder, SweepFolder) else [folder]:
        run.refuse_if_locked()
    texts = list(overrides) if isinstance(overrides, list) else keyword_overrides(overrides or {})
    texts += keyword_overrides(keywords)
    log, backends = _log_argument(log)
    texts += backends
    log(f"vaelab train: resuming {folder.path}")
    if isinstance(folder, SweepFolder):
        if texts:
            raise ConfigError("a sweep resumes with its own sweep.json; change a member with "
                              "vaelab train --resume SWEEP_DIR/MEMBER --set ...")
        sweep_run(folder.config(), folder.path, data_dir=data_dir, log=log)
        return Sweep(folder.path)
    config = _checked_code(folder, folder.config())
    if texts:
        config = extended_config(config, texts)
        folder.write_config(config)
    train_run(config, folder.path, data_dir=data_dir, resume=True, log=log)
    return Run(folder.path)


def _checked_code(folder: RunFolder, config: RunConfig) -> RunConfig:
    """The run's config, once its model code is found unchanged (or the change allowed, recorded and adopted)."""
    from .usercode import check_recorded

    changed = check_recorded(config.code, str(folder.path))
    if not changed:
        return config
    folder.note_code_change(changed)
    code = {path: changed[path]["now"] if path in changed else sha for path, sha in config.code.items()}
    config = dataclasses.replace(config, code={path: sha for path, sha in code.items() if sha})  # gone: dropped
    folder.write_config(config)
    return config


def open_run(path: str | Path, *, out: str | Path | None = None, allow_code_change: bool = False) -> Run | Sweep:
    """The run (or sweep of runs) in a folder made by `vaelab train` or `vaelab.train`, or a trained
    model shipped in the package: "pretrained:NAME" (see `vaelab.pretrained()`).

    A shipped model's folder is read-only: the run returned is a copy of it in `out` (default
    runs/pretrained-NAME, made once and reused), where its evaluations, figures and pages go.
    allow_code_change: rebuild a model of your own from its code as it is now, though it changed
    since training (for this whole Python process; results record the change).
    """
    from .usercode import allow_code_changes

    if allow_code_change:
        allow_code_changes()
    if is_pretrained(path):
        return Run(working_copy(str(path), out)[0])
    if out is not None:
        raise ConfigError(f"out: only for a shipped model (pretrained:NAME); {path} is opened in place")
    folder = open_folder(path)
    if isinstance(folder, StudyFolder):
        return Study(folder.path)
    return Sweep(folder.path) if isinstance(folder, SweepFolder) else Run(folder.path)


def tune(preset: str | None = None, *, config: str | Path | None = None,
         overrides: Mapping[str, Any] | list[str] | None = None, out: str | Path | None = None,
         resume: str | Path | None = None, workers: int | None = None, trials: int | None = None,
         storage: str | None = None, data_dir: str | None = None, log: Callable[[str], None] = print,
         **keywords: Any) -> Study:
    """Search hyperparameters with Optuna as the config's [tune] section says, into a study folder
    (`out`, default runs/<name>-<time>) of one run folder per trial, and return it.

    `workers`, `trials` override tune.workers and tune.trials; `storage` is an Optuna storage URL
    (default: SQLite in the study folder; postgresql://... lets workers on several machines join:
    `resume=` the study folder, named alike on each, with the same `storage`). Run again on the same
    folder (or with `resume`), it finishes the study.
    """
    from .tuning import tune as run_study

    if resume is not None:
        if preset or config or overrides or keywords or out:
            raise ConfigError("--resume continues a study with its own study.json; drop --preset, --config, "
                              "--set and --out (--trials and --workers may change)")
        folder = run_study(None, Path(resume), storage=storage, resume=True, trials=trials, workers=workers,
                           data_dir=data_dir, log=log)
        return Study(folder.path)
    run_config = make_config(preset, config, overrides, **keywords)
    study_dir = Path(out) if out is not None else new_run_dir(run_config)
    folder = run_study(run_config, study_dir, storage=storage, trials=trials, workers=workers, data_dir=data_dir,
                       log=log)
    return Study(folder.path)


class Figure:
    """A PNG figure of a run; Jupyter shows it inline."""

    def __init__(self, name: str, path: Path | None, note: str) -> None:
        self.name, self.path, self.note = name, path, note

    def _repr_png_(self) -> bytes | None:
        return self.path.read_bytes() if self.path else None

    def __repr__(self) -> str:
        return f"Figure({self.name!r}, {str(self.path)!r})" if self.path else f"Figure({self.name!r}: {self.note})"


class Page:
    """An HTML page written into a run folder (report, explorer); Jupyter shows it inline."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _repr_html_(self) -> str:
        # An iframe keeps the page's own styles and Content-Security-Policy away from the notebook's.
        page = html.escape(self.path.read_text(encoding="utf-8"), quote=True)
        return f'<iframe srcdoc="{page}" style="width:100%;height:640px;border:0"></iframe>'

    def __repr__(self) -> str:
        return f"Page({str(self.path)!r})"


class Run:
    """A run folder: its config, metrics, summary, model, evaluations, figures, report and explorer."""

    def __init__(self, path: str | Path) -> None:
        self.folder = RunFolder(path).check()
        self.path = self.folder.path

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def config(self) -> RunConfig:
        return self.folder.config()

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """One record an epoch: train and validation ELBO and terms, nats per image."""
        return self.folder.metrics()

    @property
    def summary(self) -> dict[str, Any]:
        """How training ended and its test ELBO, if it describes the weights the folder holds now."""
        return self.folder.summary()

    @cached_property
    def model(self) -> Any:
        """The trained model (best weights, eval mode, CPU): prior(), posterior(x), likelihood(z)."""
        return load_run(self.path)

    def evaluation(self, split: str = "test") -> dict[str, Any] | None:
        """The evaluation of the current weights with the largest K, or None."""
        found = self.folder.current_evaluation(split)
        return found[1] if found else None

    def evaluate(self, samples: int = 5000, *, split: str = "test", seed: int = 0, memory_mb: float | None = None,
                 device: str | None = None, data_dir: str | None = None, progress: bool = True) -> dict[str, Any]:
        """ELBO, its terms, the importance-sampled NLL (K = samples), active units; kept in the run folder."""
        from .evaluate import evaluate_run

        result = evaluate_run(self.path, split, samples, seed, memory_mb, progress=progress, device=device,
                              data_dir=data_dir, save=False)
        self.folder.save_evaluation(result)
        return result

    def disentanglement(self) -> dict[str, Any] | None:
        """The disentanglement scores of the current weights with the most factor samples, or None."""
        found = self.folder.current_disentanglement()
        return found[1] if found else None

    def evaluate_disentanglement(self, samples: int | None = None, *, seed: int = 0, device: str | None = None,
                                 data_dir: str | None = None, progress: bool = True) -> dict[str, Any]:
        """The β-VAE and FactorVAE scores, MIG, DCI, SAP and the total correlation of the run's latent over its
        data's factors (`samples` factor samples, default 10000, drawn with `seed`); kept in the run folder. A
        run whose data has no factors (MNIST) is refused before any work."""
        from .evaluate import DISENTANGLEMENT_SAMPLES, evaluate_disentanglement

        samples = DISENTANGLEMENT_SAMPLES if samples is None else samples
        result = evaluate_disentanglement(self.path, samples, seed, progress=progress, device=device,
                                          data_dir=data_dir, save=False)
        self.folder.save_disentanglement(result)
        return result

    def figure(self, name: str, **options: Any) -> Figure:
        """Draw one figure (samples, manifold, ...) into figures/<name>.png; options override the run's [figures]."""
        return self.figures(name, **options)[0]

    def figures(self, *names: str, **options: Any) -> list[Figure]:
        """Draw figures (all that apply when no name is given) and return them."""
        from .figures import make_figures

        return [Figure(n, p, note) for n, p, note in make_figures(self.path, list(names) or None, **options)]

    def report(self, samples: int = 5000, *, evaluate: bool = True, figures: bool = True, progress: bool = True,
               **figure_options: Any) -> Page:
        """Write report.html (evaluating with K = samples if the current weights have no evaluation)."""
        from .report import write_report

        return Page(write_report(self.path, k=samples, evaluate=evaluate, figures=figures, progress=progress,
                                 **figure_options))

    def explore(self, n_points: int = 2000) -> Page:
        """Write explorer.html, a page that decodes the latent space live under the pointer."""
        from .explorer import write_explorer

        return Page(write_explorer(self.path, n_points=n_points))

    def compare(self, *others: str | Path | Run | Sweep, csv: bool = False, sort: str | None = None) -> str:
        """A Markdown (or CSV) table of this run and others (see `compare`)."""
        return compare(self, *others, csv=csv, sort=sort)

    def resume(self, **keywords: Any) -> Run:
        """Continue training (epochs=40 trains a finished run longer)."""
        return resume(self.path, **keywords)


class _RunGroup:
    """What a sweep and a study share: a folder of runs, their comparison table and their page."""

    folder_type: type  # SweepFolder or StudyFolder

    def __init__(self, path: str | Path) -> None:
        self.folder = self.folder_type(path).check()
        self.path = self.folder.path

    @property
    def config(self) -> RunConfig:
        """The folder's config: a sweep's, with its members' overrides; a study's base config, [tune] included."""
        return self.folder.config()

    @property
    def members(self) -> list[Run]:
        """The runs started so far, in order: a sweep's members, a study's trials."""
        return [Run(m.path) for m in self.folder.members() if m.exists]

    def table(self, csv: bool = False, sort: str | None = None) -> str:
        """The runs compared (see `compare`): for a sweep what table.md and table.csv hold; for a
        study the trials' table, with each trial's state."""
        return compare(self, csv=csv, sort=sort)

    def _repr_markdown_(self) -> str:
        return self.table()

    def report(self, samples: int = 5000, **options: Any) -> Page:
        from .report import write_report

        return Page(write_report(self.path, k=samples, **options))


class Sweep(_RunGroup):
    """A sweep folder: its member runs and their comparison table."""

    folder_type = SweepFolder

    def __repr__(self) -> str:
        return f"Sweep({str(self.path)!r}, {len(self.members)} members)"

    def resume(self) -> Sweep:
        return resume(self.path)


class Study(_RunGroup):
    """A study folder (`vaelab tune`): its trials' runs, their table, best.toml and its page."""

    folder_type = StudyFolder

    def __repr__(self) -> str:
        return f"Study({str(self.path)!r}, {len(self.members)} trial runs)"

    @property
    def best_config(self) -> Path | None:
        """best.toml, the best trial's config (for vaelab train --config), once a trial has completed."""
        return self.folder.best_path if self.folder.best_path.is_file() else None

    @property
    def optuna(self) -> Any:
        """The optuna.Study itself (trials, best_params, ...)."""
        from .tuning import study_of

        return study_of(self.folder)

    def resume(self, **keywords: Any) -> Study:
        return tune(resume=self.path, **keywords)


def compare(*runs: str | Path | Run | Sweep | Study, csv: bool = False, sort: str | None = None) -> str:
    """One table of several runs (a sweep stands for its members; a study alone gives its trials' table),
    Markdown or CSV: the config keys they differ in, the validation ELBO of the epoch each keeps, then
    the test numbers. `sort` ("val_elbo" or "val_nll") puts the best run first; None keeps the order given."""
    from .comparison import compare_runs

    return compare_runs([r.path if isinstance(r, (Run, Sweep, Study)) else r for r in runs], csv=csv, sort=sort)
