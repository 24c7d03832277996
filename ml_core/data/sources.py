"""One entry point for the configured source: a day's validated events + quarantine, the
node profiles when the source has them, and a file source's optional attribute tables."""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import polars as pl

from ml_core.config import SourceConfig, SyntheticSource
from ml_core.data.schema import DayEvents, empty_quarantine

__all__ = ["DayEvents", "attributes", "profiles", "read_day"]


@lru_cache(maxsize=4)
def _synthetic(preset: str, seed: int, start_date: str):
    from ml_core.data.synthetic import SyntheticTraffic

    return SyntheticTraffic(preset, seed=seed, start_date=start_date)


def read_day(cfg: SourceConfig, day: date) -> DayEvents:
    """The day's events from the configured source, validated (bad rows quarantined)."""
    from ml_core.data.validate import validate_events

    if isinstance(cfg, SyntheticSource):
        raw = _synthetic(cfg.preset, cfg.seed, cfg.start_date).events(day)
        read_q, read_stats = empty_quarantine(), {"rows_read": raw.height}
    else:  # taobao, tmall, table: the typed config admits no other kind
        from ml_core.data.readers import read_file_source

        batch = read_file_source(cfg, day)
        raw, read_q, read_stats = batch.events, batch.quarantine, batch.stats
    clean, val_q, val_stats = validate_events(raw, day)
    quarantine = pl.concat([read_q, val_q], how="vertical_relaxed")
    stats = {"read": read_stats, "validate": val_stats, "rows": clean.height, "quarantined": quarantine.height}
    return DayEvents(clean, quarantine, stats)


def profiles(cfg: SourceConfig) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(user profiles, item profiles) when the source has them (synthetic does), else None."""
    if isinstance(cfg, SyntheticSource):
        t = _synthetic(cfg.preset, cfg.seed, cfg.start_date)
        return t.user_profiles(), t.item_profiles()
    return None, None


def attributes(cfg: SourceConfig) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(user attributes, item attributes) of a file source's ``user_attributes`` /
    ``item_attributes`` tables (ml_core/data/attributes.py), None where not configured."""
    if isinstance(cfg, SyntheticSource):
        return None, None
    from ml_core.data.attributes import read_attributes

    users = read_attributes(cfg.user_attributes, "user") if cfg.user_attributes is not None else None
    items = read_attributes(cfg.item_attributes, "item") if cfg.item_attributes is not None else None
    return users, items


def source_timezone(cfg: SourceConfig) -> str:  # TEMP until wt-source merges
    if isinstance(cfg, SyntheticSource):
        return cfg.timezone
    from ml_core.data.layouts import layout_for

    return layout_for(cfg).timezone


def day_versions(cfg: SourceConfig, days: list[date]) -> dict[str, str | None]:  # TEMP until wt-source merges
    return {d.isoformat(): f"synthetic-{cfg.preset}-{cfg.seed}-{d}" for d in days}
