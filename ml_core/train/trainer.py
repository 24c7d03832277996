"""The one trainer every model uses: same samples, same batches, same budget.

``train`` fits a registered model on days D-T .. D-1 (each day with its own graph, built from
days before it, so a training positive's edge is never in the graph that scores it); scoring a
day the model never saw is :mod:`ml_core.inference`'s (``predict``, ``evaluate``). CUDA is used when available (with mixed
precision), CPU otherwise (all cores). Launched by ``torchrun`` (a joined process group), it trains
data-parallel with DDP, each rank on its share of the batches (:mod:`ml_core.train.distributed`).
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ml_core.batching import BatchMaker, batch_plan, iterate
from ml_core.config import TrainConfig
from ml_core.contracts.day import DayContext, DayInputs
from ml_core.contracts.features import FeatureSpec
from ml_core.contracts.spec import ModelSpec
from ml_core.history import pair_columns
from ml_core.inference import inference_needs_graph
from ml_core.models.base import RecModel
from ml_core.models.registry import build_model
from ml_core.progress import Progress, format_duration
from ml_core.stop import check_stop
from ml_core.train import distributed as ddp
from ml_core.train.extensions import (
    make_optimizer,
    run_post_training,
    training_graph_needs,
)
from ml_core.train.validation import EarlyStopping, snapshot, split_validation, validation_gauc
from ml_core.train.warm import (
    WarmStart,
    grown_feature_spec,
    named_optimizer_state,
    open_start,
    restore_optimizer_state,
    scratch_init,
    transfer,
)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; explicit names are checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return dev


def configure_threads(threads: int) -> int:
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def precision(device: torch.device, amp: bool):
    """(autocast context factory, GradScaler): fp16 autocast + loss scaling on CUDA, off on CPU."""
    use = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.float16)) if use else contextlib.nullcontext
    return ctx, scaler


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


#: ``ddp.agree`` codes of the reasons to stop within an epoch
_STOP_REASONS = {1: "patience", 2: "max_seconds"}


def build_contexts(days: list[DayInputs], spec: FeatureSpec, need_graph: bool) -> list[DayContext]:
    return [DayContext.build(d, spec, with_graph=need_graph) for d in days]


def progress_line(epoch: int, epochs: int, progress: Progress, run_progress: Progress, recent_losses: list[float]) -> str:
    """``epoch 1/2 step 100/400 (25%): loss 0.4812 | 812 samples/s (790 since start) | ETA epoch 6m10s,
    training 14m32s``: the loss is the mean over the steps since the last line; the training's ETA
    is shown when there is more than one epoch."""
    eta = f"ETA epoch {format_duration(progress.eta_s())}"
    if epochs > 1:
        eta += f", training {format_duration(run_progress.eta_s())}"
    pct = f" ({progress.steps / progress.total:.0%})" if progress.total else ""
    return (f"epoch {epoch + 1}/{epochs} step {progress.steps}/{progress.total}{pct}: "
            f"loss {float(np.mean(recent_losses)):.4f} | {progress.rates()} | {eta}")


def fresh_model(cfg: TrainConfig, fspec: FeatureSpec) -> tuple[RecModel, ModelSpec]:
    """``cfg.model`` built on ``fspec`` from the seed ``cfg.seed`` (what every run starts from)."""
    torch.manual_seed(cfg.seed)
    mspec = ModelSpec.from_feature_spec(fspec, cfg.dim, cfg.fanouts)
    return build_model(cfg.model, mspec, cfg.model_args), mspec


def initial_model(cfg: TrainConfig, fspec: FeatureSpec, warm: WarmStart | None) -> tuple:
    """(model, feature spec, model spec, start model or None, row maps, init record): the start
    model's weights grown into a fresh model of the grown spec when it is compatible
    (:mod:`ml_core.train.warm`), else a fresh model of ``fspec`` with the reason."""
    start, init = open_start(warm, cfg, fspec)
    if start is not None:
        grown = grown_feature_spec(start.fspec, fspec)
        model, mspec = fresh_model(cfg, grown)
        try:
            init["grown"], maps = transfer(start, model, grown)
            return model, grown, mspec, start, maps, init
        except ValueError as e:
            init = scratch_init(f"incompatible: {e}", init)
    model, mspec = fresh_model(cfg, fspec)
    return model, fspec, mspec, None, {}, init


def train(days: list[DayInputs], cfg: TrainConfig, tasks: list[str], log=None, warm: WarmStart | None = None) -> TrainResult:
    """:func:`_train` with torch's thread count (``cfg.threads``) set for the training only: the
    steps after it in the same process (an in-process Dagster run evaluates and deploys right
    after training) score with torch's own setting again. Left at training's one thread, the
    ``large`` day's evaluation encoded its nodes in 14 s instead of 9."""
    previous = torch.get_num_threads()
    try:
        return _train(days, cfg, tasks, log, warm)
    finally:
        torch.set_num_threads(previous)


def _train(days: list[DayInputs], cfg: TrainConfig, tasks: list[str], log=None, warm: WarmStart | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``days`` (each with its samples, features and graphs), starting from
    ``warm`` when compatible (:mod:`ml_core.train.warm`), validating on a slice of ``days``
    (``cfg.validation``, :mod:`ml_core.train.validation`) and stopping on the first of: patience,
    ``max_seconds``, the last epoch, the step cap; the best validated weights are kept.
    ``TrainResult.stopping`` says which (``reason``) and how far from converged; ``history`` holds
    the running loss, each epoch's loss and throughput, and the validation curve (``val_gauc``).
    ``log`` (a ``str -> None`` callable, default silent) gets the set-up, a :func:`progress_line`
    every ``cfg.log_every_steps`` optimiser steps, each validation and each epoch's loss and throughput."""
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
    model, fspec, mspec, start, maps, init = initial_model(cfg, fitted, warm)
    model = model.to(device)
    contexts = build_contexts(split.train, fspec, training_graph_needs(cfg).day_graphs)
    val_contexts = build_contexts(split.validation, fspec, inference_needs_graph(model))
    makers = [BatchMaker(c, cfg.fanouts, model.graph_needs.subgraphs, mask_target_edges=cfg.mask_target_edges)
              for c in contexts]
    if start is None:  # a warm start keeps its trained output biases
        model.set_task_priors(torch.from_numpy(np.concatenate([c.labels for c in contexts]).mean(axis=0)))
    model.prepare(contexts)  # per-model set-up that needs the data (RecModel.prepare; default: nothing)
    optimizer = make_optimizer(model, cfg, contexts)
    if start is not None and cfg.warm_start_optimizer:
        init["optimizer"] = restore_optimizer_state(optimizer, model, start, cfg.optimizer, maps)
    autocast, scaler = precision(device, cfg.amp)
    step_loss = ddp.wrap(model, ranks, device)
    history: list[dict] = []
    step = 0
    seen = 0
    t0 = time.perf_counter()
    began = (f"warm start from {init['from']} (+{init['grown']['user_ids']['new']} user ids, "
             f"+{init['grown']['item_ids']['new']} item ids)" if start is not None else f"from scratch ({init['reason']})")
    log(f"training {cfg.model} on {len(split.train)} days, {sum(c.n_samples for c in contexts)} samples, {began}, "
        f"validation {split.how} ({sum(c.n_samples for c in val_contexts)} samples), device={device}, threads={threads}"
        + (f", DDP rank {ranks.rank} of {ranks.world} (batches of {ddp.rank_batch_size(cfg.batch_size, ranks)} per rank, "
           f"sharded by rank)" if ranks.active else ""))
    stopper = EarlyStopping(cfg.patience) if val_contexts else None
    keep = lambda: (snapshot(model), copy.deepcopy(optimizer.state_dict()) if cfg.warm_start_optimizer else None)
    val_seconds = 0.0

    def validate(epoch: int) -> bool:
        """Score the slice now; True when patience is exhausted."""
        nonlocal val_seconds
        t = time.perf_counter()
        score = validation_gauc(model, val_contexts, cfg.fanouts, tasks, cfg.prefetch)
        improved = stopper.update(step, epoch, score, time.perf_counter() - t0, keep)
        val_seconds += time.perf_counter() - t
        history.append({"epoch": epoch, "step": step, "val_gauc": score})
        log(f"validation after {step} steps: mean GAUC {score:.4f} "
            + ("(best)" if improved else f"({stopper.bad}/{cfg.patience} without improvement, best {stopper.best:.4f})"))
        return stopper.exhausted

    if stopper is not None and start is not None:
        validate(0)  # the start model's own score: training has to beat it, or the start weights are kept
    reason = None
    capped = False
    epoch = 0
    run_progress = None  # the whole training, for its ETA (every epoch has the same number of steps)
    for epoch in range(cfg.epochs):
        model.train()
        plan = ddp.shard(batch_plan(contexts, ddp.rank_batch_size(cfg.batch_size, ranks), shuffle=True, rng=rng), ranks)
        capped = bool(cfg.max_steps_per_epoch) and len(plan) > cfg.max_steps_per_epoch
        if cfg.max_steps_per_epoch:
            plan = plan[: cfg.max_steps_per_epoch]
        losses = []
        log_every = max(1, min(50, len(plan) // 10))  # ~10+ curve points per epoch
        t_epoch, val_before, epoch_seen = time.perf_counter(), val_seconds, 0
        progress = Progress(len(plan), cfg.log_every_steps)
        run_progress = run_progress or Progress(len(plan) * cfg.epochs, 0)
        with contextlib.closing(iterate(makers, plan, gen, prefetch=cfg.prefetch)) as batches:
            for batch in batches:
                check_stop(f"before training step {step + 1}")  # a signal to the run command
                batch = batch.to(device)
                with autocast():
                    _, loss, parts = step_loss(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch} step {step}; parts={parts}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
                seen += len(batch)
                epoch_seen += len(batch)
                step += 1
                if step % log_every == 0:
                    history.append({"epoch": epoch, "step": step, "loss": float(np.mean(losses[-log_every:])), **parts})
                run_progress.advance(len(batch))
                if progress.advance(len(batch)):
                    log(progress_line(epoch, cfg.epochs, progress, run_progress, losses[-progress.every:]))
                stop = 1 if (stopper is not None and cfg.eval_every_steps and step % cfg.eval_every_steps == 0
                             and validate(epoch)) else 0
                stop = stop or (2 if cfg.max_seconds and time.perf_counter() - t0 >= cfg.max_seconds else 0)
                stop = ddp.agree(stop, ranks)  # every rank stops at the same step
                if stop:
                    reason = _STOP_REASONS[stop]
                    break
        dt = time.perf_counter() - t_epoch - (val_seconds - val_before)
        rec = {"epoch": epoch, "step": step, "epoch_loss": float(np.mean(losses)) if losses else float("nan"),
               "samples_per_s": ddp.total(epoch_seen / max(dt, 1e-9), ranks)}  # of all ranks together
        history.append(rec)
        log(f"epoch {epoch + 1}/{cfg.epochs} done in {format_duration(dt)}: loss {rec['epoch_loss']:.4f}, "
            f"{rec['samples_per_s']:,.0f} samples/s")
        if reason is None and stopper is not None and not cfg.eval_every_steps and ddp.agree(int(validate(epoch)), ranks):
            reason = "patience"
        if reason is not None:
            break
    reason = reason or ("max_steps" if capped else "max_epochs")
    restored = False
    if stopper is not None:
        if stopper.last_step != step:
            validate(epoch)  # the weights the budget ended with take part in the choice
        if stopper.best_step != step:
            model.load_state_dict(stopper.best_state[0])
            if stopper.best_state[1] is not None:
                optimizer.load_state_dict(stopper.best_state[1])
            restored = True
    stopping = {"reason": reason, "steps": step, "epochs": epoch + 1 if cfg.epochs else 0,
                "validation": split.describe(), **(stopper.summary() if stopper else {}),
                "restored_best": restored, "curve": [[c["step"], c["val_gauc"]] for c in (stopper.curve if stopper else [])]}
    log(f"training stopped ({reason}) after {step} steps" + (f"; best validation {stopper.best:.4f} after "
                                                             f"{stopper.best_step} steps, restored: {restored}" if stopper else ""))
    model.eval()
    post = run_post_training(model, cfg, contexts, log)
    return TrainResult(
        model=model, feature_spec=fspec, model_spec=mspec, model_name=cfg.model, model_args=dict(cfg.model_args),
        history=history, seconds=time.perf_counter() - t0, device=str(device),
        n_params=sum(p.numel() for p in model.parameters()), samples_seen=int(ddp.total(seen, ranks)), post_training=post, init=init,
        stopping=stopping,
        optimizer_state=named_optimizer_state(model, optimizer, cfg.optimizer) if cfg.warm_start_optimizer else None,
    )


def training_needs_graph(cfg: TrainConfig) -> bool:
    """Whether training ``cfg`` reads the similarity graphs (the model, its optimizer or a
    post-training step): :func:`~ml_core.train.extensions.training_graph_needs` ``.day_graphs``."""
    return training_graph_needs(cfg).day_graphs
