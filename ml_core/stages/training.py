"""Stage 5, trained_model: the candidate model of day D, trained on the samples of days
D-T .. D-1 (each day scored with its own graphs and features), stored as a bundle (weights,
model and feature spec, training curve, manifest with the data versions of every input)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ml_core.bundles import save_model, write_manifest
from ml_core.config import PipelineConfig
from ml_core.stages.inputs import load_day_inputs
from ml_core.storage import Lake, day_str

#: What a model reads of each training day; the similarity graphs only when it uses graphs.
_DAY_ASSETS = ("training_samples", "node_features", "bipartite_graph")
_GRAPH_ASSETS = ("user_similarity_graph", "item_similarity_graph")


@dataclass
class TrainingResult:
    """The trained model, how it was trained and at what cost; ``history`` is the trainer's
    log (running loss per step, loss and throughput per epoch)."""

    model: str
    model_args: dict
    optimizer: str
    post_training: list
    train_days: list[str]
    samples_seen: int
    seconds: float
    device: str
    n_params: int
    history: list[dict] = field(default_factory=list)


def _input_versions(lake: Lake, assets_days: dict[str, list[str]]) -> dict:
    return {a: {d: lake.version(a, d) for d in days} for a, days in assets_days.items()}


def run_trained_model(cfg: PipelineConfig, lake: Lake, day, sample_days: list[str], code_version: str = "",
                      log=None) -> TrainingResult:
    """Train ``cfg.train.model`` on ``sample_days`` (each with its own graph) into the partition;
    ``code_version`` is recorded in the manifest."""
    from ml_core.train.trainer import train, training_needs_graph

    need_graph = training_needs_graph(cfg.train)
    days = [load_day_inputs(lake, d, need_graph) for d in sample_days]
    tasks = list(cfg.samples.tasks)
    result = train(days, cfg.train, tasks, log=log)
    read = _DAY_ASSETS + _GRAPH_ASSETS if need_graph else _DAY_ASSETS
    versions = _input_versions(lake, {a: sample_days for a in read})
    with lake.write_dir("trained_model", day) as tmp:
        save_model(tmp, result.model, result.model_name, result.model_args, result.model_spec, result.feature_spec,
                   extra={"train_config": cfg.to_dict()["train"]})
        (tmp / "history.json").write_text(json.dumps(result.history))
        write_manifest(tmp, {
            "partition": day_str(day), "model": result.model_name, "model_args": result.model_args,
            "optimizer": cfg.train.optimizer, "post_training": cfg.train.post_training, "train_days": sample_days,
            "input_versions": versions, "code_version": code_version, "config_fingerprint": cfg.fingerprint(),
            "device": result.device, "seconds": result.seconds, "n_params": result.n_params,
        })
    return TrainingResult(model=result.model_name, model_args=result.model_args, optimizer=cfg.train.optimizer,
                          post_training=result.post_training, train_days=sample_days,
                          samples_seen=result.samples_seen, seconds=round(result.seconds, 2), device=result.device,
                          n_params=result.n_params, history=result.history)
