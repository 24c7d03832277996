import numpy as np
import pytest

from ml_core.eval.metrics import auc, gauc, logloss, task_metrics


def brute_gauc(groups, labels, scores):
    num = den = 0.0
    for g in np.unique(groups):
        m = groups == g
        pos, neg = scores[m][labels[m] == 1], scores[m][labels[m] == 0]
        if len(pos) == 0 or len(neg) == 0:
            continue  # single-class users are skipped
        pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
        num += pairs / (len(pos) * len(neg)) * m.sum()
        den += m.sum()
    return num / den


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tied", [False, True])
def test_gauc_equals_bruteforce_pairwise(seed, tied):
    rng = np.random.default_rng(seed)
    n = 3000
    groups = rng.integers(0, 150, n)
    labels = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(int)
    scores = rng.integers(0, 6, n).astype(float) if tied else rng.normal(size=n) + labels * 0.5
    assert gauc(groups, labels, scores)["gauc"] == pytest.approx(brute_gauc(groups, labels, scores), abs=1e-12)


def test_gauc_skips_single_class_users_and_counts_them():
    groups = np.array([1, 1, 2, 2, 3, 3, 3])
    labels = np.array([1, 0, 1, 1, 0, 0, 1])
    scores = np.array([0.9, 0.1, 0.5, 0.4, 0.3, 0.8, 0.2])
    out = gauc(groups, labels, scores)
    assert out["groups_used"] == 2 and out["groups_skipped"] == 1
    # user 1: AUC 1 (2 samples); user 3: positive 0.2 below both negatives -> AUC 0 (3 samples)
    assert out["gauc"] == pytest.approx((1.0 * 2 + 0.0 * 3) / 5)


def test_gauc_all_single_class_is_nan_not_crash():
    out = gauc(np.array([1, 1, 2]), np.array([1, 1, 0]), np.array([0.1, 0.2, 0.3]))
    assert np.isnan(out["gauc"]) and out["groups_used"] == 0


def test_auc_matches_bruteforce_and_logloss():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.integers(0, 10, 500).astype(float)
    assert auc(y, s) == pytest.approx(brute_gauc(np.zeros(500), y, s))
    assert logloss(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))


def test_task_metrics_per_task_keys():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 20, 400)
    labels = rng.integers(0, 2, (400, 2)).astype(float)
    probs = rng.random((400, 2))
    m = task_metrics(users, labels, probs, ["click", "purchase"])
    assert set(m) == {"click", "purchase"}
    assert {"gauc", "auc", "logloss", "pos_rate", "gauc_users", "n"} <= set(m["click"])
