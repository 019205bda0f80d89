"""Configs: presets, overrides, and errors that name the key."""

from types import SimpleNamespace

import pytest

import vaelab.config
from vaelab.config import (ConfigError, RunConfig, config_from_dict, member_configs, parse_override, preset_dict,
                           preset_names, resolve_config)


def test_default_preset_is_the_lab_model():
    config = resolve_config()
    assert "mnist-lab" in preset_names()
    assert config.model.latent_dim == 2 and config.model.encoder_hidden == [512]
    assert config.model.decoder_hidden == [512] and config.model.activation == "relu"
    assert config.model.likelihood == "bernoulli" and config.data.binarization == "dynamic"
    assert config.optim.name == "adam" and config.optim.lr == 1e-3 and config.train.batch_size == 128


def test_a_preset_based_on_another_changes_only_what_it_names():
    base, variant = resolve_config("mnist-vampprior").to_dict(), resolve_config("mnist-vampprior-10min").to_dict()
    own = preset_dict("mnist-vampprior-10min")
    assert "based_on" not in own and own["optim"]["lr"] == 4e-3 and own["model"]["activation"] == "elu"
    assert own["model"]["latent_dim2"] == preset_dict("mnist-vampprior")["model"]["latent_dim2"] == 50  # the base's
    changed = {(section, key) for section in base if isinstance(base[section], dict)
               for key in base[section] if base[section][key] != variant[section][key]}
    assert changed == {("model", "activation"), ("model", "pseudo_inputs"), ("objective", "warmup_epochs"),
                       ("optim", "lr"), ("train", "time_budget"), ("train", "validate_every")}
    assert variant["name"] == "mnist-vampprior-10min" != base["name"]


def test_a_preset_based_on_itself_or_on_nothing_is_refused(tmp_path, monkeypatch):
    (tmp_path / "a.toml").write_text('based_on = "b"\n[model]\nlatent_dim = 3\n')
    (tmp_path / "b.toml").write_text('based_on = "a"\n')
    (tmp_path / "c.toml").write_text('based_on = "no-such"\n')
    (tmp_path / "d.toml").write_text('based_on = "a"\n')
    monkeypatch.setattr(vaelab.config, "resources", SimpleNamespace(files=lambda package: tmp_path))
    with pytest.raises(ConfigError, match="preset 'b': based_on must name another preset without a cycle, not 'a'"):
        preset_dict("a")
    with pytest.raises(ConfigError, match="preset 'c': based_on must name another preset without a cycle, not 'no-such'"):
        preset_dict("c")
    with pytest.raises(ConfigError, match="preset 'b': .* not 'a'"):  # d's base is in a cycle
        preset_dict("d")


def test_overrides_are_parsed_as_toml_values():
    config = resolve_config(overrides=["model.latent_dim=10", "model.encoder_hidden=[64, 32]",
                                       "optim.name=rmsprop", "optim.lr=2e-4"])
    assert config.model.latent_dim == 10 and config.model.encoder_hidden == [64, 32]
    assert config.optim.name == "rmsprop" and config.optim.lr == 2e-4
    assert parse_override("a.b=true") == {"a": {"b": True}}


def test_config_file_layers_over_the_preset(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[model]\nlatent_dim = 20\nactivation = "tanh"\n')
    config = resolve_config(config_file=path, overrides=["model.latent_dim=3"])
    assert config.model.latent_dim == 3 and config.model.activation == "tanh"


@pytest.mark.parametrize("override, key", [
    ("model.latnt_dim=3", "model.latnt_dim"),
    ("model.latent_dim=0", "model.latent_dim"),
    ("model.latent_dim=2.5", "model.latent_dim"),
    ("model.activation=gelu", "model.activation"),
    ("model.likelihood=poisson", "model.likelihood"),
    ("model.encoder_hidden=[0]", "model.encoder_hidden"),
    ("optim.lr=0", "optim.lr"),
    ("optim.name=lbfgs", "optim.name"),
    ("data.binarization=otsu", "data.binarization"),
    ("objective.samples=0", "objective.samples"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.device=tpu", "train.device"),
    ("nonsense=1", "nonsense"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[")):
        resolve_config(overrides=[override])


def test_bad_file_is_named(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[model\n")
    with pytest.raises(ConfigError, match="broken.toml"):
        resolve_config(config_file=path)


def test_round_trip_through_dict():
    config = resolve_config(overrides=["model.latent_dim=7"])
    assert config_from_dict(config.to_dict()) == config
    assert isinstance(config, RunConfig)


def test_values_in_messages_are_written_as_toml():
    from vaelab.config import toml_value

    assert [toml_value(v) for v in (True, False, "grey", 3, 0.001, [16, 32], None)] == [
        "true", "false", '"grey"', "3", "0.001", "[16, 32]", "(unset)"]
    assert toml_value({"a": [True, "x"]}) == '{a = [true, "x"]}' and toml_value(float("inf")) == "inf"


@pytest.mark.parametrize("override, message", [
    ("train.epochs=true", "train.epochs: expected an integer, got true"),
    ("data.binarization=false", "data.binarization: expected a string, got false"),
    ("model.conditional='yes'", 'model.conditional: expected true or false, got "yes"'),
    ("train.compile='sometimes'", 'train.compile: must be true, false or "auto", got "sometimes"'),
    ("model.encoder_hidden=[true]", "model.encoder_hidden[0]: expected an integer, got true"),
])
def test_config_errors_write_values_as_toml_not_python(override, message):
    with pytest.raises(ConfigError) as error:
        resolve_config(overrides=[override])
    assert str(error.value) == message


def test_sweep_members_are_named_by_key_and_value_with_the_values_dots_kept():
    config = resolve_config(overrides=['sweep.members=["optim.lr=0.003", "model.latent_dim=2; objective.beta=0.5"]'])
    assert [name for name, _ in member_configs(config)] == ["lr=0.003", "latent_dim=2_beta=0.5"]
