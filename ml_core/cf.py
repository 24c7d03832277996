"""Classical collaborative-filtering scorers: what item-kNN, user-kNN and EASE score on the same
samples as the models (``../shared/MODELS.md``, "the classical scorers beside them").

A neural recommender's GAUC means something only next to tuned neighbourhood baselines (Dacrema
et al. 2019). Like the sanity scorers (:mod:`ml_core.sanity`), each one reads day D's window
graphs alone (``bipartite_graph[D]``, ``user_similarity_graph[D]``, ``item_similarity_graph[D]``,
all built from days D-W .. D-1), never day D: the day's samples give only the (user, item) pairs
to score. With W the window's users x items matrix of behaviour-weighted edges (``w(u, i)`` = the
sum of ``graph.behavior_weights`` over the pair's window events) and S^I / S^U the top-k
similarity graphs (row r: r's k most similar nodes and their similarities):

* ``item_knn``: ``score(u, i) = sum_j w(u, j) S^I[i, j]``, over the k items j most similar to the
  *target* item i (top-k per target item, as Dacrema et al.'s ItemKNNCF);
* ``user_knn``: ``score(u, i) = sum_v S^U[u, v] w(v, i)``, over u's k most similar users v;
* ``ease`` (Steck, WWW 2019): with X = W restricted to the kept items (below; behaviour-weighted
  like the kNN scorers' w, where Steck's X is binary),
  ``P = (X^T X + lambda I)^-1``, ``B = I - P diagMat(1 / diag(P))`` (zero diagonal) and
  ``score(u, i) = X_u . B[:, i]``; lambda = ``cf.ease_lambda``.

A user or an item absent from the window graph scores 0 (no history, no neighbour), as does a
pair with no path of the scorer's shape.

**EASE and its cap.** EASE inverts a dense matrix, so it is fitted only where that matrix has
at most ``cf.ease_max_dim`` rows (:class:`Ease`): exactly, over every item, when the window has
at most that many items, or at most that many users and fewer users than items (the same closed
form in user space, through the push-through identity); else on the ``ease_max_dim`` items of
highest degree (users in the window; ties: the lower raw id). Then X keeps only those columns (a
user's events on other items do not enter X_u) and every sample on an item outside them scores 0,
as an item new to the window does. What was fitted is recorded (:meth:`Ease.info`: the form, the
cap, the items kept of the window's, lambda, the share of the scored samples on a kept item),
in the evaluation next to the metrics.

Every scorer is vectorised over the samples (numpy gathers on the CSR arrays, samples in parts of
bounded size), ``O(samples x k)`` for the kNN scorers and ``O(samples x user degree)`` for EASE,
whose fit costs ``O(nnz(X) + N^3)`` for the N x N matrix it inverts (by Cholesky).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ml_core.config.cf import CF_SCORERS, CFConfig
from ml_core.contracts.day import DayInputs
from ml_core.graph.csr import BipartiteGraph
from ml_core.graph.neighbours import PART_ENTRIES, item_knn_scores, parts, user_knn_scores
from ml_core.sanity import node_rows, scorer_metrics

__all__ = ["CF_SCORERS", "Ease", "cf_metrics", "cf_scores", "item_knn_scores", "user_knn_scores"]

def _spd_inverse(a: np.ndarray) -> np.ndarray:
    """The inverse of the symmetric positive definite ``a`` (overwritten), by Cholesky."""
    from scipy.linalg import lapack

    if not len(a):
        return a
    c, info = lapack.dpotrf(a, lower=False, overwrite_a=True)
    if info == 0:
        c, info = lapack.dpotri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: the regularised Gram matrix is not positive definite (LAPACK info {info})")
    upper = np.triu(c)
    return upper + np.triu(c, 1).T


@dataclass
class Ease:
    """EASE fitted on one window graph, in one of two forms of the same closed form:

    * ``users`` (the window has at most ``max_dim`` users, fewer than its items): exact over every
      item, through the push-through identity ``X P = K^-1 X`` with ``K = X X^T + lambda I``
      (users x users), so ``score(u, i) = X[u, i] - (K^-1 X)[u, i] / P_ii`` and
      ``P_ii = (1 - x_i^T K^-1 x_i) / lambda`` (x_i: item i's column of X). ``dense`` = K^-1.
    * ``items`` (otherwise): ``B`` itself, N x N over the window's N <= ``max_dim`` items of
      highest degree (all of them when there are no more: exact). ``dense`` = B, ``col`` maps a
      graph item row to its row / column of B (-1: beyond the cap).
    """

    form: str
    dense: np.ndarray
    col: np.ndarray
    lam: float
    max_dim: int
    seconds: float

    @classmethod
    def fit(cls, graph: BipartiteGraph, max_dim: int, lam: float) -> Ease:
        """The form that fits ``max_dim`` (class docstring; beyond the cap: module docstring)."""
        t = time.perf_counter()
        n_users, n_items = graph.n_users, graph.n_items
        x = graph.ui.to_scipy().astype(np.float64)
        if n_users < n_items and n_users <= max_dim:
            k = np.asarray((x @ x.T).todense(), np.float64)
            k[np.diag_indices_from(k)] += lam
            return cls("users", _spd_inverse(k), np.arange(n_items), float(lam), int(max_dim), time.perf_counter() - t)
        kept = np.arange(n_items) if n_items <= max_dim else np.sort(np.argsort(-graph.iu.degrees(), kind="stable")[:max_dim])
        col = np.full(n_items, -1, np.int64)
        col[kept] = np.arange(len(kept))
        x = x[:, kept]
        gram = np.asarray((x.T @ x).todense(), np.float64)
        gram[np.diag_indices_from(gram)] += lam
        p = _spd_inverse(gram)
        b = p / -np.diag(p)  # B[i, j] = -P[i, j] / P[j, j] off the diagonal
        np.fill_diagonal(b, 0.0)
        return cls("items", b, col, float(lam), int(max_dim), time.perf_counter() - t)

    def _columns(self, i_row: np.ndarray) -> np.ndarray:
        """The kept column of each graph item row (-1: absent from the graph or beyond the cap)."""
        out = np.full(len(i_row), -1, np.int64)
        known = i_row >= 0
        out[known] = self.col[i_row[known]]
        return out

    def scores(self, graph: BipartiteGraph, u_row: np.ndarray, i_row: np.ndarray) -> np.ndarray:
        """``X_u . B[:, i]`` per sample (0 where u or i is absent, or i is beyond the cap)."""
        target = self._columns(i_row)
        idx = np.flatnonzero((u_row >= 0) & (target >= 0))
        out = np.zeros(len(u_row), np.float64)
        if self.form == "users":
            self._user_form(graph, u_row, i_row, idx, out)
            return out
        ui = graph.ui
        cols, weights = self.col[np.asarray(ui.indices)], np.asarray(ui.weights, np.float64)
        for part in parts(idx, ui.degrees()[u_row[idx]]):
            owner, pos = ui.entries_of(u_row[part])
            j = cols[pos]
            keep = j >= 0
            owner, pos, j = owner[keep], pos[keep], j[keep]
            out[part] = np.bincount(owner, weights[pos] * self.dense[j, target[part][owner]], minlength=len(part))
        return out

    def _user_form(self, graph: BipartiteGraph, u_row, i_row, idx, out) -> None:
        """The ``users`` form's scores of the samples ``idx``, by parts of the sampled items: for
        each part, ``Y = X[:, part]^T K^-1`` (part x users, dense), ``(K^-1 X)[u, i] = Y[i, u]``
        and ``x_i^T K^-1 x_i = sum_v X[v, i] Y[i, v]``."""
        xt = graph.iu.to_scipy().astype(np.float64)  # items x users
        idx = idx[np.argsort(i_row[idx], kind="stable")]
        by_item = i_row[idx]
        items = np.unique(by_item)
        step = max(1, PART_ENTRIES // max(len(self.dense), 1))
        for first in range(0, len(items), step):
            part = items[first:first + step]
            sel = idx[np.searchsorted(by_item, part[0], "left"):np.searchsorted(by_item, part[-1], "right")]
            x_part = xt[part]
            y = np.asarray(x_part @ self.dense)
            p_ii = (1.0 - np.asarray(x_part.multiply(y).sum(axis=1)).ravel()) / self.lam
            pos = np.searchsorted(part, i_row[sel])
            out[sel] = graph.pair_weights(u_row[sel], i_row[sel]) - y[pos, u_row[sel]] / p_ii[pos]

    def info(self, i_row: np.ndarray) -> dict:
        """What was fitted, and the share of the samples (graph item rows ``i_row``) it could score."""
        covered = float(np.mean(self._columns(i_row) >= 0)) if len(i_row) else 0.0
        return {"form": self.form, "lambda": self.lam, "max_dim": self.max_dim, "dense_dim": int(len(self.dense)),
                "items": int(np.sum(self.col >= 0)), "window_items": int(len(self.col)),
                "samples_on_kept_items": round(covered, 4), "fit_seconds": round(self.seconds, 3)}


def cf_scores(day: DayInputs, cfg: CFConfig | None = None) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """``({scorer: scores [n_samples]}, {scorer: what it cost and, for EASE, what it kept})`` for
    the samples of ``day``, which must carry its window graph and both similarity graphs."""
    cfg = cfg or CFConfig()
    if not cfg.scorers:
        return {}, {}
    g = day.graph
    sims = {"user": day.user_sim, "item": day.item_sim}
    if g is None or any(s is None for s in sims.values()):
        raise ValueError(f"CF scorers need day {day.day}'s window graph and both similarity graphs (load it with_graph)")
    for kind, ids in (("user", g.user_ids), ("item", g.item_ids)):
        if not np.array_equal(sims[kind].node_ids, ids):
            raise ValueError(f"day {day.day}: the {kind} similarity graph's nodes differ from the bipartite graph's")
    u_row, i_row = node_rows(day)
    scores, info = {}, {}
    for name in cfg.scorers:
        t = time.perf_counter()
        if name == "item_knn":
            scores[name] = item_knn_scores(g, day.item_sim.adj, u_row, i_row)
        elif name == "user_knn":
            scores[name] = user_knn_scores(g, day.user_sim.adj, u_row, i_row)
        else:
            model = Ease.fit(g, cfg.ease_max_dim, cfg.ease_lambda)
            scores[name] = model.scores(g, u_row, i_row)
            info[name] = model.info(i_row)
        info.setdefault(name, {})["seconds"] = round(time.perf_counter() - t, 3)
    return scores, info


def cf_metrics(day: DayInputs, tasks: list[str], cfg: CFConfig | None = None) -> tuple[dict[str, dict], dict[str, dict]]:
    """``({scorer: {task: metrics}}, info)``: each CF scorer's GAUC/AUC on ``day``'s samples, as
    :func:`ml_core.sanity.sanity_metrics` measures the sanity scorers, and :func:`cf_scores`' info."""
    scores, info = cf_scores(day, cfg)
    return scorer_metrics(day, scores, tasks), info
