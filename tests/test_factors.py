"""Factor data sets: the FactorGrid, vaelab's generated dSprites, and their factors through views and runs."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.config import ConfigError, resolve_config
from vaelab.data.errors import DataError
from vaelab.data.factors import TEST_SIZE, VAL_SIZE, FactorGrid
from vaelab.data.generated import DSPRITES, load_generated
from vaelab.data.load import load_data
from vaelab.data.views import make_views

SMALL = [3, 3, 5, 4, 4]  # levels of shape, scale, orientation, x, y: 720 images


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return load_generated("dsprites", tmp_path_factory.mktemp("cache"), levels=SMALL, progress=False)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- the grid

def test_dsprites_grid_has_the_originals_factors_and_values():
    assert DSPRITES.names == ("shape", "scale", "orientation", "x", "y")
    assert DSPRITES.sizes == (3, 6, 40, 32, 32)
    assert math.prod(DSPRITES.sizes) == 737_280
    shape, scale, orientation, x, y = DSPRITES.values
    assert shape.tolist() == [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(scale, np.linspace(0.5, 1.0, 6))
    np.testing.assert_array_equal(orientation, np.linspace(0, 2 * np.pi, 40))
    assert orientation[-1] == 2 * np.pi  # both ends, as the original
    np.testing.assert_array_equal(x, np.linspace(0, 1, 32))
    np.testing.assert_array_equal(y, x)


def test_index_runs_the_last_factor_fastest_and_levels_invert_it():
    grid = FactorGrid(DSPRITES.names, DSPRITES.sizes, DSPRITES.values)
    assert grid.index(np.array([[0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [1, 0, 0, 0, 0]])).tolist() == \
        [1, 32, 1024, 6 * 40 * 1024]
    assert grid.index(np.array([[2, 5, 39, 31, 31]])).tolist() == [737_279]
    rows = np.random.default_rng(0).integers(0, len(grid), 1000)
    np.testing.assert_array_equal(grid.index(grid.levels(rows)), rows)
    with pytest.raises(ValueError):
        grid.index(np.array([[0, 0, 0, 32, 0]]))


def test_sample_draws_every_level_uniformly_within_range():
    grid = FactorGrid(("a", "b"), (3, 5), (np.arange(3.0), np.arange(5.0)))
    draws = grid.sample(15_000, np.random.default_rng(1))
    assert draws.dtype == np.int64 and draws.shape == (15_000, 2)
    for j, size in enumerate(grid.sizes):
        counts = np.bincount(draws[:, j], minlength=size)
        assert len(counts) == size and counts.min() > 15_000 / size * 0.9


def test_factor_grid_refuses_values_that_do_not_fit():
    with pytest.raises(ValueError, match="b has 2 levels"):
        FactorGrid(("a", "b"), (3, 2), (np.arange(3.0), np.arange(3.0)))


# ---------------------------------------------------------------- the drawings

def test_small_grid_is_binary_with_labels_and_values(small):
    grid = small.grid
    assert grid.sizes == tuple(SMALL) and grid.images.shape == (720, 1, 64, 64) and grid.binary
    assert set(np.unique(grid.images[:50]).tolist()) == {0, 1}
    np.testing.assert_array_equal(grid.values[1], np.linspace(0.5, 1.0, 6)[[0, 2, 5]])
    np.testing.assert_array_equal(grid.values[3], np.linspace(0, 1, 32)[[0, 10, 21, 31]])
    assert small.label_names == ("square", "ellipse", "heart")
    assert small.y_train.tolist() == np.repeat([0, 1, 2], 240).tolist()


def test_batch_gives_the_images_of_the_factors_as_floats(small):
    grid = small.grid
    factors = grid.sample(40, np.random.default_rng(3))
    batch = grid.batch(factors)
    assert batch.dtype == torch.float32 and batch.shape == (40, 64 * 64)
    expected = grid.images[grid.index(factors)].reshape(40, -1)
    assert torch.equal(batch, torch.from_numpy(expected).float())


def centroid(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(image.reshape(64, 64))
    return rows.mean(), cols.mean()


def test_position_moves_the_centroid_one_pixel_per_level_of_the_full_grid(small):
    grid = small.grid
    full_levels = [0, 10, 21, 31]  # the 4 x (and y) levels of SMALL, as levels of the full grid
    for shape in range(3):
        base_row, base_col = centroid(grid.images[grid.index(np.array([[shape, 2, 0, 0, 0]]))[0]])
        for i, level in enumerate(full_levels):
            row, col = centroid(grid.images[grid.index(np.array([[shape, 2, 0, i, 0]]))[0]])
            assert (row, col) == pytest.approx((base_row, base_col + level))  # x: to the right
            row, col = centroid(grid.images[grid.index(np.array([[shape, 2, 0, 0, i]]))[0]])
            assert (row, col) == pytest.approx((base_row + level, base_col))  # y: down the image


def test_area_grows_with_scale_for_every_shape_and_orientation(small):
    grid = small.grid
    for shape in range(3):
        for orientation in range(5):
            areas = [grid.images[grid.index(np.array([[shape, s, orientation, 1, 2]]))[0]].sum() for s in range(3)]
            assert areas[0] < areas[1] < areas[2]
            ratio = areas[2] / areas[0]  # scale 1 against 0.5: about 4 times the area
            assert 3.0 < ratio < 5.0


def principal_angle(image: np.ndarray) -> float:
    """The angle of the long axis (radians in [0, pi), anticlockwise with y up)."""
    rows, cols = np.nonzero(image.reshape(64, 64))
    x, y = cols - cols.mean(), -(rows - rows.mean())
    cov = np.cov(np.stack([x, y]))
    values, vectors = np.linalg.eigh(cov)
    vx, vy = vectors[:, np.argmax(values)]
    return math.atan2(vy, vx) % math.pi


def test_orientation_turns_the_ellipse_anticlockwise(small):
    grid = small.grid
    for level, angle in enumerate(grid.values[2]):
        image = grid.images[grid.index(np.array([[1, 2, level, 2, 2]]))[0]]
        difference = (principal_angle(image) - angle % math.pi + math.pi / 2) % math.pi - math.pi / 2
        assert abs(difference) < math.radians(3), (level, angle)


def test_orientation_ends_draw_the_same_image_and_the_heart_is_not_symmetric(small):
    grid = small.grid
    image = lambda shape, orientation: grid.images[grid.index(np.array([[shape, 2, orientation, 1, 1]]))[0]]  # noqa: E731
    for shape in range(3):
        assert np.array_equal(image(shape, 0), image(shape, 4))  # 0 and 2 pi
        assert not np.array_equal(image(shape, 0), image(shape, 1))
    heart = image(2, 0).reshape(64, 64)
    rows = np.nonzero(heart.any(1))[0]
    top, bottom = heart[rows[0] + 2].sum(), heart[rows[-1] - 2].sum()
    assert top > bottom  # lobes above, the point below


def test_sub_grids_agree_on_the_images_they_share(tmp_path, small):
    other = load_generated("dsprites", tmp_path, levels=[3, 2, 2, 2, 2], progress=False).grid
    # scales 0.5 and 1, orientations 0 and 2 pi, positions 0 and 1: levels (0, 2), (0, 4), (0, 3) of SMALL's
    for levels in np.ndindex(*other.sizes):
        mine = [levels[0], (0, 2)[levels[1]], (0, 4)[levels[2]], (0, 3)[levels[3]], (0, 3)[levels[4]]]
        assert np.array_equal(other.images[other.index(np.array([levels]))[0]],
                              small.grid.images[small.grid.index(np.array([mine]))[0]])


def test_generation_is_deterministic_and_cached_once(tmp_path, small):
    first = load_generated("dsprites", tmp_path / "a", levels=SMALL, progress=False)
    second = load_generated("dsprites", tmp_path / "b", levels=SMALL, progress=False)
    assert file_digest(Path(first.grid.images.filename)) == file_digest(Path(second.grid.images.filename))
    path = Path(first.grid.images.filename)
    mtime = path.stat().st_mtime_ns
    again = load_generated("dsprites", tmp_path / "a", levels=SMALL, progress=False)
    assert path.stat().st_mtime_ns == mtime and again.grid.images.shape == first.grid.images.shape
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_a_bad_cache_file_is_drawn_again(tmp_path):
    first = load_generated("dsprites", tmp_path, levels=[1, 1, 1, 2, 2], progress=False)
    path = Path(first.grid.images.filename)
    np.save(path, np.zeros((3, 1, 64, 64), np.uint8))
    again = load_generated("dsprites", tmp_path, levels=[1, 1, 1, 2, 2], progress=False)
    assert again.grid.images.shape == (4, 1, 64, 64) and again.grid.images.any()


def test_factor_levels_must_fit_the_grid(tmp_path):
    with pytest.raises(DataError, match="data.factor_levels"):
        load_generated("dsprites", tmp_path, levels=[3, 6, 41, 32, 32], progress=False)
    with pytest.raises(DataError, match="data.factor_levels"):
        load_generated("dsprites", tmp_path, levels=[3, 6], progress=False)
    with pytest.raises(ConfigError, match="data.factor_levels"):
        resolve_config(overrides=["data.factor_levels=[1, 2]"])  # mnist has no factors
    with pytest.raises(ConfigError, match="data.factor_sizes"):
        resolve_config(overrides=['data.factor_names=["a"]'])


# ---------------------------------------------------------------- views and runs

def dsprites_config(*more: str):
    return resolve_config(overrides=['data.name="dsprites"', f"data.factor_levels={SMALL}", *more])


@pytest.mark.parametrize("binarization", ["dynamic", "static", "grey"])
def test_views_keep_binary_images_and_their_factors(small, binarization):
    config = dsprites_config(f'data.binarization="{binarization}"')
    data = make_views(small, config.data)
    assert data.factors is small.grid and data.image_shape == (1, 64, 64)
    assert len(data.train) == 720 and len(data.val) == min(VAL_SIZE, 720) and len(data.test) == min(TEST_SIZE, 720)
    for split in (data.train, data.val, data.test):
        assert split.binary and not split.resample  # no random number per pixel
        assert split.factors.dtype == torch.int64 and split.factors.shape == (len(split), 5)
        rows = small.grid.index(split.factors.numpy())
        assert torch.equal(split.pixels, torch.from_numpy(small.grid.images[rows].reshape(len(rows), -1)))
        assert torch.equal(split.labels, split.factors[:, 0])
    # the training split is the memory map itself, not a copy
    assert np.shares_memory(data.train.pixels.numpy(), small.grid.images)
    drawn = data.train.draw(torch.tensor([5, 700, 3]), torch.Generator().manual_seed(0))
    assert torch.equal(drawn.factors, data.train.factors[[5, 700, 3]])
    assert torch.equal(drawn.pixels, data.train.pixels[[5, 700, 3]])


def test_mean_image_of_binary_images(small):
    data = make_views(small, dsprites_config().data)
    expected = torch.from_numpy(small.grid.images.reshape(720, -1).mean(0)).float()
    assert torch.allclose(data.train.mean_image(), expected, atol=1e-6)


def test_validation_and_test_are_seeded_subsets(tmp_path):
    full = load_generated("dsprites", tmp_path, levels=[3, 6, 10, 16, 16], seed=4, progress=False)  # 46,080 images
    assert len(full.x_val) == VAL_SIZE and len(full.x_test) == TEST_SIZE
    again = load_generated("dsprites", tmp_path, levels=[3, 6, 10, 16, 16], seed=4, progress=False)
    np.testing.assert_array_equal(full.splits["val"], again.splits["val"])
    other = load_generated("dsprites", tmp_path, levels=[3, 6, 10, 16, 16], seed=5, progress=False)
    assert not np.array_equal(full.splits["val"], other.splits["val"])
    assert "overlap" in full.source or "subsets of the training grid" in full.source


def test_a_tiny_run_records_its_factors_and_gets_its_grid_back(tmp_path):
    import vaelab

    lines = []
    run = vaelab.train(out=tmp_path / "run", log=lines.append, overrides=[
        'data.name="dsprites"', f"data.factor_levels={SMALL}", 'data.binarization="auto"', 'model.likelihood="auto"',
        "model.encoder_hidden=[16]", "model.decoder_hidden=[16]", "train.epochs=1", "train.batch_size=64",
        "train.threads=1", "figures.names=[]"])
    assert any(line.startswith("factors: shape (3), scale (3)") for line in lines)
    data = vaelab.open_run(tmp_path / "run").config.data
    assert (data.binarization, run.config.model.likelihood) == ("static", "bernoulli")
    assert data.factor_names == ["shape", "scale", "orientation", "x", "y"] and data.factor_sizes == SMALL
    reloaded = make_views(load_data(data, progress=False), data)
    assert reloaded.factors.names == tuple(data.factor_names) and reloaded.factors.sizes == tuple(SMALL)
    assert reloaded.test.factors.shape == (720, 5)
    assert math.isfinite(run.summary["test_elbo"])


@pytest.mark.slow
def test_the_full_dsprites_grid_is_drawn_as_pinned(tmp_path):
    """The whole 737,280 images (3 GB, about a minute): the bytes every install draws."""
    full = load_generated("dsprites", tmp_path, progress=False)
    assert full.grid.images.shape == (737_280, 1, 64, 64)
    assert file_digest(Path(full.grid.images.filename)) == FULL_DIGEST


FULL_DIGEST = "980007ed1d326a87791576215c3e080cef82e8f55bd7c2a2ee44fc0801155b73"
