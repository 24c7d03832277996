"""Validation of canonical events for one partition day (any source, including the synthetic one).

:func:`validate_events` is the gate between a reader and the lake: it rejects rows that would
break later stages, drops exact duplicates, and returns a deterministic ordering so that
re-running a partition writes byte-identical files.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import polars as pl

from ml_core.data.schema import BEHAVIORS, EVENT_SCHEMA, QUARANTINE_SCHEMA

__all__ = ["DEDUP_KEY", "SORT_KEY", "validate_events"]

#: Two events with the same values here are the same event (duplicates are dropped).
DEDUP_KEY: tuple[str, ...] = ("user_id", "item_id", "behavior", "ts")
#: Order of the clean output (unique after de-duplication, so the order is total).
SORT_KEY: tuple[str, ...] = ("ts", "user_id", "item_id", "behavior")

_NULL_STR = pl.lit(None, dtype=pl.Utf8)


def validate_events(events: pl.DataFrame, day: date | str) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Split ``events`` of partition ``day`` into (clean, quarantine, stats).

    Rejected (quarantined, one reason per row, the first that applies): null ``user_id`` /
    ``item_id`` / ``behavior`` / ``ts`` / ``ds``, negative ids, a behaviour outside
    :data:`BEHAVIORS`, ``ds`` other than ``day``. Values that cannot be cast to the canonical
    dtype count as null. Quarantine rows: ``source_row`` (1-based row of ``events``), ``raw``
    (the row as JSON text) and ``reason``.

    Exact duplicates (same user, item, behaviour and ts) are kept once; when they differ in
    ``category`` the smallest non-null one is kept. Duplicates are counted, not quarantined.

    ``clean`` follows :data:`EVENT_SCHEMA`, sorted by ``(ts, user_id, item_id, behavior)``.
    ``stats``: ``rows_in``, ``rows_out``, ``duplicates_removed``, ``quarantined``,
    ``reasons`` ``{reason: count}``; ``rows_in == rows_out + duplicates_removed + quarantined``.
    """
    day = date.fromisoformat(day) if isinstance(day, str) else day
    missing = [c for c in EVENT_SCHEMA if c not in events.columns and c != "category"]
    if missing:
        raise ValueError(f"events are missing columns {missing}; expected {list(EVENT_SCHEMA)}")

    src_cols = [c for c in EVENT_SCHEMA if c in events.columns]
    df = events.with_row_index("__row", offset=1).select(
        pl.col("__row").cast(pl.Int64).alias("source_row"),
        pl.struct([pl.col(c) for c in src_cols]).struct.json_encode().alias("raw"),
        *[_cast(events, c, t) for c, t in EVENT_SCHEMA.items()],
    )

    def id_reason(c: str) -> pl.Expr:
        return pl.when(pl.col(c).is_null()).then(pl.lit(f"null {c}")).when(pl.col(c) < 0).then(
            pl.lit(f"negative {c}")
        ).otherwise(_NULL_STR)

    reason = pl.coalesce(
        id_reason("user_id"),
        id_reason("item_id"),
        pl.when(pl.col("behavior").is_null())
        .then(pl.lit("null behavior"))
        .when(~pl.col("behavior").is_in(list(BEHAVIORS)))
        .then(pl.format("unknown behavior '{}'", pl.col("behavior").str.slice(0, 40)))
        .otherwise(_NULL_STR),
        pl.when(pl.col("ts").is_null()).then(pl.lit("null ts")).otherwise(_NULL_STR),
        pl.when(pl.col("ds").is_null())
        .then(pl.lit("null ds"))
        .when(pl.col("ds") != day)
        .then(pl.lit("ds is not the partition day"))
        .otherwise(_NULL_STR),
    )
    df = df.with_columns(reason.alias("reason"))

    bad = df.filter(pl.col("reason").is_not_null())
    quarantine = bad.select([pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()]).sort("source_row")

    good = (
        df.filter(pl.col("reason").is_null())
        .select(list(EVENT_SCHEMA))
        .sort([*SORT_KEY, "category"], nulls_last=True)
    )
    clean = good.unique(subset=list(DEDUP_KEY), keep="first", maintain_order=True)

    reasons: dict[str, int] = {}
    if quarantine.height:
        vc = quarantine.group_by("reason").agg(pl.len().alias("n")).sort(["n", "reason"], descending=[True, False])
        reasons = dict(zip(vc["reason"].to_list(), vc["n"].to_list()))
    stats = {
        "day": day.isoformat(),
        "rows_in": events.height,
        "rows_out": clean.height,
        "duplicates_removed": good.height - clean.height,
        "quarantined": quarantine.height,
        "reasons": reasons,
    }
    return clean, quarantine, stats


def _cast(events: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr:
    """Cast a column to its canonical dtype; values that do not fit become null."""
    if name not in events.columns:
        return pl.lit(None, dtype=dtype).alias(name)
    src = events.schema[name]
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime) and isinstance(src, pl.Datetime):
        col = col.dt.cast_time_unit("us")
        col = col.dt.convert_time_zone("UTC") if src.time_zone else col.dt.replace_time_zone("UTC")
        return col.alias(name)
    return col.cast(dtype, strict=False).alias(name)
