"""Serving at catalogue scale: latency of a real ``moge serve`` and the recall of its retrieval.

One server (``python -m ml_core.cli serve --retrieval N``, one torch thread) on a bundle trained
on a synthetic preset (benchmarks/serving_bundle.py builds it under ``--root`` when absent). In
the same run, over HTTP with one keep-alive client, one request at a time:

* ``/score`` with 1,000 (user, item) pairs: one user, 1,000 distinct random items of the catalogue;
* ``/recommend`` over the whole catalogue, today's exact path (``"retrieval": false``: the ranker
  scores every item the user has not seen) and the new one (the ANN index retrieves N candidates,
  the ranker orders them);
* recall@k of the retrieval path against the exact path, per sampled user: the share of the
  exact top k that the retrieval path's top k holds. The exact lists come from the server; the
  recall at other N, per candidate channel (the index alone, the prior alone, both), is
  computed in this process with the same bundle, index and ranker (``Retriever`` +
  ``Scorer.recommend``), so the N curve costs no more exact rankings;
* the CPU time (thread time) of the same work in this process, without HTTP: what a request
  costs on a core of its own, whatever the machine's load during the run; for a graph model also
  ``/score``'s work by the path before node representations (a neighbourhood sampled around the
  request's pairs and the GNN run on it, :func:`ml_core.inference.predict` with ``path="pairs"``).

Latency is wall time at the client (request to parsed response), so it includes HTTP and JSON.
Writes benchmarks/results/serving_<preset>_<model>_<date>.json.

    .venv/bin/python benchmarks/serving.py --root /tmp/serve-medium --preset medium
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serving_bundle import build  # noqa: E402 - after sys.path

from ml_core.inference import predict  # noqa: E402
from ml_core.serving.retrieval import Retriever, item_prior, recall_at_k  # noqa: E402
from ml_core.serving.scorer import Scorer  # noqa: E402
from ml_core.serving.state import settle_heap  # noqa: E402


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), **{f"p{q}_ms": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)},
            "mean_ms": round(float(ms.mean()), 2), "max_ms": round(float(ms.max()), 2)}


def timed_post(client: httpx.Client, path: str, body: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = client.post(path, json=body)
    out = r.json()
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:300]}")
    return dt, out


def start_server(root: Path, port: int, log: Path, flags: list[str]) -> subprocess.Popen:
    """``moge serve --root root`` on 127.0.0.1:``port`` with one torch thread and ``flags``, once
    its /health answers (its output in ``log``)."""
    cmd = [sys.executable, "-m", "ml_core.cli", "serve", "--root", str(root), "--port", str(port), "--threads", "1",
           "--log-level", "warning", *flags]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 1800
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moge serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError("moge serve did not become ready")
        time.sleep(0.5)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True, help="storage root with a production bundle (built when absent)")
    ap.add_argument("--preset", default="medium", choices=["small", "medium", "large"])
    ap.add_argument("--model", default="mmoe")
    ap.add_argument("--retrieval", type=int, default=500, help="N, the candidates the server retrieves (default: 500)")
    ap.add_argument("--curve", type=int, nargs="*", default=[100, 200, 500, 1000, 2000], help="N of the recall curve")
    ap.add_argument("--index", default="hnsw", choices=["hnsw", "flat"])
    ap.add_argument("--prior-users", type=int, default=8, help="the server's --prior-users (default: 8)")
    ap.add_argument("--k", type=int, default=10, help="k of /recommend and of recall@k (default: 10)")
    ap.add_argument("--users", type=int, default=50, help="sampled users: exact rankings and recall (default: 50)")
    ap.add_argument("--requests", type=int, default=300, help="/score and retrieval /recommend requests (default: 300)")
    ap.add_argument("--pairs", type=int, default=1000, help="pairs per /score request (default: 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    version = build(args.root, args.preset, args.model)
    build_s = time.perf_counter() - t0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = start_server(args.root, port, args.root / "serve.log", ["--retrieval", str(args.retrieval), "--index", args.index,
                                                                  "--prior-users", str(args.prior_users)])
    startup_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as c:
            info = c.get("/model").json()
            scorer = Scorer.from_registry(args.root, threads=1)  # the same bundle, for ids and the recall curve
            settle_heap()  # the client's own full collections (a bundle's heap) stay out of its timings
            users = rng.choice(np.asarray(scorer.graph.user_ids), size=args.users, replace=False)
            items = np.asarray(scorer.item_ids)
            for _ in range(5):  # warm-up
                timed_post(c, "/score", {"user_ids": [int(users[0])] * args.pairs,
                                         "item_ids": rng.choice(items, args.pairs, replace=False).tolist()})
                timed_post(c, "/recommend", {"user_id": int(users[0]), "k": args.k})
            score_t, rec_t = [], []
            for j in range(args.requests):
                u = int(users[j % len(users)])
                score_t.append(timed_post(c, "/score", {"user_ids": [u] * args.pairs,
                                                        "item_ids": rng.choice(items, args.pairs, replace=False).tolist()})[0])
                dt, body = timed_post(c, "/recommend", {"user_id": u, "k": args.k})
                assert body["retrieved"] and body["n_candidates"] <= args.retrieval
                rec_t.append(dt)
            exact_t, exact, served = [], {}, {}
            for u in users.tolist():
                dt, body = timed_post(c, "/recommend", {"user_id": u, "k": args.k, "retrieval": False})
                exact_t.append(dt)
                exact[u] = [x["item_id"] for x in body["items"]]
                served[u] = [x["item_id"] for x in timed_post(c, "/recommend", {"user_id": u, "k": args.k})[1]["items"]]
                assert body["n_candidates"] > args.retrieval
        served_recall = float(np.mean([recall_at_k(np.array(served[u]), np.array(exact[u]), args.k) for u in exact]))
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    # the recall curve, per channel: the index alone, the prior alone, both (what the server does)
    t0 = time.perf_counter()
    index_only = Retriever.for_scorer(scorer, args.index)
    index_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prior = item_prior(scorer, args.prior_users)
    prior_s = time.perf_counter() - t0
    channels = {"index": index_only, "prior": index_only.with_prior(prior, 1.0), "both": index_only.with_prior(prior)}
    curve = {}
    for n in sorted(set(args.curve)):
        row = {"random_candidates_share": round(n / len(items), 5)}
        for name, r in channels.items():
            rec = []
            for u in exact:
                cand = r.candidates(u, n, scorer.seen_items(u))
                top = [i for i, _ in scorer.recommend(u, args.k, candidates=cand, exclude_seen=False)]
                rec.append(recall_at_k(np.array(top), np.array(exact[u]), args.k))
            row[f"recall_at_k_{name}"] = round(float(np.mean(rec)), 4)
        curve[str(n)] = row
    # CPU time of the server's work per request, in this process (no HTTP, no JSON): the
    # latency the code would have on an unloaded core, whatever the machine's load during the run
    cpu = {"score": [], "retrieval_then_rank": [], "score_per_pair_path": []}
    both = channels["both"]
    for j in range(min(args.requests, 100)):
        u = int(users[j % len(users)])
        pick = rng.choice(items, args.pairs, replace=False)
        t0 = time.thread_time()
        scorer.score(np.full(args.pairs, u), pick)
        cpu["score"].append(time.thread_time() - t0)
        if j < 30 and scorer.needs_graph:  # the path before node representations: a subgraph sampled per request
            ctx = scorer.context(np.full(args.pairs, u), pick)
            t0 = time.thread_time()
            predict(scorer.model, ctx, scorer.fanouts, seed=j, path="pairs")
            cpu["score_per_pair_path"].append(time.thread_time() - t0)
        t0 = time.thread_time()
        scorer.recommend(u, args.k, candidates=both.candidates(u, args.retrieval, scorer.seen_items(u)), exclude_seen=False)
        cpu["retrieval_then_rank"].append(time.thread_time() - t0)

    result = {
        "benchmark": "serving", "date": time.strftime("%Y-%m-%d"), "preset": args.preset, "model": args.model,
        "version": version, "catalogue_items": int(len(items)), "snapshot_users": int(scorer.graph.n_users),
        "dim": int(scorer.model_spec.dim), "index": args.index, "retrieval_n": args.retrieval, "k": args.k,
        "cpu": {"cores": os.cpu_count(), "loadavg_1m_at_end": round(os.getloadavg()[0], 2), "server_torch_threads": 1},
        "bundle_build_s": round(build_s, 1), "server_startup_s": round(startup_s, 1),
        "index_build_s_in_process": round(index_s, 2), "prior_users": args.prior_users,
        "prior_s_in_process": round(prior_s, 2),
        "latency": {
            f"score_{args.pairs}_pairs": percentiles(score_t),
            "recommend_exact_whole_catalogue": percentiles(exact_t),
            f"recommend_retrieval_{args.retrieval}_then_rank": percentiles(rec_t),
        },
        "cpu_time_in_process": {f"score_{args.pairs}_pairs": percentiles(cpu["score"]),
                                 **({f"score_{args.pairs}_pairs_per_pair_path": percentiles(cpu["score_per_pair_path"])}
                                    if cpu["score_per_pair_path"] else {}),
                                 f"recommend_retrieval_{args.retrieval}_then_rank": percentiles(cpu["retrieval_then_rank"])},
        "targets_ms": {"score_1000_p99": 10, "recommend_p99": 30},
        "recall_at_k_served": round(served_recall, 4),
        # how personal the exact top k is: mean share of one user's top k found in another's
        "exact_top_k_overlap_between_users": round(float(np.mean(
            [len(np.intersect1d(exact[a], exact[b])) / args.k for a in exact for b in exact if a < b])), 4),
        "recall_at_k_by_n": curve,
        "server_model": {key: info.get(key) for key in ("model", "snapshot", "retrieval")},
    }
    text = json.dumps(result, indent=2)
    print(text)
    out = args.out or ROOT / "benchmarks" / "results" / f"serving_{args.preset}_{args.model}_{time.strftime('%Y%m%d')}.json"
    out.write_text(text + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
