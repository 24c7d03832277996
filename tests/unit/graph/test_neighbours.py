"""The neighbourhood sums (ml_core/graph/neighbours.py) equal a sequential float64 loop over each
row bit for bit, in the serial and the parallel kernel, on random graphs with absent rows."""

from __future__ import annotations

import numpy as np
import pytest

from ml_core.graph import neighbours
from ml_core.graph.csr import CSR, BipartiteGraph
from ml_core.graph.neighbours import item_knn_scores, user_knn_scores


def _random_csr(rng, n_rows: int, n_cols: int, per_row: int) -> CSR:
    rows = np.repeat(np.arange(n_rows), rng.integers(0, per_row + 1, n_rows))
    cols = rng.integers(0, n_cols, len(rows))
    keep = np.unique(rows * n_cols + cols)  # one entry per (row, col)
    weights = rng.choice([0.25, 1.0, 3.0, rng.random()], len(keep)).astype(np.float32)
    return CSR.from_coo(keep // n_cols, keep % n_cols, weights, n_rows, n_cols)


def _loop(sim: CSR, ui: CSR, own: np.ndarray, other: np.ndarray, transposed: bool) -> np.ndarray:
    w = {}
    for r in range(len(ui.indptr) - 1):
        for e in range(ui.indptr[r], ui.indptr[r + 1]):
            w[(r, int(ui.indices[e]))] = float(ui.weights[e])
    out = np.zeros(len(own))
    for t, (a, b) in enumerate(zip(own, other)):
        if a < 0 or b < 0:
            continue
        total = 0.0
        for e in range(sim.indptr[a], sim.indptr[a + 1]):
            n = int(sim.indices[e])
            total += float(np.float64(sim.weights[e])) * w.get((n, b) if transposed else (b, n), 0.0)
        out[t] = total
    return out


@pytest.mark.parametrize("parallel", [False, True])
def test_sums_equal_a_sequential_loop(monkeypatch, parallel):
    rng = np.random.default_rng(7)
    n_users, n_items = 60, 80
    graph = BipartiteGraph(np.arange(n_users) + 1000, np.arange(n_items) + 5000, _random_csr(rng, n_users, n_items, 12))
    user_sim, item_sim = _random_csr(rng, n_users, n_users, 6), _random_csr(rng, n_items, n_items, 6)
    u = rng.integers(-1, n_users, 3000)
    i = rng.integers(-1, n_items, 3000)
    monkeypatch.setattr(neighbours, "PARALLEL_MIN_PAIRS", 1 if parallel else 1 << 30)
    item = item_knn_scores(graph, item_sim, u, i)
    user = user_knn_scores(graph, user_sim, u, i)
    assert np.array_equal(item, _loop(item_sim, graph.ui, i, u, transposed=False))
    assert np.array_equal(user, _loop(user_sim, graph.ui, u, i, transposed=True))
    assert (item[(u < 0) | (i < 0)] == 0).all() and item.any() and user.any()


def test_unsorted_rows_are_refused():
    ui = CSR(np.array([0, 2]), np.array([1, 0]), np.array([1.0, 1.0], np.float32), 2)
    graph = BipartiteGraph(np.array([1]), np.array([10, 11]), ui)
    sim = CSR(np.array([0, 1, 2]), np.array([1, 0]), np.array([0.5, 0.5], np.float32), 2)
    with pytest.raises(ValueError, match="sorted"):
        item_knn_scores(graph, sim, np.array([0]), np.array([0]))


def test_precomputed_sums_equal_the_kernels_on_every_pair():
    """PairSums stores every pair with a term; each pair of the grid (absent rows included) gets
    the per-pair kernels' bits, and a cap below its size keeps the kernels (None)."""
    rng = np.random.default_rng(3)
    n_users, n_items = 60, 80
    graph = BipartiteGraph(np.arange(n_users) + 1000, np.arange(n_items) + 5000, _random_csr(rng, n_users, n_items, 12))
    user_sim, item_sim = _random_csr(rng, n_users, n_users, 6), _random_csr(rng, n_items, n_items, 6)
    sums = neighbours.PairSums.build(graph, user_sim, item_sim)
    u, i = (a.ravel() for a in np.meshgrid(np.arange(-1, n_users), np.arange(-1, n_items), indexing="ij"))
    item, user = sums.scores(u, i)
    assert np.array_equal(item, item_knn_scores(graph, item_sim, u, i))
    assert np.array_equal(user, user_knn_scores(graph, user_sim, u, i))
    assert sums.entries == (item != 0).sum() + (user != 0).sum() > 0  # no weight is 0 here: the support exactly
    for table in (sums.item, sums.user):  # columns ascending in every row (binary searches)
        assert all((np.diff(table.indices[a:b]) > 0).all() for a, b in zip(table.indptr[:-1], table.indptr[1:]))
    assert neighbours.PairSums.build(graph, user_sim, item_sim, max_entries=sums.entries - 1) is None
