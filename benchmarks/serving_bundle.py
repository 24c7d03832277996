"""A deployed bundle on a synthetic preset, for the serving benchmark (benchmarks/serving.py).

The data stages of a few days, then training, evaluation and publication of the last day's model
as production, the way the deployment stage does but without the gate (the benchmark needs a
bundle of the catalogue's size, not a model that beats the sanity scorers).

    .venv/bin/python benchmarks/serving_bundle.py --root /tmp/serve-medium --preset medium
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ml_core import stages as P
from ml_core.config import load_config
from ml_core.registry.bundles import BundleStore
from ml_core.stages.data_day import run_data_days
from ml_core.stages.deployment import assemble_bundle
from ml_core.storage import Lake

#: a short budget: the graph window and the training window of 2 days, one epoch
SETTINGS = ["graph.window_days=2", "train.train_days=2", "train.epochs=1", "train.max_steps_per_epoch=200",
            "train.batch_size=1024", "train.dim=32", "train.threads=1", "samples.negatives_per_positive=2"]


def build(root: Path, preset: str, model: str, day: str = "2026-01-05") -> str:
    """Deploy ``model`` trained on ``preset`` under ``root`` (nothing is redone when production
    already exists); the version served."""
    store = BundleStore(root)
    if store.production() is not None:
        return store.production()["version"]
    cfg = load_config(None, [f'storage.root="{root}"', 'source.kind="synthetic"', f'source.preset="{preset}"',
                             'source.start_date="2026-01-01"', f'train.model="{model}"', *SETTINGS])
    lake = Lake(root)
    days = P.window(day, -cfg.train.train_days - cfg.graph.window_days, 0)
    t0 = time.perf_counter()
    run_data_days(cfg, lake, days)
    print(f"data days {days[0]}..{days[-1]}: {time.perf_counter() - t0:.0f}s", flush=True)
    t0 = time.perf_counter()
    P.run_trained_model(cfg, lake, day, P.train_window_days(cfg, day))
    ev = P.run_model_evaluation(cfg, lake, day)
    print(f"trained + evaluated {model}: {time.perf_counter() - t0:.0f}s, {json.dumps(ev.candidate)}", flush=True)
    version = f"{day}-{lake.version('trained_model', day)[:10]}"
    with tempfile.TemporaryDirectory() as tmp:
        assemble_bundle(lake, day, Path(tmp) / "bundle", version, ev.candidate)
        store.publish(Path(tmp) / "bundle", version)
    store.set_production(version, {"partition": day, "metrics": ev.candidate})
    return version


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--preset", default="medium", choices=["small", "medium", "large"])
    ap.add_argument("--model", default="mmoe")
    args = ap.parse_args(argv)
    print(build(args.root, args.preset, args.model))


if __name__ == "__main__":
    main()
