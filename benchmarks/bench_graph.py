"""Graph-stage benchmark: similarity graphs vs the SciPy baseline, incremental refresh vs full
rebuild, neighbour-sampler throughput -- on a synthetic power-law event log at IJCAI-15 scale.

    python benchmarks/bench_graph.py                 # --scale ijcai (about 1.1M nodes, 4.8M edges)
    python benchmarks/bench_graph.py --scale small   # a one-minute smoke run

What runs (each step in its own subprocess, so its peak RSS -- ``ru_maxrss`` -- is its own):

1. ``window``: 30 days of synthetic events (numpy, seeded: lognormal user activity, Zipf item
   popularity, repeat visits, 4 behaviours) -> the window's bipartite graph.
2. ``fast``: ``ml_core.graph.similarity.topk_similarity`` (k=10, cosine, exact) for the user graph
   (on ``ui``) and the item graph (on ``iu``).
3. ``baseline``: "scipy A@A.T + per-row top-k" (``topk_similarity_scipy`` in
   ``benchmarks/reference_graph.py``): the full sparse product in SciPy, then a per-row top-k
   of its entries. Its memory is predicted from the
   number of co-occurring pairs first; if it cannot fit in ``--mem-limit-gb`` the step is
   reported as not finishing, and both methods are compared again on the largest smaller
   synthetic graph (same generator, fewer users/items/events) where the baseline fits.
   Agreement = identical CSR arrays (bitwise) and the share of identical top-k neighbours.
4. ``full`` vs ``refresh``: ``build_window`` over the 30 days (reading them from Parquet) against
   ``refresh_window`` from the previous day's saved state + the entering and the leaving day
   (reading the state and the two days from disk), checked equal to a full rebuild of the new
   window.
5. ``sampler``: ``NeighborSampler`` on the bipartite channel (``combined()``), fan-outs [10, 5],
   batches of 1024 seeds, uniform and weighted, 1 and 2 torch threads.

Results are printed as a table and saved as JSON under ``benchmarks/results/``. Wall times on a
shared machine are noisy; CPU seconds of each step are reported next to them.
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

BASELINE_NAME = "scipy A@A.T + per-row top-k"
SCALES = {
    # users/items are pools: nodes with no event in the window are not in the graph.
    "ijcai": {"n_users": 450_000, "n_items": 900_000, "events_per_day": 250_000},
    "small": {"n_users": 30_000, "n_items": 60_000, "events_per_day": 16_000},
}
WINDOW = 30
K = 10
BEHAVIORS = np.array(["view", "cart", "fav", "buy"])


# ---------------------------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------------------------
def generate_days(n_users: int, n_items: int, events_per_day: int, n_days: int, seed: int = 0,
                  user_sigma: float = 1.8, item_alpha: float = 0.85, favourites: int = 8, repeat: float = 0.5):
    """Per day ``(user_id, item_id, behavior_code)`` arrays with power-law degrees.

    User activity is lognormal (a few heavy users, many light ones); each event is, with
    probability ``repeat``, one of the user's ``favourites`` items (repeat visits), else an item
    drawn from a Zipf(``item_alpha``) popularity. Behaviours: view 85%, cart 6%, fav 4%, buy 5%.
    Raw ids are scrambled 62-bit integers, like hashed ids.
    """
    rng = np.random.default_rng(seed)
    act = rng.lognormal(0.0, user_sigma, n_users)
    act *= events_per_day / act.sum()
    pop = (np.arange(n_items) + 10.0) ** -item_alpha
    cdf = np.cumsum(pop[rng.permutation(n_items)])
    cdf /= cdf[-1]
    fav = np.searchsorted(cdf, rng.random((n_users, favourites)))
    uid = np.unique(rng.integers(1, 2**62, n_users + 1000))[:n_users]
    iid = np.unique(rng.integers(1, 2**62, n_items + 1000))[:n_items]
    uid, iid = uid[rng.permutation(n_users)], iid[rng.permutation(n_items)]
    bcdf = np.cumsum([0.85, 0.06, 0.04, 0.05])
    for _ in range(n_days):
        n = rng.poisson(act)
        u = np.repeat(np.arange(n_users), n)
        it = np.searchsorted(cdf, rng.random(len(u)))
        rep = rng.random(len(u)) < repeat
        it[rep] = fav[u[rep], rng.integers(0, favourites, int(rep.sum()))]
        b = np.minimum(np.searchsorted(bcdf, rng.random(len(u))), 3)
        yield uid[u], iid[it], b.astype(np.int8)


def write_days(data: Path, scale: dict, n_days: int, seed: int = 0) -> list[Path]:
    import polars as pl

    paths = []
    for d, (u, i, b) in enumerate(generate_days(n_days=n_days, seed=seed, **scale)):
        p = data / f"day_{d:03d}.parquet"
        pl.DataFrame({"user_id": u, "item_id": i, "behavior": BEHAVIORS[b]}).write_parquet(p)
        paths.append(p)
    return paths


def read_days(data: Path, lo: int, hi: int):
    import polars as pl

    return pl.concat([pl.read_parquet(data / f"day_{d:03d}.parquet") for d in range(lo, hi)])


# ---------------------------------------------------------------------------------------------
# steps (run in a child process: ``--step NAME``)
# ---------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cfg():
    from ml_core.config import GraphConfig

    return GraphConfig(window_days=WINDOW, topk=K, similarity="cosine", hub_degree_cap=0)


def _timed(fn):
    c0, t0 = _cpu_s(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, _cpu_s() - c0


def _save_csr(path: Path, csr) -> None:
    np.savez(path, indptr=csr.indptr, indices=csr.indices, weights=csr.weights, n_cols=csr.n_cols)


def _load_csr(path: Path):
    from ml_core.graph.csr import CSR

    z = np.load(path)
    return CSR(z["indptr"], z["indices"], z["weights"], int(z["n_cols"]))


def step_window(data: Path, lo: int, hi: int, out: Path) -> dict:
    from ml_core.graph.bipartite import build_bipartite

    ev = read_days(data, lo, hi)
    bip, wall, cpu = _timed(lambda: build_bipartite(ev, _cfg().behavior_weights, [str(d) for d in range(lo, hi)]))
    _save_csr(out / "ui.npz", bip.ui)
    _save_csr(out / "iu.npz", bip.iu)
    np.save(out / "user_ids.npy", bip.user_ids)
    np.save(out / "item_ids.npy", bip.item_ids)
    return {"wall_s": wall, "cpu_s": cpu, "events": ev.height, "n_users": bip.n_users, "n_items": bip.n_items,
            "n_nodes": bip.n_users + bip.n_items, "n_edges": int(bip.ui.nnz)}


def step_similarity(method: str, side: str, graph: Path, out: Path) -> dict:
    from benchmarks.reference_graph import topk_similarity_scipy
    from ml_core.graph.similarity import topk_similarity
    from ml_core.graph.topk_kernel import n_threads

    a = _load_csr(graph / ("ui.npz" if side == "user" else "iu.npz"))
    base = _rss_mb()
    st: dict = {}
    if method == "fast":
        res, wall, cpu = _timed(lambda: topk_similarity(a, K, "cosine", 0, stats=st))
    else:
        res, wall, cpu = _timed(lambda: topk_similarity_scipy(a, K, "cosine"))
    _save_csr(out / f"{method}_{side}.npz", res)
    return {"wall_s": wall, "cpu_s": cpu, "base_rss_mb": base, "nnz": int(res.nnz),
            "threads": n_threads() if method == "fast" else 1,
            "candidate_pairs": st.get("candidate_pairs"), "pairs_counted": st.get("pairs_counted"),
            "share_no_similar_neighbour": st.get("share_no_similar_neighbour")}


def step_full(data: Path, lo: int, hi: int, state_out: Path | None) -> dict:
    from ml_core.graph.incremental import build_window

    def run():
        return build_window(read_days(data, lo, hi), _cfg(), [str(d) for d in range(lo, hi)])

    res, wall, cpu = _timed(run)
    out = {"wall_s": wall, "cpu_s": cpu, "user_sim_s": res.stats["user_sim"]["wall_time_s"],
           "item_sim_s": res.stats["item_sim"]["wall_time_s"], "bipartite_s": res.stats["bipartite"]["wall_time_s"]}
    if state_out is not None:
        res.save_state(state_out)
    return out


def step_refresh(data: Path, state_in: Path, enter_day: int, leave_day: int, out: Path, max_walk_share: float) -> dict:
    from ml_core.graph.incremental import WindowGraphs, refresh_window

    def run():
        prev = WindowGraphs.load_state(state_in)
        days = [str(d) for d in range(leave_day + 1, enter_day + 1)]
        t0 = time.perf_counter()
        res = refresh_window(prev, read_days(data, enter_day, enter_day + 1), read_days(data, leave_day, leave_day + 1),
                             _cfg(), days, max_walk_share=max_walk_share)
        return res, time.perf_counter() - t0

    (res, compute_s), wall, cpu = _timed(run)
    tag = f"refresh{max_walk_share:g}"
    _save_csr(out / f"{tag}_user.npz", res.user_sim.adj)
    _save_csr(out / f"{tag}_item.npz", res.item_sim.adj)
    _save_csr(out / f"{tag}_ui.npz", res.bip.ui)
    s = res.stats
    return {"wall_s": wall, "cpu_s": cpu, "compute_s": compute_s, "bipartite_s": s["bipartite"]["wall_time_s"],
            "user_sim_s": s["user_sim"]["wall_time_s"], "item_sim_s": s["item_sim"]["wall_time_s"],
            "delta_pairs": s["bipartite"]["delta_pairs"], "max_walk_share": max_walk_share,
            **{f"{side}_{key}": s[f"{side}_sim"][key] for side in ("user", "item")
               for key in ("mode", "estimated_walk_share", "rows_changed", "rows_buffer_short", "rows_kept",
                           "emitted_candidates", "walk_cost_share", "phase_s")}}


def step_sampler(graph: Path, threads: int, seconds: float = 6.0) -> dict:
    import torch

    from ml_core.graph.csr import BipartiteGraph
    from ml_core.graph.sampler import NeighborSampler

    torch.set_num_threads(threads)
    ui = _load_csr(graph / "ui.npz")
    bip = BipartiteGraph(np.load(graph / "user_ids.npy"), np.load(graph / "item_ids.npy"), ui)
    comb = bip.combined()
    out = {}
    for weighted in (False, True):
        s = NeighborSampler(comb, [10, 5], weighted=weighted)
        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(comb.n_rows, generator=g)
        s.sample(perm[:1024], g)
        n = e = b = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            lo = (b * 1024) % (comb.n_rows - 1024)
            sub = s.sample(perm[lo:lo + 1024], g)
            n += 1024
            e += sub.edge_index.shape[1]
            b += 1
        dt = time.perf_counter() - t0
        out["weighted" if weighted else "uniform"] = {"seeds_per_s": n / dt, "edges_per_batch": e / b, "batches": b}
    return out


def child_main(args) -> None:
    if args.mem_limit_gb:
        lim = int(args.mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    p = json.loads(args.params)
    name = args.step
    t0 = time.perf_counter()
    try:
        if name == "window":
            res = step_window(Path(p["data"]), p["lo"], p["hi"], Path(p["out"]))
        elif name == "similarity":
            res = step_similarity(p["method"], p["side"], Path(p["graph"]), Path(p["out"]))
        elif name == "full":
            res = step_full(Path(p["data"]), p["lo"], p["hi"], Path(p["state"]) if p.get("state") else None)
        elif name == "refresh":
            res = step_refresh(Path(p["data"]), Path(p["state"]), p["enter"], p["leave"], Path(p["out"]),
                               p["max_walk_share"])
        elif name == "sampler":
            res = step_sampler(Path(p["graph"]), p["threads"])
        else:
            raise SystemExit(f"unknown step {name}")
        res["ok"] = True
    except MemoryError:
        res = {"ok": False, "error": "MemoryError"}
    res["peak_rss_mb"] = _peak_mb()
    res["step_total_s"] = time.perf_counter() - t0
    print("@@RESULT@@" + json.dumps(res, default=float))


def run_step(name: str, mem_limit_gb: float = 0.0, **params) -> dict:
    cmd = [sys.executable, __file__, "--step", name, "--params", json.dumps(params, default=str)]
    if mem_limit_gb:
        cmd += ["--mem-limit-gb", str(mem_limit_gb)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    for line in p.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@"):])
    return {"ok": False, "error": (p.stderr or p.stdout)[-2000:], "returncode": p.returncode}


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def compare(fast_path: Path, other_path: Path) -> dict:
    a, b = _load_csr(fast_path), _load_csr(other_path)
    identical = (np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
                 and np.array_equal(a.weights, b.weights))
    hit = tot = 0
    ra, rb = a.row_of_entries(), b.row_of_entries()
    ka = set(zip(ra.tolist(), a.indices.tolist())) if not identical else None
    if identical:
        hit = tot = int(b.nnz)
    else:
        kb = list(zip(rb.tolist(), b.indices.tolist()))
        tot = len(kb)
        hit = sum(1 for x in kb if x in ka)
    return {"identical": bool(identical), "topk_agreement": (hit / tot) if tot else 1.0}


def baseline_mem_estimate_gb(candidate_pairs: int, n_rows: int) -> float:
    """Memory of the SciPy product S = A @ A.T: indices (int32, or int64 past 2^31 entries) +
    float64 values + indptr, plus about 1 GB for the per-row top-k pass."""
    nnz = candidate_pairs + n_rows  # + the diagonal
    per = 12 if nnz < 2**31 else 16
    return (nnz * per + 8 * n_rows) / 2**30 + 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="ijcai")
    ap.add_argument("--mem-limit-gb", type=float, default=14.0, help="memory the baseline may use")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--workdir", default=None, help="keep generated data here (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--params", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        return child_main(args)

    scale = SCALES[args.scale]
    tmp = tempfile.TemporaryDirectory(prefix="bench_graph_") if args.workdir is None else None
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"scale": args.scale, "params": scale, "window_days": WINDOW, "k": K, "baseline": BASELINE_NAME,
                     "machine": {"cpus": os.cpu_count()}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def log(msg):
        print(msg, flush=True)

    # 1. data + window graph -------------------------------------------------------------------
    data = work / "days"
    data.mkdir(exist_ok=True)
    if not (data / f"day_{WINDOW:03d}.parquet").exists():
        t0 = time.perf_counter()
        write_days(data, scale, WINDOW + 1, seed=args.seed)
        log(f"generated {WINDOW + 1} days of events in {time.perf_counter() - t0:.1f}s")
    graph = work / "graph"
    graph.mkdir(exist_ok=True)
    win = run_step("window", data=data, lo=0, hi=WINDOW, out=graph)
    results["window"] = win
    log(f"window graph: {win['n_nodes']:,} nodes ({win['n_users']:,} users, {win['n_items']:,} items), "
        f"{win['n_edges']:,} edges, {win['events']:,} events")

    # 2./3. similarity: fast vs baseline -------------------------------------------------------
    sim: dict = {}
    for side in ("user", "item"):
        f = run_step("similarity", method="fast", side=side, graph=graph, out=graph)
        log(f"fast {side}: {f.get('wall_s', float('nan')):.2f}s, peak {f['peak_rss_mb']:.0f} MB")
        n_rows = win["n_users"] if side == "user" else win["n_items"]
        est = baseline_mem_estimate_gb(f["candidate_pairs"], n_rows)
        entry = {"fast": f, "baseline_mem_estimate_gb": est}
        if est > args.mem_limit_gb:
            entry["baseline"] = {"ok": False, "error": f"cannot finish within {args.mem_limit_gb:g} GB: "
                                 f"A@A.T has {f['candidate_pairs'] + n_rows:,} entries (~{est:.1f} GB)"}
        else:
            entry["baseline"] = run_step("similarity", mem_limit_gb=args.mem_limit_gb + 2, method="baseline",
                                         side=side, graph=graph, out=graph)
            if entry["baseline"].get("ok"):
                entry["agreement"] = compare(graph / f"fast_{side}.npz", graph / f"baseline_{side}.npz")
        b = entry["baseline"]
        log(f"baseline {side}: " + (f"{b['wall_s']:.2f}s, peak {b['peak_rss_mb']:.0f} MB" if b.get("ok") else b["error"][:200]))
        sim[side] = entry
    results["similarity"] = sim

    # the largest smaller graph on which the baseline finishes (for sides that did not)
    failed = [s for s in ("user", "item") if not sim[s]["baseline"].get("ok")]
    if failed:
        reduced: dict = {}
        for frac in (0.7, 0.5, 0.35, 0.25, 0.15):
            sub_scale = {k: int(v * frac) for k, v in scale.items()}
            rdir = work / f"reduced_{frac}"
            (rdir / "days").mkdir(parents=True, exist_ok=True)
            if not (rdir / "days" / f"day_{WINDOW - 1:03d}.parquet").exists():
                write_days(rdir / "days", sub_scale, WINDOW, seed=args.seed)
            rg = rdir / "graph"
            rg.mkdir(exist_ok=True)
            rwin = run_step("window", data=rdir / "days", lo=0, hi=WINDOW, out=rg)
            ok = True
            entries = {}
            for side in failed:
                f = run_step("similarity", method="fast", side=side, graph=rg, out=rg)
                n_rows = rwin["n_users"] if side == "user" else rwin["n_items"]
                est = baseline_mem_estimate_gb(f["candidate_pairs"], n_rows)
                if est > args.mem_limit_gb:
                    ok = False
                    log(f"  reduced x{frac}: {side} baseline would need ~{est:.1f} GB, trying smaller")
                    break
                b = run_step("similarity", mem_limit_gb=args.mem_limit_gb + 2, method="baseline", side=side, graph=rg, out=rg)
                if not b.get("ok"):
                    ok = False
                    log(f"  reduced x{frac}: {side} baseline failed: {b.get('error', '')[:200]}")
                    break
                entries[side] = {"fast": f, "baseline": b, "baseline_mem_estimate_gb": est,
                                 "agreement": compare(rg / f"fast_{side}.npz", rg / f"baseline_{side}.npz")}
            if ok:
                reduced = {"fraction": frac, "window": rwin, **entries}
                log(f"reduced graph x{frac}: {rwin['n_nodes']:,} nodes, {rwin['n_edges']:,} edges: baseline finishes")
                break
        results["similarity_reduced"] = reduced

    # 4. incremental refresh vs full rebuild -----------------------------------------------------
    state = work / "state_day29"
    full0 = run_step("full", data=data, lo=0, hi=WINDOW, state=state)
    full1 = run_step("full", data=data, lo=1, hi=WINDOW + 1, state=work / "state_day30")
    inc = {"full_rebuild": full1, "full_rebuild_prev_day": full0}
    # "auto" = the default (each similarity graph re-walks only if that is under half the work);
    # "incremental" forces the incremental similarity path to show what it costs.
    for label, share in (("refresh_auto", 0.5), ("refresh_incremental", 1.0)):
        ref = run_step("refresh", data=data, state=state, enter=WINDOW, leave=0, out=graph, max_walk_share=share)
        inc[label] = ref
        if ref.get("ok") and full1.get("ok"):
            from ml_core.graph.incremental import WindowGraphs

            nxt = WindowGraphs.load_state(work / "state_day30")
            tag = f"refresh{share:g}"
            eq = {}
            for name, suffix, csr in (("bipartite", "ui", nxt.bip.ui), ("user_sim", "user", nxt.user_sim.adj),
                                      ("item_sim", "item", nxt.item_sim.adj)):
                other = _load_csr(graph / f"{tag}_{suffix}.npz")
                eq[name] = bool(np.array_equal(csr.indptr, other.indptr) and np.array_equal(csr.indices, other.indices)
                                and np.array_equal(csr.weights, other.weights))
            ref["identical_to_full_rebuild"] = eq
            ref["time_ratio"] = ref["wall_s"] / full1["wall_s"]
            ref["cpu_ratio"] = ref["cpu_s"] / full1["cpu_s"]
        log(f"{label}: " + (f"{ref['wall_s']:.1f}s vs full {full1['wall_s']:.1f}s" if ref.get("ok") else str(ref)[:300]))
    results["incremental"] = inc

    # 5. sampler -------------------------------------------------------------------------------
    results["sampler"] = {f"threads_{t}": run_step("sampler", graph=graph, threads=t) for t in (1, 2)}

    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_graph_{args.scale}_{time.strftime('%Y%m%d_%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=float))
    print_report(results)
    print(f"\nresults: {path}")
    if tmp is not None:
        tmp.cleanup()


def _fmt_pair(f: dict, b: dict) -> list[str]:
    rows = []
    if b.get("ok"):
        rows.append(f"  time    fast {f['wall_s']:8.2f} s  (cpu {f['cpu_s']:7.1f} s, {f['threads']} threads) | "
                    f"baseline {b['wall_s']:8.2f} s  (cpu {b['cpu_s']:7.1f} s, 1 thread) | "
                    f"speed-up {b['wall_s'] / f['wall_s']:.1f}x wall, {b['cpu_s'] / f['cpu_s']:.1f}x cpu")
        rows.append(f"  memory  fast {f['peak_rss_mb']:8.0f} MB peak (+{f['peak_rss_mb'] - f['base_rss_mb']:.0f} over input) | "
                    f"baseline {b['peak_rss_mb']:8.0f} MB peak (+{b['peak_rss_mb'] - b['base_rss_mb']:.0f}) | "
                    f"ratio {f['peak_rss_mb'] / b['peak_rss_mb']:.3f} of baseline peak")
    else:
        rows.append(f"  time    fast {f['wall_s']:8.2f} s  (cpu {f['cpu_s']:.1f} s)  peak {f['peak_rss_mb']:.0f} MB | "
                    f"baseline: {b.get('error', '')[:160]}")
    return rows


def print_report(r: dict) -> None:
    w = r["window"]
    print("\n" + "=" * 100)
    print(f"graph stage benchmark, scale={r['scale']}: {w['n_nodes']:,} nodes ({w['n_users']:,} users + "
          f"{w['n_items']:,} items), {w['n_edges']:,} edges, {w['events']:,} events over {r['window_days']} days")
    print(f"similarity: top-{r['k']} cosine, exact; baseline = {r['baseline']}")
    for side in ("user", "item"):
        e = r["similarity"][side]
        print(f"- {side}-{side} graph ({e['fast']['candidate_pairs']:,} co-occurring pairs, "
              f"{e['fast']['pairs_counted']:,} multiply-adds)")
        for line in _fmt_pair(e["fast"], e["baseline"]):
            print(line)
        if "agreement" in e:
            a = e["agreement"]
            print(f"  agreement: identical arrays = {a['identical']}, top-k agreement = {a['topk_agreement']:.6f}")
    red = r.get("similarity_reduced")
    if red:
        rw = red["window"]
        print(f"- largest graph where the baseline finishes: x{red['fraction']} generator scale = {rw['n_nodes']:,} nodes, "
              f"{rw['n_edges']:,} edges")
        for side in ("user", "item"):
            if side in red:
                print(f"  {side}-{side} ({red[side]['fast']['candidate_pairs']:,} pairs):")
                for line in _fmt_pair(red[side]["fast"], red[side]["baseline"]):
                    print("  " + line)
                a = red[side]["agreement"]
                print(f"    agreement: identical arrays = {a['identical']}, top-k agreement = {a['topk_agreement']:.6f}")
    inc = r["incremental"]
    f = inc["full_rebuild"]
    print(f"- daily refresh, {r['window_days']}-day window (one day enters, one leaves):")
    if f.get("ok"):
        print(f"  full rebuild      {f['wall_s']:7.2f} s (cpu {f['cpu_s']:6.1f}; bipartite {f['bipartite_s']:.1f}, user sim "
              f"{f['user_sim_s']:.1f}, item sim {f['item_sim_s']:.1f}), peak {f['peak_rss_mb']:.0f} MB")
    for label in ("refresh_auto", "refresh_incremental"):
        ref = inc.get(label, {})
        if not (ref.get("ok") and f.get("ok")):
            print(f"  {label}: failed {str(ref.get('error', ''))[:200]}")
            continue
        print(f"  {label:<17} {ref['wall_s']:7.2f} s (cpu {ref['cpu_s']:6.1f}; incl. state load; bipartite "
              f"{ref['bipartite_s']:.1f}, user sim {ref['user_sim_s']:.1f} [{ref['user_mode']}], item sim "
              f"{ref['item_sim_s']:.1f} [{ref['item_mode']}]), peak {ref['peak_rss_mb']:.0f} MB")
        print(f"    = {ref['time_ratio']:.3f} of the full rebuild's time (cpu {ref['cpu_ratio']:.3f}); identical to a "
              f"full rebuild: {ref['identical_to_full_rebuild']}")
    ref = inc.get("refresh_incremental", {})
    if ref.get("ok"):
        for side in ("user", "item"):
            print(f"  {side} graph: rows changed {ref[f'{side}_rows_changed']:,}, re-walked for a short buffer "
                  f"{ref[f'{side}_rows_buffer_short']:,}, kept {ref[f'{side}_rows_kept']:,}; share of the full build's "
                  f"work to re-do: {ref[f'{side}_estimated_walk_share']:.3f}")
    print("- sampler (bipartite channel, fan-outs [10, 5], 1024 seeds per batch):")
    for t, s in r["sampler"].items():
        if s.get("ok"):
            print(f"  {t}: uniform {s['uniform']['seeds_per_s']:,.0f} seeds/s, weighted {s['weighted']['seeds_per_s']:,.0f} "
                  f"seeds/s ({s['uniform']['edges_per_batch']:,.0f} edges per batch)")
        else:
            print(f"  {t}: failed {s.get('error', '')[:200]}")
    print("=" * 100)


if __name__ == "__main__":
    main()
