"""A range of days run as one job: each day in date order, exactly as it runs alone.

Backfills and catch-ups hand one process many days (``automation.data_days_per_run`` /
``model_days_per_run``). The days of a range stay independent results: day D is computed as a
one-day run computes it (its windows read the days before it, which earlier days of the range
have just written), and a failure on day k stops the range there, naming day k, with the days
before it kept. A retry of the range passes the days already done, and resumes from day k.

Imports nothing of Dagster: the orchestration layer turns each day's result into that day's
materialization (``assets/ranges.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from typing import TypeVar

R = TypeVar("R")


class DayFailed(RuntimeError):
    """Day ``day`` of the range ``days`` failed; ``done`` (the days before it) are written.

    The message names the day, the range and where a retry resumes; the original error is the
    ``__cause__``."""

    def __init__(self, what: str, day: str, days: list[str], done: list[str], cause: BaseException):
        done = sorted(done)
        self.what, self.day, self.days, self.done = what, day, days, done
        kept = (f"{done[0]} is materialized" if len(done) == 1 else
                f"{done[0]}..{done[-1]} ({len(done)} days) are materialized" if done else "no day of it is materialized")
        super().__init__(f"{what}: day {day} of the range {days[0]}..{days[-1]} failed ({type(cause).__name__}: "
                         f"{cause}); {kept}, a retry resumes from {day}")


def run_days(what: str, days: Iterable[str], run_day: Callable[[str], R],
             done: Collection[str] = ()) -> Iterator[tuple[str, R]]:
    """``(day, run_day(day))`` for each of ``days`` in date order, less those in ``done`` (a retry's
    days already written). Lazy: each day's result is handed on before the next day starts, so
    what consumes it (a materialization event) is recorded even if a later day fails. A failure
    raises :class:`DayFailed` naming the day (``what``: the asset, for the message)."""
    days = sorted(days)
    finished = [d for d in days if d in done]
    for day in days:
        if day in done:
            continue
        try:
            out = run_day(day)
        except Exception as e:
            raise DayFailed(what, day, days, finished, e) from e
        yield day, out
        finished.append(day)


def chunks(days: Iterable[str], size: int) -> list[list[str]]:
    """``days`` in date order, cut into runs of ``size`` consecutive days (0: one run of all)."""
    days = sorted(days)
    if not days:
        return []
    step = size or len(days)
    return [days[i:i + step] for i in range(0, len(days), step)]
