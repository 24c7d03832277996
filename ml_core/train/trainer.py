"""The one trainer every model uses: same samples, same batches, same budget.

``train`` fits a registered model on days D-T .. D-1 (each day with its own graph, built from
days before it, so a training positive's edge is never in the graph that scores it); scoring a
day the model never saw is :mod:`ml_core.inference`'s (``predict``, ``evaluate``). CUDA is used when available (with mixed
precision), CPU otherwise (all cores).
"""

from __future__ import annotations

import contextlib
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
from ml_core.models.base import RecModel
from ml_core.models.registry import build_model
from ml_core.progress import Progress, format_duration
from ml_core.train.extensions import (
    make_optimizer,
    run_post_training,
    training_graph_needs,
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


def train(days: list[DayInputs], cfg: TrainConfig, tasks: list[str], log=None) -> TrainResult:
    """Train ``cfg.model`` on ``days`` (each with its samples, features and graphs). ``log`` (a
    ``str -> None`` callable, default silent) gets the set-up, a :func:`progress_line` every
    ``cfg.log_every_steps`` optimiser steps, and each epoch's loss and throughput."""
    if not days or sum(d.samples.height for d in days) == 0:
        raise ValueError(f"no training samples: the training window {[d.day for d in days]} has none (every day "
                         "of it has no data, or no day is materialized yet); nothing to train")
    log = log or (lambda msg: None)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    threads = configure_threads(cfg.threads)
    device = resolve_device(cfg.device)
    fspec = FeatureSpec.fit(days, tasks)
    mspec = ModelSpec.from_feature_spec(fspec, cfg.dim, cfg.fanouts)
    model = build_model(cfg.model, mspec, cfg.model_args).to(device)
    contexts = build_contexts(days, fspec, training_graph_needs(cfg).day_graphs)
    makers = [BatchMaker(c, cfg.fanouts, model.graph_needs.subgraphs, mask_target_edges=cfg.mask_target_edges)
              for c in contexts]
    model.set_task_priors(torch.from_numpy(np.concatenate([c.labels for c in contexts]).mean(axis=0)))
    model.prepare(contexts)  # per-model set-up that needs the data (RecModel.prepare; default: nothing)
    optimizer = make_optimizer(model, cfg, contexts)
    autocast, scaler = precision(device, cfg.amp)
    history: list[dict] = []
    step = 0
    seen = 0
    t0 = time.perf_counter()
    log(f"training {cfg.model} on {len(days)} days, {sum(c.n_samples for c in contexts)} samples, device={device}, threads={threads}")
    run_progress = None  # the whole training, for its ETA (every epoch has the same number of steps)
    for epoch in range(cfg.epochs):
        model.train()
        plan = batch_plan(contexts, cfg.batch_size, shuffle=True, rng=rng)
        if cfg.max_steps_per_epoch:
            plan = plan[: cfg.max_steps_per_epoch]
        losses = []
        log_every = max(1, min(50, len(plan) // 10))  # ~10+ curve points per epoch
        t_epoch = time.perf_counter()
        progress = Progress(len(plan), cfg.log_every_steps)
        run_progress = run_progress or Progress(len(plan) * cfg.epochs, 0)
        for batch in iterate(makers, plan, gen, prefetch=cfg.prefetch):
            batch = batch.to(device)
            with autocast():
                _, loss, parts = model.compute_loss(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch} step {step}; parts={parts}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
            seen += len(batch)
            step += 1
            if step % log_every == 0:
                history.append({"epoch": epoch, "step": step, "loss": float(np.mean(losses[-log_every:])), **parts})
            run_progress.advance(len(batch))
            if progress.advance(len(batch)):
                log(progress_line(epoch, cfg.epochs, progress, run_progress, losses[-progress.every:]))
        dt = time.perf_counter() - t_epoch
        rec = {"epoch": epoch, "step": step, "epoch_loss": float(np.mean(losses)) if losses else float("nan"),
               "samples_per_s": sum(len(r) for _, r in plan) / max(dt, 1e-9)}
        history.append(rec)
        log(f"epoch {epoch + 1}/{cfg.epochs} done in {format_duration(dt)}: loss {rec['epoch_loss']:.4f}, "
            f"{rec['samples_per_s']:,.0f} samples/s")
    model.eval()
    post = run_post_training(model, cfg, contexts, log)
    return TrainResult(
        model=model, feature_spec=fspec, model_spec=mspec, model_name=cfg.model, model_args=dict(cfg.model_args),
        history=history, seconds=time.perf_counter() - t0, device=str(device),
        n_params=sum(p.numel() for p in model.parameters()), samples_seen=seen, post_training=post,
    )


def training_needs_graph(cfg: TrainConfig) -> bool:
    """Whether training ``cfg`` reads the similarity graphs (the model, its optimizer or a
    post-training step): :func:`~ml_core.train.extensions.training_graph_needs` ``.day_graphs``."""
    return training_graph_needs(cfg).day_graphs
