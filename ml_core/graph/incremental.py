"""Incremental daily refresh of the window graphs (bipartite + both top-k similarity graphs).

Day D+1's window drops the day that leaves and adds the day that enters. Everything here is
*exactly* equal to a full rebuild over the new window (same ids, same CSR arrays, same float32
weights, bit for bit); the full rebuild (:func:`build_window`) stays the way to start a chain
(first day, backfills, a changed config, or whenever :func:`refresh_window` raises
:class:`IncrementalNotSupported`).

What is persisted between days
------------------------------
* the :class:`~ml_core.graph.csr.BipartiteGraph` (its per-behaviour ``counts`` are the state:
  edge weights are recomputed from the updated counts, never patched, so they equal a rebuild);
* one :class:`SimilarityState` per similarity graph: for every node its best ``buffer``
  (default ``2k``) neighbours with their exact float64 similarities, sorted as in the graph, and
  a flag saying whether that list holds *all* of the node's positive-similarity neighbours.

Bipartite refresh
-----------------
``delta = edge_table(entering) - edge_table(leaving)`` (per-pair, per-behaviour counts), merged
into yesterday's sorted (user, item) pairs with one vectorised sorted merge; pairs whose counts
all reach zero leave, nodes without edges leave, new ones enter. Requires every behaviour
weight to be > 0 (otherwise pairs of weight 0 are not in yesterday's graph but their counts
would be needed later); other configurations raise :class:`IncrementalNotSupported`.

Similarity refresh (why it stays exact)
---------------------------------------
Let ``C`` be the nodes whose row of ``A`` changed (touched by the delta, new, or sharing a
column whose hub status flipped). For two nodes ``u, v`` outside ``C`` the shared columns, their
values and both norms are unchanged, so ``sim(u, v)`` is recomputed from the same float64
operations in the same order: the *same bits*. Hence for ``u`` outside ``C``:

* its stored neighbours outside ``C`` keep their similarities (``S_u``);
* every pair ``(u, v)`` with ``v`` in ``C`` gets a new value, computed by walking the rows of
  ``C`` (the same kernel as the full build; ``sim(u, v)`` computed in ``v``'s row has the same
  bits as in ``u``'s row). While walking row ``v``, each candidate ``u`` whose new
  ``(sim, id)`` ranks at or before ``u``'s stored boundary (the last stored entry, or anything
  positive when the stored list is complete) is *emitted* to ``u``;
* ``u``'s nodes outside ``C`` that rank at or before the old boundary are exactly ``S_u``, and
  the emitted ones are exactly the ``C`` nodes there, so ``merge(S_u, emitted)`` is the exact
  new ranking down to that boundary. If that is provably at least ``k`` long (``|S_u| >= k``, or
  the list was complete) the row is settled; otherwise ``u`` is walked as well.

The cost of the refresh is therefore the walk of ``C`` (plus the few rows whose buffer ran
short): the rows whose norm changed must be recomputed, because every similarity they take
part in changed. That share is known before walking (the sum of the rows' 2-hop walk lengths),
so each similarity graph picks its path: when the re-walk would exceed ``max_walk_share``
(default 0.5) of a full build's work, every row is walked instead -- same exact result, less
time. On a 30-day e-commerce window it usually does: the nodes active on the entering or the
leaving day are the heavy ones (about 80% of the user graph's work, 66% of the item graph's
in ``benchmarks/bench_graph.py``), and heavy rows also cost more per pair. The bipartite merge
is always incremental.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from numba import njit

from ml_core.data.schema import BEHAVIORS
from ml_core.graph.bipartite import build_bipartite, edge_table
from ml_core.graph.csr import CSR, BipartiteGraph, SimilarityGraph, lookup
from ml_core.graph.similarity import PreparedMatrix
from ml_core.graph.stats import similarity_stats
from ml_core.graph.telemetry import MemWatch

INT64_MAX = np.iinfo(np.int64).max


class IncrementalNotSupported(ValueError):
    """The refresh cannot be exact for this input/config: run :func:`build_window` instead."""


# --------------------------------------------------------------------------------------------
# similarity state
# --------------------------------------------------------------------------------------------
@dataclass
class SimilarityState:
    """Per node, its best ``buffer`` neighbours with exact float64 similarities.

    Args:
        node_ids (np.ndarray): sorted int64 raw ids, row order.
        indptr (np.ndarray): int64 ``[n + 1]``.
        indices (np.ndarray): int64 rows (into ``node_ids``) of the stored neighbours, each row
            sorted by descending similarity, then ascending id (the graph's order).
        sims (np.ndarray): float64 similarities, aligned with ``indices``.
        complete (np.ndarray): bool ``[n]``; True when the row holds every neighbour with a
            positive similarity.
        k, buffer, measure, hub_degree_cap, kind: how it was built.
    """

    node_ids: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    sims: np.ndarray
    complete: np.ndarray
    k: int
    buffer: int
    measure: str
    hub_degree_cap: int
    kind: str
    stats: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.node_ids)

    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def to_graph(self) -> SimilarityGraph:
        """The top-k similarity graph (first ``k`` stored entries of each row, float32)."""
        lens = np.minimum(self.lengths(), self.k)
        offs = np.arange(len(self.indices)) - np.repeat(self.indptr[:-1], self.lengths())
        keep = offs < np.repeat(lens, self.lengths())
        indptr = np.zeros(self.n + 1, np.int64)
        np.cumsum(lens, out=indptr[1:])
        adj = CSR(indptr, self.indices[keep].astype(np.int64), self.sims[keep].astype(np.float32), self.n)
        return SimilarityGraph(np.asarray(self.node_ids, np.int64), adj, self.kind, dict(self.stats))

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for part in ("node_ids", "indptr", "indices", "sims", "complete"):
            np.save(directory / f"{part}.npy", getattr(self, part))
        meta = {"kind": self.kind, "k": self.k, "buffer": self.buffer, "measure": self.measure,
                "hub_degree_cap": self.hub_degree_cap, "n": self.n, "stats": self.stats}
        (directory / "state.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=float))

    @classmethod
    def load(cls, directory: Path, mmap: bool = False) -> "SimilarityState":
        directory = Path(directory)
        meta = json.loads((directory / "state.json").read_text())
        mode = "r" if mmap else None
        arrs = {p: np.load(directory / f"{p}.npy", mmap_mode=mode) for p in ("node_ids", "indptr", "indices", "sims", "complete")}
        return cls(**arrs, k=meta["k"], buffer=meta["buffer"], measure=meta["measure"],
                   hub_degree_cap=meta["hub_degree_cap"], kind=meta["kind"], stats=meta.get("stats", {}))


def _state_from_rows(node_ids, out_idx, out_val, out_cnt, out_npos, buffer, **meta) -> SimilarityState:
    kk = out_idx.shape[1]
    mask = np.arange(kk)[None, :] < out_cnt[:, None]
    indptr = np.zeros(len(node_ids) + 1, np.int64)
    np.cumsum(out_cnt, out=indptr[1:])
    return SimilarityState(np.asarray(node_ids, np.int64), indptr, out_idx[mask].astype(np.int64),
                           out_val[mask].astype(np.float64), out_npos <= buffer, buffer=buffer, **meta)


def _default_buffer(k: int, buffer: int | None) -> int:
    b = 2 * k if buffer is None else int(buffer)
    if b < k:
        raise ValueError(f"buffer ({b}) must be >= k ({k})")
    return max(b, 1)


def build_similarity_state(
    a: CSR, node_ids: np.ndarray, kind: str, k: int, measure: str = "cosine", hub_degree_cap: int = 0,
    chunk_rows: int = 4096, buffer: int | None = None,
) -> SimilarityState:
    """Full build of one similarity state (top-``buffer`` per row) from the matrix ``a``."""
    buffer = _default_buffer(k, buffer)
    t0 = time.perf_counter()
    with MemWatch() as mem:
        prep = PreparedMatrix(a, measure, hub_degree_cap)
        out = prep.run(np.arange(a.n_rows, dtype=np.int64), buffer, chunk_rows)
        state = _state_from_rows(node_ids, *out, buffer, k=k, measure=measure, hub_degree_cap=int(hub_degree_cap), kind=kind)
    graph = state.to_graph()
    stats = similarity_stats(graph.adj, prep, k, candidates=int(out[3].sum()))
    stats.update(mode="full", wall_time_s=round(time.perf_counter() - t0, 4), peak_mem_delta_mb=mem.delta_mb,
                 hub_degree_cap=int(hub_degree_cap), buffer=buffer, rows_walked=int(a.n_rows),
                 walk_cost_share=1.0)
    stats["exact"] = not (hub_degree_cap and stats["hub_nodes_skipped"] > 0)
    state.stats = stats
    return state


def refresh_similarity_state(
    prev: SimilarityState, a: CSR, node_ids: np.ndarray, changed: np.ndarray, chunk_rows: int = 4096,
    max_walk_share: float = 0.5,
) -> SimilarityState:
    """Exact refresh of a similarity state for the new matrix ``a`` (rows = ``node_ids``).

    Args:
        prev: yesterday's state (same k / buffer / measure / hub cap).
        a: today's matrix (users x items for the user graph, items x users for the item graph).
        node_ids: today's sorted raw ids of ``a``'s rows.
        changed: bool ``[len(node_ids)]``, True for rows whose entries changed (or that share
            a column whose hub status flipped). Rows not present yesterday count as changed.
        max_walk_share: when the rows to re-walk hold more than this share of the full build's
            work (sum of their 2-hop walk lengths), walk every row instead: the result is the
            same, and on such days it is faster (heavy rows cost more per pair). ``1.0`` forces
            the incremental path, ``0.0`` the full one.
    """
    t0 = time.perf_counter()
    k, buffer = prev.k, prev.buffer
    n = len(node_ids)
    with MemWatch() as mem:
        node_ids = np.asarray(node_ids, np.int64)
        old_to_new = lookup(node_ids, prev.node_ids)          # [n_old] -> new row or -1
        new_to_old = lookup(np.asarray(prev.node_ids, np.int64), node_ids)  # [n] -> old row or -1
        C = np.asarray(changed, bool) | (new_to_old < 0)

        # S_u: yesterday's entries of unchanged rows whose neighbour is unchanged.
        old_lens = np.diff(prev.indptr)
        old_row = np.repeat(np.arange(prev.n, dtype=np.int64), old_lens)
        nb_new = old_to_new[np.asarray(prev.indices)]
        row_new = old_to_new[old_row]
        keep_entry = (row_new >= 0) & (nb_new >= 0)
        keep_entry[keep_entry] &= ~C[row_new[keep_entry]] & ~C[nb_new[keep_entry]]
        s_count = np.bincount(row_new[keep_entry], minlength=n).astype(np.int64)
        old_complete_new = np.zeros(n, bool)
        has_old = new_to_old >= 0
        old_complete_new[has_old] = np.asarray(prev.complete)[new_to_old[has_old]]
        R = ~C & ~old_complete_new & (s_count < k)
        kept = ~C & ~R

        # Boundary of each kept row: its last stored entry (or "anything positive" if complete).
        b_val = np.full(n, np.inf)
        b_key = np.full(n, INT64_MAX, np.int64)
        kr = np.flatnonzero(kept)
        o = new_to_old[kr]
        comp = old_complete_new[kr]
        last = np.asarray(prev.indptr)[o + 1] - 1
        b_val[kr] = np.where(comp, 0.0, np.asarray(prev.sims)[np.maximum(last, 0)])
        b_key[kr] = np.where(comp, INT64_MAX, np.asarray(prev.node_ids)[np.asarray(prev.indices)[np.maximum(last, 0)]])

        t_map = time.perf_counter()
        prep = PreparedMatrix(a, prev.measure, prev.hub_degree_cap)
        t_prep = time.perf_counter()
        total_cost = float(prep.row_cost.sum())
        est_share = float(prep.row_cost[~kept].sum()) / total_cost if total_cost else 0.0
        rebuild = est_share > max_walk_share
        if rebuild:
            # Re-walking the changed rows would cost about as much as walking every row (the
            # rows that change are the heavy ones): a full walk gives the same exact state.
            out = prep.run(np.arange(n, dtype=np.int64), buffer, chunk_rows)
            state = _state_from_rows(node_ids, *out, buffer, k=k, measure=prev.measure,
                                     hub_degree_cap=prev.hub_degree_cap, kind=prev.kind)
            t_walk_c = t_walk_r = time.perf_counter()
            walk = np.arange(n, dtype=np.int64)
            kr = np.zeros(0, np.int64)
            e_row = kr
        else:
            emit = {"b_val": b_val, "b_key": b_key, "node_key": node_ids}
            # Changed rows are walked with emission; rows whose buffer ran short only need their own
            # list (their similarities with kept rows did not change, those are in the kept rows' S).
            walk_c = np.flatnonzero(C).astype(np.int64)
            walk_r = np.flatnonzero(R).astype(np.int64)
            c_idx, c_val, c_cnt, c_npos, (e_row, e_col, e_val) = prep.run(walk_c, buffer, chunk_rows, emit=emit)
            t_walk_c = time.perf_counter()
            r_idx, r_val, r_cnt, r_npos = prep.run(walk_r, buffer, chunk_rows)
            t_walk_r = time.perf_counter()
            walk = np.concatenate([walk_c, walk_r])
            w_idx, w_val = np.concatenate([c_idx, r_idx]), np.concatenate([c_val, r_val])
            w_cnt, w_npos = np.concatenate([c_cnt, r_cnt]), np.concatenate([c_npos, r_npos])

            # Merge S and emitted candidates of the kept rows.
            e_order = np.lexsort((e_col, -e_val, e_row))
            e_row, e_col, e_val = e_row[e_order], e_col[e_order], e_val[e_order]
            # Old rows are in id order, which is the new rows' order, so the kept entries are
            # grouped by new row and still sorted within each row.
            s_idx = nb_new[keep_entry]
            s_val = np.asarray(prev.sims)[keep_entry]
            s_ptr_all = np.zeros(n + 1, np.int64)
            np.cumsum(s_count, out=s_ptr_all[1:])
            e_count = np.bincount(e_row, minlength=n).astype(np.int64)
            e_ptr_all = np.zeros(n + 1, np.int64)
            np.cumsum(e_count, out=e_ptr_all[1:])
            kept_len = np.minimum(s_count[kr] + e_count[kr], buffer)

            lens = np.zeros(n, np.int64)
            lens[kr] = kept_len
            lens[walk] = w_cnt
            indptr = np.zeros(n + 1, np.int64)
            np.cumsum(lens, out=indptr[1:])
            indices = np.empty(int(indptr[-1]), np.int64)
            sims = np.empty(int(indptr[-1]), np.float64)
            _merge_kept(kr, s_ptr_all, s_idx, s_val, e_ptr_all, e_col, e_val, indptr, indices, sims)
            # Walked rows: copy the kernel's lists.
            if len(walk):
                mask = np.arange(w_idx.shape[1])[None, :] < w_cnt[:, None]
                dest = np.repeat(indptr[walk], w_cnt) + (np.arange(int(w_cnt.sum())) - np.repeat(np.cumsum(w_cnt) - w_cnt, w_cnt))
                indices[dest] = w_idx[mask]
                sims[dest] = w_val[mask]
            complete = np.zeros(n, bool)
            complete[kr] = old_complete_new[kr] & (s_count[kr] + e_count[kr] <= buffer)
            complete[walk] = w_npos <= buffer
            state = SimilarityState(node_ids, indptr, indices, sims, complete, k=k, buffer=buffer, measure=prev.measure,
                                    hub_degree_cap=prev.hub_degree_cap, kind=prev.kind)
        t_end = time.perf_counter()
    phases = {"map_state": t_map - t0, "prepare": t_prep - t_map, "walk_changed": t_walk_c - t_prep,
              "walk_short_buffer": t_walk_r - t_walk_c, "merge": t_end - t_walk_r}
    graph = state.to_graph()
    stats = similarity_stats(graph.adj, prep, k)
    walked_cost = float(prep.row_cost[walk].sum())
    stats.update(
        mode="full (auto)" if rebuild else "incremental", estimated_walk_share=round(est_share, 6),
        max_walk_share=float(max_walk_share), wall_time_s=round(time.perf_counter() - t0, 4), peak_mem_delta_mb=mem.delta_mb,
        hub_degree_cap=int(prev.hub_degree_cap), buffer=buffer, rows_changed=int(C.sum()),
        rows_buffer_short=int(R.sum()), rows_walked=int(len(walk)), rows_kept=int(len(kr)),
        emitted_candidates=int(len(e_row)), pairs_counted=int(walked_cost),
        emit_reruns=int(getattr(prep, "emit_reruns", 0)),
        phase_s={name: round(v, 4) for name, v in phases.items()},
        walk_cost_share=round(walked_cost / total_cost, 6) if total_cost else 0.0,
    )
    stats["exact"] = not (prev.hub_degree_cap and stats["hub_nodes_skipped"] > 0)
    state.stats = stats
    return state


def _merge_kept(kr, s_ptr, s_idx, s_val, e_ptr, e_idx, e_val, indptr, out_idx, out_val):
    starts_s = s_ptr[kr]
    ends_s = s_ptr[kr + 1]
    starts_e = e_ptr[kr]
    ends_e = e_ptr[kr + 1]
    _merge_kernel(starts_s, ends_s, s_idx, s_val, starts_e, ends_e, e_idx, e_val, indptr[kr], indptr[kr + 1],
                  out_idx, out_val)


@njit(cache=True, nogil=True)
def _merge_kernel(sa, sae, s_idx, s_val, eb, ebe, e_idx, e_val, oa, oae, out_idx, out_val):
    for i in range(len(sa)):
        a, ae, b, be, o, oe = sa[i], sae[i], eb[i], ebe[i], oa[i], oae[i]
        while o < oe:
            take_a = False
            if a < ae and b < be:
                if s_val[a] > e_val[b] or (s_val[a] == e_val[b] and s_idx[a] < e_idx[b]):
                    take_a = True
            elif a < ae:
                take_a = True
            if take_a:
                out_idx[o] = s_idx[a]
                out_val[o] = s_val[a]
                a += 1
            else:
                out_idx[o] = e_idx[b]
                out_val[o] = e_val[b]
                b += 1
            o += 1


# --------------------------------------------------------------------------------------------
# bipartite refresh
# --------------------------------------------------------------------------------------------
def check_incremental_config(behavior_weights: dict[str, float]) -> None:
    bad = [b for b in BEHAVIORS if not behavior_weights.get(b, 0.0) > 0]
    if bad:
        raise IncrementalNotSupported(
            f"incremental refresh needs every behaviour weight > 0 (pairs of weight 0 are not kept in the "
            f"graph, so their counts would be lost); {bad} are not: run a full rebuild"
        )


def window_delta(entering: pl.DataFrame | pl.LazyFrame, leaving: pl.DataFrame | pl.LazyFrame,
                 behavior_weights: dict[str, float]) -> pl.DataFrame:
    """Per (user_id, item_id): ``n_<b>`` count of the entering day minus the leaving day's;
    pairs whose counts do not change are dropped."""
    cols = [f"n_{b}" for b in BEHAVIORS]
    enter = edge_table(entering, behavior_weights).select("user_id", "item_id", *cols)
    leave = edge_table(leaving, behavior_weights).select("user_id", "item_id", *[(-pl.col(c)).alias(c) for c in cols])
    both = pl.concat([enter, leave])
    if both.height == 0:
        return both
    d = both.group_by("user_id", "item_id").agg(*[pl.col(c).sum() for c in cols])
    return d.filter(pl.any_horizontal([pl.col(c) != 0 for c in cols]))


def apply_delta(prev: BipartiteGraph, delta: pl.DataFrame, behavior_weights: dict[str, float],
                days: list[str]) -> BipartiteGraph:
    """Yesterday's graph plus a :func:`window_delta`: identical to ``build_bipartite`` over the new window."""
    check_incremental_config(behavior_weights)
    missing = [b for b in BEHAVIORS if b not in prev.counts]
    if missing:
        raise IncrementalNotSupported(f"previous graph has no counts for {missing}")
    d_u = delta["user_id"].to_numpy().astype(np.int64)
    d_i = delta["item_id"].to_numpy().astype(np.int64)
    d_c = np.stack([delta[f"n_{b}"].to_numpy().astype(np.float32) for b in BEHAVIORS], axis=1) if delta.height else np.zeros((0, len(BEHAVIORS)), np.float32)
    users = np.union1d(np.asarray(prev.user_ids, np.int64), d_u)
    items = np.union1d(np.asarray(prev.item_ids, np.int64), d_i)
    n_i = max(len(items), 1)
    pu = np.searchsorted(users, np.asarray(prev.user_ids, np.int64))[prev.ui.row_of_entries()]
    pi = np.searchsorted(items, np.asarray(prev.item_ids, np.int64))[np.asarray(prev.ui.indices)]
    pkey = pu * n_i + pi  # sorted: rows by user then item, ranks are monotone
    counts = np.stack([np.asarray(prev.counts[b], np.float32) for b in BEHAVIORS], axis=1)
    dkey = np.searchsorted(users, d_u) * n_i + np.searchsorted(items, d_i)
    order = np.argsort(dkey, kind="stable")
    dkey, d_c = dkey[order], d_c[order]
    pos = np.searchsorted(pkey, dkey)
    match = pos < len(pkey)
    match[match] = pkey[pos[match]] == dkey[match]
    counts = counts.copy()
    counts[pos[match]] += d_c[match]
    new = ~match
    keys = np.insert(pkey, pos[new], dkey[new])
    counts = np.insert(counts, pos[new], d_c[new], axis=0)
    if (counts < 0).any():
        raise IncrementalNotSupported("the leaving day removes events that are not in the previous window's graph")
    alive = counts.sum(axis=1) > 0
    keys, counts = keys[alive], counts[alive]
    u_rank, i_rank = keys // n_i, keys % n_i
    u_used = np.zeros(len(users), bool)
    u_used[u_rank] = True
    i_used = np.zeros(len(items), bool)
    i_used[i_rank] = True
    u_map = np.cumsum(u_used) - 1
    i_map = np.cumsum(i_used) - 1
    rows = u_map[u_rank]
    cols = i_map[i_rank].astype(np.int64)
    user_ids, item_ids = users[u_used], items[i_used]
    indptr = np.zeros(len(user_ids) + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=len(user_ids)), out=indptr[1:])
    w = np.zeros(len(keys), np.float64)
    for bi, b in enumerate(BEHAVIORS):
        w += float(behavior_weights[b]) * counts[:, bi].astype(np.float64)
    ui = CSR(indptr, cols, w.astype(np.float32), len(item_ids))
    return BipartiteGraph(user_ids, item_ids, ui, {b: np.ascontiguousarray(counts[:, bi]) for bi, b in enumerate(BEHAVIORS)},
                          days=list(days))


def _changed_rows(node_ids: np.ndarray, delta_ids: np.ndarray) -> np.ndarray:
    return lookup(node_ids, np.unique(delta_ids)) if len(delta_ids) else np.zeros(0, np.int64)


def _hub_flip_rows(prev_m: CSR, prev_cols: np.ndarray, new_m: CSR, new_cols: np.ndarray, new_rows: np.ndarray,
                   prev_rows: np.ndarray, cap: int) -> np.ndarray:
    """Raw ids of rows (of ``new_m``/``prev_m``) having a column whose hub status flipped."""
    if not cap or cap <= 0:
        return np.zeros(0, np.int64)
    old_deg = np.bincount(np.asarray(prev_m.indices), minlength=prev_m.n_cols)
    new_deg = np.bincount(np.asarray(new_m.indices), minlength=new_m.n_cols)
    common, i_old, i_new = np.intersect1d(prev_cols, new_cols, assume_unique=True, return_indices=True)
    flipped_old = np.zeros(prev_m.n_cols, bool)
    flipped_new = np.zeros(new_m.n_cols, bool)
    f = (old_deg[i_old] > cap) != (new_deg[i_new] > cap)
    flipped_old[i_old[f]] = True
    flipped_new[i_new[f]] = True
    out = [np.asarray(prev_rows)[np.unique(prev_m.row_of_entries()[flipped_old[prev_m.indices]])],
           np.asarray(new_rows)[np.unique(new_m.row_of_entries()[flipped_new[new_m.indices]])]]
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# window API used by the pipeline
# --------------------------------------------------------------------------------------------
@dataclass
class WindowGraphs:
    """The graphs of one window and the state the next day's refresh needs.

    Unpacks as ``bip, user_sim, item_sim, stats = result``.
    """

    bip: BipartiteGraph
    user_state: SimilarityState
    item_state: SimilarityState
    stats: dict = field(default_factory=dict)
    _user_sim: SimilarityGraph | None = field(default=None, repr=False)
    _item_sim: SimilarityGraph | None = field(default=None, repr=False)

    @property
    def user_sim(self) -> SimilarityGraph:
        if self._user_sim is None:
            self._user_sim = self.user_state.to_graph()
        return self._user_sim

    @property
    def item_sim(self) -> SimilarityGraph:
        if self._item_sim is None:
            self._item_sim = self.item_state.to_graph()
        return self._item_sim

    def __iter__(self):
        return iter((self.bip, self.user_sim, self.item_sim, self.stats))

    def save_state(self, directory: Path) -> None:
        """Persist what :func:`refresh_window` needs (bipartite graph + both similarity states)."""
        directory = Path(directory)
        self.bip.save(directory / "bipartite")
        self.user_state.save(directory / "user_state")
        self.item_state.save(directory / "item_state")

    @classmethod
    def load_state(cls, directory: Path) -> "WindowGraphs":
        directory = Path(directory)
        return cls(BipartiteGraph.load(directory / "bipartite"), SimilarityState.load(directory / "user_state"),
                   SimilarityState.load(directory / "item_state"))


def _bip_stats(bip: BipartiteGraph) -> dict:
    from ml_core.graph.bipartite import degree_summary
    from ml_core.graph.stats import degree_histogram

    ud, idg = bip.ui.degrees(), np.bincount(np.asarray(bip.ui.indices), minlength=bip.n_items)
    return {"n_users": bip.n_users, "n_items": bip.n_items, "n_edges": int(bip.ui.nnz),
            "user_degree": degree_summary(ud), "item_degree": degree_summary(idg),
            "user_degree_hist": degree_histogram(ud), "item_degree_hist": degree_histogram(idg)}


def build_states(bip: BipartiteGraph, cfg, buffer: int | None = None) -> WindowGraphs:
    """Similarity graphs + refresh state for an already built bipartite graph (full build)."""
    t0 = time.perf_counter()
    kw = dict(k=cfg.topk, measure=cfg.similarity, hub_degree_cap=cfg.hub_degree_cap, chunk_rows=cfg.chunk_rows, buffer=buffer)
    user = build_similarity_state(bip.ui, bip.user_ids, "user", **kw)
    item = build_similarity_state(bip.iu, bip.item_ids, "item", **kw)
    bstats = _bip_stats(bip)
    bstats["mode"] = "full"
    stats = {"mode": "full", "days": list(bip.days), "bipartite": bstats, "user_sim": user.stats,
             "item_sim": item.stats, "wall_time_s": round(time.perf_counter() - t0, 4)}
    return WindowGraphs(bip, user, item, stats)


def build_window(events: pl.DataFrame | pl.LazyFrame, cfg, days: list[str], buffer: int | None = None) -> WindowGraphs:
    """Full rebuild of the window's graphs (and the refresh state) from all its events."""
    t0 = time.perf_counter()
    with MemWatch() as mem:
        bip = build_bipartite(events, cfg.behavior_weights, days)
    t_bip = time.perf_counter() - t0
    out = build_states(bip, cfg, buffer)
    out.stats["bipartite"].update(wall_time_s=round(t_bip, 4), peak_mem_delta_mb=mem.delta_mb)
    out.stats["wall_time_s"] = round(time.perf_counter() - t0, 4)
    return out


def refresh_window(
    prev_bip: BipartiteGraph | WindowGraphs,
    prev_user: SimilarityState | None = None,
    prev_item: SimilarityState | None = None,
    entering: pl.DataFrame | pl.LazyFrame | None = None,
    leaving: pl.DataFrame | pl.LazyFrame | None = None,
    cfg=None,
    days: list[str] | None = None,
    *,
    verify: bool = False,
    max_walk_share: float = 0.5,
) -> WindowGraphs:
    """Day D+1's graphs from day D's state, the entering day's and the leaving day's events.

    ``refresh_window(prev, None, None, entering, leaving, cfg, days)`` also accepts a
    :class:`WindowGraphs` as ``prev``. Raises :class:`IncrementalNotSupported` when an exact
    refresh is impossible (config changed since the state was built, a zero behaviour weight,
    inconsistent days); the caller then runs :func:`build_window`. ``verify=True`` also
    rebuilds the similarity graphs from scratch and raises if anything differs (debug/backfill
    audits; costs a full build). ``max_walk_share``: see :func:`refresh_similarity_state`
    (the bipartite graph is always merged incrementally; each similarity graph takes the
    incremental path only when it re-walks at most this share of the work).
    """
    if isinstance(prev_bip, WindowGraphs):
        prev_bip, prev_user, prev_item = prev_bip.bip, prev_bip.user_state, prev_bip.item_state
    if cfg is None:
        raise TypeError("refresh_window needs the GraphConfig")
    for st in (prev_user, prev_item):
        if not isinstance(st, SimilarityState):
            raise IncrementalNotSupported(
                f"refresh needs yesterday's SimilarityState (saved by WindowGraphs.save_state), got "
                f"{type(st).__name__}: run a full rebuild (build_window / build_states)")
    check_incremental_config(cfg.behavior_weights)
    for st in (prev_user, prev_item):
        if (st.k, st.measure, int(st.hub_degree_cap)) != (cfg.topk, cfg.similarity, int(cfg.hub_degree_cap)):
            raise IncrementalNotSupported(
                f"{st.kind} state was built with k={st.k}, measure={st.measure}, hub cap={st.hub_degree_cap}; "
                f"config asks k={cfg.topk}, measure={cfg.similarity}, hub cap={cfg.hub_degree_cap}"
            )
    if not np.array_equal(prev_user.node_ids, prev_bip.user_ids) or not np.array_equal(prev_item.node_ids, prev_bip.item_ids):
        raise IncrementalNotSupported("similarity states do not belong to the previous bipartite graph")
    days = list(days or [])
    t0 = time.perf_counter()
    with MemWatch() as mem:
        delta = window_delta(entering, leaving, cfg.behavior_weights)
        bip = apply_delta(prev_bip, delta, cfg.behavior_weights, days)
    t_bip = time.perf_counter() - t0
    d_users = delta["user_id"].to_numpy().astype(np.int64)
    d_items = delta["item_id"].to_numpy().astype(np.int64)
    cap = int(cfg.hub_degree_cap)
    # user rows change with their own entries, or when one of their items flips hub status
    cu = np.concatenate([d_users, _hub_flip_rows(prev_bip.ui, prev_bip.item_ids, bip.ui, bip.item_ids,
                                                 bip.user_ids, prev_bip.user_ids, cap)])
    ci = np.concatenate([d_items, _hub_flip_rows(prev_bip.iu, prev_bip.user_ids, bip.iu, bip.user_ids,
                                                 bip.item_ids, prev_bip.item_ids, cap)])
    changed_u = np.zeros(bip.n_users, bool)
    r = _changed_rows(bip.user_ids, cu)
    changed_u[r[r >= 0]] = True
    changed_i = np.zeros(bip.n_items, bool)
    r = _changed_rows(bip.item_ids, ci)
    changed_i[r[r >= 0]] = True
    user = refresh_similarity_state(prev_user, bip.ui, bip.user_ids, changed_u, cfg.chunk_rows, max_walk_share)
    item = refresh_similarity_state(prev_item, bip.iu, bip.item_ids, changed_i, cfg.chunk_rows, max_walk_share)
    bstats = _bip_stats(bip)
    bstats.update(mode="incremental", wall_time_s=round(t_bip, 4), peak_mem_delta_mb=mem.delta_mb,
                  delta_pairs=int(delta.height))
    stats = {"mode": "incremental", "days": days, "bipartite": bstats, "user_sim": user.stats, "item_sim": item.stats,
             "wall_time_s": round(time.perf_counter() - t0, 4)}
    out = WindowGraphs(bip, user, item, stats)
    if verify:
        from ml_core.graph.similarity import topk_similarity

        for st, m in ((out.user_sim, bip.ui), (out.item_sim, bip.iu)):
            ref = topk_similarity(m, cfg.topk, cfg.similarity, cfg.hub_degree_cap, cfg.chunk_rows)
            if not (np.array_equal(ref.indptr, st.adj.indptr) and np.array_equal(ref.indices, st.adj.indices)
                    and np.array_equal(ref.weights, st.adj.weights)):
                raise AssertionError(f"incremental {st.kind} similarity differs from a full rebuild")
    return out
