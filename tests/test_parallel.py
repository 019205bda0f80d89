"""Data-parallel training under torchrun: two CPU processes on loopback (gloo)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaelab.parallel import Parallel

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
CONFIG = ["--set", "train.train_subset=2000", "--set", "train.max_steps=120", "--set", "train.epochs=10"]


def test_shards_cover_every_item_once():
    for n in (7, 8, 100):
        for world in (1, 2, 3):
            covered = [i for r in range(world) for i in range(n)[Parallel(r, world).shard(n)]]
            assert covered == list(range(n))


def _env():
    return dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, mnist_dir):
    two = subprocess.run([*TORCHRUN, "-m", "vaelab", "train", *CONFIG, "--data-dir", str(mnist_dir),
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, env=_env(), timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "vaelab", "train", *CONFIG, "--data-dir", str(mnist_dir),
                          "--out", str(tmp_path / "one")], capture_output=True, text=True, env=_env(), timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = _summary(tmp_path / "one"), _summary(tmp_path / "two")
    assert b["processes"] == 2 and a["processes"] == 1 and a["steps"] == b["steps"] == 120
    # The two runs see the same batches but draw other binarization and z noise; after 120
    # steps the test ELBO of different noise streams spreads by a few nats (-190 give or take 3).
    assert abs(a["test_elbo"] - b["test_elbo"]) < 6, (a["test_elbo"], b["test_elbo"])
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 9))  # rank 0 alone wrote
    assert two.stdout.count("vaelab train: preset") == 1


@pytest.mark.slow
def test_a_rank_that_dies_stops_the_others(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    config = ["--set", "train.train_subset=2000", "--set", "train.epochs=1000"]
    proc = subprocess.Popen([*TORCHRUN, "-m", "vaelab", "train", *config, "--data-dir", str(mnist_dir),
                             "--out", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(_env(), VAELAB_DIST_TIMEOUT="30"), start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (run_dir / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.5)
        assert (run_dir / "metrics.jsonl").exists(), "training never started"
        victim = _worker_with_rank(proc.pid, 1)
        os.kill(victim, signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)  # stops instead of hanging
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "rank" in output and ("Signals.SIGKILL" in output or "exitcode" in output or "stopping too" in output)


def _worker_with_rank(parent: int, rank: int) -> int:
    """The pid of the torchrun worker whose environment says RANK=rank."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(child)
    raise AssertionError(f"no worker with RANK={rank} under pid {parent}")


def test_sum_gradients_is_a_no_op_in_one_process():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    Parallel().sum_gradients([p])
    assert torch.equal(p.grad, torch.full((3,), 2.0))
