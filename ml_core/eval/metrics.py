"""Ranking and calibration metrics.

GAUC (MoGE paper section 5.3): ``GAUC = sum_g w_g AUC_g / sum_g w_g`` with one group per user
and ``w_g`` = the user's sample count. A user whose labels for the task are all 0 or all 1 has no
AUC and is skipped (torch-rechub's version returns NaN there). AUC is the Mann-Whitney statistic
with ties counted as 1/2, computed from average ranks, so it equals the brute-force pairwise count.

Non-finite scores are refused (``ValueError``): a NaN has no place in a ranking, and sorting would
put it above every finite score (two NaN positives used to give their user an AUC of 1.0).

Nested tasks (:func:`task_metrics`). When the labels show that task B's positives are a subset of
task A's positives (every sample with ``y_B = 1`` has ``y_A = 1``, ``0 < #pos_B < #pos_A``; e.g.
purchase within click), B is also scored *within* A: ``gauc_within_A`` is B's GAUC computed only
on the samples with ``y_A = 1``, i.e. B's positives against A's positives that are not B's (the
CVR view: purchase vs click-without-purchase within each user). The sampled negatives (``y_A =
0``) take no part in it, so it measures how well the model orders what the user engaged with,
which the entire-space GAUC mixes with the much easier task of separating engagement from
sampled negatives. Its weights are each user's count of A-positives, and a user needs both a
B-positive and an A-positive that is not a B-positive to count (``gauc_within_A_users``). The
relation is detected from the labels of the evaluated samples, not configured: a day whose labels
happen to nest (or not) reports accordingly.

Paired differences with their uncertainty: :func:`ml_core.eval.bootstrap.gauc_difference`.
"""

from __future__ import annotations

import numpy as np

from ml_core.sorting import stable_counting_order


def require_finite(scores: np.ndarray, what: str = "scores") -> np.ndarray:
    """``scores`` as float64, or ``ValueError`` naming how many are NaN / infinite."""
    scores = np.asarray(scores, dtype=np.float64)
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} of {scores.size} are not finite "
                         f"({int(np.isnan(scores).sum())} NaN); metrics are not computed on them")
    return scores


def auc(labels: np.ndarray, scores: np.ndarray, score_order: np.ndarray | None = None) -> float:
    """Area under the ROC curve (ties count 1/2): :func:`group_aucs` with one group; NaN when
    only one class is present; ``ValueError`` on non-finite scores. ``score_order``: as in
    :func:`group_aucs`."""
    scores = require_finite(scores, "auc scores")
    auc_g, _, ok = group_aucs(np.zeros(len(scores), np.int64), labels, scores, 1, score_order)
    return float(auc_g[0]) if len(ok) and ok[0] else float("nan")


def group_codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    """``(codes, n_groups)``: each sample's group as its position in ``np.unique(groups)`` (int64)."""
    uniq, g = np.unique(np.asarray(groups), return_inverse=True)
    return g.reshape(-1).astype(np.int64, copy=False), len(uniq)


def group_aucs(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, n_groups: int | None = None,
               score_order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group AUC, weight and usability: ``(auc_g, size_g, ok_g)`` over the sorted unique
    groups (``np.unique(groups)`` order, so two scorers on the same ``groups`` line up).

    ``auc_g`` is 0 where ``ok_g`` is False (the group has one class only). All groups are ranked
    in one pass: sort by (group, score), give tied (group, score) runs their average global
    position, subtract the group's offset to get the within-group average rank, and apply the
    Mann-Whitney formula ``AUC_g = (R_g - P_g (P_g + 1) / 2) / (P_g N_g)`` with ``R_g`` the rank
    sum of the group's positives. ``ValueError`` on non-finite scores or unequal lengths.

    ``n_groups``: ``groups`` are already codes in ``[0, n_groups)`` (:func:`group_codes`), so the
    groups are not factorised again (a code without samples is a group with ``ok_g`` False). The
    sort is a stable sort by score followed by a stable counting sort by group: the permutation
    of ``np.lexsort((scores, groups))`` in O(n log n) on the scores alone. ``score_order``: that
    stable sort by score, ``np.argsort(scores, kind="stable")``, when the caller has it already.
    """
    groups = np.asarray(groups)
    labels = np.asarray(labels).astype(np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if not (len(groups) == len(labels) == len(scores)):
        raise ValueError(f"gauc inputs differ in length: {len(groups)}, {len(labels)}, {len(scores)}")
    scores = require_finite(scores, "gauc scores")
    if len(groups) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
    if n_groups is None:
        g, n_groups = group_codes(groups)
    else:
        g = np.asarray(groups, np.int64)
    if score_order is None:
        score_order = np.argsort(scores, kind="stable")
    order = stable_counting_order(g, n_groups, score_order)
    g_s, s_s, y_s = g[order], scores[order], labels[order]
    size = np.bincount(g_s, minlength=n_groups).astype(np.float64)
    pos = np.bincount(g_s, weights=y_s, minlength=n_groups)
    # within-group average ranks: rank the pair (group, score) densely, then average ties
    change = np.ones(len(g_s), dtype=bool)
    change[1:] = (g_s[1:] != g_s[:-1]) | (s_s[1:] != s_s[:-1])
    tie_id = np.cumsum(change) - 1
    first = np.flatnonzero(change)
    tie_len = np.diff(np.append(first, len(g_s)))
    position = np.arange(1, len(g_s) + 1, dtype=np.float64)  # global 1-based position
    avg_pos = (position[first] + position[first] + tie_len - 1) / 2.0
    group_start = np.concatenate([[0], np.cumsum(size)[:-1]])
    within_rank = avg_pos[tie_id] - group_start[g_s]
    rank_sum_pos = np.bincount(g_s, weights=within_rank * y_s, minlength=n_groups)
    neg = size - pos
    ok = (pos > 0) & (neg > 0)
    auc_g = np.zeros(n_groups)
    auc_g[ok] = (rank_sum_pos[ok] - pos[ok] * (pos[ok] + 1) / 2) / (pos[ok] * neg[ok])
    return auc_g, size, ok


def gauc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, n_groups: int | None = None,
         score_order: np.ndarray | None = None) -> dict[str, float]:
    """Group AUC weighted by group size, skipping single-class groups (``n_groups``,
    ``score_order``: as in :func:`group_aucs`).

    Returns ``{"gauc", "groups_used", "groups_skipped", "samples_used"}``; ``gauc`` is NaN when
    no group has both classes. ``ValueError`` on non-finite scores.
    """
    auc_g, size, ok = group_aucs(groups, labels, scores, n_groups, score_order)
    if n_groups is not None:  # codes without samples are not groups
        auc_g, size, ok = auc_g[size > 0], size[size > 0], ok[size > 0]
    used = int(ok.sum())
    value = float((auc_g[ok] * size[ok]).sum() / size[ok].sum()) if used else float("nan")
    return {"gauc": value, "groups_used": used, "groups_skipped": len(ok) - used, "samples_used": int(size[ok].sum())}


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(y) else float("nan")


def nested_tasks(labels: np.ndarray, tasks: list[str]) -> list[tuple[str, str]]:
    """``(inner, outer)`` task pairs whose labels nest: every positive of ``inner`` is a positive
    of ``outer``, ``inner`` has at least one positive and ``outer`` strictly more (a label > 0.5
    is a positive). Equal positive sets nest both ways and are reported neither way."""
    pos = np.asarray(labels) > 0.5
    count = pos.sum(axis=0)
    out = []
    for b, inner in enumerate(tasks):
        for a, outer in enumerate(tasks):
            if a != b and 0 < count[b] < count[a] and not (pos[:, b] & ~pos[:, a]).any():
                out.append((inner, outer))
    return out


def task_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray, tasks: list[str]) -> dict[str, dict[str, float]]:
    """GAUC, AUC, logloss and positive rate per task for ``labels``/``probs`` of shape [n, K].

    For every nested pair (:func:`nested_tasks`, e.g. purchase within click) the inner task also
    gets ``gauc_within_<outer>`` (its GAUC among the outer task's positives only, see the module
    docstring) and ``gauc_within_<outer>_users`` (the users it used).
    """
    users = np.asarray(users)
    codes, n_users = group_codes(users)  # once for every task and nested pair
    out = {}
    for k, task in enumerate(tasks):
        scores = require_finite(probs[:, k], "scores")
        order = np.argsort(scores, kind="stable")  # one sort for the task's GAUC and AUC
        g = gauc(codes, labels[:, k], scores, n_users, order)
        out[task] = {
            "gauc": g["gauc"],
            "auc": auc(labels[:, k], scores, order),
            "logloss": logloss(labels[:, k], probs[:, k]),
            "pos_rate": float(labels[:, k].mean()) if len(labels) else float("nan"),
            "gauc_users": g["groups_used"],
            "n": int(len(labels)),
        }
    if len(labels):
        for inner, outer in nested_tasks(labels, tasks):
            b, a = tasks.index(inner), tasks.index(outer)
            within = np.asarray(labels)[:, a] > 0.5
            g = gauc(codes[within], labels[within, b], probs[within, b], n_users)
            out[inner][f"gauc_within_{outer}"] = g["gauc"]
            out[inner][f"gauc_within_{outer}_users"] = g["groups_used"]
    return out
