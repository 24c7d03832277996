"""Neighbourhood scores of (user, item) pairs over a day's window graphs: the item-kNN and
user-kNN sums that the CF scorers rank by (:mod:`ml_core.cf`) and that the pair input carries
(:func:`ml_core.history.pair_features`), one implementation for both.

With ``w(u, i)`` the behaviour-weighted edge of the window's bipartite graph (0 without one) and
``S^I`` / ``S^U`` the top-k similarity graphs (row r: r's k most similar nodes):

* :func:`item_knn_scores`: ``sum_j w(u, j) S^I[i, j]`` over the k items j most similar to the
  target item i ("what u did with the items most like i");
* :func:`user_knn_scores`: ``sum_v S^U[u, v] w(v, i)`` over u's k most similar users v.

Graph rows of -1 (a user or an item absent from the window) score 0. Vectorised over the pairs,
in parts of bounded size (:func:`parts`): ``O(pairs x k)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ml_core.graph.csr import CSR, BipartiteGraph

__all__ = ["PART_ENTRIES", "item_knn_scores", "parts", "user_knn_scores"]

#: Gathered entries per part of the pairs (a part's temporary arrays: ~150 MB at this size).
PART_ENTRIES = 1 << 22


def parts(idx: np.ndarray, cost: np.ndarray) -> list[np.ndarray]:
    """``idx`` cut into consecutive parts whose ``cost`` sums to at most :data:`PART_ENTRIES`
    (plus one element's)."""
    if not len(idx):
        return []
    part = (np.cumsum(cost) - cost) // PART_ENTRIES
    return np.split(idx, np.flatnonzero(np.diff(part)) + 1)


def _neighbour_sum(adj: CSR, own: np.ndarray, other: np.ndarray,
                   weight: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Per pair t: the sum over ``own[t]``'s neighbours n in ``adj`` (similarity s) of
    ``s * weight(other[t], n)``; 0 where ``own[t]`` or ``other[t]`` is -1 (not in the graph)."""
    own, other = np.asarray(own, np.int64), np.asarray(other, np.int64)
    out = np.zeros(len(own), np.float64)
    idx = np.flatnonzero((own >= 0) & (other >= 0))
    indices, sims = np.asarray(adj.indices), np.asarray(adj.weights, np.float64)
    for part in parts(idx, adj.degrees()[own[idx]]):
        owner, pos = adj.entries_of(own[part])
        w = weight(other[part][owner], indices[pos])
        out[part] = np.bincount(owner, sims[pos] * w, minlength=len(part))
    return out


def item_knn_scores(graph: BipartiteGraph, item_sim: CSR, u_row: np.ndarray, i_row: np.ndarray) -> np.ndarray:
    """``sum_j w(u, j) S^I[i, j]`` for each pair's graph rows (-1: absent, scores 0)."""
    return _neighbour_sum(item_sim, i_row, u_row, graph.pair_weights)


def user_knn_scores(graph: BipartiteGraph, user_sim: CSR, u_row: np.ndarray, i_row: np.ndarray) -> np.ndarray:
    """``sum_v S^U[u, v] w(v, i)`` for each pair's graph rows (-1: absent, scores 0)."""
    return _neighbour_sum(user_sim, u_row, i_row, lambda i, v: graph.pair_weights(v, i))
