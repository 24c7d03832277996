"""How much of the exact top-k walk can bounds prune? A probe, not a kernel the pipeline uses.

    python benchmarks/pruning_probe.py                      # IJCAI scale, 50,000 sampled rows a side
    python benchmarks/pruning_probe.py --scale small --rows 5000

Issue 26 proposed replacing the full 2-hop walk of :func:`ml_core.graph.topk_kernel.topk_rows_kernel`
with an exact kernel that prunes candidates with bounds (max-score / threshold-algorithm style,
as in AllPairs, Bayardo et al. 2007, and L2AP, Anastasiu and Karypis 2014). This file holds such
a kernel, :func:`pruned_topk_rows_kernel`, and measures on ``bench_knn_peers.py``'s window graph
what share of the full walk it still has to do, by row degree, with its output checked equal,
bit for bit, to the full kernel's on the same rows.

How the kernel works, per row ``u``:

* columns of at most ``long_deg`` entries are walked whole, as the full kernel does;
* the long columns have their entries sorted by ``x_vj = w_vj / |A_v|``, largest first
  (:func:`sorted_columns_kernel`), and are walked a ``chunk`` at a time, always the column whose
  next entry can add the most (``w_uj / |A_u| * x``);
* ``rest``, the sum over the long columns of what their next entry can add, bounds the cosine of
  every row not met yet. All products are positive, so a row's partial sum only grows and the
  k-th best partial similarity ``theta`` is a lower bound of the final k-th best. When
  ``rest < theta`` no row not met can enter the top k and the walk stops;
* every row met whose partial similarity plus ``rest`` can still reach ``theta`` is scored
  exactly: its dot product summed over ``u``'s columns in ``u``'s row order, as the full kernel
  adds them, so the same bits. Jaccard: a row gains at most one shared column per long column
  left.

Comparisons carry a relative margin (:data:`MARGIN`), so rounding can only keep a row. Rows need
sorted column ids (the exact score binary-searches ``v``'s row).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ml_core.graph.topk_kernel import _push_topk  # noqa: E402 - after sys.path

#: Relative slack on every pruning comparison (float64 partial sums in another order differ
#: from the exact ones by ~1e-16 relative).
MARGIN = 1e-9


@njit(cache=True, nogil=True, inline="always")
def _exact_dot(u_lo, u_hi, v, a_ptr, a_idx, a_w, col_ok):
    """``A_u . A_v`` over the columns allowed, added in ``u``'s row order (the full kernel's)."""
    lo0 = a_ptr[v]
    hi0 = a_ptr[v + 1]
    x = 0.0
    for p in range(u_lo, u_hi):
        j = a_idx[p]
        if not col_ok[j]:
            continue
        lo = lo0
        hi = hi0
        while lo < hi:  # v's row is sorted by column
            mid = (lo + hi) >> 1
            if a_idx[mid] < j:
                lo = mid + 1
            else:
                hi = mid
        if lo < hi0 and a_idx[lo] == j:
            x += np.float64(a_w[p]) * np.float64(a_w[lo])
    return x


@njit(cache=True, nogil=True, inline="always")
def _similarity(x, nu, nv, jaccard):
    d = (nu + nv) - x if jaccard else nu * nv
    if not d > 0:
        return 0.0
    return x / d


@njit(parallel=True, cache=True, nogil=True)
def sorted_columns_kernel(t_ptr, t_idx, t_w, norms, jaccard, long_deg):
    """The columns of more than ``long_deg`` entries with their entries ordered by ``w_vj / |A_v|``
    descending (then row id): ``(s_idx, s_x)`` over ``t_ptr``'s slices (short columns: empty)."""
    n_cols = len(t_ptr) - 1
    s_idx = np.empty(len(t_idx), np.int64)
    s_x = np.zeros(len(t_idx), np.float64)
    for j in prange(n_cols):
        lo = t_ptr[j]
        hi = t_ptr[j + 1]
        if hi - lo <= long_deg:
            continue
        x = np.empty(hi - lo, np.float64)
        for q in range(lo, hi):
            x[q - lo] = 1.0 if jaccard else np.float64(t_w[q]) / norms[t_idx[q]]
        o = np.argsort(-x, kind="mergesort")  # stable: row ids ascending within ties
        for r in range(hi - lo):
            s_idx[lo + r] = t_idx[lo + o[r]]
            s_x[lo + r] = x[o[r]]
    return s_idx, s_x


@njit(cache=True, nogil=True, inline="always")
def _kth_partial(tch, nt, u, acc_t, scr, nu, norms, jaccard, k):
    """The k-th best partial similarity among the ``nt`` rows met (0 when at most k)."""
    c = 0
    for t in range(nt):
        v = tch[t]
        if v != u:
            scr[c] = _similarity(acc_t[v], nu, norms[v], True) if jaccard else acc_t[v]  # cosine: sums of w/|A|
            c += 1
    if c <= k:
        return 0.0
    return np.partition(scr[:c], c - k)[c - k]


@njit(parallel=True, cache=True, nogil=True)
def pruned_topk_rows_kernel(rows, block_ptr, a_ptr, a_idx, a_w, t_ptr, t_idx, t_w, s_idx, s_x, col_ok,
                            long_deg, chunk, norms, jaccard, k, n_threads, max_deg, out_idx, out_val, out_cnt,
                            out_npos, out_walk):
    """Top-k similar rows of each ``rows[i]`` into ``out_*[i]`` (module docstring); the
    arguments are those of :func:`~ml_core.graph.topk_kernel.topk_rows_kernel` plus the long
    columns' sorted entries (:func:`sorted_columns_kernel` with ``long_deg``) and the number of
    entries a long column advances by at a time (``chunk``)."""
    n = len(norms)
    acc = np.zeros((n_threads, n), np.float64)
    touched = np.empty((n_threads, n), np.int32)
    scratch = np.empty((n_threads, n), np.float64)
    long_p = np.empty((n_threads, max(max_deg, 1)), np.int64)
    heads = np.empty((n_threads, max(max_deg, 1)), np.int64)
    n_blocks = len(block_ptr) - 1
    for b in prange(n_blocks):
        tid = numba.get_thread_id()
        acc_t = acc[tid]
        tch = touched[tid]
        scr = scratch[tid]
        lp = long_p[tid]
        hd = heads[tid]
        for ii in range(block_ptr[b], block_ptr[b + 1]):
            u = rows[ii]
            p0 = a_ptr[u]
            p1 = a_ptr[u + 1]
            nu = norms[u]
            nt = 0
            n_long = 0
            walk = 0
            # short columns: walked whole (their rows are all met)
            for p in range(p0, p1):
                j = a_idx[p]
                if not col_ok[j]:
                    continue
                if t_ptr[j + 1] - t_ptr[j] > long_deg:
                    lp[n_long] = p
                    hd[n_long] = t_ptr[j]
                    n_long += 1
                    continue
                w = 1.0 if jaccard else np.float64(a_w[p]) / nu
                walk += t_ptr[j + 1] - t_ptr[j]
                for q in range(t_ptr[j], t_ptr[j + 1]):
                    v = t_idx[q]
                    y = acc_t[v]
                    if y == 0.0:
                        tch[nt] = v
                        nt += 1
                    acc_t[v] = y + w * (1.0 if jaccard else np.float64(t_w[q]) / norms[v])
            # long columns: walked from their largest entries down, the one that can add most first
            rest = 0.0
            since = nt
            while True:
                best = -1
                rest = 0.0
                top = -1.0
                for l in range(n_long):
                    j = a_idx[lp[l]]
                    if hd[l] < t_ptr[j + 1]:
                        gain = (1.0 if jaccard else np.float64(a_w[lp[l]]) / nu) * s_x[hd[l]]
                        rest += gain
                        if gain > top:
                            top = gain
                            best = l
                if best < 0:
                    break
                if jaccard:  # a row gains at most one shared column per long column left
                    rest = 0.0
                    for l in range(n_long):
                        if hd[l] < t_ptr[a_idx[lp[l]] + 1]:
                            rest += 1.0
                    rest = rest / nu if nu > 0 else 0.0
                if nt > k and since >= nt:
                    since = 0
                    theta = _kth_partial(tch, nt, u, acc_t, scr, nu, norms, jaccard, k)
                    if rest * (1.0 + MARGIN) < theta:
                        break
                j = a_idx[lp[best]]
                w = 1.0 if jaccard else np.float64(a_w[lp[best]]) / nu
                q0 = hd[best]
                q1 = min(q0 + chunk, t_ptr[j + 1])
                for q in range(q0, q1):
                    v = s_idx[q]
                    y = acc_t[v]
                    if y == 0.0:
                        tch[nt] = v
                        nt += 1
                    acc_t[v] = y + w * s_x[q]
                hd[best] = q1
                since += q1 - q0
                walk += q1 - q0
            if nt > k:
                theta = _kth_partial(tch, nt, u, acc_t, scr, nu, norms, jaccard, k)
            else:
                theta = 0.0
            vals = out_val[ii]
            idx = out_idx[ii]
            cnt = 0
            npos = 0
            for t in range(nt):
                v = tch[t]
                y = acc_t[v]
                acc_t[v] = 0.0
                if v == u:
                    continue
                npos += 1
                if jaccard:
                    ub = _similarity(min(y + rest * nu, min(nu, norms[v])), nu, norms[v], True)
                else:
                    ub = y + rest
                if ub * (1.0 + MARGIN) < theta:
                    continue
                s = _similarity(_exact_dot(p0, p1, v, a_ptr, a_idx, a_w, col_ok), nu, norms[v], jaccard)
                if s > 0:
                    cnt = _push_topk(vals, idx, cnt, k, s, v)
            out_cnt[ii] = cnt
            out_npos[ii] = npos
            out_walk[ii] = walk


DEGREE_CLASSES = ((1, 2), (2, 5), (5, 20), (20, 100), (100, None))


def probe(a, rows: np.ndarray, k: int, measure: str, long_deg: int, chunk: int) -> dict:
    """Both kernels on ``rows`` of the CSR ``a``: times, identity, walk shares by row degree."""
    from ml_core.graph.similarity import PreparedMatrix, balanced_blocks
    from ml_core.graph.topk_kernel import n_threads

    prep = PreparedMatrix(a, measure, 0)
    d = np.diff(prep.a_idx)
    row_start = np.zeros(len(prep.a_idx), bool)
    row_start[prep.a_ptr[:-1][np.diff(prep.a_ptr) > 0]] = True
    if not np.all(d[~row_start[1:]] > 0):
        raise ValueError("the probe needs rows with sorted column ids")
    jaccard = measure == "jaccard"
    nt = n_threads()
    blocks = balanced_blocks(prep.row_cost[rows], 64 * nt, 4096)

    def pruned():
        s_idx, s_x = sorted_columns_kernel(prep.t_ptr, prep.t_idx, prep.t_w, prep.norms, jaccard, long_deg)
        out = (np.full((len(rows), k), -1, np.int64), np.zeros((len(rows), k)), np.zeros(len(rows), np.int64),
               np.zeros(len(rows), np.int64), np.zeros(len(rows), np.int64))
        pruned_topk_rows_kernel(rows, blocks, prep.a_ptr, prep.a_idx, prep.a_w, prep.t_ptr, prep.t_idx, prep.t_w,
                                s_idx, s_x, prep.col_ok, long_deg, chunk, prep.norms, jaccard, k, nt, prep.max_deg,
                                *out)
        return out

    prep.run(rows[:100], k), pruned()  # compiled and warm
    t = time.perf_counter()
    ref = prep.run(rows, k)
    t_full = time.perf_counter() - t
    t = time.perf_counter()
    got = pruned()
    t_pruned = time.perf_counter() - t
    full_walk = prep.row_cost[rows]
    walked = got[4]
    deg = np.diff(prep.a_ptr)[rows]
    classes = []
    for lo, hi in DEGREE_CLASSES:
        m = (deg >= lo) & (deg < (hi or np.inf))
        classes.append({"row_degree": f"[{lo}, {hi or 'inf'})", "rows": int(m.sum()),
                        "share_of_full_walk": round(float(full_walk[m].sum() / max(full_walk.sum(), 1)), 4),
                        "walked_share": round(float(walked[m].sum() / max(full_walk[m].sum(), 1)), 4)})
    return {"rows": len(rows), "threads": nt, "identical": all(np.array_equal(x, y) for x, y in zip(ref[:3], got[:3])),
            "full_kernel_s": round(t_full, 3), "pruned_kernel_s": round(t_pruned, 3),
            "walked_share": round(float(walked.sum() / max(full_walk.sum(), 1)), 4), "by_row_degree": classes}


def main() -> None:
    from benchmarks.bench_graph import _load_csr
    from benchmarks.bench_knn_peers import K, ensure_graph, write_report

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", default="ijcai", choices=["ijcai", "small"])
    p.add_argument("--graph", type=Path, help="directory of the window graph (default: bench_knn_peers's cache)")
    p.add_argument("--rows", type=int, default=50_000, help="rows sampled per side (0 = all)")
    p.add_argument("--measure", default="cosine", choices=["cosine", "jaccard"])
    p.add_argument("--long-deg", type=int, default=32)
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    graph = args.graph or Path(tempfile.gettempdir()) / f"moge-knn-peers-graph-{args.scale}"
    ensure_graph(graph, args.scale)
    report = {"benchmark": "pruning_probe", "date": time.strftime("%Y-%m-%d"), "scale": args.scale, "k": K,
              "measure": args.measure, "long_deg": args.long_deg, "chunk": args.chunk, "sides": {}}
    for side, name in (("item", "iu.npz"), ("user", "ui.npz")):
        a = _load_csr(graph / name)
        rng = np.random.default_rng(0)
        rows = np.arange(a.n_rows) if not args.rows or args.rows >= a.n_rows else rng.choice(a.n_rows, args.rows, replace=False)
        r = probe(a, np.sort(rows).astype(np.int64), K, args.measure, args.long_deg, args.chunk)
        report["sides"][side] = r
        print(f"{side}: {r['rows']} rows, identical {r['identical']}, walk left {r['walked_share']:.1%}, "
              f"full kernel {r['full_kernel_s']:.2f} s, pruned {r['pruned_kernel_s']:.2f} s", flush=True)
        for c in r["by_row_degree"]:
            print(f"   row degree {c['row_degree']:>10}: {c['rows']:7d} rows, {c['share_of_full_walk']:.1%} of the walk, "
                  f"{c['walked_share']:.1%} of it walked")
    write_report(report, args.out)


if __name__ == "__main__":
    main()
