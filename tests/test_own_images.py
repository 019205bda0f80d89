"""Your own images through every command: a folder of PNGs or JPEGs, arrays from Python; any size, grey
or colour; the likelihood chosen from the pixels; evaluate, figures, report and explorer as on MNIST."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapes import draw_shapes, write_folder

import vaelab
from vaelab import cli
from vaelab.runs import RunFolder

SHORT = ["--set", "train.epochs=2", "--set", "train.min_steps=0", "--set", "train.batch_size=32", "--set", "evaluate.samples=4",
         "--set", "train.eval_batch_size=64"]


def quiet(text: str) -> None:
    pass


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """scikit-learn's 8x8 digits (real handwriting, 17 grey levels) as PNGs in one folder per digit."""
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn (a test dependency) is not installed")
    digits = datasets.load_digits()
    images = (digits.images * 15).astype(np.uint8)  # 0..16 -> 0..240: grey levels as an 8-bit file holds them
    names = tuple(str(d) for d in range(10))
    return write_folder(tmp_path_factory.mktemp("digits"), images[..., None], digits.target, names), images


def test_a_folder_of_digits_trains_evaluates_and_explores_from_the_command_line(digits_folder, tmp_path, capsys):
    folder, images = digits_folder
    run = tmp_path / "digits"
    assert cli.main(["train", "--images", str(folder), *SHORT, "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "images: " in out and "8x8, grey; 10 labels (0, 1, 2" in out
    assert 'model.likelihood = "discretized_logistic"' in out and "256 levels" in out
    config = RunFolder(run).config()
    assert config.data.image_size == [8, 8] and config.data.channels == 1
    assert config.data.label_names == [str(d) for d in range(10)] and config.data.data_dir == str(folder)
    assert len(RunFolder(run).metrics()) == 2
    evaluation = RunFolder(run).current_evaluation()[1]
    assert evaluation["k"] == 4 and evaluation["bits_per_dim"] > 0 and evaluation["n"] > 100
    assert {p.stem for p in (run / "figures").glob("*.png")} == set(config.figures.names)

    assert cli.main(["evaluate", str(run), "--samples", "3", "--json"]) == 0  # read back from the run's folder
    again = json.loads(capsys.readouterr().out)
    assert again["n"] == evaluation["n"] and again["weights_sha256"] == evaluation["weights_sha256"]
    assert cli.main(["report", str(run), "--no-evaluate"]) == 0
    assert cli.main(["explore", str(run)]) == 0
    assert (run / "report.html").is_file() and (run / "explorer.html").is_file()


def test_black_and_white_images_get_a_bernoulli_and_the_reason(tmp_path):
    rng = np.random.default_rng(0)
    images = (rng.random((300, 12, 10)) > 0.6).astype(np.uint8) * 255
    said = []
    run = vaelab.train(data=images, overrides={"train.epochs": 1, "train.min_steps": 0, "evaluate.samples": 2},
                       out=tmp_path / "bw", log=said.append)
    config = run.config
    assert config.model.likelihood == "bernoulli" and config.data.binarization == "static"
    assert any("black and white (every pixel is 0 or 255)" in line for line in said)
    assert run.evaluation()["nll"] > 0 and run.evaluation().get("bits_per_dim") is not None


def test_arrays_from_python_are_kept_so_the_shell_can_score_the_run_later(tmp_path, capsys):
    images, labels = draw_shapes(160, size=(20, 24), seed=1)
    run = vaelab.train(data=(images, labels), overrides={"train.epochs": 1, "train.min_steps": 0, "evaluate.samples": 0},
                       out=tmp_path / "arrays", log=quiet)
    assert run.config.data.label_names == ["0", "1", "2"] and run.config.data.channels == 3
    assert cli.main(["evaluate", str(run.path), "--samples", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 16  # the 10 % test split of the 160 images


@pytest.mark.parametrize("size, net", [((64, 64), "conv"), ((45, 37), "conv"), ((45, 37), "mlp")])
def test_colour_images_of_any_size_train_evaluate_and_draw(tmp_path, size, net):
    images, labels = draw_shapes(240, size=size, seed=2)
    folder = write_folder(tmp_path / "shapes", images, labels)
    preset = "images-64" if size == (64, 64) else "images"
    overrides = {"train.max_steps": 6, "train.batch_size": 32, "evaluate.samples": 2, "model.net": net,
                 "data.image_size": list(size), "model.conv_channels": [8, 16]}
    run = vaelab.train(preset, data=folder, overrides=overrides, out=tmp_path / "run", log=quiet)
    c, h, w = 3, *size
    assert run.model.image_shape == (c, h, w)
    assert run.evaluation()["bits_per_dim"] > 0
    figures = run.figures("samples", "reconstructions", "latent-scatter")
    assert all(f.path and f._repr_png_().startswith(b"\x89PNG") for f in figures)
    assert run.model.decode_mean(run.model.prior().sample((2,))).shape == (2, c * h * w)


def test_a_conditional_model_needs_labelled_images(tmp_path):
    images = draw_shapes(60, size=(16, 16))[0]
    with pytest.raises(vaelab.config.ConfigError, match="model.conditional: the images have no labels"):
        vaelab.train(data=images, overrides={"model.conditional": True}, out=tmp_path / "c", log=quiet)


def test_no_images_given_is_one_line(tmp_path, capsys):
    assert cli.main(["train", "--preset", "images", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.startswith("error: data.data_dir: no images given")


@pytest.mark.parametrize("latent_dim", [1, 2, 5])
def test_the_latent_scatter_of_unlabelled_images_has_no_label_legend(tmp_path, latent_dim):
    images = draw_shapes(120, size=(12, 12), seed=3)[0]
    run = vaelab.train(data=images, overrides={"train.max_steps": 2, "evaluate.samples": 0, "figures.names": [],
                                               "model.latent_dim": latent_dim}, out=tmp_path / "u", log=quiet)
    from vaelab.figures import figure_context
    from vaelab.figures.latent import draw_latent_scatter

    figure = draw_latent_scatter(figure_context(run.path))
    legends = [ax.get_legend() for ax in figure.axes if ax.get_legend() is not None]
    assert not legends and run.figure("latent-scatter").path.is_file()


def test_the_explorer_names_a_folders_classes(tmp_path):
    images, labels = draw_shapes(90, size=(16, 16), seed=4)
    folder = write_folder(tmp_path / "shapes", images, labels)
    run = vaelab.train(data=folder, overrides={"train.max_steps": 2, "evaluate.samples": 0, "figures.names": []},
                       out=tmp_path / "run", log=quiet)
    page = run.explore(n_points=50).path.read_text(encoding="utf-8")
    payload = page.split('<script type="application/json" id="vaelab-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(payload)["label_names"] == ["circle", "square", "triangle"]


def test_a_validation_split_carved_from_class_ordered_files_holds_every_class(tmp_path):
    from vaelab.data import load_image_arrays
    from vaelab.data.views import make_views

    images, labels = draw_shapes(300, size=(8, 8), seed=5)
    order = np.argsort(labels, kind="stable")  # as a folder lists them: class by class
    raw = load_image_arrays(images[order], labels[order], x_test=images[:30], y_test=labels[:30])
    config = vaelab.make_config("images", overrides={"data.binarization": "grey"})
    views = make_views(raw, config.data)
    assert len(views.val) == 30 and set(views.val.labels.tolist()) == {0, 1, 2}
    assert len(views.train) + len(views.val) == 300


def test_a_sweep_over_a_folder_of_images_trains_each_member(tmp_path):
    images, labels = draw_shapes(120, size=(12, 12), seed=6)
    folder = write_folder(tmp_path / "shapes", images, labels)
    sweep = vaelab.train(data=folder, out=tmp_path / "sweep", log=quiet,
                         overrides={"train.max_steps": 2, "evaluate.samples": 0, "figures.names": [],
                                    "sweep.members": ["model.latent_dim=2", "model.latent_dim=4"]})
    assert [m.config.model.latent_dim for m in sweep.members] == [2, 4]
    assert all(m.config.data.image_size == [12, 12] for m in sweep.members)
