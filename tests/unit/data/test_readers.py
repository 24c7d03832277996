"""File-source readers on the real data excerpts in ../shared/data (read-only, never copied)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ml_core.config import SourceConfig, source_config
from ml_core.data.readers import TAOBAO, TMALL, layout_for, read_file_source
from ml_core.data.schema import EVENT_SCHEMA, QUARANTINE_SCHEMA, stable_id
from ml_core.data.validate import validate_events
from tests.conftest import SHARED_DATA
from tests.source_profile import scan_file_source

DATA = SHARED_DATA
TAOBAO_HEAD = DATA / "taobao-userbehavior" / "UserBehavior_head_84475.csv"
TMALL_LOG = DATA / "tmall-ijcai15" / "user_log_sample.csv"
TIANCHI = DATA / "tianchi-mobile-recommend" / "sample_user_behavior.csv"

TAOBAO_DAYS = [date(2017, 11, 25) + timedelta(days=i) for i in range(9)]
UTC = UTC


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data excerpt {path} is absent (expected read-only in ../shared/data)")
    return path


def _taobao_cfg(**kw) -> SourceConfig:
    args = dict(kind="taobao", path=str(_need(TAOBAO_HEAD)), start_date="2017-11-25", end_date="2017-12-03",
                timezone="Asia/Shanghai")
    args.update(kw)
    return source_config(**args)


def _tianchi_cfg(**kw) -> SourceConfig:
    args = dict(
        kind="table",
        path=str(_need(TIANCHI)),
        start_date="2014-11-18",
        end_date="2014-12-18",
        timezone="Asia/Shanghai",
        columns={"user_id": "user_id", "item_id": "item_id", "behavior": "behavior_type", "ts": "time",
                 "category": "item_category"},
        behavior_map={"1": "view", "2": "fav", "3": "cart", "4": "buy"},
        ts_format="%Y-%m-%d %H",
    )
    args.update(kw)
    return source_config(**args)


def _schema_ok(batch) -> None:
    assert dict(batch.events.schema) == EVENT_SCHEMA
    assert dict(batch.quarantine.schema) == QUARANTINE_SCHEMA


# ------------------------------------------------------------------------------------ Taobao


@pytest.fixture(scope="module")
def taobao_profile():
    return scan_file_source(_taobao_cfg())


def test_taobao_profile_nine_days_and_nothing_lost(taobao_profile):
    p = taobao_profile
    assert p.rows_read == 84_475
    assert p.blank_lines == 0 and p.rows_quarantined == 0 and p.reasons == {}
    by_day = p.rows_by_day()
    assert sorted(by_day) == TAOBAO_DAYS
    # plausible daily volumes: 815 users * ~10 events/day, weekend 12-02/03 busiest
    assert all(7_000 <= n <= 13_000 for n in by_day.values()), by_day
    assert sum(by_day.values()) == p.rows_in_range
    # the ~35 outlier rows of the original data are reported, not lost
    assert 20 <= p.rows_outside_range <= 50
    assert sum(by_day.values()) + p.rows_outside_range == 84_475
    assert p.rows_in_range + p.rows_outside_range + p.rows_quarantined == p.rows_read
    assert (p.first_day, p.last_day) == (TAOBAO_DAYS[0], TAOBAO_DAYS[-1])
    assert p.outside_first_day == date(2017, 9, 11) and p.outside_last_day == date(2017, 11, 24)
    assert p.n_users == 815
    # behaviour totals over all days (in and outside the range) match SOURCE.md
    totals = p.days.select(pl.col("view", "cart", "fav", "buy").sum()).row(0)
    assert totals == (75_872, 4_497, 2_356, 1_750)
    assert p.summary()["rows_read"] == 84_475  # JSON-able for the UI


def test_taobao_each_day_read_matches_profile(taobao_profile):
    cfg = _taobao_cfg()
    total = 0
    for day in TAOBAO_DAYS:
        b = read_file_source(cfg, day)
        _schema_ok(b)
        assert b.events.height == taobao_profile.rows_by_day()[day]
        assert b.events["ds"].unique().to_list() == [day]
        assert b.quarantine.height == 0
        s = b.stats
        assert s["rows_in_day"] == b.events.height
        assert s["rows_read"] == s["rows_in_range"] + s["rows_outside_range"] + s["rows_quarantined_total"]
        total += b.events.height
    assert total + read_file_source(cfg, TAOBAO_DAYS[0]).stats["rows_outside_range"] == 84_475


def test_taobao_ds_is_shanghai_day_and_behaviours_mapped():
    cfg = _taobao_cfg()
    b = read_file_source(cfg, date(2017, 12, 3))
    # line 223: 1000,2340930,1051370,pv,1512230614 = 2017-12-02 16:03:34 UTC = 12-03 00:03 Shanghai
    the_ts = datetime(2017, 12, 2, 16, 3, 34, tzinfo=UTC)
    row = b.events.filter((pl.col("user_id") == 1000) & (pl.col("item_id") == 2340930) & (pl.col("ts") == the_ts))
    assert row.height == 1
    r = row.row(0, named=True)
    assert r["ts"] == datetime(2017, 12, 2, 16, 3, 34, tzinfo=UTC)
    assert r["ds"] == date(2017, 12, 3)
    assert r["behavior"] == "view" and r["category"] == 1051370
    # so the UTC day 2017-12-02 partition must not contain it
    prev = read_file_source(cfg, date(2017, 12, 2)).events
    assert prev.filter((pl.col("user_id") == 1000) & (pl.col("ts") == the_ts)).height == 0
    assert set(b.events["behavior"].unique()) == {"view", "cart", "fav", "buy"}
    # every event's ds is its ts read in Shanghai (UTC+8, no DST)
    shifted = b.events.select((pl.col("ts").dt.replace_time_zone(None) + pl.duration(hours=8)).dt.date())
    assert shifted.to_series().to_list() == b.events["ds"].to_list()


def test_taobao_preset_default_timezone_is_shanghai():
    cfg = _taobao_cfg(timezone=source_config().timezone)  # left at the config default
    assert layout_for(cfg).timezone == "Asia/Shanghai" == TAOBAO.timezone
    b = read_file_source(cfg, date(2017, 12, 3))
    assert b.stats["timezone"] == "Asia/Shanghai"
    # forcing UTC gives different day cuts (and 10 calendar days)
    utc = scan_file_source(_taobao_cfg(timezone="Etc/UTC", start_date="2017-11-24", end_date="2017-12-03"))
    assert utc.rows_by_day() != scan_file_source(cfg).rows_by_day()


def test_taobao_outside_range_day_is_empty_and_flagged():
    b = read_file_source(_taobao_cfg(), date(2017, 11, 24))
    assert b.events.height == 0 and b.stats["day_in_range"] is False
    assert b.stats["rows_outside_range"] > 0


def test_taobao_output_feeds_validate():
    b = read_file_source(_taobao_cfg(), date(2017, 11, 27))
    clean, quarantine, stats = validate_events(b.events, date(2017, 11, 27))
    assert quarantine.height == 0
    assert stats["rows_in"] == b.events.height == stats["rows_out"] + stats["duplicates_removed"]


# ------------------------------------------------------------------------------------- Tmall


def test_tmall_sample_multi_day():
    cfg = source_config(kind="tmall", path=str(_need(TMALL_LOG)), start_date="2014-05-11", end_date="2014-11-11",
                       timezone="Asia/Shanghai", year=2014)
    assert layout_for(cfg).behavior_map == TMALL.behavior_map
    p = scan_file_source(cfg)
    assert p.rows_read == 3_000 and p.rows_quarantined == 0  # float brand ids and empty brands are fine
    assert p.rows_in_range == 3_000 and p.rows_outside_range == 0
    assert len(p.rows_by_day()) == 185
    assert (p.first_day, p.last_day) == (date(2014, 5, 11), date(2014, 11, 11))
    totals = p.days.select(pl.col("view", "cart", "buy", "fav").sum()).row(0)
    assert totals == (2_643, 2, 183, 172)

    b = read_file_source(cfg, date(2014, 11, 11))
    _schema_ok(b)
    assert b.events.height == p.rows_by_day()[date(2014, 11, 11)] > 100  # Double-11
    # MMDD -> midnight of that day in Shanghai
    assert set(b.events["ts"].unique()) == {datetime(2014, 11, 10, 16, tzinfo=UTC)}
    # first data row (line 2): 422202,929057,177,1480,7069.0,0628,0
    june = read_file_source(cfg, date(2014, 6, 28)).events
    r = june.filter(pl.col("user_id") == 422202).row(0, named=True)
    assert (r["item_id"], r["category"], r["behavior"]) == (929057, 177, "view")


def test_tmall_year_from_config():
    cfg = source_config(kind="tmall", path=str(_need(TMALL_LOG)), start_date="2015-01-01", year=2015)
    p = scan_file_source(cfg)
    assert p.first_day.year == 2015 and p.rows_in_range == 3_000


# ------------------------------------------------------------------------- Tianchi (table)


def test_tianchi_generic_table_reader():
    cfg = _tianchi_cfg()
    p = scan_file_source(cfg)
    assert p.rows_read == 1_999 and p.rows_quarantined == 0 and p.rows_outside_range == 0
    assert len(p.rows_by_day()) == 31
    assert p.n_users == 34 and p.n_items == 1_689
    totals = p.days.select(pl.col("view", "fav", "cart", "buy").sum()).row(0)
    assert totals == (1_876, 18, 70, 35)

    b = read_file_source(cfg, date(2014, 12, 6))
    _schema_ok(b)
    # line 2: 98047837,232431562,1,,4245,2014-12-06 02  (hour 02 in Shanghai = 18:00 UTC the day before)
    r = b.events.filter((pl.col("user_id") == 98047837) & (pl.col("item_id") == 232431562)).row(0, named=True)
    assert r["ts"] == datetime(2014, 12, 5, 18, tzinfo=UTC)
    assert r["ds"] == date(2014, 12, 6) and r["behavior"] == "view" and r["category"] == 4245


def test_tianchi_missing_mapping_is_named():
    cols = {"user_id": "user_id", "item_id": "item_id", "behavior": "behavior_type"}
    with pytest.raises(ValueError, match="'ts'"):
        read_file_source(_tianchi_cfg(columns=cols), date(2014, 12, 6))
    with pytest.raises(ValueError, match="'when'"):
        read_file_source(_tianchi_cfg(columns={**cols, "ts": "when"}), date(2014, 12, 6))


# ------------------------------------------------------------------------- generic Parquet


def test_generic_parquet_string_ids(tmp_path):
    ts = [datetime(2024, 3, 1, 23, 30, tzinfo=UTC), datetime(2024, 3, 2, 1, 0, tzinfo=UTC),
          datetime(2024, 3, 2, 9, 0, tzinfo=UTC), datetime(2024, 3, 2, 10, 0, tzinfo=UTC)]
    df = pl.DataFrame(
        {
            "visitor": ["alice", "bob", "42", None],
            "sku": ["SKU-1", "SKU-2", "SKU-1", "SKU-3"],
            "event": ["click", "purchase", "click", "click"],
            "at": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            "cat": [7, None, 7, 8],
        }
    )
    df.write_parquet(tmp_path / "part-0.parquet")
    df.head(1).write_parquet(tmp_path / "part-1.parquet")
    cfg = source_config(
        kind="table",
        path=str(tmp_path / "part-*.parquet"),
        start_date="2024-03-01",
        timezone="Europe/Berlin",
        columns={"user_id": "visitor", "item_id": "sku", "behavior": "event", "ts": "at", "category": "cat"},
        behavior_map={"click": "view", "purchase": "buy"},
    )
    b = read_file_source(cfg, date(2024, 3, 2))
    _schema_ok(b)
    # 23:30 UTC on 03-01 is 00:30 on 03-02 in Berlin; part-1 repeats that row
    assert b.events.height == 4
    assert b.events["user_id"].to_list() == [stable_id("alice"), stable_id("bob"), 42, stable_id("alice")]
    assert b.events["item_id"].to_list()[:3] == [stable_id("SKU-1"), stable_id("SKU-2"), stable_id("SKU-1")]
    assert b.events["behavior"].to_list()[:3] == ["view", "buy", "view"]
    assert b.events["category"].to_list()[:3] == [7, None, 7]
    # the row without a visitor is quarantined with its file, row and reason
    q = b.quarantine.row(0, named=True)
    assert b.quarantine.height == 1 and q["reason"] == "missing user_id" and q["source_row"] == 4
    assert q["raw"].startswith("[part-0.parquet] {") and '"SKU-3"' in q["raw"]
    assert b.stats["rows_read"] == 5
