"""Helpers shared by the unit tests: the two tasks, a tiny random model spec and random batches
(for the algebra of a model), and a small planted day with its specs, context and one sampled
batch (for real batches)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from ml_core.batching import BatchMaker
from ml_core.contracts.batch import Batch, ChannelBatch, NodeTable
from ml_core.contracts.day import DayContext, DayInputs
from ml_core.contracts.spec import ModelSpec, SideShape
from ml_core.contracts.vocabulary import FeatureSpec
from tests.planted import planted_days

TASKS = ["click", "purchase"]
SPEC = ModelSpec(TASKS, SideShape(60, [3, 4], 2), SideShape(50, [5], 3), dim=16, fanouts=[4, 3])


def node_table(n: int, shape: SideShape, g: torch.Generator) -> NodeTable:
    """``n`` random rows of a side: categorical codes, then ids, then numeric columns."""
    cats = [torch.randint(0, s, (n,), generator=g) for s in shape.cat_sizes]
    return NodeTable(torch.randint(0, shape.n_ids, (n,), generator=g),
                     torch.stack(cats, 1) if cats else torch.zeros(n, 0, dtype=torch.long),
                     torch.randn(n, shape.n_nums, generator=g))


def random_batch(spec: ModelSpec = SPEC, B: int = 24, seed: int = 0) -> Batch:
    """A batch with three random channel subgraphs (seed rows drawn among the first nodes)."""
    g = torch.Generator().manual_seed(seed)
    none = torch.zeros(0, dtype=torch.long)
    nu, ni = 30, 35
    n = nu + ni
    ei = torch.randint(0, n, (2, 200), generator=g)
    channels = {"bipartite": ChannelBatch(
        n, ei, torch.rand(ei.shape[1], generator=g), torch.arange(nu), torch.arange(nu, n),
        node_table(nu, spec.user, g), node_table(ni, spec.item, g),
        torch.randint(0, 10, (B,), generator=g), torch.randint(nu, nu + 10, (B,), generator=g))}
    for name, is_user in (("user_sim", True), ("item_sim", False)):
        m = 40
        ei = torch.randint(0, m, (2, 150), generator=g)
        own = node_table(m, spec.user if is_user else spec.item, g)
        other = node_table(0, spec.item if is_user else spec.user, g)
        seeds = torch.randint(0, 10, (B,), generator=g)
        channels[name] = ChannelBatch(
            m, ei, torch.rand(ei.shape[1], generator=g), torch.arange(m) if is_user else none,
            none if is_user else torch.arange(m), own if is_user else other, other if is_user else own,
            seeds if is_user else None, None if is_user else seeds)
    labels = (torch.rand(B, spec.n_tasks, generator=g) < 0.3).float()
    idx = torch.zeros(B, dtype=torch.long)
    return Batch(labels, node_table(B, spec.user, g), node_table(B, spec.item, g), idx, idx, channels)


def random_feature_batch(spec: ModelSpec = SPEC, B: int = 32, seed: int = 0, rate: float = 0.4) -> Batch:
    """A batch of random user and item rows, no subgraph; labels positive with probability ``rate``."""
    g = torch.Generator().manual_seed(seed)
    user, item = node_table(B, spec.user, g), node_table(B, spec.item, g)
    labels = (torch.rand(B, spec.n_tasks, generator=g) < rate).float()
    idx = torch.zeros(B, dtype=torch.long)
    return Batch(labels, user, item, idx, idx)


@dataclass
class PlantedDay:
    day: DayInputs
    fspec: FeatureSpec
    mspec: ModelSpec
    ctx: DayContext
    batch: Batch | None


def planted_day(seed: int = 3, n_users: int = 120, n_items: int = 40, split: str = "samples", dim: int = 16,
                fanouts: tuple[int, ...] = (4, 3), rows: np.ndarray | None = None, with_graph: bool = True,
                batch_seed: int = 0) -> PlantedDay:
    """The train day of :func:`tests.planted.planted_days`, its feature and model specs, its
    context (with its channel graphs unless ``with_graph=False``) and, when ``rows`` is given, the
    batch of those sample rows (with sampled subgraphs when the context has graphs)."""
    day, _ = planted_days(seed=seed, n_users=n_users, n_items=n_items, split=split)
    fspec = FeatureSpec.fit([day], TASKS)
    mspec = ModelSpec.from_feature_spec(fspec, dim, list(fanouts))
    ctx = DayContext.build(day, fspec, with_graph=with_graph)
    batch = None
    if rows is not None:
        maker = BatchMaker(ctx, mspec.fanouts, need_graph=with_graph)
        batch = maker.make(rows, torch.Generator().manual_seed(batch_seed))
    return PlantedDay(day, fspec, mspec, ctx, batch)


def best_floor(ev, task: str) -> float:
    """The highest GAUC on ``task`` among the sanity and the CF scorers of evaluation ``ev`` (the
    gate's floors): a doctored candidate above it passes them, one below it does not."""
    return max(s[task]["gauc"] for kind in (ev.sanity, ev.cf) for s in (kind or {}).values())


def doctor_evaluation(lake, day, candidate_gauc: dict[str, float], probs=None, **changes):
    """Day ``day``'s stored evaluation with the candidate's GAUCs replaced (and ``changes``);
    ``probs`` replaces the candidate's stored scores (what the decision compares references with)."""
    from ml_core.stages.evaluation import SCORES_FILE, load_evaluation
    from ml_core.storage import seal

    ev = load_evaluation(lake, day)
    ev.candidate = {t: {**m, "gauc": candidate_gauc[t]} for t, m in ev.candidate.items()}
    for k, v in changes.items():
        setattr(ev, k, v)
    part = lake.partition_dir("model_evaluation", day)
    (part / "evaluation.json").write_text(json.dumps(ev.to_dict(), default=str))
    if probs is not None:
        with np.load(part / SCORES_FILE) as z:
            arrays = dict(z)
        arrays["probs"] = probs(arrays["labels"])
        with open(part / SCORES_FILE, "wb") as fh:
            np.savez(fh, **arrays)
    seal(part)  # a doctored partition, recorded as such (readers check files against their record)
    return ev
