"""``source.separator`` and the optional ``user_attributes`` / ``item_attributes`` tables, on the
real data excerpts in ../shared/data (read-only, never copied) and small files in tmp_path."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from ml_core.preflight import check_runnable
from ml_core.config import load_config, source_config
from ml_core.data.attributes import read_attributes
from ml_core.data.readers import check_file_source, read_file_source
from ml_core.data.sources import attributes
from ml_core.node_features import build_node_features, feature_columns
from ml_core.typed import ConfigError
from tests.conftest import SHARED_DATA

TMALL_LOG = SHARED_DATA / "tmall-ijcai15" / "user_log_sample.csv"
TMALL_USERS = SHARED_DATA / "tmall-ijcai15" / "user_info_sample.csv"
TIANCHI = SHARED_DATA / "tianchi-mobile-recommend" / "sample_user_behavior.csv"
TIANCHI_ITEMS = SHARED_DATA / "tianchi-mobile-recommend" / "sample_item_info.csv"

USER_ATTRS = {"id": "user_id", "columns": {"age_range": "categorical", "gender": "categorical"}}


def _need(path: Path) -> str:
    if not path.exists():
        pytest.skip(f"real data excerpt {path} is absent (expected read-only in ../shared/data)")
    return str(path)


def _tmall(**kw):
    return source_config(kind="tmall", path=_need(TMALL_LOG), start_date="2014-05-11", end_date="2014-11-11",
                         user_attributes={"path": _need(TMALL_USERS), **USER_ATTRS}, **kw)


def _tianchi(**kw):
    return source_config(
        kind="table", path=_need(TIANCHI), start_date="2014-11-18", end_date="2014-12-18", timezone="Asia/Shanghai",
        columns={"user_id": "user_id", "item_id": "item_id", "behavior": "behavior_type", "ts": "time"},
        behavior_map={"1": "view", "2": "fav", "3": "cart", "4": "buy"}, ts_format="%Y-%m-%d %H",
        item_attributes={"path": _need(TIANCHI_ITEMS), "id": "item_id",
                         "columns": {"item_category": "categorical"}}, **kw)


def _features(cfg, days: list[str]):
    events = pl.concat([read_file_source(cfg, d).events for d in days])
    return events, build_node_features(events, None, None, *attributes(cfg))


def test_tmall_user_info_joined_onto_user_features():
    cfg = _tmall()
    events, (users, items) = _features(cfg, ["2014-11-11"])
    assert set(users["user_id"]) == set(events["user_id"])  # attributes add columns, not nodes
    cats, _ = feature_columns(users, "u")
    assert {"u_cat_age_range", "u_cat_gender"} <= set(cats)
    rows = {r["user_id"]: (r["u_cat_age_range"], r["u_cat_gender"]) for r in users.iter_rows(named=True)}
    # user_info_sample.csv: 62693,6.0,0.0 / 189455,0.0,1.0 / 420372,0.0,0.0 (all active on 11-11)
    assert rows[62693] == (6, 0) and rows[189455] == (0, 1) and rows[420372] == (0, 0)
    known = set(read_attributes(cfg.user_attributes, "user")["user_id"])
    absent = [u for u in rows if u not in known]
    assert absent and all(rows[u] == (-1, -1) for u in absent)  # missing ids -> unknown
    assert users["u_cat_gender"].dtype == pl.Int64 and users["u_cat_gender"].null_count() == 0
    assert "u_cat_age_range" not in items.columns


def test_attribute_values_empty_hashed_and_numeric(tmp_path):
    table = tmp_path / "users.csv"
    table.write_text("uid,age,city,score\n1,3.0,paris,0.5\n2,,,\nabc,1,lyon,x\n1,4,rome,9\n")
    cfg = source_config(kind="tmall", path=str(table), user_attributes={
        "path": str(table), "id": "uid", "columns": {"age": "categorical", "city": "categorical", "score": "numeric"}})
    df = read_attributes(cfg.user_attributes, "user")
    assert df.columns == ["user_id", "u_cat_age", "u_cat_city", "u_num_score"]
    assert df.height == 3  # duplicate id 1: the first row wins
    first = df.row(0, named=True)
    assert first["user_id"] == 1 and first["u_cat_age"] == 3 and first["u_cat_city"] > 0
    assert first["u_num_score"] == pytest.approx(0.5)
    assert df.row(1) == (2, None, None, None)
    from ml_core.data.schema import stable_id

    assert df.row(2, named=True)["user_id"] == stable_id("abc")  # same hashing as a table source's ids
    events = pl.DataFrame({"user_id": [1, 2, 99], "item_id": [5, 5, 5], "behavior": ["view"] * 3,
                           "category": [None] * 3, "ds": [date(2014, 1, 1)] * 3}).with_columns(
        pl.col("category").cast(pl.Int64))
    users, _ = build_node_features(events, None, None, df, None)
    assert users["u_cat_age"].to_list() == [3, -1, -1] and users["u_num_score"].to_list() == [0.5, 0.0, 0.0]


def test_tianchi_item_category_joined_for_table_source():
    cfg = _tianchi()
    events, (users, items) = _features(cfg, ["2014-11-22", "2014-12-12"])
    cats = dict(zip(items["item_id"].to_list(), items["i_cat_item_category"].to_list()))
    # sample_item_info.csv: 25867604 -> 7995 (seen 2014-11-22 15h), 259125936 -> 7467 (2014-12-12 09h)
    assert cats[25867604] == 7995 and cats[259125936] == 7467
    assert sum(c == -1 for c in cats.values()) == len(cats) - 2  # every other item: unknown
    assert "i_cat_item_category" in feature_columns(items, "i")[0]
    assert "i_cat_item_category" not in users.columns


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def _overrides(source: dict) -> list[str]:
    """``source.key=value`` overrides (TOML literals) for load_config."""
    return [f"source.{k}={_toml(v)}" for k, v in source.items()]


def _write_toml(tmp_path: Path, source: str) -> Path:
    p = tmp_path / "cfg.toml"
    p.write_text(f"[source]\n{source}\n")
    return p


def test_tab_separated_inter_file_needs_separator(tmp_path):
    inter = tmp_path / "ml.inter"
    inter.write_text("user_id\titem_id\trating\ttimestamp\n1\t10\tview\t1600000000\n2\t11\tbuy\t1600000100\n")
    args = dict(kind="table", path=str(inter), start_date="2020-09-13", end_date="2020-09-13",
                columns={"user_id": "user_id", "item_id": "item_id", "behavior": "rating", "ts": "timestamp"})
    with pytest.raises(ValueError, match="not in the header"):  # read as comma-separated: one column
        check_file_source(source_config(**args))
    cfg = source_config(**args, separator="\t")
    assert check_file_source(cfg) == [str(inter)]
    b = read_file_source(cfg, "2020-09-13")
    assert b.events["user_id"].to_list() == [1, 2] and b.events["behavior"].to_list() == ["view", "buy"]
    assert b.quarantine.height == 0
    # the TOML form, through the load-time checks, with a tab-separated attribute table too
    attrs = tmp_path / "items.dat"
    attrs.write_text("item_id\tbrand\n10\t7\n")
    toml = _write_toml(tmp_path, f'kind = "table"\npath = "{inter}"\nseparator = "\\t"\nstart_date = "2020-09-13"\n'
                       'columns = { user_id = "user_id", item_id = "item_id", behavior = "rating", ts = "timestamp" }\n'
                       f'item_attributes = {{ path = "{attrs}", id = "item_id", columns = {{ brand = "categorical" }}, '
                       'separator = "\\t" }')
    loaded = load_config(toml)
    check_runnable(loaded)
    assert loaded.source.separator == "\t"
    assert read_attributes(loaded.source.item_attributes, "item").row(0) == (10, 7)


@pytest.mark.parametrize(("attrs", "message"), [
    ({"path": "/nonexistent/users.csv", **USER_ATTRS}, "source.user_attributes.path '/nonexistent/users.csv'"),
    ({"path": "TMALL", "id": "user_id", "columns": {"age": "categorical"}},
     r"source.user_attributes: column\(s\) \['age'\] not in the header"),
    ({"path": "TMALL", "id": "uid", "columns": {"gender": "categorical"}}, r"column\(s\) \['uid'\] not in the header"),
    ({"path": "TMALL", "id": "user_id", "columns": {}}, "source.user_attributes.columns is empty"),
    ({"path": "TMALL", "columns": {"gender": "numeric"}}, "source.user_attributes.id is empty"),
])
def test_bad_attribute_table_reported_at_load(attrs, message):
    attrs = {**attrs, "path": _need(TMALL_USERS) if attrs["path"] == "TMALL" else attrs["path"]}
    cfg = load_config(None, _overrides({"kind": "tmall", "path": _need(TMALL_LOG), "start_date": "2014-05-11",
                                        "user_attributes": attrs}))
    with pytest.raises(ConfigError, match=message):
        check_runnable(cfg)


@pytest.mark.parametrize(("source", "message"), [
    ({"separator": ";;"}, r"source.separator = ';;': expected one character"),
    ({"user_attributes": {"path": "x", "id": "u", "columns": {"a": "text"}}},
     r"source.user_attributes.columns.a = 'text'"),
    ({"item_attributes": {"path": "x", "id": "i", "columns": {"a": "numeric"}, "separator": "ab"}},
     r"source.item_attributes.separator = 'ab'"),
    ({"user_attributes": {"path": "x", "key": "u"}}, "key"),
])
def test_bad_attribute_config_rejected_by_load_config(source, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, _overrides({"kind": "tmall", "path": "x", **source}))


def test_node_features_stage_joins_attributes(tmp_path):
    """Through the data stages (logs -> node_features) with a tmall source and its user_info
    (this sparse sample's first window stores no similarity entry at all: the incremental refresh
    of the next day reads that empty state)."""
    from ml_core.stages.data_day import run_data_days
    from ml_core.storage import Lake

    cfg = load_config(None, _overrides({"kind": "tmall", "path": _need(TMALL_LOG), "start_date": "2014-11-09",
                                        "end_date": "2014-11-11", "user_attributes": {"path": _need(TMALL_USERS),
                                                                                      **USER_ATTRS}})
                      + [f'storage.root="{tmp_path}"'])
    check_runnable(cfg)
    lake = Lake(tmp_path)
    run_data_days(cfg, lake, ["2014-11-09", "2014-11-10", "2014-11-11"])
    users = lake.read_table("node_features", "2014-11-11")
    assert {"u_cat_age_range", "u_cat_gender"} <= set(users.columns)
    assert users["u_cat_age_range"].null_count() == 0 and (users["u_cat_age_range"] >= -1).all()
