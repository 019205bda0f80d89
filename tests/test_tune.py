"""`vaelab tune`: the [tune] config, studies of 1 and 2 workers on generated images, a worker killed
with kill -9, Ctrl-C, a rerun that finishes, best.toml trained, and a real PostgreSQL server.

The workers are separate processes (`python -m vaelab tune --resume DIR --worker-index I`), so
the data is an .npz of generated images that every process reads, not a monkeypatched loader.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from vaelab.cli import main
from vaelab.config import ConfigError, RunConfig, config_from_dict, resolve_config, to_toml
from vaelab.runs import StudyFolder

optuna = pytest.importorskip("optuna", reason='vaelab tune needs Optuna: pip install "vaelab[optuna]"')

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory) -> Path:
    from conftest import make_tiny_raw

    raw = make_tiny_raw(n_train=300, n_test=60)
    path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
    np.savez(path, x_train=raw.x_train, y_train=raw.y_train, x_test=raw.x_test, y_test=raw.y_test)
    return path


def search_toml(path: Path, data: Path, epochs: int = 1, **tune) -> Path:
    """A search over the learning rate and latent size of a tiny MLP on the generated images."""
    settings = {"trials": 4, "workers": 1, "heartbeat": 1} | tune
    lines = [f'[data]\nname = "images"\ndata_dir = "{data}"\n',
             "[model]\nencoder_hidden = [16]\ndecoder_hidden = [16]\n",
             f"[train]\nepochs = {epochs}\nbatch_size = 50\neval_batch_size = 100\nmin_steps = 0\n",
             "[figures]\nnames = []\n", "[evaluate]\nsamples = 0\n",
             "[tune]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()),
             '[tune.space]\n"optim.lr" = ["log", 1e-4, 1e-2]\n"model.latent_dim" = ["int", 2, 4]\n']
    path.write_text("\n".join(lines))
    return path


def vaelab(*args: str, cwd: Path) -> subprocess.Popen:
    """`python -m vaelab ARGS` in its own process (workers are processes; a signal reaches this one)."""
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    # a test run started as a background job of a non-interactive shell inherits SIGINT ignored,
    # which the Ctrl-C test's vaelab would inherit too: give it Ctrl-C's default, as a terminal does
    return subprocess.Popen([sys.executable, "-m", "vaelab", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def trials_of(study_dir: Path, storage: str | None = None) -> list:
    from vaelab.tuning import database_url

    folder = StudyFolder(study_dir)
    return optuna.load_study(study_name=study_dir.resolve().name,
                             storage=database_url(storage or folder.storage())).get_trials()


def states(trials: list) -> list[str]:
    return [t.state.name for t in trials]


# ---------------------------------------------------------------- the config

def tuned(**space) -> dict:
    values = RunConfig().to_dict()
    values["tune"]["space"] = space
    return values


@pytest.mark.parametrize("space, message", [
    ({"optim.lrr": ["log", 1e-4, 1e-2]}, 'tune.space."optim.lrr": not a config key that a trial can vary; '
                                         "did you mean optim.lr?"),
    ({"optim": ["log", 1e-4, 1e-2]}, 'tune.space."optim": not a config key that a trial can vary'),
    ({"tune.trials": ["int", 1, 3]}, 'tune.space."tune.trials": not a config key that a trial can vary'),
    ({"optim.lr": ["log", 0, 1e-2]}, 'tune.space."optim.lr": ["log", 0, 0.01]: a log range needs lo > 0'),
    ({"optim.lr": ["float", 0.1, 0.01]}, 'tune.space."optim.lr": ["float", 0.1, 0.01]: lo must be less than hi'),
    ({"optim.lr": ["float", 0.1]}, "expected exactly two bounds"),
    ({"optim.lr": ["float", "a", 1]}, "lo and hi must be numbers"),
    ({"model.latent_dim": ["int", 1.5, 3]}, 'tune.space."model.latent_dim": ["int", 1.5, 3]: lo and hi must be '
                                            "integers"),
    ({"model.latent_dim": ["float", 2, 8]}, 'tune.space."model.latent_dim": 2.0 gives no valid config: '
                                            "model.latent_dim: expected an integer"),
    ({"model.latent_dim": ["int", 0, 8]}, 'tune.space."model.latent_dim": 0 gives no valid config: '
                                          "model.latent_dim: must be >= 1"),
    ({"optim.name": ["choice", "adam", "adamm"]}, 'tune.space."optim.name": "adamm" gives no valid config: '
                                                  'optim.name: "adamm" is not one of'),
    ({"optim.name": ["choice", "adam", "adam"]}, "a value is listed twice"),
    ({"optim.lr": ["cube", 1, 2]}, 'tune.space."optim.lr": expected [KIND, ...] with KIND one of log, float, '
                                   "int, choice"),
    ({"optim.lr": "1e-3"}, 'tune.space."optim.lr": expected [KIND, ...]'),
])
def test_a_bad_space_entry_is_refused_naming_it(space, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(tuned(**space))
    assert message in str(error.value)


def test_a_grid_takes_choices_and_int_ranges_and_refuses_a_float_range():
    values = tuned(**{"model.latent_dim": ["int", 2, 4], "optim.name": ["choice", "adam", "sgd"]})
    values["tune"]["sampler"] = "grid"
    config = config_from_dict(values)
    from vaelab.tuning import target_trials

    assert target_trials(config) == min(config.tune.trials, 3 * 2)
    values["tune"]["space"]["optim.lr"] = ["log", 1e-4, 1e-2]
    with pytest.raises(ConfigError, match=r'tune.space."optim.lr": a grid tries the values of "choice" and "int"'):
        config_from_dict(values)


@pytest.mark.parametrize("key, value, message", [
    ("sampler", "tpee", 'tune.sampler: "tpee" is not one of tpe, random, grid; did you mean tpe?'),
    ("pruner", "mediam", 'tune.pruner: "mediam" is not one of none, median, hyperband'),
    ("metric", "nll", 'tune.metric: "nll" is not one of val_elbo, val_nll'),
    ("trials", 0, "tune.trials: must be >= 1"),
    ("workers", 0, "tune.workers: must be >= 1"),
    ("heartbeat", 0, "tune.heartbeat: must be >= 1 second"),
])
def test_tune_settings_are_checked_naming_the_key(key, value, message):
    values = tuned(**{"optim.lr": ["log", 1e-4, 1e-2]})
    values["tune"][key] = value
    with pytest.raises(ConfigError) as error:
        config_from_dict(values)
    assert message in str(error.value)


def test_a_config_written_as_toml_reads_back_equal(tmp_path):
    config = resolve_config("mnist-burda-vae", overrides=['model.args={a = 1, "b c" = [1, 2]}',
                                                           "evaluate.memory_mb=32", 'description="say \\"hi\\""'])
    text = to_toml(config.to_dict())
    assert config_from_dict(tomllib.loads(text)) == config
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert resolve_config(config_file=path) == config  # as `vaelab train --config` reads it


def test_the_readme_search_and_the_example_resolve(tmp_path):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"^```toml\n(.*?)^```$", readme, re.MULTILINE | re.DOTALL) if "[tune]" in b)
    (tmp_path / "search.toml").write_text(block)
    config = resolve_config(config_file=tmp_path / "search.toml")
    assert config.tune.workers == 2 and set(config.tune.space) == {"optim.lr", "model.latent_dim", "train.batch_size"}
    example = Path(__file__).resolve().parents[1] / "examples" / "tune_burda.toml"
    config = resolve_config("mnist-burda-vae", example)
    assert config.tune.workers == 2 and config.train.time_budget > 0


def test_a_missing_optuna_is_one_line_naming_the_install_before_any_work(tmp_path, tiny_npz, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed: `import optuna` fails
    code = main(["tune", "--config", str(search_toml(tmp_path / "s.toml", tiny_npz)), "--out", str(tmp_path / "st")])
    assert code == 2
    assert capsys.readouterr().err.strip() == ('error: vaelab tune needs Optuna, which is not installed: '
                                               'pip install "vaelab[optuna]"')
    assert not (tmp_path / "st").exists()


def test_a_postgres_storage_without_its_driver_is_refused_before_any_work(tmp_path, tiny_npz, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # as if neither PostgreSQL driver were installed
    monkeypatch.setitem(sys.modules, "psycopg", None)
    code = main(["tune", "--config", str(search_toml(tmp_path / "s.toml", tiny_npz)), "--out", str(tmp_path / "st"),
                 "--storage", "postgresql://me:secret@localhost/db"])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "vaelab[postgres]"' in err and "secret" not in err
    assert not (tmp_path / "st").exists()


# ---------------------------------------------------------------- studies

def test_two_workers_finish_the_study_each_trial_in_its_own_folder(tmp_path, tiny_npz):
    study = tmp_path / "study"
    out = finish(vaelab("tune", "--config", str(search_toml(tmp_path / "s.toml", tiny_npz)), "--out", str(study),
                        "--workers", "2", "--trials", "4", cwd=tmp_path))
    assert "Traceback" not in out, out
    trials = trials_of(study)
    assert states(trials).count("COMPLETE") >= 4, out
    folders = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(folders)) == len(folders) == len(StudyFolder(study).members())
    workers = {line.split("]")[0] for line in out.splitlines() if line.startswith("[worker ")}
    assert workers == {"[worker 0", "[worker 1"}, out
    for trial in trials:
        config = json.loads((study / trial.user_attrs["run_dir"] / "config.json").read_text())
        assert config["optim"]["lr"] == trial.params["optim.lr"]
        assert config["model"]["latent_dim"] == trial.params["model.latent_dim"]
        assert isinstance(config["train"]["threads"], int)  # its share of the CPUs, pinned
        assert (study / trial.user_attrs["run_dir"] / "summary.json").is_file()
    best = min(trials, key=lambda t: -t.value)
    best_toml = tomllib.loads((study / "best.toml").read_text())
    assert best_toml["optim"]["lr"] == best.params["optim.lr"] and "tune" not in best_toml
    assert best_toml["train"]["threads"] == RunConfig().train.threads  # the study's own, not a worker's share

    # best.toml trains as it is; a trial is an ordinary run folder; compare and report take the study
    assert main(["train", "--config", str(study / "best.toml"), "--out", str(tmp_path / "best-run")]) == 0
    assert (tmp_path / "best-run" / "summary.json").is_file()
    assert main(["evaluate", str(study / folders[0]), "--samples", "3"]) == 0
    table = finish(vaelab("compare", str(study), cwd=tmp_path))
    assert table.count("| complete |") == 4 and "optim.lr" in table, table
    assert main(["report", str(study), "--samples", "2", "--no-figures"]) == 0
    page = (study / "report.html").read_text()
    assert "history.png" in page and ("importances.png" in page or "importances need" in page)
    assert "best.toml" in page and f"{folders[0]}/report.html" in page


def _wait_for(predicate, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _training_trial(study: Path) -> tuple[Path, int] | None:
    """A trial folder mid-training (an epoch logged, no summary) and the pid in its lock."""
    for folder in sorted(study.glob("trial-*")):
        lock, metrics = folder / ".lock", folder / "metrics.jsonl"
        if lock.is_file() and metrics.is_file() and metrics.read_text() and not (folder / "summary.json").exists():
            words = lock.read_text().split()
            if words and words[0].isdigit():
                return folder, int(words[0])
    return None


def test_a_worker_killed_mid_trial_has_its_trial_failed_and_run_again(tmp_path, tiny_npz):
    study = tmp_path / "study"
    proc = vaelab("tune", "--config", str(search_toml(tmp_path / "s.toml", tiny_npz, epochs=6)), "--out", str(study),
                  "--workers", "2", "--trials", "4", cwd=tmp_path)
    dead_folder, pid = _wait_for(lambda: _training_trial(study), "a trial mid-training")
    os.kill(pid, signal.SIGKILL)
    out = finish(proc)
    assert "was killed (signal 9); the other workers re-ran its trial" in out, out
    trials = trials_of(study)
    dead = next(t for t in trials if t.user_attrs.get("run_dir") == dead_folder.name)
    assert dead.state.name == "FAIL"
    again = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(again) == 1 and again[0].state.name == "COMPLETE" and again[0].params == dead.params
    assert again[0].user_attrs["run_dir"] != dead_folder.name  # a new folder; the dead one's is left as it was
    assert (dead_folder / "config.json").is_file() and not (dead_folder / "summary.json").exists()
    assert states(trials).count("COMPLETE") >= 4 and "RUNNING" not in states(trials), states(trials)


def test_ctrl_c_stops_cleanly_and_the_same_command_finishes_the_study(tmp_path, tiny_npz):
    study = tmp_path / "study"
    # trials of 60 epochs (seconds each): with 6 (0.3 s), the Ctrl-C could land after the last trial's end
    args = ("tune", "--config", str(search_toml(tmp_path / "s.toml", tiny_npz, epochs=60, trials=3)),
            "--out", str(study), "--workers", "2")
    proc = vaelab(*args, cwd=tmp_path)
    _wait_for(lambda: _training_trial(study), "a trial mid-training")
    proc.send_signal(signal.SIGINT)
    out = finish(proc)
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out
    assert f"Continue the study with: vaelab tune --resume {study}" in out
    stopped = trials_of(study)
    assert "RUNNING" not in states(stopped) and "FAIL" in states(stopped), states(stopped)
    out = finish(vaelab(*args, cwd=tmp_path))
    trials = trials_of(study)
    assert states(trials).count("COMPLETE") >= 3, out
    assert len(StudyFolder(study).members()) == len(trials)  # each trial its own folder, the stopped ones kept


def test_resume_raises_the_trials_and_a_pruner_prunes(tmp_path, tiny_npz):
    study = tmp_path / "study"
    config = search_toml(tmp_path / "s.toml", tiny_npz, epochs=3, trials=2, pruner="median")
    assert main(["tune", "--config", str(config), "--out", str(study), "--set", "train.max_steps=0"]) == 0
    assert main(["tune", "--resume", str(study), "--trials", "7"]) == 0
    trials = trials_of(study)
    done = [s for s in states(trials) if s in ("COMPLETE", "PRUNED")]
    assert len(done) == 7
    assert json.loads((study / "study.json").read_text())["config"]["tune"]["trials"] == 7
    assert all(len(t.intermediate_values) >= 1 for t in trials)  # each epoch's validation ELBO reported
    with pytest.raises(SystemExit):  # refused a study of another search, as a sweep is
        raise SystemExit(main(["tune", "--config", str(config), "--out", str(study), "--set", "optim.eps=0.1"]))


def test_a_pruner_is_told_only_the_validated_epochs(tmp_path, tiny_npz):
    study = tmp_path / "study"
    config = search_toml(tmp_path / "s.toml", tiny_npz, epochs=5, trials=3, pruner="median")
    assert main(["tune", "--config", str(config), "--out", str(study), "--set", "train.validate_every=2"]) == 0
    trials = trials_of(study)
    assert states(trials).count("COMPLETE") >= 2  # a median pruner prunes only from the third trial on
    for trial in trials:
        records = [json.loads(line) for line in (study / trial.user_attrs["run_dir"] / "metrics.jsonl").open()]
        validated = {r["epoch"]: r["val_elbo"] for r in records if "val_elbo" in r}
        assert set(validated) <= {2, 4, 5} and len(validated) < len(records)
        assert trial.intermediate_values == validated  # each validated epoch's ELBO, at that epoch
        assert trial.user_attrs["val_elbo"] == max(validated.values())


def test_a_grid_of_choices_runs_each_point_once_scored_by_the_validation_nll(tmp_path, tiny_npz):
    config = search_toml(tmp_path / "s.toml", tiny_npz, trials=10, sampler="grid", metric="val_nll", nll_samples=4)
    text = config.read_text().split("[tune.space]")[0]
    config.write_text(text + '[tune.space]\n"model.latent_dim" = ["int", 2, 3]\n'
                             '"model.encoder_hidden" = ["choice", [16], [8, 8]]\n')
    study = tmp_path / "study"
    assert main(["tune", "--config", str(config), "--out", str(study)]) == 0
    trials = trials_of(study)
    assert states(trials) == ["COMPLETE"] * 4  # the grid's 2 x 2 points, though tune.trials = 10
    points = set()
    for trial in trials:
        run = study / trial.user_attrs["run_dir"]
        hidden = json.loads((run / "config.json").read_text())["model"]["encoder_hidden"]
        points.add((trial.params["model.latent_dim"], json.dumps(hidden)))
        assert trial.value == json.loads((run / "eval-val-k4.json").read_text())["nll"]  # minimized
    assert points == {(d, json.dumps(h)) for d in (2, 3) for h in ([16], [8, 8])}
    assert optuna.load_study(study_name="study", storage=StudyFolder(study).storage()).direction.name == "MINIMIZE"


# ---------------------------------------------------------------- PostgreSQL

def _initdb() -> str | None:
    """PostgreSQL's initdb: on the PATH, or where Debian puts it (/usr/lib/postgresql/VERSION/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return shutil.which("initdb") or (str(found[-1]) if found else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """A PostgreSQL server of its own on a free localhost port (initdb + pg_ctl as a non-root user);
    yields the URL of an empty database, and stops the server."""
    initdb = _initdb()
    if initdb is None:
        pytest.skip("PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)")
    bin_dir = Path(initdb).parent
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="vaelab-pg-"))
    if os.geteuid() == 0:  # initdb refuses root: run the server as nobody, in a folder nobody owns
        if shutil.which("runuser") is None:
            pytest.skip("running as root and runuser is missing: initdb cannot run as another user")
        as_user = ["runuser", "-u", "nobody", "--"]
        folder.chmod(0o755)
        shutil.chown(folder, "nobody")
    data, port = folder / "data", _free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=localhost", "start")
    try:
        import psycopg2

        connection = psycopg2.connect(host="localhost", port=port, user="postgres", dbname="postgres")
        connection.autocommit = True
        connection.cursor().execute("CREATE DATABASE vaelab")
        connection.close()
        yield f"postgresql://postgres@localhost:{port}/vaelab"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_postgresql_study_and_another_machine_joins(tmp_path, tiny_npz, postgres):
    study = tmp_path / "here" / "study"
    out = finish(vaelab("tune", "--config", str(search_toml(tmp_path / "s.toml", tiny_npz)), "--out", str(study),
                        "--workers", "2", "--trials", "3", "--storage", postgres, cwd=tmp_path))
    assert states(trials_of(study, postgres)).count("COMPLETE") >= 3, out
    assert json.loads((study / "study.json").read_text())["storage"] == postgres
    assert not (study / "study.db").exists()
    # another machine: a folder of the study's name, the storage URL, and nothing else
    joined = tmp_path / "there" / "study"
    out = finish(vaelab("tune", "--resume", str(joined), "--storage", postgres, "--trials", "4", cwd=tmp_path))
    trials = trials_of(study, postgres)
    assert states(trials).count("COMPLETE") >= 4, out
    assert [m.path.name for m in StudyFolder(joined).members()] == [t.user_attrs["run_dir"] for t in trials[3:]]
