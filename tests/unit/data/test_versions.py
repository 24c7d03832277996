"""day_versions / source_timezone (ml_core/data/sources.py, ml_core/data/versions.py): the content
version of each day of a source, on small table sources written to tmp_path and on the real
excerpts in ../shared/data."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from ml_core.config import source_config
from ml_core.data import versions
from ml_core.data.readers import read_file_source
from ml_core.data.sources import day_versions, source_timezone
from ml_core.data.versions import EMPTY_VERSION, row_hashes
from tests.conftest import SHARED_DATA

TAOBAO_HEAD = SHARED_DATA / "taobao-userbehavior" / "UserBehavior_head_84475.csv"
TMALL_LOG = SHARED_DATA / "tmall-ijcai15" / "user_log_sample.csv"

D1 = date(2026, 3, 1)
DAYS = [D1 + timedelta(days=i) for i in range(8)]  # data on D1, D2, D4, D5; D3 is a gap; nothing after D5
COLUMNS = {"user_id": "u", "item_id": "i", "behavior": "b", "ts": "t"}


def _ts(day: date, hour: int, minute: int = 0) -> int:
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC).timestamp())


def _rows() -> list[str]:
    rows = []
    for k, day in enumerate(DAYS[:5]):
        if k == 2:
            continue  # the gap day
        for j in range(6):
            rows.append(f"u{j},i{(j * 7 + k) % 5},{['view', 'cart', 'buy'][j % 3]},{_ts(day, 2 + j, k)}")
    return rows


def _write(path, rows: list[str], header: str = "u,i,b,t"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _cfg(path, **kw):
    args = dict(kind="table", path=str(path), start_date=D1.isoformat(), columns=COLUMNS)
    args.update(kw)
    return source_config(**args)


def _versions(tmp_path, rows, name="e.csv", **kw) -> dict[str, str | None]:
    return day_versions(_cfg(_write(tmp_path / name, rows), **kw), DAYS)


def _changed(a: dict, b: dict) -> set[str]:
    return {d for d in a if a[d] != b[d]}


def test_versions_are_stable_and_tell_empty_from_not_arrived(tmp_path):
    f = _write(tmp_path / "e.csv", _rows())
    v = day_versions(_cfg(f), DAYS)
    assert v == day_versions(_cfg(f), list(reversed(DAYS)))  # same answer, whatever the request order
    assert v == day_versions(_cfg(f), [d.isoformat() for d in DAYS])  # ISO strings work too
    d = [x.isoformat() for x in DAYS]
    assert all(v[x] is not None and v[x] != EMPTY_VERSION for x in (d[0], d[1], d[3], d[4]))
    assert v[d[2]] == EMPTY_VERSION  # a gap before the last day with rows: an empty day
    assert v[d[5]] is None and v[d[6]] is None and v[d[7]] is None  # after the last day: not arrived
    assert len(set(v[x] for x in (d[0], d[1], d[3], d[4]))) == 4
    assert v[d[0]].startswith("6-")  # "<rows>-<hash>"
    # outside [start_date, end_date]: None even where rows exist
    w = day_versions(_cfg(f, start_date=d[1], end_date=d[3]), DAYS)
    assert w[d[0]] is None and w[d[4]] is None and w[d[1]] == v[d[1]] and w[d[3]] == v[d[3]]
    assert day_versions(_cfg(f), []) == {}


def test_a_change_in_one_day_changes_only_that_day(tmp_path):
    rows = _rows()
    base = _versions(tmp_path, rows)
    d = [x.isoformat() for x in DAYS]
    # a late row added to D2 (after D2 was ingested)
    late = _versions(tmp_path, [*rows, f"u9,i1,view,{_ts(DAYS[1], 23, 59)}"])
    assert _changed(base, late) == {d[1]}
    # a row of D1 edited (behaviour view -> buy)
    edited = [rows[0].replace(",view,", ",buy,"), *rows[1:]]
    assert _changed(base, _versions(tmp_path, edited)) == {d[0]}
    # a row of D4 removed
    assert _changed(base, _versions(tmp_path, [r for r in rows if r != rows[12]])) == {d[3]}
    # a bad row dated D5 is quarantined under D5: it changes D5 only
    assert _changed(base, _versions(tmp_path, [*rows, f"u1,i1,like,{_ts(DAYS[4], 5)}"])) == {d[4]}
    # a row without a readable timestamp is quarantined under start_date (as read_file_source files it)
    assert _changed(base, _versions(tmp_path, [*rows, "u1,i1,view,yesterday"])) == {d[0]}
    # blank lines and rows outside [start_date, end_date] belong to no day
    outside = [*rows, "", f"u1,i1,view,{_ts(D1 - timedelta(days=3), 5)}"]
    assert _changed(base, _versions(tmp_path, outside, end_date=d[6])) == set()
    # the gap day gets its late data: it changes from empty to a version, nothing else moves
    filled = _versions(tmp_path, [*rows, f"u2,i2,view,{_ts(DAYS[2], 9)}"])
    assert _changed(base, filled) == {d[2]} and filled[d[2]] not in (None, EMPTY_VERSION)
    # a day after the last one arrives: the days between become empty days, the rest is unchanged
    later = _versions(tmp_path, [*rows, f"u2,i2,view,{_ts(DAYS[6], 9)}"])
    assert _changed(base, later) == {d[5], d[6]}
    assert later[d[5]] == EMPTY_VERSION and later[d[6]] not in (None, EMPTY_VERSION) and later[d[7]] is None


def test_versions_ignore_row_order_and_how_rows_are_split_into_files(tmp_path):
    rows = _rows()
    base = _versions(tmp_path, rows)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert shuffled != rows and _versions(tmp_path, shuffled, name="shuffled.csv") == base
    parts = tmp_path / "parts"
    parts.mkdir()
    _write(parts / "a.csv", shuffled[:10])
    _write(parts / "b.csv", shuffled[10:])
    assert day_versions(_cfg(parts), DAYS) == base
    # a duplicated row counts twice (a multiset, not a set)
    assert _changed(base, _versions(tmp_path, [*rows, rows[0]])) == {DAYS[0].isoformat()}


def test_the_version_counts_exactly_the_rows_read_file_source_returns(tmp_path):
    rows = [*_rows(), f"u1,i1,like,{_ts(DAYS[1], 5)}", "u1,i1,view,never", "short,row", f",i1,view,{_ts(DAYS[3], 1)}"]
    cfg = _cfg(_write(tmp_path / "e.csv", rows))
    v = day_versions(cfg, DAYS)
    counts = {}
    for day in DAYS[:5]:
        b = read_file_source(cfg, day)
        counts[day.isoformat()] = n = b.events.height + b.quarantine.height
        assert v[day.isoformat()] == EMPTY_VERSION if n == 0 else v[day.isoformat()].startswith(f"{n}-")
    # D1: 6 events + 2 rows with no day of their own; D2: 6 + "like"; D3 empty; D4: 6 + no user
    assert list(counts.values()) == [8, 7, 0, 7, 6]


def test_the_layout_is_part_of_the_version_of_days_with_rows(tmp_path):
    f = _write(tmp_path / "e.csv", _rows())
    base = day_versions(_cfg(f), DAYS)
    remapped = day_versions(_cfg(f, behavior_map={"view": "view", "cart": "fav", "buy": "buy"}), DAYS)
    with_rows = {d for d, x in base.items() if x not in (None, EMPTY_VERSION)}
    assert _changed(base, remapped) == with_rows  # empty and not-arrived days keep theirs


def test_empty_source_has_no_day_and_parquet_sources_work(tmp_path):
    assert set(day_versions(_cfg(_write(tmp_path / "h.csv", [])), DAYS).values()) == {None}
    df = pl.read_csv(_write(tmp_path / "e.csv", _rows()))
    df.write_parquet(tmp_path / "e.parquet")
    v = day_versions(_cfg(tmp_path / "e.parquet"), DAYS)
    df.sample(fraction=1.0, shuffle=True, seed=1).write_parquet(tmp_path / "s.parquet")
    assert day_versions(_cfg(tmp_path / "s.parquet"), DAYS) == v
    assert v[DAYS[2].isoformat()] == EMPTY_VERSION and v[DAYS[5].isoformat()] is None
    assert v[DAYS[0].isoformat()].startswith("6-")


def _reference_hash(text: str) -> int:
    """FNV-1a 64 of the UTF-8 bytes, length mixed in, splitmix64 finaliser: in plain Python."""
    m = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & m
    golden = 0x9E3779B97F4A7C15
    z = ((h ^ (len(text.encode()) * golden & m)) + golden) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_row_hashes_are_pinned(tmp_path):
    """The hash is part of every data version: a change here re-ingests every day, so it must be
    deliberate (then bump versions._SCHEME and update the pinned values)."""
    texts = ["", "a", "1,2,3,pv,1511544070", None, "\u00e9"]
    h = row_hashes(pl.Series(texts)).to_list()
    assert h[3] is None
    assert h[:3] + h[4:] == [_reference_hash(t) for t in texts if t is not None]
    assert h[1] == 16625141593866473567
    # a slice of a longer series (an Arrow offset) hashes the same
    assert row_hashes(pl.Series(["x", *texts]).slice(1)).to_list() == h
    f = _write(tmp_path / "pin.csv", ["u1,i1,view,1772330400", "u2,i2,buy,1772334000"])
    assert day_versions(_cfg(f), [date(2026, 3, 1)]) == {"2026-03-01": "2-54a205bf3ebbab663f9f"}


def test_synthetic_versions_hash_the_generator_inputs(monkeypatch):
    cfg = source_config(kind="synthetic", start_date="2026-01-01", seed=7)
    days = [date(2025, 12, 31), date(2026, 1, 1), date(2026, 1, 2), date(2030, 1, 1)]
    v = day_versions(cfg, days)
    assert v["2025-12-31"] is None  # before start_date
    assert all(v[d.isoformat()].startswith("synthetic-") for d in days[1:])  # open-ended
    assert len(set(v.values())) == 4 and v == day_versions(cfg, days)
    for other in (dict(seed=8), dict(preset="medium"), dict(start_date="2025-12-01")):
        w = day_versions(source_config(**{"kind": "synthetic", "start_date": "2026-01-01", "seed": 7, **other}), days[1:3])
        assert all(w[d] != v[d] for d in w), other
    bounded = day_versions(source_config(kind="synthetic", start_date="2026-01-01", end_date="2026-01-02", seed=7), days)
    assert bounded["2030-01-01"] is None and bounded["2026-01-02"] == v["2026-01-02"]
    monkeypatch.setattr(versions, "_synthetic_code_hash", lambda: "edited generator")
    assert all(x != v[d] for d, x in day_versions(cfg, days[1:]).items())


def test_source_timezone():
    assert source_timezone(source_config(kind="taobao", path="x.csv")) == "Asia/Shanghai"
    assert source_timezone(source_config(kind="tmall", path="x.csv")) == "Asia/Shanghai"
    assert source_timezone(source_config(kind="taobao", path="x.csv", timezone="Etc/UTC")) == "Etc/UTC"
    assert source_timezone(source_config(kind="table", path="x.csv", columns=COLUMNS, timezone="Europe/Paris")) == "Europe/Paris"
    assert source_timezone(source_config(kind="table", path="x.csv", columns=COLUMNS)) == "UTC"
    assert source_timezone(source_config(kind="synthetic", timezone="America/New_York")) == "America/New_York"


def _need(path):
    """``path``, or a skip (a failure under CI, tests/conftest.py) when the excerpt is absent."""
    if not path.exists():
        pytest.skip(f"real data excerpt {path} is absent (expected read-only in ../shared/data)")
    return path


def test_taobao_excerpt_has_a_version_for_each_of_its_nine_days():
    cfg = source_config(kind="taobao", path=str(_need(TAOBAO_HEAD)), start_date="2017-11-25")
    days = [date(2017, 11, 24) + timedelta(days=i) for i in range(12)]
    v = day_versions(cfg, days)
    inside = [d.isoformat() for d in days[1:10]]
    assert all(v[d] not in (None, EMPTY_VERSION) for d in inside), v
    assert len({v[d] for d in inside}) == 9
    assert v["2017-11-24"] is None  # before start_date (its outlier rows are outside the range)
    assert v["2017-12-04"] is None and v["2017-12-05"] is None  # after the last day: not arrived
    b = read_file_source(cfg, date(2017, 11, 26))
    assert v["2017-11-26"].startswith(f"{b.events.height + b.quarantine.height}-")


def test_tmall_sample_days_are_versions_or_empty_until_its_last_day():
    cfg = source_config(kind="tmall", path=str(_need(TMALL_LOG)), start_date="2014-05-11")
    days = [date(2014, 5, 11) + timedelta(days=i) for i in range(190)]
    v = day_versions(cfg, days)
    last = max(d for d in v if v[d] is not None)
    assert last == "2014-11-11" and all(v[d] is not None for d in v if d <= last)
    assert sum(int(x.split("-")[0]) for x in v.values() if x not in (None, EMPTY_VERSION)) == 3000
