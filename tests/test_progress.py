"""Progress lines for piped output: the time left is estimated from the steady pace, not the warm-up."""

from __future__ import annotations

import io

from vaelab.progress import LineProgress


class ScriptedClock:
    """A clock that reads the times it is given, one a call (the last one repeats)."""

    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def test_the_time_left_leaves_out_the_compiling_first_steps():
    # 1,000 batches; the first takes 20 s (compiling), every later one 10 ms: about 10 s are left
    # after step 3, not the 6,660 s that 3 steps in 20.02 s would predict.
    clock = ScriptedClock(0.0, 20.0, 20.01, 20.02)
    out = io.StringIO()
    bar = LineProgress(1000, "epoch 1/20", "batch", every=0.0, file=out, clock=clock)
    for _ in range(3):
        bar.update()
    lines = out.getvalue().splitlines()
    assert lines == ["epoch 1/20: 1/1000 batches (time left: estimated after the first batches)",
                     "epoch 1/20: 2/1000 batches (time left: estimated after the first batches)",
                     "epoch 1/20: 3/1000 batches (100.0/s, about 10 s left)"]


def test_a_line_before_the_pace_is_known_says_when_it_will_be():
    out = io.StringIO()
    bar = LineProgress(50, "evaluating (K=5000)", "image", every=0.0, file=out, clock=ScriptedClock(0.0, 30.0))
    bar.update(10)
    assert out.getvalue() == "evaluating (K=5000): 10/50 images (time left: estimated after the first images)\n"
