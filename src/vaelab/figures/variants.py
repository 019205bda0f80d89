"""What each model variant means for a figure: its prior and latent in words, its label names, and
decoding, encoding and sampling that take the labels where the model needs them.

Variants: Gaussian, Laplace and categorical latents, two stochastic layers (z = [z1, z2], the
decoder reads z1) and conditional models (CVAE: every encode and decode gets the labels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import Distribution

from ..data.catalog import known_label_names
from ..distributions import rsample
from ..model import VAE

PRIOR_NAMES = {"normal": "N(0, I)", "laplace": "Laplace(0, 1)"}


def is_conditional(model: VAE) -> bool:
    """Does the model take labels y (a CVAE)?"""
    return getattr(model, "n_labels", 0) > 0


def is_categorical(model: VAE) -> bool:
    return model.config.latent == "categorical"


def is_two_layer(model: VAE) -> bool:
    return model.config.latent_dim2 > 0


def decoded_size(model: VAE) -> int:
    """How many leading entries of z the decoder reads: z1's size for a two-layer model, else all of z."""
    return model.latent.size


def prior_text(model: VAE) -> str:
    """p(z) in words: 'N(0, I)', 'Laplace(0, 1)', 'uniform over ...', 'p(z2) p(z1|z2), ...'."""
    config = model.config
    if is_categorical(model):
        return f"uniform over the {config.categories} classes of each of {config.latent_dim} variables"
    top = (f"the VampPrior of {config.pseudo_inputs} pseudo-inputs" if config.pseudo_inputs
           else PRIOR_NAMES[config.prior])
    if is_two_layer(model):
        return f"p(z2) p(z1|z2) with p(z2) = {top}"
    return top


def latent_text(model: VAE) -> str:
    """The latent for a title: '2-D latent', '3-D Laplace latent', '4 x 10-class categorical latent', ..."""
    config = model.config
    if is_categorical(model):
        text = f"{config.latent_dim} x {config.categories}-class categorical latent"
    elif is_two_layer(model):
        text = f"two-layer {config.latent_dim}-D + {config.latent_dim2}-D latent"
    else:
        text = f"{config.latent_dim}-D {'Laplace ' if config.latent == 'laplace' else ''}latent"
    if not is_categorical(model) and config.prior != config.latent:
        text += f", {PRIOR_NAMES[config.prior]} prior"
    if is_conditional(model):
        text += ", conditioned on the label"
    return text


def class_names(data_name: str | None, classes: Sequence[int]) -> list[str]:
    """Display names of integer labels: the data set's names where known, else the numbers."""
    names = known_label_names(data_name)
    return [names[k] if names and k < len(names) else str(k) for k in classes]


def sample_prior(model: VAE, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """(n, latent_dim) draws of z ~ p(z) from `generator`, flattened as the decoder reads them."""
    return model.latent.flatten(rsample(model.prior(), (n,), generator))


def seeded_generator(model: VAE, seed: int) -> torch.Generator:
    """A generator on the model's device, so a figure's draws depend on the seed alone."""
    return torch.Generator(model.device).manual_seed(seed)


def decoder_input(model: VAE, z: torch.Tensor) -> torch.Tensor:
    """Flat z (n, latent_dim) as `model.decode_mean` takes it: (n, variables, categories) for categorical
    latents, whose `likelihood` flattens z itself (so it cannot take the flat z `encode_mean` returns)."""
    if is_categorical(model):
        return z.unflatten(-1, (model.config.latent_dim, model.config.categories))
    return z


@torch.no_grad()
def decode(model: VAE, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E[x|z(, y)]: flat z (n, latent_dim) -> (n, n_pixels); y: (n,) labels for a conditional model."""
    z = decoder_input(model, z)
    return model.decode_mean(z) if y is None else model.decode_mean(z, y)


@torch.no_grad()
def encode(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The posterior mean: (n, n_pixels) -> (n, latent_dim) (class probabilities for categorical latents)."""
    return model.encode_mean(x) if y is None else model.encode_mean(x, y)


def posterior_of(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
    """q(z|x(, y)); y: (n,) labels for a conditional model."""
    return model.posterior(x) if y is None else model.posterior(x, y)


def require_labels(model: VAE, y: torch.Tensor | None, what: str) -> None:
    """Refuse to draw `what` for a conditional model without the images' labels."""
    if is_conditional(model) and y is None:
        raise ValueError(f"{what}: this is a conditional model; pass the images' labels")
