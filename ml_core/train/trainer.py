"""The one trainer every model uses: same samples, same batches, same budget.

``train`` fits a registered model on days D-T .. D-1 (each day with its own graph, built from
days before it, so a training positive's edge is never in the graph that scores it); scoring a
day the model never saw is :mod:`ml_core.inference`'s (``predict``, ``evaluate``). CUDA is used when available (with mixed
precision), CPU otherwise (all cores). Launched by ``torchrun`` (a joined process group), it trains
data-parallel with DDP, each rank on its share of the batches (:mod:`ml_core.train.distributed`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ml_core.config import TrainConfig
from ml_core.contracts.day import DayInputs
from ml_core.contracts.spec import ModelSpec
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.history import pair_columns
from ml_core.inference import inference_needs_graph
from ml_core.models.base import RecModel
from ml_core.train import distributed as ddp
from ml_core.train.distributed import resolve_device
from ml_core.train.extensions import make_optimizer, run_post_training, training_graph_needs
from ml_core.train.loop import EpochLoop, build_contexts, configure_threads
from ml_core.train.start import ModelChoice, start_state
from ml_core.train.validation import Validator, split_validation
from ml_core.train.warm import WarmStart, named_optimizer_state, scratch_init


@dataclass
class TrainResult:
    model: RecModel
    feature_spec: FeatureSpec
    model_spec: ModelSpec
    model_name: str
    model_args: dict
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    n_params: int = 0
    samples_seen: int = 0
    post_training: dict = field(default_factory=dict)
    #: how the weights started: ``{"mode": "warm" | "scratch", "from", "from_version", "reason", ...}``
    init: dict = field(default_factory=lambda: scratch_init("no warm start requested"))
    #: why training stopped and how far from converged (:func:`train`)
    stopping: dict = field(default_factory=dict)
    #: the optimizer's state by parameter name (``train.warm_start_optimizer``), for the next warm start
    optimizer_state: dict | None = None


def train(days: list[DayInputs], cfg: TrainConfig, tasks: list[str], log=None, warm: WarmStart | None = None,
          choice: ModelChoice | None = None) -> TrainResult:
    """:func:`_train` (``choice``: ``cfg.model`` when the caller resolved it already) with torch's thread count (``cfg.threads``) set for the training only: the
    steps after it in the same process (an in-process Dagster run evaluates and deploys right
    after training) score with torch's own setting again. Left at training's one thread, the
    ``large`` day's evaluation encoded its nodes in 14 s instead of 9."""
    previous = torch.get_num_threads()
    try:
        return _train(days, cfg, tasks, log, warm, choice or ModelChoice.of(cfg))
    finally:
        torch.set_num_threads(previous)


def _train(days: list[DayInputs], cfg: TrainConfig, tasks: list[str], log, warm: WarmStart | None,
           choice: ModelChoice) -> TrainResult:
    """Train ``cfg.model`` (``choice``) on ``days`` (each with its samples, features and graphs), in named steps:
    the start state (fresh, or warm from ``warm`` when compatible: :mod:`ml_core.train.start`), the
    days' contexts and the optimizer, the validator on a slice of ``days`` (``cfg.validation``,
    :mod:`ml_core.train.validation`), the epoch loop through the DDP wrapper
    (:mod:`ml_core.train.loop`), which stops on the first of: patience, ``max_seconds``, the last
    epoch, the step cap; then the best validated weights restored and the post-training steps.
    ``TrainResult.stopping`` says why (``reason``) and how far from converged; ``history`` holds
    the running loss, each epoch's loss and throughput, and the validation curve (``val_gauc``).
    ``log`` (a ``str -> None`` callable, default silent) gets the set-up, a progress line every
    ``cfg.log_every_steps`` optimiser steps, each validation and each epoch's loss and throughput."""
    if not days or sum(d.samples.height for d in days) == 0:
        raise ValueError(f"no training samples: the training window {[d.day for d in days]} has none (every day "
                         "of it has no data, or no day is materialized yet); nothing to train")
    log = log or (lambda msg: None)
    ranks = ddp.current()
    rng = np.random.default_rng(cfg.seed)  # the same epoch plans on every rank, then sharded
    gen = torch.Generator().manual_seed(ddp.sampling_seed(cfg.seed, ranks))
    threads = configure_threads(cfg.threads)
    device = ddp.rank_device(resolve_device(cfg.device), ranks)
    split = split_validation(days, cfg.validation, cfg.validation_share, cfg.seed)
    pair = pair_columns(cfg.pair_knn) if cfg.pair_features else None
    fitted = FeatureSpec.fit(split.train, tasks, pair=pair, sequence_length=cfg.sequence_length)
    state = start_state(cfg, choice, fitted, warm)
    model, fspec = state.model.to(device), state.feature_spec
    contexts = build_contexts(split.train, fspec, training_graph_needs(cfg, choice.cls).day_graphs)
    val_contexts = build_contexts(split.validation, fspec, inference_needs_graph(model))
    state.prepare(contexts)
    optimizer = make_optimizer(model, cfg, contexts)
    state.restore_optimizer(optimizer, cfg)
    history: list[dict] = []
    validator = Validator(model, val_contexts, cfg, tasks, optimizer, history, log)
    loop = EpochLoop(model, contexts, cfg, optimizer, validator, device, ranks, history, log)
    log(f"training {cfg.model} on {len(split.train)} days, {sum(c.n_samples for c in contexts)} samples, "
        f"{state.describe()}, validation {split.how} ({sum(c.n_samples for c in val_contexts)} samples), "
        f"device={device}, threads={threads}"
        + (f", DDP rank {ranks.rank} of {ranks.world} (batches of {ddp.rank_batch_size(cfg.batch_size, ranks)} per rank, "
           f"sharded by rank)" if ranks.active else ""))
    if validator.active and state.warm:
        loop.validate()  # the start model's own score: training has to beat it, or the start weights are kept
    reason = loop.run(rng, gen)
    stopping = {"reason": reason, "steps": loop.step, "epochs": loop.epoch + 1 if cfg.epochs else 0,
                "validation": split.describe(), **validator.finish(loop.step, loop.epoch, loop.t0)}
    log(f"training stopped ({reason}) after {loop.step} steps{validator.describe()}")
    model.eval()
    post = run_post_training(model, cfg, contexts, log)
    return TrainResult(
        model=model, feature_spec=fspec, model_spec=state.model_spec, model_name=cfg.model,
        model_args=dict(cfg.model_args), history=history, seconds=time.perf_counter() - loop.t0, device=str(device),
        n_params=sum(p.numel() for p in model.parameters()), samples_seen=int(ddp.total(loop.seen, ranks)),
        post_training=post, init=state.init, stopping=stopping,
        optimizer_state=named_optimizer_state(model, optimizer, cfg.optimizer) if cfg.warm_start_optimizer else None,
    )
