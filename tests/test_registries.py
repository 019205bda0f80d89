"""Every config choice accepts exactly the names of the registry that implements it.

So adding a variant is adding one registry entry: these tests fail if a choice's names are
written out a second time, and show that a new entry is valid config at once.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vaelab import config, latents, likelihoods, model, nets, objectives, optimizers
from vaelab import figures as plots
from vaelab.figures import context as figure_context
from vaelab import training as train
from vaelab.training import compiled
from vaelab.config import REGISTRIES, ConfigError, RunConfig, choices, config_from_dict, registry
from vaelab.data import catalog, images, views

# config key -> the registry that implements it, written out so a move of either side shows here
IMPLEMENTED_BY = {
    "data.name": catalog.DATASETS,
    "data.binarization": views.VIEWS,
    "data.resize_mode": images.RESIZE_MODES,
    "model.net": model.NETWORKS,
    "model.latent": latents.LATENT_FAMILIES,
    "model.prior": latents.PRIORS,
    "model.output_bias": config.OUTPUT_BIASES,
    "model.activation": nets.ACTIVATIONS,
    "model.init": nets.INITS,
    "model.likelihood": likelihoods.LIKELIHOOD_HEADS,
    "model.gaussian_variance": likelihoods.GAUSSIAN_VARIANCES,
    "objective.name": objectives.OBJECTIVES,
    "optim.name": optimizers.OPTIMIZERS,
    "optim.schedule": optimizers.SCHEDULES,
    "train.nonfinite": config.NONFINITE,
    "train.precision": config.PRECISIONS,
    "train.compile_mode": compiled.COMPILE_MODES,
    "figures.names": plots.FIGURES,
    "figures.manifold_range": figure_context.MANIFOLD_RANGES,
}
FAKE = "fake-variant"


def test_each_key_names_its_registry():
    assert set(REGISTRIES) == set(IMPLEMENTED_BY)
    for key, implementation in IMPLEMENTED_BY.items():
        assert registry(key) is implementation, key


def test_every_one_of_check_uses_its_registry_names(monkeypatch):
    """Spy on every `_one_of` check of a config: each names a key of REGISTRIES and offers its names."""
    seen: dict[str, tuple[str, ...]] = {}
    real = config._one_of

    def spy(value, names, key):
        seen[key] = tuple(names)
        real(value, names, key)

    monkeypatch.setattr(config, "_one_of", spy)
    RunConfig().validate()
    assert set(seen) == set(REGISTRIES)
    for key, names in seen.items():
        extra = config.EXTRA_CHOICES.get(key, ())  # "images", and "auto" chosen from them when loaded
        assert names == tuple(IMPLEMENTED_BY[key]) + extra == choices(key), key


def _with(key: str, value) -> dict:
    values = RunConfig().to_dict()
    section, name = key.split(".")
    values[section][name] = [value] if key == "figures.names" else value
    return values


def _add_fake_entry(key: str, monkeypatch) -> None:
    module, name = REGISTRIES[key]
    implementation = registry(key)
    if isinstance(implementation, tuple):  # names only: what they do is if-statements, or torch's
        monkeypatch.setattr(f"vaelab.{module}.{name}", (*implementation, FAKE))
        return
    entry = next(iter(implementation.values()))  # behaves as the first variant does
    if key == "data.name":
        entry = dataclasses.replace(entry, name=FAKE)
    monkeypatch.setitem(implementation, FAKE, entry)


@pytest.mark.parametrize("key", sorted(REGISTRIES))
def test_a_new_registry_entry_is_a_valid_choice(key, monkeypatch):
    with pytest.raises(ConfigError, match=rf'^{key}: "{FAKE}" is not one of '):
        config_from_dict(_with(key, FAKE))
    _add_fake_entry(key, monkeypatch)
    assert FAKE in choices(key)
    config_from_dict(_with(key, FAKE))


def test_every_precision_is_one_network_dtype_knows():
    for precision in choices("train.precision"):
        train.network_dtype(precision, torch.device("cpu"))


def test_binary_likelihoods_are_the_ones_binarized_data_allows():
    for name, head in likelihoods.LIKELIHOOD_HEADS.items():
        values = _with("model.likelihood", name)
        if head.data_range == "binary":
            config_from_dict(values)
        else:
            with pytest.raises(ConfigError, match="^model.likelihood: .* gives \\{0,1\\} pixels"):
                config_from_dict(values)
