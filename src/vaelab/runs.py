"""The run folder: the one module that knows its file names, their formats and how they relate.

    RUN_DIR/
        config.json             the resolved config
        metrics.jsonl           one line per epoch
        checkpoint.safetensors  weights, best weights, optimizer and RNG state, position in the epoch
        model.safetensors       the best weights, written when training ends
        summary.json            how training went and the test ELBO of the weights in model.safetensors
        eval-<split>-k<K>.json  evaluations, each naming the weights it scored by their SHA-256
        disentanglement-n<N>.json  disentanglement scores over N factor samples (`vaelab evaluate
                                --disentanglement`), naming the weights, the samples and the seed
        figures/<name>.png      figures; figures.json says what was drawn with which options
        report.html, explorer.html
        card.json, card.md      a model shipped in the package (see below): its model card
        tracking.json           which tracker runs (MLflow, W&B) this run logs to, and its last epoch logged
        tensorboard/            TensorBoard's event files (log.backends = ["tensorboard"])
        wandb/                  W&B's files, offline runs included (log.backends = ["wandb"])
        .lock                   present while a process trains here

    SWEEP_DIR/
        sweep.json              the sweep's config; its members are runs in sub-folders
        <member>/               a run folder each
        table.md, table.csv     the members compared, written when all are done

    STUDY_DIR/                  a hyperparameter search (`vaelab tune`, see tune.py)
        study.json              the study's name, metric, direction, storage URL (unless study.db) and base config
        study.db                the Optuna storage (SQLite) the workers share, unless study.json names another
        trial-<NNNN>/           a run folder per trial, NNNN its Optuna trial number
        best.toml               the best trial's full config (without [tune]), for vaelab train --config
        figures/                the optimization history and parameter importances (vaelab report)

    src/vaelab/pretrained/NAME/ a trained model shipped in the package (`pretrained:NAME`): a trimmed,
                            read-only run folder of SHIPPED_FILES (no checkpoint: nothing to resume) and
                            its test evaluation; commands that write work on a copy (`working_copy`)

Every number shown for a run comes from this module's `current_evaluation` and `summary`, which
hold only results of the weights the folder holds now (`fingerprint`): an evaluation of earlier
weights (an interrupted run that was resumed, a run evaluated while it trained) is never shown as
the run's metric.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors_bytes

from .config import ConfigError, RunConfig, _did_you_mean, config_from_dict, member_configs
from .errors import VaelabError
from .storage import (append_jsonl, atomic_path, atomic_write_bytes, load_tensors, load_tensors_bytes, read_json, read_jsonl,
                 save_tensors, write_json)

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "model.safetensors"
DISCRIMINATOR = "discriminator.safetensors"  # factorvae: its discriminator when training ended (vaelab.factorvae)
SUMMARY = "summary.json"
FIGURES = "figures"
FIGURE_LOG = "figures.json"
REPORT = "report.html"
EXPLORER = "explorer.html"
LOCK = ".lock"
SWEEP = "sweep.json"
TRACKING = "tracking.json"  # vaelab.tracking: the trackers' run ids, so a resumed run continues them
TENSORBOARD = "tensorboard"  # folder of TensorBoard's event files
WANDB = "wandb"  # folder W&B writes into when given the run folder as its dir
STUDY = "study.json"
STUDY_DB = "study.db"
BEST_CONFIG = "best.toml"
CODE_CHANGES = "code-changes.jsonl"  # each time a command went on with model code that changed since training
TABLES = {"md": "table.md", "csv": "table.csv"}
EVALUATION_SPLITS = ("test", "val")  # the splits an evaluation scores, each into its own file:
EVALUATION = re.compile(rf"eval-({'|'.join(EVALUATION_SPLITS)})-k(\d+)\.json")  # eval-<split>-k<K>.json
DISENTANGLEMENT = re.compile(r"disentanglement-n(\d+)\.json")  # disentanglement-n<N>.json, N factor samples
WEIGHTS_FORMAT = {"format": "vaelab-weights"}
PRETRAINED = "pretrained:"  # pretrained:NAME stands for the run folder of a model shipped in the package
SHIPPED_ROOT = Path(__file__).resolve().parent / "pretrained"
CARD = "card.json"  # a shipped model's card: how it was trained, its test numbers, its check, its fingerprint
CARD_TEXT = "card.md"  # the same card for people (`vaelab pretrained NAME`)
SHIPPED_FILES = (CONFIG, WEIGHTS, SUMMARY, METRICS, CARD, CARD_TEXT)  # and the card's test evaluation


# metrics.jsonl's keys training keeps weights by, and their names: "val_bound" where validation
# scores the IWAE bound (an IWAE run, objectives.validation_bound_k), else "val_elbo"
SELECTED_BY = {"val_bound": "IWAE bound", "val_elbo": "ELBO"}

_FINGERPRINTS: dict[tuple[str, int, int], str] = {}  # (file, size, mtime) -> fingerprint of its weights


class RunFolderError(VaelabError, ValueError):
    """A run folder whose files cannot be read or do not fit together; the message names the file."""


class NotARunError(RunFolderError):
    """A folder that is neither a run nor a sweep of runs; the message names it."""


def selection_key(records: list[dict[str, Any]]) -> str:
    """The key of SELECTED_BY the run of these metrics records kept its weights by."""
    return "val_bound" if any("val_bound" in r for r in records) else "val_elbo"


def kept_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record of the epoch whose weights training kept, or None before a validated one.

    Training keeps the weights of the first epoch with the highest validation score (its
    `selection_key`; a NaN is never best), so that record's val_* describe the weights kept.
    """
    key, best = selection_key(records), None
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and value == value and (best is None or value > best[key]):
            best = record
    return best


def evaluation_name(split: str, k: int) -> str:
    return f"eval-{split}-k{k}.json"


def disentanglement_name(samples: int) -> str:
    return f"disentanglement-n{samples}.json"


def weights_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    """The bytes of model.safetensors for these weights (safetensors orders tensors itself)."""
    return save_safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in state_dict.items()},
                                  metadata=WEIGHTS_FORMAT)


def fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the weights as model.safetensors stores them: the same hex digest as `sha256sum` of that file."""
    return hashlib.sha256(weights_bytes(state_dict)).hexdigest()


# ---------------------------------------------------------------- one run

@dataclass(frozen=True)
class RunFolder:
    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def file(self, name: str) -> Path:
        return self.path / name

    # -- what it is

    @property
    def exists(self) -> bool:
        """Whether a run has been started here (its config is written first)."""
        return self.file(CONFIG).is_file()

    def check(self) -> RunFolder:
        """Itself; a NotARunError naming the folder when it holds no run."""
        if self.path.exists() and not self.path.is_dir():
            raise NotARunError(f"{self.path}: a file, not a run folder (a run folder holds {CONFIG})")
        if not self.path.is_dir():
            if is_pretrained(self.path):  # Path() made "pretrained:NAME" a relative path
                raise NotARunError(f"{self.path}: a shipped model; open it with vaelab.open_run({str(self.path)!r}) "
                                   "or the vaelab commands, which copy it to a run folder of yours")
            raise NotARunError(f"{self.path}: no such run folder")
        if is_sweep(self.path):
            raise NotARunError(sweep_given_for_a_run(self.path))
        if is_study(self.path):
            raise NotARunError(f"{self.path}: a study of runs (vaelab tune), not one run; give one of its trials, "
                               f"e.g. {self.path / 'trial-0000'} (report and compare take the whole study)")
        if not self.exists:
            raise NotARunError(f"{self.path}: not a vaelab run folder (it has no {CONFIG})")
        return self

    def create(self, config: RunConfig) -> None:
        """Make the folder and write its config; refuse a folder that already holds a run."""
        if self.file(CHECKPOINT).exists() or self.exists:
            raise FileExistsError(f"{self.path} already holds a run; continue it with --resume {self.path} "
                                  "or choose another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"{self.path}: cannot write the run folder ({err.strerror})") from None
        self.write_config(config)

    # -- config

    def config(self) -> RunConfig:
        path = self.file(CONFIG)
        try:
            return config_from_dict(read_json(path))
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def config_dict(self) -> dict[str, Any]:
        """The config as stored, unchecked (for pages that show a damaged folder rather than refuse it)."""
        return _optional_json(self.file(CONFIG))

    def write_config(self, config: RunConfig) -> None:
        write_json(self.file(CONFIG), config.to_dict())

    # -- metrics, one record an epoch

    def metrics(self) -> list[dict[str, Any]]:
        path = self.file(METRICS)
        return [r for r in read_jsonl(path) if isinstance(r, dict)] if path.is_file() else []

    def kept_epoch(self) -> dict[str, Any] | None:
        """The metrics.jsonl record of the epoch whose weights the folder holds, or None before one
        (see `kept_record`)."""
        return kept_record(self.metrics())

    def append_metrics(self, record: dict[str, Any]) -> None:
        append_jsonl(self.file(METRICS), record)

    def drop_metrics_after(self, epoch: int) -> None:
        """Forget epochs logged after the checkpoint was written (a crash between the two), and a torn last line."""
        path = self.file(METRICS)
        if not path.exists():
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a torn line is expected after a kill; it is dropped here
            records = read_jsonl(path)
        kept = [r for r in records if r["epoch"] <= epoch]
        torn = not path.read_bytes().endswith(b"\n") and path.stat().st_size > 0
        if len(kept) != len(records) or torn:
            atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    # -- checkpoint and weights

    def has_checkpoint(self) -> bool:
        return self.file(CHECKPOINT).exists()

    def save_checkpoint(self, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
        save_tensors(self.file(CHECKPOINT), tensors, metadata)

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return load_tensors(self.file(CHECKPOINT))

    def training_state(self) -> dict[str, Any]:
        """Where training stands as the checkpoint records it ({} before the first checkpoint)."""
        if not self.has_checkpoint():
            return {}
        _, metadata = self.load_checkpoint()
        try:
            return json.loads(metadata["state"])
        except (KeyError, json.JSONDecodeError) as err:
            raise RunFolderError(f"{self.file(CHECKPOINT)}: no readable training state ({err})") from None

    def finished(self) -> bool:
        """Whether training has ended here (and not been reopened to train longer)."""
        return bool(self.training_state().get("finished")) and self.file(SUMMARY).is_file()

    def save_weights(self, state_dict: dict[str, torch.Tensor]) -> str:
        """Write model.safetensors; returns the weights' fingerprint."""
        data = weights_bytes(state_dict)
        atomic_write_bytes(self.file(WEIGHTS), data)
        return hashlib.sha256(data).hexdigest()

    def save_discriminator(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Write discriminator.safetensors: a factorvae run's discriminator, to estimate TC with later."""
        save_tensors(self.file(DISCRIMINATOR), state_dict, {"format": "vaelab-discriminator"})

    def weights(self) -> tuple[dict[str, torch.Tensor], str, Path]:
        """(best weights, their fingerprint, the file they came from).

        model.safetensors once training has ended; before that, the best weights in the checkpoint.
        Each file is read once, so the fingerprint describes exactly the tensors returned even
        while another process rewrites the checkpoint.
        """
        path = self.file(WEIGHTS)
        if path.exists():
            data = _read_bytes(path)
            return load_tensors_bytes(data, path)[0], hashlib.sha256(data).hexdigest(), path
        path = self.file(CHECKPOINT)
        tensors, _ = load_tensors_bytes(_read_bytes(path), path)
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        return best, fingerprint(best), path

    def fingerprint(self) -> str | None:
        """SHA-256 of the weights the folder holds now (see `weights`), or None if it holds none yet."""
        for name in (WEIGHTS, CHECKPOINT):
            path = self.file(name)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            if key not in _FINGERPRINTS:  # pages ask several times; a rewritten file has a new mtime
                try:
                    _FINGERPRINTS[key] = self.weights()[1]
                except (ValueError, FileNotFoundError):
                    return None
            return _FINGERPRINTS[key]
        return None

    # -- summary

    def summary(self) -> dict[str, Any]:
        """summary.json, if it describes the weights held now; else {} (training is going on again)."""
        summary = self.raw_summary()
        held = summary.get("weights_sha256")
        return summary if held is None or held == self.fingerprint() else {}

    def raw_summary(self) -> dict[str, Any]:
        return _optional_json(self.file(SUMMARY))

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.file(SUMMARY), summary)

    # -- evaluations

    def save_evaluation(self, result: dict[str, Any]) -> Path:
        path = self.file(evaluation_name(result["split"], result["k"]))
        write_json(path, result)
        return path

    def evaluations(self, split: str = "test") -> list[tuple[Path, dict[str, Any]]]:
        """Every readable evaluation of a split, (path, result), largest K first, newest first among equals."""
        found = []
        for path in self.path.glob(f"eval-{split}-k*.json"):
            match = EVALUATION.fullmatch(path.name)
            if not match:
                continue
            try:
                result = read_json(path)
            except (ValueError, OSError) as err:
                warnings.warn(f"{path}: skipped ({err})", stacklevel=2)
                continue
            if isinstance(result, dict):
                found.append((int(match.group(2)), path.stat().st_mtime, path, result))
        return [(path, result) for _, _, path, result in sorted(found, key=lambda f: f[:2], reverse=True)]

    def current_evaluation(self, split: str = "test") -> tuple[Path, dict[str, Any]] | None:
        """The evaluation of the weights held now with the largest K (the newest among equals), or None."""
        held = self.fingerprint()
        return next(((p, r) for p, r in self.evaluations(split) if held and r.get("weights_sha256") == held), None)

    def stale_evaluations(self, split: str = "test") -> list[tuple[Path, dict[str, Any]]]:
        """Evaluations of weights the folder no longer holds (or that do not say which weights they scored)."""
        held = self.fingerprint()
        return [(p, r) for p, r in self.evaluations(split) if not held or r.get("weights_sha256") != held]

    # -- disentanglement scores (vaelab.disentanglement over the run's factor grid)

    def save_disentanglement(self, result: dict[str, Any]) -> Path:
        """Write the scores: to a temporary file, read back and compared, then renamed into place, so a
        file of this name always holds whole, verified scores."""
        path = self.file(disentanglement_name(result["samples"]))
        with atomic_path(path) as tmp:
            write_json(tmp, result)
            if json.dumps(read_json(tmp)) != json.dumps(result):  # as text: a NaN score equals itself
                raise RunFolderError(f"{path}: the scores read back differ from those written; not saved")
        return path

    def disentanglements(self) -> list[tuple[Path, dict[str, Any]]]:
        """Every readable disentanglement result, (path, result), most samples first, newest first among equals."""
        found = []
        for path in self.path.glob("disentanglement-n*.json"):
            match = DISENTANGLEMENT.fullmatch(path.name)
            try:
                result = read_json(path) if match else None
            except (ValueError, OSError) as err:
                warnings.warn(f"{path}: skipped ({err})", stacklevel=2)
                continue
            if isinstance(result, dict):
                found.append((int(match.group(1)), path.stat().st_mtime, path, result))
        return [(path, result) for _, _, path, result in sorted(found, key=lambda f: f[:2], reverse=True)]

    def current_disentanglement(self) -> tuple[Path, dict[str, Any]] | None:
        """The scores of the weights held now with the most samples (the newest among equals), or None."""
        held = self.fingerprint()
        return next(((p, r) for p, r in self.disentanglements() if held and r.get("weights_sha256") == held), None)

    # -- figures and pages

    @property
    def figures_dir(self) -> Path:
        return self.file(FIGURES)

    def figure_path(self, name: str) -> Path:
        return self.figures_dir / f"{name}.png"

    def figure_log(self) -> dict[str, Any]:
        """What each figure in figures/ was drawn from: {name: {"weights_sha256", "options", "note"}}."""
        return _optional_json(self.figures_dir / FIGURE_LOG)

    def log_figures(self, drawn: dict[str, dict[str, Any]]) -> None:
        write_json(self.figures_dir / FIGURE_LOG, self.figure_log() | drawn)

    # -- experiment trackers (vaelab.tracking)

    def tracking_state(self) -> dict[str, Any]:
        """{"epoch": the last epoch the trackers were sent, "<backend>": {its run id, ...}}; {} before any."""
        return _optional_json(self.file(TRACKING))

    def write_tracking_state(self, state: dict[str, Any]) -> None:
        write_json(self.file(TRACKING), state)

    # -- the user's code

    def note_code_change(self, changed: dict[str, dict[str, str | None]]) -> None:
        """Record that a command went on (--allow-code-change) with code that differs from the training's."""
        for path, digests in changed.items():
            append_jsonl(self.file(CODE_CHANGES), {"file": path, **digests, "time": datetime.now().astimezone().isoformat(timespec="seconds"),
                                                   "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:2]])})

    def code_changes(self) -> list[dict[str, Any]]:
        path = self.file(CODE_CHANGES)
        return read_jsonl(path) if path.is_file() else []

    @property
    def report_path(self) -> Path:
        return self.file(REPORT)

    @property
    def explorer_path(self) -> Path:
        return self.file(EXPLORER)

    # -- the lock

    @contextlib.contextmanager
    def lock(self, active: bool = True) -> Iterator[None]:
        """Hold RUN_DIR/.lock while training: a second training of the same folder refuses to start.

        The lock names the process and host; a lock whose process is gone (a crash, kill -9) is
        stale and is taken over with a warning. Creating it also proves the folder is writable.
        """
        if not active:
            yield
            return
        path = self.file(LOCK)
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                _check_stale_lock(self.path, path)
            except OSError as err:
                raise OSError(f"{self.path}: cannot write to the run folder ({err.strerror})") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {socket.gethostname()}")
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    def refuse_if_locked(self) -> None:
        """A RunLockedError if another live process trains here: checked before a resume says or loads
        anything (the lock itself is taken when training starts)."""
        error = _live_lock_error(self.path, self.file(LOCK))
        if error is not None:
            raise error

    def locked_by(self) -> int | None:
        """The pid of a live process on this host training here, or None."""
        holder = _lock_holder(self.file(LOCK))
        return holder[0] if holder and holder[1] == socket.gethostname() and _alive(holder[0]) else None


class RunLockedError(VaelabError, FileExistsError):
    """Another live process is training in this run folder."""


def _lock_holder(path: Path) -> tuple[int, str] | None:
    try:
        words = path.read_text(errors="replace").split()
    except FileNotFoundError:
        return None
    return (int(words[0]), words[1]) if len(words) == 2 and words[0].isdigit() else (-1, "?")


def _live_lock_error(run_dir: Path, path: Path) -> RunLockedError | None:
    """The error to raise if another live process (or one on another host) holds the lock, else None."""
    holder = _lock_holder(path)
    if holder is None:
        return None
    pid, host = holder
    if host == socket.gethostname() and _alive(pid) and pid != os.getpid():
        return RunLockedError(f"{run_dir} is being trained by process {pid} (lock file {path}); "
                              "wait for it to finish or stop it")
    if host not in (socket.gethostname(), "?"):
        return RunLockedError(f"{run_dir} is locked by process {pid} on host {host}; if that run is no "
                              f"longer alive, delete {path}")
    return None


def _check_stale_lock(run_dir: Path, path: Path) -> None:
    """Raise if a live process holds the lock; otherwise remove the stale lock, saying so."""
    error = _live_lock_error(run_dir, path)
    if error is not None:
        raise error from None
    holder = _lock_holder(path)
    if holder is None:
        return
    pid, _ = holder
    warnings.warn(f"{path}: taking over a stale lock of process {pid}, which is gone", stacklevel=4)
    path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None


def _optional_json(path: Path) -> dict[str, Any]:
    value = read_json(path) if path.is_file() else {}
    return value if isinstance(value, dict) else {}


def check_new_folder(path: Path, sweep: bool = False) -> None:
    """Refuse, before any work, an --out where a new run (or, with `sweep`, a sweep) cannot start:
    a file, a folder holding a run or another sweep, or one holding files of its own. A new or empty
    folder is fine; so is a sweep's own folder for the sweep (it goes on with what is missing)."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: a file, not a folder; choose another --out")
    if not path.is_dir():
        return
    if RunFolder(path).exists or RunFolder(path).has_checkpoint():
        raise FileExistsError(f"{path} already holds a run; continue it with --resume {path} "
                              "or choose another --out")
    if is_study(path):
        raise FileExistsError(f"{path} holds a study (vaelab tune); continue it with vaelab tune --resume {path} "
                              "or choose another --out")
    if is_sweep(path):
        if not sweep:
            raise FileExistsError(f"{path} holds a sweep of runs; continue it with --resume {path} "
                                  "or choose another --out")
        return
    if any(path.iterdir()):
        raise FileExistsError(f"{path}: the folder holds other files and is not a run folder; "
                              "choose a new or empty folder with --out")


def new_run_dir(config: RunConfig, root: str | Path = "runs") -> Path:
    """runs/<preset>-<date>-<time>, with a suffix if two runs start in the same second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{config.name}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(root) / f"{config.name}-{stamp}-{suffix}"
    return path


# ---------------------------------------------------------------- a sweep of runs

def is_sweep(path: str | Path) -> bool:
    return (Path(path) / SWEEP).is_file()


@dataclass(frozen=True)
class SweepFolder:
    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def check(self) -> SweepFolder:
        if not is_sweep(self.path):
            raise NotARunError(f"{self.path}: not a vaelab sweep folder (it has no {SWEEP})")
        return self

    def config(self) -> RunConfig:
        path = self.path / SWEEP
        try:
            return config_from_dict(read_json(path))
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def start(self, config: RunConfig) -> None:
        """Make the folder and write sweep.json; a folder holding another sweep (or a run) is refused."""
        if RunFolder(self.path).exists:
            raise FileExistsError(f"{self.path} holds a single run, not a sweep; choose another --out")
        if is_sweep(self.path):
            if self.config().to_dict() != config.to_dict():
                raise FileExistsError(f"{self.path} holds a sweep with another config; continue it with "
                                      f"--resume {self.path} or choose another --out")
            return
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / SWEEP, config.to_dict())

    def members(self) -> list[RunFolder]:
        """The member run folders in the sweep's order (started or not)."""
        return [RunFolder(self.path / name) for name, _ in member_configs(self.config())]

    def table_path(self, kind: str) -> Path:
        return self.path / TABLES[kind]

    def write_table(self, kind: str, text: str) -> Path:
        path = self.table_path(kind)
        atomic_write_bytes(path, text.encode())
        return path


def sweep_given_for_a_run(path: Path) -> str:
    """The one-line error for a sweep folder given where one run is needed, naming a member to give
    instead and the commands that take the whole sweep."""
    try:
        names = [member.path.name for member in SweepFolder(path).members()]
    except (ValueError, OSError):  # an unreadable sweep.json: the advice stands without an example
        names = []
    example = f", e.g. {path / names[0]}" if names else ""
    return (f"{path}: a sweep of runs, not one run; give one of its members{example} "
            "(figures, report, compare and train --resume take the whole sweep)")


def open_folder(path: str | Path) -> RunFolder | SweepFolder | StudyFolder:
    """The run, sweep or study in a folder; a NotARunError naming it when it is none of them."""
    if is_study(path):
        return StudyFolder(path)
    return SweepFolder(path) if is_sweep(path) else RunFolder(path).check()


def run_folders(paths: list[str | Path]) -> list[RunFolder]:
    """Run folders named on a command line, a sweep or study standing for its members (the started
    ones), pretrained:NAME for a shipped model's read-only folder (for commands that only read)."""
    runs: list[RunFolder] = []
    for path in paths:
        folder = shipped_run(path) if is_pretrained(path) else open_folder(path)
        runs += [m for m in folder.members() if m.exists] if isinstance(folder, (SweepFolder, StudyFolder)) else [folder]
    return runs


# ---------------------------------------------------------------- a study (hyperparameter search)

def is_study(path: str | Path) -> bool:
    return (Path(path) / STUDY).is_file()


TRIAL_FOLDER = re.compile(r"trial-(\d{4,})")


@dataclass(frozen=True)
class StudyFolder:
    """A `vaelab tune` study: study.json, the storage (study.db by default), a run folder per trial, best.toml."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def check(self) -> StudyFolder:
        if not is_study(self.path):
            raise NotARunError(f"{self.path}: not a vaelab study folder (it has no {STUDY})")
        return self

    def description(self) -> dict[str, Any]:
        """study.json: {"study_name", "metric", "direction", "config", and "storage" unless study.db}."""
        value = read_json(self.path / STUDY)
        if not isinstance(value, dict) or not isinstance(value.get("config"), dict):
            raise RunFolderError(f"{self.path / STUDY}: not a study description (no \"config\" table)")
        return value

    def config(self) -> RunConfig:
        try:
            return config_from_dict(self.description()["config"])
        except ConfigError as err:
            raise ConfigError(f"{self.path / STUDY}: {err}") from None

    def default_storage(self) -> str:
        return f"sqlite:///{(self.path / STUDY_DB).resolve()}"

    def storage(self) -> str:
        """The storage URL the study's workers share."""
        return self.description().get("storage") or self.default_storage()

    def start(self, description: dict[str, Any]) -> None:
        """Make the folder and write study.json; a folder holding a run or a sweep is refused."""
        if RunFolder(self.path).exists or is_sweep(self.path):
            raise FileExistsError(f"{self.path} holds a run or a sweep, not a study; choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        if description.get("storage") == self.default_storage():
            description = {k: v for k, v in description.items() if k != "storage"}
        write_json(self.path / STUDY, description)

    def trial(self, number: int) -> RunFolder:
        return RunFolder(self.path / f"trial-{number:04d}")

    def claim_trial(self, number: int) -> RunFolder:
        """The new, empty run folder of trial `number`, made here and now: a FileExistsError if it
        exists, so that two workers never write one run folder."""
        run = self.trial(number)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            run.path.mkdir()
        except FileExistsError:
            raise FileExistsError(f"{run.path}: the run folder of trial {number} exists already; another worker "
                                  "of this study, or a copy of the folder, has it") from None
        return run

    def members(self) -> list[RunFolder]:
        """The trial run folders found here, in trial order."""
        found = [(int(m.group(1)), p) for p in self.path.iterdir() if (m := TRIAL_FOLDER.fullmatch(p.name))]
        return [RunFolder(p) for _, p in sorted(found)]

    @property
    def best_path(self) -> Path:
        return self.path / BEST_CONFIG

    def write_best(self, values: dict[str, Any], header: str = "") -> Path:
        """best.toml: the config `values` as TOML (checked to read back equal before it replaces the old one)."""
        import tomllib

        from .config import to_toml

        text = header + to_toml(values)
        kept = {k: v for k, v in values.items() if v is not None}
        if _without_none(tomllib.loads(text)) != _without_none(kept):
            raise RunFolderError(f"{self.best_path}: the config does not read back as written; not replaced")
        atomic_write_bytes(self.best_path, text.encode("utf-8"))
        return self.best_path

    @property
    def figures_dir(self) -> Path:
        return self.path / FIGURES

    def table_path(self, kind: str) -> Path:
        return self.path / TABLES[kind]


def _without_none(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _without_none(v) for k, v in tree.items() if v is not None}
    return tree


# ---------------------------------------------------------------- trained models shipped in the package

class UnknownPretrainedError(NotARunError):
    """pretrained:NAME names no shipped model; the message lists the shipped ones."""


def is_pretrained(path: str | Path) -> bool:
    """Does `path` name a shipped model (pretrained:NAME) rather than a folder?"""
    return str(path).startswith(PRETRAINED)


def shipped_names() -> list[str]:
    """The names of the models shipped in the package (folders of SHIPPED_ROOT holding a card), sorted."""
    if not SHIPPED_ROOT.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_ROOT.iterdir() if (p / CARD).is_file() and not p.name.startswith("."))


def shipped_run(ref: str | Path) -> RunFolder:
    """The read-only run folder of a shipped model, named as pretrained:NAME or NAME; an
    UnknownPretrainedError listing the shipped names (with the closest one) for any other."""
    name = str(ref)[len(PRETRAINED):] if is_pretrained(ref) else str(ref)
    names = shipped_names()
    if name not in names:
        known = ", ".join(names) if names else "none (this install ships no trained models)"
        raise UnknownPretrainedError(f"{PRETRAINED}{name}: no such shipped model{_did_you_mean(name, names)} "
                                     f"(shipped: {known}; `vaelab pretrained` lists them)")
    return RunFolder(SHIPPED_ROOT / name).check()


def readable_run(ref: str | Path) -> RunFolder:
    """The checked run folder `ref` names: a path, or pretrained:NAME (a shipped model's read-only folder)."""
    return shipped_run(ref) if is_pretrained(ref) else RunFolder(ref).check()


def shipped_name_of(path: str | Path) -> str | None:
    """NAME if `path` is the folder of a shipped model, else None."""
    resolved = Path(path).resolve()
    return resolved.name if resolved.parent == SHIPPED_ROOT and (resolved / CARD).is_file() else None


def run_label(path: str | Path) -> str:
    """How a run is named to the user: pretrained:NAME for a shipped model's folder, else its path."""
    name = shipped_name_of(path)
    return f"{PRETRAINED}{name}" if name else str(path)


def read_card(folder: RunFolder) -> dict[str, Any]:
    """card.json of a shipped model's folder (or of a working copy of one); {} where there is none."""
    return _optional_json(folder.file(CARD))


def shipped_files(folder: RunFolder) -> list[Path]:
    """The files a shipped model's folder holds: SHIPPED_FILES and its test evaluation(s)."""
    found = [folder.file(name) for name in SHIPPED_FILES if folder.file(name).is_file()]
    return found + [path for path, _ in folder.evaluations("test")]


def default_copy_dir(ref: str) -> Path:
    """Where commands work on a shipped model unless told otherwise: runs/pretrained-NAME."""
    return Path("runs") / f"pretrained-{shipped_run(ref).path.name}"


def working_copy(ref: str, out: str | Path | None = None) -> tuple[Path, bool]:
    """(a writable run folder holding the shipped model `ref`, whether it was made now).

    The shipped folder is never written: commands that write (evaluate, figures, report, explore)
    work on a copy at `out` (default runs/pretrained-NAME). A copy made earlier of the same
    weights is reused with what it gained (evaluations, figures); any other run there is refused.
    The copy is made in a temporary folder beside `out`, checked, then renamed into place.
    """
    source = shipped_run(ref)
    target = Path(out) if out is not None else default_copy_dir(ref)
    digest = read_card(source).get("weights_sha256")
    if RunFolder(target).exists:
        copy = RunFolder(target)
        if read_card(copy).get("weights_sha256") == digest and copy.fingerprint() == digest:
            return target, False
        raise FileExistsError(f"{target} holds another run than {PRETRAINED}{source.path.name} (or a copy of "
                              "other weights of it); choose another --out")
    check_new_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a run folder is as shareable as one training makes
    try:
        for path in shipped_files(source):
            shutil.copyfile(path, staging / path.name)  # not the package's modes: the copy is the user's to write
        if RunFolder(staging).fingerprint() != digest:
            raise RunFolderError(f"{source.file(WEIGHTS)}: its SHA-256 is not the card's weights_sha256 {digest}; "
                                 "the installed package is damaged, reinstall vaelab")
        if target.is_dir():
            target.rmdir()  # check_new_folder let only an empty folder through
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, True


def refuse_shipped_resume(path: str | Path) -> None:
    """A one-line error for resuming a shipped model or a copy of one: no optimizer state is shipped."""
    card = read_card(shipped_run(path)) if is_pretrained(path) else read_card(RunFolder(path))
    if card:
        what = "a shipped model" if is_pretrained(path) else f"a copy of the shipped model {PRETRAINED}{card.get('name')}"
        raise RunFolderError(f"{path}: {what}, with no optimizer state or checkpoint to resume; train it anew with: "
                             f"{card.get('command') or 'vaelab train'}")


# ---------------------------------------------------------------- the model in a run

def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Any:
    """The trained model of a run folder (or of a shipped model, pretrained:NAME), in eval mode; its
    config is `model.run_config`, its weights' fingerprint `model.weights_sha256`.

    Reads model.safetensors (the best weights), or for a run that has not finished, the best
    weights in its checkpoint. Nothing is unpickled. A model of the user's own is rebuilt from the
    code the run recorded: a file that is gone or changed stops here (`usercode.check_recorded`),
    unless changes are allowed, and then the folder records the change.
    """
    from .data.catalog import image_shape
    from .model import build_model
    from .usercode import check_recorded

    folder = readable_run(run_dir)
    config = folder.config()
    changed = check_recorded(config.code, str(folder.path))
    if changed:
        folder.note_code_change(changed)
    model = build_model(config.model, image_shape(config.data))
    weights, digest, path = folder.weights()
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise RunFolderError(f"{path}: weights do not match the run's {folder.file(CONFIG)} ({err})") from None
    model.run_config = config
    model.weights_sha256 = digest
    model.code_sha256 = {path: changed[path]["now"] if path in changed else sha
                         for path, sha in config.code.items()} or None
    model.code_changed = changed or None
    return model.to(device).eval()
