"""Candidate retrieval: the faiss item index on toy vectors (exactness of the flat index, recall of
HNSW), the Retriever's exclusions and unknown users, and /recommend with retrieval on a served
bundle (the retrieved candidates are what the ranker ranks)."""

from __future__ import annotations

import numpy as np
import pytest

from ml_core.serving.retrieval import (
    ItemIndex,
    RetrievalVectors,
    Retriever,
    item_prior,
    recall_at_k,
    retrieval_vectors,
)
from ml_core.serving.scorer import Scorer
from ml_core.serving.state import ServeOptions
from tests.unit.serving.deployed import UNKNOWN


def toy_vectors(n_users=200, n_items=3000, d=16, clusters=20, seed=0) -> RetrievalVectors:
    """Clustered users and items (the shape of a catalogue: communities of similar items)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    items = centres[rng.integers(clusters, size=n_items)] + 0.5 * rng.normal(size=(n_items, d))
    users = centres[rng.integers(clusters, size=n_users)] + 0.5 * rng.normal(size=(n_users, d))
    return RetrievalVectors(users.astype(np.float32), items.astype(np.float32),
                            np.arange(n_users, dtype=np.int64) * 3 + 1, np.arange(n_items, dtype=np.int64) * 7 + 5)


def exact_top(v: RetrievalVectors, n: int) -> np.ndarray:
    """The item ids of largest inner product per user, by brute force (numpy)."""
    s = v.user_vectors.astype(np.float64) @ v.item_vectors.astype(np.float64).T  # [U, I]
    return v.item_ids[np.argsort(-s, axis=1, kind="stable")[:, :n]]


def test_flat_index_is_exact():
    v = toy_vectors()
    ids, scores = ItemIndex(v.item_vectors, v.item_ids, "flat").search(v.user_vectors, 10)
    ref = exact_top(v, 10)
    assert ids.shape == (len(v.user_ids), 10) and np.all(np.diff(scores, axis=1) <= 1e-5)
    assert np.mean([recall_at_k(a, b, 10) for a, b in zip(ids, ref)]) == 1.0


def test_hnsw_recall_on_a_toy_index():
    """HNSW's recall@10 against the exact top 10 is high at the default search breadth and does
    not fall as the breadth grows."""
    v = toy_vectors(n_items=1500)
    ref = exact_top(v, 10)
    index = ItemIndex(v.item_vectors, v.item_ids, "hnsw")
    recall = {}
    for ef in (2, 16, 128):
        index.ef_search = ef
        ids, _ = index.search(v.user_vectors, 10)
        recall[ef] = float(np.mean([recall_at_k(a, b, 10) for a, b in zip(ids, ref)]))
    assert recall[128] >= 0.95 and recall[2] <= recall[16] <= recall[128], recall


def test_retriever_candidates_and_unknown_users():
    v = toy_vectors()
    r = Retriever(v, "flat")
    user = int(v.user_ids[5])
    top = exact_top(v, 60)[5]
    cand = r.candidates(user, 50)
    assert np.array_equal(cand, np.sort(top[:50]))
    excluded = top[:10]
    cand = r.candidates(user, 50, exclude=excluded)
    assert len(cand) == 50 and not np.isin(excluded, cand).any() and np.array_equal(cand, np.sort(top[10:60]))
    vec, own = r.user_vector(UNKNOWN)
    assert not own and np.allclose(vec, v.user_vectors.mean(axis=0))
    assert len(r.candidates(UNKNOWN, 2 * len(v.item_ids))) == len(v.item_ids)  # n beyond the catalogue: all of it


def test_prior_channel():
    """With a prior, the candidates are its best unseen items (a share of n) plus the index's best
    for the user, n in all, none excluded."""
    v = toy_vectors()
    prior = v.item_ids[::-1].copy()  # any order of the catalogue
    r = Retriever(v, "flat", prior=prior, prior_share=0.3)
    user = int(v.user_ids[5])
    top = exact_top(v, len(v.item_ids))[5]
    exclude = np.concatenate([prior[:4], top[:6]])
    cand = r.candidates(user, 50, exclude=exclude)
    first = prior[~np.isin(prior, exclude)][:15]  # round(50 * 0.3) = 15 unseen items of the prior
    rest = top[~np.isin(top, np.concatenate([exclude, first]))][:35]
    assert np.array_equal(cand, np.sort(np.concatenate([first, rest])))
    with pytest.raises(ValueError, match="prior_share must be in"):
        Retriever(v, "flat", prior=prior, prior_share=1.5)


def test_bad_arguments():
    v = toy_vectors(n_items=50)
    with pytest.raises(ValueError, match="index kind must be one of"):
        ItemIndex(v.item_vectors, v.item_ids, "ivf")
    with pytest.raises(ValueError, match="expected \\[I, d\\] vectors for 49 ids"):
        ItemIndex(v.item_vectors, v.item_ids[:-1])
    with pytest.raises(ValueError, match="must be >= 1"):
        ItemIndex(v.item_vectors, v.item_ids).search(v.user_vectors, 0)
    with pytest.raises(ValueError, match="user vectors have 16 dimensions, items 8"):
        RetrievalVectors(v.user_vectors, v.item_vectors[:, :8], v.user_ids, v.item_ids)
    with pytest.raises(ValueError, match="reference list is empty"):
        recall_at_k(np.array([1]), np.array([], np.int64), 5)
    assert recall_at_k(np.array([3, 1, 9]), np.array([1, 2, 3]), 3) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="index must be one of"):
        ServeOptions(index="ivf")


# -- on a served bundle -------------------------------------------------------------------------------
def test_retrieval_vectors_of_the_snapshot(scorer):
    v = retrieval_vectors(scorer)
    assert np.array_equal(v.item_ids, scorer.item_ids) and np.array_equal(v.user_ids, scorer.graph.user_ids)
    assert v.item_vectors.shape == (scorer.graph.n_items, scorer.model_spec.dim)
    assert np.isfinite(v.user_vectors).all() and np.isfinite(v.item_vectors).all()


def test_a_graph_model_retrieves_by_its_node_representations(deployments):
    """MoGE: u = [h_u, p_u, s_u], v = [h_i, q_i, s_i] (name order), so <u, v> sums the same-channel products."""
    moge = Scorer.from_registry(deployments("moge").serve_root)
    v = retrieval_vectors(moge)
    d = moge.model_spec.dim
    assert v.user_vectors.shape == (moge.graph.n_users, 3 * d) and v.item_vectors.shape == (moge.graph.n_items, 3 * d)
    reps = moge.reps
    u, i = 0, 5
    expected = sum(float(reps.user_reps[a][u] @ reps.item_reps[b][i]) for a, b in (("h_u", "h_i"), ("p_u", "q_i"), ("s_u", "s_i")))
    assert float(v.user_vectors[u] @ v.item_vectors[i]) == pytest.approx(expected, rel=1e-5)


def test_item_prior_orders_by_mean_score(scorer):
    prior = item_prior(scorer, 3, seed=1)
    assert np.array_equal(np.sort(prior), scorer.item_ids)
    users = np.random.default_rng(1).choice(np.asarray(scorer.graph.user_ids), 3, replace=False)
    ends = np.concatenate([prior[:5], prior[-5:]])
    mean = np.mean([scorer.score(np.full(10, u), ends)[:, -1] for u in users], axis=0)
    assert mean[:5].min() >= mean[5:].max()


def test_recommend_with_retrieval(mmoe, scorer):
    from fastapi.testclient import TestClient

    from ml_core.serving.app import create_app

    n = scorer.graph.n_items // 4
    app = create_app(mmoe.serve_root, options=ServeOptions(retrieval=n, index="flat"))
    retriever = app.state.holder.current.retriever
    user = int(scorer.graph.user_ids[0])
    with TestClient(app) as c:
        body = c.post("/recommend", json={"user_id": user, "k": 5}).json()
        cand = retriever.candidates(user, n, scorer.seen_items(user))
        assert body["retrieved"] and body["n_candidates"] == len(cand) == n
        assert [(x["item_id"], x["scores"]) for x in body["items"]] == scorer.recommend(user, 5, candidates=cand,
                                                                                       exclude_seen=False)
        exact = c.post("/recommend", json={"user_id": user, "k": 5, "retrieval": False}).json()
        assert not exact["retrieved"] and exact["n_candidates"] == scorer.graph.n_items - len(scorer.seen_items(user))
        assert c.post("/recommend", json={"user_id": UNKNOWN, "k": 3}).json()["unknown_user"]
        r = c.post("/recommend", json={"user_id": user, "retrieval": True, "candidates": [1, 2]})
        assert r.status_code == 422 and "not both" in r.text
    # the whole catalogue retrieved exactly: the retrieval path is the exact path
    full = create_app(mmoe.serve_root, options=ServeOptions(retrieval=scorer.graph.n_items, index="flat"))
    with TestClient(full) as c:
        a = c.post("/recommend", json={"user_id": user, "k": 10}).json()
        b = c.post("/recommend", json={"user_id": user, "k": 10, "retrieval": False}).json()
        assert a["retrieved"] and a["items"] == b["items"]
    with TestClient(create_app(mmoe.serve_root)) as c:  # retrieval off
        r = c.post("/recommend", json={"user_id": user, "retrieval": True})
        assert r.status_code == 409 and "--retrieval N" in r.text
