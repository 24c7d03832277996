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
* one :class:`~ml_core.graph.similarity_state.SimilarityState` per similarity graph: for every
  node its best ``buffer`` (default ``2k``) neighbours with their exact float64 similarities,
  sorted as in the graph, and a flag saying whether that list holds *all* of the node's
  positive-similarity neighbours.

One on-disk layout (:data:`PARTS`): a directory per part -- the bipartite graph; each
similarity graph with its state in ``state/`` beside it -- which are the pipeline's three graph
partitions (:meth:`WindowGraphs.save_part` / :meth:`WindowGraphs.load_parts`);
:meth:`WindowGraphs.save_state` puts the three under one directory. A state that cannot be read
(missing, another layout) or does not match raises, and the caller rebuilds in full.

Bipartite refresh
-----------------
``delta = edge_table(entering) - edge_table(leaving)`` (per-pair, per-behaviour counts), merged
into yesterday's sorted (user, item) pairs with one vectorised sorted merge; pairs whose counts
all reach zero leave, nodes without edges leave, new ones enter. Requires every behaviour
weight to be > 0 (otherwise pairs of weight 0 are not in yesterday's graph but their counts
would be needed later); other configurations raise :class:`IncrementalNotSupported`.

Similarity refresh
------------------
Rows whose entries changed are walked again, the others keep their stored neighbours and merge
in the candidates the walk emits to them; when that re-walk would be more than
``max_walk_share`` (default half) of a full build's work, every row is walked instead. Why
this stays exact: :mod:`ml_core.graph.similarity_state`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from ml_core.data.schema import BEHAVIORS
from ml_core.graph.bipartite import build_bipartite, degree_summary, edge_table
from ml_core.graph.csr import CSR, BipartiteGraph, SimilarityGraph, lookup
from ml_core.graph.engine import engine_for
from ml_core.graph.similarity import topk_similarity
from ml_core.graph.similarity_state import (
    SimilarityState,
    build_similarity_state,
    refresh_similarity_state,
)
from ml_core.graph.stats import degree_histogram
from ml_core.graph.telemetry import MemWatch
from ml_core.sorting import sorted_unique


class IncrementalNotSupported(ValueError):
    """The refresh cannot be exact for this input/config: run :func:`build_window` instead."""


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
    keys, counts = _merge_pair_counts(prev, users, items, n_i, d_u, d_i, d_c)
    return _graph_from_pairs(keys, counts, users, items, n_i, behavior_weights, days)


def _merge_pair_counts(prev: BipartiteGraph, users: np.ndarray, items: np.ndarray, n_i: int, d_u: np.ndarray,
                       d_i: np.ndarray, d_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted pair keys ``user_rank * n_i + item_rank`` (ranks in ``users`` / ``items``) and their
    float32 ``[pairs, behaviours]`` counts: yesterday's pairs plus the delta's, in one sorted merge."""
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
    return keys, counts


def _graph_from_pairs(keys: np.ndarray, counts: np.ndarray, users: np.ndarray, items: np.ndarray, n_i: int,
                      behavior_weights: dict[str, float], days: list[str]) -> BipartiteGraph:
    """The graph of the merged pairs: pairs whose counts are all zero and nodes left without an
    edge drop out; weights are recomputed from the counts (float64 sum, then float32)."""
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
    return lookup(node_ids, sorted_unique(delta_ids)) if len(delta_ids) else np.zeros(0, np.int64)


def _hub_flip_rows(prev_m: CSR, prev_cols: np.ndarray, new_m: CSR, new_cols: np.ndarray, new_rows: np.ndarray,
                   prev_rows: np.ndarray, cap: int) -> np.ndarray:
    """Raw ids of rows (of ``new_m``/``prev_m``) having a column whose hub status flipped."""
    if not cap or cap <= 0:
        return np.zeros(0, np.int64)
    old_deg = np.bincount(np.asarray(prev_m.indices), minlength=prev_m.n_cols)
    new_deg = np.bincount(np.asarray(new_m.indices), minlength=new_m.n_cols)
    _, i_old, i_new = np.intersect1d(prev_cols, new_cols, assume_unique=True, return_indices=True)
    flipped_old = np.zeros(prev_m.n_cols, bool)
    flipped_new = np.zeros(new_m.n_cols, bool)
    f = (old_deg[i_old] > cap) != (new_deg[i_new] > cap)
    flipped_old[i_old[f]] = True
    flipped_new[i_new[f]] = True
    out = [np.asarray(prev_rows)[sorted_unique(prev_m.row_of_entries()[flipped_old[prev_m.indices]])],
           np.asarray(new_rows)[sorted_unique(new_m.row_of_entries()[flipped_new[new_m.indices]])]]
    return np.concatenate(out)


def _changed_masks(prev: BipartiteGraph, bip: BipartiteGraph, delta: pl.DataFrame, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """bool ``[n_users]`` and ``[n_items]``: rows of today's graph whose entries changed (in the
    delta) or that have a column whose hub status flipped."""
    d_users = delta["user_id"].to_numpy().astype(np.int64)
    d_items = delta["item_id"].to_numpy().astype(np.int64)
    # user rows change with their own entries, or when one of their items flips hub status
    cu = np.concatenate([d_users, _hub_flip_rows(prev.ui, prev.item_ids, bip.ui, bip.item_ids,
                                                 bip.user_ids, prev.user_ids, cap)])
    ci = np.concatenate([d_items, _hub_flip_rows(prev.iu, prev.user_ids, bip.iu, bip.user_ids,
                                                 bip.item_ids, prev.item_ids, cap)])
    changed_u = np.zeros(bip.n_users, bool)
    r = _changed_rows(bip.user_ids, cu)
    changed_u[r[r >= 0]] = True
    changed_i = np.zeros(bip.n_items, bool)
    r = _changed_rows(bip.item_ids, ci)
    changed_i[r[r >= 0]] = True
    return changed_u, changed_i


# --------------------------------------------------------------------------------------------
# window API used by the pipeline
# --------------------------------------------------------------------------------------------
#: The parts of a saved window, one directory each (the pipeline's three graph partitions).
PARTS = ("bipartite", "user", "item")
#: Sub-directory of a similarity part holding its :class:`SimilarityState`.
STATE_DIR = "state"


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

    def save_part(self, part: str, directory: Path) -> None:
        """Write one of :data:`PARTS` into ``directory``: the bipartite graph, or a similarity
        graph with its refresh state in ``directory / STATE_DIR``."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        directory = Path(directory)
        if part == "bipartite":
            self.bip.save(directory)
            return
        graph, state = (self.user_sim, self.user_state) if part == "user" else (self.item_sim, self.item_state)
        graph.save(directory)
        state.save(directory / STATE_DIR)

    @classmethod
    def load_parts(cls, dirs: dict[str, Path], bip: BipartiteGraph | None = None) -> WindowGraphs:
        """What :func:`refresh_window` needs from the part directories written by
        :meth:`save_part` (``dirs``: part -> directory); ``bip``: the bipartite part, when
        already loaded. A missing file raises ``FileNotFoundError``."""
        if bip is None:
            bip = BipartiteGraph.load(Path(dirs["bipartite"]))
        return cls(bip, SimilarityState.load(Path(dirs["user"]) / STATE_DIR),
                   SimilarityState.load(Path(dirs["item"]) / STATE_DIR))

    def save_state(self, directory: Path) -> None:
        """Persist the window under one directory: ``directory / part`` for each of :data:`PARTS`."""
        for part in PARTS:
            self.save_part(part, Path(directory) / part)

    @classmethod
    def load_state(cls, directory: Path) -> WindowGraphs:
        """Read back what :meth:`save_state` wrote (what :func:`refresh_window` needs)."""
        return cls.load_parts({part: Path(directory) / part for part in PARTS})


def _bip_stats(bip: BipartiteGraph) -> dict:
    ud, idg = bip.ui.degrees(), np.bincount(np.asarray(bip.ui.indices), minlength=bip.n_items)
    return {"n_users": bip.n_users, "n_items": bip.n_items, "n_edges": int(bip.ui.nnz),
            "user_degree": degree_summary(ud), "item_degree": degree_summary(idg),
            "user_degree_hist": degree_histogram(ud), "item_degree_hist": degree_histogram(idg)}


def build_states(bip: BipartiteGraph, cfg, buffer: int | None = None, engine=None) -> WindowGraphs:
    """Similarity graphs + refresh state for an already built bipartite graph (full build), walked
    by ``engine`` (else one opened from ``cfg.engine`` for the build: :mod:`ml_core.graph.engine`)."""
    t0 = time.perf_counter()
    with engine_for(cfg, engine) as eng:
        kw = {"k": cfg.topk, "measure": cfg.similarity, "hub_degree_cap": cfg.hub_degree_cap, "chunk_rows": cfg.chunk_rows,
              "buffer": buffer, "engine": eng}
        user = build_similarity_state(bip.ui, bip.user_ids, "user", **kw)
        item = build_similarity_state(bip.iu, bip.item_ids, "item", **kw)
    bstats = _bip_stats(bip)
    bstats["mode"] = "full"
    stats = {"mode": "full", "days": list(bip.days), "bipartite": bstats, "user_sim": user.stats,
             "item_sim": item.stats, "wall_time_s": round(time.perf_counter() - t0, 4)}
    return WindowGraphs(bip, user, item, stats)


def build_window(events: pl.DataFrame | pl.LazyFrame, cfg, days: list[str], buffer: int | None = None,
                 engine=None) -> WindowGraphs:
    """Full rebuild of the window's graphs (and the refresh state) from all its events (``engine``: see :func:`build_states`)."""
    t0 = time.perf_counter()
    with MemWatch() as mem:
        bip = build_bipartite(events, cfg.behavior_weights, days)
    t_bip = time.perf_counter() - t0
    out = build_states(bip, cfg, buffer, engine)
    out.stats["bipartite"].update(wall_time_s=round(t_bip, 4), peak_mem_delta_mb=mem.delta_mb)
    out.stats["wall_time_s"] = round(time.perf_counter() - t0, 4)
    return out


def _check_refreshable(prev: WindowGraphs, cfg) -> None:
    """Raise :class:`IncrementalNotSupported` unless ``prev`` can be refreshed exactly under ``cfg``."""
    for st in (prev.user_state, prev.item_state):
        if not isinstance(st, SimilarityState):
            raise IncrementalNotSupported(
                f"refresh needs yesterday's SimilarityState (saved by WindowGraphs.save_state), got "
                f"{type(st).__name__}: run a full rebuild (build_window / build_states)")
    check_incremental_config(cfg.behavior_weights)
    for st in (prev.user_state, prev.item_state):
        if (st.k, st.measure, int(st.hub_degree_cap)) != (cfg.topk, cfg.similarity, int(cfg.hub_degree_cap)):
            raise IncrementalNotSupported(
                f"{st.kind} state was built with k={st.k}, measure={st.measure}, hub cap={st.hub_degree_cap}; "
                f"config asks k={cfg.topk}, measure={cfg.similarity}, hub cap={cfg.hub_degree_cap}"
            )
    if (not np.array_equal(prev.user_state.node_ids, prev.bip.user_ids)
            or not np.array_equal(prev.item_state.node_ids, prev.bip.item_ids)):
        raise IncrementalNotSupported("similarity states do not belong to the previous bipartite graph")


def _verify_against_full(out: WindowGraphs, cfg) -> None:
    """Raise ``AssertionError`` unless both similarity graphs equal a full rebuild, bit for bit."""
    for st, m in ((out.user_sim, out.bip.ui), (out.item_sim, out.bip.iu)):
        ref = topk_similarity(m, cfg.topk, cfg.similarity, cfg.hub_degree_cap, cfg.chunk_rows)
        if not (np.array_equal(ref.indptr, st.adj.indptr) and np.array_equal(ref.indices, st.adj.indices)
                and np.array_equal(ref.weights, st.adj.weights)):
            raise AssertionError(f"incremental {st.kind} similarity differs from a full rebuild")


def refresh_window(
    prev: WindowGraphs,
    entering: pl.DataFrame | pl.LazyFrame,
    leaving: pl.DataFrame | pl.LazyFrame,
    cfg,
    days: list[str],
    *,
    verify: bool = False,
    max_walk_share: float = 0.5,
    engine=None,
) -> WindowGraphs:
    """Day D+1's graphs from day D's window, the entering day's and the leaving day's events.

    Args:
        prev (WindowGraphs): day D's graphs with their refresh state (from :func:`build_window`,
            a previous refresh, or :meth:`WindowGraphs.load_state` / :meth:`WindowGraphs.load_parts`).
        entering, leaving: the events of the day that enters and of the day that leaves.
        cfg (GraphConfig): must match the one ``prev`` was built with (k, measure, hub cap).
        days (list[str]): the new window's days (recorded in the bipartite graph).
        verify (bool): also rebuild the similarity graphs from scratch and raise if anything
            differs (debug/backfill audits; costs a full build).
        max_walk_share (float): see :func:`~ml_core.graph.similarity_state.refresh_similarity_state`
            (the bipartite graph is always merged incrementally; each similarity graph takes the
            incremental path only when it re-walks at most this share of the work).
        engine: where the similarity rows are walked (else one opened from ``cfg.engine``; both
            paths are sharded, see :mod:`ml_core.graph.engine`).

    Raises :class:`IncrementalNotSupported` when an exact refresh is impossible (config changed
    since the state was built, a zero behaviour weight, no similarity state, inconsistent days);
    the caller then runs :func:`build_window`.
    """
    _check_refreshable(prev, cfg)
    days = list(days)
    t0 = time.perf_counter()
    with MemWatch() as mem:
        delta = window_delta(entering, leaving, cfg.behavior_weights)
        bip = apply_delta(prev.bip, delta, cfg.behavior_weights, days)
    t_bip = time.perf_counter() - t0
    changed_u, changed_i = _changed_masks(prev.bip, bip, delta, int(cfg.hub_degree_cap))
    with engine_for(cfg, engine) as eng:
        user = refresh_similarity_state(prev.user_state, bip.ui, bip.user_ids, changed_u, cfg.chunk_rows, max_walk_share, eng)
        item = refresh_similarity_state(prev.item_state, bip.iu, bip.item_ids, changed_i, cfg.chunk_rows, max_walk_share, eng)
    bstats = _bip_stats(bip)
    bstats.update(mode="incremental", wall_time_s=round(t_bip, 4), peak_mem_delta_mb=mem.delta_mb,
                  delta_pairs=int(delta.height))
    stats = {"mode": "incremental", "days": days, "bipartite": bstats, "user_sim": user.stats, "item_sim": item.stats,
             "wall_time_s": round(time.perf_counter() - t0, 4)}
    out = WindowGraphs(bip, user, item, stats)
    if verify:
        _verify_against_full(out, cfg)
    return out
