"""Figures: every registered figure draws a PNG; grids, manifold and PCA show what they claim."""

import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch.distributions import Normal

from vaelab.config import DataConfig, ModelConfig, resolve_config
from vaelab.data.views import make_views
from vaelab.model import VAE
from vaelab.plots import (
    FIGURES,
    FigureContext,
    FigureSkipped,
    active_dims,
    draw_curves,
    draw_kl_per_dim,
    draw_latent_scatter,
    draw_manifold,
    figure_context,
    kl_per_dim_from_model,
    make_figures,
    manifold_axis_values,
    manifold_grid,
    pca_2d,
    reconstruction_grid,
    run_title,
    samples_grid,
    training_figures,
)
from vaelab.train import Trainer, dataset_elbo, prepare_run_dir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRICS = [
    {"epoch": e, "train_elbo": -200 + 10 * e, "val_elbo": -190 + 9 * e, "train_reconstruction": -190 + 11 * e,
     "val_reconstruction": -180 + 10 * e, "train_kl": 10 + e, "val_kl": 10 + e}
    for e in (1, 2, 3)
]


@pytest.fixture
def tiny_data(tiny_raw):
    return make_views(tiny_raw, DataConfig(val_size=100))


def tiny_model(latent_dim: int = 2) -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(latent_dim=latent_dim, encoder_hidden=[16], decoder_hidden=[16])).eval()


def make_ctx(tmp_path, data, latent_dim: int = 2, **options) -> FigureContext:
    values = {"title": "tiny-test: tiny (dynamic), epoch 3", "metrics": METRICS} | options
    return FigureContext(model=tiny_model(latent_dim), data=data, out_dir=tmp_path / "figures", **values)


def png_size(path) -> tuple[int, int]:
    """(height, width) of a PNG, after checking it is one."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    image = imread(path)
    return image.shape[0], image.shape[1]


# ---------------------------------------------------------------- every figure


@pytest.mark.parametrize("name", list(FIGURES))
@pytest.mark.parametrize("latent_dim", [2, 5])
def test_every_figure_writes_a_png(tmp_path, tiny_data, name, latent_dim):
    ctx = make_ctx(tmp_path, tiny_data, latent_dim)
    path = FIGURES[name](ctx)
    assert path == tmp_path / "figures" / f"{name}.png"
    height, width = png_size(path)
    assert 200 <= height <= 4000 and 300 <= width <= 4000, (height, width)
    assert not list(path.parent.glob("*.tmp")), "atomic write left a temporary file"


def test_registry_names():
    assert list(FIGURES) == ["samples", "reconstructions", "interpolations", "latent-scatter", "manifold",
                             "curves", "kl-per-dim"]
    assert all(callable(f) for f in FIGURES.values())


def test_bad_options_are_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="manifold_range"):
        make_ctx(tmp_path, tiny_data, manifold_range="middle")
    with pytest.raises(ValueError, match="scatter_method"):
        make_ctx(tmp_path, tiny_data, scatter_method="umap")
    with pytest.raises(ValueError, match="samples_n"):
        make_ctx(tmp_path, tiny_data, samples_n=0)


# ---------------------------------------------------------------- grids


@pytest.mark.parametrize("n", [3, 7])
def test_samples_grid_has_n_by_n_cells(n):
    model = tiny_model()
    grid = samples_grid(model, (1, 28, 28), n, seed=0)
    assert grid.shape == (n * 30 + 2, n * 30 + 2)
    z = torch.randn(n * n, 2, generator=torch.Generator().manual_seed(0))
    last = model.decode_mean(z)[-1].reshape(28, 28).numpy()
    np.testing.assert_allclose(grid[-30:-2, -30:-2], last, atol=1e-6)  # the bottom-right cell is the last draw


def test_samples_png_scales_with_n(tmp_path, tiny_data):
    small = png_size(FIGURES["samples"](make_ctx(tmp_path / "a", tiny_data, samples_n=4)))
    large = png_size(FIGURES["samples"](make_ctx(tmp_path / "b", tiny_data, samples_n=8)))
    assert 1.7 < large[1] / small[1] < 2.3, (small, large)


def test_reconstruction_grid_wraps_pairs_of_rows():
    originals, recons = np.ones((25, 28, 28), np.float32), np.full((25, 28, 28), 0.5, np.float32)
    grid, pairs = reconstruction_grid(originals, recons, per_row=10)
    assert pairs == 3 and grid.shape == (6 * 30 + 2, 10 * 30 + 2)

    def cell(r: int, c: int) -> np.ndarray:
        return grid[2 + 30 * r:30 * (r + 1), 2 + 30 * c:30 * (c + 1)]

    assert (cell(0, 9) == 1).all() and (cell(1, 9) == 0.5).all()
    assert (cell(4, 4) == 1).all() and (cell(5, 4) == 0.5).all()
    assert np.allclose(cell(4, 5), 0.12) and np.allclose(cell(5, 9), 0.12)  # the short last row is blank
    grid, pairs = reconstruction_grid(originals[:4], recons[:4])
    assert pairs == 1 and grid.shape == (2 * 30 + 2, 4 * 30 + 2)


def test_reconstructions_first_or_seeded_random(tmp_path, tiny_data):
    ctx = make_ctx(tmp_path, tiny_data)
    assert torch.equal(ctx.test_images(5, random=False), tiny_data.test.batch(slice(0, 5)))
    a, b = ctx.test_images(5, random=True), ctx.test_images(5, random=True)
    assert torch.equal(a, b) and not torch.equal(a, ctx.test_images(5, random=False))
    with pytest.raises(ValueError, match="test set has 100"):
        ctx.test_images(101, random=False)
    tall = png_size(FIGURES["reconstructions"](make_ctx(tmp_path, tiny_data, reconstructions_n=30)))
    short = png_size(FIGURES["reconstructions"](make_ctx(tmp_path, tiny_data, reconstructions_n=10)))
    assert 2.4 < tall[0] / short[0] < 3.3, (tall, short)  # 3 pairs of rows against 1


# ---------------------------------------------------------------- manifold


def test_manifold_axis_spans_min_to_max():
    values = torch.tensor([0.5, -3.0, 2.0, 1.0])
    axis = manifold_axis_values(20, "minmax", values)
    assert axis.shape == (20,)
    assert axis[0].item() == pytest.approx(-3.0) and axis[-1].item() == pytest.approx(2.0)
    assert torch.allclose(axis.diff(), torch.full((19,), 5.0 / 19))


def test_manifold_axis_quantiles():
    axis = manifold_axis_values(20, "quantile")
    expected = Normal(0.0, 1.0).icdf((torch.arange(20) + 0.5) / 20)
    assert torch.allclose(axis, expected, atol=1e-5)
    assert axis[0].item() == pytest.approx(-1.95996, abs=1e-4)
    assert torch.allclose(axis, -axis.flip(0), atol=1e-5) and (axis.diff() > 0).all()
    with pytest.raises(ValueError, match="not one of"):
        manifold_axis_values(20, "sideways")


def test_manifold_grid_is_the_product_of_the_axes_as_drawn():
    xs, ys = torch.tensor([0.0, 0.5, 1.0]), torch.tensor([10.0, 20.0])
    z = manifold_grid(xs, ys, latent_dim=4, dims=(1, 3))
    assert z.shape == (6, 4)
    cells = z.reshape(2, 3, 4)
    assert (cells[..., [0, 2]] == 0).all()  # the other dims at the prior mean
    assert torch.equal(cells[0, :, 1], xs) and torch.equal(cells[1, :, 1], xs)
    assert torch.equal(cells[:, 0, 3], torch.tensor([20.0, 10.0]))  # largest y in the top row


@pytest.mark.parametrize("mode", ["minmax", "quantile"])
def test_manifold_decodes_exactly_the_grid_on_its_axes(tmp_path, tiny_data, monkeypatch, mode):
    ctx = make_ctx(tmp_path, tiny_data, manifold_range=mode)
    seen = []
    decode = ctx.model.decode_mean
    monkeypatch.setattr(ctx.model, "decode_mean", lambda z: seen.append(z.clone()) or decode(z))
    fig = draw_manifold(ctx)
    means = ctx.test_posterior().loc
    xs = manifold_axis_values(20, mode, means[:, 0])
    ys = manifold_axis_values(20, mode, means[:, 1])
    (z,) = seen
    assert torch.allclose(z, manifold_grid(xs, ys, 2))
    if mode == "minmax":
        assert z[:, 0].min() == pytest.approx(means[:, 0].min().item(), abs=1e-6)
        assert z[:, 1].max() == pytest.approx(means[:, 1].max().item(), abs=1e-6)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"{v:.2f}" for v in xs[::2].tolist()]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"{v:.2f}" for v in ys.flip(0)[::2].tolist()]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z0", "z1")


def test_manifold_of_a_larger_latent_says_the_other_dims_are_held_at_zero(tmp_path, tiny_data):
    title = draw_manifold(make_ctx(tmp_path, tiny_data, 5))._suptitle.get_text()
    assert "other 3 latent dims held at 0" in title and "manifold_dims" in title
    fig = draw_manifold(make_ctx(tmp_path, tiny_data, 5, manifold_dims=(1, 3)))
    assert "held at 0" in fig._suptitle.get_text() and "by default" not in fig._suptitle.get_text()
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("z1", "z3")
    with pytest.raises(ValueError, match="manifold_dims"):
        draw_manifold(make_ctx(tmp_path, tiny_data, 5, manifold_dims=(2, 2)))
    with pytest.raises(ValueError, match="manifold_dims"):
        draw_manifold(make_ctx(tmp_path, tiny_data, 5, manifold_dims=(0, 5)))


def test_no_manifold_for_a_1d_latent(tmp_path, tiny_data):
    with pytest.raises(FigureSkipped, match="no manifold for a 1-D latent"):
        FIGURES["manifold"](make_ctx(tmp_path, tiny_data, 1))


# ---------------------------------------------------------------- latent scatter


def test_pca_finds_the_axes_of_largest_variance():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2000, generator=generator), torch.randn(2000, generator=generator)
    points = 0.01 * torch.randn(2000, 5, generator=generator)
    points[:, 3] += 3 * a
    points[:, 1] += b
    xy, explained = pca_2d(points + 7.0)
    assert xy.shape == (2000, 2)
    assert explained.tolist() == pytest.approx([0.9, 0.1], abs=0.03)
    assert abs(torch.corrcoef(torch.stack([xy[:, 0], a]))[0, 1]) > 0.99
    assert abs(torch.corrcoef(torch.stack([xy[:, 1], b]))[0, 1]) > 0.99


def test_scatter_of_a_5d_latent_goes_through_pca(tmp_path, tiny_data):
    fig = draw_latent_scatter(make_ctx(tmp_path, tiny_data, 5))
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC1 (") and ax.get_xlabel().endswith("% of variance)")
    assert ax.get_ylabel().startswith("PC2 (")
    assert "PCA of the 5-D posterior means" in fig._suptitle.get_text()


def test_scatter_of_a_2d_latent_colours_each_label(tmp_path, tiny_data):
    fig = draw_latent_scatter(make_ctx(tmp_path, tiny_data, 2))
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z0", "z1")
    labels = torch.unique(tiny_data.test.labels).tolist()
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [str(k) for k in labels]
    colors = {tuple(h.get_color()) for h in legend.legend_handles}
    assert len(colors) == len(labels)
    (points,) = ax.collections
    assert len(points.get_offsets()) == len(tiny_data.test)


def test_scatter_of_a_1d_latent_is_a_strip_per_label(tmp_path, tiny_data):
    fig = draw_latent_scatter(make_ctx(tmp_path, tiny_data, 1))
    ax = fig.axes[0]
    assert ax.get_ylabel() == "label" and "posterior mean" in ax.get_xlabel()
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(tiny_data.test)


def test_tsne_without_scikit_learn_is_skipped(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import fails, installed or not
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(FigureSkipped, match="t-SNE needs scikit-learn"):
        FIGURES["latent-scatter"](make_ctx(tmp_path, tiny_data, 5, scatter_method="tsne"))


def test_tsne_with_scikit_learn(tmp_path, tiny_data, monkeypatch):
    fitted = []

    class FakeTSNE:
        def __init__(self, n_components, init, random_state):
            assert n_components == 2

        def fit_transform(self, x):
            fitted.append(x.shape)
            return x[:, :2]

    sklearn, manifold = types.ModuleType("sklearn"), types.ModuleType("sklearn.manifold")
    manifold.TSNE = FakeTSNE
    sklearn.manifold = manifold
    monkeypatch.setitem(sys.modules, "sklearn", sklearn)
    monkeypatch.setitem(sys.modules, "sklearn.manifold", manifold)
    fig = draw_latent_scatter(make_ctx(tmp_path, tiny_data, 5, scatter_method="tsne", tsne_points=40))
    assert fitted == [(40, 5)]
    assert fig.axes[0].get_xlabel() == "t-SNE 1" and "t-SNE of the 5-D" in fig._suptitle.get_text()


# ---------------------------------------------------------------- curves and KL


def test_curves_plot_every_epoch_of_both_splits(tmp_path, tiny_data):
    fig = draw_curves(make_ctx(tmp_path, tiny_data))
    panels = fig.axes
    assert len(panels) == 3
    for ax, key in zip(panels, ("elbo", "reconstruction", "kl")):
        train, val = ax.get_lines()[:2]
        assert list(train.get_xdata()) == [1, 2, 3] and list(train.get_ydata()) == [r[f"train_{key}"] for r in METRICS]
        assert list(val.get_ydata()) == [r[f"val_{key}"] for r in METRICS]
        assert ax.get_xlabel() == "epoch"


def test_no_curves_without_metrics(tmp_path, tiny_data):
    with pytest.raises(FigureSkipped, match="no training curves"):
        FIGURES["curves"](make_ctx(tmp_path, tiny_data, metrics=[]))


def test_kl_per_dim_from_the_model_adds_up_to_the_elbo_kl(tmp_path, tiny_data):
    ctx = make_ctx(tmp_path, tiny_data, 3)
    kl = kl_per_dim_from_model(ctx)
    q = ctx.model.posterior(tiny_data.test.batch(slice(None))).base_dist
    by_hand = (0.5 * (q.loc**2 + q.scale**2 - 1) - q.scale.log()).mean(0)
    assert kl.shape == (3,) and torch.allclose(kl, by_hand, atol=1e-5)
    assert kl.sum().item() == pytest.approx(dataset_elbo(ctx.model, tiny_data.test, 50)["kl"], rel=1e-4)
    heights = [bar.get_height() for bar in draw_kl_per_dim(ctx).axes[0].patches]
    assert heights == pytest.approx(kl.tolist())


def test_kl_per_dim_from_an_evaluation(tmp_path, tiny_data):
    ctx = make_ctx(tmp_path, tiny_data, 3, kl_per_dim=[0.5, 0.0, 2.0], kl_source="eval-test-k5.json")
    fig = draw_kl_per_dim(ctx)
    assert [bar.get_height() for bar in fig.axes[0].patches] == [0.5, 0.0, 2.0]
    assert "from eval-test-k5.json" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="2 values; the model has 3"):
        draw_kl_per_dim(make_ctx(tmp_path, tiny_data, 3, kl_per_dim=[0.5, 1.0]))


def test_active_dims_are_those_whose_posterior_mean_varies():
    means = torch.stack([torch.linspace(-2, 2, 100), torch.full((100,), 0.3), 0.05 * torch.linspace(-1, 1, 100)], 1)
    assert active_dims(means).tolist() == [True, False, False]


# ---------------------------------------------------------------- run folders


def test_unknown_figure_names_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown figure.*nope.*known: samples, reconstructions"):
        make_figures(tmp_path / "does-not-exist", ["samples", "nope"])


def test_run_title_names_model_data_and_epoch(tiny_data):
    assert run_title("lab", tiny_data, 2, METRICS, {}) == "lab: tiny (dynamic), 2-D latent, epoch 3"
    assert run_title("lab", tiny_data, 2, METRICS, {"epochs_run": 5, "best_epoch": 4}).endswith("best epoch 4 of 5")
    assert run_title("lab", tiny_data, 2, [], {}).endswith("no epochs recorded")


@pytest.fixture
def tiny_run(tmp_path, tiny_raw):
    config = resolve_config(overrides=["data.val_size=100", "train.batch_size=64", "train.epochs=2",
                                       "model.encoder_hidden=[16]", "model.decoder_hidden=[16]",
                                       "train.eval_batch_size=50", "model.latent_dim=3"])
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, config)
    trainer = Trainer(config, run_dir, make_views(tiny_raw, config.data), progress=False, log=lambda *a: None)
    trainer.fit()
    return trainer


def test_make_figures_on_a_run_folder(tiny_run, tiny_raw, monkeypatch):
    run_dir = tiny_run.run_dir
    old, new = run_dir / "eval-test-k10.json", run_dir / "eval-test-k5.json"
    old.write_text(json.dumps({"kl_per_dim": [9.0, 9.0, 9.0]}))
    new.write_text(json.dumps({"kl_per_dim": [1.0, 2.0, 3.0]}))
    os.utime(old, (1_000_000, 1_000_000))
    loaded = []

    def fake_load_dataset(name, data_dir=None, **kwargs):
        loaded.append((name, data_dir, kwargs))
        return tiny_raw

    monkeypatch.setattr("vaelab.data.load_dataset", fake_load_dataset)
    results = make_figures(run_dir, samples_n=4)
    assert loaded == [("mnist", None, {"progress": False})]
    assert [name for name, _, _ in results] == list(FIGURES)
    for name, path, note in results:
        assert path == run_dir / "figures" / f"{name}.png" and note, (name, note)
        png_size(path)
    ctx = figure_context(run_dir, data=tiny_run.data)
    assert ctx.title.startswith("mnist-lab: tiny (dynamic), 3-D latent, ")
    assert ctx.title.endswith(("epoch 2", "of 2"))
    assert ctx.kl_per_dim == [1.0, 2.0, 3.0] and ctx.kl_source == "eval-test-k5.json"
    assert len(ctx.metrics) == 2 and ctx.seed == tiny_run.config.train.seed


def test_make_figures_with_a_given_model_reports_skips_and_restores_its_mode(tiny_run):
    model = tiny_run.model.train()
    results = make_figures(tiny_run.run_dir, ["manifold", "latent-scatter"], model=model, data=tiny_run.data,
                           scatter_method="tsne", manifold_dims=(0, 2))
    assert model.training
    (manifold, scatter) = results
    assert manifold[1] == tiny_run.run_dir / "figures" / "manifold.png"
    if scatter[1] is None:  # no scikit-learn here
        assert "scikit-learn" in scatter[2]
    with pytest.raises(ValueError, match="unknown figure option.*manifold_size"):
        make_figures(tiny_run.run_dir, ["manifold"], model=model, data=tiny_run.data, manifold_size=3)


def test_training_figures_still_draw_the_lab_three(tmp_path, tiny_data):
    paths = training_figures(tiny_model(), tiny_data.test.batch(slice(0, 10)), tmp_path, (1, 28, 28), "t")
    assert [p.name for p in paths] == ["samples.png", "reconstructions.png", "interpolations.png"]
    for path in paths:
        png_size(path)
