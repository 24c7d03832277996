"""Stage 5, trained_model: the candidate model of day D, trained on the samples of days
D-T .. D-1 (each day scored with its own graphs and features), stored as a bundle (weights,
model and feature spec, training curve, manifest with the data versions of every input).

Its weights start from an earlier model when ``train.warm_start`` asks for one and it is
compatible (:func:`warm_start_source` finds it, :mod:`ml_core.train.warm` decides): ``previous``
= trained_model[D-1], ``production`` = the production bundle when it was trained before D (a
later partition's model has seen days after D). The manifest's ``init`` records the start
(``mode``, ``from``, ``from_version``, ``reason``), ``stopping`` why training stopped (early
stopping on a slice of the training days, :mod:`ml_core.train.validation`).

Under ``torchrun`` (``train.distributed``, launched by the asset through Dagster Pipes) every
rank runs this stage and trains its share of the batches; rank 0 alone writes the partition."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import timedelta

import torch

from ml_core.catalog import SIMILARITY_GRAPHS, TRAINING_DAY
from ml_core.config import PipelineConfig
from ml_core.registry.bundles import save_model, write_manifest
from ml_core.registry.interface import open_bundle_registry
from ml_core.stages.inputs import load_day_inputs
from ml_core.stages.windows import as_date, model_start
from ml_core.storage import VERSION_FILE, Lake, day_str
from ml_core.train import distributed as ddp
from ml_core.train.warm import OPTIMIZER_FILE, WarmStart


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
    #: how the weights started: ``mode`` (warm / scratch), ``from``, ``from_version``, ``reason``
    init: dict = field(default_factory=dict)
    #: why training stopped (``reason``), the validation slice and curve, ``best_step``,
    #: ``best_val_gauc``, ``still_improving`` (:func:`ml_core.train.trainer.train`)
    stopping: dict = field(default_factory=dict)
    #: processes that trained it (torch DDP ranks; 1 = one process)
    world_size: int = 1

    def summary(self) -> dict:
        """The flat, JSON-able record of the materialization (every field but ``history``, plus the
        epoch losses and throughputs, where the weights started and why training stopped): the
        asset's metadata, in process or reported by rank 0 through Dagster Pipes."""
        stats = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "history"}
        stats["epoch_losses"] = [round(h["epoch_loss"], 5) for h in self.history if "epoch_loss" in h]
        stats["started_from"] = (f"warm: {self.init.get('from')}" if self.init.get("mode") == "warm"
                                 else f"scratch: {self.init.get('reason', '')}")
        stats["stopped_by"] = self.stopping.get("reason", "")
        stats["samples_per_s"] = [round(h["samples_per_s"], 1) for h in self.history if "samples_per_s" in h]
        return stats


def _input_versions(lake: Lake, assets_days: dict[str, list[str]]) -> dict:
    return {a: {d: lake.version(a, d) for d in days} for a, days in assets_days.items()}


def warm_start_source(cfg: PipelineConfig, lake: Lake, day) -> WarmStart:
    """The model day ``day``'s training may start from (``train.warm_start``), or the reason there is none."""
    mode = cfg.train.warm_start
    if mode == "none":
        return WarmStart(reason="train.warm_start = none")
    if mode == "previous":
        prev = (as_date(day) - timedelta(days=1)).isoformat()
        if as_date(prev) < model_start(cfg):
            return WarmStart(reason=f"first day: trained_model starts on {model_start(cfg)}")
        if not lake.exists("trained_model", prev):
            return WarmStart(reason=f"no previous model: trained_model[{prev}] is not materialized")
        return WarmStart(lake.checked_dir("trained_model", prev), prev, lake.version("trained_model", prev))
    store = open_bundle_registry(cfg.registry, lake.root)
    prod = store.production()
    if prod is None:
        return WarmStart(reason="no previous model: nothing is in production")
    if prod.get("partition", "") >= day_str(day):
        return WarmStart(reason=f"no previous model: production is trained_model[{prod.get('partition')}], not "
                                f"older than {day_str(day)} (it has seen days after the training window)")
    directory = store.checked_version_dir(prod["version"])
    version = (directory / VERSION_FILE).read_text().strip() if (directory / VERSION_FILE).exists() else prod["version"]
    return WarmStart(directory, prod["version"], version)


def run_trained_model(cfg: PipelineConfig, lake: Lake, day, sample_days: list[str], code_version: str = "",
                      log=None) -> TrainingResult:
    """Train ``cfg.train.model`` on ``sample_days`` (each with its own graph) into the partition,
    from :func:`warm_start_source`'s model when compatible; ``code_version`` is recorded in the manifest.
    In a torch process group (torchrun) only rank 0 writes; every rank returns the same result."""
    from ml_core.train.extensions import training_graph_needs
    from ml_core.train.start import ModelChoice
    from ml_core.train.trainer import train

    choice = ModelChoice.of(cfg.train)  # train.model resolved once, for the training and the inputs it records
    days = [load_day_inputs(lake, d) for d in sample_days]
    tasks = list(cfg.samples.tasks)
    result = train(days, cfg.train, tasks, log=log, warm=warm_start_source(cfg, lake, day), choice=choice)
    # the similarity graphs are an input of the model (channels, optimizer, post-training) or of the pair input's kNN columns
    need_graph = training_graph_needs(cfg.train, choice.cls).day_graphs or (cfg.train.pair_features and cfg.train.pair_knn)
    read = TRAINING_DAY + SIMILARITY_GRAPHS if need_graph else TRAINING_DAY
    versions = _input_versions(lake, {a: sample_days for a in read})
    ranks = ddp.current()
    if ranks.writer:
        _write_partition(cfg, lake, day, sample_days, result, versions, code_version, ranks.world)
    return TrainingResult(model=result.model_name, model_args=result.model_args, optimizer=cfg.train.optimizer,
                          post_training=result.post_training, train_days=sample_days,
                          samples_seen=result.samples_seen, seconds=round(result.seconds, 2), device=result.device,
                          n_params=result.n_params, history=result.history, init=result.init,
                          stopping=result.stopping, world_size=ranks.world)


def _write_partition(cfg: PipelineConfig, lake: Lake, day, sample_days: list[str], result, versions: dict,
                     code_version: str, world_size: int) -> None:
    with lake.write_dir("trained_model", day) as tmp:
        save_model(tmp, result.model, result.model_name, result.model_args, result.model_spec, result.feature_spec,
                   extra={"train_config": cfg.to_dict()["train"]})
        (tmp / "history.json").write_text(json.dumps(result.history))
        if result.optimizer_state is not None:
            torch.save(result.optimizer_state, tmp / OPTIMIZER_FILE)
        write_manifest(tmp, {
            "partition": day_str(day), "model": result.model_name, "model_args": result.model_args,
            "optimizer": cfg.train.optimizer, "post_training": cfg.train.post_training, "train_days": sample_days,
            "input_versions": versions, "code_version": code_version, "config_fingerprint": cfg.fingerprint(),
            "device": result.device, "seconds": result.seconds, "n_params": result.n_params,
            "init": result.init, "stopping": result.stopping, "world_size": world_size,
        })
