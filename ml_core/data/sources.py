"""One entry point for the configured source: a day's validated events + quarantine, the
node profiles when the source has them, a file source's optional attribute tables, the content
version of each day (has it arrived, has it changed) and the timezone days are cut in."""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import Any

import polars as pl

from ml_core.config import SourceConfig, SyntheticSource
from ml_core.data.schema import DayEvents, empty_quarantine

__all__ = ["DayEvents", "attributes", "day_versions", "profiles", "read_day", "source_timezone"]


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
        if cfg.item_attributes is not None and cfg.item_attributes.category:
            raw = _with_item_categories(raw, cfg.item_attributes)
    clean, val_q, val_stats = validate_events(raw, day)
    quarantine = pl.concat([read_q, val_q], how="vertical_relaxed")
    stats = {"read": read_stats, "validate": val_stats, "rows": clean.height, "quarantined": quarantine.height}
    return DayEvents(clean, quarantine, stats)


def _with_item_categories(events: pl.DataFrame, table) -> pl.DataFrame:
    """The events with ``category`` from the item table where the log gave none (static side
    information: the same item has the same category on every day)."""
    from ml_core.data.attributes import item_categories

    cats = item_categories(table).rename({"category": "__cat"})
    joined = events.join(cats, on="item_id", how="left", maintain_order="left")
    return joined.with_columns(pl.coalesce("category", "__cat").alias("category")).drop("__cat")


def profiles(cfg: SourceConfig) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(user profiles, item profiles) when the source has them (synthetic does), else None."""
    if isinstance(cfg, SyntheticSource):
        t = _synthetic(cfg.preset, cfg.seed, cfg.start_date)
        return t.user_profiles(), t.item_profiles()
    return None, None


def attributes(cfg: SourceConfig, reports: dict[str, Any] | None = None
               ) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
    """(user attributes, item attributes) of a file source's ``user_attributes`` /
    ``item_attributes`` tables (ml_core/data/attributes.py), None where not configured.
    ``reports`` (when given) receives ``{"user" / "item": report}`` of each table read (rows read
    and kept, what could not be used: :func:`ml_core.data.attributes.load_attributes`)."""
    if isinstance(cfg, SyntheticSource):
        return None, None
    from ml_core.data.attributes import load_attributes

    out: list[pl.DataFrame | None] = []
    for side, table in (("user", cfg.user_attributes), ("item", cfg.item_attributes)):
        if table is None:
            out.append(None)
            continue
        df, report = load_attributes(table, side)
        out.append(df)
        if reports is not None:
            reports[side] = report
    return out[0], out[1]


def day_versions(cfg: SourceConfig, days: list[date | str]) -> dict[str, str | None]:
    """``{"YYYY-MM-DD": version}`` of each of ``days``: the content version of the day's source
    data, or ``None`` when that day's data has not arrived (after the source's last day with
    rows) or the day is outside ``[start_date, end_date]``. A day with no rows on or before the
    last day with rows is an empty day (:data:`ml_core.data.versions.EMPTY_VERSION`).

    File sources: one scan of the file(s) for all days; a day's version is an order-independent
    hash of exactly the rows :func:`read_day` would read for it (events and quarantine) and of
    the source layout, so a row added to, removed from or changed in day D changes D's version
    and no other day's. Synthetic: a hash of preset, seed, start date, day and generator code,
    without generating anything. Details: ml_core/data/versions.py.
    """
    from ml_core.data.versions import file_day_versions, synthetic_day_versions

    ds = [date.fromisoformat(d) if isinstance(d, str) else d for d in days]
    if isinstance(cfg, SyntheticSource):
        return synthetic_day_versions(cfg, ds)
    return file_day_versions(cfg, ds)


def source_timezone(cfg: SourceConfig) -> str:
    """The IANA timezone the source's days are cut in: ``taobao`` / ``tmall`` the preset's
    (Asia/Shanghai) while ``source.timezone`` is left at its default, else ``source.timezone``."""
    if isinstance(cfg, SyntheticSource):
        return cfg.timezone
    from ml_core.data.layouts import layout_for

    return layout_for(cfg).timezone
