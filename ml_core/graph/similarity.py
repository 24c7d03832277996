"""Top-k collaborative similarity graphs (MoGE section 3: G^U and G^I from co-interactions).

Definition
----------
Given the users x items matrix ``A`` (behaviour weights), the user-user similarity is

* cosine: ``sim(u, v) = <A_u, A_v> / (||A_u|| ||A_v||)``
* jaccard: ``|N(u) & N(v)| / |N(u) | N(v)|`` on the binary pattern of ``A``

and row ``u`` of the result keeps the ``k`` largest ``sim(u, v)``, ``v != u``, ``sim > 0``,
ordered by descending similarity, ties broken by ascending ``v``. Item-item similarity is the
same on ``A^T``. Arithmetic is float64 (``<A_u, A_v>`` summed over the shared columns in
ascending column order, exactly as SciPy's sparse product does) and the kept weights are then
rounded to float32, so every implementation below returns bit-identical graphs.

Cost and hubs
-------------
Counting co-interactions costs ``sum_j deg(j)^2`` multiply-adds over the columns ``j`` of ``A``
(for G^U: the squared item degrees), so a handful of very popular columns dominate it. The
fast path (:func:`topk_similarity`) never materialises ``A A^T``: each of 2 (or more) threads
owns a dense float64 accumulator over the rows, walks one row's 2-hop neighbourhood, and folds
the result into a running top-k immediately (work ``O(sum_j deg(j)^2)``, extra memory
``O(threads * n + n * k)``).

``hub_degree_cap`` (GraphConfig.hub_degree_cap) is the documented, opt-in hub treatment: the
columns with more than ``cap`` entries (hubs) are skipped when counting co-interactions (they
still count in the norms ``||A_u||`` / degrees, so similarities through other columns keep their
scale). It removes ``sum_{hub j} deg(j)^2`` of the work; its effect on the result is measured by
:func:`build_similarity_graphs`, which reports the recall@k of the capped graph against the exact
one on a seeded sample of rows (``stats["hub_recall_at_k"]``). ``0`` = exact (the default).

Implementations
---------------
* :func:`topk_similarity` -- the production path (numba, parallel, running top-k): this module
  drives the kernels of :mod:`ml_core.graph.topk_kernel` through :class:`PreparedMatrix`
  (which the incremental refresh, :mod:`ml_core.graph.similarity_state`, also runs on chosen
  rows).
* ``benchmarks/reference_graph.py`` holds the reference implementations the tests and the
  benchmark compare it with (chunked SciPy, full SciPy ``A @ A.T``, fully dense): all
  bit-identical to it.

Statistics of the built graphs are in :mod:`ml_core.graph.stats`, memory telemetry in
:mod:`ml_core.graph.telemetry`.
"""

from __future__ import annotations

import time

import numpy as np

from ml_core.graph.csr import CSR, SimilarityGraph
from ml_core.graph.stats import similarity_stats
from ml_core.graph.telemetry import MemWatch
from ml_core.graph.topk_kernel import n_threads, row_norms_kernel, topk_rows_kernel, transpose_kernel

MEASURES = ("cosine", "jaccard")


def check_measure(measure: str) -> None:
    """Raise ``ValueError`` unless ``measure`` is one of :data:`MEASURES`."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be 'cosine' or 'jaccard', got {measure!r}")


def row_norms(a: CSR, measure: str) -> np.ndarray:
    """float64 ``||A_r||`` (cosine) or ``|N(r)|`` (jaccard) for every row of ``a``."""
    check_measure(measure)
    return row_norms_kernel(np.asarray(a.indptr, np.int64), np.asarray(a.weights), measure == "cosine")


# --------------------------------------------------------------------------------------------
# kernel driver: work split, tiles, prepared inputs
# --------------------------------------------------------------------------------------------
def balanced_blocks(cost: np.ndarray, n_blocks: int, max_rows: int = 0) -> np.ndarray:
    """Boundaries ``[0, ..., n]`` cutting ``n`` rows into about ``n_blocks`` contiguous blocks of
    about the same work (``cost[r] + 1`` per row), none longer than ``max_rows`` rows when > 0.
    Used for the threads' blocks here and for the workers' row blocks (:mod:`ml_core.graph.engine`)."""
    n = len(cost)
    if n == 0:
        return np.zeros(1, np.int64)
    n_blocks = max(1, min(n, n_blocks))
    csum = np.cumsum(cost.astype(np.float64) + 1.0)
    targets = np.linspace(0, csum[-1], n_blocks + 1)[1:-1]
    cuts = np.searchsorted(csum, targets, side="right")
    caps = np.arange(0, n, max_rows) if max_rows > 0 else np.zeros(0, np.int64)
    return np.unique(np.concatenate([[0], cuts, caps, [n]])).astype(np.int64)


#: Candidate rows per accumulator tile: 64Ki float64 = 512 KiB, which stays in a core's L2.
TILE_ROWS = 1 << 16
#: At most this many tiles per row walk (very large graphs use larger, L3-resident tiles).
MAX_TILES = 32


def _tile_size(n: int) -> int:
    return max(1, min(max(n, 1), max(TILE_ROWS, -(-n // MAX_TILES))))


class PreparedMatrix:
    """Kernel inputs for one matrix: float32 weights, the transpose (int32 ids), norms, hub mask.

    Entries with weight <= 0 contribute nothing to a cosine product, so they are dropped (the
    pipeline's graphs have none); Jaccard uses the binary pattern (weight 1). ``row_cost[r]``
    is row ``r``'s 2-hop walk length (the sum of the degrees of its non-hub columns), the unit
    of work used to balance blocks and to choose the refresh path.
    """

    def __init__(self, a: CSR, measure: str, hub_degree_cap: int):
        check_measure(measure)
        self.measure = measure
        self.n = a.n_rows
        indptr = np.asarray(a.indptr, np.int64)
        indices = np.asarray(a.indices, np.int64)
        weights = np.asarray(a.weights, np.float32)
        if measure == "jaccard":
            weights = np.ones(len(indices), np.float32)
        elif len(weights) and weights.min() <= 0:
            keep = weights > 0
            rows = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(indptr))[keep]
            indptr = np.zeros(self.n + 1, np.int64)
            np.cumsum(np.bincount(rows, minlength=self.n), out=indptr[1:])
            indices, weights = indices[keep], weights[keep]
        self.a_ptr, self.a_idx, self.a_w = indptr, indices, weights
        self.norms = row_norms(CSR(indptr, indices, weights, a.n_cols), measure)
        # Transpose (a counting sort by column keeps the row ids ascending per column).
        self.t_ptr = np.zeros(a.n_cols + 1, np.int64)
        np.cumsum(np.bincount(indices, minlength=a.n_cols), out=self.t_ptr[1:])
        self.t_idx = np.empty(len(indices), np.int32 if self.n < 2**31 else np.int64)
        self.t_w = np.empty(len(indices), np.float32)
        transpose_kernel(indptr, indices, weights, self.t_ptr, self.t_idx, self.t_w)
        self.col_deg = np.diff(self.t_ptr)
        self.hub = self.col_deg > hub_degree_cap if hub_degree_cap and hub_degree_cap > 0 else np.zeros(a.n_cols, bool)
        self.col_ok = ~self.hub
        # Work of row r: sum of the degrees of its non-hub columns.
        eff_deg = np.where(self.col_ok, self.col_deg, 0).astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(eff_deg[self.a_idx])])
        self.row_cost = csum[self.a_ptr[1:]] - csum[self.a_ptr[:-1]]
        self.max_deg = int(np.diff(indptr).max()) if self.n else 0
        #: Emission blocks run again because their slice of the buffer overflowed (all runs).
        self.emit_reruns = 0

    def run(self, rows: np.ndarray, k: int, chunk_rows: int = 4096, emit: dict | None = None, engine=None):
        """Top-k of the given rows: ``(idx [len(rows), k], val float64 [len(rows), k], cnt, npos)``.

        With ``emit = {"b_val", "b_key", "node_key"}`` (see
        :func:`~ml_core.graph.topk_kernel.topk_rows_kernel`) a fifth item is returned: the
        emitted ``(row, col, val)`` arrays. ``engine`` (:mod:`ml_core.graph.engine`; ``None`` =
        here) runs the rows elsewhere, sharded by row blocks, with the same result.
        """
        if engine is not None:
            return engine.run(self, rows, k, chunk_rows, emit)
        rows = np.asarray(rows, np.int64)
        nt = n_threads()
        cost = self.row_cost[rows] if len(rows) else np.zeros(0)
        blocks = balanced_blocks(cost, 64 * nt, max(1, chunk_rows))
        kk = max(k, 1)
        out_idx = np.full((len(rows), kk), -1, np.int64)
        out_val = np.zeros((len(rows), kk), np.float64)
        out_cnt = np.zeros(len(rows), np.int64)
        out_npos = np.zeros(len(rows), np.int64)
        out = (out_idx, out_val, out_cnt, out_npos)
        if emit is None:
            n_blocks = max(len(blocks) - 1, 1)
            f0, i0 = np.zeros(1, np.float64), np.zeros(1, np.int64)
            em = (False, f0, i0, i0, np.zeros(n_blocks, np.int64), np.zeros(n_blocks, np.int64),
                  i0, i0, f0, np.zeros(n_blocks, np.int64), np.zeros(n_blocks, np.bool_))
            if len(rows) and k > 0:
                self._call(rows, blocks, k, nt, *out, em)
            return out
        return (*out, self._run_emitting(rows, blocks, k, nt, out, emit))

    def _run_emitting(self, rows, blocks, k, nt, out, emit):
        """The emission path of :meth:`run`: fills ``out`` and returns the emitted arrays.

        Each block gets a slice of the emission buffer (``32 * rows + 4096`` entries); the
        blocks whose slice overflowed are run again with 8x the room until none does.
        """
        out_idx, out_val, out_cnt, out_npos = out
        kk = out_idx.shape[1]
        n_blocks = len(blocks) - 1
        block_rows = np.diff(blocks)
        cap = (32 * block_rows + 4096).astype(np.int64)
        todo = np.arange(n_blocks)
        em_rows, em_cols, em_vals = [], [], []
        while len(todo) and len(rows) and k > 0:
            sub_rows = np.concatenate([rows[blocks[b]:blocks[b + 1]] for b in todo])
            sub_blocks = np.concatenate([[0], np.cumsum(block_rows[todo])]).astype(np.int64)
            sub_cap = cap[todo]
            off = np.concatenate([[0], np.cumsum(sub_cap)[:-1]]).astype(np.int64)
            total = int(sub_cap.sum())
            e_row = np.empty(total, np.int64)
            e_col = np.empty(total, np.int64)
            e_val = np.empty(total, np.float64)
            e_cnt = np.zeros(len(todo), np.int64)
            e_over = np.zeros(len(todo), np.bool_)
            s_idx = np.full((len(sub_rows), kk), -1, np.int64)
            s_val = np.zeros((len(sub_rows), kk), np.float64)
            s_cnt = np.zeros(len(sub_rows), np.int64)
            s_npos = np.zeros(len(sub_rows), np.int64)
            em = (True, emit["b_val"], emit["b_key"], emit["node_key"], off, sub_cap, e_row, e_col, e_val, e_cnt, e_over)
            self._call(sub_rows, sub_blocks, k, nt, s_idx, s_val, s_cnt, s_npos, em)
            for i, b in enumerate(todo):
                lo, hi = blocks[b], blocks[b + 1]
                out_idx[lo:hi] = s_idx[sub_blocks[i]:sub_blocks[i + 1]]
                out_val[lo:hi] = s_val[sub_blocks[i]:sub_blocks[i + 1]]
                out_cnt[lo:hi] = s_cnt[sub_blocks[i]:sub_blocks[i + 1]]
                out_npos[lo:hi] = s_npos[sub_blocks[i]:sub_blocks[i + 1]]
                if not e_over[i]:
                    sl = slice(off[i], off[i] + e_cnt[i])
                    em_rows.append(e_row[sl])
                    em_cols.append(e_col[sl])
                    em_vals.append(e_val[sl])
            cap[todo[e_over]] *= 8
            todo = todo[e_over]
            self.emit_reruns += len(todo)
        return _concat(em_rows, np.int64), _concat(em_cols, np.int64), _concat(em_vals, np.float64)

    def _call(self, rows, blocks, k, nt, out_idx, out_val, out_cnt, out_npos, em):
        # (numba.parallel_chunksize(1) was tried for dynamic hand-out: 1.5-2x slower.)
        topk_rows_kernel(rows, blocks, self.a_ptr, self.a_idx, self.a_w, self.t_ptr, self.t_idx, self.t_w,
                         self.col_ok, self.norms, self.measure == "jaccard", k, _tile_size(self.n), nt,
                         self.max_deg, out_idx, out_val, out_cnt, out_npos, *em)


# --------------------------------------------------------------------------------------------
# the top-k graph
# --------------------------------------------------------------------------------------------
def _rows_to_csr(out_idx, out_val, out_cnt, n: int) -> CSR:
    k = out_idx.shape[1]
    mask = np.arange(k)[None, :] < out_cnt[:, None]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(out_cnt, out=indptr[1:])
    return CSR(indptr, out_idx[mask].astype(np.int64), out_val[mask].astype(np.float32), n)


def topk_similarity(
    a: CSR,
    k: int,
    measure: str = "cosine",
    hub_degree_cap: int = 0,
    chunk_rows: int = 4096,
    *,
    stats: dict | None = None,
    engine=None,
) -> CSR:
    """Row-row top-k similarity of ``a`` (see the module docstring for the definition).

    Args:
        a (CSR): rows are the nodes to relate (users for G^U; pass ``iu`` for G^I). Column
            indices must be sorted within each row (every CSR of the flow is).
        k (int): neighbours kept per row.
        measure (str): ``cosine`` or ``jaccard``.
        hub_degree_cap (int): columns with more than this many entries are left out of the
            co-interaction counting (0 = exact, nothing left out).
        chunk_rows (int): upper bound on rows per work block (blocks are also cost-balanced).
        stats (dict | None): filled with build statistics when given (see
            :func:`ml_core.graph.stats.similarity_stats`).
        engine: where the rows are walked (:mod:`ml_core.graph.engine`; ``None`` = this
            process); the result is the same bits either way.
    """
    t0 = time.perf_counter()
    prep = PreparedMatrix(a, measure, hub_degree_cap)
    out_idx, out_val, out_cnt, out_npos = prep.run(np.arange(a.n_rows, dtype=np.int64), k, chunk_rows, engine=engine)
    adj = _rows_to_csr(out_idx, out_val, out_cnt, a.n_rows)
    if stats is not None:
        stats.update(similarity_stats(adj, prep, k, candidates=int(out_npos.sum())))
        stats["wall_time_s"] = round(time.perf_counter() - t0, 4)
    return adj


def hub_recall(a: CSR, k: int, measure: str, hub_degree_cap: int, sample_rows: int = 2000, seed: int = 0,
               capped: CSR | None = None) -> float:
    """Recall@k of the hub-capped top-k against the exact top-k on a seeded sample of rows.

    ``capped`` (the capped graph of ``a``, when already built) is read instead of recomputing
    the sample's capped rows.
    """
    rng = np.random.default_rng(seed)
    n = a.n_rows
    if n == 0:
        return 1.0
    rows = np.sort(rng.choice(n, size=min(sample_rows, n), replace=False)).astype(np.int64)
    exact = PreparedMatrix(a, measure, 0).run(rows, k)
    if capped is None:
        approx = PreparedMatrix(a, measure, hub_degree_cap).run(rows, k)
        a_idx, a_cnt = approx[0], approx[2]
        approx_sets = [set(a_idx[i, : a_cnt[i]].tolist()) for i in range(len(rows))]
    else:
        approx_sets = [set(capped.indices[capped.indptr[r]: capped.indptr[r + 1]].tolist()) for r in rows]
    e_idx, e_cnt = exact[0], exact[2]
    hit = tot = 0
    for i in range(len(rows)):
        truth = set(e_idx[i, : e_cnt[i]].tolist())
        tot += len(truth)
        hit += len(truth & approx_sets[i])
    return 1.0 if tot == 0 else hit / tot


# --------------------------------------------------------------------------------------------
# graph builders used by the pipeline
# --------------------------------------------------------------------------------------------
def build_similarity_graph(
    a: CSR, node_ids: np.ndarray, kind: str, k: int, measure: str = "cosine", hub_degree_cap: int = 0,
    chunk_rows: int = 4096, recall_sample_rows: int = 2000, engine=None,
) -> SimilarityGraph:
    """One top-k similarity graph with its ``stats`` (time, memory, hubs, coverage, histograms)."""
    stats: dict = {}
    with MemWatch() as mem:
        t0 = time.perf_counter()
        adj = topk_similarity(a, k, measure, hub_degree_cap, chunk_rows, stats=stats, engine=engine)
        stats["wall_time_s"] = round(time.perf_counter() - t0, 4)
    stats["peak_mem_delta_mb"] = mem.delta_mb
    stats["hub_degree_cap"] = int(hub_degree_cap)
    stats["exact"] = not (hub_degree_cap and stats["hub_nodes_skipped"] > 0)
    if not stats["exact"] and recall_sample_rows > 0:
        stats["hub_recall_at_k"] = round(hub_recall(a, k, measure, hub_degree_cap, recall_sample_rows, capped=adj), 6)
        stats["hub_recall_sample_rows"] = int(min(recall_sample_rows, a.n_rows))
    return SimilarityGraph(np.asarray(node_ids, np.int64), adj, kind, stats)


def build_similarity_graphs(bip, cfg, engine=None) -> tuple[SimilarityGraph, SimilarityGraph]:
    """User-user (on ``bip.ui``) and item-item (on ``bip.iu``) top-k graphs for ``GraphConfig``,
    walked by ``engine`` (else one opened from ``cfg.engine``: :mod:`ml_core.graph.engine`)."""
    from ml_core.graph.engine import engine_for  # the engine module builds on this one

    with engine_for(cfg, engine) as eng:
        kw = {"k": cfg.topk, "measure": cfg.similarity, "hub_degree_cap": cfg.hub_degree_cap, "chunk_rows": cfg.chunk_rows,
              "engine": eng}
        user = build_similarity_graph(bip.ui, bip.user_ids, "user", **kw)
        item = build_similarity_graph(bip.iu, bip.item_ids, "item", **kw)
    return user, item


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    """``np.concatenate(parts)``, or an empty array of ``dtype`` when there are none."""
    return np.concatenate(parts) if parts else np.zeros(0, dtype)
