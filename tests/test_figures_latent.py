"""Latent-space figures: the manifold decodes the grid on its axes; the scatter shows the codes it names."""

import sys
import types

import pytest
import torch
from torch.distributions import Laplace, Normal

from figure_cases import tiny_data  # noqa: F401  (fixture)
from figure_cases import CATEGORICAL_MANIFOLD, make_ctx, variant_ctx
from vaelab.figures import FIGURES, FigureSkipped
from vaelab.figures.latent import draw_latent_scatter, draw_manifold, manifold_axis_values, manifold_grid, pca_2d


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
