"""Inference: a trained model's probabilities and metrics on a day it never saw.

Used by evaluation (the pipeline's model_evaluation), the model comparison and serving; nothing
here trains. :func:`predict` scores every sample of a :class:`~ml_core.contracts.day.DayContext`:
by default every node is encoded once, layer-wise over the day's whole graphs
(:func:`encode_day`, :meth:`~ml_core.models.base.RecModel.encode_nodes`), and the pairs are
scored from the node representations (:func:`score_rows`), so the cost grows with nodes + pairs,
not with one sampled subgraph per batch of pairs; ``path="pairs"`` is the per-batch path (seeded
neighbour sampling around each batch's pairs, so the same seed gives the same scores), kept as
the reference the benchmark and the tests compare with. :func:`evaluate` builds
the day's context (with its graphs when the model samples subgraphs, ``graph_needs.subgraphs``,
or reads the scored day's whole graph, ``reads_day_graph_at_inference``) and returns per-task
GAUC / AUC / logloss (and, for a task nested in another such as purchase within click, its GAUC
within the outer task's positives: see :mod:`ml_core.eval.metrics`). Before scoring,
:func:`predict` hands the model the scored day's context
(:meth:`~ml_core.models.base.RecModel.prepare_inference`).

Both take an optional ``log`` callable that gets a progress line every ``log_every`` scoring
batches (samples scored, samples/s, ETA: :mod:`ml_core.progress`); without it they are silent.

Non-finite probabilities (a diverged model) fail both: :func:`predict` raises
``FloatingPointError`` with the count per task rather than hand NaN scores to the metrics, which
would otherwise rank them (a NaN sorts above every finite score).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ml_core.batching import BatchMaker, batch_plan, iterate
from ml_core.contracts.day import DayContext, DayInputs
from ml_core.contracts.reps import NodeReps
from ml_core.contracts.vocabulary import FeatureSpec
from ml_core.eval.metrics import task_metrics
from ml_core.models.base import RecModel
from ml_core.progress import Progress, format_duration
from ml_core.stop import check_stop


def require_finite_probs(probs: np.ndarray, tasks: list[str] | None = None) -> np.ndarray:
    """``probs`` ``[n, K]`` unchanged, or ``FloatingPointError`` naming the count of NaN /
    infinite probabilities per task (``task k`` when ``tasks`` is not given)."""
    bad = ~np.isfinite(probs)
    if bad.any():
        names = tasks if tasks is not None else [f"task {k}" for k in range(probs.shape[1])]
        counts = ", ".join(f"{name}: {int(c)}" for name, c in zip(names, bad.sum(axis=0)) if c)
        raise FloatingPointError(f"{int(bad.sum())} non-finite predictions of {probs.shape[0]} samples "
                                 f"({counts}); the model diverged or was loaded wrongly, refusing to evaluate")
    return probs


def inference_needs_graph(model: RecModel) -> bool:
    """Whether scoring with ``model`` reads the day's graphs: it samples subgraphs per batch, or it
    reads the scored day's whole graph once (:attr:`RecModel.reads_day_graph_at_inference`)."""
    return model.graph_needs.subgraphs or model.reads_day_graph_at_inference


def progress_line(what: str, progress: Progress, n_samples: int) -> str:
    """``candidate: 40,960/120,000 samples (34%) | 20,480 samples/s (19,874 since start) | ETA 4s``."""
    pct = f" ({progress.samples / n_samples:.0%})" if n_samples else ""
    return (f"{what}: {progress.samples:,}/{n_samples:,} samples{pct} | {progress.rates()} | "
            f"ETA {format_duration(progress.eta_s())}")


#: how :func:`predict` scores: ``"nodes"`` - every node encoded once, layer-wise over the day
#: (:meth:`~ml_core.models.base.RecModel.encode_nodes`), pairs scored from the representations;
#: ``"pairs"`` - per batch, a neighbourhood sampled around the batch's pairs and the GNN run on it
PATHS = ("nodes", "pairs")


@torch.no_grad()
def encode_day(model: RecModel, ctx: DayContext, encode_fanouts: list[int] | None = None, seed: int = 0) -> NodeReps:
    """``model`` (switched to eval mode and handed ``ctx`` first, ``prepare_inference``) encodes
    every node of ``ctx``: the :class:`~ml_core.contracts.reps.NodeReps` to score pairs from.
    ``encode_fanouts``: None = every neighbour, else per-layer fan-outs seeded by ``seed``."""
    model.eval()
    model.prepare_inference(ctx)
    device = next(model.parameters()).device
    on_device = dataclasses.replace(ctx, users=ctx.users.to(device), items=ctx.items.to(device))
    return model.encode_nodes(on_device, encode_fanouts, seed)


#: Pairs per batch when scoring from node representations (:func:`score_rows`): no subgraph is
#: built per batch, so larger batches only save per-batch overhead (MoGE at ``large``: 3M pairs
#: in 5.1 s at 2048 vs 4.2 s at 8192, 2 cores).
SCORE_BATCH = 8192


@torch.no_grad()
def predict(model: RecModel, ctx: DayContext, fanouts: list[int], batch_size: int | None = None, seed: int = 0,
            prefetch: int = 2, tasks: list[str] | None = None, log=None, log_every: int = 50,
            what: str = "scoring", path: str = "nodes", encode_fanouts: list[int] | None = None,
            reps: NodeReps | None = None) -> np.ndarray:
    """Probabilities ``[n_samples, K]`` for every sample of ``ctx``, in sample order.

    ``path="nodes"`` (default): every node encoded once (:func:`encode_day`, ``encode_fanouts``:
    None = every neighbour; or the given ``reps`` of ``ctx``'s node spaces, e.g. a bundle's),
    then the samples scored from the representations in batches of ``batch_size`` (default
    :data:`SCORE_BATCH`).
    ``path="pairs"``: per batch, seeded neighbour sampling with ``fanouts`` around the batch's
    pairs (``batch_size`` per batch, default 2048; batches built ``prefetch`` ahead in a background
    thread, same batches either way) and
    the model run on the subgraphs. The model is switched to eval mode and, unless ``reps`` are
    given, handed ``ctx`` (``model.prepare_inference(ctx)``) first. ``FloatingPointError`` when any probability
    is NaN or infinite (:func:`require_finite_probs`; ``tasks`` names the columns in its
    message). ``log`` (a ``str -> None`` callable, default silent) gets a :func:`progress_line`
    starting with ``what`` every ``log_every`` batches (0 = never)."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    device = next(model.parameters()).device
    model.eval()
    if path == "nodes":
        batch_size = batch_size or SCORE_BATCH
        if reps is None:
            reps = encode_day(model, ctx, encode_fanouts, seed)
        elif (reps.n_users, reps.n_items) != (len(ctx.user_raw), len(ctx.item_raw)):
            raise ValueError(f"node representations of {reps.n_users} users / {reps.n_items} items do not match "
                             f"day {ctx.day}'s node spaces ({len(ctx.user_raw)} / {len(ctx.item_raw)})")
        reps = model.scoring_reps(reps)  # + what scoring precomputes per node
        progress = Progress(-(-ctx.n_samples // batch_size), log_every if log is not None else 0)

        def on_batch(n: int) -> None:
            check_stop(f"while {what}")
            if progress.advance(n):
                log(progress_line(what, progress, ctx.n_samples))

        probs = score_rows(model, reps, ctx.sample_user, ctx.sample_item, batch_size, on_batch, pairs=ctx.pairs,
                           user_seq=ctx.user_seq)
        return require_finite_probs(probs, tasks) if len(probs) else _no_samples(ctx, tasks)
    model.prepare_inference(ctx)
    maker = BatchMaker(ctx, fanouts, model.graph_needs.subgraphs)
    plan = batch_plan([ctx], batch_size or 2048, shuffle=False, rng=None)
    progress = Progress(len(plan), log_every if log is not None else 0)
    out = []
    for batch in iterate([maker], plan, torch.Generator().manual_seed(seed), prefetch=prefetch):
        check_stop(f"while {what}")
        out.append(torch.sigmoid(model(batch.to(device)).float()).cpu().numpy())
        if progress.advance(len(batch)):
            log(progress_line(what, progress, ctx.n_samples))
    return require_finite_probs(np.concatenate(out), tasks) if out else _no_samples(ctx, tasks)


def _no_samples(ctx: DayContext, tasks: list[str] | None) -> np.ndarray:
    """``[0, K]``: with no samples per-task metrics come out NaN with n = 0 instead of failing."""
    labels = np.asarray(ctx.labels)
    return np.zeros((0, labels.shape[1] if labels.ndim == 2 else len(tasks or [])), np.float32)


@torch.no_grad()
def score_rows(model: RecModel, reps: NodeReps, user_rows: np.ndarray, item_rows: np.ndarray,
               batch_size: int = SCORE_BATCH, on_batch=None, pairs: np.ndarray | None = None,
               user_seq=None) -> np.ndarray:
    """Probabilities ``[n, K]`` of the pairs ``(user_rows[j], item_rows[j])`` (node-space rows of
    ``reps``) with their pair inputs ``pairs`` ``[n, P]`` (``DayContext.pairs``; None for a model
    without them) and the users' sequences ``user_seq`` (``Sequences`` with one row per user row
    of ``reps``, or None), scored from the representations in batches of ``batch_size`` on the model's
    device (:meth:`~ml_core.models.base.RecModel.score_encoded`; the model must be in eval mode).
    ``on_batch(n)`` is called after each batch of ``n`` pairs. Empty input: ``[0, 0]``."""
    device = next(model.parameters()).device
    reps = reps.to(device)
    users = torch.as_tensor(np.asarray(user_rows), dtype=torch.long, device=device)
    items = torch.as_tensor(np.asarray(item_rows), dtype=torch.long, device=device)
    pair = None if pairs is None else torch.as_tensor(np.asarray(pairs, np.float32), device=device)
    out = []
    for s in range(0, len(users), batch_size):
        u = users[s:s + batch_size]
        chunk = None if pair is None else pair[s:s + batch_size]
        seq = None if user_seq is None else user_seq[u.cpu()].to(device)
        logits = model.score_encoded(reps, u, items[s:s + batch_size], chunk, seq)
        out.append(torch.sigmoid(logits.float()).cpu().numpy())
        if on_batch is not None:
            on_batch(len(out[-1]))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@dataclass
class ScoredDay:
    """A model's predictions on a day's samples with their metrics: ``users`` (raw ids, one per
    sample), ``labels`` ``[n, K]``, ``probs`` ``[n, K]`` (sample order = the day's samples)."""

    users: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    metrics: dict
    #: the node path's representations of the day's *graph* nodes (the snapshot a deployed bundle
    #: serves: rows ``0..n_graph - 1`` of each node space) with their raw ids ``(reps, user_raw,
    #: item_raw)``; None for the per-pair path or a sampled encoding
    snapshot_reps: tuple[NodeReps, np.ndarray, np.ndarray] | None = None


def day_context(model: RecModel, spec: FeatureSpec, day: DayInputs) -> DayContext:
    """``day`` built as ``model`` scores it (its channels only when its inference reads graphs)."""
    return DayContext.build(day, spec, with_graph=inference_needs_graph(model))


def score_day(result_or_model, spec: FeatureSpec, day: DayInputs, fanouts: list[int], seed: int = 0,
              log=None, log_every: int = 50, what: str = "scoring", path: str = "nodes",
              encode_fanouts: list[int] | None = None, keep_snapshot: bool = False,
              ctx: DayContext | None = None) -> ScoredDay:
    """:func:`evaluate` keeping the predictions (what a paired comparison of two models needs);
    ``log``, ``log_every``, ``what``: :func:`predict`'s progress lines (default: silent);
    ``path``, ``encode_fanouts``: :func:`predict`'s (default: every node encoded once, every neighbour).
    ``keep_snapshot``: also keep the graph nodes' representations (``ScoredDay.snapshot_reps``,
    node path with every neighbour only), e.g. for the bundle deployment assembles next.
    ``ctx``: ``day`` already built for ``spec`` (:func:`day_context`), else built here."""
    model = result_or_model if isinstance(result_or_model, RecModel) else result_or_model.model
    ctx = ctx if ctx is not None else day_context(model, spec, day)
    reps = encode_day(model, ctx, encode_fanouts, seed) if path == "nodes" else None
    probs = predict(model, ctx, fanouts, seed=seed, tasks=spec.tasks, log=log, log_every=log_every, what=what,
                    path=path, encode_fanouts=encode_fanouts, reps=reps)
    metrics = task_metrics(ctx.sample_user_raw, ctx.labels, probs, spec.tasks)
    for task in metrics:
        metrics[task]["cold_users_share"] = float(np.mean(ctx.sample_user >= ctx.n_graph_users)) if ctx.n_samples else 0.0
    snapshot = None
    if keep_snapshot and reps is not None and encode_fanouts is None:  # sample nodes outside the graph come last
        nu, ni = ctx.n_graph_users, ctx.n_graph_items
        snapshot = (reps.take(np.arange(nu), np.arange(ni)), ctx.user_raw[:nu].copy(), ctx.item_raw[:ni].copy())
    return ScoredDay(np.asarray(ctx.sample_user_raw), np.asarray(ctx.labels), probs, metrics, snapshot)


def evaluate(result_or_model, spec: FeatureSpec, day: DayInputs, fanouts: list[int], seed: int = 0,
             log=None, log_every: int = 50, what: str = "scoring") -> dict:
    """Per-task GAUC / AUC / logloss on ``day`` (a day the model never saw); ``result_or_model``
    is a :class:`~ml_core.models.base.RecModel` or a training result holding one (``.model``).
    Keys per task: :func:`~ml_core.eval.metrics.task_metrics`'s plus ``cold_users_share``.
    ``FloatingPointError`` on non-finite predictions (no metrics are computed on them).
    ``log``, ``log_every``, ``what``: :func:`predict`'s progress lines (default: silent)."""
    return score_day(result_or_model, spec, day, fanouts, seed, log=log, log_every=log_every, what=what).metrics
