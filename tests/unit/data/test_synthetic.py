"""The synthetic traffic source: determinism, schema, funnel, skew, planted signal, drift."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from ml_core.data.schema import BEHAVIORS, EVENT_SCHEMA
from ml_core.data.synthetic import PRESETS, SyntheticSpec, SyntheticTraffic

START = date(2026, 1, 1)


@pytest.fixture(scope="module")
def traffic() -> SyntheticTraffic:
    return SyntheticTraffic("small", seed=7, start_date=START)


@pytest.fixture(scope="module")
def days(traffic) -> dict[int, pl.DataFrame]:
    return {k: traffic.events(START + timedelta(days=k)) for k in range(3)}


def _mi(x: np.ndarray, y: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two small non-negative int arrays."""
    t = np.zeros((x.max() + 1, y.max() + 1))
    np.add.at(t, (x, y), 1)
    p = t / t.sum()
    pxy = p.sum(1, keepdims=True) @ p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / pxy[nz])).sum())


def _entropy(y: np.ndarray) -> float:
    p = np.bincount(y) / y.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


# ---------------------------------------------------------------- determinism
def test_same_seed_and_day_gives_identical_frame(traffic, days):
    again = SyntheticTraffic("small", seed=7, start_date=START).events(START)
    assert again.equals(days[0])
    assert traffic.events("2026-01-01").equals(days[0])  # str day, same instance


def test_different_day_or_seed_differs(days):
    assert not days[0].equals(days[1])
    other = SyntheticTraffic("small", seed=8, start_date=START).events(START)
    assert not other.equals(days[0])


def test_any_day_independent_of_generation_order():
    d5 = START + timedelta(days=5)
    alone = SyntheticTraffic("small", seed=3, start_date=START).events(d5)
    seq = SyntheticTraffic("small", seed=3, start_date=START)
    for k in range(5):
        seq.events(START + timedelta(days=k))
    assert seq.events(d5).equals(alone)
    # far days (and days before start) work directly
    far = SyntheticTraffic("small", seed=3, start_date=START)
    assert far.events(START + timedelta(days=400)).height > 0
    assert far.events(START - timedelta(days=3)).height > 0


# ---------------------------------------------------------------- schema and funnel
def test_schema_day_and_vocabulary(traffic, days):
    for k, df in days.items():
        day = START + timedelta(days=k)
        assert df.schema == pl.Schema(EVENT_SCHEMA)
        assert df.null_count().sum_horizontal().item() == 0
        assert df["ds"].unique().to_list() == [day]
        assert df["ts"].dt.date().unique().to_list() == [day]
        assert set(df["behavior"].unique()) <= set(BEHAVIORS)
        assert df["user_id"].min() >= 1 and df["user_id"].max() <= traffic.spec.n_users
        assert df["item_id"].min() >= 1 and df["item_id"].max() <= traffic.spec.n_items
        # sorted by (ts, user_id)
        assert df.select(["ts", "user_id"]).equals(df.select(["ts", "user_id"]).sort(["ts", "user_id"]))
        # the events' category is the item's profile category
        cat = traffic.item_profiles()["category"].to_numpy()
        assert (df["category"].to_numpy() == cat[df["item_id"].to_numpy() - 1]).all()


def test_funnel_every_action_follows_a_view(days):
    for df in days.values():
        first_view = (
            df.filter(pl.col("behavior") == "view").group_by("user_id", "item_id").agg(pl.col("ts").min().alias("tv"))
        )
        acts = df.filter(pl.col("behavior") != "view").join(first_view, on=["user_id", "item_id"], how="left")
        assert acts["tv"].null_count() == 0
        assert (acts["ts"] >= acts["tv"]).all()


def test_funnel_rates_plausible(days):
    for df in days.values():
        counts = dict(df.group_by("behavior").len().iter_rows())
        views = counts["view"]
        assert 20_000 <= df.height <= 30_000
        cart, fav, buy = counts["cart"] / views, counts["fav"] / views, counts["buy"] / views
        assert 0.04 <= cart <= 0.09
        assert 0.015 <= fav <= 0.045
        assert 0.012 <= buy <= 0.04
        assert buy < cart
        # most buys follow a cart of the same pair
        carted = df.filter(pl.col("behavior") == "cart").select("user_id", "item_id").unique()
        buys = df.filter(pl.col("behavior") == "buy").select("user_id", "item_id")
        assert buys.join(carted, on=["user_id", "item_id"], how="semi").height > 0.6 * buys.height


# ---------------------------------------------------------------- skew
def test_power_law_popularity_and_activity(traffic, days):
    views = days[0].filter(pl.col("behavior") == "view")
    n_items = traffic.spec.n_items
    per_item = np.sort(np.bincount(views["item_id"].to_numpy(), minlength=n_items + 1)[1:])[::-1]
    assert per_item[: n_items // 10].sum() > 0.4 * per_item.sum()
    per_user = np.sort(days[0].group_by("user_id").len()["len"].to_numpy())[::-1]
    assert per_user[: per_user.size // 10].sum() > 0.3 * per_user.sum()
    assert per_user[0] > 10 * np.median(per_user)


# ---------------------------------------------------------------- planted signal
def test_affinity_orders_bought_viewed_random(traffic, days):
    df, day = days[0], START
    pairs = lambda b: df.filter(pl.col("behavior") == b).select("user_id", "item_id").unique()  # noqa: E731
    bought = pairs("buy")
    viewed_only = pairs("view").join(bought, on=["user_id", "item_id"], how="anti")
    rng = np.random.default_rng(0)
    ru = rng.integers(1, traffic.spec.n_users + 1, 20_000)
    ri = rng.integers(1, traffic.spec.n_items + 1, 20_000)
    a_buy = traffic.affinity(bought["user_id"].to_numpy(), bought["item_id"].to_numpy(), day).mean()
    a_view = traffic.affinity(viewed_only["user_id"].to_numpy(), viewed_only["item_id"].to_numpy(), day).mean()
    a_rand = traffic.affinity(ru, ri, day).mean()
    assert a_buy > a_view + 0.1
    assert a_view > a_rand + 0.3


def test_co_interaction_carries_community_signal(traffic, days):
    import scipy.sparse as sp

    df = pl.concat([days[0], days[1]]).select("user_id", "item_id").unique()
    n_u, n_i = traffic.spec.n_users, traffic.spec.n_items
    m = sp.csr_matrix(
        (np.ones(df.height), (df["user_id"].to_numpy() - 1, df["item_id"].to_numpy() - 1)), shape=(n_u, n_i)
    )
    active = np.unique(df["user_id"].to_numpy() - 1)
    rng = np.random.default_rng(1)
    a, b = rng.choice(active, 20_000), rng.choice(active, 20_000)
    keep = a != b
    a, b = a[keep], b[keep]
    shared = np.asarray(m[a].multiply(m[b]).sum(axis=1)).ravel()
    comm = traffic.user_community(START)
    same = comm[a] == comm[b]
    assert same.sum() > 500 and (~same).sum() > 500
    assert shared[same].mean() > 2.0 * shared[~same].mean()
    # the items a user touched reveal the user's community far better than chance
    item_comm = traffic.item_community[df["item_id"].to_numpy() - 1]
    votes = np.zeros((n_u, traffic.spec.n_communities))
    np.add.at(votes, (df["user_id"].to_numpy() - 1, item_comm), 1)
    assert (votes[active].argmax(1) == comm[active]).mean() > 0.7


def test_features_carry_partial_signal(traffic):
    users, items = traffic.user_profiles(), traffic.item_profiles()
    n_u, n_i = traffic.spec.n_users, traffic.spec.n_items
    assert users["user_id"].to_list() == list(range(1, n_u + 1))
    assert items["item_id"].to_list() == list(range(1, n_i + 1))
    for df, prefix in ((users, "u_"), (items, "i_")):
        cats = [c for c in df.columns if c.startswith(prefix + "cat_")]
        nums = [c for c in df.columns if c.startswith(prefix + "num_")]
        assert len(cats) >= 2 and len(nums) >= 3
        for c in cats:
            assert df[c].dtype == pl.Int64 and df[c].min() >= 0 and df[c].max() < 10_000
        for c in nums:
            assert df[c].dtype == pl.Float32 and df[c].is_finite().all()
    assert items["category"].dtype == pl.Int64
    assert items["category"].max() < traffic.spec.n_categories

    comm = traffic.user_community(START - timedelta(days=1))  # profiles describe the start world
    h = _entropy(comm)
    for c in ("u_cat_age", "u_cat_gender", "u_cat_city"):
        mi = _mi(users[c].to_numpy(), comm)
        assert 0.03 < mi < 0.5 * h, (c, mi, h)
    # item categories: strongly but not fully tied to communities
    mi = _mi(items["category"].to_numpy(), traffic.item_community)
    assert 0.3 < mi < 0.8 * _entropy(traffic.item_community)
    # dense taste features: correlated with the latent affinity structure, but noisy
    x = users.select([c for c in users.columns if c.startswith("u_num_taste")]).to_numpy()
    onehot = np.eye(traffic.spec.n_communities)[comm]
    coef, *_ = np.linalg.lstsq(np.c_[x, np.ones(n_u)], onehot, rcond=None)
    acc = ((np.c_[x, np.ones(n_u)] @ coef).argmax(1) == comm).mean()
    chance = np.bincount(comm).max() / n_u
    assert chance + 0.05 < acc < 0.6


# ---------------------------------------------------------------- drift
def test_drift_between_days(traffic, days):
    lp = lambda k: np.log(traffic.item_popularity(START + timedelta(days=k)))  # noqa: E731
    c1 = np.corrcoef(lp(0), lp(1))[0, 1]
    c60 = np.corrcoef(lp(0), lp(60))[0, 1]
    assert 0.9 < c1 < 0.9999
    assert c60 < c1 - 0.05
    n_items = traffic.spec.n_items
    counts = [
        np.bincount(days[k].filter(pl.col("behavior") == "view")["item_id"].to_numpy(), minlength=n_items + 1)
        for k in (0, 1)
    ]
    cc = np.corrcoef(counts[0], counts[1])[0, 1]
    assert 0.8 < cc < 0.999
    # a small share of users switch community over time
    moved_1 = (traffic.user_community(START + timedelta(days=1)) != traffic.user_community(START)).mean()
    moved_90 = (traffic.user_community(START + timedelta(days=90)) != traffic.user_community(START)).mean()
    assert moved_1 < 0.01 and 0.02 < moved_90 < 0.3


# ---------------------------------------------------------------- presets and API
def test_presets_and_bad_input():
    assert set(PRESETS) == {"small", "medium", "large"}
    assert all(isinstance(s, SyntheticSpec) for s in PRESETS.values())
    assert PRESETS["small"].n_users < PRESETS["medium"].n_users < PRESETS["large"].n_users
    with pytest.raises(ValueError):
        SyntheticTraffic("huge")
    with pytest.raises(ValueError):
        SyntheticTraffic("small").affinity(np.array([0]), np.array([1]), START)


@pytest.mark.slow
def test_large_preset_is_ijcai_scale():
    spec = PRESETS["large"]
    assert 0.9e6 <= spec.n_users + spec.n_items <= 1.2e6
    traffic = SyntheticTraffic("large", seed=7, start_date=START)
    df = traffic.events(START)
    assert df.schema == pl.Schema(EVENT_SCHEMA)
    # ~4M distinct edges per 7 days means roughly 0.5-0.7M distinct edges per day
    edges = df.select("user_id", "item_id").n_unique()
    assert 400_000 < edges < 900_000
