"""Neighbourhood scores of (user, item) pairs over a day's window graphs: the item-kNN and
user-kNN sums that the CF scorers rank by (:mod:`ml_core.cf`) and that the pair input carries
(:func:`ml_core.history.pair_features`), one implementation for both.

With ``w(u, i)`` the behaviour-weighted edge of the window's bipartite graph (0 without one) and
``S^I`` / ``S^U`` the top-k similarity graphs (row r: r's k most similar nodes):

* :func:`item_knn_scores`: ``sum_j w(u, j) S^I[i, j]`` over the k items j most similar to the
  target item i ("what u did with the items most like i");
* :func:`user_knn_scores`: ``sum_v S^U[u, v] w(v, i)`` over u's k most similar users v.

Graph rows of -1 (a user or an item absent from the window) score 0. One compiled pass over the pairs
(a binary search in the bipartite graph per neighbour): ``O(pairs x k log deg)``, no temporaries.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ml_core.graph.csr import _PARALLEL_MIN_PAIRS as PARALLEL_MIN_PAIRS
from ml_core.graph.csr import CSR, BipartiteGraph, _entry_position

__all__ = ["PART_ENTRIES", "item_knn_scores", "parts", "user_knn_scores"]

#: Entries per part of a pair list that another scorer cuts (:mod:`ml_core.cf`'s dense EASE rows:
#: a part's temporary arrays, ~150 MB at this size).
PART_ENTRIES = 1 << 22


def parts(idx: np.ndarray, cost: np.ndarray) -> list[np.ndarray]:
    """``idx`` cut into consecutive parts whose ``cost`` sums to at most :data:`PART_ENTRIES`
    (plus one element's)."""
    if not len(idx):
        return []
    part = (np.cumsum(cost) - cost) // PART_ENTRIES
    return np.split(idx, np.flatnonzero(np.diff(part)) + 1)


@njit(cache=True, nogil=True, inline="always")
def _pair_sum(s_indptr, s_indices, s_weights, indptr, indices, weights, own, other, transposed):
    """Sum over ``own``'s neighbours n (similarity s) of s * w, with w the edge (other, n) of
    the bipartite CSR (``transposed``: the edge (n, other)), 0 without one; in row order."""
    total = 0.0
    for e in range(s_indptr[own], s_indptr[own + 1]):
        n = s_indices[e]
        pos = _entry_position(indptr, indices, n, other) if transposed else _entry_position(indptr, indices, other, n)
        if pos >= 0:
            total += np.float64(s_weights[e]) * np.float64(weights[pos])
    return total


def _pair_sums(s_indptr, s_indices, s_weights, indptr, indices, weights, own, other, transposed):
    out = np.zeros(len(own), np.float64)
    for t in prange(len(own)):  # range in the serial kernel
        if own[t] >= 0 and other[t] >= 0:
            out[t] = _pair_sum(s_indptr, s_indices, s_weights, indptr, indices, weights, own[t], other[t], transposed)
    return out


#: The serial and the parallel kernel, one source (pairs are independent: both give the same bits).
_sums = njit(cache=True, nogil=True)(_pair_sums)
_sums_parallel = njit(nogil=True, parallel=True)(_pair_sums)  # not cached: one cache index per source function


def _neighbour_sum(sim: CSR, graph: BipartiteGraph, own: np.ndarray, other: np.ndarray, transposed: bool) -> np.ndarray:
    """Per pair t: the sum over ``own[t]``'s neighbours n in ``sim`` (similarity s) of
    ``s * w(other[t], n)`` (``transposed``: ``w(n, other[t])``), w the edge weight of the graph's
    ``ui``; 0 where ``own[t]`` or ``other[t]`` is -1 (not in the graph). One pass per pair, no
    temporaries; in parallel from :data:`PARALLEL_MIN_PAIRS` pairs (below that, starting the
    parallel region costs more than the work)."""
    graph.check_rows_sorted()
    own, other = np.asarray(own, np.int64), np.asarray(other, np.int64)
    kernel = _sums_parallel if len(own) >= PARALLEL_MIN_PAIRS else _sums
    return kernel(np.asarray(sim.indptr), np.asarray(sim.indices), np.asarray(sim.weights),
                  np.asarray(graph.ui.indptr), np.asarray(graph.ui.indices), np.asarray(graph.ui.weights),
                  own, other, transposed)


def item_knn_scores(graph: BipartiteGraph, item_sim: CSR, u_row: np.ndarray, i_row: np.ndarray) -> np.ndarray:
    """``sum_j w(u, j) S^I[i, j]`` for each pair's graph rows (-1: absent, scores 0)."""
    return _neighbour_sum(item_sim, graph, i_row, u_row, transposed=False)


def user_knn_scores(graph: BipartiteGraph, user_sim: CSR, u_row: np.ndarray, i_row: np.ndarray) -> np.ndarray:
    """``sum_v S^U[u, v] w(v, i)`` for each pair's graph rows (-1: absent, scores 0)."""
    return _neighbour_sum(user_sim, graph, u_row, i_row, transposed=True)
