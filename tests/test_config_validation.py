"""Every config field is validated, and every error names the field as `section.field`.

The fields are enumerated from the dataclasses themselves, so a field added later without a
validation (or without an entry here) fails `test_every_field_is_covered`. Also: values of the
wrong type for every field, unknown keys at every level, splits larger than the data, K < 1 for
the evaluation, and a run whose config.json no longer matches its weights.
"""

from __future__ import annotations

import copy
from typing import Any
import dataclasses
import json
import re
import typing
from pathlib import Path

import pytest

from vaelab import cli
from vaelab.config import (
    ConfigError,
    RunConfig,
    config_from_dict,
    preset_names,
    resolve_config,
)
from vaelab.evaluate import EvaluationError, evaluate_images
from vaelab.runs import load_run
from vaelab.runs import CHECKPOINT, WEIGHTS

from tiny_runs import run, tiny_data, tiny_raw, trained  # noqa: F401  (fixtures)


def field_paths(cls: type = RunConfig, prefix: str = "") -> dict[str, typing.Any]:
    """'section.field' -> type hint, for every leaf field of the config tree."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out |= field_paths(hint, f"{prefix}{f.name}.")
        else:
            out[f"{prefix}{f.name}"] = hint
    return out


FIELDS = field_paths()

# At least one invalid value per field (values of the wrong type are tested for all fields below).
INVALID: dict[str, list] = {
    "name": ["", "a/b", "..", "x\\y"],
    "data.name": ["mnist2", "MNIST"],
    "data.binarization": ["otsu"],
    "data.val_size": [0, -1, 60_000],
    "data.static_seed": [-1, 2**32],
    "data.eval_seed": [-1, 2**32],
    "data.image_size": [[64], [0, 4], [64, 64, 3]],
    "data.resize_mode": ["stretch"],
    "data.channels": [2, 4, -1],
    "data.background": [[0, 0], [256, 0, 0], [-1, 0, 0]],
    "data.val_fraction": [-0.1, 1.0],
    "data.test_fraction": [1.5, 0.95],  # 0.95 with the default val_fraction of 0.1 leaves nothing to train on
    "data.split_seed": [-1, 2**32],
    "data.skip_bad": ["yes"],  # a bool: only a wrong type is invalid
    "data.factor_levels": [[0], [1, 2]],  # [1, 2]: the default mnist is not a set vaelab draws
    "data.factor_names": [["a", "a"], [""]],
    "data.factor_sizes": [[3], [0]],  # one size for each of factor_names ([] by default)
    "model.latent_dim": [0, -3],
    "model.encoder_hidden": [[0], [64, -1]],
    "model.decoder_hidden": [[0]],
    "model.activation": ["gelu"],
    "model.block": ["glu", "residual"],
    "model.init": ["xavier"],
    "model.init_std": [0.0, -0.1],
    "model.likelihood": ["poisson"],
    "model.gaussian_variance": ["diagonal"],
    "model.gaussian_sigma": [0.0, -1.0],
    "model.min_sigma": [0.0, 0.5],  # above gaussian_sigma = 0.1
    "model.net": ["resnet"],
    "model.conv_channels": [[], [32, 0]],
    "model.latent": ["dirichlet"],
    "model.prior": ["vamp"],
    "model.categories": [1, 0],
    "model.temperature": [0.0, -1.0],
    "model.temperature_min": [0.0, 2.0],  # above temperature = 1
    "model.temperature_decay": [-0.1],
    "model.conditional": [1, "yes"],  # a bool: only a wrong type is invalid
    "model.n_classes": [1, 0],
    "model.latent_dim2": [-1],
    "model.inference": ["sideways"],
    "model.encoder_hidden2": [[0]],
    "model.decoder_hidden2": [[-4]],
    "model.output_bias": ["mean"],
    "model.pseudo_inputs": [-1, 2.5],
    "model.log_var_bounds": [[2.0, -6.0], [-6.0], [-6.0, 2.0, 3.0], [1.0, 1.0]],
    "objective.name": ["vae"],
    "objective.samples": [0, -1],
    "objective.beta": [-0.5],
    "objective.warmup_epochs": [-1],
    "objective.iwae.gradient": ["DReG", "score"],
    "objective.btcvae.sampling": ["msw", "MSS"],
    "objective.btcvae.alpha": [-1.0],
    "objective.btcvae.gamma": [-0.5],
    "objective.capacity.gamma": [-1.0],
    "objective.capacity.max_nats": [-25.0],
    "objective.capacity.steps": [-1, 2.5],
    "objective.dipvae.type": ["iii", "I", 2],
    "objective.dipvae.lambda_od": [-10.0],
    "objective.dipvae.lambda_d": [-1.0],
    "objective.factorvae.gamma": [-1.0],
    "objective.factorvae.discriminator_hidden": [[], [0], [1000, -1]],
    "objective.factorvae.discriminator_lr": [0.0, -1e-4],
    "optim.name": ["lbfgs"],
    "optim.lr": [0.0, -1e-3, float("inf"), float("nan")],
    "optim.weight_decay": [-1e-4],
    "optim.momentum": [-0.9],
    "optim.eps": [0.0],
    "optim.beta2": [0.0, 1.0],
    "optim.schedule": ["cosine"],
    "optim.schedule_scale": [0.0, float("inf")],
    "optim.warmup_epochs": [-1, 1.5],
    "optim.min_lr_ratio": [-0.1, 1.5],
    "optim.plateau_factor": [0.0, 1.0],
    "optim.plateau_patience": [-1],
    "train.epochs": [0],
    "train.batch_size": [0],  # larger than the data is fine: training takes every image (test_pipeline.py)
    "train.eval_batch_size": [0],
    "train.patience": [-1],
    "train.seed": [-1, 2**32],
    "train.device": ["tpu", "cudafoo", "cuda:x", ""],
    "train.max_steps": [-1],
    "train.train_subset": [-1, 50_001],
    "train.min_steps": [-1],
    "train.checkpoint_every": [-1],
    "train.nonfinite": ["ignore"],
    "train.compile": ["yes", 1, "true", 0.5],  # true, false or "auto"
    "train.compile_mode": ["fast"],
    "train.precision": ["bf16", "float16"],
    "train.ema_decay": [-0.1, 1.0],
    "train.time_budget": [-1.0, "10m"],
    "train.validate_every": [0, -2],
    "train.init_from": [3, ["runs/a"]],  # a run folder or pretrained:NAME, as a string
    "train.threads": [0, -1, "many", "2", "Auto", "Start"],  # "start", "auto", "fixed" or a count >= 1
    "evaluate.samples": [-1],
    "evaluate.disentanglement": [-1, 39],
    "evaluate.memory_mb": [0.0, -5.0, float("inf")],
    "evaluate.compile": ["yes", 1, "true", 0.5],  # true, false or "auto"
    "figures.names": [["histogram"], "samples"],
    "figures.samples_n": [0],
    "figures.reconstructions_n": [0],
    "figures.reconstructions_random": ["no"],  # a bool: only a wrong type is invalid
    "figures.manifold_n": [0],
    "figures.manifold_range": ["full"],
    "sweep.members": [["model.latent_dim"], ["model.latent_dim=0"], ["nonsense=1"], [""]],
    "model.custom": ["my_vae.py", "my_vae.py:1x", "my_vae.py:"],
    "model.encoder": ["nets.py"],
    "model.decoder": [":Decoder"],
    "model.args": [{"bad": {1, 2}}, {"nan": float("nan")}],
    "objective.args": [{"bad": object()}],
    "plugins.modules": [["no_such_vaelab_plugin_module"], ["/no/such/plugin.py"]],
    "code": [{"/a/model.py": "not-a-digest"}],
    "log.backends": [["tensorbord"], ["mlflow", "mlflow"]],
    "log.figures_every": [-1],
    "log.project": ["", " "],
    "tune.trials": [0, -1],
    "tune.workers": [0],
    "tune.metric": ["nll"],
    "tune.nll_samples": [0],
    "tune.sampler": ["cmaes"],
    "tune.pruner": ["asha"],
    "tune.seed": [-1, 2**32],
    "tune.heartbeat": [0],
    "tune.space": [{"optim.lrr": ["log", 1e-4, 1e-2]}, {"optim.lr": ["log", 0, 1]}, {"optim.lr": "1e-3"},
                   {"model.latent_dim": ["choice", 0, 2]}],
}
# Fields no value of the right type can make invalid.
EXEMPT = {
    "description": "free text, shown by `vaelab presets`",
    "data.data_dir": "any folder (or none); whether it holds the data is checked when they are loaded, "
                     "by a DataError naming it",
    "data.label_names": "any names: filled in from a user's images (their class folders) when they are loaded",
    "log.run_name": "any name the trackers show the run by; \"\" = the run folder's name",
}


def with_value(path: str, value) -> dict:
    values = copy.deepcopy(resolve_config().to_dict())
    *sections, key = path.split(".")
    node = values
    for section in sections:
        node = node[section]
    node[key] = value
    return values


def assert_names(path: str, values: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_dict(values)
    message = str(info.value)
    assert message.startswith((f"{path}:", f"{path}[", f"{path}.")), message
    return info.value


def test_every_field_is_covered():
    assert not set(INVALID) & set(EXEMPT)
    assert set(FIELDS) == set(INVALID) | set(EXEMPT), (
        f"no invalid value listed for {sorted(set(FIELDS) - set(INVALID) - set(EXEMPT))}; "
        f"listed but not a field: {sorted(set(INVALID) | set(EXEMPT) - set(FIELDS))}")


def test_the_defaults_and_every_preset_are_valid():
    config_from_dict(RunConfig().to_dict())
    for name in preset_names():
        config = resolve_config(name)
        assert config_from_dict(config.to_dict()) == config


@pytest.mark.parametrize("path, value", [(p, v) for p, values in INVALID.items() for v in values],
                         ids=lambda x: x if isinstance(x, str) else re.sub(" at 0x[0-9a-f]+", "", repr(x)))
def test_invalid_value_is_refused_naming_the_field(path, value):
    assert_names(path, with_value(path, value))


def wrong_types(hint) -> list:
    if hint is int:
        return ["3", True, 2.5, None, [1]]
    if hint is float:
        return ["0.1", True, None, [0.1]]
    if hint is bool:
        return [1, "true", None, 0.0]
    if hint is str:
        return [1, True, None, ["x"], 2.5]
    if hint == list[int]:
        return [3, "1,2", [1.5], [True], ["a"], None]
    if hint == list[str]:
        return ["samples", [1], [None], None]
    if hint == list[float]:
        return [-6.0, "-6,2", ["a"], [True], None]
    if hint == str | None:
        return [1, True, ["x"]]
    if hint == float | None:
        return ["0.1", True, [0.1]]
    if hint == int | str:
        return [None, 2.5, True, [1]]
    if hint == bool | str:
        return [1, None, 0.5, ["auto"]]
    if hint == dict[str, Any]:
        return [1, "x", [1], None]
    if hint == dict[str, str]:
        return [1, "x", {"/a.py": 3}, None]
    raise AssertionError(f"no wrong types listed for {hint}")


@pytest.mark.parametrize("path, value", [(p, v) for p, hint in FIELDS.items() for v in wrong_types(hint)],
                         ids=lambda x: x if isinstance(x, str) else repr(x))
def test_wrong_type_is_refused_naming_the_field(path, value):
    assert_names(path, with_value(path, value))


SECTIONS = sorted({p.split(".")[0] for p in FIELDS if "." in p})


@pytest.mark.parametrize("section", SECTIONS)
def test_unknown_keys_and_non_tables_in_each_section(section):
    values = resolve_config().to_dict()
    values[section]["nonsense"] = 1
    error = assert_names(f"{section}.nonsense", values)
    assert "unknown key" in str(error)
    values = resolve_config().to_dict()
    values[section] = 3
    assert "expected a table" in str(assert_names(section, values))


def test_unknown_top_level_keys_and_non_table_configs(tmp_path):
    assert "unknown key" in str(assert_names("nonsense", {"nonsense": 1}))
    for value in ([], ["model"], "model", 3, None):
        with pytest.raises(ConfigError, match="expected a table of config sections"):
            config_from_dict(value)
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=f"{path}: expected a table"):
        resolve_config(config_file=path)
    path = tmp_path / "c.toml"
    path.write_text("[model]\nlatnt_dim = 3\n")
    meant = r"unknown key; did you mean model.latent_dim\?"
    with pytest.raises(ConfigError, match=rf"model.latnt_dim: {meant} .*\(in {path}\)"):
        resolve_config(config_file=path)


@pytest.mark.parametrize("override, message", [
    ("train.lr=0.01", "train.lr: unknown key; did you mean optim.lr? (known in train: batch_size, "),
    ("train.weight_decai=0.1", "train.weight_decai: unknown key; did you mean optim.weight_decay? (known in train: "),
    ("model.latnt_dim=3", "model.latnt_dim: unknown key; did you mean model.latent_dim? (known in model: "),
    ("data.nmae='mnist'", "data.nmae: unknown key; did you mean data.name? (known in data: "),
    ("modle.latent_dim=3", "modle.latent_dim: unknown key; did you mean model.latent_dim? (known: code, data, "),
    ("modle=3", "modle: unknown key; did you mean model? (known: code, data, "),
    ("model.likelihood='bernouli'", 'model.likelihood: "bernouli" is not one of bernoulli, gaussian, '
                                    "continuous_bernoulli, discretized_logistic, auto; did you mean bernoulli?"),
    ("figures.names=['sample']", 'figures.names: "sample" is not one of samples, '),
    ("data.name='mnsit'", 'data.name: "mnsit" is not one of mnist, fashion-mnist, cifar10, dsprites, shapes3d-like, images; did you mean mnist?'),
])
def test_a_near_miss_says_what_was_meant(override, message):
    with pytest.raises(ConfigError) as info:
        resolve_config(overrides=[override])
    assert str(info.value).startswith(message), str(info.value)
    assert "did you mean" in str(info.value)


@pytest.mark.parametrize("override", ["nonsense=1", "model.nonsense=1", "optim.name='lbfgs'",
                                      "train.name=1"])  # four keys are called name: no guess
def test_no_guess_when_nothing_is_close(override):
    with pytest.raises(ConfigError) as info:
        resolve_config(overrides=[override])
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("overrides, key", [
    (["data.name=cifar10", "data.val_size=50000"], "data.val_size"),
    (["data.name=cifar10", "train.train_subset=40001"], "train.train_subset"),
])
def test_splits_larger_than_the_data(overrides, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        resolve_config(overrides=overrides)


def test_a_batch_as_large_as_the_data_or_larger_is_a_valid_config():
    """Training takes every image in each step then (pipeline.fit_batch_to_data), as for a small folder."""
    assert resolve_config(overrides=["train.train_subset=100", "train.batch_size=100"]).train.batch_size == 100
    assert resolve_config(overrides=["train.train_subset=100"]).train.batch_size == 128
    assert resolve_config(overrides=["data.name=cifar10", "train.batch_size=40001"]).train.batch_size == 40001


@pytest.mark.parametrize("overrides, key", [
    (["model.likelihood=gaussian"], "model.likelihood"),  # grey-level model on {0,1} pixels
    (["model.net=conv", "model.conv_channels=[8, 8, 8, 8, 8]"], "model.conv_channels"),  # 28 halves to 0
    (["model.latent_dim2=2", "model.latent=laplace"], "model.latent_dim2"),
    (["model.inference=top-down"], "model.inference"),  # one stochastic layer has no order to choose
    (["objective.name=iwae", "objective.beta=0.5"], "objective.beta"),
    (["model.pseudo_inputs=10", "model.latent=laplace"], "model.pseudo_inputs"),
    (["model.log_var_bounds=[-6, 2]", "model.latent=laplace"], "model.log_var_bounds"),  # a log-scale, not a variance
    (["model.pseudo_inputs=10", "model.prior=laplace"], "model.pseudo_inputs"),
    (["model.pseudo_inputs=10", "model.conditional=true"], "model.pseudo_inputs"),
    (["model.conditional=true", "model.n_classes=5"], "model.n_classes"),  # mnist labels go up to 9
])
def test_settings_valid_alone_but_not_together(overrides, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        resolve_config(overrides=overrides)


def test_sweep_members_are_validated_naming_the_member():
    with pytest.raises(ConfigError, match=r'^sweep.members\[1\]: "model.latent_dim=0": model.latent_dim: '):
        resolve_config(overrides=['sweep.members=["model.latent_dim=3", "model.latent_dim=0"]'])
    with pytest.raises(ConfigError, match=r"^sweep.members\[0\]: .*model.nope: unknown key"):
        resolve_config(overrides=['sweep.members=["model.latent_dim=3;model.nope=1"]'])
    config = resolve_config(overrides=['sweep.members=["model.latent_dim=3;optim.lr=1e-4", "model.latent_dim=5"]'])
    assert len(config.sweep.members) == 2


# ---------------------------------------------------------------- K < 1 for the evaluation

def test_evaluation_k_below_one():
    assert_names("evaluate.samples", with_value("evaluate.samples", -1))
    config_from_dict(with_value("evaluate.samples", 0))  # 0 = no NLL after training
    with pytest.raises(EvaluationError, match="K .* must be >= 1, got 0"):
        evaluate_images(object(), object(), k=0)


@pytest.mark.parametrize("k", ["0", "-3"])
def test_vaelab_evaluate_with_k_below_one(run, tiny_data, capsys, k):
    code = cli.main(["evaluate", str(run), "--samples", k])
    err = capsys.readouterr().err
    assert code == 2 and f"must be >= 1, got {k}" in err


# ---------------------------------------------------------------- a checkpoint and its config

def edit_config(run_dir: Path, path: str, value) -> None:
    values = json.loads((run_dir / "config.json").read_text())
    section, key = path.split(".")
    values[section][key] = value
    (run_dir / "config.json").write_text(json.dumps(values))


@pytest.mark.parametrize("path, value, mismatch", [
    ("model.latent_dim", 3, "size mismatch"),
    ("model.encoder_hidden", [32], "size mismatch"),
    ("model.likelihood", "gaussian", "Unexpected key|Missing key|size mismatch"),
    ("model.latent_dim2", 2, "Unexpected key|Missing key"),
])
def test_config_that_no_longer_matches_the_weights(run, tiny_data, capsys, path, value, mismatch):
    edit_config(run, path, value)
    if path == "model.likelihood":
        edit_config(run, "data.binarization", "grey")
    with pytest.raises(ValueError, match=f"(?s)^{run / WEIGHTS}: weights do not match the run's "
                                         f"{run / 'config.json'} .*({mismatch})"):
        load_run(run)
    (run / WEIGHTS).unlink()  # an unfinished run: load_run reads the checkpoint's best weights
    with pytest.raises(ValueError, match=f"(?s)^{run / CHECKPOINT}: weights do not match .*({mismatch})"):
        load_run(run)
    code = cli.main(["train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and f"{run / CHECKPOINT}: checkpoint does not match the run's config" in err
    assert any(word in err for word in mismatch.split("|")), err


def test_the_unedited_run_loads(run):
    assert load_run(run).run_config.model.latent_dim == 2
