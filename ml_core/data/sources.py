"""One entry point for the configured source: a day's validated events + quarantine, and the
node profiles when the source has them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

import polars as pl

from ml_core.config import SourceConfig
from ml_core.data.schema import empty_quarantine


@dataclass
class DayEvents:
    events: pl.DataFrame
    quarantine: pl.DataFrame
    stats: dict = field(default_factory=dict)


@lru_cache(maxsize=4)
def _synthetic(preset: str, seed: int, start_date: str):
    from ml_core.data.synthetic import SyntheticTraffic

    return SyntheticTraffic(preset, seed=seed, start_date=start_date)


def read_day(cfg: SourceConfig, day: date) -> DayEvents:
    """The day's events from the configured source, validated (bad rows quarantined)."""
    from ml_core.data.validate import validate_events

    if cfg.kind == "synthetic":
        raw = _synthetic(cfg.preset, cfg.seed, cfg.start_date).events(day)
        read_q, read_stats = empty_quarantine(), {"rows_read": raw.height}
    elif cfg.kind in ("taobao", "tmall", "table"):
        from ml_core.data.readers import read_file_source

        batch = read_file_source(cfg, day)
        raw, read_q, read_stats = batch.events, batch.quarantine, batch.stats
    else:
        raise ValueError(f"source.kind must be synthetic, taobao, tmall or table; got {cfg.kind!r}")
    clean, val_q, val_stats = validate_events(raw, day)
    quarantine = pl.concat([read_q, val_q], how="vertical_relaxed")
    stats = {"read": read_stats, "validate": val_stats, "rows": clean.height, "quarantined": quarantine.height}
    return DayEvents(clean, quarantine, stats)


def profiles(cfg: SourceConfig) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(user profiles, item profiles) when the source has them (synthetic does), else None."""
    if cfg.kind == "synthetic":
        t = _synthetic(cfg.preset, cfg.seed, cfg.start_date)
        return t.user_profiles(), t.item_profiles()
    return None, None
