"""A user's own code: whole models by file reference, networks inside vaelab's VAE, plugins, and the
record of the code a run was trained with (usercode.py, contract.py, model.build_model)."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
import torch
from tiny_runs import tiny_data  # noqa: F401  (fixture)
from torch import nn

import vaelab
from vaelab import cli
from vaelab.config import ConfigError, resolve_config
from vaelab.contract import ModelError, check_model
from vaelab.evaluate import importance_log_likelihood, reference_log_likelihood
from vaelab.model import VAE, build_model
from vaelab.usercode import CodeChangedError, allow_code_changes

# train.threads pinned: runs compared bit for bit must sum over the same thread count, whatever the load
TINY = ["data.val_size=100", "train.batch_size=50", "train.epochs=1", "train.eval_batch_size=100",
        "figures.names=[]", "train.threads=1"]

MODEL_FILE = '''
import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal

import vaelab


class TinyVAE(vaelab.Model):
    def __init__(self, image_shape, latent=3, hidden=32):
        super().__init__(image_shape)
        pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.Tanh(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, pixels))
        self.register_buffer("zeros", torch.zeros(latent))

    def prior(self):
        return Independent(Normal(self.zeros, torch.ones_like(self.zeros)), 1)

    def posterior(self, x, y=None):
        mean, log_var = self.network(self.encoder, x).chunk(2, -1)
        return Independent(Normal(mean, torch.exp(0.5 * log_var)), 1)

    def likelihood(self, z, y=None):
        return Independent(Bernoulli(logits=self.network(self.decoder, z)), 1)
'''

NETWORKS_FILE = '''
from torch import nn


class ConvEncoder(nn.Module):
    def __init__(self, image_shape, latent=4, width=8):
        super().__init__()
        c, h, w = image_shape
        self.net = nn.Sequential(nn.Conv2d(c, width, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(width * (h // 2) * (w // 2), 2 * latent))

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, image_shape, latent=4, outputs=None):
        super().__init__()
        self.net = nn.Linear(latent, outputs or image_shape[0] * image_shape[1] * image_shape[2])

    def forward(self, z):
        return self.net(z)
'''


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "my_vae.py"
    path.write_text(MODEL_FILE)
    return path


def train_cli(tmp_path, *args: str) -> Path:
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), *[a for o in TINY for a in ("--set", o)], *args]) == 0
    return out


# ---------------------------------------------------------------- the contract

class Flat(vaelab.Model):
    """Breaks the contract the way users do: a posterior that forgets Independent."""

    def __init__(self, image_shape=(1, 28, 28), wrap: bool = False):
        super().__init__(image_shape)
        self.linear, self.wrap = nn.Linear(784, 4), wrap

    def prior(self):
        return torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)

    def posterior(self, x, y=None):
        mean, log_var = self.linear(x).chunk(2, -1)
        q = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
        return torch.distributions.Independent(q, 1) if self.wrap else q

    def likelihood(self, z, y=None):
        logits = torch.zeros(*z.shape[:-1], 784) + self.linear.bias.sum()
        return torch.distributions.Independent(torch.distributions.Bernoulli(logits=logits), 1)


def test_the_contract_check_names_what_does_not_fit_in_one_line():
    with pytest.raises(ModelError, match=r"^m: posterior\(x\).log_prob\(z\) returned shape \(2, 2\) for a batch of 2; "
                                         r"it must sum over the latent dimensions to \(batch,\): wrap the distribution "
                                         r"in torch.distributions.Independent\(d, 1\)$"):
        check_model(Flat(), (1, 28, 28), "m")
    check_model(Flat(wrap=True), (1, 28, 28), "m")
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        check_model(object(), (1, 28, 28), "m")
    with pytest.raises(ModelError, match=r"has no prior\(\) method"):
        check_model(nn.Linear(2, 2), (1, 28, 28), "m")
    with pytest.raises(ModelError, match="has no parameters"):
        check_model(type("Empty", (vaelab.Model,), {})(), (1, 28, 28), "m")


def test_a_vae_is_a_model_and_a_plain_module_with_the_three_methods_is_scored_alike():
    config = resolve_config(overrides=["model.encoder_hidden=[8]", "model.decoder_hidden=[8]"])
    assert isinstance(VAE(config.model), vaelab.Model)
    torch.manual_seed(0)
    own = Flat(wrap=True)
    x = torch.bernoulli(torch.rand(3, 784))
    fast = importance_log_likelihood(own, x, 400, torch.Generator().manual_seed(1))[0]
    plain = reference_log_likelihood(own, x, 400, torch.Generator().manual_seed(2))  # other draws, the same estimate
    torch.testing.assert_close(fast, plain, atol=0.1, rtol=0)


# ---------------------------------------------------------------- whole models by reference

def test_a_model_file_trains_evaluates_and_draws_and_its_run_records_the_code(tmp_path, model_file, tiny_data,
                                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative FILE.py reference, as a user types it
    run_dir = train_cli(tmp_path, "--model", "my_vae.py:TinyVAE", "--set", "model.args.latent=2")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["custom"] == f"{model_file}:TinyVAE" and config["model"]["args"] == {"latent": 2}
    assert config["code"] == {str(model_file): __import__("hashlib").sha256(model_file.read_bytes()).hexdigest()}
    run = vaelab.open_run(run_dir)
    assert type(run.model).__name__ == "TinyVAE" and run.model.prior().event_shape == (2,)
    result = run.evaluate(samples=20, progress=False)
    assert math.isfinite(result["nll"]) and result["latent_dim"] == 2 and result["code_sha256"] == config["code"]
    drawn = {f.name: f for f in run.figures("samples", "reconstructions", "manifold", "latent-scatter", "kl-per-dim")}
    assert all(f.path and f.path.is_file() for f in drawn.values()), drawn
    assert run.explore().path.is_file()
    table = vaelab.compare(run)
    # one run: its numbers, no VAE settings it does not use (a column appears only for a key runs differ in)
    assert str(run_dir) in table and "latent_dim" not in table and "encoder_hidden" not in table
    assert "TinyVAE" in run.report(samples=20, progress=False).path.read_text()


def test_an_edited_model_file_stops_later_commands_unless_the_change_is_allowed(tmp_path, model_file, tiny_data,
                                                                               capsys, monkeypatch):
    run_dir = train_cli(tmp_path, "--model", f"{model_file}:TinyVAE")
    trained = json.loads((run_dir / "config.json").read_text())["code"][str(model_file)]
    model_file.write_text(MODEL_FILE + "\n# an edit\n")
    assert cli.main(["evaluate", str(run_dir), "-k", "5"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and str(model_file) in error and trained[:12] in error
    assert "has changed" in error and "--allow-code-change" in error
    with pytest.raises(CodeChangedError):
        vaelab.load_run(run_dir)
    monkeypatch.setattr("vaelab.usercode._allow_changes", False)
    assert cli.main(["evaluate", str(run_dir), "-k", "5", "--allow-code-change", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["code_changed"][str(model_file)]["trained"] == trained
    (change,) = [json.loads(line) for line in (run_dir / "code-changes.jsonl").read_text().splitlines()]
    assert change["file"] == str(model_file) and change["trained"] == trained and change["now"] != trained
    allow_code_changes(False)
    model_file.unlink()
    assert cli.main(["figures", str(run_dir), "samples"]) == 2
    assert "is gone" in capsys.readouterr().err


def test_a_model_resumes_bit_for_bit_from_its_recorded_code(tmp_path, model_file, tiny_data):
    whole = vaelab.train(model=f"{model_file}:TinyVAE", overrides=TINY + ["train.epochs=2"], out=tmp_path / "whole",
                         log=lambda *_: None)
    half = vaelab.train(model=f"{model_file}:TinyVAE", overrides=TINY + ["train.epochs=1"], out=tmp_path / "half",
                        log=lambda *_: None)
    resumed = vaelab.resume(half.path, epochs=2, log=lambda *_: None)
    assert resumed.model.weights_sha256 == whole.model.weights_sha256


def test_python_takes_a_class_or_an_object_and_says_when_a_new_process_cannot_rebuild_it(tmp_path, tiny_data,
                                                                                         monkeypatch):
    import importlib.util

    path = tmp_path / "vae_module.py"
    path.write_text(MODEL_FILE)
    spec = importlib.util.spec_from_file_location("vae_module", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(__import__("sys").modules, "vae_module", module)  # as `import vae_module` does
    spec.loader.exec_module(module)
    by_class = vaelab.train(model=module.TinyVAE, model_args={"latent": 2, "hidden": 8}, overrides=TINY,
                            out=tmp_path / "class", log=lambda *_: None)
    assert by_class.config.model.custom == f"{path}:TinyVAE" and by_class.config.model.args == {"latent": 2, "hidden": 8}
    obj = module.TinyVAE((1, 28, 28), latent=5)
    by_object = vaelab.train(model=obj, overrides=TINY, out=tmp_path / "object", log=lambda *_: None)
    assert by_object.model.prior().event_shape == (5,)  # rebuilt in this process from the object
    assert not torch.equal(obj.decoder[0].weight, by_object.model.decoder[0].weight)  # the caller's object untouched
    config = json.loads((tmp_path / "object" / "config.json").read_text())
    from vaelab.usercode import _OBJECTS

    _OBJECTS.clear()  # as in a new process
    with pytest.raises(ConfigError, match="another Python process, which a new process cannot rebuild"):
        vaelab.load_run(tmp_path / "object")
    assert config["model"]["custom"].endswith(":TinyVAE")


def test_a_vae_object_trains_on_from_its_own_weights(tmp_path, tiny_data):
    # vaelab.train(model=vaelab.load_run(...)) trains that model further: its pseudo-inputs and output
    # bias are not started again at training images and their mean, as a new VAE's are
    from vaelab.config import ModelConfig

    torch.manual_seed(0)
    vamp = VAE(ModelConfig(latent_dim=2, encoder_hidden=[8], decoder_hidden=[8], pseudo_inputs=3,
                           output_bias="data_mean"))
    with torch.no_grad():
        vamp.pseudo_logits.fill_(0.5)
    # the preset's model section as a VampPrior preset's would be: it asks a new VAE for both set-ups
    settings = ["model.pseudo_inputs=3", 'model.output_bias="data_mean"', "optim.lr=1e-9", "optim.schedule=constant"]
    run = vaelab.train(model=vamp, overrides=TINY + settings, out=tmp_path / "on", log=lambda *_: None)
    trained = run.model.state_dict()
    for name, weight in vamp.state_dict().items():  # a rate of 1e-9 moves no weight further than that
        torch.testing.assert_close(trained[name], weight, atol=1e-6, rtol=0, msg=name)


def test_a_class_from_main_says_a_new_process_cannot_import_it():
    config = resolve_config(overrides=['model.custom="__main__:NotThere"'])
    with pytest.raises(ConfigError, match=r"defined in __main__ .* put the class in a .py file"):
        build_model(config.model, (1, 28, 28))


def test_bad_references_are_one_line_errors_naming_the_key(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "ok.py").write_text("class A:\n    pass\n")
    cases = {f"{tmp_path}/missing.py:A": "no such file", f"{tmp_path}/broken.py:A": "RuntimeError: boom",
             f"{tmp_path}/ok.py:B": "has no 'B' (it defines A)", "no_such_module_xyz:A": "cannot import module"}
    for ref, message in cases.items():
        config = resolve_config(overrides=[f"model.custom={json.dumps(ref)}"])
        with pytest.raises(ConfigError, match=r"^model.custom: .*" + message.replace("(", r"\(").replace(")", r"\)")):
            build_model(config.model, (1, 28, 28))


# ---------------------------------------------------------------- networks inside vaelab's VAE

def test_networks_plug_into_the_vae_with_its_latent_and_likelihood(tmp_path, tiny_data):
    path = tmp_path / "nets.py"
    path.write_text(NETWORKS_FILE)
    run = vaelab.train(encoder=f"{path}:ConvEncoder", decoder=f"{path}:Decoder", model_args={"latent": 4},
                       overrides=TINY + ["model.latent_dim=4"], out=tmp_path / "run", log=lambda *_: None)
    model = run.model
    assert isinstance(model, VAE) and type(model.encoder.net).__name__ == "ConvEncoder"
    assert sorted(run.config.code) == [str(path)]
    assert math.isfinite(run.evaluate(samples=10, progress=False)["nll"])


def test_a_network_of_the_wrong_size_is_named_with_what_was_expected(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(NETWORKS_FILE)
    config = resolve_config(overrides=[f'model.encoder="{path}:ConvEncoder"', "model.args.latent=10",
                                       "model.latent_dim=16"])
    with pytest.raises(ModelError, match=r"^model.encoder: returned \(batch, 20\); a normal latent of size 16 needs "
                                         r"\(batch, 32\) \(mean and log-variance\)$"):
        VAE(config.model)
    config = resolve_config(overrides=[f'model.decoder="{path}:Decoder"', "model.args.latent=2",
                                       "model.args.outputs=100"])
    with pytest.raises(ModelError, match=r"^model.decoder: returned 100 values per z; the bernoulli likelihood of "
                                         r"1x28x28 images needs 784"):
        VAE(config.model)


# ---------------------------------------------------------------- plugins

PLUGIN_FILE = '''
import torch
import vaelab
from vaelab.objectives import weighted_elbo


@vaelab.register_objective("half-kl")
def half_kl(model, x, samples, generator, y, kl_weight, scale=0.5):
    terms = weighted_elbo(model, x, samples, generator, y, kl_weight)
    return vaelab.ObjectiveTerms(terms.elbo, terms.reconstruction, terms.kl, terms.reconstruction - scale * terms.kl)


@vaelab.register_prior("wide-normal")
def wide_normal(loc, scale):
    return torch.distributions.Independent(torch.distributions.Normal(loc, 2 * scale), 1)
'''


def test_plugins_register_names_that_every_config_check_knows(tmp_path, tiny_data):
    path = tmp_path / "my_plugins.py"
    path.write_text(PLUGIN_FILE)
    config_file = tmp_path / "c.toml"
    config_file.write_text(f'[plugins]\nmodules = ["{path}"]\n[objective]\nname = "half-kl"\nargs = {{scale = 0.25}}\n'
                           '[model]\nprior = "wide-normal"\n')
    run_dir = train_cli(tmp_path, "--config", str(config_file))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["objective"]["name"] == "half-kl" and str(path) in config["code"]
    assert vaelab.open_run(run_dir).model.prior().base_dist.scale[0].item() == 2.0
    with pytest.raises(ConfigError, match='"elbo" is built in'):
        vaelab.register_objective("elbo")(lambda *a: None)
    with pytest.raises(ConfigError, match='objective.name: "half-kll" is not one of .*half-kl'):
        resolve_config(overrides=['objective.name="half-kll"'])


def test_a_package_module_reference_and_an_entry_point_plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "myvaes").mkdir(parents=True)
    (site / "myvaes" / "__init__.py").write_text("")
    (site / "myvaes" / "models.py").write_text(MODEL_FILE)
    (site / "myvaes" / "objectives.py").write_text(PLUGIN_FILE.replace('"half-kl"', '"half-kl-ep"')
                                                   .replace('"wide-normal"', '"wide-normal-ep"'))
    dist = site / "myvaes-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myvaes\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vaelab.plugins]\nmine = myvaes.objectives\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr("vaelab.plugins._entry_points_loaded", False)  # as in a new process
    config = resolve_config(overrides=['model.custom="myvaes.models:TinyVAE"', 'objective.name="half-kl-ep"'])
    model = build_model(config.model, (1, 28, 28))
    assert type(model).__name__ == "TinyVAE" and model.prior().event_shape == (3,)
    from vaelab.usercode import record_code

    assert list(record_code(config).code) == [str(site / "myvaes" / "models.py")]
