"""Inference from node representations vs the per-pair sampled path, and one daily-flow day.

One synthetic preset per run (``--preset small|medium|large``; ``large`` is IJCAI-15 scale), the
demo's configuration (``data/pipeline.toml``: MoGE, 200 steps of 256 samples, T = 3, W = 7)
otherwise, days 2026-01-01 .. 2026-01-08 (``make run``'s range; D = the last day):

1. **Setup** (not timed): the data stages of the days before D, and, with ``--reference``, day
   D-1's model trained, evaluated and published as production (so day D's deployment scores one
   reference model, as on the demo's later days).
2. **One daily-flow day** D, each stage timed: interaction_logs, graphs (bipartite +
   similarity), node_features, training_samples, trained_model, model_evaluation, deployed_model
   (the stages as the assets call them).
3. **Evaluation paths on day D** (the baseline, named ``pairs``, measured in the same run):
   trained_model[D] scores day D's samples by the per-pair path (per batch of 2048, a seeded
   neighbourhood sampled around the batch's pairs, the GNN run on it: what evaluation did before)
   and by the node path (every node encoded once layer-wise over the day, pairs scored from the
   representations) with every neighbour (``nodes_full``, the default) and with a seeded sample
   at the model's fan-outs (``nodes_sampled``). Reported: seconds, GAUC per task, the GAUC
   difference to ``pairs`` with a paired bootstrap interval over users, and speed-up ratios.
   The node paths run before and after the per-pair path; their time is the faster run.
4. **The bundle's node representations**: trained_model[D] assembled into a deployed bundle
   (:func:`~ml_core.stages.deployment.assemble_bundle`): ``node_reps.npz``'s manifest entry,
   size and the time to write it.

Timings are wall-clock on whatever else the machine runs: the script records the load average
before and after. Writes ``benchmarks/results/node_reps_<preset>_<date>.json``.

    python benchmarks/node_reps.py --preset medium --reference
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_core.config import load_config
from ml_core.eval.bootstrap import gauc_difference
from ml_core.inference import score_day
from ml_core.registry.bundles import BundleStore, load_model, read_manifest
from ml_core.stages.deployment import assemble_bundle, run_deployed_model
from ml_core.stages.evaluation import run_model_evaluation
from ml_core.stages.features import run_node_features
from ml_core.stages.graphs import run_window_graphs
from ml_core.stages.inputs import load_day_inputs
from ml_core.stages.logs import run_interaction_logs
from ml_core.stages.samples import run_training_samples
from ml_core.stages.training import run_trained_model
from ml_core.stages.windows import derived_start, graph_window_days, model_start, train_window_days
from ml_core.storage import Lake

START = date(2026, 1, 1)
N_DAYS = 8  # make run's range


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def data_stages(cfg, lake: Lake, day: str, stages: dict | None = None) -> None:
    """The data stages of ``day`` in order (as :func:`ml_core.stages.data_day.run_data_day`),
    each timed into ``stages`` when given."""
    days = graph_window_days(cfg, day)
    steps = [("interaction_logs", run_interaction_logs, (cfg, lake, day)),
             ("graphs", run_window_graphs, (cfg, lake, day, days)),
             ("node_features", run_node_features, (cfg, lake, day, days)),
             ("training_samples", run_training_samples, (cfg, lake, day))]
    for name, fn, args in steps:
        _, s = timed(fn, *args)
        if stages is not None:
            stages[name] = round(s, 2)


def publish(cfg, lake: Lake, day: str, metrics: dict) -> str:
    """trained_model[day] published as production without the gate (a reference for the next day)."""
    version = f"{day}-{lake.version('trained_model', day)[:10]}"
    store = BundleStore(lake.root)
    with tempfile.TemporaryDirectory(dir=lake.root) as tmp:
        assemble_bundle(lake, day, Path(tmp) / "bundle", version, metrics)
        store.publish(Path(tmp) / "bundle", version)
    store.set_production(version, {"partition": day, "metrics": metrics})
    return version


def gaucs(metrics: dict) -> dict:
    return {task: round(m["gauc"], 5) for task, m in metrics.items()}


def compare_paths(lake: Lake, day: str) -> dict:
    model, fspec, mspec, _ = load_model(lake.partition_dir("trained_model", day))
    inputs = load_day_inputs(lake, day)
    fan = list(mspec.fanouts)
    runs = {"nodes_full": dict(path="nodes"), "nodes_sampled": dict(path="nodes", encode_fanouts=fan),
            "pairs": dict(path="pairs")}
    order = ["nodes_full", "nodes_sampled", "pairs", "nodes_full", "nodes_sampled"]
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    scored = {}
    for name in order:
        scored[name], s = timed(score_day, model, fspec, inputs, fan, seed=0, **runs[name])
        seconds[name].append(round(s, 2))
        print(f"  {name}: {s:.1f} s, GAUC {gaucs(scored[name].metrics)}", flush=True)
    base = scored["pairs"]
    out = {"samples": int(len(base.users)), "users": int(len(np.unique(base.users))), "fanouts": fan,
           "baseline": "pairs"}
    for name in runs:
        r = scored[name]
        entry = {"seconds": min(seconds[name]), "all_seconds": seconds[name], "gauc": gaucs(r.metrics)}
        if name != "pairs":
            entry["speedup_vs_pairs"] = round(min(seconds["pairs"]) / min(seconds[name]), 2)
            entry["mean_abs_prob_diff_vs_pairs"] = float(np.abs(r.probs - base.probs).mean())
            entry["gauc_diff_vs_pairs"] = {}
            for k, task in enumerate(fspec.tasks):
                d = gauc_difference(base.users, base.labels[:, k], r.probs[:, k], base.probs[:, k], n_boot=200)
                entry["gauc_diff_vs_pairs"][task] = {x: round(float(d[x]), 5) for x in ("diff", "low", "high")}
        out[name] = entry
    return out


def bundle_reps(cfg, lake: Lake, day: str) -> dict:
    with tempfile.TemporaryDirectory(dir=lake.root) as tmp:
        target = Path(tmp) / "bundle"
        _, s = timed(assemble_bundle, lake, day, target, f"{day}-bench", {})
        entry = read_manifest(target)["node_reps"]
        context = sum(f.stat().st_size for f in (target / "context").rglob("*") if f.is_file())
        model = (target / "model.pt").stat().st_size
    return {"manifest_entry": entry, "assemble_seconds": round(s, 2), "node_reps_mib": round(entry["bytes"] / 2**20, 1),
            "context_snapshot_mib": round(context / 2**20, 1), "model_pt_mib": round(model / 2**20, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="medium", choices=["small", "medium", "large"])
    ap.add_argument("--root", default=None, help="lake directory (default: a fresh temporary one)")
    ap.add_argument("--reference", action="store_true", help="publish day D-1's model first (day D then scores it)")
    ap.add_argument("--day-only", action="store_true", help="only the daily-flow day (no path comparison, no bundle)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix=f"node-reps-{args.preset}-"))
    cfg = load_config(None, [f'source.preset="{args.preset}"', f'storage.root="{root}"',
                             f'source.start_date="{START.isoformat()}"'])
    lake = Lake(root)
    days = [(START + timedelta(days=k)).isoformat() for k in range(N_DAYS)]
    day = days[-1]
    # data stages from the first day with graphs on: D's training window (and, with --reference,
    # D-1's, which starts a day earlier) reads their samples; the days before: logs only
    first_data = derived_start(cfg).isoformat() if args.reference else model_start(cfg).isoformat()
    load = [os.getloadavg()[0]]
    t0 = time.perf_counter()
    for d in days[:-1]:
        if d < first_data:  # logs only: the graphs of the later days read them
            run_interaction_logs(cfg, lake, d)
        else:
            data_stages(cfg, lake, d)
    reference = None
    if args.reference:
        prev = days[-2]
        run_trained_model(cfg, lake, prev, train_window_days(cfg, prev))
        ev = run_model_evaluation(cfg, lake, prev)
        reference = publish(cfg, lake, prev, ev.candidate)
    setup_s = time.perf_counter() - t0
    print(f"setup {setup_s:.0f} s; day {day}", flush=True)
    stages: dict[str, float] = {}
    data_stages(cfg, lake, day, stages)
    log = lambda line: print(f"    {line}", flush=True)  # the stages' own progress lines (what takes the time)
    _, stages["trained_model"] = timed(run_trained_model, cfg, lake, day, train_window_days(cfg, day), log=log)
    _, stages["model_evaluation"] = timed(run_model_evaluation, cfg, lake, day, log=log)
    decision, stages["deployed_model"] = timed(run_deployed_model, cfg, lake, day, log=log)
    stages = {k: round(v, 2) for k, v in stages.items()}
    print(f"daily flow: {stages} total {sum(stages.values()):.0f} s", flush=True)
    paths = None if args.day_only else compare_paths(lake, day)
    bundle = None if args.day_only else bundle_reps(cfg, lake, day)
    load.append(os.getloadavg()[0])
    graph = load_day_inputs(lake, day)
    result = {
        "preset": args.preset, "day": day, "model": cfg.train.model, "train_steps": cfg.train.max_steps_per_epoch,
        "batch_size": cfg.train.batch_size, "reference": reference, "promoted": decision.promoted,
        "graph": {"users": graph.graph.n_users, "items": graph.graph.n_items, "ui_edges": graph.graph.ui.nnz},
        "daily_flow_seconds": stages, "daily_flow_total_seconds": round(sum(stages.values()), 1),
        "evaluation_paths": paths, "bundle": bundle, "setup_seconds": round(setup_s, 1),
        "load_average_1min": load, "cpus": os.cpu_count(),
        "note": "wall-clock; the load average before and after says whether anything else ran; ratios are from the same run",
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"node_reps_{args.preset}_{date.today():%Y%m%d}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: result[k] for k in ("daily_flow_seconds", "evaluation_paths", "bundle")}, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
