"""examples/ works as examples/README.md says: each example through train, evaluate, report and explore
on the command line; the examples use vaelab's public API only; the flow posterior's density is right."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from torch.distributions import Independent, Normal, TransformedDistribution

import vaelab
from linear_gaussian import LinearGaussian, sample_data
from shapes import draw_shapes, write_folder
from vaelab.cli import main
from vaelab.evaluate import importance_log_likelihood

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SOURCES = sorted(EXAMPLES.glob("*.py"))
# MNIST runs: one epoch of 20 steps, as the README's tiny settings
TINY = ["--set", "train.epochs=1", "--set", "train.train_subset=2000", "--set", "data.val_size=1000",
        "--set", "train.max_steps=20"]


def load_example(name: str):
    """An example file as a module of its own (as `vaelab train --model FILE.py:CLASS` runs it)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the public API only

def vaelab_uses(tree: ast.AST) -> list[str]:
    """What a file takes from vaelab: `vaelab.X` attributes and `from vaelab import X` names, and any
    import of a vaelab submodule as 'vaelab.<module>'."""
    used = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            used += [alias.name for alias in node.names if alias.name.startswith("vaelab.")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vaelab":
            used += ([alias.name for alias in node.names] if node.module == "vaelab" else [node.module])
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "vaelab":
            used.append(node.attr)
    return used


def test_there_are_the_four_examples_and_a_readme():
    assert {p.stem for p in SOURCES} >= {"minimal_vae", "resnet_conv", "mmd_vae", "flow_posterior"}
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for path in SOURCES:
        assert path.name in readme, path.name


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_examples_import_nothing_from_vaelab_beyond_its_public_api(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    outside = [name for name in vaelab_uses(tree) if name not in vaelab.__all__]
    assert not outside, f"{path.name} uses {outside}, outside vaelab.__all__"
    for node in ast.walk(tree):  # and otherwise only torch and the standard library
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            top = name.split(".")[0]
            assert top in ("torch", "vaelab") or top in sys.stdlib_module_names, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_examples_fit_on_one_screen(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 80 and max(map(len, lines)) <= 120


def test_the_public_api_check_sees_a_private_import():
    tree = ast.parse("import vaelab\nfrom vaelab.distributions import rsample\nvaelab.model.VAE\nvaelab.train\n")
    assert [n for n in vaelab_uses(tree) if n not in vaelab.__all__] == ["vaelab.distributions", "model"]


# ---------------------------------------------------------------- the flow posterior's density

def flow(example, dim=3, seed=0, scale=1.0):
    """Two IAF steps (the second reversed) with random weights and shifts (their size times `scale`), float64."""
    g = torch.Generator().manual_seed(seed)
    return [example.IAFStep(0.7 * scale * torch.randn(2 * dim, dim, generator=g, dtype=torch.float64),
                            0.5 * scale * torch.randn(2 * dim, generator=g, dtype=torch.float64), reverse=i == 1)
            for i in range(2)]


def test_iaf_steps_invert_exactly_and_depend_only_on_earlier_coordinates():
    example = load_example("flow_posterior")
    steps = flow(example, dim=5)
    z = torch.randn(7, 5, dtype=torch.float64)
    for step in steps:
        torch.testing.assert_close(step.inv(step(z)), z, atol=1e-10, rtol=0)
    jacobian = torch.autograd.functional.jacobian(steps[0], z[0])
    assert torch.all(jacobian.triu(1) == 0)  # triangular: output i reads inputs j <= i only
    assert torch.all(torch.autograd.functional.jacobian(steps[1], z[0]).tril(-1) == 0)


def test_flow_log_prob_is_the_change_of_variables_formula_by_autograd():
    """log q(y) = log N(x; mu, sigma) - log |det dy/dx| with the determinant of torch's own Jacobian."""
    example = load_example("flow_posterior")
    steps = flow(example)
    mu, sigma = torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64), torch.tensor([0.8, 1.5, 0.4], dtype=torch.float64)
    base = Independent(Normal(mu, sigma), 1)
    q = TransformedDistribution(base, steps)

    def forward(x):
        for step in steps:
            x = step(x)
        return x

    for x in torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2:
        y = forward(x)
        by_hand = base.log_prob(x) - torch.linalg.slogdet(torch.autograd.functional.jacobian(forward, x))[1]
        torch.testing.assert_close(q.log_prob(y.clone()), by_hand, atol=1e-10, rtol=0)  # a clone: no cached inverse


class FlowLinearGaussian(LinearGaussian):
    """The linear-Gaussian model, whose log p(x) is known, with q(z|x) the flow over a widened exact posterior
    (the steps narrow it again; a proposal narrower than p(z|x) would make the importance weights heavy-tailed)."""

    def __init__(self, example, steps=None):
        super().__init__()
        self.steps = steps or flow(example, dim=self.latent, seed=2, scale=0.3)

    def posterior(self, x):
        mean, std = self.exact_posterior_params(x)
        return TransformedDistribution(Independent(Normal(mean, 1.5 * std), 1), self.steps)


def repeated_estimate(model, x, k, repeats, seed=0):
    """Mean and standard error over `repeats` independent K-sample estimates of log p(x), per data point."""
    estimate, _ = importance_log_likelihood(model, x.repeat(repeats, 1), k, torch.Generator().manual_seed(seed))
    estimate = estimate.reshape(repeats, len(x))
    return estimate.mean(0), estimate.std(0) / math.sqrt(repeats)


def test_importance_sampled_nll_with_the_flow_posterior_matches_the_exact_log_likelihood():
    example = load_example("flow_posterior")
    model = FlowLinearGaussian(example)
    x = sample_data(model, n=6)
    exact = model.log_marginal(x)
    mean, stderr = repeated_estimate(model, x, k=1000, repeats=40)
    assert torch.all((mean - exact).abs() < 4 * stderr + 1e-3), (mean - exact, stderr)
    # the test has teeth: q is not the exact posterior (one sample would be biased), and a flow whose
    # log-determinant were left out would miss by far more than the Monte-Carlo error
    single, single_err = repeated_estimate(model, x, k=1, repeats=2000, seed=1)
    assert torch.all(single < exact - 4 * single_err)

    class NoLogDet(example.IAFStep):
        def log_abs_det_jacobian(self, z, y):
            return torch.zeros(z.shape[:-1], dtype=z.dtype)

    wrong = FlowLinearGaussian(example, [NoLogDet(s.weight, s.shift) for s in model.steps])
    wrong_mean, wrong_err = repeated_estimate(wrong, x, k=1000, repeats=40)
    assert torch.all((wrong_mean - exact).abs() > 10 * wrong_err)


def test_flow_samples_come_from_vaelabs_generator():
    example = load_example("flow_posterior")
    model = example.FlowVAE(latent=3, hidden=8, flows=2)
    x = torch.rand(4, 784).round()
    q = model.posterior(x)
    draws = [vaelab.rsample(q, (5,), torch.Generator().manual_seed(3)) for _ in range(2)]
    assert draws[0].shape == (5, 4, 3) and torch.equal(draws[0], draws[1])
    draws[0].sum().backward()  # reparameterized: gradients reach the encoder and the flow's weights
    assert model.encoder[0].weight.grad.abs().sum() > 0 and model.flow_weights.grad is not None
    assert model.encode_mean(x).shape == (4, 3)


# ---------------------------------------------------------------- each example through the command line

def run_commands(run: Path, capsys, data_dir: list[str], report: tuple[str, ...] = ()) -> dict:
    """evaluate (K = 2), report (no evaluation), explore; returns the evaluation."""
    assert main(["evaluate", str(run), "--samples", "2", "--json", *data_dir]) == 0
    result = json.loads(capsys.readouterr().out)
    assert math.isfinite(result["nll"]) and result["nll"] <= -result["elbo"] + 0.05 * abs(result["elbo"])
    assert main(["report", str(run), "--no-evaluate", *report]) == 0
    assert (run / "report.html").is_file()
    assert main(["explore", str(run)]) == 0
    assert (run / "explorer.html").is_file()
    return result


MNIST_EXAMPLES = {
    "minimal_vae": ["--model", "examples/minimal_vae.py:MinimalVAE", "--set", "model.args.latent=4"],
    "flow_posterior": ["--model", "examples/flow_posterior.py:FlowVAE", "--set", "model.args.latent=4"],
    "mmd_vae": ["--config", "examples/mmd_vae.toml"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", MNIST_EXAMPLES)
def test_mnist_example_trains_evaluates_reports_and_explores(name, mnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the commands of examples/README.md, run from the repository's root
    run = tmp_path / name
    assert main(["train", *MNIST_EXAMPLES[name], *TINY, "--data-dir", str(mnist_dir), "--out", str(run)]) == 0
    capsys.readouterr()
    config = json.loads((run / "config.json").read_text())
    assert str(EXAMPLES / f"{name}.py") in config["code"]  # the run knows the code it was trained with
    result = run_commands(run, capsys, ["--data-dir", str(mnist_dir)])
    assert result["n"] == 10_000
    if name == "flow_posterior":
        assert result["kl_per_dim"] is None and result["active_units"] >= 1  # KL by Monte-Carlo; means via encode_mean
    if name == "mmd_vae":
        assert config["objective"]["name"] == "mmd" and config["objective"]["args"]["weight"] == 1000.0


@pytest.mark.slow
def test_resnet_example_trains_on_a_folder_of_colour_images(tmp_path, capsys, monkeypatch):
    import vaelab.explorer.page

    monkeypatch.chdir(ROOT)
    # Few decodes: the discretized logistic's mean of a 64x64 colour image costs 255 sigmoids a value,
    # seconds a batch on a busy 2-core machine; the explorer's grid of images decoded ahead is 2 x 2.
    monkeypatch.setattr(vaelab.explorer.page, "GRID_BYTES", 4 * 3 * 64 * 64)
    images, labels = draw_shapes(150, size=(64, 64), seed=0)
    folder = write_folder(tmp_path / "shapes", images, labels)
    run = tmp_path / "resnet"
    args = ["train", "--preset", "images-64", "--images", str(folder),
            "--set", "model.encoder=examples/resnet_conv.py:ResNetEncoder",
            "--set", "model.decoder=examples/resnet_conv.py:ResNetDecoder",
            "--set", "model.args.width=8", "--set", "train.epochs=1", "--set", "train.min_steps=0",
            "--set", "evaluate.samples=0",
            "--set", 'figures.names=["samples", "curves"]', "--set", "figures.samples_n=2", "--out", str(run)]
    assert main(args) == 0
    capsys.readouterr()
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["likelihood"] == "discretized_logistic" and len(config["code"]) == 1
    assert (run / "figures" / "samples.png").is_file()
    result = run_commands(run, capsys, [], report=("--no-figures",))
    assert result["bits_per_dim"] > 0 and result["latent_dim"] == 64


@pytest.mark.slow
def test_the_own_network_benchmark_runs_and_the_path_computes_what_the_built_in_nets_do(monkeypatch, capsys):
    """benchmarks/own_network_speed.py, a smoke run: the built-in nets given as a user's own train to the same
    ELBO as the built-in ones (the same computation), and every ratio is printed."""
    spec = importlib.util.spec_from_file_location("own_network_speed", ROOT / "benchmarks" / "own_network_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # the script points it at its temporary folder; restored after
    monkeypatch.setattr(sys, "argv", ["own_network_speed.py", "--n", "90", "--rounds", "1", "--width", "8"])
    bench.main()
    out = capsys.readouterr().out
    elbo = dict(re.findall(r"(built-in conv(?: as own)?) [\d.]+ s, CPU [\d.]+ s \(train ELBO (-?\d+)\)", out))
    assert len(elbo) == 2 and elbo["built-in conv"] == elbo["built-in conv as own"], out
    assert "ratio resnet_conv.py (width 8) / built-in conv" in out and "55.8 M multiply-adds" in out
