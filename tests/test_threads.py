"""torch's thread count follows the free cores: quota, affinity and load read from fake files and
fake clocks, the decision's table of cases, the count decided when a run starts and kept when it
resumes, training and evaluation calling the adapter, a run's numbers whatever the thread count,
and the CPUs split among workers."""

from __future__ import annotations

import tempfile

import pytest
import torch

from vaelab import threads
from vaelab.config import resolve_config
from vaelab.data.views import make_views
from vaelab.evaluate import evaluate_images
from vaelab.threads import (
    CpuTimes,
    ThreadAdapter,
    affinity_cpus,
    decide,
    others_busy,
    parse_cfs,
    parse_cpu_max,
    parse_proc_stat,
    quota_cpus,
    split_cpus,
)
from vaelab.storage import load_tensors
from vaelab.training import Trainer

from tiny_runs import tiny_raw


@pytest.fixture(autouse=True)
def keep_threads(monkeypatch):
    """Each test starts from torch's count as vaelab knows it, with no OMP_NUM_THREADS, and leaves it so."""
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_expected", before)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- cgroup quotas

@pytest.mark.parametrize("text, cpus", [
    ("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000", 1.5), ("50000 100000", 0.5),
    ("", None), ("garbage", None), ("0 100000", None), ("100000 0", None), ("x 100000", None),
])
def test_cgroup_v2_cpu_max(text, cpus):
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize("quota, period, cpus", [
    ("-1\n", "100000\n", None), ("300000\n", "100000\n", 3.0), ("25000", "100000", 0.25), ("", "100000", None),
])
def test_cgroup_v1_cfs(quota, period, cpus):
    assert parse_cfs(quota, period) == cpus


def test_v2_quota_is_the_tightest_of_the_cgroup_and_its_ancestors(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "user.slice").mkdir()
    (tmp_path / "user.slice" / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "user.slice" / "job").mkdir()
    (tmp_path / "user.slice" / "job" / "cpu.max").write_text("max 100000\n")
    assert quota_cpus(tmp_path, "0::/user.slice/job\n") == 3.0
    assert quota_cpus(tmp_path, "0::/\n") is None
    assert quota_cpus(tmp_path, "0::/elsewhere/not/mounted\n") is None  # a container: only its own root


def test_v1_quota_under_the_cpu_controller(tmp_path):
    for mount in ("cpu,cpuacct", "memory"):
        (tmp_path / mount / "docker").mkdir(parents=True)
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu,cpuacct" / "docker" / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu,cpuacct" / "docker" / "cpu.cfs_period_us").write_text("100000\n")
    proc = "4:memory:/other\n3:cpu,cpuacct:/docker\n0::/\n"
    assert quota_cpus(tmp_path, proc) == 1.5
    assert quota_cpus(tmp_path, "3:cpu,cpuacct:/\n") is None
    assert quota_cpus(tmp_path / "none", "") is None  # no cgroup file system at all


# ---------------------------------------------------------------- the others' load

STAT = """cpu  900 0 100 800 100 0 0 0 0 0
cpu0 400 0 50 500 50 0 0 0 0 0
cpu1 500 0 50 300 50 0 0 0 7 7
cpu2 0 0 0 1000 0 0 0 0 0 0
intr 12345
ctxt 678
"""


def test_proc_stat_sums_only_the_cpus_this_process_may_use():
    assert parse_proc_stat(STAT, {0, 1}) == CpuTimes(busy=1000, total=1900)  # guest is already in user
    assert parse_proc_stat(STAT, {2}) == CpuTimes(busy=0, total=1000)
    assert parse_proc_stat(STAT, {5}) is None
    assert parse_proc_stat("", {0}) is None
    assert parse_proc_stat("cpu0 1 2 3 4\n", {0}) == CpuTimes(busy=6, total=10)  # an old kernel's four columns


@pytest.mark.parametrize("busy_share, own, others", [
    (1.0, 1.0, 1.0),  # two cores busy, one of them ours: one busy with others
    (1.0, 2.0, 0.0),  # both ours
    (0.5, 1.0, 0.0),
    (0.75, 0.5, 1.0),
    (0.1, 0.5, 0.0),  # own time counted a tick late: never below nothing
])
def test_others_busy_is_all_busy_time_less_our_own(busy_share, own, others):
    before, after = CpuTimes(0, 0), CpuTimes(int(busy_share * 1000), 1000)  # 2 CPUs, 5 s at 100 ticks/s
    assert others_busy(before, after, 2, own * 5.0, 5.0) == pytest.approx(others)


def test_others_busy_over_no_time_is_nothing():
    assert others_busy(CpuTimes(5, 10), CpuTimes(5, 10), 2, 0.0, 0.0) == 0.0


# ---------------------------------------------------------------- the decision

@pytest.mark.parametrize("cpus, quota, others, threads_", [
    (2, None, 0.0, 2),  # an idle machine: every core
    (2, None, 0.2, 2),  # background noise leaves a core free
    (2, None, 1.0, 1),  # one core busy: one thread
    (2, None, 0.6, 1),  # a core more than half busy is not free
    (2, None, 2.5, 1),  # oversubscribed: still one
    (8, None, 3.0, 5),
    (8, 2.0, 0.0, 2),  # a quota of two CPUs on eight
    (8, 1.5, 0.0, 1),  # a thread beyond the quota is throttled
    (8, 4.0, 6.0, 2),  # the quota and the others' load: the tighter
    (1, None, 0.0, 1),
    (4, 0.5, 0.0, 1),
])
def test_decide(cpus, quota, others, threads_):
    assert decide(cpus, quota, others) == threads_


# ---------------------------------------------------------------- the adapter

class FakeMachine:
    """Two CPUs whose busy ticks and clocks the test advances: `others` CPUs busy besides this process's `own`."""

    def __init__(self):
        self.wall, self.own, self.busy, self.total, self.reads = 0.0, 0.0, 0, 0, 0

    def run(self, seconds: float, others: float, own: float) -> None:
        self.wall += seconds
        self.own += own * seconds
        self.busy += round((others + own) * seconds * 100)
        self.total += round(2 * seconds * 100)

    def stat(self) -> str:
        self.reads += 1
        return f"cpu0 {self.busy // 2} 0 0 {self.total // 2 - self.busy // 2} 0\n" \
               f"cpu1 {self.busy - self.busy // 2} 0 0 {self.total - self.total // 2 - self.busy + self.busy // 2} 0\n"

    def adapter(self, setting="auto", others: float = 0.0, quota: float | None = None) -> ThreadAdapter:
        """An adapter on this machine; its start-time window ("start") passes with `others` CPUs busy
        besides this process's busy wait."""
        return ThreadAdapter(setting, clock=lambda: self.wall, cpu_clock=lambda: self.own, read_stat=self.stat,
                             cpus={0, 1}, quota=quota, wait=lambda s: self.run(s, others=others, own=1.0))


def test_adapter_follows_the_others_load_rate_limited(monkeypatch):
    monkeypatch.setattr(threads.time, "sleep", lambda s: machine.run(s, others=0.0, own=0.0))
    machine = FakeMachine()
    adapter = machine.adapter()
    torch.set_num_threads(2)
    threads._expected = 2
    with adapter.active():
        assert adapter.adapting and torch.get_num_threads() == 2 and adapter.decisions == 1
        machine.run(1.0, others=1.0, own=1.0)
        adapter.tick()  # before INTERVAL: no read, no change
        assert torch.get_num_threads() == 2 and machine.reads == 2
        machine.run(2.5, others=1.0, own=1.0)
        adapter.tick()
        assert torch.get_num_threads() == 1 and adapter.decisions == 2
        machine.run(threads.INTERVAL, others=0.0, own=1.0)  # the other process has stopped
        adapter.tick()
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2


def test_set_num_threads_only_when_the_count_changes(monkeypatch):
    calls = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), real(n)))
    monkeypatch.setattr(threads.time, "sleep", lambda s: machine.run(s, others=1.0, own=1.0))
    machine = FakeMachine()
    real(2)
    threads._expected = 2
    adapter = machine.adapter()
    with adapter.active():
        for _ in range(10):
            machine.run(threads.INTERVAL, others=1.0, own=1.0)
            adapter.tick()
    assert adapter.decisions == 11 and calls == [1, 2]  # once down, once back when done


def test_a_pinned_count_and_the_users_own_count_are_kept(monkeypatch):
    monkeypatch.setattr(threads.time, "sleep", lambda s: machine.run(s, others=2.0, own=0.0))
    machine = FakeMachine()
    torch.set_num_threads(2)
    threads._expected = 2
    with machine.adapter(2).active() as adapter:
        assert torch.get_num_threads() == 2 and not adapter.adapting
    torch.set_num_threads(1)  # the user's choice, behind vaelab's back
    with machine.adapter().active() as adapter:
        machine.run(10.0, others=0.0, own=1.0)
        adapter.tick()
        assert not adapter.adapting and torch.get_num_threads() == 1 and machine.reads == 0
    torch.set_num_threads(2)
    threads._expected = 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    with machine.adapter().active() as adapter:
        assert not adapter.adapting and torch.get_num_threads() == 2


def test_no_proc_stat_gives_the_usable_cpus(monkeypatch):
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    adapter = ThreadAdapter("auto", read_stat=lambda: None, cpus={0, 1}, quota=1.0)
    with adapter.active():
        assert torch.get_num_threads() == 1


# ---------------------------------------------------------------- "start": decided once, before the first step

@pytest.mark.parametrize("others, quota, threads_", [
    (0.0, None, 2),  # an idle machine: both cores
    (0.2, None, 2),  # background noise
    (1.0, None, 1),  # a busy loop, or a training that started together (busy loading, or measuring too)
    (0.6, None, 1),
    (2.0, None, 1),  # a two-thread training beside it
    (0.0, 1.0, 1),  # a quota of one CPU: no window needed
])
def test_start_decides_once_from_the_window_before_training(others, quota, threads_):
    machine = FakeMachine()
    machine.run(50.0, others=2.0, own=0.0)  # what came before the window does not count
    torch.set_num_threads(2)
    threads._expected = 2
    adapter = machine.adapter("start", others=others, quota=quota)
    with adapter.active():
        assert torch.get_num_threads() == adapter.count == threads_
        assert not adapter.adapting and adapter.decisions == 1
        assert machine.reads == (0 if quota else 2)
        machine.run(threads.INTERVAL * 5, others=2.0 - others, own=1.0)  # the load changes: the count does not
        adapter.tick()
        assert torch.get_num_threads() == threads_ and machine.reads == (0 if quota else 2)
    assert torch.get_num_threads() == 2
    assert machine.wall == pytest.approx(50.0 + 5 * threads.INTERVAL + (0 if quota else threads.START_WINDOW))


def test_start_on_one_cpu_or_without_proc_stat():
    waits = []
    one = ThreadAdapter("start", read_stat=lambda: pytest.fail("no window on one CPU"), cpus={3}, quota=None,
                        wait=waits.append)
    with one.active():
        assert torch.get_num_threads() == 1
    blind = ThreadAdapter("start", read_stat=lambda: None, cpus={0, 1}, quota=None, wait=waits.append)
    with blind.active():
        assert torch.get_num_threads() == 2  # not Linux: the usable CPUs
    assert waits == []


def test_a_recorded_count_is_kept_whatever_the_load():
    machine = FakeMachine()
    for recorded, others in ((2, 2.0), (1, 0.0)):
        adapter = machine.adapter("start", others=others)
        adapter.recorded = recorded
        with adapter.active():
            assert torch.get_num_threads() == adapter.count == recorded and adapter.decisions == 0
            assert "decided when the run started" in adapter.reason
    assert machine.reads == 0


def test_under_start_the_users_own_count_wins(monkeypatch):
    machine = FakeMachine()
    torch.set_num_threads(2)
    threads._expected = 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    adapter = machine.adapter("start", others=2.0)
    adapter.recorded = 1
    with adapter.active():
        assert torch.get_num_threads() == adapter.count == 2 and "OMP_NUM_THREADS" in adapter.reason
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(1)  # behind vaelab's back
    with machine.adapter("start", others=0.0).active() as adapter:
        assert torch.get_num_threads() == adapter.count == 1 and "set_num_threads" in adapter.reason
    assert torch.get_num_threads() == 1 and machine.reads == 0


def start_trainer(run_dir, machine, others, *overrides):
    """A tiny trainer whose "start" decision reads `machine`, the window passing with `others` busy."""
    lines = []
    trainer = tiny_trainer(run_dir, "train.precision=float32", *overrides)
    trainer.log = lines.append
    trainer.threads = machine.adapter(trainer.config.train.threads, others=others)
    return trainer, lines


def test_the_count_decided_at_the_start_is_recorded_and_kept_on_resume(tmp_path):
    torch.set_num_threads(1)
    threads._expected = 1
    machine = FakeMachine()
    whole, _ = start_trainer(tmp_path / "whole", machine, 0.0, "train.epochs=3")
    assert whole.fit()["threads"] == 2  # an idle machine: 2 threads (and torch's 1 is put back)
    assert torch.get_num_threads() == 1

    first, lines = start_trainer(tmp_path / "run", machine, 0.0, "train.epochs=1")
    summary = first.fit()
    assert summary["threads"] == first.state.threads == 2
    assert any(line.startswith("CPU threads: 2 (") for line in lines), lines
    _, meta = load_tensors(tmp_path / "run" / "checkpoint.safetensors")
    assert '"threads": 2' in meta["state"]

    resumed, lines = start_trainer(tmp_path / "run", machine, 2.0, "train.epochs=3")  # now both cores are busy
    resumed.load_checkpoint()
    resumed.reopen()
    assert resumed.fit()["threads"] == 2 and resumed.threads.decisions == 0
    assert any("CPU threads: 2 (" in line and "decided when the run started" in line for line in lines), lines
    expected, _ = load_tensors(tmp_path / "whole" / "model.safetensors")
    got, _ = load_tensors(tmp_path / "run" / "model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)

    pinned, lines = start_trainer(tmp_path / "run", machine, 0.0, "train.epochs=4", "train.threads=1")
    pinned.load_checkpoint()  # the user's count on resume wins over the recorded one
    pinned.reopen()
    assert pinned.fit()["threads"] == 1 and any("CPU threads: 1 (train.threads = 1)" in line for line in lines)


def test_a_checkpoint_without_a_count_decides_again(tmp_path):
    from vaelab.training.checkpoint import TrainState
    assert TrainState.from_json('{"best_val_elbo": null}').threads == 0  # written before counts were kept
    adapter = FakeMachine().adapter("start", others=1.0)
    adapter.recorded = 0
    with adapter.active():
        assert adapter.count == 1 and adapter.decisions == 1


# ---------------------------------------------------------------- workers on one machine

@pytest.mark.parametrize("n, cpus, quota, shares", [
    (1, {0, 1}, None, [{0, 1}]),
    (2, {0, 1}, None, [{0}, {1}]),
    (2, {0, 1, 2, 3, 4}, None, [{0, 1, 2}, {3, 4}]),
    (3, {2, 5, 7, 9}, None, [{2, 5}, {7}, {9}]),  # the affinity mask's own CPUs, in order
    (2, set(range(8)), 2.5, [{0}, {1}]),  # a quota of 2.5 CPUs on 8: two CPUs' worth
    (1, set(range(8)), 0.5, [{0}]),
    (3, {0, 1}, None, [{0}, {1}, {0}]),  # more workers than CPUs: shared round-robin
])
def test_split_cpus(n, cpus, quota, shares):
    assert split_cpus(n, cpus, quota) == shares


def test_split_cpus_of_this_process():
    mine = affinity_cpus()
    shares = split_cpus(2)
    assert len(shares) == 2 and all(shares) and set().union(*shares) <= mine
    if len(mine) >= 2 and quota_cpus() is None:
        assert not shares[0] & shares[1] and set().union(*shares) == mine
    with pytest.raises(ValueError, match="n must be >= 1"):
        split_cpus(0)


# ---------------------------------------------------------------- training and evaluation call it

class CountingAdapter(ThreadAdapter):
    def __init__(self, setting):
        super().__init__(setting, read_stat=lambda: None, cpus={0}, quota=None)
        self.ticks, self.started = 0, 0

    def start(self):
        self.started += 1
        super().start()

    def tick(self):
        self.ticks += 1


def tiny_trainer(run_dir, *overrides):
    config = resolve_config(overrides=["data.val_size=100", "train.batch_size=50", "train.epochs=2",
                                       "model.encoder_hidden=[16]", "model.decoder_hidden=[16]",
                                       "train.eval_batch_size=50", *overrides])
    return Trainer(config, run_dir, make_views(tiny_raw(), config.data), progress=False, log=lambda *a: None)


def test_training_ticks_the_adapter_every_step_and_every_validation_batch(tmp_path):
    trainer = tiny_trainer(tmp_path / "run", "train.threads=1")
    trainer.threads = CountingAdapter(1)
    trainer.fit()
    steps, val_batches, test_batches = 2 * 4, 2 * 2, 60 // 50 + 1  # 200 training images, 100 val, 60 test
    assert trainer.threads.started == 1 and trainer.threads.ticks == steps + val_batches + test_batches


def test_evaluation_ticks_between_chunks(tmp_path):
    trainer = tiny_trainer(tmp_path / "run", "train.epochs=1", "train.threads=1")
    trainer.fit()
    adapter = CountingAdapter(1)
    result = evaluate_images(trainer.model, trainer.data.test, k=50, memory_mb=0.05, threads=adapter)
    assert adapter.started == 1 and adapter.ticks > 1 and result["n"] == 60


def summary_with(run_dir, count):
    summary = tiny_trainer(run_dir, f"train.threads={count}", "train.precision=float32").fit()
    return {k: v for k, v in summary.items() if k in ("test_elbo", "best_val_elbo", "test_kl")}


def test_the_numbers_do_not_depend_on_the_thread_count():
    """Not bit for bit: torch splits reductions and products by thread, so the last bits may differ."""
    with tempfile.TemporaryDirectory() as folder:
        one, two = summary_with(f"{folder}/one", 1), summary_with(f"{folder}/two", 2)
    assert one.keys() == two.keys() == {"test_elbo", "best_val_elbo", "test_kl"}
    for key in one:
        assert one[key] == pytest.approx(two[key], rel=1e-5, abs=1e-4), key
