"""Experiment trackers: the run also logged to TensorBoard, MLflow and/or Weights & Biases.

`[log] backends = [...]` names them (keys of `BACKENDS`). The Trainer and `pipeline.train_run`
call a `Tracker` at four points: when training starts (`start`: the config as hyper-parameters,
the run folder's path), at each epoch's end (`log_epoch`: the record metrics.jsonl gets, images
a second, the mean gradient norm of its steps, figures every `log.figures_every` epochs), when
it ends (`log_summary`, `log_evaluation`, `log_figures`) and `finish`. The run folder stays the
record: a tracker that fails is warned about once and switched off, and training goes on.

Each backend is one small class behind the same methods; the packages are optional extras,
checked (`check_installed`) before any work. `tracking.json` in the run folder keeps each
tracker's run id and the last epoch sent, so a resumed run continues the same tracker runs and
sends no epoch twice.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import math
import netrc
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import VaelabError


class TrackingError(VaelabError, RuntimeError):
    """A tracker named in log.backends cannot be used (its package is not installed)."""


Scalar = float | int | str | bool


def flat_params(values: dict[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """A nested config as one level of dotted keys: {"model": {"latent_dim": 2}} -> {"model.latent_dim": 2};
    lists, tables left empty and None are written as JSON text (trackers take scalars only)."""
    out: dict[str, Scalar] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out |= flat_params(value, f"{prefix}{key}.")
        elif isinstance(value, (bool, int, float, str)):
            out[f"{prefix}{key}"] = value
        else:
            out[f"{prefix}{key}"] = json.dumps(value)
    return out


def metric_name(key: str) -> str:
    """metrics.jsonl's key as a tracker's: "val_elbo" -> "val/elbo", so dashboards group by split."""
    split, _, term = key.partition("_")
    return f"{split}/{term}" if split in ("train", "val", "test") and term else key


def _png_array(path: Path) -> Any:
    """(H, W, 3) uint8: a figure's PNG as RGB pixels."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------- the backends

class Backend:
    """One tracker. `saved` is what `start` returned the last time (tracking.json), {} for a new run."""

    modules: tuple[str, ...] = ()  # what must be importable
    extra: str = ""  # pip install "vaelab[extra]"

    def __init__(self, run_dir: Path, name: str, project: str, saved: dict[str, Any]) -> None:
        self.run_dir, self.name, self.project, self.saved = run_dir, name, project, saved

    @classmethod
    def missing(cls) -> list[str]:
        return [m for m in cls.modules if importlib.util.find_spec(m) is None]

    def start(self, params: dict[str, Scalar], resume_after: int) -> dict[str, Any]:
        """Open (or, with a saved id, reopen) the tracker's run; returns what to save to reopen it."""
        raise NotImplementedError

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def log_image(self, name: str, path: Path, step: int) -> None:
        raise NotImplementedError

    def log_summary(self, values: dict[str, Scalar], step: int) -> None:
        """The run's final numbers (test ELBO, NLL with its K) and texts (the weights' SHA-256)."""
        raise NotImplementedError

    def finish(self, status: str) -> None:
        """status: "finished", "failed" or "killed"."""
        raise NotImplementedError


class TensorBoard(Backend):
    """Event files in RUN/tensorboard/: `tensorboard --logdir runs` shows every run."""

    modules = ("tensorboard",)
    extra = "tensorboard"

    def start(self, params: dict[str, Scalar], resume_after: int) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        from .runs import TENSORBOARD

        # purge_step: a reader drops what an earlier process wrote from this epoch on, so an epoch
        # sent before a crash but after the last tracking.json is not shown twice
        self.writer = SummaryWriter(str(self.run_dir / TENSORBOARD), purge_step=resume_after + 1 if resume_after else None)
        self.writer.add_text("run_folder", str(self.run_dir), resume_after)
        self.writer.add_text("config", "\n".join(f"    {k} = {v}" for k, v in params.items()), resume_after)
        if not resume_after:  # the HPARAMS tab: one session per run folder
            for summary in hparams(params, {"val/elbo": 0.0, "test/elbo": 0.0}):
                self.writer.file_writer.add_summary(summary)
        return {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # each epoch: a crash keeps what was shown

    def log_image(self, name: str, path: Path, step: int) -> None:
        self.writer.add_image(f"figures/{name}", _png_array(path), step, dataformats="HWC")
        self.writer.flush()

    def log_summary(self, values: dict[str, Scalar], step: int) -> None:
        for key, value in values.items():
            if isinstance(value, str):
                self.writer.add_text(key, value, step)
            else:
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, status: str) -> None:
        self.writer.close()


class MLflow(Backend):
    """A run in MLflow's store: $MLFLOW_TRACKING_URI, else MLflow's own default in the working
    directory (mlflow.db, artifacts in mlruns/), made absolute so that a resume from elsewhere finds it."""

    modules = ("mlflow", "sqlalchemy", "alembic")  # the two are what MLflow's local SQLite store needs
    extra = "mlflow"

    @classmethod
    def missing(cls) -> list[str]:
        remote = os.environ.get("MLFLOW_TRACKING_URI", "sqlite").split(":")[0] not in ("sqlite", "")
        return [m for m in (cls.modules[:1] if remote else cls.modules) if importlib.util.find_spec(m) is None]

    def start(self, params: dict[str, Scalar], resume_after: int) -> dict[str, Any]:
        from mlflow.tracking import MlflowClient

        # resuming, the run's own store, wherever the command runs; unless MLFLOW_TRACKING_URI names another
        saved_uri = self.saved.get("tracking_uri")
        uri = self._uri() if os.environ.get("MLFLOW_TRACKING_URI") or not saved_uri else saved_uri
        self.client = MlflowClient(tracking_uri=uri)
        run_id = self.saved.get("run_id") if saved_uri == uri else None
        known = self._reopen(run_id) if run_id else None
        if known is None:
            run = self.client.create_run(self._experiment(), run_name=self.name,
                                         tags={"vaelab.run_folder": str(self.run_dir)})
            run_id, known = run.info.run_id, {}
        self.run_id = run_id
        self._log_params(params, known)
        return {"run_id": run_id, "tracking_uri": uri}

    def _reopen(self, run_id: str) -> dict[str, str] | None:
        """The params of the saved run, set running again; None if the store no longer has it."""
        from mlflow.exceptions import MlflowException

        try:
            known = self.client.get_run(run_id).data.params
        except MlflowException:  # deleted, or the store was replaced: a new run
            return None
        self.client.update_run(run_id, status="RUNNING")
        return known

    @staticmethod
    def _uri() -> str:
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/"):  # relative: the working directory's
            uri = prefix + str(Path(uri[len(prefix):]).resolve())
        return uri

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.project)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.project)
        except Exception:  # another process made it first
            return self.client.get_experiment_by_name(self.project).experiment_id

    def _log_params(self, params: dict[str, Scalar], known: dict[str, str]) -> None:
        """New params; a value changed by a resume (train.epochs) is a tag: MLflow's params never change."""
        from mlflow.entities import Param, RunTag

        new = [Param(k, str(v)) for k, v in params.items() if k not in known]
        changed = [RunTag(f"resumed.{k}", str(v)) for k, v in params.items() if k in known and known[k] != str(v)]
        for start in range(0, len(new), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=new[start:start + 100])
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = _millis()
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_image(self, name: str, path: Path, step: int) -> None:
        from PIL import Image

        with Image.open(path) as image:
            self.client.log_image(self.run_id, image.convert("RGB"), key=f"figures/{name}", step=step)

    def log_summary(self, values: dict[str, Scalar], step: int) -> None:
        from mlflow.entities import Metric, RunTag

        now = _millis()
        self.client.log_batch(self.run_id,
                              metrics=[Metric(k, float(v), now, step) for k, v in values.items()
                                       if not isinstance(v, str)],
                              tags=[RunTag(k, v) for k, v in values.items() if isinstance(v, str)])

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status.upper())


class WandB(Backend):
    """A W&B run, its files in RUN/wandb/: online when the user is logged in (an API key in the
    environment or ~/.netrc), else offline (never waiting on the network; `wandb sync` uploads it
    later). WANDB_MODE, when set, decides instead."""

    modules = ("wandb",)
    extra = "wandb"

    def start(self, params: dict[str, Scalar], resume_after: int) -> dict[str, Any]:
        import wandb

        run_id = self.saved.get("run_id") or uuid.uuid4().hex[:8]
        params = params | {"run_folder": str(self.run_dir)}
        self.run = wandb.init(project=self.project, name=self.name, id=run_id, resume="allow",
                              dir=str(self.run_dir), config=None if self.saved else params,
                              mode=os.environ.get("WANDB_MODE") or ("online" if logged_in() else "offline"),
                              reinit="create_new", settings=wandb.Settings(console="off", silent=True))
        if self.saved:
            self.run.config.update(params, allow_val_change=True)  # a resume may lengthen the run
        return {"run_id": run_id}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_image(self, name: str, path: Path, step: int) -> None:
        import wandb

        self.run.log({f"figures/{name}": wandb.Image(str(path))}, step=step)

    def log_summary(self, values: dict[str, Scalar], step: int) -> None:
        self.run.summary.update(values)

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


def logged_in() -> bool:
    """Whether W&B has credentials, read without the network: WANDB_API_KEY, an identity token
    file, or the W&B host's entry in ~/.netrc (where `wandb login` writes the key)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0].split(":")[0]
    try:
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _millis() -> int:
    import time

    return int(time.time() * 1000)


# name -> backend; config.REGISTRIES points log.backends here
BACKENDS: dict[str, type[Backend]] = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}


def check_installed(backends: list[str]) -> None:
    """A TrackingError naming the install command for the first backend whose package is missing."""
    for name in backends:
        missing = BACKENDS[name].missing()
        if missing:
            extra = BACKENDS[name].extra
            raise TrackingError(f"log.backends: {name} needs {', '.join(missing)}, not installed here: "
                                f'pip install "vaelab[{extra}]"')


# ---------------------------------------------------------------- the trainer's side

class Tracker:
    """The backends of one run, as the Trainer sees them: a failing backend is warned about once and
    dropped; nothing here raises into training once `start` has opened the backends."""

    def __init__(self, config: Any, run_dir: str | Path, enabled: bool = True,
                 warn: Callable[[str], None] | None = None) -> None:
        check_installed(config.log.backends)  # on every rank: all stop alike, before any work
        self.config, self.run_dir = config, Path(run_dir).resolve()
        self.names = list(config.log.backends) if enabled else []
        self.warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
        self.active: dict[str, Backend] = {}
        self.started = False
        self.last_epoch = 0
        self.state: dict[str, Any] = {}  # tracking.json's contents

    # -- opening and closing

    def start(self, trainer: Any = None) -> None:
        """Open every backend (again only after `finish`); `trainer` gives epoch-end figures their model."""
        self.trainer = trainer
        if self.started or not self.names:
            return
        from .runs import RunFolder

        self.state = state = RunFolder(self.run_dir).tracking_state()
        self.last_epoch = int(state.get("epoch", 0))
        params = flat_params(self.config.to_dict())
        name = self.config.log.run_name or self.run_dir.name
        for backend_name in self.names:
            backend = BACKENDS[backend_name](self.run_dir, name, self.config.log.project, state.get(backend_name, {}))
            saved = self._call(backend, backend_name, "start", params, self.last_epoch)
            if saved is not None:
                self.active[backend_name] = backend
                state[backend_name] = saved
        self.started = True
        self._save()
        atexit.register(self.finish, "failed")  # a script that never reaches finish(): close what is open

    def finish(self, status: str = "finished") -> None:
        """Close every backend's run (status "finished", "failed" or "killed")."""
        atexit.unregister(self.finish)
        for name, backend in list(self.active.items()):
            self._call(backend, name, "finish", status)
        self.active.clear()
        self.started = False

    @contextlib.contextmanager
    def closing_on_error(self) -> Iterator[None]:
        """Within the block, an exception (Ctrl-C included) ends the trackers' runs as killed or failed."""
        try:
            yield
        except BaseException as err:
            self.finish("killed" if isinstance(err, KeyboardInterrupt) else "failed")
            raise

    # -- what is logged

    def log_epoch(self, record: dict[str, Any]) -> None:
        """metrics.jsonl's record of an epoch, images a second, and every log.figures_every epochs the figures."""
        epoch = record["epoch"]
        if not self.active or epoch <= self.last_epoch:  # sent before an interruption: not twice
            return
        metrics = {metric_name(k): float(v) for k, v in record.items()
                   if k not in ("epoch", "step") and isinstance(v, (int, float)) and math.isfinite(v)}
        metrics["step"] = float(record["step"])
        images = self._epoch_images()
        if images and record.get("seconds"):
            metrics["images_per_second"] = images / record["seconds"]
        norm = self._gradient_norm()
        if norm is not None:
            metrics["grad_norm"] = norm
        self._each("log_metrics", metrics, epoch)
        every = self.config.log.figures_every
        last = self.trainer is not None and epoch >= self.trainer.planned_epochs()  # the final figures follow
        if every and epoch % every == 0 and not last:
            self._epoch_figures(epoch)
        self.last_epoch = self.state["epoch"] = epoch
        self._save()

    def _epoch_images(self) -> int:
        """Training images the trainer's epoch went through (called before it moves to the next)."""
        trainer = self.trainer
        if trainer is None:
            return 0
        return min(trainer.state.step_in_epoch * trainer.config.train.batch_size, len(trainer.data.train))

    def _gradient_norm(self) -> float | None:
        """The mean over the epoch's steps of the gradient's norm (the trainer sums them while a tracker
        is on); None where no step kept its gradients (the compiled whole Adam step)."""
        sums = None if self.trainer is None else self.trainer.grad_norms
        if sums is None:
            return None
        total, count = sums.tolist()
        mean = total / count if count else math.nan
        return mean if math.isfinite(mean) else None

    def _epoch_figures(self, epoch: int) -> None:
        """The run's figures of the weights so far, drawn into a temporary folder: figures/ keeps the final ones."""
        import torch

        from .figures import make_figures

        if self.trainer is None:
            return
        with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=[]):
            try:
                drawn = make_figures(self.run_dir, self.config.figures.names, model=self.trainer.evaluated_model(),
                                     data=self.trainer.data, out_dir=tmp)
            except Exception as err:  # a figure is not worth stopping training for
                self.warn(f"warning: log.figures_every: figures of epoch {epoch} not drawn ({_one_line(err)})")
                return
            self.log_figures(drawn, epoch)

    def log_figures(self, drawn: list[tuple[str, Path | None, str]], epoch: int | None = None) -> None:
        """make_figures' results, as images at `epoch` (default: the last one sent)."""
        for name, path, _ in drawn:
            if path is not None:
                self._each("log_image", name, Path(path), epoch or self.last_epoch)

    def log_summary(self, summary: dict[str, Any]) -> None:
        """summary.json's numbers: the test ELBO and its terms, the best epoch, the weights' SHA-256."""
        keys = {"test_elbo": "test/elbo", "test_reconstruction": "test/reconstruction", "test_kl": "test/kl",
                "best_val_elbo": "val/best_elbo", "best_val_bound": "val/best_bound",
                "test_bound": "test/bound", "best_epoch": "best_epoch", "epochs_run": "epochs_run",
                "train_seconds": "train_seconds", "weights_sha256": "weights_sha256", "stop_reason": "stop_reason"}
        values = {name: summary[k] for k, name in keys.items() if isinstance(summary.get(k), (int, float, str))}
        self._each("log_summary", values | {"run_folder": str(self.run_dir)}, self.last_epoch)

    def log_evaluation(self, result: dict[str, Any] | None) -> None:
        """An importance-sampled evaluation: its NLL with K, active units and the weights' SHA-256 (its ELBO
        is the summary's)."""
        if not result:
            return
        split = result.get("split", "test")
        values: dict[str, Scalar] = {f"{split}/{k}": result[k] for k in ("nll", "nll_stderr", "active_units", "bits_per_dim")
                                     if isinstance(result.get(k), (int, float)) and math.isfinite(result[k])}
        values |= {f"{split}/k": result["k"], "weights_sha256": str(result.get("weights_sha256"))}
        self._each("log_summary", values, self.last_epoch)

    # -- failures

    def _each(self, method: str, *args: Any) -> None:
        for name, backend in list(self.active.items()):
            self._call(backend, name, method, *args)

    def _call(self, backend: Backend, name: str, method: str, *args: Any) -> Any:
        """backend.method(*args); an exception switches the backend off with one warning (None returned)."""
        try:
            result = getattr(backend, method)(*args)
            return {} if result is None else result
        except Exception as err:
            self.active.pop(name, None)
            self.warn(f"warning: log.backends: {name} failed in {method} ({_one_line(err)}); it is off for the "
                      f"rest of this run, which goes on (metrics.jsonl has every epoch)")
            if method != "finish":
                with contextlib.suppress(Exception):
                    backend.finish("failed")
            return None

    def _save(self) -> None:
        from .runs import RunFolder

        try:
            RunFolder(self.run_dir).write_tracking_state(self.state)
        except OSError as err:  # the trackers' bookkeeping: a full disk stops training elsewhere, not here
            self.warn(f"warning: log.backends: cannot write tracking.json ({_one_line(err)})")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
