"""Top-k similarity: the fast kernel is bit-identical to brute force / references."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import reference_graph as R
from ml_core.config import GraphConfig
from ml_core.graph import similarity as S
from ml_core.graph.csr import CSR, BipartiteGraph


def _random_matrix(rng, n_max=50, m_max=35, weights=(1.0, 2.0, 4.0, 0.5, 3.0, 0.3)):
    n, m = int(rng.integers(1, n_max)), int(rng.integers(1, m_max))
    nnz = int(rng.integers(0, n * m // 2 + 1))
    r, c = rng.integers(0, n, nnz), rng.integers(0, m, nnz)
    return CSR.from_coo(r, c, rng.choice(weights, nnz), n, m)


def _same(a: CSR, b: CSR) -> bool:
    return (a.n_cols == b.n_cols and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.weights, b.weights))


@pytest.mark.parametrize("measure", ["cosine", "jaccard"])
@pytest.mark.parametrize("tile", [1 << 16, 3])
def test_fast_equals_bruteforce_bitwise(measure, tile, monkeypatch):
    monkeypatch.setattr(S, "TILE_ROWS", tile)
    monkeypatch.setattr(S, "MAX_TILES", 10_000)
    rng = np.random.default_rng(1 if measure == "cosine" else 2)
    for _ in range(12):
        a = _random_matrix(rng)
        for cap in (0, 3):
            k = int(rng.integers(1, 8))
            fast = S.topk_similarity(a, k, measure, cap)
            assert _same(fast, R.topk_similarity_bruteforce(a, k, measure, cap))
            assert _same(fast, R.topk_similarity_reference(a, k, measure, cap, chunk_rows=7))
            assert _same(fast, R.topk_similarity_scipy(a, k, measure, cap))


def test_definition_properties():
    rng = np.random.default_rng(3)
    a = _random_matrix(rng, 80, 40)
    g = S.topk_similarity(a, 5)
    rows = g.row_of_entries()
    assert (g.indices != rows).all(), "a node is never its own neighbour"
    assert (g.weights > 0).all() and (g.weights <= 1 + 1e-6).all()
    assert (g.degrees() <= 5).all()
    for r in range(g.n_rows):
        w = g.weights[g.indptr[r]:g.indptr[r + 1]].astype(np.float64)
        assert (np.diff(w) <= 0).all(), "sorted by descending similarity"


def test_ties_break_by_ascending_id():
    # Users 1..6 each share exactly item 0 with user 0 and have identical rows: all tie.
    rows = np.array([0, 0] + list(range(1, 7)))
    cols = np.array([0, 1] + [0] * 6)
    a = CSR.from_coo(rows, cols, None, 7, 2)
    g = S.topk_similarity(a, 3)
    assert g.indices[g.indptr[0]:g.indptr[1]].tolist() == [1, 2, 3]
    # user 3's neighbours: 1, 2 (sim 1) before 4.. ; 0 has a lower similarity
    assert g.indices[g.indptr[3]:g.indptr[4]].tolist() == [1, 2, 4]


def test_empty_and_isolated():
    a = CSR.from_coo(np.array([], np.int64), np.array([], np.int64), None, 4, 3)
    g = S.topk_similarity(a, 3)
    assert g.nnz == 0 and g.n_rows == 4
    a = CSR.from_coo(np.array([0, 1]), np.array([0, 1]), None, 3, 2)  # no shared column
    assert S.topk_similarity(a, 3).nnz == 0


def test_hub_cap_skips_hub_columns():
    # Column 0 is a hub (5 users); with cap 3 only column 1 (users 0, 1) counts.
    rows = np.array([0, 1, 2, 3, 4, 0, 1])
    cols = np.array([0, 0, 0, 0, 0, 1, 1])
    a = CSR.from_coo(rows, cols, None, 5, 2)
    st: dict = {}
    g = S.topk_similarity(a, 4, hub_degree_cap=3, stats=st)
    assert st["hub_nodes_skipped"] == 1 and st["pairs_skipped_hubs"] == 25 and st["pairs_counted"] == 4
    assert g.indices[g.indptr[0]:g.indptr[1]].tolist() == [1]
    assert g.degrees().tolist() == [1, 1, 0, 0, 0]
    assert st["share_no_similar_neighbour"] == pytest.approx(0.6)


def test_build_similarity_graphs_stats():
    rng = np.random.default_rng(5)
    r, c = rng.integers(0, 60, 400), rng.integers(0, 40, 400)
    ui = CSR.from_coo(r, c, rng.choice([1.0, 2.0, 4.0], 400), 60, 40)
    bip = BipartiteGraph(np.arange(ui.n_rows) * 3, np.arange(ui.n_cols) * 5, ui)
    user, item = S.build_similarity_graphs(bip, GraphConfig(topk=4))
    assert user.kind == "user" and item.kind == "item"
    assert np.array_equal(user.node_ids, bip.user_ids) and np.array_equal(item.node_ids, bip.item_ids)
    assert _same(item.adj, R.topk_similarity_bruteforce(bip.iu, 4))
    for g in (user, item):
        st = g.stats
        for key in ("wall_time_s", "peak_mem_delta_mb", "pairs_counted", "hub_nodes_skipped",
                    "share_no_similar_neighbour", "out_degree_hist", "in_degree_hist", "n_edges", "exact"):
            assert key in st
        assert sum(st["out_degree_hist"]["counts"]) == g.adj.n_rows
        assert st["exact"]
    user, _ = S.build_similarity_graphs(bip, GraphConfig(topk=4, hub_degree_cap=2))
    assert not user.stats["exact"] and 0.0 <= user.stats["hub_recall_at_k"] <= 1.0


def test_hub_recall_is_one_without_hubs():
    rng = np.random.default_rng(6)
    a = _random_matrix(rng, 40, 30)
    assert S.hub_recall(a, 3, "cosine", 10_000) == 1.0


def test_bad_measure():
    a = CSR.from_coo(np.array([0]), np.array([0]), None, 1, 1)
    with pytest.raises(ValueError):
        S.topk_similarity(a, 3, "pearson")
