"""Logs and attribute tables in their published shape, read by configuration alone: headerless
files with columns named by position (``names``), integer behaviour codes, ``YYYYMMDD`` dates, a
log without a behaviour column (``behavior = "buy"``), negative "unknown" codes and a list-valued
attribute (``multi_hot``). Tiny files in tmp_path, then the shipped configs on the real files in
../shared/data (read-only)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import polars as pl
import pytest

import ml_core.data.attributes as attributes_module
from ml_core.preflight import check_runnable
from ml_core.config import load_config, source_config
from ml_core.data.attributes import check_attributes, load_attributes, read_attributes
from ml_core.data.readers import check_file_source, read_file_source
from ml_core.data.sources import attributes, read_day
from ml_core.data.versions import file_day_versions
from ml_core.node_features import build_node_features
from ml_core.typed import ConfigError
from tests.conftest import REPO, SHARED_DATA
from tests.source_profile import scan_file_source

CODES = {"1": "view", "2": "fav", "3": "cart", "4": "buy"}


def _edges(tmp_path, lines: list[str]):
    p = tmp_path / "edges.txt"
    p.write_text("".join(f"{line}\n" for line in lines))
    return source_config(kind="table", path=str(p), separator="\t", names=["u", "i", "b", "d"],
                         columns={"user_id": "u", "item_id": "i", "behavior": "b", "ts": "d"}, behavior_map=CODES,
                         ts_format="%Y%m%d", timezone="Asia/Shanghai", start_date="2019-06-15", end_date="2019-06-16")


def test_headerless_codes_and_yyyymmdd_dates(tmp_path):
    cfg = _edges(tmp_path, [
        "7\t100\t1\t20190616",     # line 1 is data: no header is skipped
        "7\t101\t4\t20190616",
        "8\t100\t3\t20190615",
        "8\t102\t9\t20190616",     # unknown behaviour code
        "9\t100\t1\t2019-06-16",   # not YYYYMMDD
        "9\t100\t1",               # truncated
        "\t100\t2\t20190616",      # no user
        "",
        "9\t103\t2\t20190617",     # after end_date
    ])
    assert check_file_source(cfg) == [cfg.path]
    b = read_file_source(cfg, "2019-06-16")
    ev = b.events
    assert ev["user_id"].to_list() == [7, 7] and ev["item_id"].to_list() == [100, 101]
    assert ev["behavior"].to_list() == ["view", "buy"]
    # a date without a time is midnight in the source's timezone
    assert set(ev["ts"]) == {datetime(2019, 6, 15, 16, tzinfo=UTC)} and set(ev["ds"]) == {date(2019, 6, 16)}
    q = {r["source_row"]: r["reason"] for r in b.quarantine.iter_rows(named=True)}
    assert q == {4: "unknown behavior '9'", 7: "missing user_id"}  # on their own day
    s = b.stats
    assert s["reasons"] == {"missing user_id": 1, "unknown behavior '9'": 1}
    assert s["rows_read"] == 8 and s["blank_lines"] == 1 and s["rows_outside_range"] == 1
    # no readable day: filed under the first partition day, with its reason and line text
    first = read_file_source(cfg, "2019-06-15")
    assert first.events.row(0, named=True)["behavior"] == "cart"
    fq = {r["source_row"]: (r["reason"], r["raw"]) for r in first.quarantine.iter_rows(named=True)}
    assert fq == {5: ("bad timestamp", "9\t100\t1\t2019-06-16"),
                  6: ("wrong number of fields (got 3, expected 4)", "9\t100\t1")}
    assert s["rows_read"] == s["rows_in_range"] + s["rows_outside_range"] + s["rows_quarantined_total"]


def test_headerless_names_checked(tmp_path):
    cfg = _edges(tmp_path, ["7\t100\t1\t20190616"])
    bad = replace(cfg, names=["u", "i", "b", "date"])
    with pytest.raises(ValueError, match=r"column 'd' \(mapped to 'ts'.*\['u', 'i', 'b', 'date'\]"):
        check_file_source(bad)
    with pytest.raises(ValueError, match="repeats a name"):
        check_file_source(replace(cfg, names=["u", "i", "b", "d", "u"]))


def test_item_table_gives_the_events_category(tmp_path):
    """A log without a category column takes the item table's (``item_attributes.category``)."""
    cfg = _edges(tmp_path, ["7\t100\t1\t20190616", "7\t101\t4\t20190616", "8\t102\t1\t20190616"])
    items = tmp_path / "items.txt"
    items.write_text("100\t33\t5000\n101\t33\t-1\n")
    table = {"path": str(items), "separator": "\t", "names": ["item", "top", "cat"], "id": "item",
             "columns": {"top": "categorical"}}
    assert read_day(cfg, date(2019, 6, 16)).events["category"].to_list() == [None, None, None]
    with_cats = source_config(**{k: getattr(cfg, k) for k in ("kind", "path", "separator", "names", "columns",
                                                                "behavior_map", "ts_format", "timezone", "start_date")},
                              item_attributes={**table, "category": "cat"})
    check_attributes(with_cats.item_attributes, "item")
    ev = read_day(with_cats, date(2019, 6, 16)).events
    assert dict(zip(ev["item_id"], ev["category"])) == {100: 5000, 101: None, 102: None}  # -1 / absent: unknown
    # the day's version follows the item table's categories
    version = file_day_versions(with_cats, [date(2019, 6, 16)])
    assert version != file_day_versions(cfg, [date(2019, 6, 16)])
    items.write_text("100\t33\t5001\n101\t33\t-1\n")
    assert file_day_versions(with_cats, [date(2019, 6, 16)]) != version
    with pytest.raises(ValueError, match=r"column\(s\) \['kind'\] not in"):
        check_attributes(replace(with_cats.item_attributes, category="kind"), "item")
    with pytest.raises(ConfigError, match="only an item table gives the items' category"):
        source_config(kind="table", user_attributes={**table, "category": "cat"})


def _purchase_log(tmp_path) -> str:
    p = tmp_path / "transactions.csv"
    p.write_text("customer,product,time\nc1,p1,2024-05-01 10:00\nc2,p1,2024-05-01 11:30\nc1,p2,2024-05-02 09:00\n"
                 "c3,,2024-05-02 09:10\n")
    return str(p)


def test_purchase_only_log_by_configuration(tmp_path):
    """A transaction log (no behaviour column): ``behavior = "buy"`` in the config, the file as is."""
    path = _purchase_log(tmp_path)
    toml = tmp_path / "shop.toml"
    toml.write_text(f'[source]\nkind = "table"\npath = "{path}"\nbehavior = "buy"\nts_format = "%Y-%m-%d %H:%M"\n'
                    'columns = { user_id = "customer", item_id = "product", ts = "time" }\n'
                    'start_date = "2024-05-01"\nend_date = "2024-05-02"\n'
                    f'[storage]\nroot = "{tmp_path / "lake"}"\n')
    cfg = load_config(toml)
    check_runnable(cfg)
    day = read_day(cfg.source, date(2024, 5, 1))
    assert day.events["behavior"].to_list() == ["buy", "buy"] and day.events.height == 2
    b = read_file_source(cfg.source, "2024-05-02")
    assert b.events["behavior"].to_list() == ["buy"]
    assert b.stats["reasons"] == {"missing item_id": 1}  # bad rows still quarantined
    # the same task mapping as any log: every purchase is a click too
    assert cfg.samples.tasks == {"click": ["view", "cart", "fav", "buy"], "purchase": ["buy"]}
    # the constant is part of the day's version (the same rows read as another behaviour differ)
    fav = replace(cfg.source, behavior="fav")
    assert file_day_versions(cfg.source, [date(2024, 5, 1)]) != file_day_versions(fav, [date(2024, 5, 1)])


@pytest.mark.parametrize(("change", "message"), [
    ({"behavior": ""}, r"missing the mapping for \['behavior'\].*set source.behavior"),
    ({"behavior": "purchase"}, r"source.behavior 'purchase' is not a known behaviour"),
    ({"columns": {"user_id": "customer", "item_id": "product", "ts": "time", "behavior": "time"}},
     "are both set; keep one"),
])
def test_purchase_only_log_misconfigured(tmp_path, change, message):
    args = dict(kind="table", path=_purchase_log(tmp_path), behavior="buy", ts_format="%Y-%m-%d %H:%M",
                columns={"user_id": "customer", "item_id": "product", "ts": "time"}, start_date="2024-05-01")
    with pytest.raises(ValueError, match=message):
        check_file_source(source_config(**{**args, **change}))


def _users(tmp_path, text: str, **kw):
    p = tmp_path / "users.txt"
    p.write_text(text)
    return source_config(kind="tmall", path=str(p), user_attributes={
        "path": str(p), "separator": "\t", "names": ["uid", "gender", "career", "income", "stage"], "id": "uid",
        "columns": {"gender": "categorical", "career": "categorical", "income": "numeric", "stage": "multi_hot"},
        **kw}).user_attributes


def test_headerless_attributes_negative_codes_and_multi_hot(tmp_path):
    table = _users(tmp_path, "1\t0\t-1\t100.5\t3,1,10\n"
                             "2\t1\t4\tx\t\n"            # bad income, empty list
                             "3\t1\t2\t7\t1\textra\n"    # one field too many: read where present
                             "\t0\t2\t7\t1\n"            # no id: dropped
                             "1\t1\t1\t1\t1\n"           # duplicate id: the first row wins
                             "4\t0\t5\n")                # short: the missing fields are unknown
    df, report = load_attributes(table, "user")
    stage = ["u_num_stage_1", "u_num_stage_3", "u_num_stage_10"]  # numeric order, not text order
    assert df.columns == ["user_id", "u_cat_gender", "u_cat_career", "u_num_income", *stage, "u_num_stage__n"]
    rows = {r[0]: r[1:] for r in df.iter_rows()}
    assert rows == {1: (0, None, 100.5, 1.0, 1.0, 1.0, 3.0),   # career -1 = unknown
                    2: (1, 4, None, 0.0, 0.0, 0.0, 0.0),
                    3: (1, 2, 7.0, 1.0, 0.0, 0.0, 1.0),
                    4: (0, 5, None, 0.0, 0.0, 0.0, 0.0)}
    assert report == {"rows_read": 6, "rows_kept": 4, "problems": {
        "wrong number of fields (read where present)": 2, "bad numeric income (unknown)": 1,
        "missing id (dropped)": 1, "duplicate id (first row kept)": 1}}
    events = pl.DataFrame({"user_id": [1, 9], "item_id": [5, 5], "behavior": ["view", "view"],
                           "category": [None, None], "ds": [date(2019, 6, 1)] * 2}).with_columns(
        pl.col("category").cast(pl.Int64))
    users, _ = build_node_features(events, None, None, df, None)
    # the unknown code -1, and 0 for every stage column of a user absent from the table
    assert users.filter(pl.col("user_id") == 1)["u_cat_career"].item() == -1
    assert users.filter(pl.col("user_id") == 9).select(*stage, "u_num_stage__n").row(0) == (0.0, 0.0, 0.0, 0.0)


def test_multi_hot_keeps_the_most_frequent_values(tmp_path, monkeypatch):
    monkeypatch.setattr(attributes_module, "MAX_MULTI_HOT", 2)
    table = _users(tmp_path, "1\t0\t1\t1\tB|a b|c\n2\t0\t1\t1\tb|c\n3\t0\t1\t1\tc|d|d\n", list_separator="|")
    df = read_attributes(table, "user")
    cols = [c for c in df.columns if c.startswith("u_num_stage")]
    assert cols == ["u_num_stage_b", "u_num_stage_c", "u_num_stage__other", "u_num_stage__n"]  # values lower-cased
    # "a b" -> a_b and d are the rarer values (one each): counted in _other
    assert df.select(cols).rows() == [(1.0, 1.0, 1.0, 3.0), (1.0, 1.0, 0.0, 2.0), (0.0, 1.0, 1.0, 2.0)]
    # values named like the count columns do not collide with them
    named = read_attributes(_users(tmp_path, "1\t0\t1\t1\tn|Other\n", list_separator="|"), "user")
    assert named.select(pl.selectors.starts_with("u_num_stage")).row(0, named=True) == {
        "u_num_stage_n": 1.0, "u_num_stage_other": 1.0, "u_num_stage__n": 2.0}
    with pytest.raises(ConfigError, match="list_separator = '': expected one character"):
        _users(tmp_path, "", list_separator="")


def test_attribute_names_checked(tmp_path):
    table = _users(tmp_path, "1\t0\t1\t1\t1\n")
    bad = replace(table, columns={"age": "categorical"})
    with pytest.raises(ValueError, match=r"column\(s\) \['age'\] not in source.user_attributes.names"):
        check_attributes(bad, "user")


# ------------------------------------------------------------------- the shipped configs, real files


def _shipped(name: str, monkeypatch):
    monkeypatch.chdir(REPO)  # the configs' paths are relative to the repository root
    cfg = load_config(REPO / "data" / "configs" / name)
    for p in [cfg.source.path, *(t.path for t in (cfg.source.user_attributes, cfg.source.item_attributes) if t)]:
        if not (REPO / p).exists():
            pytest.skip(f"real data {p} is absent (expected read-only in {SHARED_DATA})")
    check_runnable(cfg)
    return cfg


def test_cikm2019_config_reads_the_shipped_files(monkeypatch):
    cfg = _shipped("cikm2019.toml", monkeypatch)
    p = scan_file_source(cfg.source)
    assert p.rows_read == p.rows_in_range == 85_213 and p.rows_quarantined == 0 and p.rows_outside_range == 0
    assert len(p.rows_by_day()) == 10 and (p.first_day, p.last_day) == (date(2019, 6, 10), date(2019, 6, 19))
    assert p.days.select(pl.col("view", "fav", "cart", "buy").sum()).row(0) == (57_917, 5_529, 15_066, 6_701)
    assert p.n_users == 1_476 and p.n_items == 34_505  # SOURCE.md
    reports = {}
    users, items = attributes(cfg.source, reports)
    assert reports == {"user": {"rows_read": 1_500, "rows_kept": 1_500, "problems": {}},
                       "item": {"rows_read": 36_224, "rows_kept": 36_224, "problems": {}}}
    # first line: 22479  1  5  -1  10  15203.1  1,6,4,8,5,2
    u = users.filter(pl.col("user_id") == 22479).row(0, named=True)
    assert (u["u_cat_gender"], u["u_cat_age_level"], u["u_cat_education"], u["u_cat_career"]) == (1, 5, None, 10)
    assert u["u_num_income"] == pytest.approx(15203.1) and u["u_num_stage__n"] == 6
    assert [u[f"u_num_stage_{k}"] for k in range(1, 11)] == [1, 1, 0, 1, 1, 1, 0, 1, 0, 0]
    # first line: 224658783  33  50002833  0  21.8
    i = items.filter(pl.col("item_id") == 224658783).row(0, named=True)
    assert (i["i_cat_top_category"], i["i_cat_brand"]) == (33, 0)
    assert i["i_num_price"] == pytest.approx(21.8)
    # the events take their category from the item table (every item of the log is in it); rows
    # the file repeats (4,270 in all, 691 of them on 06-16) are dropped by validation and counted
    day = read_day(cfg.source, date(2019, 6, 16))
    assert day.events["category"].null_count() == 0 and day.stats["quarantined"] == 0
    assert day.stats["validate"]["duplicates_removed"] == 691 and day.stats["rows"] == 16_020 - 691
    # first 06-16 line: 23067537  1184664230  1  20190616; item table: 1184664230  33  50514013  0  52.2
    first = day.events.filter((pl.col("user_id") == 23067537) & (pl.col("item_id") == 1184664230))
    assert first.select("behavior", "category").unique().rows() == [("view", 50514013)]


def test_tmall_history_config_reads_the_shipped_file(monkeypatch):
    cfg = _shipped("tmall_history.toml", monkeypatch)
    whole = replace(cfg.source, start_date="2015-05-11")
    p = scan_file_source(whole)
    assert p.rows_read == p.rows_in_range == 359_103 and p.rows_quarantined == 0
    assert len(p.rows_by_day()) == 169 and (p.first_day, p.last_day) == (date(2015, 5, 11), date(2015, 11, 11))
    assert p.days.select(pl.col("view", "fav", "cart", "buy").sum()).row(0) == (0, 158_119, 1_330, 199_654)
    assert p.n_users == 22_438 and p.n_items == 35_229
    # the configured range: 84 days (08-20 .. 11-11), 8 of them empty (the log has no 29th-31st)
    days = scan_file_source(cfg.source).rows_by_day()
    assert len(days) == 76 and date(2015, 10, 30) not in days and days[date(2015, 11, 11)] == 55_930
    # midnight China time is the day itself
    b = read_file_source(cfg.source, "2015-11-11")
    assert set(b.events["ts"]) == {datetime(2015, 11, 10, 16, tzinfo=UTC)} and b.quarantine.height == 0
