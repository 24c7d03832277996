"""Reference implementations of the top-k similarity graph (tests and benchmarks only).

They compute the graph defined in :mod:`ml_core.graph.similarity` (same float64 arithmetic in the
same column order, same ordering and tie-breaking, weights rounded to float32), so each returns
arrays bit-identical to the production kernel :func:`ml_core.graph.similarity.topk_similarity`
(``tests/unit/test_similarity.py`` checks this). None of them is used by the pipeline.

* :func:`topk_similarity_reference` -- the original chunked SciPy/dense implementation.
* :func:`topk_similarity_scipy` -- the straightforward baseline: full SciPy ``A @ A.T`` followed by
  per-row top-k (used by ``benchmarks/bench_graph.py``; exact but memory-hungry).
* :func:`topk_similarity_bruteforce` -- fully dense ``A A^T`` (tiny graphs, tests).

Importable with the repository root on ``sys.path`` (pytest's ``pythonpath = ["."]``;
``bench_graph.py`` adds it): ``from benchmarks.reference_graph import topk_similarity_scipy``.
"""

from __future__ import annotations

import numpy as np

from ml_core.graph.csr import CSR
from ml_core.graph.similarity import check_measure


def _row_norms(m: CSR, measure: str) -> np.ndarray:
    """float64 ``||A_r||`` (cosine) or ``|N(r)|`` (jaccard), vectorised (``np.add.at``)."""
    if measure == "cosine":
        sq = np.zeros(m.n_rows, dtype=np.float64)
        np.add.at(sq, m.row_of_entries(), m.weights.astype(np.float64) ** 2)
        return np.sqrt(sq)
    return m.degrees().astype(np.float64)


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


def _scipy_operands(a: CSR, measure: str, hub_degree_cap: int):
    """``(A, A^T with hub columns zeroed, row norms)`` as SciPy float64 matrices, for the SciPy
    references (Jaccard: binary ``A``; a column above ``hub_degree_cap`` neighbours is a hub)."""
    import scipy.sparse as sp

    check_measure(measure)
    m = a.to_scipy().astype(np.float64)
    if measure == "jaccard":
        m.data[:] = 1.0
    norms = _row_norms(CSR.from_scipy(m), measure)
    mt = m.T.tocsr()
    if hub_degree_cap > 0:
        col_deg = np.diff(mt.indptr)  # column degrees of A = row degrees of A^T
        mt = (sp.diags((col_deg <= hub_degree_cap).astype(np.float64)) @ mt).tocsr()
    return m, mt, norms


def topk_similarity_reference(
    a: CSR, k: int, measure: str = "cosine", hub_degree_cap: int = 0, chunk_rows: int = 4096
) -> CSR:
    """The original chunked SciPy implementation: sparse row blocks times ``A^T``, densified."""
    m, mt, norms = _scipy_operands(a, measure, hub_degree_cap)
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
    check_measure(measure)
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
    m, mt, norms = _scipy_operands(a, measure, hub_degree_cap)
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
