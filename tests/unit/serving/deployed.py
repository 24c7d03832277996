"""The small deployed flow the serving tests share: 3 synthetic days through the data stages, then
train + evaluate + publish of a model as production (fixtures: conftest.py)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from ml_core import stages as P
from ml_core.registry.bundles import BundleStore
from ml_core.storage import Lake

DAYS = P.window("2026-01-03", -2, 0)
D = DAYS[-1]
# small and fast: fewer negatives, a few steps, one torch thread (2 shared cores oversubscribe badly)
OVERRIDES = ["samples.negatives_per_positive=1", "train.max_steps_per_epoch=8", "train.threads=1", "deploy.min_gauc=0.0",
             "deploy.gauc_tolerance=1.0"]
# a feature-only model, a graph model (sampled subgraphs at scoring time) and LightGODE (the scored
# day's whole graph, once, for its ODE)
MODELS = ["mmoe", "moge", "lightgode"]
#: per model, what its deployment adds: MoGE also reads a behaviour sequence, so the served scores
#: of a model with every input (node features, graphs, pair input, sequence) equal the evaluation's
MODEL_OVERRIDES = {"moge": ["train.sequence_length=5"]}
UNKNOWN = 10**15  # far outside the synthetic id ranges


@dataclasses.dataclass
class Deployment:
    model: str
    root: object  # lake + registry (the flow's storage root)
    serve_root: object  # a copy of registry/ only: no lake
    cfg: object
    version: str


def deploy(cfg, root) -> dict:
    """Train and evaluate day D, then publish it as production the way the deployment stage
    does, without the gate: these 8-step models need not beat the sanity scorers (the gate has
    its own tests), serving only needs a bundle."""
    lake = Lake(root)
    P.run_trained_model(cfg, lake, D, P.train_window_days(cfg, D))
    ev = P.run_model_evaluation(cfg, lake, D)
    return {"version": publish_without_gate(lake, D, ev.candidate), "promoted": True}


def publish_without_gate(lake: Lake, day: str, metrics: dict) -> str:
    """trained_model[day] assembled, published and pointed at as production (no gate): its version."""
    from ml_core.stages.deployment import assemble_bundle

    version = f"{day}-{lake.version('trained_model', day)[:10]}"
    store = BundleStore(lake.root)
    with tempfile.TemporaryDirectory() as tmp:
        assemble_bundle(lake, day, Path(tmp) / "bundle", version, metrics)
        store.publish(Path(tmp) / "bundle", version)
    store.set_production(version, {"partition": day, "metrics": metrics})
    return version
