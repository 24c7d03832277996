"""Which days feed which partition: the one definition of the flow's rolling windows.

A :class:`Window` is a range of days relative to a partition day D. The stages, the Dagster
partition mappings (``assets/partitions.py`` builds its ``TimeWindowPartitionMapping`` from the
same offsets), the benchmarks and the tests all take their windows from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from ml_core.config import PipelineConfig


def as_date(day: date | str) -> date:
    return day if isinstance(day, date) else date.fromisoformat(day)


@dataclass(frozen=True)
class Window:
    """Days ``D+start_offset .. D+end_offset`` (inclusive) of a partition day D."""

    start_offset: int
    end_offset: int

    def days(self, day: date | str, first_day: date | str | None = None) -> list[str]:
        """The window's days of ``day`` (ISO strings, in order), none before ``first_day``."""
        d = as_date(day)
        days = [d + timedelta(days=o) for o in range(self.start_offset, self.end_offset + 1)]
        if first_day is not None:
            days = [x for x in days if x >= as_date(first_day)]
        return [x.isoformat() for x in days]


def days_before(n: int, include_day: bool = False) -> Window:
    """Days D-n .. D-1 (.. D with ``include_day``)."""
    return Window(-n, 0 if include_day else -1)


def graph_window_of(cfg: PipelineConfig) -> Window:
    """The logs a day's graphs and node features read: D-W .. D-1 (W = ``graph.window_days``)."""
    return days_before(cfg.graph.window_days)


def train_window_of(cfg: PipelineConfig) -> Window:
    """The sample days a day's model trains on: D-T .. D-1 (T = ``train.train_days``)."""
    return days_before(cfg.train.train_days)


def train_and_eval_window_of(cfg: PipelineConfig) -> Window:
    """The training days of D and D itself (the comparison's held-out evaluation day)."""
    return days_before(cfg.train.train_days, include_day=True)


def window(day: date | str, start_offset: int, end_offset: int, first_day: date | str | None = None) -> list[str]:
    """Days ``D+start_offset .. D+end_offset`` (inclusive), not before ``first_day``."""
    return Window(start_offset, end_offset).days(day, first_day)


def graph_window_days(cfg: PipelineConfig, day: date | str) -> list[str]:
    """The existing days of :func:`graph_window_of` for ``day`` (none before the start date)."""
    return graph_window_of(cfg).days(day, cfg.start_date)


def train_window_days(cfg: PipelineConfig, day: date | str) -> list[str]:
    """The existing days of :func:`train_window_of` for ``day`` (none before the first day with samples)."""
    return train_window_of(cfg).days(day, derived_start(cfg))


def derived_start(cfg: PipelineConfig) -> date:
    """The first day with graphs, node features and samples: the day after ``source.start_date``,
    the first with any history (a day's graphs read the days before it, never the day itself).
    The source's first day has logs only, so every derived partition has an input to read."""
    return cfg.start_date + timedelta(days=1)


def model_start(cfg: PipelineConfig) -> date:
    """The first day with a model: the first whose training window D-T .. D-1 has samples on
    every day (``derived_start + train.train_days``). Earlier days have data partitions only."""
    return derived_start(cfg) + timedelta(days=cfg.train.train_days)


@dataclass(frozen=True)
class CatchUp:
    """How many of the newest partitions the automation materializes when they are missing,
    per kind of asset: the deployment decisions of the last ``automation.catch_up_days`` days
    (``model``), the samples, features and graphs their models train on (``data``) and the logs
    those graphs read (``logs``)."""

    model: int
    data: int
    logs: int


def catch_up_of(cfg: PipelineConfig) -> CatchUp:
    h = cfg.automation.catch_up_days
    return CatchUp(model=h, data=h + cfg.train.train_days, logs=h + cfg.train.train_days + cfg.graph.window_days)
