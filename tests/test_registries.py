"""Every config choice accepts exactly the names of the registry that implements it, and every
list a user sees (the CLI's choices and help, the explorer's heads, the schedules) is a registry's.

So adding a variant is adding one registry entry: these tests fail if a choice's names are
written out a second time, and show that a new entry, or a plugin's, is valid config at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import uuid
from pathlib import Path

import pytest
import torch

import vaelab
from vaelab import cli, config, latents, likelihoods, model, nets, objectives, optimizers, plugins, runs, tracking, tuning
from vaelab import figures as plots
from vaelab.evaluate import EvaluationError, check_scorable, evaluate_run
from vaelab.explorer import decoder
from vaelab.figures import context as figure_context
from vaelab.figures import variants
from vaelab import training as train
from vaelab.training import compiled
from vaelab.config import REGISTRIES, ConfigError, RunConfig, choices, config_from_dict, registry
from vaelab.data import catalog, sources, views
from vaelab.data.own import decode

# config key -> the registry that implements it, written out so a move of either side shows here
IMPLEMENTED_BY = {
    "data.name": catalog.DATASETS,
    "data.binarization": views.VIEWS,
    "data.resize_mode": decode.RESIZE_MODES,
    "model.net": model.NETWORKS,
    "model.inference": model.INFERENCES,
    "model.latent": latents.LATENT_FAMILIES,
    "model.prior": latents.PRIORS,
    "model.output_bias": config.OUTPUT_BIASES,
    "model.activation": nets.ACTIVATIONS,
    "model.block": nets.BLOCKS,
    "model.init": nets.INITS,
    "model.likelihood": likelihoods.LIKELIHOOD_HEADS,
    "model.gaussian_variance": likelihoods.GAUSSIAN_VARIANCES,
    "objective.name": objectives.OBJECTIVES,
    "objective.iwae.gradient": objectives.IWAE_GRADIENTS,
    "objective.btcvae.sampling": objectives.TC_SAMPLINGS,
    "objective.dipvae.type": objectives.DIP_TYPES,
    "optim.name": optimizers.OPTIMIZERS,
    "optim.schedule": optimizers.SCHEDULES,
    "train.nonfinite": config.NONFINITE,
    "train.precision": config.PRECISIONS,
    "train.compile_mode": compiled.COMPILE_MODES,
    "figures.names": plots.FIGURES,
    "figures.manifold_range": figure_context.MANIFOLD_RANGES,
    "log.backends": tracking.BACKENDS,
    "tune.metric": tuning.METRICS,
    "tune.sampler": tuning.SAMPLERS,
    "tune.pruner": tuning.PRUNERS,
}
LISTS = ("figures.names", "log.backends")  # keys whose value is a list of the registry's names
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
    RunConfig(log=config.LogConfig(backends=list(tracking.BACKENDS))).validate()  # by default it logs to none
    assert set(seen) == set(REGISTRIES)
    for key, names in seen.items():
        extra = config.EXTRA_CHOICES.get(key, ())  # "images", and "auto" chosen from them when loaded
        assert names == tuple(IMPLEMENTED_BY[key]) + extra == choices(key), key


def _with(key: str, value) -> dict:
    values = RunConfig().to_dict()
    *sections, name = key.split(".")
    node = values
    for section in sections:
        node = node[section]
    node[name] = [value] if key in LISTS else value
    if sections[0] == "objective" and len(sections) == 2:  # an objective's own section: that objective trains
        values["objective"]["name"] = sections[1]
    if key == "model.inference":  # the order of two stochastic layers: a model with two
        values["model"]["latent_dim2"] = 2
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


# ---------------------------------------------------------------- every user-visible list is its registry's

def _command(*names: str) -> argparse.ArgumentParser:
    """The parser of `vaelab NAME [SUBNAME]`, as the CLI builds it."""
    parser = cli.build_parser()
    for name in names:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def _argument(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in parser._actions if a.dest == dest)


def test_evaluate_splits_are_the_ones_an_evaluation_file_names(tmp_path):
    assert tuple(_argument(_command("evaluate"), "split").choices) == runs.EVALUATION_SPLITS
    assert _argument(_command("evaluate"), "split").default == runs.EVALUATION_SPLITS[0]
    for split in runs.EVALUATION_SPLITS:
        assert runs.EVALUATION.fullmatch(runs.evaluation_name(split, 7))
    assert not runs.EVALUATION.fullmatch(runs.evaluation_name("train", 7))
    with pytest.raises(EvaluationError, match=f"split must be one of {', '.join(runs.EVALUATION_SPLITS)}, got 'train'"):
        evaluate_run(tmp_path, split="train")


def test_data_fetch_offers_the_catalog_and_its_aliases():
    offered = _argument(_command("data", "fetch"), "name").choices
    assert list(offered) == [*catalog.DATASETS, *sources.NAME_ALIASES]
    assert set(sources.NAME_ALIASES.values()) <= set(catalog.DATASETS)  # an alias names a catalog entry
    for name in offered:
        assert sources._check_name(name) in catalog.DATASETS


def test_figures_help_names_every_figure_of_the_registry_whole():
    text = _command("figures").format_help().rpartition("\nfigures:\n")[2]  # the list of figures
    found = [re.search(rf"(^|\s){re.escape(name)}\s", text) for name in plots.FIGURES]  # never broken at a hyphen
    assert all(found), [name for name, at in zip(plots.FIGURES, found) if not at]
    assert [at.start() for at in found] == sorted(at.start() for at in found)  # in the registry's order


def test_the_explorer_runs_the_heads_that_say_so_and_its_javascript_knows_each():
    script = (Path(decoder.__file__).parent / "explorer.js").read_text()
    handled = set(re.findall(r'type === "(\w+)"', script))
    for name, head in likelihoods.LIKELIHOOD_HEADS.items():
        page = decoder.page_head(head)
        assert page is not None, f"{name}: every built-in head runs in the page"
        assert page["type"] in handled and page["mean"], name
    # the page's constants are the head's own
    assert decoder.page_head(likelihoods.DiscretizedLogisticHead)["log_scale_min"] == likelihoods.LOG_SCALE_MIN
    assert decoder.page_head(likelihoods.ContinuousBernoulliHead)["taylor_below"] == likelihoods._CB_TAYLOR_BELOW


def test_a_head_that_changes_a_parent_is_not_run_as_the_parent():
    class ShiftedBernoulli(likelihoods.BernoulliHead):
        def forward(self, out):
            return super().forward(out + 1.0)

    assert decoder.page_head(ShiftedBernoulli) is None


def test_each_schedule_has_a_factor_by_epoch_or_a_scheduler_of_its_own():
    for name, schedule in optimizers.SCHEDULES.items():
        assert (schedule.lr_factor is None) != (schedule.build is None), name
        optim = dataclasses.replace(RunConfig().optim, schedule=name, warmup_epochs=2)
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=optim.lr)
        scheduler = optimizers.build_schedule(optimizer, optim, lambda: 10)
        if schedule.lr_factor is None:
            with pytest.raises(ConfigError, match=f"optim.schedule: '{name}' follows the validation ELBO"):
                optimizers.learning_rate(optim, 0, 10)
        else:  # the scheduler and learning_rate agree: one function of the epoch
            assert optimizer.param_groups[0]["lr"] == pytest.approx(optimizers.learning_rate(optim, 0, 10))
            optimizers.step_schedule(scheduler, 0.0)
            assert optimizer.param_groups[0]["lr"] == pytest.approx(optimizers.learning_rate(optim, 1, 10))


def test_latent_kind_is_the_familys():
    for name, family in latents.LATENT_FAMILIES.items():
        assert latents.latent_kind(family) in ("continuous", "categorical"), name
    assert latents.latent_kind(latents.CategoricalLatent) == "categorical"
    assert latents.latent_kind(torch.nn.Module()) == "continuous"  # a family that does not say


# ---------------------------------------------------------------- a plugin is known everywhere

@pytest.fixture
def plugin_name():
    """A unique name; every pluggable registry is put back as it was afterwards."""
    saved = {key: dict(registry(key)) for key in plugins.PLUGGABLE}
    yield f"test-plugin-{uuid.uuid4().hex[:8]}"
    for key, entries in saved.items():
        registry(key).clear()
        registry(key).update(entries)


class PluginHead(likelihoods.BernoulliHead):
    """A binary head of a user's: Bernoulli with the logits halved."""

    def forward(self, out):
        return super().forward(out / 2)


class PluginLatent(latents.GaussianLatent):
    pass


def plugin_objective(model, x, samples, generator, y, kl_weight, **args):
    return objectives.elbo(model, x, samples, generator, y, kl_weight=kl_weight)


def plugin_prior(loc, scale):
    return latents.normal_prior(loc, scale)


PLUGINS = [("objective.name", vaelab.register_objective, plugin_objective),
           ("model.prior", vaelab.register_prior, plugin_prior),
           ("model.likelihood", vaelab.register_likelihood, PluginHead),
           ("model.latent", vaelab.register_latent, PluginLatent)]


@pytest.mark.parametrize("key, register, entry", PLUGINS, ids=[key for key, _, _ in PLUGINS])
def test_a_registered_plugin_is_a_valid_choice(plugin_name, key, register, entry):
    with pytest.raises(ConfigError, match=rf'^{key}: "{plugin_name}" is not one of '):
        config_from_dict(_with(key, plugin_name))
    assert register(plugin_name)(entry) is entry
    assert plugin_name in choices(key) and plugin_name in plugins.registered_names(key)
    config = config_from_dict(_with(key, plugin_name))
    assert config.to_dict()[key.split(".")[0]][key.split(".")[1]] == plugin_name


def test_a_model_of_plugin_parts_is_built_and_drawn_by_what_they_declare(plugin_name):
    vaelab.register_likelihood(plugin_name)(PluginHead)
    vaelab.register_latent(plugin_name + "-z")(PluginLatent)
    values = _with("model.likelihood", plugin_name)
    values["model"] |= {"latent": plugin_name + "-z", "encoder_hidden": [8], "decoder_hidden": [8]}
    built = model.build_model(config_from_dict(values).model, (1, 28, 28))
    assert isinstance(built.head, PluginHead) and not variants.is_categorical(built)
    check_scorable(config_from_dict(values), built)  # binary head, binarized data: scorable
    with pytest.raises(decoder.ExplorerError, match="the likelihood head is a PluginHead; the explorer knows the "
                                                   "decoder mean of bernoulli, gaussian, continuous_bernoulli, "
                                                   "discretized_logistic only"):
        decoder.decoder_spec(built)
