"""Model comparison on a held-out final day, over seeds: MoGE vs MMoE, the ablations, the zoo.

The data stages of the daily flow run once per dataset on a lake under ``--root`` (logs,
bipartite + similarity graphs, node features, samples, each day from the days before it). Then
:func:`ml_core.stages.comparison.compare_days` (the code of the ``model_comparison`` asset) trains every
(variant, seed) on the ``train.train_days`` days before the evaluation day and evaluates it on
that day. Every variant gets the same days, batches, budget and learning rate; only the model,
its arguments, its trainer settings and the seed change.

Examples::

    python benchmarks/compare_models.py --dataset synthetic                 # moge vs mmoe, seeds 0 1 2
    python benchmarks/compare_models.py --dataset taobao --variants all     # every registered model + presets
    # ablations (paper sections 5.6 - 5.8): NAME=MODEL:JSON_ARGS
    python benchmarks/compare_models.py --variants moge 'moge_con=moge:{"interaction": "con"}' \\
        'moge_no_loss_terms=moge:{"weighting": "sum", "co_loss": false, "l2": 0}'

Prints the Markdown table (mean ± sample std over seeds) and writes results.json + report.md to
``<root>/<dataset>/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_core.compare import improvements, markdown_report, parse_variants
from ml_core.config import load_config
from ml_core.stages.comparison import compare_days
from ml_core.stages.data_day import run_data_day
from ml_core.stages.logs import run_interaction_logs
from ml_core.stages.windows import graph_window_days, train_window_days
from ml_core.storage import Lake

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

#: dataset -> (config overrides, evaluation day). The evaluation day is held out: the model is
#: trained on the ``train.train_days`` days before it, each scored against its own graph.
DATASETS = {
    "synthetic": (['source.kind="synthetic"', 'source.preset="small"', "source.seed=7",
                   'source.start_date="2026-01-01"', "graph.window_days=7", "train.train_days=3"],
                  "2026-01-11"),
    "synthetic_large": (['source.kind="synthetic"', 'source.preset="large"', "source.seed=7",
                         'source.start_date="2026-01-01"', "graph.window_days=7", "train.train_days=3"],
                        "2026-01-11"),
    "taobao": (['source.kind="taobao"',
                f'source.path="{SHARED / "taobao-userbehavior" / "UserBehavior_head_84475.csv"}"',
                'source.start_date="2017-11-25"', 'source.end_date="2017-12-03"',
                'source.timezone="Asia/Shanghai"', "graph.window_days=5", "train.train_days=2"],
               "2017-12-03"),
}


def prepare(cfg, lake: Lake, eval_day: str, log=print) -> list[str]:
    """Materialise the data stages the evaluation day and its training days need: the logs of
    their graph windows, then every data stage of each of those days (stored days are kept)."""
    model_days = train_window_days(cfg, eval_day) + [eval_day]
    log_days = sorted({d for m in model_days for d in graph_window_days(cfg, m)} - set(model_days))
    for d in log_days:  # all before the first model day
        if not lake.exists("interaction_logs", d):
            run_interaction_logs(cfg, lake, d)
    for d in model_days:
        if run_data_day(cfg, lake, d, only_missing=True):
            log(f"  prepared {d}")
    return model_days[:-1]


def defaults_config(root: Path, overrides: list[str]):
    """The documented defaults (ml_core/config/) + ``overrides``; no pipeline.toml is read."""
    root.mkdir(parents=True, exist_ok=True)
    empty = root / "defaults.toml"
    empty.write_text("")
    return load_config(empty, overrides)


def variant_entry(text: str):
    """``NAME`` (a registered model or preset) or ``NAME=MODEL[:JSON_ARGS][|JSON_TRAIN]`` (the
    variant's own trainer settings, e.g. ``'mmoe_no_pair=mmoe|{"pair_features": false}'``)."""
    if "=" not in text:
        return text
    name, spec = text.split("=", 1)
    spec, _, train = spec.partition("|")
    model, _, args = spec.partition(":")
    return {"name": name, "model": model, "model_args": json.loads(args) if args else {},
            "train": json.loads(train) if train else {}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="synthetic")
    ap.add_argument("--variants", nargs="+", default=["moge", "mmoe"], help="'all' = every model + preset")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--root", type=Path, default=Path("/tmp/moge_compare"))
    ap.add_argument("--set", nargs="*", default=[], help="extra config overrides, e.g. train.epochs=3")
    args = ap.parse_args(argv)
    overrides, eval_day = DATASETS[args.dataset]
    root = args.root / args.dataset
    cfg = defaults_config(root, [*overrides, f'storage.root="{root}"', *args.set])
    lake = Lake(root)
    train_days = prepare(cfg, lake, eval_day)
    variants = parse_variants([] if args.variants == ["all"] else [variant_entry(v) for v in args.variants])
    tasks = list(cfg.samples.tasks)
    out, n_eval = compare_days(cfg, lake, eval_day, train_days, variants, args.seeds,
                               log=lambda m: print(" ", m, flush=True))
    out["meta"] = {"dataset": args.dataset, "evaluation day": eval_day, "training days": ", ".join(train_days),
                   "evaluation samples": n_eval,
                   "budget": f"epochs {cfg.train.epochs}, max steps/epoch {cfg.train.max_steps_per_epoch or 'all'}, "
                             f"batch {cfg.train.batch_size}, lr {cfg.train.lr}, d {cfg.train.dim}, fanouts {cfg.train.fanouts}"}
    out["improvements"] = improvements(out["summary"], tasks)
    report = markdown_report(out, f"Model comparison: {args.dataset}")
    (root / "results.json").write_text(json.dumps(out, indent=2, default=str))
    (root / "report.md").write_text(report)
    print()
    print(report)


if __name__ == "__main__":
    main()
