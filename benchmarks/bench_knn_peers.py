"""Exact top-k cosine graphs: this project's kernel against sparse-dot-topn and implicit, in one run.

    python benchmarks/bench_knn_peers.py                  # IJCAI-15 scale (bench_graph's generator)
    python benchmarks/bench_knn_peers.py --scale small    # a one-minute smoke run

The window graph is ``bench_graph.py``'s: 30 days of the synthetic power-law log at ``--scale``
(``ijcai``: about 1.1M nodes, 4.8M edges), kept under ``--graph`` between runs. For each side
(``item``: rows = items over their users; ``user``: rows = users over their items) each method
runs in its own process with ``--threads`` threads, one after the other:

* ``project``: :func:`ml_core.graph.similarity.topk_similarity` (k = 10, cosine, no hub cap);
* ``sparse_dot_topn``: ``sp_matmul_topn(X, X.T, top_n=k + 1, sort=True)`` over the L2-normalised
  rows ``X`` (k + 1: the row itself comes back), float64;
* ``implicit``: ``implicit.nearest_neighbours.all_pairs_knn`` (column-column products, so it gets
  ``X.T``), float64, top k + 1.

Times are the wall seconds of the computation inside the child (the input's normalisation and
transposes included; interpreter start and file reads not), with the child's peak RSS. The peers
are installed in a throw-away virtual environment (``--peers-venv``, created on first use with
pinned versions from PyPI, so the first run needs the network), never in the project's lock. Agreement: the share of rows whose k neighbours
(self dropped) are the same set as the project's, and the largest difference of their values; a
tie at the k-th value lets a peer keep another row of the same similarity, so the share of rows
whose *sorted values* agree to 1e-6 (relative: the project's graph stores float32 weights) is
printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PEERS = ("sparse-dot-topn==1.2.0", "implicit==0.7.3", "scipy", "numpy")
METHODS = ("project", "sparse_dot_topn", "implicit")
K = 10


def ensure_peers_venv(path: Path) -> Path:
    """The throw-away venv's python, created with :data:`PEERS` when missing."""
    py = path / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PEERS], check=True)
    return py


def ensure_graph(graph: Path, scale: str) -> None:
    """``ui.npz`` / ``iu.npz`` of bench_graph's window at ``scale`` under ``graph``."""
    if (graph / "ui.npz").exists() and (graph / "iu.npz").exists():
        return
    from benchmarks.bench_graph import SCALES, WINDOW, step_window, write_days

    days = graph / "days"
    days.mkdir(parents=True, exist_ok=True)
    write_days(days, SCALES[scale], WINDOW)
    step_window(days, 0, WINDOW, graph)


# ------------------------------------------------------------------------------------------
# children (run as ``--child METHOD``): read the side's CSR, compute, write (idx, val, cnt)
# ------------------------------------------------------------------------------------------
def _normalised(z):
    import scipy.sparse as sp

    x = sp.csr_matrix((z["weights"].astype(np.float64), z["indices"], z["indptr"]),
                      shape=(len(z["indptr"]) - 1, int(z["n_cols"])))
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-300), 0.0)) @ x


def _rows_topk(c, n: int, k: int):
    """Per-row top-k (self dropped, value desc then id asc) of a scipy CSR ``c``."""
    idx = np.full((n, k), -1, np.int64)
    val = np.zeros((n, k), np.float64)
    c = c.tocsr()
    for r in range(n):
        lo, hi = c.indptr[r], c.indptr[r + 1]
        cols, vals = c.indices[lo:hi], c.data[lo:hi]
        keep = (cols != r) & (vals > 0)
        cols, vals = cols[keep], vals[keep]
        o = np.lexsort((cols, -vals))[:k]
        idx[r, :len(o)], val[r, :len(o)] = cols[o], vals[o]
    return idx, val


def child(method: str, side_file: Path, out: Path, threads: int) -> None:
    z = np.load(side_file)
    n = len(z["indptr"]) - 1
    t0 = time.perf_counter()
    if method == "project":
        import numba

        from ml_core.graph.csr import CSR
        from ml_core.graph.similarity import topk_similarity

        numba.set_num_threads(threads)
        a = CSR(z["indptr"], z["indices"], z["weights"], int(z["n_cols"]))
        res = topk_similarity(a, K, "cosine", 0)
        seconds = time.perf_counter() - t0
        idx = np.full((n, K), -1, np.int64)
        val = np.zeros((n, K), np.float64)
        deg = np.diff(res.indptr)
        rows = np.repeat(np.arange(n), deg)
        pos = np.arange(res.nnz) - np.repeat(res.indptr[:-1], deg)
        idx[rows, pos], val[rows, pos] = res.indices, res.weights
    elif method == "sparse_dot_topn":
        from sparse_dot_topn import sp_matmul_topn

        x = _normalised(z)
        c = sp_matmul_topn(x, x.T.tocsr(), top_n=K + 1, sort=True, n_threads=threads)
        seconds = time.perf_counter() - t0
        idx, val = _rows_topk(c, n, K)
    else:
        from implicit.nearest_neighbours import all_pairs_knn

        x = _normalised(z)
        c = all_pairs_knn(x.T.tocsr(), K + 1, num_threads=threads, show_progress=False)
        seconds = time.perf_counter() - t0
        idx, val = _rows_topk(c, n, K)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.savez(out, idx=idx, val=val)
    out.with_suffix(".json").write_text(json.dumps({"seconds": seconds, "peak_rss_mb": peak}))


def run_child(method: str, side_file: Path, out: Path, threads: int, peers_py: Path) -> dict:
    py = sys.executable if method == "project" else str(peers_py)
    env_threads = {"OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads),
                   "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([py, __file__, "--child", method, "--side-file", str(side_file), "--out", str(out),
                    "--threads", str(threads)], check=True, env={**os.environ, **env_threads})
    return json.loads(out.with_suffix(".json").read_text())


def agreement(ref: Path, other: Path) -> dict:
    a, b = np.load(ref), np.load(other)
    same_set = np.mean([set(x[x >= 0]) == set(y[y >= 0]) for x, y in zip(a["idx"], b["idx"])])
    same_vals = np.isclose(a["val"], b["val"], rtol=1e-6, atol=0).all(axis=1).mean()
    return {"same_neighbour_set_share": round(float(same_set), 6), "same_values_share": round(float(same_vals), 6),
            "max_value_diff": float(np.abs(a["val"] - b["val"]).max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", default="ijcai", choices=["ijcai", "small"])
    p.add_argument("--graph", type=Path, help="directory of the window graph (default: a cache under /tmp)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sides", default="item,user")
    p.add_argument("--peers-venv", type=Path, default=Path(tempfile.gettempdir()) / "moge-knn-peers-venv")
    p.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/knn_peers_<date>.json)")
    p.add_argument("--child", choices=METHODS)
    p.add_argument("--side-file", type=Path)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.side_file, args.out, args.threads)
    graph = args.graph or Path(tempfile.gettempdir()) / f"moge-knn-peers-graph-{args.scale}"
    ensure_graph(graph, args.scale)
    peers_py = ensure_peers_venv(args.peers_venv)
    report = {"benchmark": "knn_peers", "date": time.strftime("%Y-%m-%d"), "scale": args.scale, "k": K,
              "threads": args.threads, "peers": list(PEERS[:2]), "sides": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for side in args.sides.split(","):
            side_file = graph / ("iu.npz" if side == "item" else "ui.npz")
            res = {m: run_child(m, side_file, Path(tmp) / f"{side}_{m}.npz", args.threads, peers_py) for m in METHODS}
            for m in METHODS[1:]:
                res[m]["agreement_with_project"] = agreement(Path(tmp) / f"{side}_project.npz", Path(tmp) / f"{side}_{m}.npz")
            best = min(METHODS[1:], key=lambda m: res[m]["seconds"])
            res["best_peer"] = best
            res["speedup_vs_best_peer"] = round(res[best]["seconds"] / res["project"]["seconds"], 3)
            report["sides"][side] = res
            line = "  ".join(f"{m} {res[m]['seconds']:.2f} s ({res[m]['peak_rss_mb']:.0f} MB)" for m in METHODS)
            print(f"{side}-{side}: {line}  -> project / best peer ({best}): {res['speedup_vs_best_peer']:.2f}x", flush=True)
    write_report(report, args.out)


def write_report(report: dict, out: Path | None) -> None:
    """``report`` as JSON at ``out`` (default: ``benchmarks/results/<benchmark>_<date>.json``)."""
    out = out or ROOT / "benchmarks" / "results" / f"{report['benchmark']}_{report['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
