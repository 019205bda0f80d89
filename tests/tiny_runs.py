"""A finished tiny run folder, shared by the tests that plant or edit files in one.

Import the fixtures into a test module: `from tiny_runs import run, tiny_data, trained`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vaelab.config import resolve_config
from vaelab.data.views import make_views
from vaelab.runs import CHECKPOINT, WEIGHTS, RunFolder
from vaelab.training import Trainer


def tiny_raw():
    from conftest import make_tiny_raw
    return make_tiny_raw(n_train=300, n_test=60)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run folder (one epoch)."""
    config = resolve_config(overrides=["data.val_size=100", "train.batch_size=50", "train.epochs=1",
                                       "model.encoder_hidden=[16]", "model.decoder_hidden=[16]",
                                       "train.eval_batch_size=100"])
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    RunFolder(run_dir).create(config)
    Trainer(config, run_dir, make_views(tiny_raw(), config.data), progress=False, log=lambda *a: None).fit()
    for name in ("config.json", CHECKPOINT, WEIGHTS, "metrics.jsonl", "summary.json"):
        assert (run_dir / name).is_file(), name
    return run_dir


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A private copy of the trained run, to plant files in."""
    return Path(shutil.copytree(trained, tmp_path / "run", ignore=shutil.ignore_patterns(".lock")))


@pytest.fixture
def tiny_data(monkeypatch):
    """`vaelab train --resume` loads the tiny data set instead of MNIST."""
    import vaelab.data.load
    raw = tiny_raw()
    monkeypatch.setattr(vaelab.data.load, "load_dataset", lambda *args, **kwargs: raw)
    return raw
