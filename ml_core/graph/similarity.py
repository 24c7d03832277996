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
* :func:`topk_similarity` -- the production path (numba, parallel, running top-k).
* :func:`topk_similarity_reference` -- the original chunked SciPy/dense implementation.
* :func:`topk_similarity_scipy` -- the straightforward baseline: full SciPy ``A @ A.T`` followed by
  per-row top-k (used by the benchmark; exact but memory-hungry).
* :func:`topk_similarity_bruteforce` -- fully dense ``A A^T`` (tiny graphs, tests).
"""

from __future__ import annotations

import os
import time

import numba
import numpy as np
from numba import njit, prange

from ml_core.graph.csr import CSR, SimilarityGraph

MEASURES = ("cosine", "jaccard")


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"measure must be 'cosine' or 'jaccard', got {measure!r}")


# --------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------
def _row_norms(m: CSR, measure: str) -> np.ndarray:
    if measure == "cosine":
        sq = np.zeros(m.n_rows, dtype=np.float64)
        np.add.at(sq, m.row_of_entries(), m.weights.astype(np.float64) ** 2)
        return np.sqrt(sq)
    return m.degrees().astype(np.float64)


@njit(cache=True, nogil=True)
def _row_norms_kernel(indptr, weights, cosine):
    """Same float64 operations, in the same order, as :func:`_row_norms`."""
    n = len(indptr) - 1
    out = np.empty(n, np.float64)
    for r in range(n):
        if cosine:
            s = 0.0
            for p in range(indptr[r], indptr[r + 1]):
                w = np.float64(weights[p])
                s += w * w
            out[r] = np.sqrt(s)
        else:
            out[r] = np.float64(indptr[r + 1] - indptr[r])
    return out


def row_norms(a: CSR, measure: str) -> np.ndarray:
    """float64 ``||A_r||`` (cosine) or ``|N(r)|`` (jaccard) for every row of ``a``."""
    _check_measure(measure)
    return _row_norms_kernel(np.asarray(a.indptr, np.int64), np.asarray(a.weights), measure == "cosine")


def hub_columns(a: CSR, hub_degree_cap: int) -> np.ndarray:
    """Boolean ``[n_cols]``: True where a column has more than ``hub_degree_cap`` entries."""
    col_deg = np.bincount(np.asarray(a.indices), minlength=a.n_cols)
    if hub_degree_cap and hub_degree_cap > 0:
        return col_deg > hub_degree_cap
    return np.zeros(a.n_cols, dtype=bool)


def topk_from_dense_rows(scores: np.ndarray, row_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k per row of a dense score block; ``scores[r, row_ids[r]]`` (self) is excluded."""
    n_rows, n_cols = scores.shape
    scores = scores.copy()
    scores[np.arange(n_rows), row_ids] = 0.0
    kk = min(k, n_cols)
    # Order: descending score, ascending column on ties (stable sort on -score).
    order = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    top = np.take_along_axis(scores, order, axis=1)
    keep = top > 0
    rows = np.repeat(row_ids, kk).reshape(n_rows, kk)[keep]
    return rows, order[keep].astype(np.int64), top[keep].astype(np.float32)


def _csr_from_rows(rows: np.ndarray, cols: np.ndarray, w: np.ndarray, n: int) -> CSR:
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return CSR(indptr, cols.astype(np.int64), w.astype(np.float32), n)


# --------------------------------------------------------------------------------------------
# the fast kernel
# --------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _better(s1, v1, s2, v2):
    """(s1, v1) ranks before (s2, v2): higher similarity, then lower id."""
    return s1 > s2 or (s1 == s2 and v1 < v2)


@njit(cache=True, nogil=True)
def _push_topk(vals, idx, cnt, k, s, v):
    """Insert (s, v) into the sorted top-k prefix ``vals[:cnt]``; returns the new count."""
    if cnt == k:
        if not _better(s, v, vals[k - 1], idx[k - 1]):
            return cnt
        pos = k - 1
    else:
        pos = cnt
        cnt += 1
    while pos > 0 and _better(s, v, vals[pos - 1], idx[pos - 1]):
        vals[pos] = vals[pos - 1]
        idx[pos] = idx[pos - 1]
        pos -= 1
    vals[pos] = s
    idx[pos] = v
    return cnt


@njit(parallel=True, cache=True, nogil=True)
def _topk_kernel(rows, block_ptr, a_ptr, a_idx, a_w, t_ptr, t_idx, t_w, col_ok, norms, jaccard, k, tile,
                 n_threads, max_deg, out_idx, out_val, out_cnt, out_npos,
                 emit, b_val, b_key, node_key, em_off, em_cap, em_row, em_col, em_val, em_cnt, em_overflow):
    """Top-k similar rows for each ``rows[i]``; results go to ``out_*[i]``.

    ``a`` (CSR, float32 weights > 0) holds the nodes as rows; ``t`` is its transpose, with
    sorted row ids in each column. Work blocks ``rows[block_ptr[b]:block_ptr[b+1]]`` are spread
    over the threads. Each thread owns a dense float64 accumulator over one *tile* of
    ``tile`` candidate rows (sized to stay in the L2 cache); a row's 2-hop walk is done tile by
    tile, with a cursor per column remembering where the previous tile stopped. A zero
    accumulator means "not touched yet" (all products are > 0), so nothing is ever cleared
    except the touched entries. Each tile's candidates are folded into the row's running top-k
    right away. ``out_npos[i]`` counts the row's candidates with a positive similarity.

    Emission (incremental refresh): when ``emit``, every candidate ``v`` of row ``u`` whose
    ``(sim, node_key[u])`` ranks at or before the boundary ``(b_val[v], b_key[v])`` is also
    written as ``(v, u, sim)`` into block ``b``'s slice ``em_off[b] : em_off[b] + em_cap[b]``
    of ``em_*`` (``b_val = inf`` disables a row). A block whose slice overflows sets
    ``em_overflow[b]`` and must be run again with more room.
    """
    n = len(norms)
    n_tiles = (n + tile - 1) // tile
    acc = np.zeros((n_threads, tile), np.float64)
    touched = np.empty((n_threads, tile), np.int32)
    cursors = np.empty((n_threads, max(max_deg, 1)), np.int64)
    n_blocks = len(block_ptr) - 1
    for b in prange(n_blocks):
        tid = numba.get_thread_id()
        acc_t = acc[tid]
        tch = touched[tid]
        cur = cursors[tid]
        n_em = 0
        for ii in range(block_ptr[b], block_ptr[b + 1]):
            u = rows[ii]
            p0 = a_ptr[u]
            p1 = a_ptr[u + 1]
            for p in range(p0, p1):
                cur[p - p0] = t_ptr[a_idx[p]]
            vals = out_val[ii]
            idx = out_idx[ii]
            cnt = 0
            npos = 0
            nu = norms[u]
            ukey = node_key[u] if emit else 0
            for tb in range(n_tiles):
                lo = tb * tile
                hi = lo + tile
                nt = 0
                for p in range(p0, p1):
                    j = a_idx[p]
                    if not col_ok[j]:
                        continue
                    w = np.float64(a_w[p])
                    q = cur[p - p0]
                    qe = t_ptr[j + 1]
                    while q < qe:
                        v = t_idx[q]
                        if v >= hi:
                            break
                        vl = v - lo
                        y = acc_t[vl]
                        if y == 0.0:
                            tch[nt] = vl
                            nt += 1
                        acc_t[vl] = y + w * np.float64(t_w[q])
                        q += 1
                    cur[p - p0] = q
                for t in range(nt):
                    vl = tch[t]
                    x = acc_t[vl]
                    acc_t[vl] = 0.0
                    v = vl + lo
                    if v == u:
                        continue
                    if jaccard:
                        d = (nu + norms[v]) - x
                    else:
                        d = nu * norms[v]
                    if not d > 0:
                        continue
                    s = x / d
                    if not s > 0:
                        continue
                    npos += 1
                    cnt = _push_topk(vals, idx, cnt, k, s, v)
                    if emit:
                        bv = b_val[v]
                        if s > bv or (s == bv and ukey <= b_key[v]):
                            if n_em < em_cap[b]:
                                pos = em_off[b] + n_em
                                em_row[pos] = v
                                em_col[pos] = u
                                em_val[pos] = s
                                n_em += 1
                            else:
                                em_overflow[b] = True
            out_cnt[ii] = cnt
            out_npos[ii] = npos
        em_cnt[b] = n_em


def _n_threads() -> int:
    return int(numba.get_num_threads())


def _balanced_blocks(cost: np.ndarray, max_rows: int, n_threads: int) -> np.ndarray:
    """Block boundaries over rows so each block has about the same work (and <= max_rows rows)."""
    n = len(cost)
    if n == 0:
        return np.zeros(1, np.int64)
    n_blocks = max(1, min(n, 64 * n_threads))
    csum = np.cumsum(cost.astype(np.float64) + 1.0)
    targets = np.linspace(0, csum[-1], n_blocks + 1)[1:-1]
    cuts = np.searchsorted(csum, targets, side="right")
    bounds = np.unique(np.concatenate([[0], cuts, np.arange(0, n, max(1, max_rows)), [n]]))
    return bounds.astype(np.int64)


#: Candidate rows per accumulator tile: 64Ki float64 = 512 KiB, which stays in a core's L2.
TILE_ROWS = 1 << 16
#: At most this many tiles per row walk (very large graphs use larger, L3-resident tiles).
MAX_TILES = 32


def _tile_size(n: int) -> int:
    return max(1, min(max(n, 1), max(TILE_ROWS, -(-n // MAX_TILES))))


class _Prepared:
    """Kernel inputs for one matrix: float32 weights, the transpose (int32 ids), norms, hub mask.

    Entries with weight <= 0 contribute nothing to a cosine product, so they are dropped (the
    pipeline's graphs have none); Jaccard uses the binary pattern (weight 1).
    """

    def __init__(self, a: CSR, measure: str, hub_degree_cap: int):
        _check_measure(measure)
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
        # Transpose (stable counting sort by column keeps the row ids ascending per column).
        order = np.argsort(indices, kind="stable")
        self.t_ptr = np.zeros(a.n_cols + 1, np.int64)
        np.cumsum(np.bincount(indices, minlength=a.n_cols), out=self.t_ptr[1:])
        row_of = np.repeat(np.arange(self.n, dtype=np.int32 if self.n < 2**31 else np.int64), np.diff(indptr))
        self.t_idx = row_of[order]
        self.t_w = weights[order]
        self.col_deg = np.diff(self.t_ptr)
        self.hub = self.col_deg > hub_degree_cap if hub_degree_cap and hub_degree_cap > 0 else np.zeros(a.n_cols, bool)
        self.col_ok = ~self.hub
        # Work of row r: sum of the degrees of its non-hub columns.
        eff_deg = np.where(self.col_ok, self.col_deg, 0).astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(eff_deg[self.a_idx])])
        self.row_cost = csum[self.a_ptr[1:]] - csum[self.a_ptr[:-1]]
        self.max_deg = int(np.diff(indptr).max()) if self.n else 0

    def run(self, rows: np.ndarray, k: int, chunk_rows: int = 4096, emit: dict | None = None):
        """Top-k of the given rows: ``(idx [len(rows), k], val float64 [len(rows), k], cnt, npos)``.

        With ``emit = {"b_val", "b_key", "node_key"}`` (see :func:`_topk_kernel`) a fifth item is
        returned: the emitted ``(row, col, val)`` arrays.
        """
        rows = np.asarray(rows, np.int64)
        nt = _n_threads()
        cost = self.row_cost[rows] if len(rows) else np.zeros(0)
        blocks = _balanced_blocks(cost, chunk_rows, nt)
        kk = max(k, 1)
        out_idx = np.full((len(rows), kk), -1, np.int64)
        out_val = np.zeros((len(rows), kk), np.float64)
        out_cnt = np.zeros(len(rows), np.int64)
        out_npos = np.zeros(len(rows), np.int64)
        n_blocks = len(blocks) - 1
        if emit is None:
            f0, i0 = np.zeros(1, np.float64), np.zeros(1, np.int64)
            em = (False, f0, i0, i0, np.zeros(max(n_blocks, 1), np.int64), np.zeros(max(n_blocks, 1), np.int64),
                  i0, i0, f0, np.zeros(max(n_blocks, 1), np.int64), np.zeros(max(n_blocks, 1), np.bool_))
            if len(rows) and k > 0:
                self._call(rows, blocks, k, nt, out_idx, out_val, out_cnt, out_npos, em)
            return out_idx, out_val, out_cnt, out_npos
        # Emission: each block gets a slice of the buffer; blocks that overflow are run again.
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
            self.emit_reruns = getattr(self, "emit_reruns", 0) + len(todo)
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
        emitted = (cat(em_rows, np.int64), cat(em_cols, np.int64), cat(em_vals, np.float64))
        return out_idx, out_val, out_cnt, out_npos, emitted

    def _call(self, rows, blocks, k, nt, out_idx, out_val, out_cnt, out_npos, em):
        # (numba.parallel_chunksize(1) was tried for dynamic hand-out: 1.5-2x slower.)
        _topk_kernel(rows, blocks, self.a_ptr, self.a_idx, self.a_w, self.t_ptr, self.t_idx, self.t_w,
                     self.col_ok, self.norms, self.measure == "jaccard", k, _tile_size(self.n), nt,
                     self.max_deg, out_idx, out_val, out_cnt, out_npos, *em)


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
            :func:`similarity_stats`).
    """
    t0 = time.perf_counter()
    prep = _Prepared(a, measure, hub_degree_cap)
    out_idx, out_val, out_cnt, out_npos = prep.run(np.arange(a.n_rows, dtype=np.int64), k, chunk_rows)
    adj = _rows_to_csr(out_idx, out_val, out_cnt, a.n_rows)
    if stats is not None:
        stats.update(similarity_stats(adj, prep, k, candidates=int(out_npos.sum())))
        stats["wall_time_s"] = round(time.perf_counter() - t0, 4)
    return adj


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------
def degree_histogram(degrees: np.ndarray, log_bins: bool = True) -> dict[str, list]:
    """Histogram of a degree array: ``{"edges": [...], "counts": [...]}`` (bin i = [e_i, e_i+1)).

    Log-spaced integer bins (1, 2, 4, 8, ...) after a bin for degree 0, or unit bins when
    ``log_bins`` is False (for degrees bounded by k).
    """
    degrees = np.asarray(degrees, np.int64)
    top = int(degrees.max()) if len(degrees) else 0
    if log_bins:
        edges = [0, 1]
        while edges[-1] <= top:
            edges.append(edges[-1] * 2)
    else:
        edges = list(range(0, top + 2))
    counts, _ = np.histogram(degrees, bins=np.asarray(edges, dtype=np.float64))
    return {"edges": [int(e) for e in edges], "counts": [int(c) for c in counts]}


def similarity_stats(adj: CSR, prep: _Prepared, k: int, candidates: int | None = None) -> dict:
    out_deg = adj.degrees()
    in_deg = np.bincount(adj.indices, minlength=adj.n_rows) if adj.nnz else np.zeros(adj.n_rows, np.int64)
    col_deg = prep.col_deg.astype(np.float64)
    pairs_total = float((col_deg**2).sum())
    pairs_hub = float((col_deg[prep.hub] ** 2).sum())
    st = {
        "n_nodes": int(adj.n_rows),
        "n_edges": int(adj.nnz),
        "k": int(k),
        "measure": prep.measure,
        "threads": _n_threads(),
        "pairs_counted": int(pairs_total - pairs_hub),
        "pairs_skipped_hubs": int(pairs_hub),
        "hub_nodes_skipped": int(prep.hub.sum()),
        "share_no_similar_neighbour": round(float((out_deg == 0).mean()) if adj.n_rows else 0.0, 6),
        "out_degree_hist": degree_histogram(out_deg, log_bins=False),
        "in_degree_hist": degree_histogram(in_deg),
        "mean_similarity": round(float(adj.weights.mean()) if adj.nnz else 0.0, 6),
    }
    if candidates is not None:
        st["candidate_pairs"] = int(candidates)  # (u, v) pairs with a positive similarity
    return st


def hub_recall(a: CSR, k: int, measure: str, hub_degree_cap: int, sample_rows: int = 2000, seed: int = 0,
               capped: CSR | None = None) -> float:
    """Recall@k of the hub-capped top-k against the exact top-k on a seeded sample of rows."""
    rng = np.random.default_rng(seed)
    n = a.n_rows
    if n == 0:
        return 1.0
    rows = np.sort(rng.choice(n, size=min(sample_rows, n), replace=False)).astype(np.int64)
    exact = _Prepared(a, measure, 0).run(rows, k)
    if capped is None:
        approx = _Prepared(a, measure, hub_degree_cap).run(rows, k)
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
def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss / 2**20
    except Exception:  # pragma: no cover - psutil is a dependency, belt and braces
        return _peak_rss_mb()


class _MemWatch:
    """Peak RSS growth over a block, sampled by a background thread (numba allocations are not
    seen by tracemalloc)."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval

    def __enter__(self):
        import threading

        self.base = _rss_mb()
        self.peak = self.base
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(self.interval):
                self.peak = max(self.peak, _rss_mb())

        self._t = threading.Thread(target=loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mb())

    @property
    def delta_mb(self) -> float:
        return round(self.peak - self.base, 1)


def build_similarity_graph(
    a: CSR, node_ids: np.ndarray, kind: str, k: int, measure: str = "cosine", hub_degree_cap: int = 0,
    chunk_rows: int = 4096, recall_sample_rows: int = 2000,
) -> SimilarityGraph:
    """One top-k similarity graph with its ``stats`` (time, memory, hubs, coverage, histograms)."""
    stats: dict = {}
    with _MemWatch() as mem:
        t0 = time.perf_counter()
        adj = topk_similarity(a, k, measure, hub_degree_cap, chunk_rows, stats=stats)
        stats["wall_time_s"] = round(time.perf_counter() - t0, 4)
    stats["peak_mem_delta_mb"] = mem.delta_mb
    stats["hub_degree_cap"] = int(hub_degree_cap)
    stats["exact"] = not (hub_degree_cap and stats["hub_nodes_skipped"] > 0)
    if not stats["exact"] and recall_sample_rows > 0:
        stats["hub_recall_at_k"] = round(hub_recall(a, k, measure, hub_degree_cap, recall_sample_rows, capped=adj), 6)
        stats["hub_recall_sample_rows"] = int(min(recall_sample_rows, a.n_rows))
    return SimilarityGraph(np.asarray(node_ids, np.int64), adj, kind, stats)


def build_similarity_graphs(bip, cfg) -> tuple[SimilarityGraph, SimilarityGraph]:
    """User-user (on ``bip.ui``) and item-item (on ``bip.iu``) top-k graphs for ``GraphConfig``."""
    kw = dict(k=cfg.topk, measure=cfg.similarity, hub_degree_cap=cfg.hub_degree_cap, chunk_rows=cfg.chunk_rows)
    user = build_similarity_graph(bip.ui, bip.user_ids, "user", **kw)
    item = build_similarity_graph(bip.iu, bip.item_ids, "item", **kw)
    return user, item


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------
def topk_similarity_reference(
    a: CSR, k: int, measure: str = "cosine", hub_degree_cap: int = 0, chunk_rows: int = 4096
) -> CSR:
    """The original chunked SciPy implementation: sparse row blocks times ``A^T``, densified."""
    import scipy.sparse as sp

    _check_measure(measure)
    m = a.to_scipy().astype(np.float64)
    if measure == "jaccard":
        m.data[:] = 1.0
    norms = _row_norms(CSR.from_scipy(m), measure)
    mt = m.T.tocsr()
    if hub_degree_cap > 0:
        col_deg = np.diff(m.tocsc().indptr)
        keep = sp.diags((col_deg <= hub_degree_cap).astype(np.float64))
        mt = (keep @ mt).tocsr()
    rows_out, cols_out, w_out = [], [], []
    for start in range(0, m.shape[0], chunk_rows):
        stop = min(start + chunk_rows, m.shape[0])
        block = (m[start:stop] @ mt).toarray()
        ids = np.arange(start, stop)
        if measure == "cosine":
            denom = np.outer(norms[start:stop], norms)
        else:
            denom = norms[start:stop, None] + norms[None, :] - block
        with np.errstate(divide="ignore", invalid="ignore"):
            sims = np.where(denom > 0, block / np.where(denom > 0, denom, 1.0), 0.0)
        # (The skeleton passed ``ids - start`` here, which excluded the wrong column as "self"
        # in every chunk but the first.)
        r, c, w = topk_from_dense_rows(sims, ids, k)
        rows_out.append(r)
        cols_out.append(c)
        w_out.append(w)
    rows = np.concatenate(rows_out) if rows_out else np.zeros(0, np.int64)
    cols = np.concatenate(cols_out) if cols_out else np.zeros(0, np.int64)
    w = np.concatenate(w_out) if w_out else np.zeros(0, np.float32)
    return _csr_from_rows(rows, cols, w, m.shape[0])


def topk_similarity_bruteforce(a: CSR, k: int, measure: str = "cosine", hub_degree_cap: int = 0) -> CSR:
    """Fully dense ``A A^T`` with a Python loop per row: the definition, for tiny graphs."""
    _check_measure(measure)
    n = a.n_rows
    dense = np.zeros((n, a.n_cols), np.float64)
    r = a.row_of_entries()
    dense[r, a.indices] = 1.0 if measure == "jaccard" else np.asarray(a.weights, np.float64)
    if measure == "cosine":
        norms = np.sqrt((dense**2).sum(axis=1))
    else:
        norms = (dense > 0).sum(axis=1).astype(np.float64)
    masked = dense.copy()
    if hub_degree_cap > 0:
        masked[:, (dense > 0).sum(axis=0) > hub_degree_cap] = 0.0
    # Column-ordered accumulation, like a sparse product (so float64 results match bitwise).
    dots = np.zeros((n, n), np.float64)
    for j in range(a.n_cols):
        dots += np.outer(masked[:, j], masked[:, j])
    rows_out, cols_out, w_out = [], [], []
    for u in range(n):
        cand = []
        for v in range(n):
            if v == u or dots[u, v] == 0:
                continue
            d = norms[u] * norms[v] if measure == "cosine" else (norms[u] + norms[v]) - dots[u, v]
            s = dots[u, v] / d if d > 0 else 0.0
            if s > 0:
                cand.append((-s, v))
        cand.sort()
        for s, v in cand[:k]:
            rows_out.append(u)
            cols_out.append(v)
            w_out.append(-s)
    return _csr_from_rows(np.asarray(rows_out, np.int64), np.asarray(cols_out, np.int64),
                          np.asarray(w_out, np.float64), n)


def topk_similarity_scipy(a: CSR, k: int, measure: str = "cosine", hub_degree_cap: int = 0) -> CSR:
    """The straightforward baseline: full SciPy ``S = A @ A.T``, then per-row top-k of ``S``.

    The per-row selection is a loop over rows: ``np.partition`` finds the k-th largest
    similarity, and only the entries at or above it are sorted (similarity desc, id asc). The
    baseline's memory is dominated by ``S`` itself.
    """
    import scipy.sparse as sp

    _check_measure(measure)
    m = a.to_scipy().astype(np.float64)
    if measure == "jaccard":
        m.data[:] = 1.0
    norms = _row_norms(CSR.from_scipy(m), measure)
    mt = m.T.tocsr()
    if hub_degree_cap > 0:
        col_deg = np.diff(mt.indptr)
        mt = (sp.diags((col_deg <= hub_degree_cap).astype(np.float64)) @ mt).tocsr()
    s = (m @ mt).tocsr()
    del mt
    n = m.shape[0]
    counts = np.zeros(n, np.int64)
    cols_out = np.empty(n * k, np.int64)
    w_out = np.empty(n * k, np.float64)
    indptr, indices, data = s.indptr, s.indices, s.data
    pos = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for r in range(n):
            lo, hi = indptr[r], indptr[r + 1]
            if lo == hi:
                continue
            cols = indices[lo:hi]
            dots = data[lo:hi]
            if measure == "cosine":
                d = norms[r] * norms[cols]
            else:
                d = (norms[r] + norms[cols]) - dots
            sims = np.where(d > 0, dots / np.where(d > 0, d, 1.0), 0.0)
            sims[cols == r] = 0.0
            if len(sims) > k:
                thr = np.partition(sims, len(sims) - k)[len(sims) - k]
                cand = np.flatnonzero((sims >= thr) & (sims > 0))
            else:
                cand = np.flatnonzero(sims > 0)
            order = cand[np.lexsort((cols[cand], -sims[cand]))][:k]
            c = len(order)
            cols_out[pos:pos + c] = cols[order]
            w_out[pos:pos + c] = sims[order]
            counts[r] = c
            pos += c
    ip = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=ip[1:])
    return CSR(ip, cols_out[:pos].copy(), w_out[:pos].astype(np.float32), n)
