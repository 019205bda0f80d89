"""The data catalog is the one place a data set's facts are written; everything else reads it."""

from __future__ import annotations

import math

import pytest

from vaelab import model
from vaelab.figures import variants as plots
from vaelab.config import ConfigError, resolve_config
from vaelab.data import DATASET_NAMES, cifar, pypi
from vaelab.data.arrays import IMAGE_SHAPE
from vaelab.data.catalog import DATASETS, IMAGE_SHAPES, drawn_inverted


@pytest.mark.parametrize("name", list(DATASETS))
def test_each_entry_is_consistent(name):
    info = DATASETS[name]
    assert info.name == name
    assert len(info.label_names) == info.n_classes == len(set(info.label_names))
    channels = {"grey": 1, "colour": 3, "binary": 1}[info.pixels]
    assert info.image_shape[0] == channels and min(info.image_shape) >= 1
    assert info.train_size > 0 and info.test_size > 0


def test_the_readers_and_the_model_read_the_catalog():
    assert DATASET_NAMES == tuple(DATASETS)
    assert model.IMAGE_SHAPES is IMAGE_SHAPES
    assert (cifar.IMAGE_SHAPE, cifar.N_CLASSES, cifar.LABEL_NAMES) == (
        DATASETS["cifar10"].image_shape, DATASETS["cifar10"].n_classes, DATASETS["cifar10"].label_names)
    assert cifar.ROW_LENGTH == math.prod(DATASETS["cifar10"].image_shape)
    assert IMAGE_SHAPE == DATASETS["mnist"].image_shape[1:] == DATASETS["fashion-mnist"].image_shape[1:]
    assert pypi.ROWS == {"train": DATASETS["mnist"].train_size, "test": DATASETS["mnist"].test_size}


def test_only_sets_stored_white_on_black_are_drawn_inverted():
    """MNIST and Fashion-MNIST (white strokes on black) are drawn dark on white; a user's images
    (data.name "images") and colour sets are drawn in their own levels."""
    assert [name for name in DATASETS if drawn_inverted(name)] == ["mnist", "fashion-mnist"]
    assert not drawn_inverted("images") and not drawn_inverted(None) and not drawn_inverted("tiny")


def test_figures_name_the_classes_from_the_catalog():
    assert plots.class_names("fashion-mnist", [0, 9]) == ["T-shirt/top", "ankle boot"]
    assert plots.class_names("cifar10", [1]) == ["automobile"]
    assert plots.class_names("mnist", [3, 12]) == ["3", "12"]
    assert plots.class_names(None, [4]) == ["4"]


@pytest.mark.parametrize("name", list(DATASETS))
def test_config_limits_come_from_the_catalog(name):
    info = DATASETS[name]
    resolve_config(overrides=[f"data.name={name}", f"data.val_size={info.train_size - 1}", "train.batch_size=1"])
    with pytest.raises(ConfigError, match=rf"^data.val_size: must be in 1..{info.train_size - 1}"):
        resolve_config(overrides=[f"data.name={name}", f"data.val_size={info.train_size}"])
    with pytest.raises(ConfigError, match=rf"^model.n_classes: .*labels go up to {info.n_classes - 1}"):
        resolve_config(overrides=[f"data.name={name}", "model.conditional=true", f"model.n_classes={info.n_classes - 1}",
                                  "model.likelihood=bernoulli"])
