"""The run folder's owner (runs.py) and the defects it fixes: numbers tied to the weights they describe,
resumable sweeps and runs, figures from the run's own settings, writes that fail without losing work."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import vaelab
from vaelab import cli
from vaelab.comparison import run_row
from vaelab.data.views import make_views
from vaelab.report import write_report
from vaelab.runs import CONFIG, WEIGHTS, RunFolder, SweepFolder, fingerprint
from vaelab.training import Trainer

TINY = {"data.val_size": 100, "train.batch_size": 50, "model.encoder_hidden": [16], "model.decoder_hidden": [16],
        "train.eval_batch_size": 100, "evaluate.samples": 0, "figures.names": ["samples"]}


@pytest.fixture(autouse=True)
def tiny_data(monkeypatch, one_thread):
    """Every run here trains on the tiny generated set instead of MNIST."""
    import vaelab.data.load
    from conftest import make_tiny_raw

    raw = make_tiny_raw(n_train=400, n_test=60)
    monkeypatch.setattr(vaelab.data.load, "load_dataset", lambda *args, **kwargs: raw)
    return raw


def quiet(text: str) -> None:
    pass


def ctrl_c_after(marker: str, times: int = 1):
    """A log function that presses Ctrl-C (a real SIGINT) when it has seen `marker` `times` times."""
    seen = []

    def log(text: str) -> None:
        if marker in text:
            seen.append(text)
        if len(seen) == times and marker in text:
            os.kill(os.getpid(), signal.SIGINT)

    return log


def train_interrupted(out, marker="epoch   2", **overrides):
    with pytest.raises(KeyboardInterrupt):
        vaelab.train(overrides=TINY | overrides, out=out, log=ctrl_c_after(marker))


# ---------------------------------------------------------------- D1: numbers of the weights held now

def test_an_evaluation_of_earlier_weights_is_never_shown_as_the_runs_metric(tmp_path, capsys):
    out = tmp_path / "a"
    train_interrupted(out, **{"train.epochs": 6})
    assert "stopping after this step" in capsys.readouterr().err  # the first Ctrl-C is acknowledged
    run = vaelab.open_run(out)
    assert not (out / WEIGHTS).exists()
    early = run.evaluate(samples=3, progress=False)  # the interrupted run's best weights so far
    assert early["weights_sha256"] == RunFolder(out).fingerprint()
    assert run_row(out)["test_elbo"] == early["elbo"]
    assert run_row(out)["val_elbo"] == max(r["val_elbo"] for r in RunFolder(out).metrics())  # the best epoch so far

    vaelab.resume(out, log=quiet)
    folder = RunFolder(out)
    assert folder.fingerprint() != early["weights_sha256"]  # training on changed the best weights
    assert folder.fingerprint() == fingerprint(vaelab.load_run(out).state_dict())
    final = folder.summary()
    row = run_row(out)
    assert row["test_elbo"] == final["test_elbo"] != early["elbo"] and row["test_from"] == "summary.json"
    assert row["val_elbo"] == final["best_val_elbo"] and row["kept_epoch"] == final["best_epoch"]
    assert folder.current_evaluation() is None and len(folder.stale_evaluations()) == 1
    page = write_report(out, evaluate=False, figures=False, progress=False).read_text(encoding="utf-8")
    assert f"{early['elbo']:.2f}" not in page and "scored earlier weights of this run" in page
    assert f"{final['test_elbo']:.2f}" in page


def test_evaluating_while_training_goes_on_describes_the_checkpoint_it_read(tmp_path):
    out = tmp_path / "a"
    train_interrupted(out, **{"train.epochs": 3})
    during = vaelab.open_run(out).evaluate(samples=2, progress=False)
    vaelab.resume(out, log=quiet)
    still_held = during["weights_sha256"] == RunFolder(out).fingerprint()
    assert (RunFolder(out).current_evaluation() is not None) == still_held


# ---------------------------------------------------------------- D8: resume and extend

def test_resuming_a_finished_run_changes_nothing_and_says_how_to_train_longer(tmp_path):
    out = tmp_path / "a"
    vaelab.train(overrides=TINY | {"train.epochs": 2}, out=out, log=quiet)
    summary = RunFolder(out).raw_summary()
    said = []
    vaelab.resume(out, log=said.append)
    assert RunFolder(out).raw_summary() == summary  # not re-scored, seconds kept
    assert any("has finished" in line and "--set train.epochs=4" in line for line in said)

    vaelab.resume(out, epochs=4, log=quiet)
    extended = RunFolder(out).raw_summary()
    assert extended["epochs_run"] == 4 and len(RunFolder(out).metrics()) == 4
    assert extended["train_seconds"] > summary["train_seconds"]  # the seconds of both parts add up
    assert RunFolder(out).config().train.epochs == 4
    with pytest.raises(vaelab.config.ConfigError, match="model.latent_dim: cannot be changed when resuming"):
        vaelab.resume(out, latent_dim=5, log=quiet)


def test_train_seconds_add_up_over_an_interrupted_run(tmp_path):
    out = tmp_path / "a"
    train_interrupted(out, **{"train.epochs": 3})
    vaelab.resume(out, log=quiet)
    metrics = RunFolder(out).metrics()
    assert RunFolder(out).raw_summary()["train_seconds"] >= sum(r["seconds"] for r in metrics) * 0.99


# ---------------------------------------------------------------- D2: sweeps finish

def test_an_interrupted_sweep_is_finished_by_resume_or_by_running_it_again(tmp_path):
    out = tmp_path / "sweep"
    members = {"sweep.members": ["model.latent_dim=2", "model.latent_dim=3", "model.latent_dim=4"],
               "train.epochs": 2}
    said = []
    press = ctrl_c_after("epoch   1", times=2)  # in member 2
    with pytest.raises(KeyboardInterrupt):
        vaelab.train(overrides=TINY | members, out=out, log=lambda text: (said.append(text), press(text)))
    assert said[-1] == f"to finish the whole sweep and write its table: vaelab train --resume {out}"
    sweep = SweepFolder(out)
    assert [m.finished() for m in sweep.members()] == [True, False, False]
    assert not sweep.table_path("md").exists()

    said.clear()
    result = vaelab.resume(out, log=said.append)
    assert isinstance(result, vaelab.Sweep) and [m.finished() for m in sweep.members()] == [True, True, True]
    assert "--- sweep member latent_dim=2: finished already" in said
    table = sweep.table_path("md").read_text()
    assert all(f"{out / name}" in table for name in ("latent_dim=2", "latent_dim=3", "latent_dim=4"))

    again = []  # the same command again: nothing left to train, the table is written again
    vaelab.train(overrides=TINY | members, out=out, log=again.append)
    assert sum("finished already" in line for line in again) == 3
    assert vaelab.compare(out) == table  # compare and the Python API see the members
    page = write_report(out, evaluate=False, progress=False).read_text(encoding="utf-8")
    assert "a sweep of 3 runs" in page and page.count("<h3>Figures</h3>") == 3
    assert all((member.path / "report.html").is_file() for member in sweep.members())


def test_a_sweep_folder_refuses_another_sweeps_config(tmp_path):
    out = tmp_path / "sweep"
    members = {"sweep.members": ["model.latent_dim=2"], "train.epochs": 1}
    vaelab.train(overrides=TINY | members, out=out, log=quiet)
    with pytest.raises(FileExistsError, match="holds a sweep with another config"):
        vaelab.train(overrides=TINY | members | {"train.epochs": 2}, out=out, log=quiet)


# ---------------------------------------------------------------- D3: figures from the run's settings

def test_figures_are_drawn_with_the_runs_own_settings_unless_a_call_overrides_them(tmp_path):
    out = tmp_path / "a"
    run = vaelab.train(overrides=TINY | {"train.epochs": 1, "figures.samples_n": 3}, out=out, log=quiet)
    assert RunFolder(out).figure_log()["samples"]["options"]["samples_n"] == 3
    first = (out / "figures" / "samples.png").read_bytes()
    write_report(out, evaluate=False, progress=False)
    assert RunFolder(out).figure_log()["samples"]["options"]["samples_n"] == 3
    assert (out / "figures" / "samples.png").read_bytes() == first  # the same figure, redrawn the same
    figure = run.figure("samples", samples_n=2)
    assert RunFolder(out).figure_log()["samples"]["options"]["samples_n"] == 2
    assert figure._repr_png_().startswith(b"\x89PNG") and figure._repr_png_() != first
    assert cli.main(["figures", str(out), "samples", "--samples-n", "4"]) == 0
    assert RunFolder(out).figure_log()["samples"]["options"]["samples_n"] == 4


# ---------------------------------------------------------------- D4-D7: the evaluate command

@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "done"
    vaelab.train(overrides=TINY | {"train.epochs": 1}, out=out, log=quiet)
    return out


def test_a_full_disk_loses_no_evaluation_and_names_the_file(finished, monkeypatch, capsys):
    import vaelab.storage

    def disk_full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(vaelab.storage.os, "replace", disk_full)
    assert cli.main(["evaluate", str(finished), "--samples", "3", "--json"]) == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["k"] == 3  # the numbers were printed before the write failed
    assert err.strip() == f"error: {finished / 'eval-test-k3.json'}: could not write it (No space left on device)"
    assert not list(finished.glob(".eval-test-k3.json.*"))  # no temp file left behind


@pytest.mark.parametrize("device, message", [("tpu", "'tpu' is not a device torch knows"),
                                             ("cuda", "'cuda' asked for, but torch sees no CUDA device")])
def test_a_device_that_cannot_be_used_is_one_line_naming_the_flag(finished, capsys, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --device cuda is usable")
    assert cli.main(["evaluate", str(finished), "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_a_memory_bound_that_is_not_positive_is_refused(finished, capsys, value):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate", str(finished), "--memory-mb", value])
    assert exit_.value.code == 2 and "--memory-mb" in capsys.readouterr().err
    from vaelab.evaluate import EvaluationError, evaluate_images

    with pytest.raises(EvaluationError, match="must be > 0 MB"):
        evaluate_images(vaelab.load_run(finished), None, k=2, memory_mb=float(value))


def test_long_work_prints_progress_lines_when_output_is_not_a_terminal(tmp_path, capsys):
    from vaelab.progress import LineProgress

    import io
    buffer = io.StringIO()
    bar = LineProgress(10, "evaluating (K=5000)", "image", every=0.0, file=buffer)
    for _ in range(10):
        bar.update()
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("evaluating (K=5000): 10/10 images (")
    batches = io.StringIO()
    LineProgress(3, "epoch 1/20", "batch", every=0.0, file=batches).update()
    assert batches.getvalue().startswith("epoch 1/20: 1/3 batches (")
    said = []
    vaelab.train(overrides=TINY | {"train.epochs": 1, "evaluate.samples": 2}, out=tmp_path / "a", log=said.append)
    assert "evaluating the test set: 60 images, K = 2 importance samples each" in said


# ---------------------------------------------------------------- D9: training from Python

def test_a_trainer_made_from_python_writes_a_whole_run_folder(tmp_path, tiny_data):
    config = vaelab.make_config(overrides=TINY | {"train.epochs": 1})
    run_dir = tmp_path / "py" / "run"  # no folder yet
    Trainer(config, run_dir, make_views(tiny_data, config.data), progress=False, log=quiet).fit()
    assert (run_dir / CONFIG).is_file() and (run_dir / WEIGHTS).is_file()
    assert cli.main(["evaluate", str(run_dir), "--samples", "2"]) == 0


# ---------------------------------------------------------------- the smaller ones

def test_a_closed_pipe_ends_quietly():
    result = subprocess.run(f"{sys.executable} -m vaelab presets | head -1", shell=True, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.count("\n") == 1 and result.stderr == ""


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"vaelab {vaelab.__version__}\n"


def test_warnings_are_one_line_each(finished, capsys):
    (finished / "eval-test-k7.json").write_text("not json")
    assert cli.main(["compare", str(finished)]) == 0
    err = capsys.readouterr().err
    assert err == f"warning: {finished / 'eval-test-k7.json'}: skipped ({finished / 'eval-test-k7.json'}: " \
                  "not valid JSON (Expecting value: line 1 column 1 (char 0)))\n"


def test_explore_open_without_a_browser_says_so_and_prints_the_address(finished, monkeypatch, capsys):
    import webbrowser

    monkeypatch.setattr(webbrowser, "open", lambda url: False)
    assert cli.main(["explore", str(finished), "--open"]) == 0
    out, err = capsys.readouterr()
    assert (finished / "explorer.html").resolve().as_uri() in out and "no web browser found" in err


def test_a_folder_that_is_neither_a_run_nor_a_sweep_is_one_line(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: not a vaelab run folder (it has no config.json)\n"


def test_keywords_name_one_config_key_or_say_which(tmp_path):
    assert vaelab.make_config(epochs=3, lr=0.01, latent_dim=4).optim.lr == 0.01
    with pytest.raises(vaelab.config.ConfigError, match="samples: several config keys have that name: "
                                                         "objective.samples, evaluate.samples"):
        vaelab.make_config(samples=3)


# ---------------------------------------------------------------- where a run may start or resume

def no_data_loaded(monkeypatch):
    """Loading any data fails the test: what is checked here must be refused before any work."""
    import vaelab.data

    def load(*args, **kwargs):
        raise AssertionError("data was loaded before the folder was checked")

    monkeypatch.setattr(vaelab.data, "load_dataset", load)


def test_out_refuses_a_file_or_a_folder_of_other_files_before_any_work(tmp_path, monkeypatch):
    no_data_loaded(monkeypatch)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(FileExistsError, match=f"^{a_file}: a file, not a folder; choose another --out$"):
        vaelab.train(overrides=TINY, out=a_file, log=quiet)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.png").write_bytes(b"not mine to mix with a run")
    with pytest.raises(FileExistsError, match="the folder holds other files and is not a run folder"):
        vaelab.train(overrides=TINY, out=photos, log=quiet)
    assert sorted(p.name for p in photos.iterdir()) == ["cat.png"]  # nothing written into it


def test_out_takes_an_empty_folder_and_refuses_a_run_folder_before_any_work(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    vaelab.train(overrides=TINY | {"train.epochs": 1}, out=empty, log=quiet)
    assert RunFolder(empty).finished()
    no_data_loaded(monkeypatch)
    with pytest.raises(FileExistsError, match=f"already holds a run; continue it with --resume {empty}"):
        vaelab.train(overrides=TINY, out=empty, log=quiet)


def test_resume_of_a_file_says_it_is_a_file(tmp_path, capsys):
    a_file = tmp_path / "model.safetensors"
    a_file.write_bytes(b"weights")
    assert cli.main(["train", "--resume", str(a_file)]) == 2
    assert capsys.readouterr().err == f"error: {a_file}: a file, not a run folder (a run folder holds config.json)\n"


def test_resume_of_a_run_another_process_trains_refuses_before_saying_anything(finished, monkeypatch):
    import socket

    from vaelab.runs import RunLockedError

    config = (finished / CONFIG).read_text()
    (finished / ".lock").write_text(f"{os.getppid()} {socket.gethostname()}")  # a live process of this host
    said = []
    no_data_loaded(monkeypatch)
    with pytest.raises(RunLockedError, match=f"{finished} is being trained by process {os.getppid()}"):
        vaelab.resume(finished, epochs=3, log=said.append)
    assert said == [] and (finished / CONFIG).read_text() == config  # no "resuming", config.json untouched


@pytest.mark.parametrize("command", ["explore", "evaluate"])
def test_a_sweep_given_for_one_run_names_a_member_and_the_commands_that_take_a_sweep(tmp_path, capsys, command):
    sweep = tmp_path / "sweep"
    SweepFolder(sweep).start(vaelab.make_config("mnist-latent-sweep"))
    assert cli.main([command, str(sweep)]) == 2
    assert capsys.readouterr().err == (
        f"error: {sweep}: a sweep of runs, not one run; give one of its members, e.g. {sweep / 'latent_dim=2'} "
        "(figures, report, compare and train --resume take the whole sweep)\n")
