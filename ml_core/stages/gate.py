"""The deployment gate: whether a candidate's metrics may replace production's. Pure: no I/O.

A candidate without metrics (nothing was evaluated: a day without samples) is refused.

Every number the gate compares was measured on the same day's samples (the candidate's
evaluation day). The candidate is refused when, for any task:

* its GAUC is not finite, or below ``deploy.min_gauc``;
* it does not beat a sanity scorer (``sanity``: window popularity, "item is new", "user already
  interacted with the item", random; :mod:`ml_core.sanity`) or a classical CF scorer (``cf``:
  item-kNN, user-kNN, EASE, the ``cf.scorers`` the evaluation measured; :mod:`ml_core.cf`). This
  holds for the first deployment too: with nothing in production, a model still has to rank
  better than rules that need no model and than the classical neighbourhood baselines;
* it is below the best of the references (the last ``deploy.compare_last`` promoted models,
  production included, each scored on this day with its own bundle) by more than
  ``deploy.gauc_tolerance`` with the paired bootstrap interval of the difference entirely below
  0 (when the evaluation measured it; else by the point values). Comparing with the best of the
  last N, not with production alone,
  bounds regression over time: a run of candidates each a little worse than the one before stops
  once the total drift from any of the last N reaches the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ml_core.config import DeployConfig

#: ``{task: {"gauc": ..., ...}}``
Metrics = Mapping[str, Mapping[str, float]]


@dataclass
class Decision:
    """The gate's verdict: ``promote`` and, when refused, every reason."""

    promote: bool
    reasons: list[str] = field(default_factory=list)


def _gauc(m: Mapping[str, float] | None) -> float:
    g = (m or {}).get("gauc", float("nan"))
    return float(g) if g is not None else float("nan")


def gate(candidate: Metrics, references: Mapping[str, Metrics] | None, deploy: DeployConfig,
         sanity: Mapping[str, Metrics] | None = None,
         differences: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
         cf: Mapping[str, Metrics] | None = None) -> Decision:
    """The verdict on ``candidate`` (module docstring).

    Args:
        candidate: the candidate's metrics per task.
        references: ``{bundle version: metrics per task}`` of the promoted models to compare with,
            scored on the same day (empty or ``None``: nothing promoted yet).
        deploy: tolerance and floor.
        sanity: ``{scorer: metrics per task}`` on the same day (``None``: not measured, which is
            itself a reason to refuse: the gate never promotes what it could not compare).
        differences: ``{reference version: {task: {"diff", "low", "high", "level"}}}``, the paired
            bootstrap interval of candidate minus reference GAUC (:mod:`ml_core.eval.bootstrap`).
            When given for the best reference, "worse" means the whole interval is below 0 and
            the point difference is below ``-gauc_tolerance``; without it, the point rule
            (candidate below best - tolerance) applies.
        cf: ``{scorer: metrics per task}`` of the classical CF scorers on the same day, treated as
            ``sanity`` is: each is a floor, and ``None`` (an evaluation written before they were
            measured) is a refusal. ``{}`` (``cf.scorers = []``: none configured) asks for none.
    """
    reasons = []
    if not candidate:
        reasons.append("no candidate metrics: nothing was evaluated (no evaluation samples)")
    for kind, floors in (("sanity", sanity), ("CF", cf)):
        if floors is None:
            reasons.append(f"no {kind}-scorer metrics for this day: the evaluation predates them, re-run model_evaluation")
    floors = [("sanity", name, m) for name, m in (sanity or {}).items()] + [("CF", name, m) for name, m in (cf or {}).items()]
    for task, m in candidate.items():
        g = _gauc(m)
        if not math.isfinite(g):
            reasons.append(f"{task}: GAUC is {g} (no user with both classes?)")
            continue
        if g < deploy.min_gauc:
            reasons.append(f"{task}: GAUC {g:.4f} < floor {deploy.min_gauc}")
        for kind, scorer, sm in floors:
            s = _gauc(sm.get(task))
            if math.isfinite(s) and g <= s:
                reasons.append(f"{task}: GAUC {g:.4f} does not beat the {kind} scorer {scorer} ({s:.4f})")
        scored = {v: _gauc(r.get(task)) for v, r in (references or {}).items()}
        scored = {v: x for v, x in scored.items() if math.isfinite(x)}
        if scored:
            best = max(scored, key=scored.get)
            d = (differences or {}).get(best, {}).get(task)
            if d is not None:
                if d["high"] < 0 and d["diff"] < -deploy.gauc_tolerance:
                    reasons.append(f"{task}: GAUC {g:.4f} worse than best recent model {best} {scored[best]:.4f}: "
                                   f"difference {d['diff']:+.4f}, {d.get('level', 0.95):.0%} interval "
                                   f"[{d['low']:+.4f}, {d['high']:+.4f}], beyond the tolerance {deploy.gauc_tolerance}")
            elif g < scored[best] - deploy.gauc_tolerance:
                reasons.append(f"{task}: GAUC {g:.4f} < best recent model {best} {scored[best]:.4f} "
                               f"- tolerance {deploy.gauc_tolerance}")
    return Decision(promote=not reasons, reasons=reasons)
