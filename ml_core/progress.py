"""Progress of a long loop: throughput and time left, for the lines training and scoring log.

One :class:`Progress` follows one loop of a known number of steps (optimiser steps of an epoch,
scoring batches of a day). Each :meth:`Progress.advance` counts a step and the samples it
processed; every ``every`` steps it says it is time to report, and its numbers then are

* ``recent_rate``: samples/s over the interval since the last report (what the loop does now),
* ``mean_rate``: samples/s since the loop started (what it has done on average),
* ``eta_s``: seconds left, the remaining steps at the mean time per step so far.

Time comes from ``clock`` (``time.perf_counter`` by default; tests pass a fake one). Nothing
here logs: callers put the numbers into their own line (:func:`Progress.rates` and
:func:`format_duration` format the shared part). This module imports nothing of ml_core.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m07s``, ``2h05m``; ``?`` when unknown (``None``, negative or not finite)."""
    if seconds is None or not seconds >= 0 or seconds == float("inf"):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Steps done of ``total`` steps, samples processed, and when to report.

    Args:
        total (int): steps the loop will run (0 when unknown: no ETA).
        every (int): report every this many steps (0 = never).
        clock (Callable[[], float]): seconds, monotonic (default: ``time.perf_counter``).
    """

    def __init__(self, total: int, every: int, clock: Callable[[], float] = time.perf_counter):
        if every < 0:
            raise ValueError(f"every = {every}: expected >= 0 (0 = never report)")
        self.total = total
        self.every = every
        self.clock = clock
        self.start = clock()
        self.steps = 0
        self.samples = 0
        self.recent_rate = 0.0
        self._mark = (self.start, 0)  # (time, samples) of the last report

    def advance(self, samples: int, steps: int = 1) -> bool:
        """Count ``steps`` more steps over ``samples`` samples; ``True`` when a report is due
        (the step count crossed a multiple of ``every``). Then ``recent_rate`` holds the rate
        of the interval since the last report, and a new interval starts."""
        before = self.steps
        self.steps += steps
        self.samples += samples
        if not self.every or self.steps // self.every == before // self.every:
            return False
        now = self.clock()
        self.recent_rate = (self.samples - self._mark[1]) / max(now - self._mark[0], 1e-9)
        self._mark = (now, self.samples)
        return True

    @property
    def elapsed(self) -> float:
        """Seconds since the loop started."""
        return self.clock() - self.start

    @property
    def mean_rate(self) -> float:
        """Samples/s since the loop started."""
        return self.samples / max(self.elapsed, 1e-9)

    def eta_s(self, remaining_steps: int | None = None) -> float | None:
        """Seconds left for ``remaining_steps`` (default: the rest of ``total``) at the mean time
        per step so far; ``None`` before the first step or when ``total`` is unknown."""
        if remaining_steps is None:
            if not self.total:
                return None
            remaining_steps = max(self.total - self.steps, 0)
        if not self.steps:
            return None
        return remaining_steps * self.elapsed / self.steps

    def rates(self) -> str:
        """``812 samples/s (790 since start)``: the interval's rate and the mean rate."""
        return f"{self.recent_rate:,.0f} samples/s ({self.mean_rate:,.0f} since start)"
