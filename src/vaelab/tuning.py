"""Hyperparameter search with Optuna (`vaelab tune`): a study folder of ordinary trial run folders.

The search is the config's [tune] section: what to vary (`tune.space`), how to choose the next
values (`tune.sampler`), when to stop a trial early (`tune.pruner`), what to optimize
(`tune.metric`). The study lives in an Optuna storage (SQLite in the study folder, or a server
that workers on several machines share); each worker is a process that asks the storage for a
trial, trains it into STUDY_DIR/trial-NNNN/ and tells the storage how it went. A worker's
heartbeat marks it alive: the trial of a worker that stops beating (kill -9, a lost machine) is
marked failed by the next worker that looks, and queued again with the same values as a new
trial (a new number, a new folder). The layout of the folder is runs.StudyFolder's.

Optuna is imported only here, and only when a study is run or read (`require`), so the rest of
vaelab works without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, RunConfig, config_from_dict, toml_value, trial_config
from .errors import VaelabError
from .runs import StudyFolder, is_study

GRACE_HEARTBEATS = 3  # a trial whose worker has not beaten for this many heartbeats is failed and re-run
MAX_RETRIES = 3  # how often one set of values is re-run after its workers died


class TuneError(VaelabError):
    """A study cannot be run or read: a missing package, a storage or folder that does not fit."""


# ---------------------------------------------------------------- registries

@dataclass(frozen=True)
class Metric:
    direction: str  # Optuna's: "maximize" or "minimize"
    text: str


METRICS: dict[str, Metric] = {
    "val_elbo": Metric("maximize", "best validation ELBO (nats per image)"),
    "val_nll": Metric("minimize", "importance-sampled NLL of the validation set at the end (nats per image, "
                                  "K = tune.nll_samples)"),
}


def _tpe(seed: int, space: dict[str, list]) -> Any:
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def _random(seed: int, space: dict[str, list]) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _grid(seed: int, space: dict[str, list]) -> Any:
    import optuna

    class Grid(optuna.samplers.GridSampler):
        def after_trial(self, *args: Any) -> None:
            """Nothing: Optuna's stops `study.optimize` when the grid is done, but the workers ask and
            tell, and stop by counting (`target_trials` is at most the grid's size)."""

    return Grid({key: SPACE_KINDS[spec[0]].grid(spec[1:]) for key, spec in space.items()}, seed=seed)


# tune.sampler -> the sampler, built from a seed and tune.space
SAMPLERS: dict[str, Callable[[int, dict[str, list]], Any]] = {"tpe": _tpe, "random": _random, "grid": _grid}


def _no_pruner() -> Any:
    import optuna

    return optuna.pruners.NopPruner()


def _median() -> Any:
    import optuna

    return optuna.pruners.MedianPruner()  # after 5 trials, a trial below the median at the same epoch stops


def _hyperband() -> Any:
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1)  # resources are epochs


# tune.pruner -> the pruner; it sees each epoch's validation ELBO (negated for a minimized metric)
PRUNERS: dict[str, Callable[[], Any]] = {"none": _no_pruner, "median": _median, "hyperband": _hyperband}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(args: list, integer: bool = False, log: bool = False) -> str | None:
    if len(args) != 2:
        return "expected exactly two bounds, lo and hi"
    lo, hi = args
    if not (_is_number(lo) and _is_number(hi)) or (integer and not (isinstance(lo, int) and isinstance(hi, int))):
        return f"lo and hi must be {'integers' if integer else 'numbers'}"
    if not lo < hi:
        return "lo must be less than hi"
    if log and lo <= 0:
        return "a log range needs lo > 0"
    return None


def _scalar_choices(values: list) -> bool:
    return all(v is None or isinstance(v, (bool, int, float, str)) for v in values)


def _options(values: list) -> list:
    """What Optuna chooses among: the values, or their JSON text where one is a list or table
    (Optuna's categorical values are scalars); `_chosen` turns the choice back."""
    return list(values) if _scalar_choices(values) else [json.dumps(v) for v in values]


def _chosen(values: list, option: Any) -> Any:
    return option if _scalar_choices(values) else json.loads(option)


def _check_choice(args: list) -> str | None:
    if not args:
        return "list at least one value to choose from"
    if len({json.dumps(v, sort_keys=True) for v in args}) != len(args):
        return "a value is listed twice"
    return None


@dataclass(frozen=True)
class SpaceKind:
    """One kind of `tune.space` entry ([KIND, ...]): what is wrong with its arguments, how a trial
    draws a value, the values config validation tries, and a grid sampler's values (None: it has none)."""

    check: Callable[[list], str | None]
    suggest: Callable[[Any, str, list], Any]
    extremes: Callable[[list], list]
    grid: Callable[[list], list | None]


SPACE_KINDS: dict[str, SpaceKind] = {
    "log": SpaceKind(lambda a: _check_range(a, log=True), lambda t, k, a: t.suggest_float(k, a[0], a[1], log=True),
                     lambda a: [float(a[0]), float(a[1])], lambda a: None),
    "float": SpaceKind(_check_range, lambda t, k, a: t.suggest_float(k, a[0], a[1]),
                       lambda a: [float(a[0]), float(a[1])], lambda a: None),
    "int": SpaceKind(lambda a: _check_range(a, integer=True), lambda t, k, a: t.suggest_int(k, a[0], a[1]),
                     lambda a: [a[0], a[1]], lambda a: list(range(a[0], a[1] + 1))),
    "choice": SpaceKind(_check_choice, lambda t, k, a: _chosen(a, t.suggest_categorical(k, _options(a))),
                        lambda a: list(a), _options),
}


# ---------------------------------------------------------------- packages and storage

def require(storage: str | None = None) -> None:
    """A TuneError with the install command if Optuna, or the storage's database driver, is missing."""
    if not _importable("optuna"):
        raise TuneError('vaelab tune needs Optuna, which is not installed: pip install "vaelab[optuna]"')
    scheme = (storage or "").split(":", 1)[0]
    drivers = POSTGRES_DRIVERS.get(scheme, ())
    if drivers and not any(_importable(driver) for driver in drivers):
        raise TuneError(f"the storage {_safe_url(storage or '')} needs a PostgreSQL driver ({' or '.join(drivers)}), "
                        'which is not installed: pip install "vaelab[postgres]"')


# URL scheme -> the drivers that serve it, in the order tried (SQLAlchemy 2.1 serves a bare
# postgresql:// with psycopg 3, earlier versions with psycopg2: `database_url` names the one installed)
POSTGRES_DRIVERS = {"postgresql": ("psycopg2", "psycopg"), "postgresql+psycopg2": ("psycopg2",),
                    "postgresql+psycopg": ("psycopg",)}


def database_url(url: str) -> str:
    """The storage URL as SQLAlchemy is to open it: postgresql:// with the driver that is installed."""
    scheme, sep, rest = url.partition("://")
    if scheme == "postgresql":
        driver = next((d for d in POSTGRES_DRIVERS[scheme] if _importable(d)), "psycopg2")
        return f"postgresql+{driver}{sep}{rest}"
    return url


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        rest = f"{credentials.split(':')[0]}:***@{host}"
    return f"{scheme}{sep}{rest}"


def open_storage(url: str, heartbeat: int) -> Any:
    """Optuna's RDB storage with a heartbeat: a trial whose worker has been silent GRACE_HEARTBEATS
    heartbeats is failed, and re-queued with the same values."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # SQLite: several workers write one file; wait for the lock rather than fail at once
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    kwargs: dict[str, Any] = {"heartbeat_interval": heartbeat, "grace_period": GRACE_HEARTBEATS * heartbeat}
    if retry is not None:
        kwargs["heartbeat_stale_trial_callback"] = retry(max_retry=MAX_RETRIES)
    else:  # Optuna before 4.9 calls it failed_trial_callback
        kwargs["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRIES)
    try:
        return optuna.storages.RDBStorage(database_url(url), engine_kwargs=engine, **kwargs)
    except Exception as err:  # SQLAlchemy's errors: a server that is down, a wrong password, a bad URL
        raise TuneError(f"cannot open the study's storage {_safe_url(url)}: {type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}") from None


# ---------------------------------------------------------------- the study

def description(folder: StudyFolder, config: RunConfig, storage: str) -> dict[str, Any]:
    """study.json's contents."""
    return {"study_name": folder.path.resolve().name, "storage": storage, "metric": config.tune.metric,
            "direction": METRICS[config.tune.metric].direction, "config": config.to_dict()}


def _same_search(a: RunConfig, b: RunConfig) -> bool:
    """Whether two configs describe one study: equal but for how many trials and workers."""
    def strip(config: RunConfig) -> dict[str, Any]:
        values = config.to_dict()
        values["tune"] = {k: v for k, v in values["tune"].items() if k not in ("trials", "workers")}
        return values
    return strip(a) == strip(b)


def load_study(folder: StudyFolder, config: RunConfig, storage: Any, worker: int = 0) -> Any:
    """The Optuna study of `folder`, created in the storage if it is not there yet."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # vaelab says what happens, a line a trial
    tune = config.tune
    return optuna.create_study(study_name=folder.path.resolve().name, storage=storage,
                               direction=METRICS[tune.metric].direction,
                               sampler=SAMPLERS[tune.sampler](tune.seed + worker, tune.space),
                               pruner=PRUNERS[tune.pruner](), load_if_exists=True)


def target_trials(config: RunConfig) -> int:
    """Trials to finish: tune.trials, or fewer when a grid has fewer points."""
    tune = config.tune
    if tune.sampler != "grid":
        return tune.trials
    return min(tune.trials, math.prod(len(SPACE_KINDS[s[0]].grid(s[1:])) for s in tune.space.values()))


@dataclass
class Counts:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0

    @property
    def done(self) -> int:
        return self.complete + self.pruned


def counts(study: Any) -> Counts:
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    return Counts(*(states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                              TrialState.RUNNING, TrialState.WAITING)))


def prepare(config: RunConfig | None, out: Path, storage: str | None, resume: bool,
            trials: int | None = None, workers: int | None = None) -> tuple[StudyFolder, RunConfig, str]:
    """The study folder, its config and its storage URL, checked before any work: a new study, or
    one to continue (--resume, or the command that started it run again)."""
    folder = StudyFolder(out)
    require(storage)
    if resume and not is_study(out):
        if not storage:
            raise TuneError(f"{out}: no study to resume (it has no study.json); a study of another machine "
                            "joins with vaelab tune --resume DIR --storage URL, DIR named as the study")
        config = _config_from_storage(folder, storage)
    elif is_study(out):
        found = folder.config()
        if config is not None and not _same_search(found, config):
            raise TuneError(f"{out} holds a study with another config; continue it with vaelab tune --resume {out} "
                            "or choose another --out")
        config = config or found  # the command's own tune.trials and tune.workers, run again
        storage = storage or folder.storage()
    elif config is None:
        raise TuneError(f"{out}: no study to resume (it has no study.json)")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TuneError(f"{out}: not an empty folder; choose a new or empty folder with --out")
    storage = storage or folder.default_storage()
    if not config.tune.space:
        raise ConfigError("tune.space: empty; name the config keys to search, e.g. \"optim.lr\" = [\"log\", 1e-4, 1e-2]")
    config = _with_counts(config, trials, workers)
    return folder, config, storage


def _with_counts(config: RunConfig, trials: int | None, workers: int | None) -> RunConfig:
    values = config.to_dict()
    for key, value in (("trials", trials), ("workers", workers)):
        if value is not None:
            values["tune"][key] = value
    try:
        return config_from_dict(values)
    except ConfigError as err:
        raise ConfigError(f"--{str(err).removeprefix('tune.')}") from None


def _config_from_storage(folder: StudyFolder, storage: str) -> RunConfig:
    """The config a study was started with, kept in its storage (a machine joining a study)."""
    import optuna

    name = folder.path.resolve().name
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage, 30))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage=database_url(storage))]
        raise TuneError(f"{_safe_url(storage)} holds no study named {name!r} (the study folder's name); "
                        f"it holds: {', '.join(names) or 'none'}") from None
    return config_from_dict(study.user_attrs["config"])


def start(folder: StudyFolder, config: RunConfig, storage_url: str) -> Any:
    """Write study.json and create (or find) the study in its storage; returns the storage."""
    folder.start(description(folder, config, storage_url))
    storage = open_storage(storage_url, config.tune.heartbeat)
    study = load_study(folder, config, storage)
    study.set_user_attr("config", config.to_dict())  # for machines that join with only the storage URL
    study.set_user_attr("metric", config.tune.metric)
    return storage


# ---------------------------------------------------------------- workers

def run_workers(folder: StudyFolder, config: RunConfig, storage_url: str, *, data_dir: str | None = None,
                log: Callable[[str], None] = print) -> list[tuple[int, int]]:
    """tune.workers processes on this machine, each `vaelab tune --resume DIR` on its share of the CPUs.

    Ctrl-C here is passed on to them (they run in their own session, so a terminal's Ctrl-C reaches
    only this process): each stops its trial, which is marked failed and not counted. Returns
    (worker, exit status) of those that did not end well.
    """
    from .threads import split_cpus

    workers = config.tune.workers
    shares = split_cpus(workers)  # disjoint where there are enough CPUs
    procs = []
    for i, cpus in enumerate(shares):
        command = [sys.executable, "-m", "vaelab", "tune", "--resume", str(folder.path), "--worker-index", str(i),
                   "--storage", storage_url, "--threads", str(len(cpus)), "--cpus", ",".join(map(str, sorted(cpus)))]
        command += ["--data-dir", data_dir] if data_dir else []
        procs.append(subprocess.Popen(command, start_new_session=True))
    log(f"{workers} workers: " + "; ".join(f"worker {i} pid {p.pid} on CPUs {sorted(shares[i])}"
                                            for i, p in enumerate(procs)))
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    return [(i, c) for i, c in enumerate(codes) if c != 0]


@dataclass
class Worker:
    """One process's part of a study: it asks for trials, trains them, tells how they went."""

    folder: StudyFolder
    config: RunConfig
    storage_url: str
    index: int = 0
    threads: int | None = None  # train.threads of its trials: its share of the CPUs, pinned
    data_dir: str | None = None
    log: Callable[[str], None] = print

    def run(self) -> None:
        """Trials until the study has tune.trials completed or pruned ones. A worker that finds the
        rest being run by others waits for them: one that dies has its trial failed after the grace
        period and re-queued, and this worker then runs it."""
        self.storage = open_storage(self.storage_url, self.config.tune.heartbeat)
        self.study = load_study(self.folder, self.config, self.storage, self.index)
        target, own_failures = target_trials(self.config), 0
        while True:
            trial = self._next_trial(target)
            if trial is _DONE:
                return
            if trial is None:
                time.sleep(min(self.config.tune.heartbeat, 2))
                continue
            own_failures += self._run_trial(trial)
            if own_failures >= max(3, target):
                raise TuneError(f"{own_failures} trials failed in this worker; see the errors above")

    def _next_trial(self, target: int) -> Any:
        """A new (or re-queued) trial; None while others run the last ones; _DONE when the study is.

        The count and the ask are one step for the workers of this machine (a lock file in the study
        folder), so two that finish at once do not both start the study's last trial."""
        import optuna

        with _locked(self.folder.path / ASK_LOCK):
            optuna.storages.fail_stale_trials(self.study)
            now = counts(self.study)
            if now.done >= target:
                return _DONE
            if now.done + now.running >= target:  # the rest run elsewhere; one that dies is re-queued
                return None
            with warnings.catch_warnings():  # "heartbeat ... with Study.optimize": _run_trial beats it itself
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                return self.study.ask()

    def _run_trial(self, trial: Any) -> int:
        """Train the trial, its heartbeat beating meanwhile, and tell the storage how it went; 1 if it failed."""
        import optuna
        from optuna.trial import TrialState

        value, state = None, TrialState.FAIL
        try:
            with _Heartbeat(self.storage, trial._trial_id, self.config.tune.heartbeat):
                value, state = self.objective(trial), TrialState.COMPLETE
        except optuna.TrialPruned as why:
            state = TrialState.PRUNED
            self.log(f"trial {trial.number}: pruned ({why})")
        except KeyboardInterrupt:
            self.study.tell(trial, state=TrialState.FAIL)  # not counted; a rerun of the study draws anew
            raise
        except Exception as err:  # a diverging trial (NonFiniteError), a combination that gives no valid config
            self.log(f"trial {trial.number}: failed: {type(err).__name__}: {err}")
        frozen = self.study.tell(trial, value, state=state)
        self.finished(frozen)
        return int(state == TrialState.FAIL)

    def objective(self, trial: Any) -> float:
        import optuna

        from .pipeline import train_run

        space = self.config.tune.space
        values = {key: SPACE_KINDS[spec[0]].suggest(trial, key, spec[1:]) for key, spec in space.items()}
        config = trial_config(self.config, values)  # a combination that gives no valid config fails here
        run = self.folder.claim_trial(trial.number)
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        retried = frozen.system_attrs.get("failed_trial")
        again = f" (re-running trial {retried}, whose worker stopped)" if retried is not None else ""
        self.log(f"trial {trial.number}{again}: " + ", ".join(f"{k} = {toml_value(v)}" for k, v in values.items())
                 + f" -> {run.path}")
        trial.set_user_attr("run_dir", run.path.name)
        trial.set_user_attr("config", {k: v for k, v in config.to_dict().items() if k != "tune"})  # best.toml's
        if self.threads is not None:
            config = trial_config(self.config, values | {"train.threads": self.threads})
        direction = -1.0 if METRICS[self.config.tune.metric].direction == "minimize" else 1.0

        best = [-math.inf]  # this trial's own: a re-queued trial carries the user attributes of the one it re-runs
        trial.set_user_attr("val_elbo", None)

        def report(record: dict[str, Any]) -> None:
            if "val_elbo" not in record:  # an epoch train.validate_every left out: nothing to judge it by
                return
            best[0] = max(best[0], record["val_elbo"])
            trial.set_user_attr("val_elbo", best[0])
            trial.report(direction * record["val_elbo"], record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}")

        summary = train_run(config, run.path, data_dir=self.data_dir, log=self.log, on_epoch=report,
                            raw=self._raw(config))
        trial.set_user_attr("val_elbo", summary["best_val_elbo"])
        return summary["best_val_elbo"] if self.config.tune.metric == "val_elbo" else self._val_nll(run.path, config)

    def _raw(self, config: RunConfig) -> Any:
        """The data, loaded once per worker (again only if a trial varies where it comes from)."""
        from .data import load_data

        key = (config.data.name, config.data.data_dir)
        if getattr(self, "_data_key", None) != key:
            self._data, self._data_key = load_data(config.data, self.data_dir), key
        return self._data

    def _val_nll(self, run_dir: Path, config: RunConfig) -> float:
        from .evaluate import evaluate_run

        k = self.config.tune.nll_samples
        self.log(f"val_nll: the validation set's importance-sampled NLL, K = {k}")
        result = evaluate_run(run_dir, "val", k, seed=0, memory_mb=config.evaluate.memory_mb, progress=False,
                              data_dir=self.data_dir, save=True)
        return result["nll"]

    def finished(self, trial: Any) -> None:
        """After a trial completed: a line saying so, and best.toml when it is the best so far."""
        from optuna.trial import TrialState

        if trial.state != TrialState.COMPLETE:
            return
        self.log(f"trial {trial.number}: {self.config.tune.metric} {trial.value:.3f}")
        if self.study.best_trial.number == trial.number:
            write_best(self.folder, self.study)


_DONE = object()
ASK_LOCK = ".ask.lock"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made if missing) for the block; another process waits for it."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Heartbeat:
    """A thread that records the trial's heartbeat in the storage every `interval` seconds while the
    block runs; a worker killed mid-trial stops beating, and the study fails and re-queues its trial."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="vaelab-heartbeat")

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a moment without the database: the next beat tries again
                pass

    def __enter__(self) -> _Heartbeat:
        self.storage.record_heartbeat(self.trial_id)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def write_best(folder: StudyFolder, study: Any) -> Path | None:
    """best.toml from the study's best completed trial (None if none has completed)."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    header = (f"# the best trial of study {study.study_name}: trial {best.number} "
              f"({best.user_attrs.get('run_dir', '')}), {study.user_attrs.get('metric', 'value')} {best.value}\n"
              f"# train it: vaelab train --config {folder.best_path}\n")
    return folder.write_best(best.user_attrs["config"], header)


# ---------------------------------------------------------------- the whole command

def tune(config: RunConfig | None, out: Path, *, storage: str | None = None, resume: bool = False,
         trials: int | None = None, workers: int | None = None, data_dir: str | None = None,
         worker_index: int | None = None, threads: int | None = None, cpus: list[int] | None = None,
         log: Callable[[str], None] = print) -> StudyFolder:
    """Run (or continue) the study in `out` until tune.trials trials are completed or pruned.

    With `worker_index`, this process is one worker of a study another process started (on
    `cpus`, training with `threads` threads); else it starts tune.workers workers, or with one,
    works itself.
    """
    folder, config, storage = prepare(config, Path(out), storage, resume, trials, workers)
    if worker_index is not None:
        return _work(folder, config, storage, worker_index, threads, cpus, data_dir, log)
    study_storage = start(folder, config, storage)
    log(f"vaelab tune: study {folder.path} ({config.tune.sampler} sampler, {config.tune.pruner} pruner, "
        f"{config.tune.metric}), {target_trials(config)} trials, {config.tune.workers} worker(s)")
    failed: list[tuple[int, int]] = []
    try:
        if config.tune.workers == 1:
            Worker(folder, config, storage, data_dir=data_dir, log=log).run()
        else:
            failed = run_workers(folder, config, storage, data_dir=data_dir, log=log)
    except KeyboardInterrupt:
        log(f"interrupted: running trials are marked failed and not counted. Continue the study with: "
            f"vaelab tune --resume {folder.path}")
        raise
    study = load_study(folder, config, study_storage)
    if failed:
        said = ", ".join(f"worker {i} " + (f"was killed (signal {-c})" if c < 0 else f"exited with status {c}")
                         for i, c in failed)
        if counts(study).done < target_trials(config):
            raise TuneError(f"{said}; see its lines above. Continue the study with: vaelab tune --resume {folder.path}")
        log(f"{said}; the other workers re-ran its trial and finished the study")
    log(final_lines(folder, study))
    return folder


def _work(folder: StudyFolder, config: RunConfig, storage: str, index: int, threads: int | None,
          cpus: list[int] | None, data_dir: str | None, log: Callable[[str], None]) -> StudyFolder:
    if cpus:
        os.sched_setaffinity(0, cpus)

    def say(text: str) -> None:
        log("\n".join(f"[worker {index}] {line}" for line in text.splitlines()))

    Worker(folder, config, storage, index, threads, data_dir, say).run()
    return folder


def final_lines(folder: StudyFolder, study: Any) -> str:
    """What a finished study says: its trials by state, the best, and where its config is."""
    now = counts(study)
    lines = [f"study {folder.path}: {now.complete} trials completed, {now.pruned} pruned, {now.failed} failed"]
    best = write_best(folder, study)
    if best is not None:
        trial = study.best_trial
        lines.append(f"best: trial {trial.number} ({trial.user_attrs.get('run_dir')}), "
                     f"{study.user_attrs.get('metric') or 'value'} {trial.value:.3f}; its config: {best} "
                     f"(vaelab train --config {best})")
    lines.append(f"the trials compared: vaelab compare {folder.path}; a page: vaelab report {folder.path}")
    return "\n".join(lines)


def study_of(folder: StudyFolder) -> Any:
    """The Optuna study of a study folder, for tables and pages (read, not run)."""
    config = folder.config()
    require(folder.storage())
    return load_study(folder, config, open_storage(folder.storage(), config.tune.heartbeat))


# ---------------------------------------------------------------- the study's figures

def draw_history(study: Any, path: Path) -> tuple[Path | None, str]:
    """Each completed trial's value and the best so far, by trial number; (path, "") or (None, why not)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from optuna.trial import TrialState

    from .figures import write_png

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        return None, "no trial has completed yet"
    pick = max if study.direction.name == "MAXIMIZE" else min
    best, running = [], None
    for trial in done:
        running = trial.value if running is None else pick(running, trial.value)
        best.append(running)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.scatter([t.number for t in done], [t.value for t in done], s=16, label="trial")
    ax.step([t.number for t in done], best, where="post", color="C1", label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers: no "2.5"
    ax.set_ylabel(study.user_attrs.get("metric") or "value")
    ax.legend(loc="best", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_png(fig, path), ""


def draw_importances(study: Any, path: Path) -> tuple[Path | None, str]:
    """Optuna's parameter importances as bars; (None, why not) with fewer than 2 completed trials
    or values that did not vary."""
    import optuna
    from matplotlib.figure import Figure

    from .figures import write_png
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = {key for key in study.user_attrs.get("config", {}).get("tune", {}).get("space", {})
              if len({json.dumps(t.params.get(key)) for t in done}) > 1}
    if len(done) < 2 or not varied:
        return None, (f"parameter importances need at least 2 completed trials whose values differ "
                      f"({len(done)} completed so far)")
    try:
        importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as err:
        return None, f"parameter importances could not be computed: {err}"
    fig = Figure(figsize=(6, 0.5 + 0.4 * len(importances)))
    ax = fig.add_subplot()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (share of the metric's variance)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_png(fig, path), ""
