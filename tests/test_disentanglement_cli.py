"""`vaelab evaluate RUN --disentanglement`, its JSON in the run folder, `report` and `compare` showing
the scores, and the figures against the factors (traversals-factors, mi-matrix).

The run is a tiny VAE trained on a tiny factor grid built here: 28x28 images of a square whose
column, row and size are the three factors (FactorGrid's interface: names, sizes, values,
sample, batch, index), so which factor each latent dimension carries is checked against the
mutual information the figures and scores read.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from tiny_runs import run, tiny_data, trained  # noqa: F401  (fixtures: a run on MNIST-like data, no factors)
from vaelab.cli import main
from vaelab.config import resolve_config
from vaelab.data.views import make_views
from vaelab.runs import DISENTANGLEMENT, RunFolder
from vaelab.training import Trainer

SIDE = 28  # the run's config is MNIST-shaped


class SquareGrid:
    """A full grid over (x, y, size): a white square of side 4 + 2 size at column 4x, row 4y; binary images."""

    names = ("x", "y", "size")
    sizes = (5, 5, 2)
    values = (np.arange(5.0), np.arange(5.0), np.array([2.0, 3.0]))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, s, n) for s in self.sizes], axis=1).astype(np.int64)

    def batch(self, factors: np.ndarray) -> torch.Tensor:
        images = np.zeros((len(factors), SIDE, SIDE), dtype=np.float32)
        for i, (x, y, size) in enumerate(np.asarray(factors)):
            images[i, 4 * y:4 * y + 4 + 2 * size, 4 * x:4 * x + 4 + 2 * size] = 1.0
        return torch.from_numpy(images.reshape(len(factors), -1))

    def index(self, factors: np.ndarray) -> np.ndarray:
        return np.ravel_multi_index(np.asarray(factors).T, self.sizes)


def grid_raw(grid: SquareGrid, repeats: int = 6) -> SimpleNamespace:
    """Every grid image `repeats` times as uint8 0/255, in the raw arrays make_views takes."""
    everything = np.stack(np.meshgrid(*[np.arange(s) for s in grid.sizes], indexing="ij"), -1).reshape(-1, 3)
    images = (grid.batch(np.tile(everything, (repeats, 1))).numpy().reshape(-1, SIDE, SIDE) * 255).astype(np.uint8)
    labels = np.zeros(len(images), dtype=np.uint8)
    return SimpleNamespace(name="squares", source="generated", x_train=images, y_train=labels,
                           x_test=images[:100], y_test=labels[:100])


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """(run folder, its data with `factors`): a 3-D latent VAE trained a few epochs on the square grid."""
    grid = SquareGrid()
    config = resolve_config(overrides=["data.val_size=50", "train.batch_size=50", "train.epochs=3",
                                       "model.latent_dim=3", "model.encoder_hidden=[64]",
                                       "model.decoder_hidden=[64]", "train.eval_batch_size=100",
                                       # as training records a factor data set's factors (pipeline)
                                       'data.factor_names=["x", "y", "size"]', "data.factor_sizes=[5, 5, 2]"])
    data = make_views(grid_raw(grid), config.data)
    data.factors = grid
    run_dir = tmp_path_factory.mktemp("squares") / "run"
    RunFolder(run_dir).create(config)
    Trainer(config, run_dir, data, progress=False, log=lambda *a: None).fit()
    return run_dir, data


@pytest.fixture
def squares_cli(squares, monkeypatch):
    """The CLI loads the run's data with its factors (the grid above stands for a factor data set)."""
    run_dir, data = squares
    monkeypatch.setattr("vaelab.evaluate.load_run_data", lambda *args, **kwargs: data)
    return run_dir


def test_evaluate_disentanglement_prints_then_keeps_the_scores(squares_cli, capsys):
    for name in squares_cli.glob("disentanglement-*.json"):
        name.unlink()
    assert main(["evaluate", str(squares_cli), "--disentanglement", "--samples", "300", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    path = squares_cli / "disentanglement-n300.json"
    assert DISENTANGLEMENT.fullmatch(path.name) and f"saved in {path}" in out
    result = json.loads(path.read_text())
    assert result["samples"] == 300 and result["seed"] == 3
    assert result["factors"] == ["x", "y", "size"] and result["factor_sizes"] == [5, 5, 2]
    assert result["weights_sha256"] == RunFolder(squares_cli).fingerprint() and result["latent_dim"] == 3
    from vaelab.evaluate import flat_scores

    scores = flat_scores(result)
    assert all(value is not None for key, value in scores.items() if key != "total_correlation"), scores
    assert 0.0 <= scores["mig"] <= 1.0 and 0.0 <= scores["beta_vae"] <= 1.0, scores
    assert result["mig"]["samples"] == 300 and result["dci"]["seed"] == 3  # each score with its sizes and seed
    assert f"{scores['mig']:8.3f}" in out and "300 factor samples, seed 3" in out
    assert not list(squares_cli.glob(".disentanglement*"))  # no temporary file left behind


def test_json_output_is_the_file(squares_cli, capsys):
    assert main(["evaluate", str(squares_cli), "--disentanglement", "--samples", "120", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((squares_cli / "disentanglement-n120.json").read_text())
    assert printed["samples"] == 120 and printed["seed"] == 0


def untimed(tree):
    """A result without its seconds (of the whole and of each score)."""
    if isinstance(tree, dict):
        return {k: untimed(v) for k, v in tree.items() if "seconds" not in k}
    return tree


def test_the_api_scores_alike_and_finds_them(squares):
    import vaelab
    from vaelab.evaluate import evaluate_disentanglement

    run_dir, data = squares
    result = evaluate_disentanglement(run_dir, 200, 1, data=data, progress=False)
    again = evaluate_disentanglement(run_dir, 200, 1, data=data, progress=False)
    assert untimed(result) == untimed(again)  # the same scores, sizes and seeds; only the times differ
    assert vaelab.open_run(run_dir).disentanglement()["samples"] >= 200


def test_report_and_compare_show_the_scores(squares_cli, run, capsys):
    from vaelab.evaluate import flat_scores
    from vaelab.comparison import compare_runs
    from vaelab.report import write_report

    main(["evaluate", str(squares_cli), "--disentanglement", "--samples", "400", "--seed", "2"])
    capsys.readouterr()
    scores = flat_scores(RunFolder(squares_cli).current_disentanglement()[1])
    page = write_report(squares_cli, evaluate=False, figures=False, progress=False).read_text()
    assert "<h2>Disentanglement</h2>" in page and "disentanglement-n400.json" in page
    assert f"{scores['mig']:.3f}" in page and "400 factor samples, seed 2" in page
    table = compare_runs([squares_cli, run])
    header, rows = table.splitlines()[0], table.splitlines()[2:4]
    assert " MIG | " in header and "scored on" in header
    assert f"{scores['mig']:.3f}" in rows[0] and "N=400, seed 2" in rows[0]
    assert "N=400" not in rows[1]  # the MNIST-like run has no scores
    csv = compare_runs([squares_cli, run], csv=True)
    assert "dis_mig" in csv.splitlines()[0] and "dis_total_correlation" in csv.splitlines()[0]


def test_the_report_of_a_factor_run_never_scored_says_how_to_score_it(squares, tmp_path):
    import shutil

    from vaelab.report import write_report

    copy = Path(shutil.copytree(squares[0], tmp_path / "copy"))
    for path in copy.glob("disentanglement-*.json"):
        path.unlink()
    page = write_report(copy, evaluate=False, figures=False, progress=False).read_text()
    assert "Not scored yet: <code>vaelab evaluate RUN --disentanglement</code>" in page and "(x, y, size)" in page


def test_the_figures_name_each_dimension_by_its_factor(squares_cli, capsys):
    from vaelab.disentanglement import entropy, mutual_information
    from vaelab.figures import figure_context
    from vaelab.figures.factors import draw_mi_matrix, draw_traversals_factors, factor_information

    assert main(["figures", str(squares_cli), "traversals-factors", "mi-matrix", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    for name in ("traversals-factors", "mi-matrix"):
        path = squares_cli / "figures" / f"{name}.png"
        assert str(path) in out
        height, width = imread(path).shape[:2]
        assert 150 <= height <= 3000 and 200 <= width <= 3000, (name, height, width)
    run_dir = squares_cli
    ctx = figure_context(run_dir, seed=5, factor_samples=800)
    info = factor_information(ctx)
    # the labels and cells are the MI of the codes of the factor samples, recomputed here
    codes = torch.cat([ctx.model.posterior(SquareGrid().batch(info.factors)).mean]).detach().numpy()
    mi = mutual_information(codes, info.factors)
    np.testing.assert_allclose(info.mi, mi, rtol=1e-6, atol=1e-9)
    normalized = mi / entropy(info.factors)[None, :]
    expected = [f"z{j}: {SquareGrid.names[int(np.argmax(normalized[j]))]} {normalized[j].max():.2f}" for j in range(3)]
    traversal = draw_traversals_factors(ctx)
    labels = [t.get_text() for t in traversal.axes[0].get_yticklabels()]
    assert labels == expected
    assert "800 factor samples, seed 5" in traversal.texts[0].get_text()
    heat = draw_mi_matrix(ctx)
    ax = heat.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "size"]
    np.testing.assert_allclose(ax.images[0].get_array(), normalized, rtol=1e-6)
    # a trained latent carries the square's position: some dimension says much about x, some about y
    assert normalized[:, 0].max() > 0.3 and normalized[:, 1].max() > 0.3, normalized


def test_a_run_without_factors_is_one_line_before_any_work(run, tiny_data, capsys, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr("vaelab.runs.load_run", lambda *a, **k: pytest.fail("the model was loaded"))
        assert main(["evaluate", str(run), "--disentanglement"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {run}: its data (mnist) has no factors; disentanglement is measured on a factor data set " \
                  "such as dsprites\n"
    assert not list(Path(run).glob("disentanglement-*.json"))
    assert main(["figures", str(run), "mi-matrix"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mi-matrix: " in err and "has no factors" in err
    assert not (Path(run) / "figures" / "mi-matrix.png").exists()


def test_disentanglement_refuses_options_of_the_likelihood_evaluation(squares_cli, capsys):
    assert main(["evaluate", str(squares_cli), "--disentanglement", "--split", "val"]) == 2
    assert "drop --split and --memory-mb" in capsys.readouterr().err
    assert main(["evaluate", str(squares_cli), "--disentanglement", "--samples", "0"]) == 2
    assert "must be >= 1 factor samples" in capsys.readouterr().err


def test_a_dsprites_run_end_to_end_through_the_command(tmp_path):
    """Trained through vaelab.train on a dSprites sub-grid (data23's generated set), then the commands as
    a user types them, in a fresh process: the run's own data gives the factors."""
    import subprocess
    import sys

    import vaelab

    vaelab.train(out=tmp_path / "run", log=lambda line: None, overrides=[
        'data.name="dsprites"', "data.factor_levels=[3, 3, 5, 4, 4]", 'data.binarization="auto"',
        'model.likelihood="auto"', "model.encoder_hidden=[16]", "model.decoder_hidden=[16]", "train.epochs=1",
        "train.batch_size=64", "train.threads=1", "figures.names=[]"])
    run_dir = tmp_path / "run"
    for args in (["evaluate", str(run_dir), "--disentanglement", "--samples", "200", "--seed", "4"],
                 ["figures", str(run_dir), "traversals-factors", "mi-matrix", "--factor-samples", "300"]):
        done = subprocess.run([sys.executable, "-m", "vaelab", *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    result = json.loads((run_dir / "disentanglement-n200.json").read_text())
    assert result["factors"] == ["shape", "scale", "orientation", "x", "y"] and result["factor_sizes"] == [3, 3, 5, 4, 4]
    assert (result["samples"], result["seed"], result["data"]) == (200, 4, "dsprites")
    for name in ("traversals-factors", "mi-matrix"):
        assert imread(run_dir / "figures" / f"{name}.png").shape[0] > 100
    assert json.loads((run_dir / "figures" / "figures.json").read_text())["mi-matrix"]["options"]["factor_samples"] == 300


def test_training_with_evaluate_disentanglement_prints_and_keeps_the_scores(tmp_path):
    """evaluate.disentanglement = N (as the dsprites presets set it): `vaelab train` scores the run it
    trained, prints the block, and keeps the same scores as `evaluate --disentanglement` would."""
    import vaelab

    lines: list[str] = []
    run = vaelab.train(out=tmp_path / "run", log=lines.append, overrides=[
        'data.name="dsprites"', "data.factor_levels=[3, 2, 4, 4, 4]", "model.encoder_hidden=[16]",
        "model.decoder_hidden=[16]", "train.epochs=1", "train.batch_size=64", "train.threads=1",
        "figures.names=[]", "evaluate.disentanglement=120"])
    kept = json.loads((tmp_path / "run" / "disentanglement-n120.json").read_text())
    assert (kept["samples"], kept["seed"], kept["data"]) == (120, 0, "dsprites")
    assert kept["weights_sha256"] == json.loads((tmp_path / "run" / "summary.json").read_text())["weights_sha256"]
    text = "\n".join(lines)
    assert "scoring disentanglement over the factors: 120 factor samples, seed 0" in text
    assert "MIG" in text and f"{kept['mig']['score']:8.3f}" in text
    assert run.disentanglement() == kept


def test_evaluate_disentanglement_on_data_without_factors_is_refused_before_training():
    from vaelab.config import ConfigError, resolve_config

    with pytest.raises(ConfigError) as caught:
        resolve_config(overrides=["evaluate.disentanglement=1000"])  # mnist-lab: MNIST has no factors
    assert "evaluate.disentanglement" in str(caught.value) and "\n" not in str(caught.value)
