"""MoGE vs MMoE (and MoGE ablations): GAUC per task on a held-out final day, over seeds.

Runs the daily flow's own stage functions on a temporary lake: the data stages once per
dataset (logs, bipartite + similarity graphs, node features, samples), then for every
(variant, seed) ``run_trained_model`` on the days before the evaluation day and
``run_model_evaluation`` on that day. Every variant gets the same days, samples, batch size,
epochs and learning rate; only ``train.model`` / ``train.model_args`` / ``train.seed`` change.

Examples::

    python benchmarks/compare_moge_mmoe.py --dataset synthetic --seeds 0 1 2
    python benchmarks/compare_moge_mmoe.py --dataset taobao --seeds 0 1 2
    # ablations (section 5.6 - 5.8): NAME=MODEL or NAME=MODEL:JSON_ARGS
    python benchmarks/compare_moge_mmoe.py --variants moge moge_con='moge:{"interaction": "con"}' \\
        moge_plain_loss='moge:{"uncertainty": false, "co_loss": false, "l2": 0}'

Prints a Markdown table of mean +- std (population std over seeds) and writes every run's
metrics to ``<root>/compare_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_core import pipeline as P  # noqa: E402
from ml_core.config import load_config  # noqa: E402
from ml_core.storage import Lake  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

#: dataset -> (config overrides, evaluation day). The evaluation day is held out: the model is
#: trained on the ``train.train_days`` days before it, each scored against its own graph.
DATASETS = {
    "synthetic": (['source.kind="synthetic"', 'source.preset="small"', "source.seed=7",
                   'source.start_date="2026-01-01"', "graph.window_days=7", "train.train_days=3"],
                  "2026-01-11"),
    "taobao": (['source.kind="taobao"',
                f'source.path="{SHARED / "taobao-userbehavior" / "UserBehavior_head_84475.csv"}"',
                'source.start_date="2017-11-25"', 'source.end_date="2017-12-03"',
                'source.timezone="Asia/Shanghai"', "graph.window_days=5", "train.train_days=2"],
               "2017-12-03"),
}


def prepare(cfg, lake: Lake, eval_day: str, log=print) -> list[str]:
    """Materialise the data stages the evaluation day and its training days need."""
    model_days = P.train_window(cfg, eval_day) + [eval_day]
    log_days = sorted({d for m in model_days for d in P.graph_window(cfg, m)} | set(model_days))
    for d in log_days:
        if not lake.exists("interaction_logs", d):
            P.run_interaction_logs(cfg, lake, d)
    for d in model_days:
        if not lake.exists("training_samples", d):
            P.run_window_graphs(cfg, lake, d, P.graph_window(cfg, d))  # bipartite + both similarity graphs
            P.run_node_features(cfg, lake, d, P.graph_window(cfg, d))
            P.run_training_samples(cfg, lake, d)
            log(f"  prepared {d}")
    return model_days[:-1]


def defaults_config(root: Path, overrides: list[str]):
    """The documented defaults (ml_core/config.py) + ``overrides``; no pipeline.toml is read."""
    root.mkdir(parents=True, exist_ok=True)
    empty = root / "defaults.toml"
    empty.write_text("")
    return load_config(empty, overrides)


def parse_variant(text: str) -> tuple[str, str, dict]:
    """``NAME`` (a registered model) or ``NAME=MODEL[:JSON_ARGS]``."""
    if "=" not in text:
        return text, text, {}
    name, spec = text.split("=", 1)
    model, _, args = spec.partition(":")
    return name, model, json.loads(args) if args else {}


def run(dataset: str, variants: list[str], seeds: list[int], root: Path, extra: list[str], log=print) -> dict:
    overrides, eval_day = DATASETS[dataset]
    root = root / dataset
    base = [*overrides, f'storage.root="{root}"', *extra]
    cfg = defaults_config(root, base)
    lake = Lake(root)
    train_days = prepare(cfg, lake, eval_day, log)
    results: dict[str, list[dict]] = {}
    for text in variants:
        name, model, args = parse_variant(text)
        for seed in seeds:
            vcfg = defaults_config(root, [*base, f'train.model="{model}"', f"train.seed={seed}"])
            vcfg.train.model_args = dict(args)
            t0 = time.perf_counter()
            stats = P.run_trained_model(vcfg, lake, eval_day, train_days)
            ev = P.run_model_evaluation(vcfg, lake, eval_day)
            rec = {"seed": seed, "model": model, "model_args": args, "train_seconds": stats["seconds"],
                   "samples_seen": stats["samples_seen"],
                   "metrics": {t: {k: m[k] for k in ("gauc", "auc", "logloss", "gauc_users")}
                               for t, m in ev["candidate"].items()}}
            results.setdefault(name, []).append(rec)
            g = " ".join(f"{t}={m['gauc']:.4f}" for t, m in rec["metrics"].items())
            log(f"  {name} seed={seed}: {g} ({time.perf_counter() - t0:.0f}s)")
    out = {"dataset": dataset, "eval_day": eval_day, "train_days": train_days, "overrides": base,
           "train_config": cfg.to_dict()["train"], "runs": results}
    (root / f"compare_{dataset}.json").write_text(json.dumps(out, indent=2, default=str))
    return out


def table(out: dict) -> str:
    runs = out["runs"]
    tasks = list(next(iter(runs.values()))[0]["metrics"])
    head = "| variant | " + " | ".join(f"GAUC {t}" for t in tasks) + " | seeds | train s |"
    rows = [head, "|" + "---|" * (len(tasks) + 3)]
    for name, recs in runs.items():
        cells = []
        for t in tasks:
            g = np.array([r["metrics"][t]["gauc"] for r in recs])
            cells.append(f"{g.mean():.4f} ± {g.std():.4f}")
        secs = np.mean([r["train_seconds"] for r in recs])
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {','.join(str(r['seed']) for r in recs)} | {secs:.0f} |")
    return "\n".join(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="synthetic")
    ap.add_argument("--variants", nargs="+", default=["moge", "mmoe"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--root", type=Path, default=Path("/tmp/moge_compare"))
    ap.add_argument("--set", nargs="*", default=[], help="extra config overrides, e.g. train.epochs=3")
    args = ap.parse_args(argv)
    out = run(args.dataset, args.variants, args.seeds, args.root, args.set)
    print(f"\n{args.dataset}: train {out['train_days']} -> evaluate {out['eval_day']}")
    print(table(out))


if __name__ == "__main__":
    main()
