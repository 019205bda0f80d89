"""Image-grid figures: samples, class samples, reconstructions and interpolations show what they claim."""

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from figure_cases import tiny_data  # noqa: F401  (fixture)
from figure_cases import make_ctx, png_size, tiny_model, variant_ctx
from vaelab.config import DataConfig
from vaelab.data.views import make_views
from vaelab.figures import FIGURES
from vaelab.figures.grids import (as_images, class_samples_grid, draw_class_samples, draw_interpolations,
                                  draw_reconstructions, draw_samples, reconstruction_grid, samples_grid)
from vaelab.figures.variants import sample_prior


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


# ---------------------------------------------------------------- model variants

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


@pytest.mark.parametrize("name, inverted", [("mnist", True), ("fashion-mnist", True), ("images", False)])
def test_grey_images_are_drawn_inverted_only_for_mnist_like_data(tmp_path, tiny_raw, name, inverted):
    """A user's dark-on-light images must come out dark on light: only MNIST-like sets are inverted."""
    data = make_views(tiny_raw, DataConfig(name=name, val_size=100, binarization="grey"))
    assert data.drawn_inverted is inverted
    ctx = make_ctx(tmp_path, data, reconstructions_n=3)
    (shown,) = draw_reconstructions(ctx).axes[0].get_images()
    drawn = np.asarray(shown.get_array())
    first = ctx.test_images(1, random=False)[0].reshape(28, 28).numpy()
    np.testing.assert_allclose(drawn[2:30, 2:30], 1.0 - first if inverted else first, atol=1e-6)
    assert drawn[0, 0] == pytest.approx(0.88)  # the gutter is drawn light grey either way
