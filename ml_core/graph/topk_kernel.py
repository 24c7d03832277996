"""The numba kernels of the top-k similarity graph (the driver is
:class:`ml_core.graph.similarity.PreparedMatrix`; the definition is in :mod:`ml_core.graph.similarity`).

Every kernel is compiled once per machine (``cache=True``) and releases the GIL (``nogil``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange


def n_threads() -> int:
    """Threads numba's parallel loops use (``NUMBA_NUM_THREADS`` / ``numba.set_num_threads``)."""
    return int(numba.get_num_threads())


@njit(cache=True, nogil=True)
def row_norms_kernel(indptr, weights, cosine):
    """float64 ``||A_r||`` (cosine: squares summed in entry order, then ``sqrt``) or ``|N(r)|``
    (jaccard) for every row of the CSR ``(indptr, weights)``; the references compute the same
    float64 operations in the same order."""
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


@njit(cache=True, nogil=True)
def transpose_kernel(indptr, indices, weights, t_ptr, t_idx, t_w):
    """The transpose of the CSR ``(indptr, indices, weights)`` into ``t_idx`` / ``t_w`` over the
    column offsets ``t_ptr``: a counting sort that visits the rows in order, so every column
    lists its row ids ascending (what a stable argsort of ``indices`` gives, in one pass)."""
    nxt = t_ptr[:-1].copy()
    for r in range(len(indptr) - 1):
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            q = nxt[j]
            t_idx[q] = r
            t_w[q] = weights[p]
            nxt[j] = q + 1


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
def topk_rows_kernel(rows, block_ptr, a_ptr, a_idx, a_w, t_ptr, t_idx, t_w, col_ok, norms, jaccard, k, tile,
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
