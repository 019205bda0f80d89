"""Progress of long work: a bar on a terminal, a plain line every few seconds when output is piped.

A bar's carriage returns make a log file unreadable, and no output at all leaves a user of a
script or CI job guessing whether minutes of evaluation are going anywhere.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

LINE_EVERY = 5.0  # seconds between two lines when output is not a terminal
# Updates left out of the rate: the first steps of a run compile and warm up (20 s for a step that
# then takes 5 ms), and a rate that counts them predicts hours for a one-minute run.
WARMUP_UPDATES = 2


def plural(unit: str) -> str:
    """'batch' -> 'batches', 'image' -> 'images'; 'epoch' (a hard ch) -> 'epochs'."""
    soft = unit.endswith(("ch", "sh", "s", "x")) and not unit.endswith("epoch")
    return unit + ("es" if soft else "s")


def count(n: int, unit: str) -> str:
    """'1 epoch', '3 epochs': a number with its unit in the right number."""
    return f"{n} {unit if n == 1 else plural(unit)}"


class LineProgress:
    """tqdm's update/close/set_postfix interface, printed as a line every `every` seconds.

    The rate, and the time left, count only the work after the first WARMUP_UPDATES updates;
    until some has been timed, a line says when the estimate comes. `clock` is for tests.
    """

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, every: float | None = None,
                 file: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every = LINE_EVERY if every is None else every  # read now, so a test can set LINE_EVERY
        self.file, self.clock = file or sys.stderr, clock
        self.last, self.updates = clock(), 0
        self.paced_from: tuple[float, int] | None = None  # (time, n) when the warm-up updates were done

    def update(self, n: int = 1) -> None:
        self.n += n
        self.updates += 1
        now = self.clock()
        if self.updates == WARMUP_UPDATES:
            self.paced_from = (now, self.n)
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def rate(self, now: float) -> float | None:
        """Units a second after the warm-up updates; None until some work after them was timed."""
        if self.paced_from is None or self.n <= self.paced_from[1] or now <= self.paced_from[0]:
            return None
        return (self.n - self.paced_from[1]) / (now - self.paced_from[0])

    def _line(self, now: float) -> None:
        done = f"{self.desc}: {self.n}/{self.total} {plural(self.unit)}"
        rate = self.rate(now)
        if rate is None:
            print(f"{done} (time left: estimated after the first {plural(self.unit)})", file=self.file, flush=True)
            return
        print(f"{done} ({rate:.1f}/s, about {(self.total - self.n) / rate:.0f} s left)", file=self.file, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Silent(LineProgress):
    def update(self, n: int = 1) -> None:
        self.n += n


def progress(total: int, desc: str, unit: str = "item", *, enabled: bool = True, initial: int = 0,
             leave: bool = False) -> Any:
    """A tqdm bar when stderr is a terminal, else a `LineProgress`; nothing shown when not `enabled`."""
    if not enabled:
        return _Silent(total, desc, unit, initial)
    if sys.stderr.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave)
    return LineProgress(total, desc, unit, initial)
