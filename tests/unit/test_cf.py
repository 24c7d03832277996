"""Classical CF scorers (ml_core/cf.py): each score equal to a brute-force loop on a handmade
window, EASE's two forms and its cap, and that they read day D's window graphs only."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from ml_core.cf import Ease, cf_metrics, cf_scores
from ml_core.config import load_config
from ml_core.config.cf import CF_SCORERS, CFConfig
from ml_core.contracts.day import DayInputs
from ml_core.graph.csr import CSR, BipartiteGraph, SimilarityGraph, lookup
from ml_core.stages.evaluation import EvaluationResult, gauc_table
from ml_core.stages.gate import gate
from ml_core.typed import ConfigError

USERS = np.array([10, 11, 12, 13])
ITEMS = np.array([100, 101, 102, 103, 104])
#: the window's behaviour-weighted edges (user row, item row) -> w
W = {(0, 0): 1.0, (0, 1): 4.0, (1, 1): 1.0, (1, 2): 2.0, (2, 0): 3.0, (2, 3): 1.0, (3, 2): 1.0, (3, 4): 5.0, (1, 4): 1.0}
#: top-k rows, not symmetric (row r: r's neighbours by descending similarity)
ITEM_SIM = {0: [(1, 0.9), (3, 0.4)], 1: [(0, 0.9), (2, 0.3)], 2: [(4, 0.5)], 3: [], 4: [(2, 0.5), (1, 0.2)]}
USER_SIM = {0: [(2, 0.7), (1, 0.1)], 1: [(3, 0.6)], 2: [(0, 0.7)], 3: []}


def _csr(rows: dict, n: int) -> CSR:
    r = [a for a, nb in rows.items() for _ in nb]
    c = [b for nb in rows.values() for b, _ in nb]
    w = [x for nb in rows.values() for _, x in nb]
    return CSR.from_coo(np.array(r, np.int64), np.array(c, np.int64), np.array(w), n, n)


def _day(users, items, labels=None) -> DayInputs:
    keys = list(W)
    ui = CSR.from_coo(np.array([k[0] for k in keys]), np.array([k[1] for k in keys]), np.array(list(W.values())),
                      len(USERS), len(ITEMS))
    samples = pl.DataFrame({"user_id": users, "item_id": items,
                            "label_click": labels if labels is not None else [i % 2 for i in range(len(users))]})
    return DayInputs("2026-01-02", samples, pl.DataFrame(), pl.DataFrame(), BipartiteGraph(USERS, ITEMS, ui),
                     user_sim=SimilarityGraph(USERS, _csr(USER_SIM, len(USERS)), "user"),
                     item_sim=SimilarityGraph(ITEMS, _csr(ITEM_SIM, len(ITEMS)), "item"))


#: every (user, item) of the window, plus a user and an item new to it
PAIRS = [(u, i) for u in [*USERS, 99] for i in [*ITEMS, 999]]


def _dense_ease(x: np.ndarray, lam: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def _x(items: list[int]) -> np.ndarray:
    """X on the window's item rows ``items``, dense."""
    x = np.zeros((len(USERS), len(items)))
    for (u, i), w in W.items():
        if i in items:
            x[u, items.index(i)] = w
    return x


def _rows(uid, iid) -> tuple[int, int]:
    return (int(np.searchsorted(USERS, uid)) if uid in USERS else -1), (int(np.searchsorted(ITEMS, iid)) if iid in ITEMS else -1)


def test_scores_equal_a_brute_force_loop():
    day = _day([u for u, _ in PAIRS], [i for _, i in PAIRS])
    x, lam = _x(list(range(len(ITEMS)))), 2.0
    b = _dense_ease(x, lam)
    s, info = cf_scores(day, CFConfig(ease_lambda=lam))  # 4 users < 5 items: EASE in user space, exact
    assert list(s) == list(CF_SCORERS) and info["ease"]["form"] == "users" and info["ease"]["items"] == len(ITEMS)
    for t, (uid, iid) in enumerate(PAIRS):
        u, i = _rows(uid, iid)
        if u < 0 or i < 0:
            assert s["item_knn"][t] == s["user_knn"][t] == s["ease"][t] == 0.0
            continue
        item_knn = sum(sim * W.get((u, j), 0.0) for j, sim in ITEM_SIM[i])
        user_knn = sum(sim * W.get((v, i), 0.0) for v, sim in USER_SIM[u])
        ease = sum(x[u, j] * b[j, i] for j in range(len(ITEMS)))
        assert s["item_knn"][t] == pytest.approx(item_knn, rel=1e-6)
        assert s["user_knn"][t] == pytest.approx(user_knn, rel=1e-6)
        assert s["ease"][t] == pytest.approx(ease, rel=1e-9, abs=1e-12), (uid, iid)


def test_ease_beyond_the_cap_keeps_the_most_connected_items_and_scores_the_others_0():
    # degrees (users): items 0, 1, 2, 4 have 2, item 3 has 1; cap 3 < 4 users: B over items 0, 1, 2
    day = _day([u for u, _ in PAIRS], [i for _, i in PAIRS])
    s, info = cf_scores(day, CFConfig(scorers=["ease"], ease_max_dim=3, ease_lambda=1.0))
    x = _x([0, 1, 2])
    b = _dense_ease(x, 1.0)
    for t, (uid, iid) in enumerate(PAIRS):
        u, i = _rows(uid, iid)
        want = x[u] @ b[:, i] if u >= 0 and 0 <= i < 3 else 0.0
        assert s["ease"][t] == pytest.approx(want, rel=1e-9, abs=1e-12), (uid, iid)
    e = info["ease"]
    assert (e["form"], e["dense_dim"], e["items"], e["window_items"], e["samples_on_kept_items"]) == ("items", 3, 3, 5, 0.5)
    assert e["max_dim"] == 3 and e["lambda"] == 1.0 and e["seconds"] >= e["fit_seconds"] >= 0
    assert Ease.fit(day.graph, 3, 1.0).col.tolist() == [0, 1, 2, -1, -1]


def test_metrics_and_what_a_day_without_the_graphs_or_scorers_gives():
    day = _day([10, 10, 11, 11], [101, 103, 102, 100], labels=[1, 0, 0, 1])  # item-kNN 0.9, 0, 0.5, 0.9
    m, _ = cf_metrics(day, ["click"])
    assert m["item_knn"]["click"]["gauc"] == 1.0 and "logloss" not in m["item_knn"]["click"]
    assert cf_scores(day, CFConfig(scorers=[])) == ({}, {})
    with pytest.raises(ValueError, match="similarity graphs"):
        cf_scores(DayInputs("d", day.samples, pl.DataFrame(), pl.DataFrame(), day.graph))
    unsorted = CSR(np.array([0, 2]), np.array([1, 0]), np.ones(2, np.float32), 2)  # row 0: columns 1, 0
    with pytest.raises(ValueError, match="sorted"):
        BipartiteGraph(np.array([1]), np.array([5, 6]), unsorted).pair_weights(np.array([0]), np.array([0]))


def test_the_cf_section_is_checked(tmp_path):
    cfg = load_config(None, [f'storage.root="{tmp_path}"', 'cf.scorers=["ease"]', "cf.ease_max_dim=100"])
    assert cfg.cf.scorers == ["ease"] and cfg.cf.ease_max_dim == 100
    for bad in ('cf.scorers=["svd"]', 'cf.scorers=["ease", "ease"]', "cf.ease_lambda=0", "cf.ease_max_dim=0"):
        with pytest.raises(ConfigError, match="cf"):
            load_config(None, [f'storage.root="{tmp_path}"', bad])


def test_an_evaluation_stored_before_the_cf_scorers_reads_back_and_is_refused():
    old = {"day": "2026-01-02", "candidate": {"click": {"gauc": 0.7, "auc": 0.7, "logloss": 0.5, "pos_rate": 0.2,
                                                        "gauc_users": 9}},
           "candidate_manifest": {}, "sanity": {"random": {"click": {"gauc": 0.5, "auc": 0.5, "pos_rate": 0.2,
                                                                      "gauc_users": 9}}}}
    ev = EvaluationResult.from_dict(old)
    assert ev.cf is None and ev.cf_info == {} and "| cf: " not in gauc_table(ev)
    from ml_core.config import DeployConfig

    d = gate(ev.candidate, ev.references, DeployConfig(), ev.sanity, ev.differences, cf=ev.cf)
    assert not d.promote and d.reasons == ["no CF-scorer metrics for this day: the evaluation predates them, "
                                           "re-run model_evaluation"]
    ev.cf, ev.cf_info = {"ease": {"click": dict(old["sanity"]["random"]["click"], gauc=0.6)}}, \
        {"ease": {"form": "items", "dense_dim": 3, "max_dim": 3, "lambda": 1.0, "items": 3, "window_items": 5,
                  "samples_on_kept_items": 0.6}}
    table = gauc_table(EvaluationResult.from_dict(ev.to_dict()))
    assert "| cf: ease | click | 0.6000 |" in table and "in item space (3 x 3, cap 3, lambda 1) on 3 of the window's 5 items; 60.0% of the samples" in table


def test_a_planted_day_d_event_changes_no_cf_score(tmp_path):
    """Day D's CF scores come from its window graphs (days before D) alone: an event planted on
    day D, on an item the window ties to one of the user's sampled items, changes no score."""
    from datetime import UTC, datetime

    from ml_core.stages.data_day import run_data_day, run_data_days
    from ml_core.stages.inputs import load_day_inputs
    from ml_core.storage import Lake

    rng = np.random.default_rng(0)
    t0 = int(datetime(2026, 1, 1, 10, tzinfo=UTC).timestamp())
    rows = [f"{u},{i},{i % 3},{b},{t0 + day * 86400 + k}" for k, (day, u, i, b) in enumerate(
        (d, int(rng.integers(1, 20)), int(rng.integers(100, 130)), ("pv", "pv", "pv", "cart", "buy")[rng.integers(5)])
        for d in range(2) for _ in range(150))]
    path = tmp_path / "log.csv"
    path.write_text("\n".join(rows) + "\n")
    cfg = load_config(None, ['source.kind="taobao"', f'source.path="{path}"', 'source.start_date="2026-01-01"',
                             'source.end_date="2026-01-02"', 'source.timezone="UTC"', f'storage.root="{tmp_path}"',
                             "graph.window_days=1"])
    lake, day = Lake(tmp_path), "2026-01-02"
    run_data_days(cfg, lake, ["2026-01-01", day])

    def scored() -> tuple[DayInputs, dict]:
        inputs = load_day_inputs(lake, day)
        s, _ = cf_scores(inputs)
        pairs = zip(inputs.samples["user_id"].to_list(), inputs.samples["item_id"].to_list(), strict=True)
        return inputs, {p: tuple(s[k][t] for k in CF_SCORERS) for t, p in enumerate(pairs)}

    before, scores = scored()
    # plant: a sampled user u buys, 20 times on day D, the window's nearest item j to one of its
    # sampled items i; item-kNN's (u, i) has the term w(u, j) S^I[i, j], S^I[i, j] > 0
    sim, ids = before.item_sim.adj, before.graph.item_ids
    rows = lookup(ids, before.samples["item_id"].to_numpy())
    t = next(t for t, r in enumerate(rows) if r >= 0 and sim.degrees()[r] > 0)
    u, i, j = before.samples["user_id"][t], before.samples["item_id"][t], int(ids[sim.indices[sim.indptr[rows[t]]]])
    path.write_text(path.read_text() + "".join(f"{u},{j},0,buy,{t0 + 86400 + 5000 + k}\n" for k in range(20)))
    logs = lake.version("interaction_logs", day)
    run_data_day(cfg, lake, day)
    after, planted = scored()
    assert lake.version("interaction_logs", day) != logs  # the planted buys are day D's: (u, j) a purchase
    assert after.samples.filter((pl.col("user_id") == u) & (pl.col("item_id") == j))["label_purchase"].max() == 1
    for a, b in ((before.graph.ui, after.graph.ui), (before.item_sim.adj, after.item_sim.adj), (before.user_sim.adj, after.user_sim.adj)):
        assert a.equals(b, atol=0)
    common = set(scores) & set(planted)
    assert (u, i) in common
    assert all(planted[p] == scores[p] for p in common)
