"""Nothing vaelab reads is unpickled: checkpoints and weights are safetensors, configs and
records JSON/TOML, data sets IDX/CSV/npz without pickles, CIFAR-10 batches through an
unpickler that resolves no global but the few that rebuild a uint8 array.

Two kinds of test: the source is searched (by its syntax tree) for every way to unpickle, and
files that would run code if unpickled are planted under every name vaelab reads. Loading
them must fail with an error naming the file, and the marker file the planted code would
create must never appear.
"""

from __future__ import annotations

import ast
import io
import pickle
import warnings
from pathlib import Path

import pytest
import torch

import vaelab
from vaelab import cli, comparison
from vaelab.config import ConfigError, resolve_config
from vaelab.data import DataError, DataWarning, cifar, load_dataset
from vaelab.storage import read_json, read_jsonl
from vaelab.runs import load_run
from vaelab.runs import CHECKPOINT, WEIGHTS, RunFolder

from tiny_runs import run, tiny_data, tiny_raw, trained  # noqa: F401  (fixtures)

SRC = Path(vaelab.__file__).resolve().parent


# ---------------------------------------------------------------- the source, searched

UNPICKLING_CALLS = {
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "cPickle.load",
    "cPickle.loads", "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "joblib.load",
    "shelve.open", "marshal.load", "marshal.loads", "pandas.read_pickle", "pd.read_pickle",
    "torch.jit.load", "torch.serialization.load", "numpy.lib.format.read_array", "np.lib.format.read_array",
}
UNPICKLING_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
# The one sanctioned use of the pickle machinery: a subclass that overrides find_class.
ALLOWED_UNPICKLER_SUBCLASSES = {("data/cifar.py", "CifarUnpickler")}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def unsafe_loading(source: str, where: str = "<source>") -> list[str]:
    """Every way `source` could unpickle: pickle-family calls, torch.load without
    weights_only=True, numpy loads with allow_pickle not False, unpickler subclasses."""
    findings = []
    tree = ast.parse(source)
    aliases = {}  # local name -> module it stands for ("np" -> "numpy", "load" -> "torch.load")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                aliases[a.asname or a.name] = full
                if node.module.split(".")[0] in UNPICKLING_MODULES and a.name in ("load", "loads", "Unpickler",
                                                                                  "open"):
                    findings.append(f"{where}:{node.lineno}: from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = _resolve(_dotted(base), aliases)
                if name.endswith("Unpickler") and (where, node.name) not in ALLOWED_UNPICKLER_SUBCLASSES:
                    findings.append(f"{where}:{node.lineno}: class {node.name}({name})")
        if not isinstance(node, ast.Call):
            continue
        name = _resolve(_dotted(node.func), aliases)
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        at = f"{where}:{node.lineno}: {name}(...)"
        if name in UNPICKLING_CALLS:
            findings.append(at)
        if name == "torch.load" and not _is_const(keywords.get("weights_only"), True):
            findings.append(f"{at} without weights_only=True")
        if name in ("numpy.load", "np.load") and not _is_const(keywords.get("allow_pickle", False), False):
            findings.append(f"{at} with allow_pickle not False")
        if "allow_pickle" in keywords and not _is_const(keywords["allow_pickle"], False):
            findings.append(f"{at} with allow_pickle={ast.unparse(keywords['allow_pickle'])}")
        if "weights_only" in keywords and not _is_const(keywords["weights_only"], True):
            findings.append(f"{at} with weights_only={ast.unparse(keywords['weights_only'])}")
    return findings


def _resolve(dotted: str, aliases: dict[str, str]) -> str:
    head, _, rest = dotted.partition(".")
    full = aliases.get(head, head)
    return f"{full}.{rest}" if rest else full


def _is_const(node: ast.AST | bool | None, value: bool) -> bool:
    if isinstance(node, bool):
        return node is value
    return isinstance(node, ast.Constant) and node.value is value


@pytest.mark.parametrize("snippet", [
    "import pickle\npickle.load(f)",
    "import pickle as p\np.loads(b)",
    "from pickle import loads\nloads(b)",
    "import torch\ntorch.load(path)",
    "import torch\ntorch.load(path, weights_only=False)",
    "from torch import load\nload(path)",
    "import numpy as np\nnp.load(path, allow_pickle=True)",
    "import numpy\nnumpy.load(path, allow_pickle=flag)",
    "import pickle\nclass Mine(pickle.Unpickler):\n    pass",
    "import joblib\njoblib.load(p)",
    "import numpy as np\nnp.lib.format.read_array(f, allow_pickle=True)",
])
def test_the_search_finds_each_way_to_unpickle(snippet):
    assert unsafe_loading(snippet), snippet  # the search itself can fail


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load(path, weights_only=True)",
    "import numpy as np\nnp.load(path)",
    "import numpy as np\nnp.load(path, allow_pickle=False)",
    "import json\njson.loads(text)",
])
def test_the_search_lets_safe_loading_be(snippet):
    assert unsafe_loading(snippet) == []


def test_vaelab_source_has_no_way_to_unpickle():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    findings = [f for path in files for f in unsafe_loading(path.read_text(), path.relative_to(SRC).as_posix())]
    assert findings == []
    text = "\n".join(path.read_text() for path in files)
    for needle in ("pickle.load", "allow_pickle=True", "weights_only=False", "torch.load("):
        assert needle not in text, needle


def test_the_cifar_unpickler_resolves_only_its_allowed_globals():
    assert cifar.CifarUnpickler.find_class is not pickle.Unpickler.find_class
    assert set(cifar.ALLOWED_GLOBALS) == {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
    for module, name in (("builtins", "open"), ("io", "open"), ("os", "system"), ("numpy", "load")):
        with pytest.raises(DataError, match=f"forbidden global {module}.{name}"):
            cifar.CifarUnpickler(io.BytesIO(b""), "s").find_class(module, name)


# ---------------------------------------------------------------- planted files

class Plant:
    """Unpickling this creates the file `marker` (plain pickle and torch.load(weights_only=False) would)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def torch_saved(obj) -> bytes:
    out = io.BytesIO()
    torch.save(obj, out)
    return out.getvalue()


PAYLOADS = {
    "pickle-2": lambda m: pickle.dumps(Plant(m), protocol=2),
    "pickle-0": lambda m: pickle.dumps(Plant(m), protocol=0),  # ASCII text: must fail as JSON too
    "pickle-5": lambda m: pickle.dumps({"model": Plant(m)}, protocol=5),
    "torch.save": lambda m: torch_saved({"state_dict": Plant(m)}),
}


@pytest.mark.parametrize("kind", PAYLOADS)
def test_the_planted_files_would_run_code_if_unpickled(tmp_path, kind):
    """The trap is live: the ordinary loaders run it; torch's weights_only=True does not."""
    marker = tmp_path / "ran"
    data = PAYLOADS[kind](marker)
    if kind == "torch.save":
        with pytest.raises(pickle.UnpicklingError):
            torch.load(io.BytesIO(data), weights_only=True)
        assert not marker.exists()
        torch.load(io.BytesIO(data), weights_only=False)
    else:
        pickle.loads(data)
    assert marker.exists()


def resume(run_dir: Path, capsys) -> tuple[int, str]:
    code = cli.main(["train", "--resume", str(run_dir)])
    return code, capsys.readouterr().err


def test_the_clean_run_loads_and_resumes(run, tiny_data, capsys):
    model = load_run(run)
    assert model.run_config.model.latent_dim == 2
    code, err = resume(run, capsys)
    assert code == 0, err


@pytest.mark.parametrize("kind", PAYLOADS)
def test_planted_weights_are_refused_and_nothing_runs(run, tmp_path, kind):
    marker = tmp_path / "ran"
    (run / WEIGHTS).write_bytes(PAYLOADS[kind](marker))
    with pytest.raises(ValueError, match=f"{run / WEIGHTS}: not a valid safetensors file"):
        load_run(run)
    assert not marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_planted_checkpoint_is_refused_by_load_run_and_resume(run, tmp_path, tiny_data, capsys, kind):
    marker = tmp_path / "ran"
    (run / WEIGHTS).unlink()  # load_run falls back to the checkpoint's best weights
    (run / CHECKPOINT).write_bytes(PAYLOADS[kind](marker))
    with pytest.raises(ValueError, match=f"{run / CHECKPOINT}: not a valid safetensors file"):
        load_run(run)
    code, err = resume(run, capsys)
    assert code == 2 and f"{run / CHECKPOINT}: not a valid safetensors file" in err
    assert not marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_planted_config_is_refused_by_load_run_and_resume(run, tmp_path, tiny_data, capsys, kind):
    marker = tmp_path / "ran"
    (run / "config.json").write_bytes(PAYLOADS[kind](marker))
    for load in (load_run, lambda path: RunFolder(path).config()):
        with pytest.raises((ValueError, ConfigError), match=f"{run / 'config.json'}: "):
            load(run)
    code, err = resume(run, capsys)
    assert code == 2 and f"{run / 'config.json'}: " in err
    assert not marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_planted_config_file_for_train_is_refused(tmp_path, kind):
    marker = tmp_path / "ran"
    for name in ("c.toml", "c.json"):
        (tmp_path / name).write_bytes(PAYLOADS[kind](marker))
        with pytest.raises(ConfigError, match=f"{tmp_path / name}: "):
            resolve_config(config_file=tmp_path / name)
    assert not marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_planted_metrics_are_refused(run, tmp_path, kind):
    marker = tmp_path / "ran"
    (run / "metrics.jsonl").write_bytes(PAYLOADS[kind](marker))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a one-line text pickle reads as a torn last line
        try:
            records = read_jsonl(run / "metrics.jsonl")
        except ValueError as err:
            assert f"{run / 'metrics.jsonl'}: " in str(err)
        else:
            assert records == []  # nothing from the file was taken as a record
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle-2", "torch.save"])
def test_planted_metrics_stop_a_resume_and_nothing_runs(run, tmp_path, tiny_data, capsys, kind):
    marker = tmp_path / "ran"
    (run / "metrics.jsonl").write_bytes(PAYLOADS[kind](marker))
    code, err = resume(run, capsys)
    assert code == 2 and "error:" in err
    assert not marker.exists()


def test_planted_metrics_stop_a_resume_with_an_error_naming_the_file(run, tmp_path, tiny_data, capsys):
    (run / "metrics.jsonl").write_bytes(PAYLOADS["pickle-2"](tmp_path / "ran"))
    code, err = resume(run, capsys)
    assert code == 2 and f"{run / 'metrics.jsonl'}" in err


@pytest.mark.parametrize("kind", PAYLOADS)
def test_planted_evaluation_and_summary_are_refused(run, tmp_path, kind):
    from vaelab.figures import current_kl
    marker = tmp_path / "ran"
    evaluation = run / "eval-test-k5000.json"
    evaluation.write_bytes(PAYLOADS[kind](marker))
    with pytest.raises(ValueError, match=f"{evaluation}: not valid JSON"):
        read_json(evaluation)
    with pytest.warns(UserWarning, match=f"{evaluation}: skipped"):
        assert RunFolder(run).current_evaluation() is None
    with pytest.warns(UserWarning, match=f"{evaluation}: skipped"):
        assert current_kl(RunFolder(run), RunFolder(run).fingerprint()) == (None, "")
    evaluation.unlink()
    (run / "summary.json").write_bytes(PAYLOADS[kind](marker))
    with pytest.raises(ValueError, match=f"{run / 'summary.json'}: not valid JSON"):
        comparison.compare_runs([run])
    assert not marker.exists()


@pytest.fixture
def no_other_sources(monkeypatch):
    monkeypatch.delenv("VAELAB_DATA", raising=False)


@pytest.mark.parametrize("kind", PAYLOADS)
@pytest.mark.parametrize("name", ["mnist.npz", "anything.npz"])
def test_planted_npz_in_a_data_dir_is_refused(tmp_path, no_other_sources, kind, name):
    marker = tmp_path / "ran"
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / name).write_bytes(PAYLOADS[kind](marker))
    # a torch.save file is a zip too: one without the four arrays
    with pytest.raises(DataError, match=f"data-dir {folder}: {folder / name}: (unreadable npz|npz lacks)"):
        load_dataset("mnist", folder, cache_dir=tmp_path / "cache", progress=False)
    assert not marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_planted_cache_file_is_refused_dropped_and_nothing_runs(tmp_path, no_other_sources, kind):
    marker = tmp_path / "ran"
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mnist.npz").write_bytes(PAYLOADS[kind](marker))
    fault = f"cache {cache / 'mnist.npz'}: (unreadable npz|npz lacks)"
    with pytest.warns(DataWarning, match=fault), pytest.raises(DataError, match=fault):
        load_dataset("mnist", cache_dir=cache, mirrors=[], use_pypi=False, progress=False)
    assert not (cache / "mnist.npz").exists()  # a bad cache file is removed
    assert not marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_planted_cifar_batches_and_idx_files_are_refused(tmp_path, no_other_sources, kind):
    marker = tmp_path / "ran"
    folder = tmp_path / "cifar"
    folder.mkdir()
    for name in cifar.BATCHES:
        (folder / name).write_bytes(PAYLOADS[kind](marker))
    with pytest.raises(DataError, match=f"{folder / 'data_batch_1'}: "):
        load_dataset("cifar10", folder, cache_dir=tmp_path / "cache", progress=False)
    idx = tmp_path / "idx"
    idx.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (idx / name).write_bytes(PAYLOADS[kind](marker))
    with pytest.raises(DataError, match=f"{idx / 'train-images-idx3-ubyte'}: "):
        load_dataset("mnist", idx, cache_dir=tmp_path / "cache", progress=False)
    assert not marker.exists()
