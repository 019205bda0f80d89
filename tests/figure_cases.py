"""Shared by the figure tests: tiny models and data of every variant, a figure context to draw from.

Import the fixture into a test module: `from figure_cases import tiny_data`.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from vaelab.config import DataConfig, ModelConfig
from vaelab.data.views import make_views
from vaelab.figures import FigureContext
from vaelab.model import VAE


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


VARIANTS = {  # ModelConfig fields of each variant (besides tiny nets)
    "normal": {},
    "laplace": {"latent": "laplace", "prior": "laplace"},
    "laplace-q-normal-p": {"latent": "laplace"},
    "normal-q-laplace-p": {"prior": "laplace"},
    "categorical": {"latent": "categorical", "latent_dim": 3, "categories": 4},
    "two-layer": {"latent_dim": 3, "latent_dim2": 2, "encoder_hidden2": [8], "decoder_hidden2": [8]},
    "two-layer-top-down-vampprior": {"latent_dim": 3, "latent_dim2": 2, "encoder_hidden2": [8], "decoder_hidden2": [8],
                                     "inference": "top-down", "pseudo_inputs": 4},
    "cvae": {"conditional": True},
    "cvae-categorical": {"conditional": True, "latent": "categorical", "latent_dim": 2, "categories": 3},
    "cvae-two-layer": {"conditional": True, "latent_dim": 2, "latent_dim2": 2, "encoder_hidden2": [8],
                       "decoder_hidden2": [8]},
    "colour-cvae-laplace": {"conditional": True, "latent": "laplace", "prior": "laplace", "likelihood": "gaussian"},
}
CATEGORICAL_MANIFOLD = "no manifold: a categorical latent has no continuous plane to sweep"


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
