"""benchmarks/disentanglement_seeds.py: over run folders it already finds trained and scored, it trains
nothing and prints the per-run table and each preset's mean and spread, from the runs' own files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import vaelab

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "disentanglement_seeds.py"
SMALL = ['data.factor_levels=[3, 2, 4, 4, 4]', "model.encoder_hidden=[16]", "model.decoder_hidden=[16]",
         "train.epochs=1", "train.batch_size=64", "train.threads=1", "figures.names=[]", "evaluate.samples=2",
         "evaluate.disentanglement=200"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of the two presets, each trained one epoch on a sub-grid and scored on 200 samples."""
    folder = tmp_path_factory.mktemp("seeds")
    for preset in ("dsprites-btcvae", "dsprites-betavae"):
        for seed in (0, 1):
            vaelab.train(preset=preset, out=folder / f"{preset}-seed{seed}", log=lambda line: None,
                         overrides=[*SMALL, f"train.seed={seed}"])
    return folder


def test_the_tables_come_from_the_runs_files_and_nothing_is_trained_again(runs, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    out = tmp_path / "table.md"
    done = subprocess.run([sys.executable, str(SCRIPT), "--seeds", "0,1", "--runs", str(runs), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()} == before  # read, not redone
    rows = [line for line in out.read_text().splitlines() if line.startswith("| `dsprites-")]
    assert len(rows) == 4
    for line in rows:
        preset, seed = line.split("|")[1].strip(" `"), int(line.split("|")[2])
        summary = json.loads((runs / f"{preset}-seed{seed}" / "summary.json").read_text())
        scores = json.loads((runs / f"{preset}-seed{seed}" / "disentanglement-n200.json").read_text())
        assert f"`{summary['weights_sha256'][:16]}`" in line and f"{summary['steps']:,}" in line
        assert f"| {scores['mig']['score']:.3f} |" in line and "(K = 2)" in line
    means = [line for line in out.read_text().splitlines() if line.startswith("| dsprites-")]
    assert [line.split("|")[1].strip() for line in means] == ["dsprites-btcvae", "dsprites-betavae"]
    migs = [json.loads((runs / f"dsprites-btcvae-seed{s}" / "disentanglement-n200.json").read_text())["mig"]["score"]
            for s in (0, 1)]
    assert f"{sum(migs) / 2:.3f} ± " in means[0]
