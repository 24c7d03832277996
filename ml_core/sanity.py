"""Sanity scorers: what a trivial rule scores on the same samples as the models.

A model's GAUC means something only next to what needs no model. Each scorer here ranks a day's
samples from day D's window graph (``graph[D]``, built from the days before D: the same graph
the models read, never day D itself) and nothing else:

* ``popularity``: the item's degree in the window graph (0 for an item new today),
* ``item_is_new``: 1 when the item is absent from the window graph, else 0,
* ``seen_pair``: 1 when the user already interacted with the item in the window, else 0,
* ``random``: a seeded uniform draw (GAUC ~0.5 by construction: the scale of the noise).

With negatives drawn from the day's positive-item distribution (``samples.negative_items =
"positives"``) the item-only rules (``popularity``, ``item_is_new``) score about 0.5; when one of
them comes close to a model, the samples carry a free signal and the evaluation is wrong before
the model is. The classical CF scorers (item-kNN, user-kNN, EASE: :mod:`ml_core.cf`) are scored
beside them, on the same samples and the same window graphs. The deployment gate refuses a model
that does not beat every sanity scorer and every CF scorer on every task (:mod:`ml_core.stages.gate`).
"""

from __future__ import annotations

import numpy as np

from ml_core.contracts.day import DayInputs
from ml_core.eval.metrics import Groups, task_metrics
from ml_core.graph.csr import lookup

SCORERS = ("popularity", "item_is_new", "seen_pair", "random")


def node_rows(day: DayInputs) -> tuple[np.ndarray, np.ndarray]:
    """The window graph's rows of each sample's user and item (-1: absent from the window)."""
    g = day.graph
    return lookup(g.user_ids, day.samples["user_id"].to_numpy()), lookup(g.item_ids, day.samples["item_id"].to_numpy())


def sanity_scores(day: DayInputs, seed: int = 0) -> dict[str, np.ndarray]:
    """``{scorer: scores [n_samples]}`` for the samples of ``day`` (which must carry its graph)."""
    if day.graph is None:
        raise ValueError(f"sanity scorers need day {day.day}'s window graph (load the day with its graph)")
    g = day.graph
    u_row, i_row = node_rows(day)
    known = i_row >= 0
    popularity = np.zeros(len(i_row), np.float64)
    popularity[known] = g.iu.degrees()[i_row[known]]
    seen = np.zeros(len(i_row), np.float64)
    both = known & (u_row >= 0)
    seen[both] = g.pair_weights(u_row[both], i_row[both]) > 0  # (u, i) is a window edge
    rng = np.random.default_rng(seed)
    return {"popularity": popularity, "item_is_new": (~known).astype(np.float64), "seen_pair": seen,
            "random": rng.random(len(i_row))}


def scorer_metrics(day: DayInputs, scores: dict[str, np.ndarray], tasks: list[str]) -> dict[str, dict[str, dict]]:
    """``{scorer: {task: metrics}}`` of rules that give every task the same ``scores`` on
    ``day``'s samples: GAUC/AUC by the same function as the models' metrics, on the scores mapped
    to [0, 1] by an order-preserving rescaling (logloss is not meaningful for a rule and is left out)."""
    users = Groups.of(day.samples["user_id"].to_numpy())  # grouped once for every scorer
    labels = day.samples.select([f"label_{t}" for t in tasks]).to_numpy().astype(np.float64)
    out = {}
    for name, s in scores.items():
        lo, hi = (float(s.min()), float(s.max())) if len(s) else (0.0, 0.0)
        unit = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
        m = task_metrics(users, labels, np.repeat(unit[:, None], len(tasks), axis=1), tasks)
        out[name] = {t: {k: v for k, v in m[t].items() if k != "logloss"} for t in tasks}
    return out


def sanity_metrics(day: DayInputs, tasks: list[str], seed: int = 0) -> dict[str, dict[str, dict]]:
    """``{scorer: {task: metrics}}``: each sanity scorer's GAUC/AUC on ``day``'s samples."""
    return scorer_metrics(day, sanity_scores(day, seed), tasks)
