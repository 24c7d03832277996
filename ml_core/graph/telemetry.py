"""Memory telemetry of the graph builds: the ``peak_mem_delta_mb`` of their ``stats``."""

from __future__ import annotations

import os
import resource
import threading


def peak_rss_mb() -> float:
    """The process's peak resident set size so far (``ru_maxrss``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    """The process's current resident set size, MiB (psutil; the peak if psutil fails)."""
    try:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss / 2**20
    except Exception:  # pragma: no cover - psutil is a dependency, belt and braces
        return peak_rss_mb()


class MemWatch:
    """Peak RSS growth over a ``with`` block, sampled by a background thread every ``interval``
    seconds (numba allocations are not seen by tracemalloc): ``delta_mb`` after the block.
    A subclass may measure something else by overriding :meth:`sample` (MiB)."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval

    def sample(self) -> float:
        return rss_mb()

    def __enter__(self):
        self.base = self.sample()
        self.peak = self.base
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(self.interval):
                self.peak = max(self.peak, self.sample())

        self._t = threading.Thread(target=loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.sample())

    @property
    def delta_mb(self) -> float:
        return round(self.peak - self.base, 1)
