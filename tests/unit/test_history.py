"""The users' window history (ml_core/history.py): its tables against a brute-force count, the
pair input of any pair, and that day D's own events never reach day D's history."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from ml_core import stages as P
from ml_core.config import BEHAVIORS
from ml_core.history import (
    HISTORY_COLUMNS,
    KNN_COLUMNS,
    MAX_SEQUENCE,
    PairIndex,
    build_history,
    category_terms,
    pair_features,
    pair_terms,
)
from ml_core.stages.features import run_node_features
from ml_core.stages.inputs import load_features, load_history
from ml_core.stages.windows import graph_window_days
from ml_core.storage import Lake

DAY = date(2026, 1, 8)


def random_events(seed: int = 0, n: int = 400, days: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ds = [DAY - timedelta(days=int(k)) for k in rng.integers(1, days + 1, n)]
    return pl.DataFrame({
        "user_id": rng.integers(1, 12, n), "item_id": rng.integers(1, 30, n),
        "behavior": rng.choice(list(BEHAVIORS), n, p=[0.7, 0.1, 0.1, 0.1]),
        "category": pl.Series(rng.integers(1, 4, n), dtype=pl.Int64),
        "ts": [datetime.combine(d, datetime.min.time()) + timedelta(seconds=int(s))
               for d, s in zip(ds, rng.integers(0, 86_400, n))],
        "ds": ds,
    }).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))


def test_history_tables_equal_a_brute_force_count():
    ev = random_events()
    h = build_history(ev, DAY)
    rows = ev.to_dicts()
    pair, cat, last, last_cat, total = (defaultdict(lambda: defaultdict(int)), defaultdict(lambda: defaultdict(int)),
                                        {}, {}, defaultdict(int))
    for r in rows:
        k, c = (r["user_id"], r["item_id"]), (r["user_id"], r["category"])
        pair[k][r["behavior"]] += 1
        cat[c][r["behavior"]] += 1
        last[k] = max(last.get(k, r["ds"]), r["ds"])
        last_cat[c] = max(last_cat.get(c, r["ds"]), r["ds"])
        total[r["user_id"]] += 1
    got = {(r["user_id"], r["item_id"]): r for r in h["pairs"].to_dicts()}
    assert set(got) == set(pair)
    for k, r in got.items():
        assert [r[f"n_{b}"] for b in BEHAVIORS] == [pair[k][b] for b in BEHAVIORS]
        assert r["days_ago"] == (DAY - last[k]).days
    for r in h["user_categories"].to_dicts():
        c = (r["user_id"], r["category"])
        assert [r[f"n_{b}"] for b in BEHAVIORS] == [cat[c][b] for b in BEHAVIORS]
        assert r["days_ago"] == (DAY - last_cat[c]).days
        assert r["share"] == pytest.approx(sum(cat[c].values()) / total[r["user_id"]])
    # sequences: each user's last events, newest first
    seq = h["sequences"]
    for u, part in seq.group_by("user_id"):
        mine = sorted((r for r in rows if r["user_id"] == u[0]), key=lambda r: r["ts"], reverse=True)
        assert part["pos"].to_list() == list(range(min(len(mine), MAX_SEQUENCE)))
        assert [r["ts"] for r in mine[:2]] == sorted([r["ts"] for r in mine[:2]], reverse=True)
        assert part.sort("pos")["days_ago"].to_list() == [(DAY - r["ds"]).days for r in mine[:MAX_SEQUENCE]]


def test_pair_features_of_known_unknown_and_category_pairs():
    ev = random_events(seed=1)
    h = build_history(ev, DAY)
    items = pl.DataFrame({"item_id": np.arange(1, 40), "category": pl.Series(np.arange(1, 40) % 3 + 1, dtype=pl.Int64)})
    p = h["pairs"].row(0, named=True)
    users = np.array([p["user_id"], 999, p["user_id"]])
    its = np.array([p["item_id"], p["item_id"], 35])  # a known pair; an unknown user; an item the user never saw
    x = pair_features(h, users, its, items)
    assert x.shape == (3, len(HISTORY_COLUMNS)) and x.dtype == np.float32
    col = {c: j for j, c in enumerate(HISTORY_COLUMNS)}
    assert x[0, col["p_num_log_pair_view"]] == pytest.approx(np.log1p(p["n_view"]))
    assert x[0, col["p_num_pair_recency"]] == pytest.approx(1 / (1 + p["days_ago"]))
    assert not x[1].any()  # no history at all
    assert x[2, col["p_num_pair_recency"]] == 0 and x[2, col["p_num_cat_share"]] > 0  # the category is known to the user
    # the same pairs in another order give the same rows
    np.testing.assert_array_equal(pair_features(h, users[::-1], its[::-1], items), x[::-1])


def brute_force_history_rows(h: dict, users: np.ndarray, item_ids: np.ndarray, items: pl.DataFrame):
    """Per pair, by a scan of the tables: its ``pairs`` row and its (user, category of the item)
    ``user_categories`` row, as frames (a row of nulls where there is none)."""
    pairs = {(r["user_id"], r["item_id"]): r for r in h["pairs"].to_dicts()}
    cats = {(r["user_id"], r["category"]): r for r in h["user_categories"].to_dicts()}
    category = dict(zip(items["item_id"].to_list(), items["category"].to_list())) if "category" in items.columns else {}
    none = lambda t: dict.fromkeys(h[t].columns)
    p = [pairs.get((u, i), none("pairs")) for u, i in zip(users.tolist(), item_ids.tolist())]
    c = [cats.get((u, category.get(i)), none("user_categories")) for u, i in zip(users.tolist(), item_ids.tolist())]
    return pl.DataFrame(p, schema=h["pairs"].schema), pl.DataFrame(c, schema=h["user_categories"].schema)


@pytest.mark.parametrize("seed", range(4))
def test_pair_index_equals_a_brute_force_lookup_bit_for_bit(seed):
    """PairIndex (sorted keys and gathers) against a scan of the tables: equal bit for bit, with
    unknown users and items, items without a category (or a table without the column), users
    without history and repeated pairs; the terms also against the formulas in float64."""
    rng = np.random.default_rng(seed)
    ev = random_events(seed, n=int(rng.integers(50, 500)))
    ev = ev.with_columns(pl.when(pl.col("item_id") % 5 == 0).then(None).otherwise(pl.col("category") - 1)  # 0 too
                         .alias("category"))
    h = build_history(ev, DAY)
    ids = rng.permutation(np.arange(1, 36))  # items 36.. are absent from the item table
    items = pl.DataFrame({"item_id": ids, "category": pl.Series(rng.integers(0, 4, len(ids)), dtype=pl.Int64)})
    items = items.with_columns(pl.when(pl.col("item_id") % 7 == 0).then(None).otherwise(pl.col("category")).alias("category"))
    if seed == 3:
        items = items.drop("category")
    users, its = rng.integers(0, 15, 600), rng.integers(0, 40, 600)  # users 12..: no history
    users[:50], its[:50] = users[50:100], its[50:100]
    got = PairIndex(h, items).features(users, its)
    p, c = brute_force_history_rows(h, users, its, items)
    want = np.concatenate([p.select(pair_terms()).to_numpy(), c.select(category_terms()).to_numpy()], axis=1)
    assert got.dtype == np.float32 and got.shape == (600, len(HISTORY_COLUMNS))
    np.testing.assert_array_equal(got.view(np.int32), want.astype(np.float32).view(np.int32))
    np.testing.assert_array_equal(pair_features(h, users, its, items), got)
    counts = lambda f: np.log1p(f.select([f"n_{b}" for b in BEHAVIORS]).fill_null(0).to_numpy().astype(np.float64))
    recency = lambda f: np.nan_to_num(1 / (1 + f["days_ago"].to_numpy().astype(np.float64)))
    formulas = np.column_stack([counts(p), recency(p), counts(c), c["share"].fill_null(0).to_numpy(), recency(c)])
    np.testing.assert_allclose(got, formulas, rtol=1e-6)
    assert (got[:, :5] > 0).any() and (got[:, 5:] > 0).any() == (seed != 3) and not got[users >= 12].any()


def test_knn_columns_are_the_cf_scorers_sums_and_need_the_graphs(synthetic_lake):
    """The pair input's kNN columns are log(1 + s) of the item-kNN / user-kNN scorers' sums on the
    same samples (one implementation), any column order; without the graphs: a clear error."""
    from ml_core.cf import cf_scores
    from ml_core.config.cf import CFConfig

    cfg, lake, days = synthetic_lake
    day = P.load_day_inputs(lake, days[-1])
    cf, _ = cf_scores(day, CFConfig(scorers=["item_knn", "user_knn"]))
    x = day.pair_inputs(list(KNN_COLUMNS))
    np.testing.assert_allclose(x, np.log1p(np.stack([cf["item_knn"], cf["user_knn"]], 1)), rtol=1e-6)
    assert (x > 0).any(axis=0).all()
    both = day.pair_inputs([KNN_COLUMNS[1], HISTORY_COLUMNS[0]])
    np.testing.assert_array_equal(both[:, 0], x[:, 1])
    np.testing.assert_array_equal(both[:, 1], day.pair_inputs(HISTORY_COLUMNS)[:, 0])
    with pytest.raises(ValueError, match="pair_knn = false"):
        dataclasses.replace(day, item_sim=None).pair_inputs(list(KNN_COLUMNS))
    with pytest.raises(ValueError, match="unknown pair input columns"):
        day.pair_inputs(["p_num_nope"])


def test_history_refuses_events_of_its_own_day():
    ev = random_events()
    with pytest.raises(ValueError, match="days before it"):
        build_history(ev, DAY - timedelta(days=2))


def _copy_logs(src: Lake, dst: Lake, days: list[str], extra: dict[str, pl.DataFrame]) -> None:
    for d in days:
        logs = src.read_table("interaction_logs", d)
        if d in extra:
            logs = pl.concat([logs, extra[d].select(logs.columns).cast(logs.schema)])
        dst.write_table("interaction_logs", d, logs)


def test_a_planted_event_on_day_d_changes_no_pair_input_of_day_d(synthetic_lake, tmp_path):
    """Every sample pair of day D gets a buy on day D itself: day D's history and pair inputs
    stay exactly as they were. The same buys planted on D-1 change them (the check can fail)."""
    cfg, lake, days = synthetic_lake
    d = days[-1]
    window = graph_window_days(cfg, d)
    samples = lake.read_table("training_samples", d)
    logs = lake.read_table("interaction_logs", d)

    def planted(on: str) -> pl.DataFrame:
        ts = datetime.combine(date.fromisoformat(on), datetime.min.time()) + timedelta(hours=12)
        return samples.select("user_id", "item_id").with_columns(
            pl.lit("buy").alias("behavior"), pl.lit(ts).dt.replace_time_zone("UTC").alias("ts"),
            pl.lit(None, dtype=pl.Int64).alias("category"), pl.lit(date.fromisoformat(on)).alias("ds"),
            *[pl.lit(None).alias(c) for c in logs.columns if c not in ("user_id", "item_id", "behavior", "ts",
                                                                       "category", "ds")])

    want = P.load_day_inputs(lake, d)
    for on, changes in ((d, False), (window[-1], True)):
        copy = Lake(tmp_path / on)
        _copy_logs(lake, copy, [*window, d], {on: planted(on)})
        run_node_features(cfg, copy, d, window)
        got_history = load_history(copy, d)
        same = all(got_history[t].equals(want.history[t]) for t in want.history)
        got = pair_features(got_history, samples["user_id"].to_numpy(), samples["item_id"].to_numpy(),
                            load_features(copy, d)[1])
        assert same != changes and np.array_equal(got, want.pair_inputs(HISTORY_COLUMNS)) != changes, on


def repeat_day(name: str, seed: int, n_users: int = 200, n_items: int = 60):
    """A day whose labels live on the pair's history: every user has 6 window pairs seen 1..6
    times and 6 unseen candidates; a seen pair is clicked with probability rising with its count
    (0.15 .. 0.9), an unseen one with 0.15, and bought after a click with probability 0.2 + 0.1 n.
    "Already seen" is one flag for all seen pairs; the count separates them."""
    from ml_core.contracts.day import DayInputs

    rng = np.random.default_rng(seed)
    d = date.fromisoformat(name)
    rows, samples = [], []
    for u in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), 12, replace=False)
        for k, i in enumerate(items[:6]):
            n = k + 1
            rows += [(u, int(i), "view", d - timedelta(days=int(rng.integers(1, 4))))] * n
        for k, i in enumerate(items):
            n = k + 1 if k < 6 else 0
            click = rng.random() < (0.15 + 0.15 * (n - 1) if n else 0.15)
            buy = click and rng.random() < 0.2 + 0.1 * n
            samples.append((u, int(i), int(click), int(buy)))
    ev = pl.DataFrame(rows, schema=["user_id", "item_id", "behavior", "ds"], orient="row").with_columns(
        pl.lit(None, dtype=pl.Int64).alias("category"),
        pl.col("ds").cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("ts"))
    s = pl.DataFrame(samples, schema=["user_id", "item_id", "label_click", "label_purchase"], orient="row")
    users = pl.DataFrame({"user_id": np.arange(1, n_users + 1), "u_num_noise": rng.standard_normal(n_users)})
    items = pl.DataFrame({"item_id": np.arange(1, n_items + 1), "i_num_noise": rng.standard_normal(n_items)})
    return DayInputs(name, s, users, items, history=build_history(ev, d))


def test_a_model_with_the_pair_input_beats_seen_pair_on_repeats():
    from ml_core.config import TrainConfig
    from ml_core.eval.metrics import task_metrics
    from ml_core.inference import evaluate
    from ml_core.train.trainer import train

    tasks = ["click", "purchase"]
    train_day, test_day = repeat_day("2026-01-05", 0), repeat_day("2026-01-06", 1)
    cfg = TrainConfig(model="mmoe", epochs=2, batch_size=128, lr=1e-2, dim=8, seed=0, threads=1, validation="none",
                      pair_knn=False)  # the history's columns alone (the days carry no graphs)
    result = train([train_day], cfg, tasks)
    assert result.feature_spec.pair is not None
    got = evaluate(result, result.feature_spec, test_day, cfg.fanouts)
    labels = test_day.samples.select("label_click", "label_purchase").to_numpy().astype(np.float64)
    seen = (test_day.pair_inputs(HISTORY_COLUMNS)[:, 0] > 0).astype(np.float64)
    rule = task_metrics(test_day.samples["user_id"].to_numpy(), labels, np.stack([seen, seen], 1) * 0.5 + 0.25, tasks)
    for t in tasks:
        assert got[t]["gauc"] > rule[t]["gauc"] + 0.04, (t, got[t]["gauc"], rule[t]["gauc"])
    # without the pair input the same model cannot see the repeats at all
    blind = train([train_day], dataclasses.replace(cfg, pair_features=False), tasks)
    assert evaluate(blind, blind.feature_spec, test_day, cfg.fanouts)["click"]["gauc"] < rule["click"]["gauc"]
