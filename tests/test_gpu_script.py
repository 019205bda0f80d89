"""benchmarks/gpu.sh: its dry run on the CPU leaves the JSON a lent GPU's run would, and a run
whose every section fails still leaves a JSON saying so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"
# a dry run selects every section, the long presets' too
SECTIONS = {"env", "speed_eager", "speed_compiled", "preset_train", "preset_eval", "nll_speed",
            "burda_train", "burda_eval", "vampprior_train", "vampprior_eval", "vampprior10_train", "vampprior10_eval"}

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="gpu.sh needs bash and coreutils' timeout")


def _run(out: Path, **env: str) -> subprocess.CompletedProcess:
    environ = os.environ | {"OUT": str(out), "PYTHONPATH": str(ROOT / "src"), "PYTHON": sys.executable} | env
    return subprocess.run(["bash", str(SCRIPT), "--dry-run"], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=600)


def test_every_section_failing_still_writes_the_json(tmp_path):
    """No Python that runs (`false` in its place): each section fails, the shell writes the JSON itself."""
    done = _run(tmp_path, PYTHON="false")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["summary_failed"] is True and result["dry_run"] is True
    assert set(result["sections"]) == SECTIONS
    assert result["sections"]["speed_eager"]["rc"] == "1"
    assert result["sections"]["preset_eval"]["rc"] == "skipped"  # no run was trained to score
    assert result["sections"]["burda_eval"]["rc"] == "skipped"


def test_gpu_sections_picks_the_sections_and_refuses_an_unknown_one(tmp_path):
    done = _run(tmp_path, PYTHON="false", GPU_SECTIONS="env vampprior")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert set(result["sections"]) == {"env", "vampprior_train", "vampprior_eval"}
    done = _run(tmp_path, GPU_SECTIONS="env burd")
    assert done.returncode == 2 and "unknown section burd" in done.stderr


@pytest.mark.slow
def test_dry_run_writes_every_number(tmp_path, mnist_dir):
    """The whole script on tiny sizes on the CPU (about 1 min on 2 free cores, 2 min on busy ones)."""
    done = _run(tmp_path / "out", VAELAB_DATA=str(mnist_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert result["dry_run"] is True and "summary_failed" not in result
    statuses = {name: section["status"] for name, section in result["sections"].items()}
    # the preset's training is stopped by the clock by design; everything else ends by itself
    assert statuses == {**{name: "ok" for name in SECTIONS}, "preset_train": "timed out"}, done.stdout
    assert result["environment"]["mnist"]["source"].startswith("$VAELAB_DATA")
    for name in ("eager", "compiled"):
        speed = result["train_speed"][name]
        assert speed["device"] == "cpu" and speed["train_images"] == 1024
        assert speed["seconds_per_epoch"]["example"] > 0 and speed["best"]["seconds_per_epoch"] > 0
    assert result["train_speed"]["compiled"]["compile_mode"] == "reduce-overhead"
    assert result["train_speed"]["goal"]["met"] is None  # no verdict on a GPU goal from a CPU
    preset = result["preset"]
    assert preset["preset"] == "mnist-iwae" and preset["epochs_completed"] >= 1
    assert preset["test"]["n"] == 200 and preset["test"]["k"] == 10 and preset["test"]["nll"] > 0
    assert result["nll_throughput"]["preset_evaluation"]["images_per_s"] > 0
    nll = result["nll_throughput"]["loop_vs_batched"]
    assert nll["images"] == 4 and nll["samples"] == 50 and nll["speedup"] > 0
    fast, plain = nll["nll"]["fast"], nll["nll"]["plain"]  # the fast scoring against torch's plain formulas
    assert abs(fast["nll"] - plain["nll"]) < 5 * plain["stderr"] + 5
    assert result["selected"] == ["env", "speed_eager", "speed_compiled", "preset", "burda", "vampprior", "vampprior10"]
    for name, preset_name in (("burda", "mnist-burda-vae"), ("vampprior", "mnist-vampprior"),
                              ("vampprior10", "mnist-vampprior-10min")):
        long = result["long_presets"][name]  # trained through its own time budget, which ended it
        assert long["preset"] == preset_name and long["finished"] and long["epochs_run"] >= 1, long
        assert long["stop_reason"].startswith("time budget of") and 5 <= long["train_seconds_budget"] <= 6
        assert long["test"]["n"] == 200 and long["test"]["k"] == 10 and long["test"]["nll"] > 0


def test_the_summary_reads_a_preset_run_with_epochs_left_unvalidated(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "benchmarks" / "gpu_summary.py")
    gpu_summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_summary)
    run = tmp_path / "runs" / "preset"
    run.mkdir(parents=True)
    records = [{"epoch": 1, "step": 10, "seconds": 1.0, "val_elbo": -120.0}, {"epoch": 2, "step": 20, "seconds": 1.0},
               {"epoch": 3, "step": 30, "seconds": 1.0, "val_elbo": -110.0}, {"epoch": 4, "step": 40, "seconds": 1.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    found = gpu_summary.preset(tmp_path)
    assert (found["epochs_completed"], found["steps"]) == (4, 40)
    assert found["last_val_elbo"] == found["best_val_elbo"] == -110.0
