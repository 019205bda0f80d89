"""What `vaelab train` runs end to end, sized from the data: a small folder of images learns."""

from __future__ import annotations

import numpy as np
import pytest
from shapes import draw_shapes, write_folder

import vaelab
from vaelab.config import resolve_config
from vaelab.data import load_data
from vaelab.data.views import make_views
from vaelab.figures.grids import reconstructions_of
from vaelab.pipeline import fit_batch_to_data, learned_little


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """200 grey 12x12 PNGs of circles, squares and triangles, in class folders: a user's small set."""
    images, labels = draw_shapes(200, (12, 12), seed=3)
    grey = images.mean(-1).round().astype(np.uint8)
    return write_folder(tmp_path_factory.mktemp("shapes") / "shapes", grey, labels)


@pytest.fixture(scope="module")
def small_run(small_folder, tmp_path_factory, one_thread):
    """The `images` preset as a user runs it on the folder (about 20 s on one thread)."""
    said: list[str] = []
    run = vaelab.train(data=small_folder, out=tmp_path_factory.mktemp("runs") / "shapes", log=said.append)
    return run, said


def test_a_small_folder_trains_enough_steps_in_batches_it_allows(small_run):
    run, said = small_run
    assert run.config.train.batch_size == 16  # a tenth of the 160 training images, not 128
    assert any(line.startswith("train.batch_size = 16: at most a tenth of the 160 training images") for line in said)
    assert any(line.startswith("train.epochs = 200: 160 training images make 10 steps an epoch, and "
                               "train.min_steps = 2000") for line in said)
    assert run.summary["steps"] >= 2000  # early stopping waited for them


def test_a_small_folder_learns_a_model_that_tells_its_images_apart(small_run):
    run, said = small_run
    assert not any(line.startswith("warning:") for line in said), said
    assert run.evaluation()["active_units"] >= 2
    config = run.config.data  # its reconstructions are nearer each image than the mean image is: not one blur
    x = make_views(load_data(config, progress=False), config).test.batch(slice(0, 20))
    error = ((reconstructions_of(run.model, x) - x) ** 2).mean().item()
    assert error < 0.5 * ((x.mean(0) - x) ** 2).mean().item()


def test_a_batch_larger_than_the_training_set_takes_every_image():
    said: list[str] = []
    config = resolve_config(overrides=["train.batch_size=500"])
    fitted = fit_batch_to_data(config, 100, said.append)
    assert fitted.train.batch_size == 100 and config.train.batch_size == 500
    assert said == ["train.batch_size = 100: the 500 asked for is more than the 100 training images"]
    assert fit_batch_to_data(config, 500, said.append) is config


@pytest.mark.parametrize("summary, warned", [
    ({"steps": 40, "test_kl": 0.01, "evaluation": {"active_units": 0}},
     "warning: this model has learned little: only 40 optimizer steps; the posterior collapsed (test KL 0.01 "
     "nats per image, 0 active units), so every image decodes alike. Train it longer: vaelab train --resume "
     "RUN --set train.min_steps=2000"),
    ({"steps": 5000, "test_kl": 0.02},
     "warning: this model has learned little: the posterior collapsed (test KL 0.02 nats per image), so every "
     "image decodes alike. Train it longer: vaelab train --resume RUN --set train.min_steps=10000"),
    ({"steps": 300, "test_kl": 12.5, "evaluation": {"active_units": 3}},
     "warning: this model has learned little: only 300 optimizer steps. Train it longer: vaelab train --resume "
     "RUN --set train.min_steps=2000"),
    ({"steps": 5000, "test_kl": 12.5, "evaluation": {"active_units": 3}}, None),
])
def test_a_run_too_short_to_learn_is_one_warning_line_saying_what_to_do(summary, warned):
    assert learned_little(summary, resolve_config(), "RUN") == warned


def test_a_short_fine_tune_is_not_told_it_learned_little_unless_its_posterior_collapsed():
    tuned = resolve_config(overrides=["train.init_from=runs/first"])
    assert learned_little({"steps": 300, "test_kl": 12.5, "evaluation": {"active_units": 3}}, tuned, "RUN") is None
    collapsed = learned_little({"steps": 300, "test_kl": 0.01}, tuned, "RUN")
    assert collapsed.startswith("warning: this model has learned little: the posterior collapsed (test KL 0.01")


def test_a_run_cut_by_max_steps_is_told_to_raise_it():
    warned = learned_little({"steps": 20, "test_kl": 3.0}, resolve_config(overrides=["train.max_steps=20"]), "RUN")
    assert warned.endswith("--set train.max_steps=2000")


def test_the_end_of_training_line_calls_colour_pixels_colour():
    from vaelab.pipeline import describe_elbo

    summary = {"test_elbo": -10.0, "test_reconstruction": -8.0, "test_kl": 2.0}
    colour = describe_elbo(summary, resolve_config(overrides=["data.name=cifar10", "data.binarization=grey",
                                                              "model.likelihood=gaussian"]))
    assert "colour pixels in their levels" in colour and "grey" not in colour
    assert "dynamic binarization" in describe_elbo(summary, resolve_config())


def test_the_likelihood_chosen_for_a_folder_is_said_in_toml(small_run):
    _, said = small_run
    assert ('model.likelihood = "discretized_logistic", data.binarization = "grey" (the pixels kept in their '
            "levels, not binarized): ") in "\n".join(said)
    assert any(line.endswith('(train.precision = "auto")') for line in said)
