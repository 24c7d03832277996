"""The refresh state of one top-k similarity graph: full build and exact daily refresh.

A :class:`SimilarityState` holds, for every node, its best ``buffer`` (default ``2k``)
neighbours with their exact float64 similarities, sorted as in the graph, and a flag saying
whether that list holds *all* of the node's positive-similarity neighbours. Its first ``k``
entries per row, rounded to float32, are the top-k graph (:meth:`SimilarityState.to_graph`).
The window-level API (bipartite graph + both states) is :mod:`ml_core.graph.incremental`.

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
in ``benchmarks/bench_graph.py``), and heavy rows also cost more per pair.

:func:`refresh_similarity_state` runs these steps: map yesterday's state onto today's rows
(:func:`_carry_over`), set the kept rows' boundaries (:func:`_boundaries`), then either walk
every row (:func:`_walk_all`) or walk ``C`` with emission plus the short rows
(:func:`_walk_changed`) and merge (:func:`_merge_rows`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from ml_core.graph.csr import CSR, SimilarityGraph, lookup
from ml_core.graph.similarity import PreparedMatrix
from ml_core.graph.stats import similarity_stats
from ml_core.graph.telemetry import MemWatch

INT64_MAX = np.iinfo(np.int64).max


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
        stats (dict): build statistics of the last build or refresh.
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
        """One ``.npy`` per array plus ``state.json`` (how it was built, ``stats``) in ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for part in ("node_ids", "indptr", "indices", "sims", "complete"):
            np.save(directory / f"{part}.npy", getattr(self, part))
        meta = {"kind": self.kind, "k": self.k, "buffer": self.buffer, "measure": self.measure,
                "hub_degree_cap": self.hub_degree_cap, "n": self.n, "stats": self.stats}
        (directory / "state.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=float))

    @classmethod
    def load(cls, directory: Path, mmap: bool = False) -> SimilarityState:
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
    chunk_rows: int = 4096, buffer: int | None = None, engine=None,
) -> SimilarityState:
    """Full build of one similarity state (top-``buffer`` per row) from the matrix ``a``; ``engine``:
    where the rows are walked (:mod:`ml_core.graph.engine`, ``None`` = here, same result)."""
    buffer = _default_buffer(k, buffer)
    t0 = time.perf_counter()
    with MemWatch() as mem:
        prep = PreparedMatrix(a, measure, hub_degree_cap)
        out = prep.run(np.arange(a.n_rows, dtype=np.int64), buffer, chunk_rows, engine=engine)
        state = _state_from_rows(node_ids, *out, buffer, k=k, measure=measure, hub_degree_cap=int(hub_degree_cap), kind=kind)
    graph = state.to_graph()
    stats = similarity_stats(graph.adj, prep, k, candidates=int(out[3].sum()))
    stats.update(mode="full", wall_time_s=round(time.perf_counter() - t0, 4), peak_mem_delta_mb=mem.delta_mb,
                 hub_degree_cap=int(hub_degree_cap), buffer=buffer, rows_walked=int(a.n_rows),
                 walk_cost_share=1.0)
    stats["exact"] = not (hub_degree_cap and stats["hub_nodes_skipped"] > 0)
    state.stats = stats
    return state


# --------------------------------------------------------------------------------------------
# refresh, step by step
# --------------------------------------------------------------------------------------------
@dataclass
class _Carried:
    """Yesterday's state mapped onto today's ``n`` rows (:func:`_carry_over`).

    ``changed`` is ``C`` (bool ``[n]``), ``short`` the unchanged rows whose ``S`` is shorter than
    ``k`` and not complete (walked again, without emission), ``kept`` the other unchanged rows
    (settled by a merge). ``keep_entry`` (bool, one per stored entry of ``prev``) marks the
    entries of ``S``; ``nb_new`` is each stored entry's neighbour as a new row (-1: gone).
    Per new row: ``new_to_old`` its old row (-1: new), ``s_count`` the length of its ``S``,
    ``old_complete`` yesterday's ``complete`` flag (False for new rows).
    """

    new_to_old: np.ndarray
    changed: np.ndarray
    short: np.ndarray
    kept: np.ndarray
    keep_entry: np.ndarray
    nb_new: np.ndarray
    s_count: np.ndarray
    old_complete: np.ndarray


def _carry_over(prev: SimilarityState, node_ids: np.ndarray, changed: np.ndarray) -> _Carried:
    """Step 1: ``C`` (changed or new rows), ``S_u`` (yesterday's entries of unchanged rows whose
    neighbour is unchanged) and the rows it settles."""
    n = len(node_ids)
    old_to_new = lookup(node_ids, prev.node_ids)          # [n_old] -> new row or -1
    new_to_old = lookup(np.asarray(prev.node_ids, np.int64), node_ids)  # [n] -> old row or -1
    C = np.asarray(changed, bool) | (new_to_old < 0)
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
    R = ~C & ~old_complete_new & (s_count < prev.k)
    return _Carried(new_to_old, C, R, ~C & ~R, keep_entry, nb_new, s_count, old_complete_new)


def _boundaries(prev: SimilarityState, carried: _Carried) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 2: the kept rows ``kr`` and every row's emission boundary ``(b_val, b_key)``: a kept
    row's last stored entry (or "anything positive" if complete), ``inf`` elsewhere."""
    n = len(carried.kept)
    b_val = np.full(n, np.inf)
    b_key = np.full(n, INT64_MAX, np.int64)
    kr = np.flatnonzero(carried.kept)
    o = carried.new_to_old[kr]
    comp = carried.old_complete[kr]
    last = np.asarray(prev.indptr)[o + 1] - 1
    # a kept row without entries is complete (else it is re-walked), so its lookup is unused; with no
    # stored entry at all (no co-interaction the day before) there is nothing to look up
    at = np.maximum(last, 0) if len(prev.sims) else None
    b_val[kr] = np.where(comp, 0.0, np.asarray(prev.sims)[at] if at is not None else 0.0)
    b_key[kr] = np.where(comp, INT64_MAX, np.asarray(prev.node_ids)[np.asarray(prev.indices)[at]] if at is not None else INT64_MAX)
    return kr, b_val, b_key


def _walk_all(prep: PreparedMatrix, prev: SimilarityState, node_ids: np.ndarray, chunk_rows: int, engine) -> SimilarityState:
    """Step 3, full path: every row walked, as in :func:`build_similarity_state` (re-walking
    the changed rows would cost about as much: the rows that change are the heavy ones)."""
    out = prep.run(np.arange(len(node_ids), dtype=np.int64), prev.buffer, chunk_rows, engine=engine)
    return _state_from_rows(node_ids, *out, prev.buffer, k=prev.k, measure=prev.measure,
                            hub_degree_cap=prev.hub_degree_cap, kind=prev.kind)


def _walk_changed(prep: PreparedMatrix, carried: _Carried, emit: dict, buffer: int, chunk_rows: int, lap, engine):
    """Step 3, incremental path: the changed rows walked with emission, then the short rows
    (they only need their own list: their similarities with kept rows did not change, those
    are in the kept rows' ``S``). ``lap(name)`` is called after each walk (phase timings).

    Returns ``(walk, (idx, val, cnt, npos), (e_row, e_col, e_val))``: the walked rows, their
    kernel output in that order, and the emitted candidates.
    """
    walk_c = np.flatnonzero(carried.changed).astype(np.int64)
    walk_r = np.flatnonzero(carried.short).astype(np.int64)
    c_idx, c_val, c_cnt, c_npos, emitted = prep.run(walk_c, buffer, chunk_rows, emit=emit, engine=engine)
    lap("walk_changed")
    r_idx, r_val, r_cnt, r_npos = prep.run(walk_r, buffer, chunk_rows, engine=engine)
    lap("walk_short_buffer")
    walked = (np.concatenate([c_idx, r_idx]), np.concatenate([c_val, r_val]),
              np.concatenate([c_cnt, r_cnt]), np.concatenate([c_npos, r_npos]))
    return np.concatenate([walk_c, walk_r]), walked, emitted


def _merge_rows(prev: SimilarityState, node_ids: np.ndarray, carried: _Carried, kr: np.ndarray,
                walk: np.ndarray, walked, emitted) -> SimilarityState:
    """Step 4: today's state: each kept row is ``merge(S_u, emitted to u)`` cut at ``buffer``,
    each walked row the kernel's list."""
    n, buffer = len(node_ids), prev.buffer
    w_idx, w_val, w_cnt, w_npos = walked
    e_row, e_col, e_val = emitted
    e_order = np.lexsort((e_col, -e_val, e_row))
    e_row, e_col, e_val = e_row[e_order], e_col[e_order], e_val[e_order]
    # Old rows are in id order, which is the new rows' order, so the kept entries are
    # grouped by new row and still sorted within each row.
    s_count = carried.s_count
    s_idx = carried.nb_new[carried.keep_entry]
    s_val = np.asarray(prev.sims)[carried.keep_entry]
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
    complete[kr] = carried.old_complete[kr] & (s_count[kr] + e_count[kr] <= buffer)
    complete[walk] = w_npos <= buffer
    return SimilarityState(node_ids, indptr, indices, sims, complete, k=prev.k, buffer=buffer, measure=prev.measure,
                           hub_degree_cap=prev.hub_degree_cap, kind=prev.kind)


class _Laps:
    """Phase timings: ``lap(name)`` records the time since the previous lap under ``name``."""

    def __init__(self):
        self.last = time.perf_counter()
        self.phases: dict[str, float] = {}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = now - self.last
        self.last = now


def refresh_similarity_state(
    prev: SimilarityState, a: CSR, node_ids: np.ndarray, changed: np.ndarray, chunk_rows: int = 4096,
    max_walk_share: float = 0.5, engine=None,
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
        engine: where the rows are walked (:mod:`ml_core.graph.engine`; ``None`` = here).

    The state's ``stats`` add to :func:`~ml_core.graph.stats.similarity_stats` the path taken
    (``mode``), the row counts of each step and ``phase_s``, the seconds of each step.
    """
    t0 = time.perf_counter()
    laps = _Laps()
    with MemWatch() as mem:
        node_ids = np.asarray(node_ids, np.int64)
        carried = _carry_over(prev, node_ids, changed)
        kr, b_val, b_key = _boundaries(prev, carried)
        laps("map_state")
        prep = PreparedMatrix(a, prev.measure, prev.hub_degree_cap)
        laps("prepare")
        total_cost = float(prep.row_cost.sum())
        est_share = float(prep.row_cost[~carried.kept].sum()) / total_cost if total_cost else 0.0
        rebuild = est_share > max_walk_share
        if rebuild:
            state = _walk_all(prep, prev, node_ids, chunk_rows, engine)
            laps("walk_changed")
            laps("walk_short_buffer")
            walk = np.arange(len(node_ids), dtype=np.int64)
            kr = np.zeros(0, np.int64)
            n_emitted = 0
        else:
            emit = {"b_val": b_val, "b_key": b_key, "node_key": node_ids}
            walk, walked, emitted = _walk_changed(prep, carried, emit, prev.buffer, chunk_rows, laps, engine)
            state = _merge_rows(prev, node_ids, carried, kr, walk, walked, emitted)
            n_emitted = len(emitted[0])
        laps("merge")
    walked_cost = float(prep.row_cost[walk].sum())
    stats = similarity_stats(state.to_graph().adj, prep, prev.k)
    stats.update(
        mode="full (auto)" if rebuild else "incremental", estimated_walk_share=round(est_share, 6),
        max_walk_share=float(max_walk_share), wall_time_s=round(time.perf_counter() - t0, 4), peak_mem_delta_mb=mem.delta_mb,
        hub_degree_cap=int(prev.hub_degree_cap), buffer=prev.buffer, rows_changed=int(carried.changed.sum()),
        rows_buffer_short=int(carried.short.sum()), rows_walked=len(walk), rows_kept=len(kr),
        emitted_candidates=int(n_emitted), pairs_counted=int(walked_cost), emit_reruns=int(prep.emit_reruns),
        phase_s={name: round(v, 4) for name, v in laps.phases.items()},
        walk_cost_share=round(walked_cost / total_cost, 6) if total_cost else 0.0,
    )
    stats["exact"] = not (prev.hub_degree_cap and stats["hub_nodes_skipped"] > 0)
    state.stats = stats
    return state


def _merge_kept(kr, s_ptr, s_idx, s_val, e_ptr, e_idx, e_val, indptr, out_idx, out_val):
    _merge_kernel(s_ptr[kr], s_ptr[kr + 1], s_idx, s_val, e_ptr[kr], e_ptr[kr + 1], e_idx, e_val, indptr[kr], indptr[kr + 1],
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
