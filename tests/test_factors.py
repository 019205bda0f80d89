"""Factor data sets: the FactorGrid, vaelab's generated dSprites, and their factors through views and runs."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.config import ConfigError, resolve_config
from vaelab.data.errors import DataError
from vaelab.data.factors import TEST_SIZE, VAL_SIZE, FactorGrid
from vaelab.data.generated import DSPRITES, SHAPES3D, load_generated
from vaelab.data.load import load_data, load_factors
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


@pytest.mark.parametrize("binarization", ["dynamic", "static", "grey", "binary"])
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
    assert (data.binarization, run.config.model.likelihood) == ("binary", "bernoulli")
    assert data.factor_names == ["shape", "scale", "orientation", "x", "y"] and data.factor_sizes == SMALL
    assert load_factors(data, progress=False).sizes == tuple(SMALL)
    changed = dataclasses.replace(data, factor_sizes=[3, 3, 5, 4, 5])
    with pytest.raises(DataError, match="trained on factors .* sizes \\[3, 3, 5, 4, 5\\], but its data now has factors"):
        load_factors(changed, progress=False)
    reloaded = make_views(load_data(data, progress=False), data)
    assert reloaded.factors.names == tuple(data.factor_names) and reloaded.factors.sizes == tuple(SMALL)
    assert reloaded.test.factors.shape == (720, 5)
    assert math.isfinite(run.summary["test_elbo"])


def test_a_binary_set_is_recorded_as_its_own_binarization_whatever_was_asked(tmp_path):
    """dSprites' {0,1} images are never re-binarized: a run asking for the default "dynamic" records
    "binary", says why, and its ELBO line and evaluation do not speak of a binarization seed."""
    import vaelab

    lines = []
    run = vaelab.train(out=tmp_path / "run", log=lines.append, overrides=[
        'data.name="dsprites"', f"data.factor_levels={SMALL}", "model.encoder_hidden=[16]",
        "model.decoder_hidden=[16]", "train.epochs=1", "train.batch_size=64", "train.threads=1", "figures.names=[]",
        "evaluate.samples=2"])
    assert run.config.data.binarization == "binary"
    assert vaelab.open_run(tmp_path / "run").config.data.binarization == "binary"
    assert any(line.startswith('data.binarization = "binary": the images are {0,1}') and '("dynamic" asked for)' in line
               for line in lines), lines
    elbo = next(line for line in lines if line.startswith("test ELBO"))
    assert "{0,1} pixels as drawn" in elbo and "seed" not in elbo, elbo
    evaluation = run.evaluation()
    assert evaluation["binarization"] == "binary" and evaluation["binarization_seed"] is None


def test_the_binary_view_is_refused_for_grey_images(tmp_path):
    with pytest.raises(ConfigError, match="^data.binarization: \"binary\" keeps images that are already \\{0,1\\} "
                                          "\\(dsprites\\), but the images of mnist are not: use dynamic, static or grey$"):
        resolve_config(overrides=['data.binarization="binary"'])
    path = tmp_path / "grey.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8))
    config = images_config(path, 'data.binarization="binary"')
    with pytest.raises(ConfigError, match="^data.binarization: \"binary\" keeps images that are already"):
        make_views(load_data(config.data, progress=False), config.data)


def test_the_binary_view_of_a_users_grey_images_is_one_line_before_training(tmp_path, capsys):
    from vaelab.cli import main

    path = tmp_path / "grey.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8))
    assert main(["train", "--images", str(path), "--out", str(tmp_path / "run"), "--set",
                 'data.binarization="binary"']) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: data.binarization: "binary" keeps images that are already {0,1} (dsprites), but the '
                   "images of grey are not: use dynamic, static or grey"], err
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.slow
def test_the_full_dsprites_grid_is_drawn_as_pinned(tmp_path):
    """The whole 737,280 images (3 GB, about a minute): the bytes every install draws."""
    from vaelab.data import load_dataset

    full = load_dataset("dsprites", cache_dir=tmp_path, progress=False)  # as `vaelab data fetch dsprites` asks
    assert full.grid.images.shape == (737_280, 1, 64, 64)
    assert file_digest(Path(full.grid.images.filename)) == FULL_DIGEST


FULL_DIGEST = "980007ed1d326a87791576215c3e080cef82e8f55bd7c2a2ee44fc0801155b73"


# ---------------------------------------------------------------- shapes3d-like

COLOUR = [2, 2, 2, 3, 4, 3]  # floor, wall, object hue, scale, shape, orientation: 288 images


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    return load_generated("shapes3d-like", tmp_path_factory.mktemp("cache"), levels=COLOUR, progress=False)


def test_shapes3d_like_has_3d_shapes_factors_and_values():
    assert SHAPES3D.names == ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    assert SHAPES3D.sizes == (10, 10, 10, 8, 4, 15) and math.prod(SHAPES3D.sizes) == 480_000
    np.testing.assert_array_equal(SHAPES3D.values[0], np.linspace(0, 0.9, 10))
    np.testing.assert_array_equal(SHAPES3D.values[3], np.linspace(0.75, 1.25, 8))
    np.testing.assert_array_equal(SHAPES3D.values[5], np.linspace(-30, 30, 15))


def test_shapes3d_like_images_follow_their_factors(colour):
    grid = colour.grid
    assert grid.images.shape == (288, 3, 64, 64) and not grid.binary
    assert colour.label_names == ("cube", "cylinder", "sphere", "capsule")

    def image(*levels):
        return grid.images[grid.index(np.array([levels]))[0]].astype(int)

    base = image(0, 0, 1, 1, 0, 1)
    floor, wall, centre = (slice(None), 62, 2), (slice(None), 3, 2), (slice(None), 40, 32)
    changed = {"floor": image(1, 0, 1, 1, 0, 1), "wall": image(0, 1, 1, 1, 0, 1), "object": image(0, 0, 0, 1, 0, 1)}
    assert (changed["floor"][floor] != base[floor]).any() and (changed["floor"][wall] == base[wall]).all()
    assert (changed["wall"][wall] != base[wall]).any() and (changed["wall"][floor] == base[floor]).all()
    assert (changed["object"][centre] != base[centre]).any()
    assert (changed["object"][wall] == base[wall]).all() and (changed["object"][floor] == base[floor]).all()
    background = image(0, 0, 1, 0, 0, 1)

    def area(*levels):  # pixels that differ from the object-free background around them
        return int((np.abs(image(*levels) - background).sum(0) > 0).sum())

    for shape in range(4):
        assert area(0, 0, 1, 0, shape, 1) < area(0, 0, 1, 1, shape, 1) < area(0, 0, 1, 2, shape, 1)
    shapes = [image(0, 0, 1, 2, shape, 1) for shape in range(4)]
    assert all(not np.array_equal(a, b) for i, a in enumerate(shapes) for b in shapes[i + 1:])
    for shape in range(4):  # every shape shows its orientation (its light turns with it)
        assert not np.array_equal(image(0, 0, 1, 2, shape, 0), image(0, 0, 1, 2, shape, 2))


def test_colour_factor_views_read_x_over_255(colour):
    config = resolve_config(overrides=['data.name="shapes3d-like"', f"data.factor_levels={COLOUR}",
                                       'data.binarization="grey"', 'model.likelihood="gaussian"'])
    data = make_views(colour, config.data)
    assert data.factors is colour.grid and data.image_shape == (3, 64, 64)
    assert not data.train.binary and torch.equal(data.train.labels, data.train.factors[:, 4])
    factors = colour.grid.sample(7, np.random.default_rng(0))
    rows = torch.from_numpy(colour.grid.index(factors))
    assert torch.equal(colour.grid.batch(factors), data.train.batch(rows))


def test_shapes3d_like_is_deterministic(tmp_path, colour):
    again = load_generated("shapes3d-like", tmp_path, levels=COLOUR, progress=False)
    assert file_digest(Path(again.grid.images.filename)) == file_digest(Path(colour.grid.images.filename))


# ---------------------------------------------------------------- the published files (fakes of their layout)

def fake_dsprites(path: Path, sizes=(3, 2, 4, 2, 2), metadata: bool = True, **replace) -> dict[str, np.ndarray]:
    """A file laid out as dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz, over a smaller grid."""
    n = math.prod(sizes)
    levels = np.stack(np.unravel_index(np.arange(n), sizes), axis=1)
    classes = np.concatenate([np.zeros((n, 1), np.int64), levels], axis=1)
    values = classes.astype(np.float64) * np.array([0, 1, 0.1, 0.5, 1 / 31, 1 / 31]) + np.array([1, 1, 0.5, 0, 0, 0])
    rng = np.random.default_rng(0)
    arrays = {"imgs": (rng.random((n, 64, 64)) < 0.1).astype(np.uint8), "latents_classes": classes,
              "latents_values": values}
    arrays |= replace
    if metadata:  # the real file's metadata is a pickled dict: it must never be read
        arrays["metadata"] = np.array([{"title": "dSprites"}], dtype=object)
    np.savez_compressed(path, **arrays)
    return arrays


def images_config(path: Path, *more: str):
    return resolve_config("images", overrides=[f'data.data_dir="{path}"', *more])


def test_a_dsprites_file_is_read_with_its_factors_and_no_pickle(tmp_path):
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    arrays = fake_dsprites(path)
    raw = load_data(images_config(path).data, progress=False)
    grid = raw.factors
    assert grid.names == ("shape", "scale", "orientation", "x", "y") and grid.sizes == (3, 2, 4, 2, 2)
    np.testing.assert_allclose(grid.values[1], [0.5, 0.6])
    assert grid.binary and grid.images.shape == (96, 1, 64, 64)
    np.testing.assert_array_equal(grid.images[:, 0], arrays["imgs"])
    assert raw.label_names == ("square", "ellipse", "heart") and raw.y_train.tolist() == np.repeat([0, 1, 2], 32).tolist()
    again = load_data(images_config(path).data, progress=False)  # from the cache now
    assert again.factors.images.filename == grid.images.filename


def test_training_on_a_dsprites_file_records_its_factors(tmp_path):
    import vaelab

    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    fake_dsprites(path)
    run = vaelab.train(data=path, out=tmp_path / "run", log=lambda line: None, overrides=[
        'model.likelihood="auto"', 'data.binarization="auto"', "model.encoder_hidden=[8]",
        "model.decoder_hidden=[8]", "train.epochs=1", "train.threads=1", "figures.names=[]"])
    data = vaelab.open_run(tmp_path / "run").config.data
    assert (data.binarization, run.config.model.likelihood) == ("binary", "bernoulli")
    assert (data.factor_names, data.factor_sizes) == (["shape", "scale", "orientation", "x", "y"], [3, 2, 4, 2, 2])
    assert make_views(load_data(data, progress=False), data).factors.sizes == (3, 2, 4, 2, 2)


@pytest.mark.parametrize("replace, message", [
    ({"latents_classes": np.zeros((96, 5), np.int64)}, "latents_classes must be \\(N, 6\\)"),
    ({"imgs": np.zeros((96, 32, 32), np.uint8)}, "imgs: expected \\(96, 64, 64\\) uint8"),
    ({"imgs": np.zeros((96, 64, 64), np.float32)}, "imgs: expected \\(96, 64, 64\\) uint8"),
])
def test_a_bad_dsprites_file_is_one_line_naming_file_and_key(tmp_path, replace, message):
    path = tmp_path / "dsprites_bad.npz"
    fake_dsprites(path, **replace)
    with pytest.raises(DataError, match=message) as info:
        load_data(images_config(path).data, progress=False)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_dsprites_file_out_of_grid_order_or_missing_a_key_is_refused(tmp_path):
    path = tmp_path / "dsprites_shuffled.npz"
    arrays = fake_dsprites(path, metadata=False)
    fake_dsprites(path, latents_classes=arrays["latents_classes"][::-1].copy())
    with pytest.raises(DataError, match="latents_classes is not the 3x2x4x2x2 grid"):
        load_data(images_config(path).data, progress=False)
    np.savez(path, imgs=arrays["imgs"], latents_values=arrays["latents_values"])
    with pytest.raises(DataError, match=f"{path}: npz lacks arrays latents_classes"):
        load_data(images_config(path).data, progress=False)


def fake_3dshapes(path: Path, sizes=(2, 2, 2, 2, 4, 3), images=None, labels=None) -> np.ndarray:
    import h5py

    n = math.prod(sizes)
    levels = np.stack(np.unravel_index(np.arange(n), sizes), axis=1)
    values = levels * np.array([0.1, 0.1, 0.1, 0.5 / 7, 1, 60 / 14]) + np.array([0, 0, 0, 0.75, 0, -30])
    pixels = np.random.default_rng(1).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f["images"] = pixels if images is None else images
        f["labels"] = values if labels is None else labels
    return pixels


def test_a_3dshapes_file_is_read_with_its_factors(tmp_path):
    path = tmp_path / "3dshapes.h5"
    pixels = fake_3dshapes(path)
    raw = load_data(images_config(path).data, progress=False)
    grid = raw.factors
    assert grid.names == ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    assert grid.sizes == (2, 2, 2, 2, 4, 3) and not grid.binary
    np.testing.assert_allclose(grid.values[5], [-30, -30 + 60 / 14, -30 + 120 / 14])
    np.testing.assert_array_equal(grid.images, pixels.transpose(0, 3, 1, 2))  # channel-first
    assert raw.label_names == ("cube", "cylinder", "sphere", "capsule")
    assert raw.y_val.tolist() == raw.split_factors("val")[:, 4].tolist()


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((192, 64, 64), np.uint8), None, "images must be \\(192, 64, 64, 3\\) uint8"),
    (None, np.zeros((192, 5)), "labels must be \\(N, 6\\) floats"),
])
def test_a_bad_3dshapes_file_is_one_line_naming_file_and_key(tmp_path, images, labels, message):
    path = tmp_path / "3dshapes.h5"
    fake_3dshapes(path, images=images, labels=labels)
    with pytest.raises(DataError, match=message) as info:
        load_data(images_config(path).data, progress=False)
    assert str(path) in str(info.value)


def test_a_missing_h5py_is_one_line_naming_the_install_command(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "3dshapes.h5"
    fake_3dshapes(path)
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if it were not installed
    with pytest.raises(DataError, match='needs h5py: pip install "vaelab\\[h5\\]"'):
        load_data(images_config(path).data, progress=False)


def test_an_mpi3d_file_is_read_as_its_grid(tmp_path):
    from vaelab.data.factor_files import MPI3D_NAMES, load_factor_file

    path = tmp_path / "mpi3d_toy.npz"
    sizes = (2, 3, 2, 1, 1, 2, 2)
    pixels = np.random.default_rng(2).integers(0, 256, (48, 64, 64, 3), dtype=np.uint8)
    np.savez(path, images=pixels)
    raw = load_factor_file(path, "mpi3d", progress=False, sizes=sizes)
    assert raw.factors.names == MPI3D_NAMES and raw.factors.sizes == sizes
    np.testing.assert_array_equal(raw.factors.images, pixels.transpose(0, 3, 1, 2))
    assert raw.label_names == ("cone", "cube", "cylinder")
    # through --images, the real grid is expected: a smaller file is one line naming it and the key
    with pytest.raises(DataError, match=rf"{path}: images: expected \(1036800, 64, 64, 3\) uint8 \(C order\), got \(48, 64, 64, 3\) uint8"):
        load_data(images_config(path).data, progress=False)


def test_images_without_factors_have_none(tmp_path):
    path = tmp_path / "plain.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (40, 8, 8), dtype=np.uint8))
    config = images_config(path, 'data.binarization="grey"')
    assert load_factors(config.data, progress=False) is None
    assert make_views(load_data(config.data, progress=False), config.data).factors is None
