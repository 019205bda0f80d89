"""What each model variant means for a figure: its prior and latent in words, its label names, and
decoding, encoding and sampling that take the labels where the model needs them.

Variants: Gaussian, Laplace and categorical latents, two stochastic layers (z = [z1, z2], the
decoder reads z1) and conditional models (CVAE: every encode and decode gets the labels). A
model of the user's own is drawn through the model contract alone: z is what its prior's
event shape says, flattened for the axes and unflattened for the decoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import Distribution

from torch.distributions import Independent

from ..contract import Model, decode_mean, device_of, encode_mean, latent_shape, latent_size, n_labels
from ..data.catalog import known_label_names
from ..distributions import rsample
from ..latents import latent_kind, prior_display_name
from ..model import VAE



def is_conditional(model: Model) -> bool:
    """Does the model take labels y (a CVAE)?"""
    return n_labels(model) > 0


def is_builtin(model: Model) -> bool:
    """Is it vaelab's own VAE (whose config says what its latent is), not a model of the user's own?"""
    return isinstance(model, VAE)


def is_categorical(model: Model) -> bool:
    return is_builtin(model) and latent_kind(model.latent) == "categorical"


def is_two_layer(model: Model) -> bool:
    return is_builtin(model) and model.config.latent_dim2 > 0


def latent_dim(model: Model) -> int:
    """Entries of z, flattened: what `encode` returns per image."""
    return model.latent_dim if is_builtin(model) else latent_size(model)


def reads_z2(model: Model) -> bool:
    """Whether a two-layer model's decoder reads z2 as well as z1 (model.inference = "top-down")."""
    return is_two_layer(model) and model.top.reads_z2


@torch.no_grad()
def held_z2(model: Model) -> torch.Tensor | None:
    """(latent_dim2,) where the explorer decodes from z1 alone a decoder that also reads z2: the mean of
    p(z2) (0 for a standard prior, the mean of the components' means for a VampPrior); else None."""
    return model.prior().first.mean if reads_z2(model) else None


def decoded_size(model: Model) -> int:
    """How many leading entries of z the figures and the explorer map: z1's size for a two-layer model
    (the layer its decoder reads, with z2 too where `reads_z2`), else all of z."""
    return model.latent.size if is_builtin(model) else latent_size(model)


def prior_family(model: Model) -> str | None:
    """"normal" or "laplace" where p(z) factorizes into those (its quantiles have names), else None."""
    prior = model.prior()
    base = type(prior.base_dist if isinstance(prior, Independent) else prior).__name__
    return {"Normal": "normal", "Laplace": "laplace"}.get(base)


def prior_text(model: Model) -> str:
    """p(z) in words: 'N(0, I)', 'Laplace(0, 1)', 'uniform over ...', 'p(z2) p(z1|z2), ...'."""
    if not is_builtin(model):
        return getattr(model, "prior_text", None) or f"p(z) of {type(model).__name__}"
    config = model.config
    if is_categorical(model):
        return f"uniform over the {config.categories} classes of each of {config.latent_dim} variables"
    top = (f"the VampPrior of {config.pseudo_inputs} pseudo-inputs" if config.pseudo_inputs
           else prior_display_name(config.prior))
    if is_two_layer(model):
        return f"p(z2) p(z1|z2) with p(z2) = {top}"
    return top


def latent_text(model: Model) -> str:
    """The latent for a title: '2-D latent', '3-D Laplace latent', '4 x 10-class categorical latent', ..."""
    if not is_builtin(model):
        shape = "x".join(str(s) for s in latent_shape(model))
        return f"{type(model).__name__}, {shape}-D latent" + (", conditioned on the label" if is_conditional(model)
                                                             else "")
    config = model.config
    if is_categorical(model):
        text = f"{config.latent_dim} x {config.categories}-class categorical latent"
    elif is_two_layer(model):
        text = f"two-layer {config.latent_dim}-D + {config.latent_dim2}-D latent" + (
            ", inferred top-down" if reads_z2(model) else "")
    else:
        text = f"{config.latent_dim}-D {'Laplace ' if config.latent == 'laplace' else ''}latent"
    if not is_categorical(model) and config.prior != config.latent:
        text += f", {prior_display_name(config.prior)} prior"
    if is_conditional(model):
        text += ", conditioned on the label"
    return text


def class_names(data_name: str | None, classes: Sequence[int]) -> list[str]:
    """Display names of integer labels: the data set's names where known, else the numbers."""
    names = known_label_names(data_name)
    return [names[k] if names and k < len(names) else str(k) for k in classes]


def sample_prior(model: Model, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """(n, latent_dim) draws of z ~ p(z) from `generator`, flattened as the decoder reads them."""
    z = rsample(model.prior(), (n,), generator)
    return model.latent.flatten(z) if is_builtin(model) else z.reshape(n, -1)


def seeded_generator(model: Model, seed: int) -> torch.Generator:
    """A generator on the model's device, so a figure's draws depend on the seed alone."""
    return torch.Generator(device_of(model)).manual_seed(seed)


def decoder_input(model: Model, z: torch.Tensor) -> torch.Tensor:
    """Flat z (n, latent_dim) as `model.decode_mean` takes it: (n, variables, categories) for categorical
    latents, whose `likelihood` flattens z itself (so it cannot take the flat z `encode_mean` returns);
    the prior's event shape for a model of the user's own."""
    if is_categorical(model):
        return z.unflatten(-1, (model.config.latent_dim, model.config.categories))
    if not is_builtin(model):
        return z.unflatten(-1, latent_shape(model))
    return z


@torch.no_grad()
def decode(model: Model, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E[x|z(, y)]: flat z (n, latent_dim) -> (n, n_pixels); y: (n,) labels for a conditional model."""
    return decode_mean(model, decoder_input(model, z), y)


@torch.no_grad()
def encode(model: Model, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The posterior mean: (n, n_pixels) -> (n, latent_dim) (class probabilities for categorical latents)."""
    return encode_mean(model, x, y).flatten(1)


def posterior_of(model: Model, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
    """q(z|x(, y)); y: (n,) labels for a conditional model."""
    return model.posterior(x) if y is None else model.posterior(x, y)


def require_labels(model: Model, y: torch.Tensor | None, what: str) -> None:
    """Refuse to draw `what` for a conditional model without the images' labels."""
    if is_conditional(model) and y is None:
        raise ValueError(f"{what}: this is a conditional model; pass the images' labels")
