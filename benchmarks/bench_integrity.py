"""Cost of the integrity check on read (``ml_core.storage.verify_dir``) on one day of a synthetic
source preset: the day's partitions are built by the data stages, then for each one the check is
timed cold (hashing every file: what the first read of a partition in a process pays), warm
(unchanged files: a listing and stats only) and next to reading the partition.

    python benchmarks/bench_integrity.py --preset medium

Prints a table and saves JSON under ``benchmarks/results/``. Wall times on a shared machine are
noisy; the page cache is warm for every number (the partition was just written).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date
from pathlib import Path

from ml_core.config import load_config
from ml_core.stages.data_day import run_data_days
from ml_core.stages.inputs import load_bipartite, load_features, load_similarity
from ml_core.stages.windows import window
from ml_core.storage import Lake, verify_dir

ASSETS = ("interaction_logs", "bipartite_graph", "user_similarity_graph", "item_similarity_graph",
          "node_features", "training_samples")


def _read(lake: Lake, asset: str, day: str) -> None:
    """What a stage does with the partition: read it whole (graphs: every array into memory)."""
    if asset == "bipartite_graph":
        g = load_bipartite(lake, day)
        _ = [a.sum() for a in (g.ui.indptr, g.ui.indices, g.ui.weights)]
    elif asset.endswith("_similarity_graph"):
        g = load_similarity(lake, day, asset.split("_")[0])
        _ = [a.sum() for a in (g.adj.indptr, g.adj.indices, g.adj.weights)]
    elif asset == "node_features":
        load_features(lake, day)
    else:
        lake.read_table(asset, day)


def _best(f, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="medium", choices=["small", "medium", "large"])
    ap.add_argument("--window-days", type=int, default=3, help="graph.window_days (default: 3)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import ml_core.integrity as integrity

    with tempfile.TemporaryDirectory() as root:
        cfg = load_config(None, [f'storage.root="{root}"', f'source.preset="{args.preset}"',
                                 f"graph.window_days={args.window_days}"])
        lake = Lake(root)
        day = window(cfg.start_date, args.window_days, args.window_days)[0]
        run_data_days(cfg, lake, window(day, -args.window_days, 0))
        rows = []
        for asset in ASSETS:
            d = lake.partition_dir(asset, day)
            mb = sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) / 2**20
            what = f"{asset} {day}"

            def cold(d=d, what=what):
                integrity._VERIFIED.clear()
                verify_dir(d, what, "")

            c = _best(cold, args.repeat)
            w = _best(lambda d=d, what=what: verify_dir(d, what, ""), args.repeat)
            r = _best(lambda a=asset: _read(lake, a, day), args.repeat)  # warm check + the read itself
            rows.append({"asset": asset, "mb": round(mb, 2), "check_cold_s": round(c, 4), "check_warm_s": round(w, 5),
                         "read_s": round(r - w, 4), "cold_check_per_read": round(c / max(r - w, 1e-9), 2)})
    print(f"preset {args.preset}, day {day}, window {args.window_days} days; best of {args.repeat}\n")
    print(f"{'partition':24s} {'MB':>8s} {'check (cold)':>13s} {'check (warm)':>13s} {'read':>9s} {'cold/read':>10s}")
    for r in rows:
        print(f"{r['asset']:24s} {r['mb']:8.2f} {r['check_cold_s']:12.4f}s {r['check_warm_s']:12.5f}s "
              f"{r['read_s']:8.4f}s {r['cold_check_per_read']:9.2f}x")
    out = Path(__file__).parent / "results" / f"integrity_{args.preset}_{date.today():%Y%m%d}.json"
    out.write_text(json.dumps({"preset": args.preset, "window_days": args.window_days, "day": day, "rows": rows},
                              indent=1))
    print(f"\nsaved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
