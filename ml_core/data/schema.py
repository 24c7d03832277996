"""The canonical event schema every source is converted to.

One row is one user action on one item:

========== ================= ==========================================================
column     dtype             meaning
========== ================= ==========================================================
user_id    Int64             stable raw user id (string ids are hashed, see ``stable_id``)
item_id    Int64             stable raw item id
behavior   Utf8              one of :data:`BEHAVIORS` (``view`` = click / page view)
ts         Datetime(us,UTC)  event time, converted to UTC
category   Int64 (nullable)  item category id, when the source has one
ds         Date              the partition day: ``ts`` read in the source's timezone
========== ================= ==========================================================

Node ids are the raw ids themselves (int64). Graph files keep sorted id arrays next to their
CSR arrays, so "node u on day D" and "node u on day D+1" are the same id, and mapping between
days is a ``searchsorted``; no day depends on another day to assign ids, which keeps backfills
parallel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ml_core.config import BEHAVIORS

__all__ = [
    "BEHAVIORS",
    "EVENT_SCHEMA",
    "QUARANTINE_SCHEMA",
    "DayEvents",
    "conform_events",
    "empty_events",
    "empty_quarantine",
    "stable_id",
]

# BEHAVIORS: canonical behaviours, in funnel order; sources map their own codes onto these.
# Defined in ml_core.config (the bottom layer) so the configuration can check task names.

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "item_id": pl.Int64(),
    "behavior": pl.Utf8(),
    "ts": pl.Datetime("us", "UTC"),
    "category": pl.Int64(),
    "ds": pl.Date(),
}

#: Quarantine rows: the raw row rendered as text plus why it was rejected.
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_row": pl.Int64(),
    "raw": pl.Utf8(),
    "reason": pl.Utf8(),
}


@dataclass
class DayEvents:
    """One partition day of a source: its events, its quarantine and read statistics."""

    events: pl.DataFrame  # EVENT_SCHEMA
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA
    stats: dict[str, Any] = field(default_factory=dict)


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENT_SCHEMA)


def empty_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema=QUARANTINE_SCHEMA)


def conform_events(df: pl.DataFrame) -> pl.DataFrame:
    """Select and cast ``df`` to :data:`EVENT_SCHEMA`, in that column order.

    Raises ``ValueError`` naming the missing columns instead of failing later in torch.
    """
    missing = [c for c in EVENT_SCHEMA if c not in df.columns and c != "category"]
    if missing:
        raise ValueError(f"events are missing columns {missing}; expected {list(EVENT_SCHEMA)}")
    if "category" not in df.columns:
        df = df.with_columns(pl.lit(None, dtype=pl.Int64).alias("category"))
    return df.select([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()])


def stable_id(value: str) -> int:
    """A stable 63-bit integer id for a string id (same on every machine and day)."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF
