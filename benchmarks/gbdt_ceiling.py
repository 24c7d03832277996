"""How far the pipeline's own inputs go: gradient-boosted trees (LightGBM) on a history report's
samples, pair inputs and node features, trained per evaluation day on the training days before it,
GAUC pooled over the evaluation days as the report pools it.

A model that scores near this on the same inputs is not missing capacity; a gap to the rules
that also holds here is in the inputs (the log), not in the model. ``--extra`` adds window
features the pair input does not have (days since the pair's last event of each behaviour, the
pair's and the user's events on the last window day, days since the user's last event of each
behaviour in the item's category), to see whether any is worth adding.

    python benchmarks/gbdt_ceiling.py --lake /tmp/h/taobao/full/data --first 2017-11-28 --last 2017-12-03 --train-days 2
    python benchmarks/gbdt_ceiling.py ... --extra

``--lake`` is the data lake a ``history_report.py`` run left (``<root>/<dataset>/full/data``).
LightGBM is installed into a throw-away folder (``--peers``), not into the project's environment.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_core.config import BEHAVIORS  # noqa: E402
from ml_core.eval.metrics import gauc  # noqa: E402
from ml_core.history import PAIR_COLUMNS  # noqa: E402
from ml_core.stages.inputs import load_day_inputs, scan_logs  # noqa: E402
from ml_core.storage import Lake  # noqa: E402

TASKS = ("click", "purchase")
PARAMS = dict(objective="binary", learning_rate=0.05, num_leaves=31, min_data_in_leaf=50, bagging_fraction=0.8,
              bagging_freq=1, feature_fraction=0.8, verbose=-1, num_threads=1, seed=0)
ROUNDS = 300


def lightgbm(peers: Path):
    if not (peers / "lightgbm").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(peers), "--no-deps",
                        "lightgbm==4.7.0", "narwhals"], check=True)
    sys.path.insert(0, str(peers))
    import lightgbm as lgb

    return lgb


def extra_features(lake: Lake, day: str, window: int, items: pl.DataFrame) -> tuple[pl.DataFrame, ...]:
    d = date.fromisoformat(day)
    days = [str(d - timedelta(k)) for k in range(1, window + 1) if lake.exists("interaction_logs", d - timedelta(k))]
    ev = scan_logs(lake, days).collect()
    age = (pl.lit(d) - pl.col("ds")).dt.total_days()
    pair = ev.group_by("user_id", "item_id").agg(
        *[age.filter(pl.col("behavior") == b).min().alias(f"x_days_{b}") for b in BEHAVIORS],
        *[((pl.col("behavior") == b) & (age == 1)).sum().alias(f"x_last_day_{b}") for b in BEHAVIORS])
    user = ev.group_by("user_id").agg((age == 1).sum().alias("x_user_last_day"), age.min().alias("x_user_days"))
    cats = ev.join(items.select("item_id", "category"), on="item_id").group_by("user_id", "category").agg(
        *[age.filter(pl.col("behavior") == b).min().alias(f"x_cat_days_{b}") for b in BEHAVIORS])
    return pair, user, cats


def day_frame(lake: Lake, day: str, window: int, extra: bool) -> pl.DataFrame:
    d = load_day_inputs(lake, day)
    pair = d.pair_inputs(PAIR_COLUMNS)
    f = d.samples.select("user_id", "item_id", *(f"label_{t}" for t in TASKS))
    f = f.with_columns([pl.Series(c, pair[:, k]) for k, c in enumerate(PAIR_COLUMNS)])
    f = f.join(d.users, on="user_id", how="left").join(d.items, on="item_id", how="left")
    if extra:
        p, u, c = extra_features(lake, day, window, d.items)
        f = f.join(p, on=["user_id", "item_id"], how="left").join(u, on="user_id", how="left")
        f = f.join(c, on=["user_id", "category"], how="left")
    return f.drop("category", strict=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lake", required=True)
    ap.add_argument("--first", required=True, help="first evaluation day")
    ap.add_argument("--last", required=True, help="last evaluation day")
    ap.add_argument("--train-days", type=int, required=True, help="the config's train.train_days")
    ap.add_argument("--window", type=int, default=0, help="graph.window_days (for --extra)")
    ap.add_argument("--extra", action="store_true")
    ap.add_argument("--peers", default=str(Path.home() / ".cache" / "moge-bench" / "lightgbm"))
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.extra and args.window < 1:
        ap.error("--extra needs --window (the config's graph.window_days)")
    lgb = lightgbm(Path(args.peers))
    lake = Lake(args.lake)
    frames: dict[str, pl.DataFrame] = {}

    def frame(day: str) -> pl.DataFrame:  # each day built once (it is a training day of the next ones)
        if day not in frames:
            frames[day] = day_frame(lake, day, args.window, args.extra)
        return frames[day]

    first, last = date.fromisoformat(args.first), date.fromisoformat(args.last)
    pooled = {t: ([], [], []) for t in TASKS}
    per_day = {}
    for k in range((last - first).days + 1):
        day = first + timedelta(k)
        train = pl.concat([frame(str(day - timedelta(j))) for j in range(1, args.train_days + 1)], how="diagonal_relaxed")
        test = frame(str(day))
        features = [c for c in test.columns if c not in ("user_id", "item_id") and not c.startswith("label_")]
        x = lambda f: f.select(features).to_numpy().astype(np.float32)
        per_day[str(day)] = {}
        for t in TASKS:
            booster = lgb.train(PARAMS, lgb.Dataset(x(train), train[f"label_{t}"].to_numpy()), num_boost_round=ROUNDS)
            groups, labels, probs = test["user_id"].to_numpy() * 10_000 + k, test[f"label_{t}"].to_numpy(), booster.predict(x(test))
            for part, v in zip(pooled[t], (groups, labels, probs)):
                part.append(v)
            per_day[str(day)][t] = gauc(groups, labels, probs)["gauc"]
        print(day, {t: round(v, 4) for t, v in per_day[str(day)].items()}, flush=True)
    result = {"lake": args.lake, "extra": args.extra, "features": features, "params": PARAMS, "rounds": ROUNDS,
              "per_day_gauc": per_day,
              "pooled_gauc": {t: gauc(*(np.concatenate(p) for p in pooled[t]))["gauc"] for t in TASKS}}
    print("pooled", {t: round(v, 4) for t, v in result["pooled_gauc"].items()}, f"({len(features)} features)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
