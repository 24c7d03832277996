"""A small planted-community dataset shared by the model tests (graph signal + weak features)."""

from __future__ import annotations

import numpy as np
import polars as pl


def planted_days(seed: int = 0, n_users: int = 1500, n_items: int = 60, n_comm: int = 2, train_share: float = 0.7,
                 split: str = "users", code_noise: float = 0.6):
    """A train day (the first 70% of users, 5 samples each) and a test day (the other users, 8 each).

    Users and items belong to latent communities; a sample is clicked with probability 0.7 when
    user and item share a community (0.1 otherwise) and bought after a click with probability
    0.5 (0.1). Features are weak: a community code that is replaced by a random one for 60% of the
    nodes, and a noise column. The graphs carry the signal: each user links to 8 items of its
    community and one random item; the similarity graphs link 5 same-community peers. Test users
    have no training sample, so a feature-only model can only use the weak codes, while a graph
    model reads the community off the neighbours.

    ``split="samples"``: every user has samples on both days (train 5, test 3 per user), so id
    embeddings can learn the signal too (the model-zoo tests: every model must learn it);
    ``code_noise`` is the share of nodes whose community code is replaced by a random one.
    """
    from ml_core.contracts.day import DayInputs
    from ml_core.graph.csr import CSR, BipartiteGraph, SimilarityGraph

    rng = np.random.default_rng(seed)
    cu, ci = rng.integers(0, n_comm, n_users), rng.integers(0, n_comm, n_items)
    members_u = [np.flatnonzero(cu == c) for c in range(n_comm)]
    members_i = [np.flatnonzero(ci == c) for c in range(n_comm)]
    rows, cols = [], []
    for u in range(n_users):
        its = np.unique(np.append(rng.choice(members_i[cu[u]], 8, replace=False), rng.integers(n_items)))
        rows += [u] * len(its)
        cols += its.tolist()

    def sim(members, comm):
        r, c = [], []
        for v in range(len(comm)):
            peers = members[comm[v]]
            c += rng.choice(peers[peers != v], 5, replace=False).tolist()
            r += [v] * 5
        return CSR.from_coo(np.array(r), np.array(c), None, len(comm), len(comm))

    def weak_code(comm):
        return np.where(rng.random(len(comm)) < code_noise, rng.integers(0, n_comm, len(comm)), comm)

    uids, iids = np.arange(1, n_users + 1), np.arange(1, n_items + 1)
    graph = BipartiteGraph(uids, iids, CSR.from_coo(np.array(rows), np.array(cols), None, n_users, n_items))
    user_sim = SimilarityGraph(uids, sim(members_u, cu), "user")
    item_sim = SimilarityGraph(iids, sim(members_i, ci), "item")
    users = pl.DataFrame({"user_id": uids, "u_cat_code": weak_code(cu), "u_num_noise": rng.standard_normal(n_users)})
    items = pl.DataFrame({"item_id": iids, "i_cat_code": weak_code(ci), "i_num_noise": rng.standard_normal(n_items)})

    def day(name, user_rows, per_user):
        u = np.repeat(user_rows, per_user)
        i = rng.integers(0, n_items, len(u))
        same = cu[u] == ci[i]
        click = rng.random(len(u)) < np.where(same, 0.7, 0.1)
        buy = click & (rng.random(len(u)) < np.where(same, 0.5, 0.1))
        s = pl.DataFrame({"user_id": u + 1, "item_id": i + 1, "label_click": click.astype(np.int8),
                          "label_purchase": buy.astype(np.int8)})
        return DayInputs(name, s, users, items, graph, user_sim, item_sim, history=history(name))

    def history(name):
        """The window history the graph stands for: each edge one view the day before ``name``."""
        from datetime import date, datetime, timedelta

        from ml_core.history import build_history

        before = date.fromisoformat(name) - timedelta(days=1)
        events = pl.DataFrame({"user_id": np.array(rows) + 1, "item_id": np.array(cols) + 1, "behavior": "view",
                               "category": pl.Series(ci[np.array(cols)], dtype=pl.Int64),
                               "ts": datetime.combine(before, datetime.min.time()), "ds": before})
        return build_history(events, name)

    if split == "samples":
        everyone = np.arange(n_users)
        return day("2026-01-01", everyone, 5), day("2026-01-02", everyone, 3)
    n_train = int(train_share * n_users)
    return day("2026-01-01", np.arange(n_train), 5), day("2026-01-02", np.arange(n_train, n_users), 8)
