"""How many threads torch computes with on a CPU: as many cores as are free when a run starts.

torch splits an operation above its grain size over all its intra-op threads and waits for the
last one. When another process holds a core, the thread on it runs only when the scheduler
gives it a slice, so every such operation waits a slice: two threads on two cores with one busy
run far slower than one thread, and two trainings side by side, each with two threads, slower
still (benchmarks/shared_cpu.py measures both).

So vaelab counts the cores free for this process:

    free = min(CPUs this process may run on, cgroup CPU quota) - CPUs the other processes keep busy

The last term is measured, not guessed from the load average: the busy share of the CPUs this
process may run on (`/proc/stat`: everything but idle and iowait; steal counts as busy, since
the hypervisor gave it away) over a window, less this process's own CPU time over that window.
It is what the others actually took. The count is floor(free + SLACK), at least 1: a core kept
a quarter busy by background work still counts as free, a half-busy one does not.

`train.threads` says when the count is decided:
- "start" (the default): once, just before the first step (after the data is loaded and the
  model built), over a window of START_WINDOW seconds that this process spends busy on one
  core, so that two trainings started together each see the other's core taken (whichever
  measures first sees the other still loading, or measuring too) and settle on one thread
  each. The count is kept for the whole run and recorded in its checkpoint (`TrainState.threads`)
  and summary.json; a resumed run uses the recorded count, whatever the load is then, so it
  ends bit for bit like an uninterrupted run with that count.
- "auto": re-decided as it runs: `ThreadAdapter.tick()` re-decides at most every INTERVAL
  seconds (one read of /proc/stat, the window since the last decision) and calls
  `torch.set_num_threads` only when the count changes. Fair as the load changes, but results
  depend on the thread count in the last bits (torch splits reductions and matrix products by
  thread), so a resumed run agrees with an uninterrupted one to float rounding, not bit for bit.
- "fixed": torch's own count (the machine's cores), as torch would run.
- an integer: that count.

The user's own choice wins: an integer `train.threads` pins the count; under "start" and "auto",
a count set with OMP_NUM_THREADS, or with `torch.set_num_threads` after vaelab was imported (a
count other than the one vaelab last saw), is left alone.

`split_cpus(n)` splits this process's usable CPUs among n worker processes (`vaelab tune --workers`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

CGROUP = Path("/sys/fs/cgroup")
PROC_STAT = Path("/proc/stat")
INTERVAL = 3.0  # seconds between decisions: long enough to average the others' bursts, short enough to follow them
FIRST_WINDOW = 0.1  # seconds of /proc/stat sampled before the first decision under "auto"
START_WINDOW = 0.3  # seconds of /proc/stat sampled, busy on one core, for the decision under "start"
SLACK = 0.25  # a core this much busy with others still counts as free (see decide)

# The count torch has as far as vaelab knows: what it started with, then what vaelab set.
# Anything else was set by the user, and is respected.
_expected = torch.get_num_threads()


# ---------------------------------------------------------------- what this process may use

def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def affinity_cpus() -> set[int]:
    """The CPUs the scheduler may run this process on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max` ("QUOTA PERIOD", QUOTA "max" when unlimited) as CPUs' worth; None: no quota."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    return _ratio(parts[0], parts[1])


def parse_cfs(quota: str, period: str) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` (-1 when unlimited) over `cpu.cfs_period_us`, as CPUs' worth."""
    return _ratio(quota.strip(), period.strip())


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_paths(proc_cgroup: str) -> dict[str, str]:
    """This process's cgroup per hierarchy, from /proc/self/cgroup: "" for v2, else the controllers ("cpu,cpuacct")."""
    paths = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths[parts[1]] = parts[2]
    return paths


def _ancestors(mount: Path, path: str) -> Iterator[Path]:
    """The cgroup folder `path` under `mount` and each folder above it up to the mount (a quota anywhere
    above limits this process too); only the mount when `path` is not visible there (a container)."""
    here = mount / path.strip("/")
    while here != mount and here.is_relative_to(mount):
        if here.is_dir():
            yield here
        here = here.parent
    yield mount


def quota_cpus(root: Path = CGROUP, proc_cgroup: str | None = None) -> float | None:
    """The tightest CPU quota over this process's cgroup and its ancestors, in CPUs; None: no quota."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    paths = cgroup_paths(proc_cgroup)
    quotas = []
    if (root / "cpu.max").is_file():  # v2: one hierarchy
        quotas = [parse_cpu_max(_read(folder / "cpu.max") or "") for folder in _ancestors(root, paths.get("", "/"))]
    else:  # v1: the cpu controller's own hierarchy
        path = next((p for names, p in paths.items() if "cpu" in names.split(",")), "/")
        for mount in (root / "cpu", root / "cpu,cpuacct"):
            for folder in _ancestors(mount, path) if mount.is_dir() else ():
                quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
                quotas.append(parse_cfs(quota, period) if quota and period else None)
            if mount.is_dir():
                break
    known = [q for q in quotas if q is not None]
    return min(known) if known else None


# ---------------------------------------------------------------- what the others use

@dataclass(frozen=True)
class CpuTimes:
    """Clock ticks the CPUs spent busy and in all, summed over a set of CPUs (from /proc/stat)."""

    busy: int
    total: int


def parse_proc_stat(text: str, cpus: set[int]) -> CpuTimes | None:
    """The busy and total ticks of `cpus`, from the per-CPU lines of /proc/stat; None if none are listed.

    The columns are user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    already in user, so only the first eight are summed. Idle and iowait are free time.
    """
    busy = total = 0
    seen = False
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        ticks = [int(v) for v in rest.split()[:8]]
        ticks += [0] * (8 - len(ticks))
        busy += sum(ticks) - ticks[3] - ticks[4]
        total += sum(ticks)
        seen = True
    return CpuTimes(busy, total) if seen else None


def others_busy(before: CpuTimes, after: CpuTimes, n_cpus: int, own_cpu_seconds: float, seconds: float) -> float:
    """CPUs' worth the other processes kept busy between two samples: all the busy time less this
    process's own (both per second of the window)."""
    if after.total <= before.total or seconds <= 0:
        return 0.0
    all_busy = (after.busy - before.busy) / (after.total - before.total) * n_cpus
    return max(0.0, all_busy - own_cpu_seconds / seconds)


def decide(cpus: int, quota: float | None, others: float, slack: float = SLACK) -> int:
    """The thread count for `cpus` usable CPUs under `quota` with `others` CPUs' worth taken: the free ones.

    A thread more than there are free cores makes every parallel operation wait for a scheduler
    slice, a thread fewer only idles a core: so the free share is rounded down, after `slack`.
    """
    limit = float(cpus) if quota is None else min(float(cpus), quota)
    free = min(limit, cpus - others)
    return max(1, min(cpus, math.floor(free + slack)))


# ---------------------------------------------------------------- deciding as training runs

def user_chose() -> bool:
    """Whether the user set torch's thread count: OMP_NUM_THREADS, or set_num_threads behind vaelab's back."""
    return bool(os.environ.get("OMP_NUM_THREADS")) or torch.get_num_threads() != _expected


def set_threads(count: int) -> None:
    """torch.set_num_threads, only when the count changes (it tears down and restarts the thread pool)."""
    global _expected
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    _expected = count


def busy_wait(seconds: float) -> None:
    """Keep one core busy for `seconds`: what a training starting beside this one measures of it."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@dataclass
class ThreadAdapter:
    """Sets torch's thread count for a run: `with adapter.active(): ... adapter.tick()`.

    `setting` is train.threads: "start" (decide once, at `start`), "auto" (re-decide in `tick`),
    "fixed" (leave torch's count) or an integer to pin. `recorded`, when set (a resumed run's
    `TrainState.threads`), is the count "start" uses instead of deciding. `clock` (wall seconds),
    `cpu_clock` (this process's CPU seconds) and `read_stat` (/proc/stat's text) are the sources it
    samples; `wait(seconds)` spends the window of the decision under "start" (busy, see `busy_wait`).
    After `start`, `count` is torch's count and `reason` says where it came from.
    """

    setting: int | str = "start"
    clock: Callable[[], float] = time.monotonic
    cpu_clock: Callable[[], float] = time.process_time
    read_stat: Callable[[], str | None] = lambda: _read(PROC_STAT)
    cpus: set[int] = field(default_factory=affinity_cpus)
    quota: float | None = field(default_factory=quota_cpus)
    wait: Callable[[float], None] = busy_wait
    recorded: int = 0  # a count decided when the run started (0: none yet)
    adapting: bool = field(default=False, init=False)
    decisions: int = field(default=0, init=False)  # how many times the count was decided (for tests)
    count: int = field(default=0, init=False)
    reason: str = field(default="", init=False)
    _owned: bool = field(default=False, init=False)  # vaelab set the count: put torch's back afterwards
    _sample: tuple[float, float, CpuTimes] | None = field(default=None, init=False)  # wall, own CPU, ticks
    _next: float = field(default=0.0, init=False)  # wall time of the next decision

    @contextmanager
    def active(self) -> Iterator[ThreadAdapter]:
        """Decide, pin or leave the count while inside; afterwards torch has the count it had before."""
        before = torch.get_num_threads()
        self.start()
        try:
            yield self
        finally:
            if self._owned:
                set_threads(before)
            self.adapting = self._owned = False

    def start(self) -> None:
        """Pin the count, leave it ("fixed", or the user's own), reuse the recorded one or decide ("start"),
        or take a first short sample and decide ("auto")."""
        self._owned = isinstance(self.setting, int) or (self.setting in ("start", "auto") and not user_chose())
        if isinstance(self.setting, int):
            self._settle(self.setting, f"train.threads = {self.setting}")
        elif not self._owned:
            why = "OMP_NUM_THREADS" if os.environ.get("OMP_NUM_THREADS") else "torch.set_num_threads"
            self._settle(None, "torch's own count" if self.setting == "fixed" else f"the count set with {why}")
        elif self.setting == "start" and self.recorded:
            self._settle(self.recorded, 'train.threads = "start": decided when the run started; '
                                        "--set train.threads=N changes it")
        elif self.setting == "start":
            self._decide_at_start()
        else:
            self.adapting = True
            self._sample = self._measure()
            time.sleep(FIRST_WINDOW)
            self._decide()
            self.reason = 'train.threads = "auto": follows the free cores as the run goes'

    def tick(self) -> None:
        """At a step or chunk boundary: re-decide if INTERVAL seconds have passed (else one clock read)."""
        if self.adapting and self.clock() >= self._next:
            self._decide()

    def _settle(self, count: int | None, reason: str) -> None:
        if count is not None:
            set_threads(count)
        self.count, self.reason = torch.get_num_threads(), reason

    def _decide_at_start(self) -> None:
        """The free cores over START_WINDOW seconds, spent busy on one core (so a training measuring
        at the same moment sees this one's core taken, as this one sees its)."""
        self.decisions += 1
        usable = decide(len(self.cpus), self.quota, 0.0)
        before = self._measure() if usable > 1 else None  # one usable CPU: nothing to measure
        if before is None:
            self._settle(usable, f'train.threads = "start": {_usable_text(len(self.cpus), self.quota)}')
            return
        self.wait(START_WINDOW)
        after = self._measure()
        (wall0, own0, times0), (wall1, own1, times1) = before, after or before
        others = others_busy(times0, times1, len(self.cpus), own1 - own0, wall1 - wall0)
        self._settle(decide(len(self.cpus), self.quota, others),
                     f'train.threads = "start": {_usable_text(len(self.cpus), self.quota)}, '
                     f"others kept {others:.1f} busy; kept when resumed")

    def _measure(self) -> tuple[float, float, CpuTimes] | None:
        text = self.read_stat()
        times = parse_proc_stat(text, self.cpus) if text else None
        return (self.clock(), self.cpu_clock(), times) if times else None

    def _decide(self) -> None:
        now = self._measure()
        self._next = self.clock() + INTERVAL
        self.decisions += 1
        if now is None or self._sample is None:  # no /proc/stat (not Linux): the usable CPUs, less nothing
            set_threads(decide(len(self.cpus), self.quota, 0.0))
            self.count = torch.get_num_threads()
            return
        (wall0, own0, times0), (wall1, own1, times1) = self._sample, now
        others = others_busy(times0, times1, len(self.cpus), own1 - own0, wall1 - wall0)
        self._sample = now
        set_threads(decide(len(self.cpus), self.quota, others))
        self.count = torch.get_num_threads()


def _usable_text(cpus: int, quota: float | None) -> str:
    text = f"{cpus} usable CPU{'s' if cpus != 1 else ''}"
    return text if quota is None or quota >= cpus else f"{text} under a quota of {quota:g}"


# ---------------------------------------------------------------- workers on one machine

def split_cpus(n: int, cpus: set[int] | None = None, quota: float | None = None) -> list[set[int]]:
    """The CPUs of `n` worker processes (`vaelab tune --workers n`): this process's usable CPUs in `n`
    disjoint sets of consecutive CPU numbers, sizes differing by at most one.

    Usable: the affinity mask (`cpus`, default this process's), and under a cgroup quota (`quota`,
    in CPUs; default this process's when `cpus` is not given) only the first floor(quota) of them,
    at least one: workers pinned to more CPUs than the quota pays for would be throttled. With more
    workers than usable CPUs each gets one CPU, shared round-robin (the sets are then not disjoint).
    A worker set to its share (`os.sched_setaffinity(pid, share)`) decides its own thread count from
    it under train.threads = "start" or "auto".
    """
    if n < 1:
        raise ValueError(f"split_cpus: n must be >= 1, got {n}")
    if cpus is None:
        cpus, quota = affinity_cpus(), quota_cpus() if quota is None else quota
    usable = sorted(cpus)
    if quota is not None:
        usable = usable[:max(1, math.floor(quota))]
    if n >= len(usable):
        return [{usable[i % len(usable)]} for i in range(n)]
    size, extra = divmod(len(usable), n)
    shares, start = [], 0
    for i in range(n):
        stop = start + size + (i < extra)
        shares.append(set(usable[start:stop]))
        start = stop
    return shares
