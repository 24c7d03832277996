"""Whole-source profile of a file source (one streaming pass): per-day counts, date range and
quarantine summary. Test helper only (moved out of ml_core/data/readers.py, where nothing used it):
the tests check the readers' day-by-day output against these whole-file counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import polars as pl

from ml_core.config import FileSourceConfig
from ml_core.data.readers import parse_source
from ml_core.data.schema import BEHAVIORS

__all__ = ["SourceProfile", "scan_file_source"]


@dataclass
class SourceProfile:
    """A whole-source summary: counts per class and per day, quarantine reasons, distinct ids."""

    kind: str
    timezone: str
    files: list[str]
    start_date: date
    end_date: date | None
    rows_read: int
    blank_lines: int
    rows_in_range: int
    rows_outside_range: int
    rows_quarantined: int
    #: quarantine reasons over the whole source
    reasons: dict[str, int]
    #: one row per calendar day seen among readable rows: ds, rows, view/cart/fav/buy counts,
    #: in_range; plus the quarantined rows filed under each partition day (``quarantined``)
    days: pl.DataFrame
    #: first and last day with readable in-range rows (None when there are none)
    first_day: date | None
    last_day: date | None
    #: readable rows outside [start_date, end_date]: their first and last day
    outside_first_day: date | None
    outside_last_day: date | None
    n_users: int
    n_items: int

    def rows_by_day(self, in_range_only: bool = True) -> dict[date, int]:
        d = self.days.filter(pl.col("in_range")) if in_range_only else self.days
        return dict(zip(d["ds"].to_list(), d["rows"].to_list()))

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if isinstance(v, pl.DataFrame):
                out[k] = [{kk: (vv.isoformat() if isinstance(vv, date) else vv) for kk, vv in r.items()}
                          for r in v.to_dicts()]
            elif isinstance(v, date):
                out[k] = v.isoformat()
            else:
                out[k] = v
        return out


def scan_file_source(cfg: FileSourceConfig) -> SourceProfile:
    """One streaming pass over the whole source: per-day counts, range and quarantine summary."""
    lf, layout, files, start, end = parse_source(cfg)
    day_schema = {"ds": pl.Date, "rows": pl.UInt32, **{b: pl.UInt32 for b in BEHAVIORS},
                  "quarantined": pl.UInt32, "in_range": pl.Boolean}
    if lf is None:
        return SourceProfile(layout.kind, layout.timezone, files, start, end, 0, 0, 0, 0, 0, {},
                             pl.DataFrame(schema=day_schema), None, None, None, None, 0, 0)
    per = lf.group_by(["cls", "ds", "pday", "behavior", "reason"]).agg(pl.len().alias("n"))
    uniq = lf.filter(pl.col("cls") == "in_range").select(
        pl.col("user_id").n_unique().alias("u"), pl.col("item_id").n_unique().alias("i")
    )
    per, uniq = pl.collect_all([per, uniq], engine="streaming")

    by_cls = per.group_by("cls").agg(pl.col("n").sum())
    by_cls = dict(zip(by_cls["cls"].to_list(), by_cls["n"].to_list()))
    q = per.filter(pl.col("cls") == "quarantined")
    reasons = q.group_by("reason").agg(pl.col("n").sum()).sort(["n", "reason"], descending=[True, False])

    ok = per.filter(pl.col("cls").is_in(["in_range", "outside_range"]))
    days = (
        ok.group_by("ds")
        .agg(
            pl.col("n").sum().cast(pl.UInt32).alias("rows"),
            *[pl.col("n").filter(pl.col("behavior") == b).sum().cast(pl.UInt32).alias(b) for b in BEHAVIORS],
            (pl.col("cls") == "in_range").any().alias("in_range"),
        )
    )
    qd = q.group_by("pday").agg(pl.col("n").sum().cast(pl.UInt32).alias("quarantined")).rename({"pday": "ds"})
    days = (
        days.join(qd, on="ds", how="full", coalesce=True)
        .with_columns(
            pl.col("rows", *BEHAVIORS, "quarantined").fill_null(0),
            pl.col("in_range").fill_null(True),
        )
        .select(list(day_schema))
        .cast(day_schema)
        .sort("ds")
    )
    inr = days.filter(pl.col("in_range") & (pl.col("rows") > 0))["ds"]
    out = days.filter(~pl.col("in_range"))["ds"]
    return SourceProfile(
        kind=layout.kind,
        timezone=layout.timezone,
        files=files,
        start_date=start,
        end_date=end,
        rows_read=sum(n for c, n in by_cls.items() if c != "blank"),
        blank_lines=by_cls.get("blank", 0),
        rows_in_range=by_cls.get("in_range", 0),
        rows_outside_range=by_cls.get("outside_range", 0),
        rows_quarantined=by_cls.get("quarantined", 0),
        reasons=dict(zip(reasons["reason"].to_list(), reasons["n"].to_list())),
        days=days,
        first_day=inr.min() if inr.len() else None,
        last_day=inr.max() if inr.len() else None,
        outside_first_day=out.min() if out.len() else None,
        outside_last_day=out.max() if out.len() else None,
        n_users=int(uniq["u"][0]) if uniq.height else 0,
        n_items=int(uniq["i"][0]) if uniq.height else 0,
    )
