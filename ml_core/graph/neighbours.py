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

A server asks for the same day's sums over and over: :class:`PairSums` computes both for every
pair that has a term at all (each with the same per-pair loop, so the same bits) once per
snapshot, and a request's pairs then cost one binary search each per sum.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ml_core.graph.csr import _PARALLEL_MIN_PAIRS as PARALLEL_MIN_PAIRS
from ml_core.graph.csr import CSR, BipartiteGraph, _entry_position

__all__ = ["PAIR_SUMS_MAX_ENTRIES", "PART_ENTRIES", "PairSums", "item_knn_scores", "parts", "user_knn_scores"]

#: Entries per part of a pair list that another scorer cuts (:mod:`ml_core.cf`'s dense EASE rows:
#: a part's temporary arrays, ~150 MB at this size).
PART_ENTRIES = 1 << 22
#: Most pairs :meth:`PairSums.build` stores over both sums (12 bytes each: ~200 MB); a larger
#: snapshot keeps the per-pair kernel.
PAIR_SUMS_MAX_ENTRIES = 1 << 24


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


@njit(cache=True, nogil=True)
def _support(via_indptr, via_indices, hop_indptr, hop_indices, n_cols, out_indptr, out_indices, fill, limit):
    """Per row r, the distinct columns c reached as ``r -> a`` (``via``) then ``a -> c`` (``hop``),
    ascending: with ``fill``, the columns into ``out_indices`` at ``out_indptr[r]``; without, the
    sizes into ``out_indptr[1:]`` (the two passes of :meth:`PairSums.build`). Returns the number
    of entries, or -1 as soon as the sizes pass ``limit`` (the sizing pass stops there)."""
    mark = np.full(n_cols, -1, np.int64)
    total = 0
    for r in range(len(via_indptr) - 1):
        k = out_indptr[r] if fill else 0
        for e in range(via_indptr[r], via_indptr[r + 1]):
            a = via_indices[e]
            for f in range(hop_indptr[a], hop_indptr[a + 1]):
                c = hop_indices[f]
                if mark[c] != r:
                    mark[c] = r
                    if fill:
                        out_indices[k] = c
                    k += 1
        if fill:
            out_indices[out_indptr[r]:k].sort()
        else:
            out_indptr[r + 1] = k
            total += k
            if total > limit:
                return -1
    return total


@njit(cache=True, nogil=True)
def _support_sums(rows_indptr, cols, s_indptr, s_indices, s_weights, indptr, indices, weights, item_side):
    """The sum of each stored (user r, item c) of the support: :func:`_pair_sum` with the item
    as ``own`` (``item_side``: item-kNN) or the user (user-kNN), as the per-pair kernel calls it."""
    out = np.zeros(len(cols), np.float64)
    for r in range(len(rows_indptr) - 1):
        for t in range(rows_indptr[r], rows_indptr[r + 1]):
            if item_side:
                out[t] = _pair_sum(s_indptr, s_indices, s_weights, indptr, indices, weights, cols[t], r, False)
            else:
                out[t] = _pair_sum(s_indptr, s_indices, s_weights, indptr, indices, weights, r, cols[t], True)
    return out


@njit(cache=True, nogil=True)
def _stored(indptr, indices, values, rows, cols):
    out = np.zeros(len(rows), np.float64)
    for t in range(len(rows)):
        if rows[t] >= 0 and cols[t] >= 0:
            pos = _entry_position(indptr, indices, rows[t], cols[t])
            if pos >= 0:
                out[t] = values[pos]
    return out


class PairSums:
    """The item-kNN and user-kNN sums of one day's graphs, stored for every (user row, item row)
    with at least one term; any other pair sums to 0. ``item`` / ``user``: users x items CSRs of
    the sums (float64, columns ascending). Built by :meth:`build`; :meth:`scores` equals
    :func:`item_knn_scores` / :func:`user_knn_scores` bit for bit."""

    def __init__(self, item: CSR, user: CSR):
        self.item, self.user = item, user

    @property
    def entries(self) -> int:
        return self.item.nnz + self.user.nnz

    @classmethod
    def build(cls, graph: BipartiteGraph, user_sim: CSR, item_sim: CSR,
              max_entries: int = PAIR_SUMS_MAX_ENTRIES) -> PairSums | None:
        """Both tables, or None when they would hold more than ``max_entries`` pairs. The item
        table's row u holds the items whose k nearest items include one of u's; the user table's,
        the items of u's k nearest users."""
        graph.check_rows_sorted()
        ui = graph.ui
        rev = item_sim.transpose()  # item j -> the items i that have j among their k nearest
        sides = ((ui, rev, item_sim, True), (user_sim, ui, user_sim, False))
        walks = [(np.asarray(via.indptr), np.asarray(via.indices), np.asarray(hop.indptr), np.asarray(hop.indices),
                  graph.n_items) for via, hop, _, _ in sides]
        indptrs, left = [], max_entries
        for walk in walks:  # the sizing pass stops once the cap is passed (a hub-heavy graph)
            sizes = np.zeros(graph.n_users + 1, np.int64)
            total = _support(*walk, sizes, np.empty(0, np.int64), False, left)
            if total < 0:
                return None
            left -= total
            indptrs.append(np.cumsum(sizes))
        tables = []
        for walk, (_, _, sim, item_side), indptr in zip(walks, sides, indptrs):
            cols = np.empty(int(indptr[-1]), np.int64)
            _support(*walk, indptr, cols, True, indptr[-1])
            sums = _support_sums(indptr, cols, np.asarray(sim.indptr), np.asarray(sim.indices), np.asarray(sim.weights),
                                 np.asarray(ui.indptr), np.asarray(ui.indices), np.asarray(ui.weights), item_side)
            tables.append(CSR(indptr, cols, sums, graph.n_items))
        return cls(*tables)

    def scores(self, u_row: np.ndarray, i_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(item-kNN, user-kNN)`` sums of each pair's graph rows (-1: absent, scores 0)."""
        u_row, i_row = np.asarray(u_row, np.int64), np.asarray(i_row, np.int64)
        return tuple(_stored(np.asarray(t.indptr), np.asarray(t.indices), np.asarray(t.weights), u_row, i_row)
                     for t in (self.item, self.user))
