"""Every shipped preset runs end to end: training, evaluation, its figures or table."""

import json
import os

import pytest

from vaelab.config import member_configs, preset_dict, preset_names, resolve_config
from vaelab.pipeline import sweep_run, train_run

SHORT = ["data.val_size=100", "train.max_steps=4", "train.epochs=2", "train.batch_size=20",
         "train.eval_batch_size=50"]


def short_config(name):
    values = preset_dict(name)
    overrides = list(SHORT)
    if values.get("evaluate", {}).get("samples"):
        overrides.append("evaluate.samples=3")
    if is_generated(values):  # a factor set (dsprites): a small sub-grid of it, and few factor samples
        overrides.append("data.factor_levels=[3, 2, 4, 4, 4]")
        if values.get("evaluate", {}).get("disentanglement"):
            overrides.append("evaluate.disentanglement=100")
    return resolve_config(name, overrides=overrides)


def is_generated(values):
    """Whether a preset trains on a data set vaelab draws itself (its factor grid), not on MNIST-like data."""
    from vaelab.data.catalog import DATASETS

    info = DATASETS.get(values.get("data", {}).get("name", ""))
    return info is not None and info.generated


def quiet(*args):
    pass


@pytest.mark.parametrize("name", [n for n in preset_names() if not preset_dict(n).get("sweep")])
def test_every_preset_runs_end_to_end_on_a_small_subset(name, tmp_path, tiny_raw, request):
    config = short_config(name)
    # a preset that fine-tunes a shipped model needs images like those it learnt: on the tiny set's
    # noise its trained encoder's variances overflow
    raw = request.getfixturevalue("mnist_raw") if config.train.init_from else tiny_raw
    if config.data.name == "images":  # the tiny set as a user's images, shaped as the preset says
        from vaelab.data import load_image_arrays
        from vaelab.data.load import image_options

        raw = load_image_arrays(tiny_raw.x_train, tiny_raw.y_train, x_test=tiny_raw.x_test, y_test=tiny_raw.y_test,
                                **image_options(config.data))
    if is_generated(preset_dict(name)):
        raw = None  # drawn by vaelab (the sub-grid short_config asks for), with its factors
    summary = train_run(config, tmp_path / name, raw=raw, log=quiet)
    assert summary["steps"] == 4
    if config.evaluate.disentanglement:
        assert (tmp_path / name / f"disentanglement-n{config.evaluate.disentanglement}.json").exists()
    figures = tmp_path / name / "figures"
    drawn = {p.stem for p in figures.glob("*.png")}
    assert drawn == set(config.figures.names), drawn
    if config.evaluate.samples:
        assert summary["evaluation"]["k"] == 3 and (tmp_path / name / "eval-test-k3.json").exists()
    assert json.loads((tmp_path / name / "summary.json").read_text())["test_elbo"] == summary["test_elbo"]


def test_the_sweep_preset_runs_each_member_and_writes_its_table(tmp_path, tiny_raw):
    config = short_config("mnist-latent-sweep")
    assert [c.model.latent_dim for _, c in member_configs(config)] == [2, 3, 10, 20]
    table = sweep_run(config, tmp_path / "sweep", raw=tiny_raw, log=quiet)
    for member in ("latent_dim=2", "latent_dim=3", "latent_dim=10", "latent_dim=20"):
        assert (tmp_path / "sweep" / member / "figures" / "samples.png").exists()
        assert member in table
    assert (tmp_path / "sweep" / "table.md").read_text() == table
    assert (tmp_path / "sweep" / "table.csv").read_text().count("\n") == 5  # header + 4 runs


def test_presets_say_what_they_are():
    for name in preset_names():
        assert preset_dict(name)["description"], name
        assert resolve_config(name).name == name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist-lab", "mnist-cvae"])
def test_full_preset_on_real_mnist(name, tmp_path, mnist_raw):
    # the preset's training in full; its NLL (mnist-cvae's K = 1000 over the test set, a minute and
    # more) is what tests/test_pretrained.py checks on the shipped weights of the same preset
    config = resolve_config(name, overrides=["evaluate.samples=0"])
    summary = train_run(config, tmp_path / name, raw=mnist_raw, log=quiet)
    assert summary["test_elbo"] > (-160 if name == "mnist-lab" else -110), summary["test_elbo"]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VAELAB_FULL_PRESETS"),
                    reason="the long presets take from 10 minutes to hours on a CPU; set VAELAB_FULL_PRESETS=1")
@pytest.mark.parametrize("name", ["mnist-2d", "mnist-iwae", "mnist-latent-sweep", "fashion-mnist", "mnist-burda-vae",
                                  "mnist-vampprior", "dsprites-btcvae", "dsprites-betavae", "dsprites-capacity",
                                  "dsprites-dipvae", "dsprites-factorvae"])
def test_long_presets_on_real_data(name, tmp_path):
    from vaelab.cli import main

    assert main(["train", "--preset", name, "--out", str(tmp_path / name)]) == 0
