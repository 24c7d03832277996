"""Readers and validation on broken input: bad rows are quarantined with a reason, counts add
up, nothing crashes, and configuration mistakes fail early with a message naming the problem."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from ml_core.config import SourceConfig, source_config
from ml_core.data.readers import read_file_source
from ml_core.data.schema import EVENT_SCHEMA, QUARANTINE_SCHEMA, conform_events, stable_id
from ml_core.data.validate import validate_events
from tests.source_profile import scan_file_source

UTC = UTC
DAY = date(2017, 11, 26)
# 2017-11-26 10:00 in Shanghai, as unix seconds
T0 = int(datetime(2017, 11, 26, 2, 0, tzinfo=UTC).timestamp())


def _write(path: Path, lines: list[str] | bytes, eol: str = "\n") -> Path:
    data = lines if isinstance(lines, bytes) else (eol.join(lines) + eol).encode()
    path.write_bytes(data)
    return path


def _taobao(path: Path, **kw) -> SourceConfig:
    args = dict(kind="taobao", path=str(path), start_date=DAY.isoformat(), end_date="2017-11-30",
                timezone="Asia/Shanghai")
    args.update(kw)
    return source_config(**args)


def _check_invariants(b) -> None:
    assert dict(b.events.schema) == EVENT_SCHEMA
    assert dict(b.quarantine.schema) == QUARANTINE_SCHEMA
    s = b.stats
    assert s["rows_in_day"] == b.events.height
    assert s["rows_quarantined"] == b.quarantine.height == sum(s["reasons"].values())
    assert s["rows_read"] == s["rows_in_range"] + s["rows_outside_range"] + s["rows_quarantined_total"]


MIXED = [
    f"1,100,10,pv,{T0}",  # 1 good
    f"1,101,10,cart,{T0 + 60}",  # 2 good
    "100370,1968385,1875258,pv",  # 3 truncated line
    f"abc,102,10,pv,{T0}",  # 4 text in the user id column
    f"2,103,10,like,{T0}",  # 5 unknown behaviour
    "2,104,10,pv,",  # 6 empty timestamp
    "2,105,10,pv,yesterday",  # 7 garbage timestamp
    f"3,106,10,buy,{T0 + 120}",  # 8 good
    f"3,106,10,buy,{T0 + 120}",  # 9 duplicate of 8 (a valid row: kept by the reader)
    "",  # 10 blank line: skipped and counted
    f"4,107,10,fav,{T0},extra",  # 11 too many fields
    f"5,x7,10,pv,{T0}",  # 12 text in the item id column
    f"6,108,cat,pv,{T0}",  # 13 non-integer category
    f"-7,109,10,pv,{T0}",  # 14 negative id
    f"8,110,,fav,{T0 + 180}",  # 15 good, no category
    f" 9 , 111 ,10, pv ,{T0 + 240}",  # 16 good, padded with spaces
    f"{T0}",  # 17 a single field
    f"10,112,10,pv,{T0 + 86400}",  # 18 good but the next day: not in this partition
    f"11,113,10,pv,{T0 - 5 * 86400}",  # 19 good but before start_date: outside the range
    "12,114,10,pv,99999999999999999",  # 20 absurd timestamp
]

EXPECTED_REASONS = {
    3: "wrong number of fields (got 4, expected 5)",
    4: "bad user_id (not a non-negative integer)",
    5: "unknown behavior 'like'",
    6: "missing timestamp",
    7: "bad timestamp",
    11: "wrong number of fields (got 6, expected 5)",
    12: "bad item_id (not a non-negative integer)",
    13: "bad category (not a non-negative integer)",
    14: "bad user_id (not a non-negative integer)",
    17: "wrong number of fields (got 1, expected 5)",
    20: "bad timestamp",
}


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_mixed_bad_rows_are_quarantined_with_reasons(tmp_path, eol):
    f = _write(tmp_path / "events.csv", MIXED, eol=eol)
    b = read_file_source(_taobao(f), DAY)
    _check_invariants(b)

    ev = b.events
    assert ev.select("user_id", "item_id", "behavior").rows() == [
        (1, 100, "view"), (1, 101, "cart"), (3, 106, "buy"), (3, 106, "buy"), (8, 110, "fav"), (9, 111, "view"),
    ]
    assert ev["category"].to_list() == [10, 10, 10, 10, None, 10]
    assert ev["ds"].unique().to_list() == [DAY]

    q = dict(zip(b.quarantine["source_row"].to_list(), b.quarantine["reason"].to_list()))
    assert q == EXPECTED_REASONS
    raw = dict(zip(b.quarantine["source_row"].to_list(), b.quarantine["raw"].to_list()))
    assert raw[5] == MIXED[4] and raw[3] == MIXED[2]  # the line as it is in the file (no \r)

    s = b.stats
    assert s["blank_lines"] == 1
    assert s["rows_read"] == len(MIXED) - 1
    assert s["rows_in_range"] == 7  # 6 today + 1 tomorrow
    assert s["rows_outside_range"] == 1
    assert s["rows_quarantined_total"] == len(EXPECTED_REASONS)
    assert s["reasons"]["bad timestamp"] == 2

    # the next day has the one row of that day and no quarantine (bad rows are filed once)
    nxt = read_file_source(_taobao(f), DAY + timedelta(days=1))
    _check_invariants(nxt)
    assert nxt.events["user_id"].to_list() == [10] and nxt.quarantine.height == 0

    # validation then drops the duplicate (counted, not quarantined)
    clean, vq, vs = validate_events(ev, DAY)
    assert vs["duplicates_removed"] == 1 and vq.height == 0 and clean.height == 5


def test_quarantine_filed_under_own_day_or_first_day(tmp_path):
    lines = [
        f"1,100,10,like,{T0 + 86400}",  # unknown behaviour, dated the day after start
        "2,101,10,pv,garbage",  # no readable day
        f"3,102,10,pv,{T0 - 30 * 86400}",  # good, outside the range
        f"4,103,10,like,{T0 - 30 * 86400}",  # bad and dated outside the range
    ]
    f = _write(tmp_path / "e.csv", lines)
    first = read_file_source(_taobao(f), DAY)
    second = read_file_source(_taobao(f), DAY + timedelta(days=1))
    assert sorted(first.quarantine["source_row"].to_list()) == [2, 4]
    assert second.quarantine["source_row"].to_list() == [1]
    prof = scan_file_source(_taobao(f))
    assert prof.rows_quarantined == 3 and prof.rows_outside_range == 1
    assert prof.reasons == {"unknown behavior 'like'": 2, "bad timestamp": 1}
    qd = dict(zip(prof.days["ds"].to_list(), prof.days["quarantined"].to_list()))
    assert qd[DAY] == 2 and qd[DAY + timedelta(days=1)] == 1


def test_invalid_utf8_and_bom_do_not_crash(tmp_path):
    data = b"\xef\xbb\xbf" + f"1,100,10,pv,{T0}\n".encode() + b"\xff\xfe2,101,10,pv," + str(T0).encode() + b"\n"
    b = read_file_source(_taobao(_write(tmp_path / "e.csv", data)), DAY)
    _check_invariants(b)
    assert b.events["user_id"].to_list() == [1]  # the BOM is not part of the first id
    assert b.quarantine["reason"].to_list() == ["bad user_id (not a non-negative integer)"]
    assert "\ufffd" in b.quarantine["raw"][0]


def test_empty_file_gives_empty_day(tmp_path):
    f = _write(tmp_path / "empty.csv", b"")
    for cfg in (_taobao(f), source_config(kind="table", path=str(f), start_date=DAY.isoformat(),
                                         columns={"user_id": "u", "item_id": "i", "behavior": "b", "ts": "t"})):
        b = read_file_source(cfg, DAY)
        _check_invariants(b)
        assert b.events.height == 0 and b.quarantine.height == 0
        assert b.stats["rows_read"] == 0 and b.stats["rows_outside_range"] == 0 and b.stats["reasons"] == {}
        p = scan_file_source(cfg)
        assert p.rows_read == 0 and p.days.height == 0 and p.first_day is None


def test_header_only_table_gives_empty_day(tmp_path):
    f = _write(tmp_path / "h.csv", ["u,i,b,t"])
    cfg = source_config(kind="table", path=str(f), start_date=DAY.isoformat(),
                       columns={"user_id": "u", "item_id": "i", "behavior": "b", "ts": "t"})
    b = read_file_source(cfg, DAY)
    _check_invariants(b)
    assert b.events.height == 0 and b.stats["rows_read"] == 0


def test_only_bad_rows_gives_all_quarantine(tmp_path):
    f = _write(tmp_path / "bad.csv", ["a,b,c,d,e", "1,2,3", "x,y,z,pv,", "1,2,3,like,now"])
    b = read_file_source(_taobao(f), DAY)
    _check_invariants(b)
    assert b.events.height == 0
    assert b.quarantine.height == 4 and b.stats["rows_read"] == 4 and b.stats["rows_quarantined_total"] == 4
    assert b.quarantine["source_row"].to_list() == [1, 2, 3, 4]


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "UserBehavior.csv"
    with pytest.raises(FileNotFoundError, match="nope/UserBehavior.csv"):
        read_file_source(_taobao(missing), DAY)
    with pytest.raises(FileNotFoundError, match=r"part-\*\.csv"):
        scan_file_source(_taobao(tmp_path / "part-*.csv"))


def test_config_mistakes_are_named(tmp_path):
    f = _write(tmp_path / "t.csv", ["uid,iid,act,when", f"u1,i1,view,{T0}"])
    base = dict(kind="table", path=str(f), start_date=DAY.isoformat())
    with pytest.raises(ValueError, match="'ts'"):
        read_file_source(source_config(**base, columns={"user_id": "uid", "item_id": "iid", "behavior": "act"}), DAY)
    cols = {"user_id": "uid", "item_id": "iid", "behavior": "act", "ts": "time"}
    with pytest.raises(ValueError, match="'time'"):
        read_file_source(source_config(**base, columns=cols), DAY)
    cols["ts"] = "when"
    with pytest.raises(ValueError, match="'like'"):
        read_file_source(source_config(**base, columns=cols, behavior_map={"v": "like"}), DAY)
    with pytest.raises(ValueError, match="Mars/Olympus"):
        read_file_source(source_config(**base, columns=cols, timezone="Mars/Olympus"), DAY)
    with pytest.raises(ValueError, match="ts_format"):
        read_file_source(source_config(**base, columns=cols, ts_format="seconds"), DAY)
    with pytest.raises(ValueError, match="kind"):
        read_file_source(source_config(**{**base, "kind": "orc"}, columns=cols), DAY)
    assert read_file_source(source_config(**base, columns=cols), DAY).events.height == 1


def test_table_csv_quotes_string_ids_and_formats(tmp_path):
    lines = [
        "user,item,action,time,title",
        'u1,"i,1",click,2017-11-26 10:00:00,"a title, with comma"',
        '"u2",i2,"buy",2017-11-26 11:30:00,plain',
        "17,42,click,2017-11-26 12:00:00,numeric ids stay numbers",
        "u3,i3,click,2017-11-26 25:00:00,bad hour",
        'u4,"i4,click,2017-11-26 12:00:00,unclosed quote',
        "u5,i5,click,2017-11-27 00:30:00,next day",
    ]
    f = _write(tmp_path / "t.csv", lines)
    cfg = source_config(kind="table", path=str(f), start_date=DAY.isoformat(), timezone="Asia/Shanghai",
                       columns={"user_id": "user", "item_id": "item", "behavior": "action", "ts": "time"},
                       behavior_map={"click": "view", "buy": "buy"}, ts_format="%Y-%m-%d %H:%M:%S")
    b = read_file_source(cfg, DAY)
    _check_invariants(b)
    # an unclosed quote is read leniently: the stray quote stays part of that one field
    assert b.events["user_id"].to_list() == [stable_id("u1"), stable_id("u2"), 17, stable_id("u4")]
    assert b.events["item_id"].to_list() == [stable_id("i,1"), stable_id("i2"), 42, stable_id('"i4')]
    assert b.events["ts"][0] == datetime(2017, 11, 26, 2, tzinfo=UTC)
    assert b.quarantine.rows() == [(5, lines[4], "bad timestamp")]
    assert b.stats["rows_in_range"] == 5  # 4 today + 1 tomorrow (00:30 Shanghai)


@pytest.mark.parametrize(
    ("fmt", "value", "expected"),
    [
        ("unix_ms", str(T0 * 1000 + 250), datetime(2017, 11, 26, 2, 0, 0, 250_000, tzinfo=UTC)),
        ("unix_s", f"{T0}.5", datetime(2017, 11, 26, 2, 0, 0, 500_000, tzinfo=UTC)),
        ("%Y-%m-%dT%H:%M:%S%z", "2017-11-26T10:00:00+0800", datetime(2017, 11, 26, 2, tzinfo=UTC)),
        ("%Y/%m/%d", "2017/11/26", datetime(2017, 11, 25, 16, tzinfo=UTC)),
        ("mmdd", "1126", datetime(2017, 11, 25, 16, tzinfo=UTC)),
    ],
)
def test_table_timestamp_formats(tmp_path, fmt, value, expected):
    f = _write(tmp_path / "t.csv", ["u,i,b,t", f"1,2,view,{value}"])
    cfg = source_config(kind="table", path=str(f), start_date=DAY.isoformat(), timezone="Asia/Shanghai",
                       columns={"user_id": "u", "item_id": "i", "behavior": "b", "ts": "t"}, ts_format=fmt, year=2017)
    b = read_file_source(cfg, DAY)
    assert b.quarantine.height == 0, b.quarantine
    assert b.events["ts"].to_list() == [expected]


def test_nonexistent_local_time_is_quarantined(tmp_path):
    # 2024-03-31 02:30 does not exist in Berlin (clocks jump 02:00 -> 03:00)
    f = _write(tmp_path / "t.csv", ["u,i,b,t", "1,2,view,2024-03-31 02:30", "1,3,view,2024-03-31 03:30"])
    cfg = source_config(kind="table", path=str(f), start_date="2024-03-31", timezone="Europe/Berlin",
                       columns={"user_id": "u", "item_id": "i", "behavior": "b", "ts": "t"}, ts_format="%Y-%m-%d %H:%M")
    b = read_file_source(cfg, date(2024, 3, 31))
    assert b.events["item_id"].to_list() == [3]
    assert b.quarantine["reason"].to_list() == ["bad timestamp"]


def test_glob_reads_files_in_order_with_per_file_rows(tmp_path):
    _write(tmp_path / "day-b.csv", [f"2,200,10,pv,{T0}", "oops"])
    _write(tmp_path / "day-a.csv", [f"1,100,10,pv,{T0}"])
    b = read_file_source(_taobao(tmp_path / "day-*.csv"), DAY)
    _check_invariants(b)
    assert b.events["user_id"].to_list() == [1, 2]
    assert b.quarantine.rows() == [(2, "[day-b.csv] oops", "wrong number of fields (got 1, expected 5)")]
    assert len(b.stats["files"]) == 2


# ------------------------------------------------------------------------------ validate


def _events(rows: list[tuple]) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ts", "category", "ds"], orient="row")
    return conform_events(df)


def _t(minute: int) -> datetime:
    return datetime(2017, 11, 26, 2, minute, tzinfo=UTC)


def test_validate_rejects_and_dedups():
    rows = [
        (1, 10, "view", _t(1), 5, DAY),  # 1 ok
        (1, 10, "view", _t(1), 5, DAY),  # 2 duplicate of 1
        (None, 10, "view", _t(2), 5, DAY),  # 3
        (2, None, "view", _t(2), 5, DAY),  # 4
        (2, 11, None, _t(2), 5, DAY),  # 5
        (2, 11, "like", _t(2), 5, DAY),  # 6
        (2, 11, "buy", None, 5, DAY),  # 7
        (2, 11, "buy", _t(3), 5, DAY + timedelta(days=1)),  # 8
        (-3, 11, "buy", _t(3), 5, DAY),  # 9
        (3, -11, "buy", _t(3), 5, DAY),  # 10
        (3, 12, "cart", _t(0), None, DAY),  # 11 ok, earlier
        (3, 12, "cart", _t(0), 9, DAY),  # 12 duplicate of 11 but with a category
        (4, 13, "fav", _t(0), None, None),  # 13
    ]
    ev = _events(rows)
    clean, q, s = validate_events(ev, DAY)
    assert dict(clean.schema) == EVENT_SCHEMA and dict(q.schema) == QUARANTINE_SCHEMA
    assert clean.select("user_id", "item_id", "behavior", "category").rows() == [(3, 12, "cart", 9), (1, 10, "view", 5)]
    assert dict(zip(q["source_row"].to_list(), q["reason"].to_list())) == {
        3: "null user_id",
        4: "null item_id",
        5: "null behavior",
        6: "unknown behavior 'like'",
        7: "null ts",
        8: "ds is not the partition day",
        9: "negative user_id",
        10: "negative item_id",
        13: "null ds",
    }
    raw = json.loads(q.filter(pl.col("source_row") == 6)["raw"][0])
    assert raw["behavior"] == "like" and raw["user_id"] == 2 and raw["ds"] == "2017-11-26"
    assert s == {
        "day": "2017-11-26",
        "rows_in": 13,
        "rows_out": 2,
        "duplicates_removed": 2,
        "quarantined": 9,
        "reasons": {r: 1 for r in sorted(q["reason"].to_list())},
    }
    assert s["rows_in"] == s["rows_out"] + s["duplicates_removed"] + s["quarantined"]


def test_validate_is_deterministic(tmp_path):
    rows = [(u % 7, u % 11, ["view", "cart", "fav", "buy"][u % 4], _t(u % 5), u % 3 or None, DAY) for u in range(300)]
    ev = _events(rows)
    outs = []
    for seed in range(3):
        clean, _, _ = validate_events(ev.sample(fraction=1.0, shuffle=True, seed=seed), DAY)
        path = tmp_path / f"out{seed}.parquet"
        clean.write_parquet(path)
        outs.append(path.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    assert clean.select(pl.struct("ts", "user_id", "item_id", "behavior").is_unique().all()).item()
    assert clean.equals(clean.sort(["ts", "user_id", "item_id", "behavior"]))


def test_validate_empty_and_uncastable():
    clean, q, s = validate_events(_events([]), DAY)
    assert clean.height == 0 and q.height == 0 and s["rows_in"] == 0 and s["reasons"] == {}
    odd = pl.DataFrame({"user_id": ["7", "x"], "item_id": [1, 2], "behavior": ["view", "view"],
                        "ts": [_t(1), _t(2)], "ds": [DAY, DAY]})
    clean, q, s = validate_events(odd, DAY)
    assert clean["user_id"].to_list() == [7] and clean["category"].to_list() == [None]
    assert q["reason"].to_list() == ["null user_id"] and '"x"' in q["raw"][0]
    with pytest.raises(ValueError, match="ts"):
        validate_events(odd.drop("ts"), DAY)
