"""log.backends: a tiny run logged to TensorBoard, MLflow and W&B (offline), read back with each one's own reader."""

from __future__ import annotations

import glob
import json
import re
import shutil
import struct
import sys
from pathlib import Path

import pytest

from tiny_runs import tiny_raw

import vaelab
import vaelab.data.load
from vaelab.config import ConfigError, choices, resolve_config
from vaelab.runs import RunFolder
from vaelab.tracking import BACKENDS, TrackingError, logged_in

TINY = ["data.val_size=100", "train.batch_size=50", "model.encoder_hidden=[16]", "model.decoder_hidden=[16]",
        "train.eval_batch_size=100", "evaluate.samples=5"]
ALL = ["tensorboard", "mlflow", "wandb"]


def isolate(tmp_path: Path, monkeypatch) -> None:
    """Each tracker's default place is inside tmp_path: MLflow's store in the working directory, W&B
    offline (no API key, no ~/.netrc entry) with its settings and cache kept out of the user's home."""
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))


@pytest.fixture
def here(tmp_path, monkeypatch):
    """tmp_path, the working directory of a test whose runs train on the tiny data set."""
    raw = tiny_raw()
    monkeypatch.setattr(vaelab.data.load, "load_dataset", lambda *args, **kwargs: raw)
    isolate(tmp_path, monkeypatch)
    return tmp_path


def train(out: Path, *overrides: str, backends=ALL, lines: list[str] | None = None):
    """A tiny run of vaelab.train; its progress lines go to `lines`."""
    log = (lines if lines is not None else []).append
    return vaelab.train("mnist-lab", out=out, overrides=TINY + [f"log.backends={json.dumps(backends)}", *overrides],
                        log=log)


# ---------------------------------------------------------------- reading each tracker back

def tensorboard_events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def tensorboard_text(events, tag: str) -> list[str]:
    return [e.tensor_proto.string_val[0].decode() for e in events.Tensors(f"{tag}/text_summary")]


def mlflow_run(run_dir: Path):
    from mlflow.tracking import MlflowClient

    saved = RunFolder(run_dir).tracking_state()["mlflow"]
    client = MlflowClient(tracking_uri=saved["tracking_uri"])
    return client, client.get_run(saved["run_id"])


def wandb_records(run_dir: Path) -> list:
    """Every record of the run's offline W&B files (one per process that logged to it), in order.

    The .wandb file is LevelDB's log format (32 KiB blocks of chunks, each with a 7-byte header)
    after a 7-byte W&B header; each record is W&B's own protobuf `Record`.
    """
    from wandb.proto import wandb_internal_pb2

    run_id = RunFolder(run_dir).tracking_state()["wandb"]["run_id"]
    records = []
    for path in _wandb_files(run_dir, run_id):
        data, pos, parts = Path(path).read_bytes(), 7, []
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if kind == 0:
                break
            parts.append(data[pos + 7:pos + 7 + length])
            pos += 7 + length
            if kind in (1, 4):  # a whole record, or the last chunk of one
                record = wandb_internal_pb2.Record()
                record.ParseFromString(b"".join(parts))
                records.append(record)
                parts = []
    assert records, f"no W&B offline run {run_id} in {run_dir}"
    return records


def _wandb_files(run_dir: Path, run_id: str) -> list[str]:
    """The run's .wandb files in the order the processes wrote them. W&B names a process's folder
    offline-run-DATE_TIME-ID, and ID-1, ID-2, ... when one of that second exists already (a
    resume within the second, seen in CI): so by time, then by that count."""
    found = []
    for path in glob.glob(str(run_dir / "wandb" / f"offline-run-*-{run_id}*" / f"run-{run_id}.wandb")):
        match = re.fullmatch(rf"offline-run-(\d{{8}}_\d{{6}})-{run_id}(?:-(\d+))?", Path(path).parent.name)
        if match:
            found.append(((match[1], int(match[2] or 0)), path))
    return [path for _, path in sorted(found)]


def wandb_history(records) -> list[dict]:
    """The logged steps: {"_step": n, key: value, ...}; an image is a dict with its file's path."""
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row: dict = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key[:1])
                value = json.loads(item.value_json)
                if len(item.nested_key) > 1:  # an image's fields: figures/samples -> {"path": ...}
                    row.setdefault(key, {})[item.nested_key[1]] = value
                else:
                    row[key] = value
            rows.append(row)
    return rows


def wandb_summary(records) -> dict:
    summary: dict = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


def wandb_config(records) -> dict:
    config: dict = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        items = record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        for item in items:
            config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return config


# ---------------------------------------------------------------- one run to all three

@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A 2-epoch tiny run logged to all three trackers, figures every epoch: (its folder, its metrics)."""
    tmp = tmp_path_factory.mktemp("logged")
    with pytest.MonkeyPatch.context() as monkeypatch:
        raw = tiny_raw()
        monkeypatch.setattr(vaelab.data.load, "load_dataset", lambda *args, **kwargs: raw)
        isolate(tmp, monkeypatch)
        run = train(tmp / "run", "train.epochs=2", "log.figures_every=1")
    return run.path.resolve(), run.metrics


def test_tensorboard_holds_the_epochs_the_figures_and_the_evaluation(logged):
    run_dir, metrics = logged
    events = tensorboard_events(run_dir)
    for key, tag in (("val_elbo", "val/elbo"), ("train_elbo", "train/elbo"), ("val_kl", "val/kl"), ("lr", "lr")):
        assert [(e.step, e.value) for e in events.Scalars(tag)] == [
            (m["epoch"], pytest.approx(m[key], rel=1e-6)) for m in metrics], tag
    for tag in ("images_per_second", "grad_norm"):  # the tiny run's steps are autograd's: gradients are kept
        assert [e.step for e in events.Scalars(tag)] == [1, 2] and all(e.value > 0 for e in events.Scalars(tag)), tag
    # figures every epoch: epoch 1's drawn during training, the last epoch's by the end of the run
    assert [e.step for e in events.Images("figures/samples")] == [1, 2]
    assert events.Images("figures/samples")[0].width > 0
    summary, evaluation = RunFolder(run_dir).summary(), RunFolder(run_dir).current_evaluation()[1]
    assert [e.value for e in events.Scalars("test/nll")] == [pytest.approx(evaluation["nll"], rel=1e-6)]
    assert [e.value for e in events.Scalars("test/k")] == [5]
    assert [e.value for e in events.Scalars("test/elbo")] == [pytest.approx(summary["test_elbo"], rel=1e-6)]
    assert set(tensorboard_text(events, "weights_sha256")) == {summary["weights_sha256"]}
    assert set(tensorboard_text(events, "run_folder")) == {str(run_dir)}
    assert "model.latent_dim = 2" in tensorboard_text(events, "config")[0]


def test_mlflow_holds_the_params_the_epochs_the_figures_and_the_evaluation(logged):
    run_dir, metrics = logged
    client, run = mlflow_run(run_dir)
    assert Path(RunFolder(run_dir).tracking_state()["mlflow"]["tracking_uri"].removeprefix("sqlite:///")) == (
        run_dir.parent / "mlflow.db")  # MLflow's default store, in the working directory
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model.latent_dim"] == "2" and run.data.params["train.epochs"] == "2"
    assert run.data.tags["vaelab.run_folder"] == str(run_dir)
    history = client.get_metric_history(run.info.run_id, "val/elbo")
    assert [(m.step, m.value) for m in history] == [(m["epoch"], pytest.approx(m["val_elbo"])) for m in metrics]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/kl")] == [1, 2]
    summary, evaluation = RunFolder(run_dir).summary(), RunFolder(run_dir).current_evaluation()[1]
    assert run.data.metrics["test/nll"] == pytest.approx(evaluation["nll"]) and run.data.metrics["test/k"] == 5
    assert run.data.tags["weights_sha256"] == summary["weights_sha256"]
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any("figures~samples+step+1+" in p and p.endswith(".png") for p in images), images
    assert any("figures~samples+step+2+" in p and p.endswith(".png") for p in images), images


def test_wandb_offline_run_holds_the_config_the_epochs_the_figures_and_the_evaluation(logged):
    run_dir, metrics = logged
    records = wandb_records(run_dir)
    config = wandb_config(records)
    assert config["model.latent_dim"] == 2 and config["run_folder"] == str(run_dir)
    history = wandb_history(records)
    epochs = [row for row in history if "val/elbo" in row]
    assert [(row["_step"], row["val/elbo"]) for row in epochs] == [
        (m["epoch"], pytest.approx(m["val_elbo"])) for m in metrics]
    images = [row["_step"] for row in history if "figures/samples" in row]
    assert sorted(images) == [1, 2]
    image = next(row["figures/samples"] for row in history if "figures/samples" in row)
    assert list(run_dir.glob(f"wandb/offline-run-*/files/{image['path']}")), image
    summary, evaluation = wandb_summary(records), RunFolder(run_dir).current_evaluation()[1]
    assert summary["test/nll"] == pytest.approx(evaluation["nll"]) and summary["test/k"] == 5
    assert summary["weights_sha256"] == RunFolder(run_dir).summary()["weights_sha256"]


# ---------------------------------------------------------------- resume: the same tracker runs, no epoch twice

def test_epochs_left_unvalidated_log_their_training_numbers_only(here):
    run = train(here / "run", "train.epochs=3", "train.validate_every=2", backends=["tensorboard"])
    events = tensorboard_events(run.path)
    assert [e.step for e in events.Scalars("train/elbo")] == [1, 2, 3]
    for key, tag in (("val_elbo", "val/elbo"), ("val_reconstruction", "val/reconstruction"), ("val_kl", "val/kl")):
        assert [(e.step, e.value) for e in events.Scalars(tag)] == [
            (m["epoch"], pytest.approx(m[key], rel=1e-6)) for m in run.metrics if m["epoch"] in (2, 3)], tag


def test_a_run_killed_after_logging_an_epoch_resumes_the_same_tracker_runs_without_a_step_twice(here, monkeypatch):
    """Killed after epoch 2 reached the trackers but before its checkpoint: the resume redoes epoch 2
    and the trackers show epochs 1, 2, 3 once each, in the same runs."""
    from vaelab.training import Trainer

    save = Trainer.save_checkpoint

    def killed_at_epoch_2(self):
        if self.state.epoch == 2 and not self.state.step_in_epoch:
            raise KeyboardInterrupt
        save(self)

    monkeypatch.setattr(Trainer, "save_checkpoint", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(here / "run", "train.epochs=3")
    monkeypatch.setattr(Trainer, "save_checkpoint", save)
    first = RunFolder(here / "run").tracking_state()
    assert first["epoch"] == 2
    client, run = mlflow_run(here / "run")
    assert run.info.status == "KILLED"

    run = vaelab.resume(here / "run", log=lambda line: None)
    metrics = run.metrics
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    state = RunFolder(run.path).tracking_state()
    assert state["mlflow"] == first["mlflow"] and state["wandb"] == first["wandb"] and state["epoch"] == 3

    events = tensorboard_events(run.path)
    assert [(e.step, e.value) for e in events.Scalars("val/elbo")] == [
        (m["epoch"], pytest.approx(m["val_elbo"], rel=1e-6)) for m in metrics]
    client, mlrun = mlflow_run(run.path)
    assert mlrun.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "val/elbo")] == [1, 2, 3]
    steps = [row["_step"] for row in wandb_history(wandb_records(run.path)) if "val/elbo" in row]
    assert steps == [1, 2, 3]
    assert len(list(run.path.glob("wandb/offline-run-*"))) == 2  # one per process, one W&B run id


def test_a_finished_run_trained_longer_goes_on_in_the_same_tracker_runs(here, monkeypatch):
    run = train(here / "run", "train.epochs=1", backends=["tensorboard", "mlflow"])
    before = RunFolder(run.path).tracking_state()["mlflow"]["run_id"]
    (here / "elsewhere").mkdir()
    monkeypatch.chdir(here / "elsewhere")  # the run's MLflow store is found from any working directory
    run = vaelab.resume(here / "run", epochs=2, log=lambda line: None)
    assert not (here / "elsewhere" / "mlflow.db").exists()
    client, mlrun = mlflow_run(run.path)
    assert mlrun.info.run_id == before
    assert mlrun.data.params["train.epochs"] == "1" and mlrun.data.tags["resumed.train.epochs"] == "2"
    assert [m.step for m in client.get_metric_history(before, "val/elbo")] == [1, 2]
    assert [e.step for e in tensorboard_events(run.path).Scalars("val/elbo")] == [1, 2]


# ---------------------------------------------------------------- failures

@pytest.mark.parametrize("backend,module,extra", [("tensorboard", "tensorboard", "tensorboard"),
                                                  ("mlflow", "mlflow", "mlflow"), ("wandb", "wandb", "wandb")])
def test_a_missing_package_is_one_line_naming_the_install_command_before_any_work(here, monkeypatch, backend,
                                                                                  module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # what an environment without the package imports
    with pytest.raises(TrackingError) as err:
        train(here / "run", backends=[backend])
    assert str(err.value) == (f"log.backends: {backend} needs {module}, not installed here: "
                              f'pip install "vaelab[{extra}]"')
    assert not (here / "run").exists()


def test_the_cli_says_a_missing_package_in_one_line(here, monkeypatch, capsys):
    from vaelab.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)
    assert main(["train", "--log", "tensorboard,wandb", "--out", str(here / "run"), "--set", "train.epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "vaelab[wandb]"' in err, err


def test_a_tracker_that_fails_mid_run_is_warned_about_once_and_training_goes_on(here, capsys):
    """MLflow's artifact folder turns into a file after epoch 1 (the disk refuses the figures): MLflow is
    switched off with one warning; TensorBoard and the run folder get every epoch."""
    lines: list[str] = []

    def sabotage(line: str) -> None:
        lines.append(line)
        if line.startswith("epoch   1"):
            client, run = mlflow_run(here / "run")
            artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
            shutil.rmtree(artifacts)  # epoch 1's figures: sent before the epoch's line is printed
            artifacts.write_text("not a folder")

    run = vaelab.train("mnist-lab", out=here / "run", log=sabotage, overrides=TINY + [
        'log.backends=["tensorboard", "mlflow"]', "train.epochs=3", "log.figures_every=1"])
    warnings = [line for line in capsys.readouterr().err.splitlines() if "mlflow failed" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: log.backends: mlflow failed in log_image"), warnings
    assert [m["epoch"] for m in run.metrics] == [1, 2, 3] and run.summary["epochs_run"] == 3
    assert (run.path / "model.safetensors").is_file() and (run.path / "figures" / "samples.png").is_file()
    assert [e.step for e in tensorboard_events(run.path).Scalars("val/elbo")] == [1, 2, 3]
    client, mlrun = mlflow_run(run.path)
    assert mlrun.info.status == "FAILED"
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "val/elbo")] == [1, 2]


# ---------------------------------------------------------------- config, CLI and API

def test_the_backends_are_the_registry_s_names():
    assert choices("log.backends") == tuple(BACKENDS) == ("tensorboard", "mlflow", "wandb")


@pytest.mark.parametrize("override,message", [
    ('log.backends=["tensorbord"]', 'log.backends: "tensorbord" is not one of tensorboard, mlflow, wandb; '
                                    "did you mean tensorboard?"),
    ('log.backends=["mlflow", "mlflow"]', 'log.backends: names a backend twice: ["mlflow", "mlflow"]'),
    ("log.backends=\"mlflow\"", 'log.backends: expected a list, got "mlflow"'),
    ("log.figures_every=-1", "log.figures_every: must be >= 0 epochs (0 = only at the end), got -1"),
    ('log.project=" "', "log.project: must not be empty"),
])
def test_bad_log_settings_are_config_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        resolve_config(overrides=[override])
    assert str(err.value) == message


def test_the_cli_flag_and_the_api_keyword_set_log_backends():
    from vaelab.api import _log_argument, make_config
    from vaelab.cli import _log_overrides, build_parser

    args = build_parser().parse_args(["train", "--log", "tensorboard", "--log", "mlflow,wandb"])
    assert resolve_config(overrides=_log_overrides(args.log)).log.backends == ALL
    assert _log_overrides([]) == []
    assert make_config(backends=["wandb"]).log.backends == ["wandb"]
    assert _log_argument(["tensorboard", "mlflow"])[1] == ['log.backends=["tensorboard", "mlflow"]']
    assert _log_argument(print) == (print, [])


def test_wandb_is_online_only_with_credentials_found_without_the_network(tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not logged_in()
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    assert logged_in()
    (tmp_path / "netrc").write_text("machine example.org\n  login user\n  password x\n")
    assert not logged_in()
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    assert logged_in()


def test_the_gradient_norm_is_the_mean_over_the_epochs_steps(tmp_path, monkeypatch):
    """What trackers get as grad_norm: the mean of each step's gradient norm, as torch's own
    get_total_norm gives it just before the optimizer updates (read here by an optimizer hook)."""
    import torch

    from vaelab.data.views import make_views
    from vaelab.training import Trainer

    isolate(tmp_path, monkeypatch)
    config = resolve_config(overrides=["data.val_size=100", "train.batch_size=50", "train.compile=false",
                                       "model.encoder_hidden=[16]", "model.decoder_hidden=[16]",
                                       'log.backends=["tensorboard"]'])
    trainer = Trainer(config, tmp_path / "run", make_views(tiny_raw(), config.data), progress=False,
                      log=lambda *a: None)
    norms = []
    trainer.optimizer.register_step_pre_hook(lambda optimizer, args, kwargs: norms.append(
        torch.nn.utils.get_total_norm([p.grad for p in trainer.model.parameters() if p.grad is not None]).item()))
    trainer.train_epoch()
    total, count = trainer.grad_norms.tolist()
    assert count == len(norms) == trainer.state.step_in_epoch > 1
    assert total / count == pytest.approx(sum(norms) / len(norms), rel=1e-5)


def test_no_tracker_no_gradient_norms(tmp_path):
    from vaelab.data.views import make_views
    from vaelab.training import Trainer

    config = resolve_config(overrides=["data.val_size=100", "train.batch_size=50", "model.encoder_hidden=[16]",
                                       "model.decoder_hidden=[16]"])
    trainer = Trainer(config, tmp_path / "run", make_views(tiny_raw(), config.data), progress=False,
                      log=lambda *a: None)
    assert trainer.grad_norms is None and trainer.step.grad_norms is None
