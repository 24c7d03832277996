"""Ranking and calibration metrics.

GAUC (MoGE paper section 5.3): ``GAUC = sum_g w_g AUC_g / sum_g w_g`` with one group per user
and ``w_g`` = the user's sample count. A user whose labels for the task are all 0 or all 1 has no
AUC and is skipped (torch-rechub's version returns NaN there). AUC is the Mann-Whitney statistic
with ties counted as 1/2, computed from average ranks, so it equals the brute-force pairwise count.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks: ties count 1/2
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def gauc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Group AUC weighted by group size, skipping single-class groups.

    Returns ``{"gauc", "groups_used", "groups_skipped", "samples_used"}``; ``gauc`` is NaN when
    no group has both classes.
    """
    groups = np.asarray(groups)
    labels = np.asarray(labels).astype(np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if not (len(groups) == len(labels) == len(scores)):
        raise ValueError(f"gauc inputs differ in length: {len(groups)}, {len(labels)}, {len(scores)}")
    if len(groups) == 0:
        return {"gauc": float("nan"), "groups_used": 0, "groups_skipped": 0, "samples_used": 0}
    # Sort by group, then rank scores within each group (average ranks for ties) in one pass:
    # a global rank of (group, score) minus the group's offset is the within-group rank.
    _, g = np.unique(groups, return_inverse=True)
    order = np.lexsort((scores, g))
    g_s, s_s, y_s = g[order], scores[order], labels[order]
    n_groups = int(g_s.max()) + 1
    size = np.bincount(g_s, minlength=n_groups).astype(np.float64)
    pos = np.bincount(g_s, weights=y_s, minlength=n_groups)
    # within-group average ranks: rank the pair (group, score) densely, then average ties
    key = np.stack([g_s, s_s])
    change = np.ones(len(g_s), dtype=bool)
    change[1:] = (key[:, 1:] != key[:, :-1]).any(axis=0)
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
    used = int(ok.sum())
    value = float((auc_g[ok] * size[ok]).sum() / size[ok].sum()) if used else float("nan")
    return {"gauc": value, "groups_used": used, "groups_skipped": n_groups - used, "samples_used": int(size[ok].sum())}


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()) if len(y) else float("nan")


def task_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray, tasks: list[str]) -> dict[str, dict[str, float]]:
    """GAUC, AUC, logloss and positive rate per task for ``labels``/``probs`` of shape [n, K]."""
    out = {}
    for k, task in enumerate(tasks):
        g = gauc(users, labels[:, k], probs[:, k])
        out[task] = {
            "gauc": g["gauc"],
            "auc": auc(labels[:, k], probs[:, k]),
            "logloss": logloss(labels[:, k], probs[:, k]),
            "pos_rate": float(labels[:, k].mean()) if len(labels) else float("nan"),
            "gauc_users": g["groups_used"],
            "n": int(len(labels)),
        }
    return out
