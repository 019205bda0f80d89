"""The `vaelab` command end to end, in a subprocess, as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.image import imread

import vaelab
from vaelab.storage import read_jsonl


def vaelab_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "vaelab", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


TINY = ["--set", "train.train_subset=2000", "--set", "train.max_steps=20", "--set", "train.epochs=2"]


@pytest.fixture(scope="module")
def tiny_run(mnist_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    result = vaelab_cli("train", *TINY, "--data-dir", str(mnist_dir), "--out", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_train_writes_the_run_folder(tiny_run):
    run_dir, result = tiny_run
    assert "test ELBO" in result.stdout and "nats per image" in result.stdout
    assert "dynamic binarization" in result.stdout
    for name in ("config.json", "metrics.jsonl", "checkpoint.safetensors", "model.safetensors", "summary.json"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["max_steps"] == 20 and config["model"]["latent_dim"] == 2
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [16, 20]  # 2000 images / 128 = 16 steps an epoch
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 20 and np.isfinite(summary["test_elbo"])


@pytest.mark.parametrize("name, shape", [("samples", (5, 5)), ("reconstructions", (2, 10)),
                                         ("interpolations", (5, 25))])
def test_figures_are_images_of_the_right_grid(tiny_run, name, shape):
    run_dir, _ = tiny_run
    image = imread(run_dir / "figures" / f"{name}.png")
    rows, cols = shape
    assert image.ndim == 3 and image.shape[0] >= rows * 28 and image.shape[1] >= cols * 28
    assert image[..., :3].std() > 0.1  # not blank


def test_load_run_gives_the_trained_model_in_eval_mode(tiny_run):
    run_dir, _ = tiny_run
    model = vaelab.load_run(run_dir)
    assert not model.training
    x = torch.zeros(2, 784)
    q = model.posterior(x)
    z = q.sample()
    log_w = model.likelihood(z).log_prob(x) + model.prior().log_prob(z) - q.log_prob(z)
    assert log_w.shape == (2,) and torch.all(torch.isfinite(log_w))
    assert model.run_config.name == "mnist-lab"


def test_resume_of_a_finished_run_trains_nothing_and_says_how_to_extend_it(tiny_run, mnist_dir):
    run_dir, _ = tiny_run
    result = vaelab_cli("train", "--resume", str(run_dir), "--data-dir", str(mnist_dir))
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 2  # nothing trained twice
    assert "has finished (reached train.max_steps=20)" in result.stdout
    assert f"vaelab train --resume {run_dir} --set train.max_steps=40" in result.stdout


def test_bad_key_fails_before_any_work(tmp_path):
    result = vaelab_cli("train", "--set", "model.latnt_dim=3", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "model.latnt_dim" in result.stderr and "unknown key" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_key_in_the_wrong_section_is_pointed_to_the_right_one(tmp_path):
    result = vaelab_cli("train", "--set", "train.lr=0.01", "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "error: train.lr: unknown key; did you mean optim.lr? (known in train: " in result.stderr


def test_bad_value_fails_before_any_work(tmp_path):
    result = vaelab_cli("train", "--set", "optim.lr=-1", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "optim.lr" in result.stderr
    assert not (tmp_path / "run").exists()


def test_existing_run_is_not_overwritten(tiny_run, mnist_dir):
    run_dir, _ = tiny_run
    result = vaelab_cli("train", *TINY, "--data-dir", str(mnist_dir), "--out", str(run_dir))
    assert result.returncode == 2 and "--resume" in result.stderr


def test_presets_and_data_fetch(mnist_dir):
    presets = vaelab_cli("presets")
    assert presets.returncode == 0 and "mnist-lab" in presets.stdout
    fetch = vaelab_cli("data", "fetch", "mnist", "--data-dir", str(mnist_dir))
    assert fetch.returncode == 0, fetch.stderr
    assert "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757" in fetch.stdout
    assert str(mnist_dir) in fetch.stdout


# Runs `vaelab COMMAND ...` with the evaluation replaced by a Ctrl-C, as a user's press lands in it.
CTRL_C_IN_EVALUATION = """
import sys
import vaelab.cli, vaelab.evaluate
def ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt
vaelab.evaluate.evaluate_run = ctrl_c
sys.exit(vaelab.cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_ctrl_c_exits_130_with_one_line_not_a_traceback(tmp_path, command):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(vaelab.make_config().to_dict()))
    result = subprocess.run([sys.executable, "-c", CTRL_C_IN_EVALUATION, command, str(run_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 130
    assert result.stderr.splitlines() == [f"interrupted (vaelab {command})"]
    if command == "report":  # it said what it was starting, and how to make it shorter
        assert ("evaluating the test set with K = 5000 importance samples per image (the run's weights have no "
                "evaluation yet; shorter: --samples 1000, or --no-evaluate to skip it)") in result.stdout


def test_figures_help_lists_every_figure_of_the_registry_with_its_whole_description():
    from vaelab.figures import FIGURES, describe

    result = vaelab_cli("figures", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # as read, whatever the wrapping
    for name in FIGURES:
        assert f"{name} {describe(name)}" in text, name
    assert "--manifold-range RANGE manifold: minmax (of the test posterior means) or quantile (of the prior)" in text


def test_the_evaluation_of_colour_photos_does_not_call_them_grey():
    from vaelab.cli import format_evaluation

    result = {"data": "images", "split": "test", "n": 20, "binarization": "grey", "channels": 3,
              "binarization_seed": None, "elbo": -10.0, "reconstruction": -8.0, "kl": 2.0, "nll": 9.5,
              "nll_stderr": 0.1, "k": 10, "active_units": 3, "latent_dim": 4, "seconds": 1.0, "device": "cpu"}
    first = format_evaluation(result).splitlines()[0]
    assert first == "images test split, 20 images, colour pixels in their levels (not binarized); nats per image, " \
                    "summed over pixels"
    grey = format_evaluation(result | {"channels": 1}).splitlines()[0]
    assert "grey-level pixels (not binarized)" in grey and "grey binarization" not in grey
