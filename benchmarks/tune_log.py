"""The hyper-parameter search of one real log, run once: ``[tuning]`` over a config's data, on days
before its report's evaluation days, with the result written next to the other results.

The search is the ``hyperparameter_search`` asset's (:func:`ml_core.stages.tuning.run_hyperparameter_search`):
trials train on the window's days but the last, are validated on the last, and the best and the
default configuration are trained on the whole window and evaluated on the held-out day. The data
stages run first where the lake lacks them (the same lake layout as ``history_report.py``, so both
share it). The chosen settings are then committed in the log's config by hand (``[train]`` and
``model_args``), with this file's JSON as the record.

    python benchmarks/tune_log.py --config data/configs/taobao.toml --day 2017-11-27 --train-days 2 --trials 8

Writes ``benchmarks/results/tuning_<config>_<date>.json`` and prints the search's Markdown report.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.history_report import days_between
from ml_core.config import load_config
from ml_core.stages.data_day import run_data_days
from ml_core.stages.tuning import run_hyperparameter_search
from ml_core.storage import Lake


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True, help="the log's config, e.g. data/configs/taobao.toml")
    ap.add_argument("--day", required=True, help="the held-out day D; the trials see D-T .. D-1 only")
    ap.add_argument("--train-days", type=int, default=0, help="T of the search (>= 2; default: the config's train.train_days)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--model", default="moge")
    ap.add_argument("--root", default="/tmp/moge-history", help="lake root (history_report.py's --root)")
    ap.add_argument("--budget", default="full", help="the lake's budget folder under --root/<config> (history_report.py's --budget)")
    ap.add_argument("--set", nargs="*", default=[], help="more config overrides, e.g. tuning.seed=1")
    args = ap.parse_args(argv)

    lake = Lake(Path(args.root) / args.config.stem / args.budget / "data")
    base = [f'storage.root="{lake.root}"', f'tuning.model="{args.model}"', f"tuning.trials={args.trials}", *args.set]
    if args.train_days:
        base.append(f"train.train_days={args.train_days}")
    cfg = load_config(args.config, base)
    day = date.fromisoformat(args.day)
    sample_days = [(day - timedelta(days=k)).isoformat() for k in range(cfg.train.train_days, 0, -1)]
    days = days_between(cfg.source.start_date, args.day)
    run_data_days(cfg, lake, [d for d in days if not lake.exists("training_samples", d)])
    res = run_hyperparameter_search(cfg, lake, args.day, sample_days, log=lambda m: print(m, flush=True))
    print(res.report)
    out = Path(__file__).resolve().parent / "results" / f"tuning_{args.config.stem}_{date.today():%Y%m%d}.json"
    out.write_text(json.dumps({"config": str(args.config), "day": args.day, "sample_days": sample_days,
                               "overrides": base[1:], **res.results}, indent=2, default=str))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
