"""The epoch loop of :func:`ml_core.train.trainer.train`: optimiser steps over the training days'
batches until the budget or the validator says stop.

Each epoch draws a shuffled batch plan over the days (:func:`~ml_core.batching.batch_plan`, the
same on every DDP rank, then :func:`~ml_core.train.distributed.shard`-ed), cut to
``train.max_steps_per_epoch``; each step is one ``batch -> loss`` through the DDP wrapper
(:func:`~ml_core.train.distributed.wrap`) under mixed precision on CUDA (:func:`precision`). The
loop stops on the first of: the validator's patience (every ``train.eval_every_steps`` steps, or
after each epoch), ``train.max_seconds``, the last epoch (``max_epochs``) or, when the step cap cut
the epochs short, ``max_steps``; every rank stops at the same step (:func:`~ml_core.train.distributed.agree`).
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import torch

from ml_core.batching import BatchMaker, batch_plan, iterate
from ml_core.contracts.day import DayContext, DayInputs
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.progress import Progress, format_duration
from ml_core.stop import check_stop
from ml_core.train import distributed as ddp
from ml_core.train.validation import Validator

#: ``ddp.agree`` codes of the reasons to stop within an epoch
_STOP_REASONS = {1: "patience", 2: "max_seconds"}


def configure_threads(threads: int) -> int:
    """Set torch's intra-op threads to ``threads`` (0: every core); returns the count set."""
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def build_contexts(days: list[DayInputs], spec: FeatureSpec, need_graph: bool) -> list[DayContext]:
    """``days`` built for ``spec`` (with the channel graphs when ``need_graph``)."""
    return [DayContext.build(d, spec, with_graph=need_graph) for d in days]


def precision(device: torch.device, amp: bool):
    """(autocast context factory, GradScaler): fp16 autocast + loss scaling on CUDA, off on CPU."""
    use = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.float16)) if use else contextlib.nullcontext
    return ctx, scaler


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


class EpochLoop:
    """The optimiser steps of one training run (a :class:`~ml_core.config.TrainConfig` ``cfg``):
    ``model`` on the training ``contexts`` with ``optimizer``, this rank's share of every epoch
    (``ranks``) on ``device``, scored by ``validator``; ``history`` collects the running loss, each
    epoch's loss and throughput (the validator appends its scores to the same list)."""

    def __init__(self, model, contexts: list[DayContext], cfg, optimizer: torch.optim.Optimizer,
                 validator: Validator, device: torch.device, ranks: ddp.Ranks, history: list[dict], log):
        self.model, self.contexts, self.cfg, self.optimizer = model, contexts, cfg, optimizer
        self.validator, self.device, self.ranks, self.history, self.log = validator, device, ranks, history, log
        fanouts = model.training_fanouts(cfg.fanouts)  # (MoGE with a state cache: one hop)
        self.makers = [BatchMaker(c, fanouts, model.graph_needs.subgraphs, mask_target_edges=cfg.mask_target_edges)
                       for c in contexts]
        self.autocast, self.scaler = precision(device, cfg.amp)
        self.step_loss = ddp.wrap(model, ranks, device)  # batch -> (scores, loss, parts), gradients averaged over ranks
        self.step, self.seen, self.epoch = 0, 0, 0
        self.t0 = time.perf_counter()

    def run(self, rng: np.random.Generator, gen: torch.Generator) -> str:
        """Train until a reason to stop (``patience``, ``max_seconds``, ``max_epochs``, ``max_steps``),
        which it returns; ``rng`` draws the epochs' batch plans, ``gen`` samples the neighbours."""
        cfg, ranks = self.cfg, self.ranks
        reason, capped = None, False
        run_progress = None  # the whole training, for its ETA (every epoch has the same number of steps)
        for epoch in range(cfg.epochs):
            self.epoch = epoch
            self.model.train()
            plan = ddp.shard(batch_plan(self.contexts, ddp.rank_batch_size(cfg.batch_size, ranks), shuffle=True, rng=rng), ranks)
            capped = bool(cfg.max_steps_per_epoch) and len(plan) > cfg.max_steps_per_epoch
            if cfg.max_steps_per_epoch:
                plan = plan[: cfg.max_steps_per_epoch]
            run_progress = run_progress or Progress(len(plan) * cfg.epochs, 0)
            reason = self._epoch(plan, gen, run_progress)
            if reason is None and self.validator.active and not cfg.eval_every_steps \
                    and ddp.agree(int(self.validate()), ranks):
                reason = "patience"
            if reason is not None:
                break
        return reason or ("max_steps" if capped else "max_epochs")

    def validate(self) -> bool:
        """Score the validation slice at the current step; True when patience is exhausted."""
        return self.validator.validate(self.step, self.epoch, self.t0)

    def _epoch(self, plan: list, gen: torch.Generator, run_progress: Progress) -> str | None:
        """One epoch's ``plan`` of batches; the reason to stop within it, or None."""
        cfg, epoch = self.cfg, self.epoch
        losses = []
        log_every = max(1, min(50, len(plan) // 10))  # ~10+ curve points per epoch
        t_epoch, val_before, epoch_seen = time.perf_counter(), self.validator.seconds, 0
        progress = Progress(len(plan), cfg.log_every_steps)
        reason = None
        with contextlib.closing(iterate(self.makers, plan, gen, prefetch=cfg.prefetch)) as batches:
            for batch in batches:
                check_stop(f"before training step {self.step + 1}")  # a signal to the run command
                batch = batch.to(self.device)
                with self.autocast():
                    _, loss, parts = self.step_loss(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch} step {self.step}; parts={parts}")
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                losses.append(float(loss.detach()))
                self.seen += len(batch)
                epoch_seen += len(batch)
                self.step += 1
                if self.step % log_every == 0:
                    self.history.append({"epoch": epoch, "step": self.step, "loss": float(np.mean(losses[-log_every:])),
                                         **parts})
                run_progress.advance(len(batch))
                if progress.advance(len(batch)):
                    self.log(progress_line(epoch, cfg.epochs, progress, run_progress, losses[-progress.every:]))
                stop = self._stop_code()
                if stop:
                    reason = _STOP_REASONS[stop]
                    break
        dt = time.perf_counter() - t_epoch - (self.validator.seconds - val_before)
        rec = {"epoch": epoch, "step": self.step, "epoch_loss": float(np.mean(losses)) if losses else float("nan"),
               "samples_per_s": ddp.total(epoch_seen / max(dt, 1e-9), self.ranks)}  # of all ranks together
        self.history.append(rec)
        self.log(f"epoch {epoch + 1}/{cfg.epochs} done in {format_duration(dt)}: loss {rec['epoch_loss']:.4f}, "
                 f"{rec['samples_per_s']:,.0f} samples/s")
        return reason

    def _stop_code(self) -> int:
        """After a step: 1 (patience exhausted at a validation), 2 (``max_seconds``) or 0, agreed over ranks."""
        cfg = self.cfg
        stop = 1 if (self.validator.active and cfg.eval_every_steps and self.step % cfg.eval_every_steps == 0
                     and self.validate()) else 0
        stop = stop or (2 if cfg.max_seconds and time.perf_counter() - self.t0 >= cfg.max_seconds else 0)
        return ddp.agree(stop, self.ranks)  # every rank stops at the same step
