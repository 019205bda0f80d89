"""A run killed with SIGKILL at random moments, 20 times, and resumed each time, ends bit for bit
where the same run never interrupted ends (with the thread count the killed run decided when it
started, train.threads = "start", and kept through every resume)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from vaelab.storage import load_tensors, read_jsonl

KILLS = 20
CONFIG = ["--set", "train.train_subset=5000", "--set", "train.batch_size=50", "--set", "train.epochs=40",
          "--set", "model.encoder_hidden=[64]", "--set", "model.decoder_hidden=[64]",
          "--set", "train.checkpoint_every=7", "--set", "train.eval_batch_size=2000"]


def vaelab(*args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "vaelab", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


@pytest.mark.slow
def test_twenty_kills_and_resumes_end_bit_for_bit_like_an_uninterrupted_run(tmp_path, mnist_dir):
    run = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    first = True
    while kills < KILLS:
        args = ["train", *CONFIG, "--out", str(run)] if first else ["train", "--resume", str(run)]
        proc = vaelab(*args, "--data-dir", str(mnist_dir))
        if rng.random() < 0.2:  # sometimes while it starts: loading data, writing config.json
            time.sleep(rng.uniform(0.0, 2.5))
        else:  # mostly while it trains: its lock file appears when the loop starts
            _wait_for_lock(run / ".lock", proc)
            time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is not None:  # finished before the kill came: nothing more to interrupt
            assert proc.returncode == 0, proc.stderr.read()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        first = first and not (run / "config.json").exists()
    if kills == KILLS or proc.returncode != 0:
        final = vaelab("train", "--resume", str(run), "--data-dir", str(mnist_dir))
        assert final.wait(timeout=600) == 0, final.stderr.read()
    print(f"{kills} kills survived")
    assert kills == KILLS, f"the run finished after only {kills} kills; make it longer"

    # The uninterrupted run, with the count the killed one decided at its start and kept (the load
    # now may differ; the last bits depend on the count).
    threads = json.loads((run / "summary.json").read_text())["threads"]
    reference = tmp_path / "reference"
    done = vaelab("train", *CONFIG, "--set", f"train.threads={threads}", "--data-dir", str(mnist_dir),
                  "--out", str(reference))
    assert done.wait(timeout=600) == 0, done.stderr.read()

    expected, _ = load_tensors(reference / "model.safetensors")
    got, _ = load_tensors(run / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(read_jsonl(run / "metrics.jsonl")) == strip(read_jsonl(reference / "metrics.jsonl"))
    assert not (run / ".lock").exists()


def _wait_for_lock(lock, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if lock.read_text().split()[:1] == [str(proc.pid)]:
                return
        except FileNotFoundError:  # not made yet, or removed between a look and the read as a run ends
            pass
        time.sleep(0.02)
