"""The one trainer every model uses: same samples, same batches, same budget.

``train`` fits a registered model on days D-T .. D-1 (each day with its own graph, built from
days before it, so a training positive's edge is never in the graph that scores it) and
``evaluate`` scores a day the model never saw. CUDA is used when available (with mixed
precision), CPU otherwise (all cores).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ml_core.config import TrainConfig
from ml_core.eval.metrics import task_metrics
from ml_core.models.blocks import ModelSpec, RecModel
from ml_core.models.registry import build_model
from ml_core.train.batching import BatchMaker, batch_plan, iterate
from ml_core.train.data import DayContext, DayInputs, FeatureSpec
from ml_core.train.extensions import extensions_need_graph, make_optimizer, run_post_training


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


def train(days: list[DayInputs], cfg: TrainConfig, tasks: list[str], log=None) -> TrainResult:
    """Train ``cfg.model`` on ``days`` (each with its samples, features and graphs)."""
    if not days or sum(d.samples.height for d in days) == 0:
        raise ValueError("no training samples: the training window is empty (materialize earlier days first)")
    log = log or (lambda msg: None)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    threads = configure_threads(cfg.threads)
    device = resolve_device(cfg.device)
    fspec = FeatureSpec.fit(days, tasks)
    mspec = ModelSpec.from_feature_spec(fspec, cfg.dim, cfg.fanouts)
    model = build_model(cfg.model, mspec, **cfg.model_args).to(device)
    need_graph = type(model).needs_graph
    contexts = build_contexts(days, fspec, need_graph or _needs_day_graph(type(model)) or extensions_need_graph(cfg))
    makers = [BatchMaker(c, cfg.fanouts, need_graph, mask_target_edges=cfg.mask_target_edges) for c in contexts]
    model.set_task_priors(torch.from_numpy(np.concatenate([c.labels for c in contexts]).mean(axis=0)))
    if hasattr(model, "prepare"):
        model.prepare(contexts)  # per-model setup that needs the data (e.g. SEvo's graph)
    optimizer = make_optimizer(model, cfg, contexts)
    autocast, scaler = precision(device, cfg.amp)
    history: list[dict] = []
    step = 0
    seen = 0
    t0 = time.perf_counter()
    log(f"training {cfg.model} on {len(days)} days, {sum(c.n_samples for c in contexts)} samples, device={device}, threads={threads}")
    for epoch in range(cfg.epochs):
        model.train()
        plan = batch_plan(contexts, cfg.batch_size, shuffle=True, rng=rng)
        if cfg.max_steps_per_epoch:
            plan = plan[: cfg.max_steps_per_epoch]
        losses = []
        log_every = max(1, min(50, len(plan) // 10))  # ~10+ curve points per epoch
        t_epoch = time.perf_counter()
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
        dt = time.perf_counter() - t_epoch
        rec = {"epoch": epoch, "step": step, "epoch_loss": float(np.mean(losses)) if losses else float("nan"),
               "samples_per_s": sum(len(r) for _, r in plan) / max(dt, 1e-9)}
        history.append(rec)
        log(f"epoch {epoch}: loss {rec['epoch_loss']:.4f}, {rec['samples_per_s']:.0f} samples/s")
    model.eval()
    post = run_post_training(model, cfg, contexts, log)
    return TrainResult(
        model=model, feature_spec=fspec, model_spec=mspec, model_name=cfg.model, model_args=dict(cfg.model_args),
        history=history, seconds=time.perf_counter() - t0, device=str(device),
        n_params=sum(p.numel() for p in model.parameters()), samples_seen=seen, post_training=post,
    )


@torch.no_grad()
def predict(model: RecModel, ctx: DayContext, fanouts: list[int], batch_size: int = 2048, seed: int = 0,
            prefetch: int = 2) -> np.ndarray:
    """Probabilities ``[n_samples, K]`` for every sample of ``ctx`` (seeded neighbour sampling;
    batches built ``prefetch`` ahead in a background thread, same batches either way)."""
    device = next(model.parameters()).device
    model.eval()
    maker = BatchMaker(ctx, fanouts, type(model).needs_graph)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for batch in iterate([maker], batch_plan([ctx], batch_size, shuffle=False, rng=None), gen, prefetch=prefetch):
        logits = model(batch.to(device))
        out.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(ctx.labels[0]) if len(ctx.labels) else 0), np.float32)


def evaluate(result_or_model, spec: FeatureSpec, day: DayInputs, fanouts: list[int], seed: int = 0) -> dict:
    """Per-task GAUC / AUC / logloss on ``day`` (a day the model never saw)."""
    model = result_or_model.model if isinstance(result_or_model, TrainResult) else result_or_model
    ctx = DayContext.build(day, spec, with_graph=type(model).needs_graph)
    probs = predict(model, ctx, fanouts, seed=seed)
    metrics = task_metrics(ctx.sample_user_raw, ctx.labels, probs, spec.tasks)
    for task in metrics:
        metrics[task]["cold_users_share"] = float(np.mean(ctx.sample_user >= ctx.n_graph_users)) if ctx.n_samples else 0.0
    return metrics


def _needs_day_graph(cls) -> bool:
    """A model that samples no subgraph may still read whole day graphs (``needs_day_graph``,
    e.g. LightGODE's inference ODE): the trainer then builds the days' channel adjacencies."""
    return bool(getattr(cls, "needs_day_graph", False))


def training_needs_graph(cfg: TrainConfig) -> bool:
    """Whether training ``cfg`` reads the similarity graphs (the model, its optimizer or a
    post-training step)."""
    from ml_core.models.registry import MODELS

    return model_needs_graph(cfg.model) or _needs_day_graph(MODELS[cfg.model]) or extensions_need_graph(cfg)


def model_needs_graph(name: str) -> bool:
    """Whether the registered model ``name`` reads channel subgraphs."""
    from ml_core.models.registry import MODELS, _load_all

    _load_all()
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    return MODELS[name].needs_graph
