"""Warm-started vs from-scratch daily models over consecutive evaluation days.

For each dataset the data stages run once over the whole range (``--root``/<dataset>/data).
Then, for each model (``--variants``) and each mode, the daily model chain runs day after day as
the ``trained_model`` asset does: ``warm`` starts day D's training from trained_model[D-1]
(``train.warm_start = "previous"``, every model day from the first one, so the chain has seen all
of history), ``scratch`` trains day D from scratch (``train.warm_start = "none"``, evaluation days
only). Every model is evaluated on its day D (a day neither it nor its graphs saw) as
``model_evaluation`` does, and the sanity and CF scorers on the same samples.

Pooled over the evaluation days, GAUC groups are (user, day) pairs; the paired bootstrap over
those groups gives the intervals of warm - scratch per model, of each model minus the best rule
(sanity or CF scorer) per task, and of the ``--ablations`` pairs (e.g. ``moge,moge_no_pair``).
``--config data/configs/X.toml`` reads any shipped log; ``--modes warm`` runs the daily chain only.

    python benchmarks/history_report.py --dataset synthetic --eval-days 14
    python benchmarks/history_report.py --dataset taobao            # the excerpt has 9 days: 6 evaluation days

Writes ``benchmarks/results/history_<dataset>_<budget>[_<tag>]_<date>.json`` and prints the Markdown report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml_core.cf import cf_scores
from ml_core.config import load_config
from ml_core.eval.bootstrap import gauc_difference
from ml_core.eval.metrics import gauc
from ml_core.sanity import sanity_scores
from ml_core.stages.data_day import run_data_days
from ml_core.stages.evaluation import SCORES_FILE, run_model_evaluation
from ml_core.stages.inputs import load_day_inputs
from ml_core.stages.training import run_trained_model
from ml_core.stages.windows import model_start, train_window_days
from ml_core.storage import Lake

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA_ASSETS = ("interaction_logs", "bipartite_graph", "user_similarity_graph", "item_similarity_graph",
               "node_features", "training_samples")
#: dataset -> (config overrides, last day). The demo's settings otherwise (data/pipeline.toml).
DATASETS = {
    "synthetic": (['source.kind="synthetic"', 'source.preset="small"', "source.seed=7",
                   'source.start_date="2026-01-01"'], "2026-01-24"),
    "taobao": (['source.kind="taobao"', f'source.path="{SHARED / "taobao-userbehavior" / "UserBehavior_head_84475.csv"}"',
                'source.start_date="2017-11-25"', 'source.end_date="2017-12-03"', 'source.timezone="Asia/Shanghai"'],
               "2017-12-03"),
}
#: The training budget: the demo's (data/pipeline.toml) or the defaults with early stopping.
BUDGETS = {
    "demo": ["train.epochs=1", "train.max_steps_per_epoch=200", 'train.validation="none"'],
    "full": [],
}


def days_between(first: str, last: str) -> list[str]:
    a, b = date.fromisoformat(first), date.fromisoformat(last)
    return [(a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def model_lake(root: Path, data: Lake) -> Lake:
    """A lake of its own for one (model, mode) chain whose data assets are the shared ones."""
    (root / "lake").mkdir(parents=True, exist_ok=True)
    for asset in DATA_ASSETS:
        link = root / "lake" / asset
        if not link.exists():
            link.symlink_to((data.root / "lake" / asset).resolve(), target_is_directory=True)
    return Lake(root)


def variant_config(config: Path | None, cfg_base: list[str], root: Path, variant, mode: str):
    """The configuration of one (variant, mode) chain: ``variant`` a model name or a
    :func:`benchmarks.compare_models.variant_entry` table (model, model_args, trainer settings)."""
    import dataclasses

    entry = variant if isinstance(variant, dict) else {"name": variant, "model": variant}
    cfg = load_config(config, [*cfg_base, f'storage.root="{root}"',
                               f'train.warm_start="{"previous" if mode == "warm" else "none"}"'])
    # the config's model_args belong to its train.model: a variant of that model starts from them
    own = dict(cfg.train.model_args) if entry["model"] == cfg.train.model else {}
    cfg.train = dataclasses.replace(cfg.train, model=entry["model"], model_args={**own, **entry.get("model_args", {})},
                                    **entry.get("train", {}))
    return cfg


def variant_name(variant) -> str:
    return variant["name"] if isinstance(variant, dict) else variant


def run_chain(config: Path | None, cfg_base: list[str], root: Path, data: Lake, variant, mode: str,
              eval_days: list[str], model_days: list[str], log=print) -> dict:
    lake = model_lake(root / f"{variant_name(variant)}-{mode}", data)
    cfg = variant_config(config, cfg_base, lake.root, variant, mode)
    variant = variant_name(variant)
    out = {"seconds": 0.0, "days": {}}
    for day in (model_days if mode == "warm" else eval_days):
        if not lake.exists("trained_model", day):
            t = time.perf_counter()
            res = run_trained_model(cfg, lake, day, train_window_days(cfg, day))
            out["seconds"] += time.perf_counter() - t
            log(f"  {variant}/{mode} {day}: trained ({res.init.get('mode')}, {res.seconds:.0f}s)")
        if day in eval_days and not lake.exists("model_evaluation", day):
            ev = run_model_evaluation(cfg, lake, day)
            log(f"  {variant}/{mode} {day}: GAUC " + ", ".join(f"{t} {m['gauc']:.4f}" for t, m in ev.candidate.items()))
    for day in eval_days:
        with np.load(lake.partition_dir("model_evaluation", day) / SCORES_FILE) as z:
            out["days"][day] = {"users": z["users"], "labels": z["labels"], "probs": z["probs"]}
    return out


def pooled(eval_days, per_day) -> tuple[np.ndarray, np.ndarray]:
    """(groups, labels) over the evaluation days: one group per (day, user)."""
    groups, labels, offset = [], [], 0
    for day in eval_days:
        users = per_day[day]["users"]
        _, inv = np.unique(users, return_inverse=True)
        groups.append(inv + offset)
        offset += int(inv.max()) + 1 if len(inv) else 0
        labels.append(per_day[day]["labels"])
    return np.concatenate(groups), np.concatenate(labels)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="synthetic")
    ap.add_argument("--config", type=Path, help="a config file (e.g. data/configs/cikm2019.toml) instead of --dataset: "
                                                "its source and windows, the range up to source.end_date")
    ap.add_argument("--variants", nargs="+", default=["moge", "mmoe"],
                    help="model names or NAME=MODEL[:JSON_ARGS][|JSON_TRAIN] (benchmarks/compare_models.py)")
    ap.add_argument("--modes", nargs="+", choices=["warm", "scratch"], default=["warm", "scratch"])
    ap.add_argument("--ablations", nargs="*", default=[], type=lambda s: tuple(s.split(",")),
                    help="A,B pairs of variant names: the paired difference A - B per task, e.g. moge,moge_no_pair")
    ap.add_argument("--eval-days", type=int, default=14, help="the last N days of the range (fewer if it is short)")
    ap.add_argument("--chain-days", type=int, default=0,
                    help="start the warm chain this many model days before the first evaluation day (its first "
                         "model from scratch); 0: on the first model day (a long log's chain is then long)")
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="demo")
    ap.add_argument("--root", default="/tmp/moge-history")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--tag", default="", help="appended to the results file's name (history_<dataset>_<budget>_<tag>_<date>.json), "
                                              "so a second report of a log on the same day keeps the first")
    args = ap.parse_args(argv)

    from benchmarks.compare_models import variant_entry

    overrides, last = DATASETS[args.dataset] if args.config is None else ([], "")
    dataset = args.dataset if args.config is None else args.config.stem
    root = Path(args.root) / dataset / args.budget
    data = Lake(root / "data")
    base = [*overrides, *BUDGETS[args.budget]]
    cfg = load_config(args.config, [*base, f'storage.root="{data.root}"'])
    last = last or cfg.source.end_date
    variants = [variant_entry(v) for v in args.variants]
    names = [variant_name(v) for v in variants]
    all_days = days_between(cfg.source.start_date, last)
    model_days = days_between(model_start(cfg).isoformat(), last)
    eval_days = model_days[-args.eval_days:]
    if args.chain_days:
        model_days = model_days[max(0, len(model_days) - len(eval_days) - args.chain_days):]
    t0 = time.perf_counter()
    run_data_days(cfg, data, [d for d in all_days if not data.exists("training_samples", d)])
    print(f"data stages: {len(all_days)} days ({time.perf_counter() - t0:.0f}s); model days {model_days[0]}..{last}, "
          f"evaluation days {eval_days[0]}..{eval_days[-1]} ({len(eval_days)})", flush=True)

    chains = {(variant_name(v), m): run_chain(args.config, base, root, data, v, m, eval_days, model_days)
              for v in variants for m in args.modes}
    tasks = list(cfg.samples.tasks)
    ref = chains[names[0], args.modes[0]]["days"]
    groups, labels = pooled(eval_days, ref)
    rules: dict[str, list[np.ndarray]] = {}  # "sanity: popularity", "cf: ease", ...: one array per day
    for day in eval_days:
        inputs = load_day_inputs(data, day)
        assert np.array_equal(inputs.samples["user_id"].to_numpy(), ref[day]["users"])
        for kind, per in (("sanity", sanity_scores(inputs)), ("cf", cf_scores(inputs, cfg.cf)[0])):
            for s, sc in per.items():
                rules.setdefault(f"{kind}: {s}", []).append(sc)
    scores = {f"{v} {m}": np.concatenate([c["days"][d]["probs"] for d in eval_days]) for (v, m), c in chains.items()}
    for name, per_day_scores in rules.items():
        scores[name] = np.repeat(np.concatenate(per_day_scores)[:, None], len(tasks), axis=1)
    table = {name: {t: gauc(groups, labels[:, k], sc[:, k])["gauc"] for k, t in enumerate(tasks)}
             for name, sc in scores.items()}
    per_day = {f"{v} {m}": {d: {t: gauc(np.unique(c["days"][d]["users"], return_inverse=True)[1],
                                        c["days"][d]["labels"][:, k], c["days"][d]["probs"][:, k])["gauc"]
                                for k, t in enumerate(tasks)} for d in eval_days}
               for (v, m), c in chains.items()}

    def diff(a: str, b: str, k: int) -> dict:
        return gauc_difference(groups, labels[:, k], scores[a][:, k], scores[b][:, k], n_boot=args.bootstrap)

    warm_vs_scratch = {v: {t: diff(f"{v} warm", f"{v} scratch", k) for k, t in enumerate(tasks)}
                       for v in names if len(args.modes) == 2}
    best_sanity = {t: max(rules, key=lambda s: table[s][t]) for t in tasks}  # the best rule: sanity or CF
    vs_sanity = {f"{v} {m}": {t: diff(f"{v} {m}", best_sanity[t], k) for k, t in enumerate(tasks)}
                 for v in names for m in args.modes}
    ablations = {f"{a} - {b}": {t: diff(f"{a} {m}", f"{b} {m}", k) for k, t in enumerate(tasks)}
                 for a, b in args.ablations for m in args.modes[:1]}

    lines = [f"## {dataset}: {len(eval_days)} evaluation days {eval_days[0]}..{eval_days[-1]}, "
             f"budget {args.budget}, pooled GAUC over (user, day)", "",
             "| model | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    lines += [f"| {name} | " + " | ".join(f"{table[name][t]:.4f}" for t in tasks) + " |" for name in table]
    lines += ["", "| difference | task | GAUC difference | 95% interval |", "|---|---|---|---|"]
    for v, per in warm_vs_scratch.items():
        lines += [f"| {v}: warm - scratch | {t} | {d['diff']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] |"
                  for t, d in per.items()]
    for name, per in vs_sanity.items():
        lines += [f"| {name} - {best_sanity[t]} | {t} | {d['diff']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] |"
                  for t, d in per.items()]
    for name, per in ablations.items():
        lines += [f"| {name} | {t} | {d['diff']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] |" for t, d in per.items()]
    lines += ["", "| day | " + " | ".join(per_day) + " |", "|---|" + "---|" * len(per_day)]
    lines += [f"| {d} | " + " | ".join("/".join(f"{per_day[n][d][t]:.3f}" for t in tasks) for n in per_day) + " |"
              for d in eval_days]
    report = "\n".join(lines)
    print(report)
    out = Path(__file__).resolve().parent / "results" / (f"history_{dataset}{'_config' if args.config else ''}_{args.budget}"
                                                        f"{'_' + args.tag if args.tag else ''}_{date.today():%Y%m%d}.json")
    out.write_text(json.dumps({"dataset": dataset, "budget": args.budget, "eval_days": eval_days,
                               "model_days": model_days, "variants": args.variants, "pooled_gauc": table,
                               "per_day_gauc": per_day, "warm_minus_scratch": warm_vs_scratch,
                               "minus_best_rule": vs_sanity, "best_rule": best_sanity, "ablations": ablations,
                               "train_seconds": {f"{v} {m}": c["seconds"] for (v, m), c in chains.items()},
                               "report": report}, indent=1, default=float))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
