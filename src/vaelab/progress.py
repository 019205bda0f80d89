"""Progress of long work: a bar on a terminal, a plain line every few seconds when output is piped.

A bar's carriage returns make a log file unreadable, and no output at all leaves a user of a
script or CI job guessing whether minutes of evaluation are going anywhere.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

LINE_EVERY = 5.0  # seconds between two lines when output is not a terminal


def plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")


class LineProgress:
    """tqdm's update/close/set_postfix interface, printed as a line every `every` seconds (LINE_EVERY)."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, every: float | None = None,
                 file: TextIO | None = None) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every = LINE_EVERY if every is None else every  # read now, so a test can set LINE_EVERY
        self.file = file or sys.stderr
        self.started = self.last = time.monotonic()
        self.start_n = initial

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        rate = (self.n - self.start_n) / max(now - self.started, 1e-9)
        left = (self.total - self.n) / rate if rate > 0 else float("nan")
        print(f"{self.desc}: {self.n}/{self.total} {plural(self.unit)} ({rate:.1f}/s, about {left:.0f} s left)",
              file=self.file, flush=True)

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
