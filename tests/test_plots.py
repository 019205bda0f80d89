"""Figures: every registered figure draws a PNG; grids, manifold and PCA show what they claim."""

import json
import os
import sys
import types

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch.distributions import Laplace, Normal

from vaelab.config import DataConfig, ModelConfig, resolve_config
from vaelab.data.views import make_views
from vaelab.model import VAE
from vaelab.plots import (
    FIGURES,
    FigureContext,
    FigureSkipped,
    active_dims,
    as_images,
    class_samples_grid,
    draw_class_samples,
    draw_curves,
    draw_kl_per_dim,
    draw_latent_scatter,
    draw_manifold,
    draw_reconstructions,
    draw_interpolations,
    draw_samples,
    figure_context,
    kl_per_dim_from_model,
    latent_text,
    make_figures,
    manifold_axis_values,
    manifold_grid,
    pca_2d,
    reconstruction_grid,
    run_title,
    sample_prior,
    samples_grid,
)
from vaelab.runs import RunFolder
from vaelab.training import Trainer, dataset_elbo

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
    if name == "class-samples":  # an unconditional model: see the variant tests
        with pytest.raises(FigureSkipped, match="need a conditional model"):
            FIGURES[name](ctx)
        return
    path = FIGURES[name](ctx)
    assert path == tmp_path / "figures" / f"{name}.png"
    height, width = png_size(path)
    assert 200 <= height <= 4000 and 300 <= width <= 4000, (height, width)
    assert not list(path.parent.glob("*.tmp")), "atomic write left a temporary file"


def test_registry_names():
    assert list(FIGURES) == ["samples", "class-samples", "reconstructions", "interpolations", "latent-scatter",
                             "manifold", "curves", "kl-per-dim"]
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
    means = ctx.test_means()
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
    with pytest.raises(ValueError, match="unknown figure.*nope.*known: samples, class-samples, reconstructions"):
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
    RunFolder(run_dir).create(config)
    trainer = Trainer(config, run_dir, make_views(tiny_raw, config.data), progress=False, log=lambda *a: None)
    trainer.fit()
    return trainer


def test_make_figures_on_a_run_folder(tiny_run, tiny_raw, monkeypatch):
    run_dir = tiny_run.run_dir
    old, new = run_dir / "eval-test-k10.json", run_dir / "eval-test-k5.json"
    # The larger K scored other weights (before a resume, say): only the current weights' evaluation counts.
    old.write_text(json.dumps({"kl_per_dim": [9.0, 9.0, 9.0], "weights_sha256": "0" * 64}))
    new.write_text(json.dumps({"kl_per_dim": [1.0, 2.0, 3.0], "weights_sha256": RunFolder(run_dir).fingerprint()}))
    loaded = []

    def fake_load_dataset(name, data_dir=None, **kwargs):
        loaded.append((name, data_dir, kwargs))
        return tiny_raw

    monkeypatch.setattr("vaelab.data.load_dataset", fake_load_dataset)
    results = make_figures(run_dir, samples_n=4)
    assert loaded == [("mnist", None, {"progress": False})]
    assert [name for name, _, _ in results] == list(FIGURES)
    for name, path, note in results:
        if name == "class-samples":  # the run's model is unconditional
            assert path is None and "conditional model" in note
            continue
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


# ---------------------------------------------------------------- every model variant

VARIANTS = {  # ModelConfig fields of each variant (besides tiny nets)
    "normal": {},
    "laplace": {"latent": "laplace", "prior": "laplace"},
    "laplace-q-normal-p": {"latent": "laplace"},
    "normal-q-laplace-p": {"prior": "laplace"},
    "categorical": {"latent": "categorical", "latent_dim": 3, "categories": 4},
    "two-layer": {"latent_dim": 3, "latent_dim2": 2, "encoder_hidden2": [8], "decoder_hidden2": [8]},
    "cvae": {"conditional": True},
    "cvae-categorical": {"conditional": True, "latent": "categorical", "latent_dim": 2, "categories": 3},
    "cvae-two-layer": {"conditional": True, "latent_dim": 2, "latent_dim2": 2, "encoder_hidden2": [8],
                       "decoder_hidden2": [8]},
    "colour-cvae-laplace": {"conditional": True, "latent": "laplace", "prior": "laplace", "likelihood": "gaussian"},
}
CATEGORICAL_MANIFOLD = "no manifold: a categorical latent has no continuous plane to sweep"
EXPECTED_SKIPS = {  # variant -> {figure: the start of its note}
    "categorical": {"manifold": CATEGORICAL_MANIFOLD},
    "cvae-categorical": {"manifold": CATEGORICAL_MANIFOLD},
    "two-layer": {"kl-per-dim": "no KL per dimension for a two-layer model"},
    "cvae-two-layer": {"kl-per-dim": "no KL per dimension for a two-layer model"},
}
UNCONDITIONAL_CLASS_SAMPLES = "class samples need a conditional model (model.conditional = true)"


def make_colour_raw(n_train: int = 300, n_test: int = 60, seed: int = 0) -> types.SimpleNamespace:
    """CIFAR-shaped (n, 3, 32, 32) uint8: a coloured prototype per label plus noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 230, (10, 3, 32, 32))

    def draw(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        return np.clip(prototypes[labels] + rng.integers(0, 25, (n, 3, 32, 32)), 0, 255).astype(np.uint8), labels

    (x_train, y_train), (x_test, y_test) = draw(n_train), draw(n_test)
    return types.SimpleNamespace(name="cifar10", source="generated", x_train=x_train, y_train=y_train,
                                 x_test=x_test, y_test=y_test)


def variant_model(name: str, image_shape=(1, 28, 28)) -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(encoder_hidden=[16], decoder_hidden=[16], **VARIANTS[name]), image_shape).eval()


def variant_data(name: str, tiny_raw):
    if name.startswith("colour"):
        return make_views(make_colour_raw(), DataConfig(binarization="grey", val_size=100))
    return make_views(tiny_raw, DataConfig(val_size=100))


def variant_ctx(tmp_path, name: str, tiny_raw, **options) -> FigureContext:
    data = variant_data(name, tiny_raw)
    values = {"title": f"{name}: tiny", "metrics": METRICS} | options
    return FigureContext(model=variant_model(name, data.image_shape), data=data, out_dir=tmp_path / "figures",
                         **values)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_figure_of_every_variant_draws_or_says_why_not(tmp_path, tiny_raw, variant):
    data = variant_data(variant, tiny_raw)
    model = variant_model(variant, data.image_shape)
    run_dir = tmp_path / "run"
    RunFolder(run_dir).create(resolve_config())  # the run's config; the figures draw the model given
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS))
    results = make_figures(run_dir, model=model, data=data, samples_n=4, manifold_n=5, interpolation_steps=6)
    expected = dict(EXPECTED_SKIPS.get(variant, {}))
    if not VARIANTS[variant].get("conditional"):
        expected["class-samples"] = UNCONDITIONAL_CLASS_SAMPLES
    assert [name for name, _, _ in results] == list(FIGURES)
    for name, path, note in results:
        if name in expected:
            assert path is None and note.startswith(expected[name]), (name, note)
        else:
            assert path == run_dir / "figures" / f"{name}.png", (name, note)
            png_size(path)
    assert model.training is False


@pytest.mark.parametrize("variant", ["laplace", "categorical", "two-layer", "cvae"])
def test_samples_decode_draws_from_the_models_own_prior(tmp_path, tiny_raw, monkeypatch, variant):
    ctx = variant_ctx(tmp_path, variant, tiny_raw, samples_n=3)
    model, seen = ctx.model, []
    decode = model.decode_mean
    monkeypatch.setattr(model, "decode_mean", lambda z, y=None: seen.append((z, y)) or decode(z, y))
    draw_samples(ctx)
    (z, y), = seen
    z = z.flatten(1)  # categorical z reaches the decoder as (n, variables, categories)
    assert torch.equal(z, sample_prior(model, 9, torch.Generator().manual_seed(ctx.seed)))
    assert z.shape == (9, model.latent_dim)
    if variant == "categorical":  # hard one-hot draws, one class per variable
        blocks = z.reshape(9, 3, 4)
        assert set(blocks.unique().tolist()) == {0.0, 1.0} and (blocks.sum(-1) == 1).all()
    if variant == "cvae":  # row r decoded with label r
        assert y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    else:
        assert y is None


def test_cvae_samples_rows_are_labelled(tmp_path, tiny_raw):
    fig = draw_samples(variant_ctx(tmp_path, "cvae", tiny_raw, samples_n=10))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [str(k) for k in range(10)]
    assert "each row decoded with the label on its left" in fig._suptitle.get_text()


def test_class_samples_decode_each_row_with_its_class(tmp_path, tiny_raw, monkeypatch):
    ctx = variant_ctx(tmp_path, "cvae", tiny_raw)
    model, seen = ctx.model, []
    decode = model.decode_mean
    monkeypatch.setattr(model, "decode_mean", lambda z, y=None: seen.append((z, y)) or decode(z, y))
    fig = draw_class_samples(ctx)
    (z, y), = seen
    assert y.tolist() == [k for k in range(10) for _ in range(5)]
    assert torch.equal(z, sample_prior(model, 50, torch.Generator().manual_seed(ctx.seed)))
    grid = class_samples_grid(model, (1, 28, 28), 5, ctx.seed)
    assert grid.shape == (10 * 30 + 2, 5 * 30 + 2)
    for row, col in [(0, 0), (3, 4), (9, 2)]:  # cell (row, col) is z[5 row + col] decoded with y = row
        expected = decode(z[5 * row + col][None], torch.tensor([row])).reshape(28, 28).numpy()
        np.testing.assert_allclose(grid[2 + 30 * row:30 * (row + 1), 2 + 30 * col:30 * (col + 1)], expected,
                                   atol=1e-6)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [str(k) for k in range(10)]


def test_class_samples_use_the_data_sets_label_names(tmp_path, tiny_raw):
    fig = draw_class_samples(variant_ctx(tmp_path, "colour-cvae-laplace", tiny_raw, class_samples_n=3))
    names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert names[:2] == ["airplane", "automobile"] and len(names) == 10


def test_cvae_reconstructions_and_interpolations_pass_the_test_labels(tmp_path, tiny_raw, monkeypatch):
    ctx = variant_ctx(tmp_path, "cvae", tiny_raw, interpolation_pairs=2, interpolation_steps=3)
    model, calls = ctx.model, []
    encode, decode = model.encode_mean, model.decode_mean
    monkeypatch.setattr(model, "encode_mean", lambda x, y=None: calls.append(("encode", y)) or encode(x, y))
    monkeypatch.setattr(model, "decode_mean", lambda z, y=None: calls.append(("decode", y)) or decode(z, y))
    labels = ctx.data.test.labels
    draw_reconstructions(ctx)
    assert [(what, y.tolist()) for what, y in calls] == [("encode", labels[:10].tolist()),
                                                         ("decode", labels[:10].tolist())]
    calls.clear()
    fig = draw_interpolations(ctx)
    (_, y_encoded), (_, y_decoded) = calls
    assert torch.equal(y_encoded, labels[:4])
    assert y_decoded.tolist() == [labels[0].item()] * 3 + [labels[2].item()] * 3  # the first image's label
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == [f"1\u21922, y={labels[0].item()}", f"3\u21924, y={labels[2].item()}"]
    assert "label of each row's first image" in fig._suptitle.get_text()


def test_cvae_manifold_is_decoded_with_the_chosen_label(tmp_path, tiny_raw, monkeypatch):
    ctx = variant_ctx(tmp_path, "cvae", tiny_raw, manifold_n=4, manifold_label=7)
    seen = []
    decode = ctx.model.decode_mean
    monkeypatch.setattr(ctx.model, "decode_mean", lambda z, y=None: seen.append(y) or decode(z, y))
    fig = draw_manifold(ctx)
    assert seen[0].tolist() == [7] * 16
    assert "decoded with label y = 7" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="manifold_label"):
        draw_manifold(variant_ctx(tmp_path, "cvae", tiny_raw, manifold_label=10))


def test_laplace_quantile_manifold_uses_the_laplace_inverse_cdf(tmp_path, tiny_raw, monkeypatch):
    ctx = variant_ctx(tmp_path, "laplace", tiny_raw, manifold_n=6, manifold_range="quantile")
    seen = []
    decode = ctx.model.decode_mean
    monkeypatch.setattr(ctx.model, "decode_mean", lambda z, y=None: seen.append(z) or decode(z, y))
    fig = draw_manifold(ctx)
    expected = Laplace(0.0, 1.0).icdf((torch.arange(6) + 0.5) / 6)
    assert torch.allclose(seen[0][:6, 0], expected, atol=1e-5)  # the top row sweeps z0
    assert "Laplace(0, 1) quantiles" in fig._suptitle.get_text()
    normal = manifold_axis_values(6, "quantile")
    assert expected[0] < normal[0]  # heavier tails than N(0, 1)


def test_two_layer_manifold_and_scatter_use_z1(tmp_path, tiny_raw, monkeypatch):
    ctx = variant_ctx(tmp_path, "two-layer", tiny_raw, manifold_n=4)
    seen = []
    decode = ctx.model.decode_mean
    monkeypatch.setattr(ctx.model, "decode_mean", lambda z, y=None: seen.append(z) or decode(z, y))
    fig = draw_manifold(ctx)
    means = ctx.test_means()
    assert means.shape == (len(ctx.data.test), 5)
    assert seen[0].shape == (16, 5)
    assert torch.allclose(seen[0][:, 2:], means.mean(0)[2:].expand(16, 3))  # held at the mean of the means
    assert seen[0][:, 0].min() == pytest.approx(means[:, 0].min().item(), abs=1e-6)
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("z1[0]", "z1[1]")
    assert "z1 is the layer the decoder reads" in fig._suptitle.get_text()
    with pytest.raises(FigureSkipped, match="two-layer model: its prior p\\(z1\\)"):
        draw_manifold(variant_ctx(tmp_path, "two-layer", tiny_raw, manifold_range="quantile"))
    scatter = draw_latent_scatter(ctx)
    assert "PCA of the 3-D posterior means of z1" in scatter._suptitle.get_text()


def test_categorical_scatter_is_pca_of_the_class_probabilities(tmp_path, tiny_raw):
    ctx = variant_ctx(tmp_path, "categorical", tiny_raw)
    probs = ctx.test_means()
    assert probs.shape == (len(ctx.data.test), 12)
    assert torch.allclose(probs.reshape(-1, 3, 4).sum(-1), torch.ones(len(probs), 3))
    fig = draw_latent_scatter(ctx)
    assert "PCA of the 12-D class probabilities of q(z|x) (3 variables x 4 classes)" in fig._suptitle.get_text()
    assert fig.axes[0].get_xlabel().startswith("PC1 (")
    with pytest.raises(FigureSkipped, match=CATEGORICAL_MANIFOLD):
        draw_manifold(ctx)


@pytest.mark.parametrize("variant", ["laplace", "laplace-q-normal-p", "normal-q-laplace-p", "categorical", "cvae"])
def test_kl_per_dim_adds_up_to_the_models_kl(tmp_path, tiny_raw, variant):
    ctx = variant_ctx(tmp_path, variant, tiny_raw)
    kl = kl_per_dim_from_model(ctx)
    model, test = ctx.model, ctx.data.test
    assert kl.shape == ((3,) if variant == "categorical" else (2,))  # per variable, or per dimension
    y = test.labels if model.n_labels else None
    q = model.posterior(test.batch(slice(None)), y)
    assert kl.sum().item() == pytest.approx(model.kl(q, model.prior()).mean().item(), rel=1e-4)
    heights = [bar.get_height() for bar in draw_kl_per_dim(ctx).axes[0].patches]
    assert heights == pytest.approx(kl.tolist())


def test_kl_per_dim_of_categorical_variables_from_an_evaluation(tmp_path, tiny_raw):
    ctx = variant_ctx(tmp_path, "categorical", tiny_raw, kl_per_dim=[0.5, 1.0, 0.0], kl_source="eval-test-k5.json")
    fig = draw_kl_per_dim(ctx)
    assert [bar.get_height() for bar in fig.axes[0].patches] == [0.5, 1.0, 0.0]
    assert fig.axes[0].get_xlabel() == "categorical variable j"


def test_two_layer_kl_per_dim_is_skipped_unless_evaluated(tmp_path, tiny_raw):
    with pytest.raises(FigureSkipped, match="no KL per dimension for a two-layer model"):
        draw_kl_per_dim(variant_ctx(tmp_path, "two-layer", tiny_raw))
    fig = draw_kl_per_dim(variant_ctx(tmp_path, "two-layer", tiny_raw, kl_per_dim=[1.0, 2.0, 0.0, 0.5, 0.1]))
    assert len(fig.axes[0].patches) == 5 and "z2: 3..4" in fig.axes[0].get_xlabel()


def test_colour_grids_are_rgb(tmp_path, tiny_raw):
    pixels = torch.zeros(2, 3 * 32 * 32)
    pixels[0, :32 * 32] = 1.0  # image 0 all red, channel-major
    pixels[1, 2 * 32 * 32:] = 0.5  # image 1 half blue
    images = as_images(pixels, (3, 32, 32))
    assert images.shape == (2, 32, 32, 3)
    assert (images[0] == [1.0, 0.0, 0.0]).all() and (images[1] == [0.0, 0.0, 0.5]).all()
    assert as_images(torch.zeros(2, 784), (1, 28, 28)).shape == (2, 28, 28)  # grey stays (n, h, w)
    grid, pairs = reconstruction_grid(images, images[::-1])
    assert grid.shape == (2 * 34 + 2, 2 * 34 + 2, 3) and pairs == 1
    ctx = variant_ctx(tmp_path, "colour-cvae-laplace", tiny_raw, samples_n=3)
    assert samples_grid(ctx.model, ctx.image_shape, 3).shape == (3 * 34 + 2, 3 * 34 + 2, 3)
    (shown,) = draw_reconstructions(ctx).axes[0].get_images()
    assert shown.get_array().shape[-1] == 3
    png = imread(FIGURES["samples"](ctx))
    assert png.shape[-1] in (3, 4)
    rgb = png[..., :3]
    assert np.abs(rgb[..., 0] - rgb[..., 2]).max() > 0.05  # not grey: the channels differ


def test_titles_name_the_latent_variant(tmp_path, tiny_raw):
    texts = {name: latent_text(variant_model(name)) for name in VARIANTS if not name.startswith("colour")}
    assert texts["normal"] == "2-D latent"
    assert texts["laplace"] == "2-D Laplace latent"
    assert texts["normal-q-laplace-p"] == "2-D latent, Laplace(0, 1) prior"
    assert texts["categorical"] == "3 x 4-class categorical latent"
    assert texts["two-layer"] == "two-layer 3-D + 2-D latent"
    assert texts["cvae"] == "2-D latent, conditioned on the label"
