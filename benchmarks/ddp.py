"""Data-parallel training (torch DDP under torchrun) against the single-process trainer.

Every run trains the same model on the same planted-community day (tests/planted.py: the graph
carries the signal, test users are unseen) for the same epochs and the same global batch (each of
N ranks draws batch_size / N), so each run takes the same steps over the same samples; only the
number of ranks differs. Per run: samples/s of all ranks together (the
trainer's epoch throughput summed over ranks), wall seconds, the held-out day's GAUC and a hash
of the trained weights (rank 0's; DDP keeps the ranks' weights equal).

    python benchmarks/ddp.py                 # in-process, torchrun x1, torchrun x2 (gloo on CPU)
    python benchmarks/ddp.py --nproc 1 2 4   # more ranks (one core each at threads = 1)

``worker`` is the program torchrun starts (one per rank); the tests use it too
(tests/unit/train/test_distributed.py). A speed-up needs a core (or a GPU) per rank: on the
2-core CI machine, shared with other jobs, two ranks compete with each other and with the
batch-prefetch threads, so the ratio measures overhead, not scaling.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASKS = ["click", "purchase"]


def weights_sha(model) -> str:
    """sha256 of the model's state dict, tensor by tensor in key order (equal hash = equal bits)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_planted(model: str, epochs: int, batch_size: int, users: int, seed: int, device: str = "auto",
                  data_seed: int = 0) -> dict:
    """Train ``model`` on the planted train day in this process (under a process group when one is
    joined) and return rank 0's record: test-day GAUC per task and mean, throughput, weights hash."""
    from ml_core.config import TrainConfig
    from ml_core.inference import evaluate
    from ml_core.train import distributed as ddp
    from ml_core.train.trainer import train
    from tests.planted import planted_days

    train_day, test_day = planted_days(seed=data_seed, n_users=users)
    cfg = TrainConfig(model=model, epochs=epochs, batch_size=batch_size, dim=16, fanouts=[5, 3], threads=1,
                      validation="none", seed=seed, log_every_steps=0, device=device)
    t = time.perf_counter()
    res = train([train_day], cfg, TASKS)
    seconds = time.perf_counter() - t
    ranks = ddp.current()
    metrics = evaluate(res, res.feature_spec, test_day, cfg.fanouts)
    gauc = {k: round(float(metrics[k]["gauc"]), 6) for k in TASKS}
    rates = [h["samples_per_s"] for h in res.history if "samples_per_s" in h]
    return {"world": ranks.world, "distributed": ranks.active, "model": model, "epochs": epochs,
            "batch_size": batch_size,
            "batch_size_per_rank": ddp.rank_batch_size(batch_size, ranks), "samples_seen": res.samples_seen, "train_seconds": round(seconds, 2),
            "samples_per_s": round(float(sum(rates) / len(rates)), 1), "gauc": gauc,
            "mean_gauc": round(sum(gauc.values()) / len(gauc), 6), "weights_sha": weights_sha(res.model),
            "losses": [round(h["epoch_loss"], 6) for h in res.history if "epoch_loss" in h]}


def worker(args) -> None:
    """One rank: join torchrun's group (gloo / nccl), train, rank 0 writes ``--out``."""
    from ml_core.train import distributed as ddp

    ranks = ddp.init_from_env(args.backend, args.device)
    try:
        rec = train_planted(args.model, args.epochs, args.batch_size, args.users, args.seed, args.device)
        if ranks.writer:
            Path(args.out).write_text(json.dumps(rec))
    finally:
        if ranks.active:
            import torch.distributed as dist

            dist.destroy_process_group()


def torchrun(nproc: int, out: Path, model: str, epochs: int, batch_size: int, users: int, seed: int = 0,
             device: str = "auto", backend: str = "auto", timeout: float = 900) -> dict:
    """Run :func:`worker` on ``nproc`` ranks with torchrun (standalone rendezvous) and return rank 0's record.
    Each rank's output goes to its own file under ``<out>.logs/``; a failure quotes every rank's
    last lines (a rank that aborts is named with its own message, not only its peer's reset, and
    with the Python stacks of all its threads: ``PYTHONFAULTHANDLER``, for a native crash)."""
    logs = out.with_suffix(".logs")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "--log-dir", str(logs), "--redirects", "3",
           "-m", "benchmarks.ddp", "worker", "--out", str(out), "--model", model, "--epochs", str(epochs),
           "--batch-size", str(batch_size), "--users", str(users), "--seed", str(seed), "--device", device, "--backend", backend]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
                               "PYTHONFAULTHANDLER": "1"})
    if proc.returncode != 0:
        ranks = "".join(f"\n--- {f.relative_to(logs)}:\n{f.read_text(errors='replace')[-6000:]}"
                        for f in sorted(logs.rglob("std*.log")) if f.stat().st_size)
        raise RuntimeError(f"torchrun x{nproc} failed ({proc.returncode}):\n{proc.stderr[-2000:]}{ranks}")
    rec = json.loads(out.read_text())
    rec["wall_seconds_with_launch"] = round(time.perf_counter() - t, 2)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    for p in (ap, w := sub.add_parser("worker")):
        p.add_argument("--model", default="moge")
        p.add_argument("--epochs", type=int, default=3)
        p.add_argument("--batch-size", type=int, default=128)
        p.add_argument("--users", type=int, default=3000)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--backend", default="auto", help="auto: nccl when --device is CUDA, else gloo")
        p.add_argument("--device", default="auto", help="train.device (auto: CUDA when visible)")
    w.add_argument("--out", required=True)
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--json", default=str(ROOT / f"benchmarks/results/ddp_planted_cpu_{date.today():%Y%m%d}.json"))
    args = ap.parse_args()
    if args.cmd == "worker":
        return worker(args)
    import tempfile

    runs = {"in_process": train_planted(args.model, args.epochs, args.batch_size, args.users, args.seed, args.device)}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.nproc:
            runs[f"torchrun_x{n}"] = torchrun(n, Path(tmp) / f"x{n}.json", args.model, args.epochs, args.batch_size,
                                              args.users, args.seed, args.device, args.backend)
    base = runs["in_process"]
    out = {"what": "DDP (torchrun, gloo on CPU) vs the in-process trainer, planted-community day",
           "cpu_cores": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
           "settings": {k: getattr(args, k) for k in ("model", "epochs", "batch_size", "users", "seed", "device", "backend")},
           "runs": runs,
           "throughput_vs_in_process": {k: round(r["samples_per_s"] / base["samples_per_s"], 3) for k, r in runs.items()},
           "world1_weights_identical": runs.get("torchrun_x1", {}).get("weights_sha") == base["weights_sha"],
           "mean_gauc_minus_in_process": {k: round(r["mean_gauc"] - base["mean_gauc"], 4) for k, r in runs.items()}}
    Path(args.json).write_text(json.dumps(out, indent=1))
    for k, r in runs.items():
        print(f"{k:>12}: {r['samples_per_s']:>8,.0f} samples/s  mean GAUC {r['mean_gauc']:.4f}  weights {r['weights_sha']}")
    print(json.dumps({k: out[k] for k in ("throughput_vs_in_process", "world1_weights_identical",
                                          "mean_gauc_minus_in_process", "load_average_1m")}))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
